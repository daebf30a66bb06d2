/** Group names to GIDs, from /etc/group (Node has no getgrnam). */
import { readFileSync } from 'node:fs';

export function resolveGroup(nameOrGid: string): number {
  if (/^\d+$/.test(nameOrGid)) return Number(nameOrGid);
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    /* below */
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === nameOrGid && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new Error(`--socket-group: no group named '${nameOrGid}'`);
}

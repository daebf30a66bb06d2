/**
 * The listen() backlog a server really got, as the kernel reports it (`ss`, iproute2: for a listening
 * socket the Send-Q column is its maximum accept queue), and the net.core.somaxconn that caps it.
 */
import { readFileSync } from 'node:fs';
import { run } from './exec';

export function somaxconn(): number {
  return Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
}

/** Backlog of the listening Unix socket at `path`, or undefined when nothing listens there. */
export async function unixBacklog(path: string): Promise<number | undefined> {
  const r = await run('ss', ['-xlnH', 'src', path], { timeoutMs: 30_000 });
  return sendQ(r.stdout);
}

/** Backlog of the listening TCP socket on `port` (any address). */
export async function tcpBacklog(port: number): Promise<number | undefined> {
  const r = await run('ss', ['-tlnH', 'sport', '=', `:${port}`], { timeoutMs: 30_000 });
  return sendQ(r.stdout);
}

function sendQ(ssOutput: string): number | undefined {
  // unix: Netid State Recv-Q Send-Q Local…   tcp (-t, no Netid column): State Recv-Q Send-Q Local…
  for (const line of ssOutput.split('\n')) {
    const f = line.trim().split(/\s+/);
    const i = f.indexOf('LISTEN');
    if (i >= 0 && f.length > i + 2) return Number(f[i + 2]);
  }
  return undefined;
}

/**
 * Reassembly: find spares by their metadata, pair each with its main device by fingerprint (setup
 * metadata records the main device's size, logical block size and stable IDs: serial/WWN, or a loop
 * device's backing file), and report conflicts. Paths only say where to look; they never decide a pair.
 */
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { MetadataStore } from '../metadata/store';
import { identityFromBackend, pairingMismatches } from '../metadata/fingerprint';
import type { MainIdentity } from '../metadata/types';
import { devMajorMinor, openBackend } from '../storage/file-backend';

export interface Candidate {
  readonly path: string;
  readonly realPath: string;
  readonly identity?: MainIdentity;
  readonly spare?: {
    readonly setupUuid: string;
    readonly main: MainIdentity;
    readonly validCopies: number;
    readonly staleCopies: number;
  };
  /** Why this candidate was skipped (in use, unreadable, damaged metadata …). */
  readonly skipped?: string;
}

export interface Setup {
  readonly name: string;
  readonly setupUuid: string;
  readonly main: string;
  readonly spare: string;
}

export interface AssemblyPlan {
  readonly setups: Setup[];
  readonly conflicts: { readonly setupUuid?: string; readonly spare?: string; readonly problem: string }[];
  readonly warnings: string[];
  readonly candidates: Candidate[];
}

/** Default candidates: every block device linked from /dev/disk/by-id. */
export function defaultCandidates(): string[] {
  const dir = '/dev/disk/by-id';
  try {
    return readdirSync(dir).map((n) => `${dir}/${n}`);
  } catch {
    return [];
  }
}

/** Block devices mounted or held by another driver (device-mapper, md, …), or with such a partition, are not ours to take. */
function inUse(realPath: string): string | undefined {
  let st;
  try {
    st = statSync(realPath, { bigint: true });
  } catch {
    return undefined;
  }
  if (!st.isBlockDevice()) return undefined;
  const [major, minor] = devMajorMinor(st.rdev);
  let mounted = new Set<string>();
  try {
    mounted = new Set(
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[2]),
    );
  } catch {
    /* no procfs */
  }
  const sys = `/sys/dev/block/${major}:${minor}`;
  const check = (dir: string, devno: string, what: string): string | undefined => {
    if (mounted.has(devno)) return `${what}mounted`;
    try {
      const holders = readdirSync(`${dir}/holders`);
      if (holders.length) return `${what}in use by ${holders.join(', ')}`;
    } catch {
      /* no sysfs entry */
    }
    return undefined;
  };
  const self = check(sys, `${major}:${minor}`, '');
  if (self) return self;
  // A whole disk whose partition is mounted or held is in use too.
  try {
    for (const entry of readdirSync(sys)) {
      const dev = readFileSync(`${sys}/${entry}/dev`, 'utf8').trim();
      if (!existsSync(`${sys}/${entry}/partition`)) continue;
      const p = check(`${sys}/${entry}`, dev, `partition ${entry} `);
      if (p) return p;
    }
  } catch {
    /* not a disk with partitions */
  }
  return undefined;
}

export async function examine(path: string): Promise<Candidate> {
  let realPath: string;
  try {
    realPath = realpathSync(path);
  } catch (err) {
    return { path, realPath: path, skipped: `cannot resolve: ${(err as NodeJS.ErrnoException).code}` };
  }
  const busy = inUse(realPath);
  if (busy) return { path, realPath, skipped: busy };
  let backend;
  try {
    backend = await openBackend(realPath, { readOnly: true });
  } catch (err) {
    return { path, realPath, skipped: (err as Error).message };
  }
  try {
    const identity = identityFromBackend(backend);
    let report;
    try {
      report = await MetadataStore.inspect(backend);
    } catch {
      return { path, realPath, identity };
    }
    const hasMagic = report.copies.some((c) => c.valid || (c.failedCheck && c.failedCheck !== 'magic' && c.failedCheck !== 'io'));
    if (!hasMagic) return { path, realPath, identity };
    if (report.chosen === null || !report.setupUuid || !report.main) {
      return { path, realPath, identity, skipped: 'remapd metadata present but no valid copy (run remapd check --spare)' };
    }
    return {
      path,
      realPath,
      identity,
      spare: {
        setupUuid: report.setupUuid,
        main: report.main,
        validCopies: report.copies.filter((c) => c.valid).length,
        staleCopies: report.copies.filter((c) => c.stale).length,
      },
    };
  } finally {
    await backend.close().catch(() => undefined);
  }
}

export async function planAssembly(paths: string[]): Promise<AssemblyPlan> {
  const seen = new Set<string>();
  const candidates: Candidate[] = [];
  for (const p of paths) {
    const c = await examine(p);
    if (seen.has(c.realPath)) continue;
    seen.add(c.realPath);
    candidates.push(c);
  }
  const spares = candidates.filter((c) => c.spare);
  const mains = candidates.filter((c) => !c.spare && !c.skipped && c.identity);
  const conflicts: AssemblyPlan['conflicts'] = [];
  const warnings: string[] = [];
  const setups: Setup[] = [];

  // One setup UUID on two devices: a cloned spare. Neither is trusted.
  const byUuid = new Map<string, Candidate[]>();
  for (const s of spares) byUuid.set(s.spare!.setupUuid, [...(byUuid.get(s.spare!.setupUuid) ?? []), s]);
  const claims = new Map<string, { spare: Candidate; main: Candidate }[]>();
  for (const [uuid, list] of byUuid) {
    if (list.length > 1) {
      conflicts.push({
        setupUuid: uuid,
        problem: `setup ${uuid} is on ${list.length} spares (${list.map((c) => c.path).join(', ')}): cloned spare?`,
      });
      continue;
    }
    const spare = list[0];
    const s = spare.spare!;
    if (s.validCopies < 5) warnings.push(`${spare.path}: ${5 - s.validCopies} metadata copies damaged (repaired when served)`);
    else if (s.staleCopies > 0)
      warnings.push(`${spare.path}: ${s.staleCopies} metadata copies stale (copies disagree; repaired when served)`);
    const matches = mains.filter((m) => pairingMismatches(s.main, m.identity!).length === 0);
    if (matches.length === 0) {
      conflicts.push({
        setupUuid: uuid,
        spare: spare.path,
        problem: `main device missing: none matches size ${s.main.size}${s.main.serial ? `, serial ${s.main.serial}` : ''}${s.main.wwn ? `, WWN ${s.main.wwn}` : ''}`,
      });
      continue;
    }
    if (matches.length > 1) {
      conflicts.push({
        setupUuid: uuid,
        spare: spare.path,
        problem: `ambiguous: ${matches.map((m) => m.path).join(', ')} all match the recorded fingerprint (no serial/WWN recorded)`,
      });
      continue;
    }
    const main = matches[0];
    claims.set(main.realPath, [...(claims.get(main.realPath) ?? []), { spare, main }]);
  }
  for (const [mainPath, list] of claims) {
    if (list.length > 1) {
      conflicts.push({
        problem: `${list.length} spares claim the main device ${mainPath}: ${list.map((l) => `${l.spare.path} (setup ${l.spare.spare!.setupUuid})`).join(', ')}`,
      });
      continue;
    }
    const { spare, main } = list[0];
    const uuid = spare.spare!.setupUuid;
    setups.push({ name: `setup-${uuid.slice(0, 8)}`, setupUuid: uuid, main: main.path, spare: spare.path });
  }
  setups.sort((a, b) => a.name.localeCompare(b.name));
  return { setups, conflicts, warnings, candidates };
}

/** Where a setup's sockets go. */
export function setupPaths(name: string, dir: string): { socket: string; control: string; log: string } {
  return { socket: `${dir}/${name}.sock`, control: `${dir}/${name}.ctl`, log: `${dir}/${name}.log` };
}

export function describeCandidate(c: Candidate): string {
  if (c.skipped) return `${c.path}: skipped (${c.skipped})`;
  if (c.spare) return `${c.path}: spare of setup ${c.spare.setupUuid}`;
  return `${c.path}: ${basename(c.realPath)}, ${c.identity?.size} bytes${c.identity?.serial ? `, serial ${c.identity.serial}` : ''}`;
}

export { existsSync };

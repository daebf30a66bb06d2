/**
 * One owner per setup: the exclusive claim on a main or spare device, and the messages that name the
 * owner when the claim fails.
 *
 * How a device is claimed (on a descriptor of its own, held until release(); the backends open the
 * device normally and never with O_EXCL, which would collide with this claim):
 *   block device  open(O_RDONLY | O_EXCL): the kernel refuses (EBUSY) a second exclusive opener, and a
 *                 device that is mounted or held by device-mapper/md.
 *   regular file  flock(LOCK_EX | LOCK_NB) through the native addon. Released by the kernel when the
 *                 process dies (kill -9 included), so a stale claim cannot exist.
 *   regular file, no addon
 *                 no kernel lock: the owner marker in the spare's metadata decides. A marker naming a
 *                 live process on this host (same pid, same start time) refuses; a marker of a dead
 *                 process, or of another host (which cannot be checked from here), does not.
 *
 * The owner marker (metadata header: pid, host, start time) only *names* the owner; the lock is the truth.
 */
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  statSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { flockNb, nativeAvailable } from '../storage/native';
import type { OwnerMarker } from '../metadata/header';
import { readOwner } from '../metadata/store';
import { openBackend } from '../storage/file-backend';

/** The claim could not be taken: another process owns the device. */
export class SetupInUseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SetupInUseError';
  }
}

export interface DeviceClaim {
  readonly path: string;
  /** how the claim is held */
  readonly how: 'O_EXCL' | 'flock' | 'marker';
  release(): void;
}

let bootMs: number | undefined;
/** Start time of a process in ms since the epoch, from /proc (undefined: no such process). */
export function processStartMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may contain spaces and parentheses: fields after the last ')'
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(rest[19]); // field 22: starttime, in clock ticks since boot
    if (bootMs === undefined) {
      const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
      bootMs = m ? Number(m[1]) * 1000 : 0;
    }
    return Number.isFinite(ticks) ? bootMs + ticks * 10 : undefined; // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

/** The marker this process writes: pid, host, start time. */
export function ownMarker(): OwnerMarker {
  return { pid: process.pid, host: hostname(), since: processStartMs(process.pid) ?? Date.now() };
}

/** True when the marker names a live process on this host (its start time matches within 1 s). */
export function markerIsLive(m: OwnerMarker | undefined): boolean {
  if (!m || m.pid <= 0 || m.host !== hostname() || m.pid === process.pid) return false;
  const start = processStartMs(m.pid);
  return start !== undefined && Math.abs(start - m.since) <= 1000;
}

/** "remapd pid 123 on host h since 2026-…Z" */
export function describeOwner(m: OwnerMarker): string {
  return `pid ${m.pid} on host ${m.host || '?'} since ${new Date(m.since).toISOString()}`;
}

/** Other processes of this host that have `path` open (scans /proc/*\/fd; for error messages only). */
export function openersOf(path: string): number[] {
  let target: string;
  try {
    target = realpathSync(path);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${p}/fd/${fd}`) === target) {
          out.push(Number(p));
          break;
        }
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return out;
}

/**
 * Claim `path` (the main or spare of a setup) for this process. `marker` reads the owner marker on the
 * setup's spare (if any): it names the owner in the refusal and, without the addon, decides.
 * Throws SetupInUseError when someone else holds it.
 */
export async function claimDevice(
  path: string,
  role: 'main' | 'spare' | 'evacuation target',
  marker?: () => Promise<OwnerMarker | undefined>,
): Promise<DeviceClaim> {
  let st;
  try {
    st = statSync(path);
  } catch {
    return { path, how: 'marker', release: () => undefined }; // missing: openBackend reports it clearly
  }
  const refuse = async (how: string): Promise<never> => {
    const m = await marker?.().catch(() => undefined);
    const owner = m && markerIsLive(m) ? `remapd ${describeOwner(m)}` : undefined;
    const others = owner ? [] : openersOf(path);
    const kernel = owner || others.length || !st.isBlockDevice() ? undefined : kernelHolderOf(st.rdev);
    const who =
      owner ??
      (others.length
        ? `process${others.length > 1 ? 'es' : ''} ${others.map((p) => `pid ${p}${procStartText(p)}`).join(', ')} on host ${hostname()}`
        : (kernel ?? 'another process'));
    throw new SetupInUseError(`${role} ${path} is in use by ${who} (${how}); stop that first — a setup has one owner`);
  };
  if (st.isBlockDevice()) {
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_EXCL);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EBUSY') await refuse('opened exclusively, or mounted');
      throw err;
    }
    return { path, how: 'O_EXCL', release: once(() => closeSync(fd!)) };
  }
  if (!st.isFile()) return { path, how: 'marker', release: () => undefined }; // openBackend refuses these itself
  if (flockNb) {
    const fd = openSync(path, constants.O_RDONLY);
    let got: boolean;
    try {
      // the path may have been replaced between stat and open: lock what was opened
      fstatSync(fd);
      got = flockNb(fd, true);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    if (!got) {
      closeSync(fd);
      await refuse('locked');
    }
    return { path, how: 'flock', release: once(() => closeSync(fd)) };
  }
  const m = await marker?.().catch(() => undefined);
  if (markerIsLive(m))
    await refuse(`owner marker of a live process; no file lock: native addon ${nativeAvailable ? 'without flockNb' : 'not built'}`);
  return { path, how: 'marker', release: () => undefined };
}

/** The kernel's own users of a block device, for messages: "the filesystem mounted at /mnt",
 * "device-mapper dm-0", "its partition sdb1" (/proc/self/mountinfo, /sys/dev/block/M:m/holders). */
export function kernelHolderOf(rdev: number): string | undefined {
  const majMin = (d: number): string => `${Math.floor(d / 256) & 0xfff}:${(d & 0xff) | ((d >> 12) & 0xfff00)}`;
  const id = majMin(rdev);
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const f = line.split(' ');
      if (f[2] === id) return `the filesystem mounted at ${f[4]}`;
    }
  } catch {
    /* no /proc: say less */
  }
  try {
    const sys = realpathSync(`/sys/dev/block/${id}`);
    const holders = readdirSync(`${sys}/holders`);
    if (holders.length) return `the kernel (held by ${holders.join(', ')})`;
    const parts = readdirSync(sys).filter((n) => existsSync(`${sys}/${n}/partition`));
    for (const p of parts) {
      const inner = kernelHolderOf(statSync(`/dev/${p}`).rdev);
      if (inner) return `${inner}, on its partition ${p}`;
    }
  } catch {
    /* not in sysfs */
  }
  return undefined;
}

function procStartText(pid: number): string {
  const ms = processStartMs(pid);
  return ms === undefined ? '' : ` (since ${new Date(ms).toISOString()})`;
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    try {
      fn();
    } catch {
      /* already closed */
    }
  };
}

/** The claims on a setup's devices; release() gives them all back. */
export interface SetupClaim {
  readonly claims: readonly DeviceClaim[];
  release(): void;
}

/** The owner marker on a spare (opened read-only, closed again); undefined when there is none. */
export async function spareOwner(spare: string): Promise<OwnerMarker | undefined> {
  const b = await openBackend(spare, { readOnly: true });
  try {
    return await readOwner(b);
  } finally {
    await b.close().catch(() => undefined);
  }
}

/** Claim the spare (first: its marker names the owner), then main. All or nothing. */
export async function claimSetup(devices: { main?: string; spare?: string }): Promise<SetupClaim> {
  const marker = devices.spare ? () => spareOwner(devices.spare!) : undefined;
  const claims: DeviceClaim[] = [];
  try {
    if (devices.spare) claims.push(await claimDevice(devices.spare, 'spare', marker));
    if (devices.main) claims.push(await claimDevice(devices.main, 'main', marker));
  } catch (err) {
    for (const c of claims) c.release();
    throw err;
  }
  return { claims, release: () => claims.forEach((c) => c.release()) };
}

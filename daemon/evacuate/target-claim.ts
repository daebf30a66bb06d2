/**
 * The evacuation target's claim: `remapd evacuate --to NEW` owns NEW for as long as it copies onto it,
 * keeps it verified, and (after --switch) serves it, with the same one-owner lock main and spare have
 * (daemon/owner-lock.ts: O_EXCL on a block device, flock on a file). Without it, two daemons could copy
 * two exports onto one disk, a `remapd serve` could open a disk that is being written, and an evacuation
 * could overwrite the setup's own spare (its metadata) or main.
 *
 * Refused, with the owner named:
 *   - this setup's own main or spare (the same device under any name: block devices compared by device
 *     number, files by inode; a partition of either, or the disk a partition of either is on);
 *   - a device another process holds: another remapd (its spare's owner marker names it), or any
 *     exclusive opener, a mounted filesystem, device-mapper/md (kernel holders).
 */
import { existsSync, realpathSync, statSync, type Stats } from 'node:fs';
import { claimDevice, spareOwner, type DeviceClaim } from '../owner-lock';

/** The setup's own devices, which an evacuation must never write. */
export interface OwnDevices {
  readonly main: string;
  readonly spare?: string;
}

/** The target is unusable; the message is for the operator. */
export class TargetRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetRefusedError';
  }
}

/** sysfs folder of a block device ("/sys/devices/…/sdb/sdb1"), for the partition-of relation. */
function sysfsOf(st: Stats): string | undefined {
  const id = `${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`;
  const p = `/sys/dev/block/${id}`;
  return existsSync(p) ? realpathSync(p) : undefined;
}

/** How `target` overlaps `own` ("is", "is a partition of", "holds a partition of") or undefined. */
function overlap(target: Stats, own: Stats): string | undefined {
  if (target.isBlockDevice() && own.isBlockDevice()) {
    if (target.rdev === own.rdev) return 'is';
    const a = sysfsOf(target);
    const b = sysfsOf(own);
    if (a && b && a.startsWith(`${b}/`)) return 'is a partition of';
    if (a && b && b.startsWith(`${a}/`)) return 'is the disk that holds';
    return undefined;
  }
  return target.dev === own.dev && target.ino === own.ino && !target.isBlockDevice() && !own.isBlockDevice() ? 'is' : undefined;
}

/** Refuse the setup's own main and spare (by identity, not by name). */
export function refuseOwnDevice(target: string, own: OwnDevices): void {
  let t: Stats;
  try {
    t = statSync(target);
  } catch {
    return; // missing: opening it reports that clearly
  }
  for (const [role, path] of [
    ['main', own.main],
    ['spare', own.spare],
  ] as const) {
    if (!path) continue;
    let o: Stats;
    try {
      o = statSync(path);
    } catch {
      continue;
    }
    const how = overlap(t, o);
    if (how)
      throw new TargetRefusedError(
        `${target} ${how} this setup's own ${role} (${path}): evacuate onto a different disk, never onto the setup's main or spare`,
      );
  }
}

/**
 * Claim the evacuation target for this process (release() gives it back). Throws TargetRefusedError
 * for the setup's own devices and SetupInUseError (owner-lock.ts) for a device someone else holds.
 */
export async function claimEvacuationTarget(target: string, own: OwnDevices): Promise<DeviceClaim> {
  refuseOwnDevice(target, own);
  return claimDevice(target, 'evacuation target', () => spareOwner(target));
}

/**
 * What sysfs says about a block device: size, logical/physical sector size, rotational, discard and
 * write-zeroes limits, and stable ids (serial, WWN, or a loop device's backing file). Found through
 * stat().rdev, so it works for any path naming the device (/dev/sdX, /dev/disk/by-id/…, a partition).
 * Split out of file-backend.ts: discovery has nothing to do with the data path.
 */
import * as fs from 'fs';
import * as path from 'path';
import { BackendError } from './backend';

type NodeErr = NodeJS.ErrnoException;

/** Information about a block device read from sysfs. */
export interface BlockDeviceInfo {
  readonly sysfsPath: string;
  readonly size: number;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly rotational: boolean;
  readonly discardMaxBytes: number;
  readonly writeZeroesMaxBytes: number;
  readonly stableIds: { readonly serial?: string; readonly wwn?: string };
}

export function readSysfs(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function sysfsNumber(file: string): number | undefined {
  const text = readSysfs(file);
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Linux dev_t split (glibc's gnu_dev_major/minor). */
export function devMajorMinor(rdev: bigint): [number, number] {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return [major, minor];
}

function cleanId(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  // sysfs serials are sometimes space-padded or NUL-terminated.
  const t = text.replace(/\0/g, '').trim();
  return t === '' ? undefined : t;
}

/** Stable ids from sysfs, then from /dev/disk/by-id symlinks pointing at this device. */
function stableIdsFor(devicePath: string, sysDir: string, diskDir: string): BlockDeviceInfo['stableIds'] {
  const ids: { serial?: string; wwn?: string } = {};
  ids.serial =
    cleanId(readSysfs(path.join(sysDir, 'serial'))) ??
    cleanId(readSysfs(path.join(sysDir, 'device', 'serial'))) ??
    cleanId(readSysfs(path.join(diskDir, 'serial'))) ??
    cleanId(readSysfs(path.join(diskDir, 'device', 'serial')));
  ids.wwn =
    cleanId(readSysfs(path.join(sysDir, 'wwid'))) ??
    cleanId(readSysfs(path.join(diskDir, 'wwid'))) ??
    cleanId(readSysfs(path.join(diskDir, 'device', 'wwid')));
  const byId = '/dev/disk/by-id';
  let names: string[] = [];
  try {
    names = fs.readdirSync(byId);
  } catch {
    names = [];
  }
  let real: string;
  try {
    real = fs.realpathSync(devicePath);
  } catch {
    real = devicePath;
  }
  for (const name of names.sort()) {
    let target: string;
    try {
      target = fs.realpathSync(path.join(byId, name));
    } catch {
      continue;
    }
    if (target !== real) continue;
    if (!ids.wwn && name.startsWith('wwn-')) ids.wwn = name.slice(4);
    if (!ids.serial && /^(ata|nvme|scsi|usb|virtio|mmc)-/.test(name) && !name.startsWith('nvme-eui.')) {
      // <bus>-<model>_<serial>[-partN]: the serial is after the last '_'.
      const body = name.replace(/^[a-z]+-/, '');
      const us = body.lastIndexOf('_');
      if (us >= 0) ids.serial = body.slice(us + 1);
    }
  }
  if (!ids.serial) {
    // A loop device has no serial; its backing file (device and inode, not its path) identifies it
    // across detach/attach in any order.
    const backing = readSysfs(path.join(sysDir, 'loop', 'backing_file'));
    if (backing) {
      try {
        const st = fs.statSync(backing.trim());
        ids.serial = `loop-backing:${st.dev}:${st.ino}`;
      } catch {
        /* backing file gone (deleted): no stable id */
      }
    }
  }
  const out: { serial?: string; wwn?: string } = {};
  if (ids.serial) out.serial = ids.serial;
  if (ids.wwn) out.wwn = ids.wwn;
  return out;
}

/** Reads size, sector sizes and ids of a block device from sysfs (found through stat().rdev). */
export function blockDeviceInfo(devicePath: string, rdev: bigint): BlockDeviceInfo {
  const [major, minor] = devMajorMinor(rdev);
  const link = `/sys/dev/block/${major}:${minor}`;
  let sysDir: string;
  try {
    sysDir = fs.realpathSync(link);
  } catch (err) {
    throw new BackendError(
      (err as NodeErr).code ?? 'ENOENT',
      `${devicePath}: block device ${major}:${minor} has no sysfs entry ${link} (is /sys mounted?)`,
      0,
    );
  }
  // A partition has no queue/ of its own: the queue limits are the parent disk's.
  const diskDir = fs.existsSync(path.join(sysDir, 'partition')) ? path.dirname(sysDir) : sysDir;
  const sectors = sysfsNumber(path.join(sysDir, 'size'));
  if (sectors === undefined) {
    throw new BackendError('EIO', `${devicePath}: cannot read ${sysDir}/size`, 0);
  }
  const q = path.join(diskDir, 'queue');
  const logicalBlockSize = sysfsNumber(path.join(q, 'logical_block_size')) ?? 512;
  return {
    sysfsPath: sysDir,
    size: sectors * 512, // sysfs size is always in 512-byte units, whatever the sector size
    logicalBlockSize,
    physicalBlockSize: sysfsNumber(path.join(q, 'physical_block_size')) ?? logicalBlockSize,
    rotational: sysfsNumber(path.join(q, 'rotational')) === 1,
    discardMaxBytes: sysfsNumber(path.join(q, 'discard_max_bytes')) ?? 0,
    writeZeroesMaxBytes: sysfsNumber(path.join(q, 'write_zeroes_max_bytes')) ?? 0,
    stableIds: stableIdsFor(devicePath, sysDir, diskDir),
  };
}

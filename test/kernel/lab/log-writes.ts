/**
 * Reader and replayer for the kernel's dm-log-writes log (drivers/md/dm-log-writes.c,
 * Documentation/admin-guide/device-mapper/log-writes.rst): our own, since xfstests' replay-log is not
 * packaged by Debian.
 *
 * Layout (little-endian): the super in the first device sector {magic u64, version u64, nr_entries u64,
 * sectorsize u32}; from the next device sector on, nr_entries entries, each one device sector holding
 * {sector u64, nr_sectors u64, flags u64, data_len u64} (a mark's name follows in the same sector),
 * then nr_sectors device sectors of written data, except for discards and marks. `sector` and
 * `nr_sectors` count device sectors of `sectorsize` bytes. Writes are logged when the kernel knows them
 * durable: completed writes at the next FLUSH (before the flush entry), FUA writes on completion; so the
 * device replayed up to any entry is a state a power cut could have left.
 */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';

export const LOG_FLUSH = 1 << 0;
export const LOG_FUA = 1 << 1;
export const LOG_DISCARD = 1 << 2;
export const LOG_MARK = 1 << 3;
export const LOG_METADATA = 1 << 4;
const MAGIC = 0x6a736677736872n;

export interface LogEntry {
  /** 0-based position in the log. */
  readonly index: number;
  /** First device sector written (or discarded). */
  readonly sector: number;
  readonly nrSectors: number;
  readonly flags: number;
  /** The mark's name, for LOG_MARK entries. */
  readonly mark?: string;
  /** Byte offset of the entry's data in the log (none for discards and marks). */
  readonly dataOffset: number;
}

export interface WriteLog {
  readonly sectorSize: number;
  readonly entries: readonly LogEntry[];
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, offset + done);
    if (n === 0) throw new Error(`log truncated at byte ${offset + done}`);
    done += n;
  }
  return buf;
}

/** Reads the super and every entry header of the log file at `path`. */
export function readWriteLog(path: string): WriteLog {
  const fd = openSync(path, 'r');
  try {
    const sup = readAt(fd, 0, 28);
    if (sup.readBigUInt64LE(0) !== MAGIC) throw new Error(`${path}: not a dm-log-writes log (bad magic)`);
    if (sup.readBigUInt64LE(8) !== 1n) throw new Error(`${path}: log version ${sup.readBigUInt64LE(8)} (want 1)`);
    const count = Number(sup.readBigUInt64LE(16));
    const sectorSize = sup.readUInt32LE(24);
    if (![512, 1024, 2048, 4096].includes(sectorSize)) throw new Error(`${path}: sector size ${sectorSize}`);
    const entries: LogEntry[] = [];
    let pos = sectorSize;
    for (let index = 0; index < count; index++) {
      const h = readAt(fd, pos, sectorSize);
      const sector = Number(h.readBigUInt64LE(0));
      const nrSectors = Number(h.readBigUInt64LE(8));
      const flags = Number(h.readBigUInt64LE(16));
      const dataLen = Number(h.readBigUInt64LE(24));
      const mark = flags & LOG_MARK ? h.subarray(32, 32 + dataLen).toString('latin1') : undefined;
      entries.push({ index, sector, nrSectors, flags, mark, dataOffset: pos + sectorSize });
      pos += sectorSize;
      if (!(flags & (LOG_DISCARD | LOG_MARK))) pos += nrSectors * sectorSize;
    }
    return { sectorSize, entries };
  } finally {
    closeSync(fd);
  }
}

/** Where a byte range of the logged device lands: a file and an offset in it (or nowhere). */
export type Placement = (deviceOffset: number, length: number) => Array<{ fd: number; offset: number; start: number; length: number }>;

/**
 * Applies entries [from, to) of the log to the replay target. Discards write zeroes (what the lab's
 * targets return after a discard). Returns the bytes written.
 */
export function replay(logPath: string, log: WriteLog, from: number, to: number, place: Placement): number {
  const fd = openSync(logPath, 'r');
  let bytes = 0;
  try {
    for (let i = from; i < to; i++) {
      const e = log.entries[i];
      if (e.flags & LOG_MARK || e.nrSectors === 0) continue;
      const len = e.nrSectors * log.sectorSize;
      const data = e.flags & LOG_DISCARD ? Buffer.alloc(len) : readAt(fd, e.dataOffset, len);
      for (const p of place(e.sector * log.sectorSize, len)) {
        writeSync(p.fd, data, p.start, p.length, p.offset);
        bytes += p.length;
      }
    }
  } finally {
    closeSync(fd);
  }
  return bytes;
}

/** A placement that splits the logged device into consecutive files: [{fd, size}, ...]. */
export function splitPlacement(parts: ReadonlyArray<{ fd: number; size: number }>): Placement {
  return (off, len) => {
    const out: ReturnType<Placement> = [];
    let base = 0;
    for (const part of parts) {
      const a = Math.max(off, base);
      const b = Math.min(off + len, base + part.size);
      if (a < b) out.push({ fd: part.fd, offset: a - base, start: a - off, length: b - a });
      base += part.size;
    }
    return out;
  };
}

/**
 * Suspect regions: parts of main that someone has reason to distrust (a ddrescue or badblocks map given
 * to `remapd import-map`, LBAs from SMART's self-test and error logs, failures the scan could not isolate
 * within its read budget). The scanner reads them before it continues its sequential pass; what fails
 * there becomes pending like any scan finding: a hint is never a remap by itself.
 *
 * This is the parent-side queue: validation, alignment to remap blocks, merging, counts for status.
 * Regions live in memory only (a restart forgets hints not yet visited; import-map can be run again).
 */
import { byteOffset, type ByteOffset } from '../units';

export interface ByteRange {
  readonly offset: ByteOffset;
  readonly length: number;
}

export interface QueuedSuspect {
  readonly id: number;
  readonly offset: ByteOffset;
  readonly length: number;
  readonly source: string;
  /** Sent to the current worker (reset when the worker restarts or the scan pauses). */
  sent: boolean;
}

export interface SuspectStatus {
  /** Regions waiting to be read, and their bytes. */
  queued: number;
  queuedBytes: number;
  /** Regions read since the daemon started, and their bytes. */
  visited: number;
  visitedBytes: number;
  /** Regions queued so far by source (e.g. "import-map ddrescue", "smart self-test log"). */
  bySource: Record<string, number>;
}

/** Most ranges accepted by one `suspect` command, and most regions waiting at once. */
export const MAX_RANGES_PER_CALL = 100_000;
export const MAX_QUEUED = 1_000_000;
const MAX_SOURCE_CHARS = 200;

export class SuspectError extends Error {}

/** Checks a `suspect` command's arguments: integers, inside the device, bounded count. */
export function parseSuspectArgs(args: Record<string, unknown>, deviceSize: number): { ranges: ByteRange[]; source: string } {
  const { ranges, source } = args;
  if (typeof source !== 'string' || source.trim() === '')
    throw new SuspectError('source: expected a non-empty string naming where the hints come from');
  if (source.length > MAX_SOURCE_CHARS) throw new SuspectError(`source: at most ${MAX_SOURCE_CHARS} characters`);
  if (!Array.isArray(ranges)) throw new SuspectError('ranges: expected an array of {offset, length} (bytes)');
  if (ranges.length > MAX_RANGES_PER_CALL)
    throw new SuspectError(`ranges: at most ${MAX_RANGES_PER_CALL} per call (got ${ranges.length}); send them in parts`);
  const out: ByteRange[] = [];
  ranges.forEach((r: unknown, i) => {
    const o = r as { offset?: unknown; length?: unknown } | null;
    if (typeof o !== 'object' || o === null) throw new SuspectError(`ranges[${i}]: expected {offset, length}`);
    const { offset, length } = o;
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0)
      throw new SuspectError(`ranges[${i}].offset: expected an integer byte offset ≥ 0`);
    if (typeof length !== 'number' || !Number.isSafeInteger(length) || length <= 0)
      throw new SuspectError(`ranges[${i}].length: expected an integer byte length > 0`);
    if (offset + length > deviceSize)
      throw new SuspectError(`ranges[${i}]: ${offset}+${length} ends past the device (${deviceSize} bytes)`);
    out.push({ offset: byteOffset(offset), length });
  });
  return { ranges: out, source: source.trim() };
}

/** Aligns ranges outward to whole blocks, sorts and merges overlapping or touching ones. */
export function alignAndMerge(ranges: readonly ByteRange[], blockSize: number, deviceSize: number): ByteRange[] {
  const aligned = ranges
    .map((r) => {
      const s = Math.floor(r.offset / blockSize) * blockSize;
      const e = Math.min(deviceSize, Math.ceil((r.offset + r.length) / blockSize) * blockSize);
      return { offset: byteOffset(s), length: e - s };
    })
    .sort((a, b) => a.offset - b.offset);
  const out: { offset: ByteOffset; length: number }[] = [];
  for (const r of aligned) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ ...r });
  }
  return out;
}

export class SuspectQueue {
  private readonly queue: QueuedSuspect[] = [];
  private nextId = 1;
  private visited = 0;
  private visitedBytes = 0;
  private queuedBytes = 0;
  private readonly bySource: Record<string, number> = {};

  constructor(
    private readonly blockSize: number,
    private readonly deviceSize: number,
  ) {}

  /** Queues the ranges; returns the number of regions queued (after aligning and merging). */
  add(ranges: readonly ByteRange[], source: string): number {
    const merged = alignAndMerge(ranges, this.blockSize, this.deviceSize);
    if (this.queue.length + merged.length > MAX_QUEUED)
      throw new SuspectError(`too many suspect regions waiting (${this.queue.length}; at most ${MAX_QUEUED})`);
    for (const r of merged) {
      this.queue.push({ id: this.nextId++, offset: r.offset, length: r.length, source, sent: false });
      this.queuedBytes += r.length;
    }
    if (merged.length) this.bySource[source] = (this.bySource[source] ?? 0) + merged.length;
    return merged.length;
  }

  /** Regions not yet handed to the worker; marks them sent. */
  takeUnsent(): QueuedSuspect[] {
    const out = this.queue.filter((q) => !q.sent);
    for (const q of out) q.sent = true;
    return out;
  }

  /** The worker lost them (restart, pause, device failure): send again later. */
  unsendAll(): void {
    for (const q of this.queue) q.sent = false;
  }

  done(id: number): QueuedSuspect | undefined {
    const i = this.queue.findIndex((q) => q.id === id);
    if (i < 0) return undefined;
    const [q] = this.queue.splice(i, 1);
    this.visited++;
    this.visitedBytes += q.length;
    this.queuedBytes -= q.length;
    return q;
  }

  get size(): number {
    return this.queue.length;
  }

  status(): SuspectStatus {
    return {
      queued: this.queue.length,
      queuedBytes: this.queuedBytes,
      visited: this.visited,
      visitedBytes: this.visitedBytes,
      bySource: { ...this.bySource },
    };
  }
}

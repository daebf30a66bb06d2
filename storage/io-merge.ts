/**
 * Vectored I/O for split requests. A request the remap layer splits (main pieces around remapped
 * blocks, spare pieces wherever the spare holds them) reaches the backend as many ops in one tick,
 * all on the same target buffer. Run one by one they cost one system call each and, on a direct
 * device, one trip to the disk each. Here ops on the same buffer whose file ranges follow each other
 * become ONE preadv/pwritev: contiguous file ranges are simply more segments (the buffer positions
 * may be anywhere), and for reads a small hole between two pieces (a remapped block, up to MAX_GAP) is
 * read into a scratch buffer and thrown away. The batcher runs a merged unit as one op and, if it
 * fails, runs its pieces again one by one, so errors keep their exact offsets.
 */
import * as native from './native';

/** Largest hole a merged read reads and discards (the remapped blocks between two main pieces). */
export const MAX_GAP = 64 * 1024;
/** Segments per op in the addon (io_lane.c MAX_SEGS). */
const MAX_SEGS = 64;

/** Where the discarded bytes of merged reads land: page-aligned, so O_DIRECT needs no bounce. */
export const scratch: Buffer = native.allocAligned?.(MAX_GAP) ?? Buffer.alloc(MAX_GAP);

export interface MergeOp {
  readonly kind: number;
  readonly offset: number;
  readonly length: number;
  readonly buf: Buffer;
  readonly bufOffset: number;
}

/** One op for the addon: a file range and its segments (ops, and holes read into `scratch`). */
export interface Unit<T extends MergeOp> {
  readonly kind: number;
  readonly offset: number;
  /** File bytes covered, holes included. */
  length: number;
  readonly ops: T[];
  /** Per segment: the op it belongs to, or -1 for a hole of `holes[i]` bytes. */
  readonly segs: number[];
  readonly holes: number[];
}

/** Up to this many ops, "nothing to merge" is found by comparing every pair (no Maps, no sort). */
const FAST_CHECK_MAX = 32;

const isData = (op: MergeOp): boolean => op.kind === native.OP_READ || op.kind === native.OP_WRITE;

/**
 * True when two reads or writes of the queue share a buffer, i.e. when something may merge. A turn of
 * independent requests (random 4 KiB I/O: every request its own buffer) answers false and skips the
 * grouping, which cost a few hundred bytes of garbage per request.
 */
function sharesBuffer(q: readonly MergeOp[]): boolean {
  for (let i = 1; i < q.length; i++) {
    if (!isData(q[i])) continue;
    const b = q[i].buf.buffer;
    for (let j = 0; j < i; j++) if (q[j].buf.buffer === b && isData(q[j])) return true;
  }
  return false;
}

function single<T extends MergeOp>(op: T): Unit<T> {
  return { kind: op.kind, offset: op.offset, length: op.length, ops: [op], segs: [0], holes: [0] };
}

/**
 * Groups the ops of one batch into units. Only reads and writes on the same buffer merge (the pieces
 * of one request); writes only across contiguous ranges (a hole would write garbage). Units keep the
 * order of their first op in the queue (a sync queued after writes stays after them in its job).
 */
export function mergeOps<T extends MergeOp>(q: readonly T[], allowHoles: boolean): Unit<T>[] {
  if (q.length < 2 || (q.length <= FAST_CHECK_MAX && !sharesBuffer(q))) return q.map(single);
  const byBuf = new Map<ArrayBufferLike, T[]>();
  const units: Unit<T>[] = [];
  const first = new Map<Unit<T>, number>();
  const pos = new Map<T, number>();
  q.forEach((op, i) => pos.set(op, i));
  for (const op of q) {
    if (!isData(op)) {
      const u = single(op);
      units.push(u);
      first.set(u, pos.get(op)!);
      continue;
    }
    const g = byBuf.get(op.buf.buffer);
    if (g) g.push(op);
    else byBuf.set(op.buf.buffer, [op]);
  }
  for (const group of byBuf.values()) {
    if (group.length === 1) {
      const u = single(group[0]);
      units.push(u);
      first.set(u, pos.get(group[0])!);
      continue;
    }
    group.sort((a, b) => a.kind - b.kind || a.offset - b.offset);
    let cur: Unit<T> | undefined;
    for (const op of group) {
      if (cur && cur.kind === op.kind) {
        const gap = op.offset - (cur.offset + cur.length);
        const holeOk = allowHoles && op.kind === native.OP_READ && gap > 0 && gap <= MAX_GAP;
        if ((gap === 0 || holeOk) && cur.segs.length + (gap > 0 ? 2 : 1) <= MAX_SEGS) {
          if (gap > 0) {
            cur.segs.push(-1);
            cur.holes.push(gap);
          }
          cur.ops.push(op);
          cur.segs.push(cur.ops.length - 1);
          cur.holes.push(0);
          cur.length += gap + op.length;
          first.set(cur, Math.min(first.get(cur)!, pos.get(op)!));
          continue;
        }
      }
      cur = single(op);
      units.push(cur);
      first.set(cur, pos.get(op)!);
    }
  }
  return units.sort((a, b) => first.get(a)! - first.get(b)!);
}

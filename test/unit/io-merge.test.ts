/**
 * storage/io-merge.ts: which ops of one turn become one vectored op. Pieces of one request (one buffer)
 * merge across contiguous ranges and, for reads, across small holes; independent requests (each its own
 * buffer) stay single ops in queue order, through the pairwise check or, past 32 ops, the grouping; a
 * sync keeps its place behind the writes queued before it.
 */
import t from 'tap';
import { MAX_GAP, mergeOps, type MergeOp } from '../../storage/io-merge';
import { OP_READ, OP_SYNC, OP_WRITE } from '../../storage/native';

const op = (kind: number, offset: number, length: number, buf: Buffer, bufOffset = 0): MergeOp => ({
  kind,
  offset,
  length,
  buf,
  bufOffset,
});
const shape = (units: ReturnType<typeof mergeOps>) =>
  units.map((u) => ({ kind: u.kind, offset: u.offset, length: u.length, ops: u.ops.length, segs: u.segs }));

t.test('independent requests stay single, in queue order', async (t) => {
  for (const n of [2, 32, 33, 100]) {
    const q = Array.from({ length: n }, (_, i) => op(i % 3 === 0 ? OP_WRITE : OP_READ, (n - i) * 8192, 4096, Buffer.alloc(4096)));
    const units = mergeOps(q, true);
    t.equal(units.length, n, `${n} ops: ${n} units`);
    t.ok(
      units.every((u, i) => u.ops.length === 1 && u.ops[0] === q[i]),
      `${n} ops: queue order kept`,
    );
  }
});

t.test('the pieces of one request merge; holes only for reads, up to MAX_GAP', async (t) => {
  const buf = Buffer.alloc(1 << 20);
  const other = Buffer.alloc(4096);
  const q = [
    op(OP_READ, 0, 4096, buf, 0),
    op(OP_READ, 8192, 4096, other), // another request in between
    op(OP_READ, 4096 + 4096, 4096, buf, 8192), // a 4 KiB hole after the first piece
    op(OP_READ, 4096, 0 + 4096, Buffer.alloc(4096)),
    op(OP_READ, 12288 + MAX_GAP + 1, 4096, buf, 12288), // hole too large: a unit of its own
  ];
  const units = mergeOps(q, true);
  t.same(shape(units), [
    { kind: OP_READ, offset: 0, length: 12288, ops: 2, segs: [0, -1, 1] },
    { kind: OP_READ, offset: 8192, length: 4096, ops: 1, segs: [0] },
    { kind: OP_READ, offset: 4096, length: 4096, ops: 1, segs: [0] },
    { kind: OP_READ, offset: 12288 + MAX_GAP + 1, length: 4096, ops: 1, segs: [0] },
  ]);
  const w = Buffer.alloc(16384);
  const writes = mergeOps([op(OP_WRITE, 0, 4096, w, 0), op(OP_WRITE, 8192, 4096, w, 8192), op(OP_WRITE, 4096, 4096, w, 4096)], true);
  t.same(shape(writes), [{ kind: OP_WRITE, offset: 0, length: 12288, ops: 3, segs: [0, 1, 2] }], 'contiguous writes merge');
  const gapped = mergeOps([op(OP_WRITE, 0, 4096, w, 0), op(OP_WRITE, 8192, 4096, w, 8192)], true);
  t.equal(gapped.length, 2, 'writes never merge across a hole');
});

t.test('a sync stays behind the writes queued before it', async (t) => {
  const b1 = Buffer.alloc(4096);
  const b2 = Buffer.alloc(4096);
  const sync = op(OP_SYNC, 0, 0, Buffer.alloc(0));
  const units = mergeOps([op(OP_WRITE, 0, 4096, b1), op(OP_WRITE, 4096, 4096, b2), sync, op(OP_WRITE, 8192, 4096, b1, 0)], true);
  t.same(
    units.map((u) => u.kind),
    [OP_WRITE, OP_WRITE, OP_SYNC, OP_WRITE],
  );
});

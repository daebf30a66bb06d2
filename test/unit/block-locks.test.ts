/** BlockLocks: a mover waits for the writes in flight when it took the lock, and only for those. */
import t from 'tap';
import { BlockLocks } from '../../remap/block-locks';
import { mainBlock } from '../../units';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('a mover waits for writes already in flight (tracked or begun), not for later ones', async (t) => {
  const locks = new BlockLocks();
  const w1 = deferred();
  const w2 = deferred();
  locks.trackWrite(w1.promise);
  const g = locks.beginWrite();
  w2.promise.then(
    () => g.end(),
    () => g.end(),
  );
  const order: string[] = [];
  const moved = locks.withLock(mainBlock(7), async () => {
    order.push('move');
  });
  await tick();
  t.ok(locks.anyLocked, 'block is locked while the mover waits');
  t.same(order, [], 'mover waits while two writes are in flight');
  // A write started after the lock was taken does not hold the mover up.
  const late = deferred();
  locks.trackWrite(late.promise);
  w1.resolve();
  await tick();
  t.same(order, [], 'still one earlier write in flight');
  w2.reject(new Error('EIO'));
  await moved;
  t.same(order, ['move'], 'mover ran once the earlier writes settled (a failed one counts as settled)');
  t.notOk(locks.anyLocked, 'lock released');
  late.resolve();
});

t.test('a second mover also waits for writes of the generation before the first mover', async (t) => {
  const locks = new BlockLocks();
  const old = deferred();
  locks.trackWrite(old.promise);
  const order: string[] = [];
  const m1 = locks.withLock(mainBlock(1), async () => {
    order.push('m1');
  });
  const mid = deferred();
  locks.trackWrite(mid.promise);
  const m2 = locks.withLock(mainBlock(2), async () => {
    order.push('m2');
  });
  mid.resolve();
  await tick();
  t.same(order, [], 'm2 waits for the oldest write too');
  old.resolve();
  await Promise.all([m1, m2]);
  t.same(order.sort(), ['m1', 'm2']);
});

t.test('movers of one block run one after another; waitUnlocked waits for them', async (t) => {
  const locks = new BlockLocks();
  const order: string[] = [];
  const gate = deferred();
  const a = locks.withLock(mainBlock(5), async () => {
    order.push('a-start');
    await gate.promise;
    order.push('a-end');
  });
  const b = locks.withLock(mainBlock(5), async () => {
    order.push('b');
  });
  await tick();
  let unlocked = false;
  const w = locks.waitUnlocked(mainBlock(4), mainBlock(6)).then(() => {
    unlocked = true;
  });
  await tick();
  t.notOk(unlocked, 'I/O on the block waits');
  gate.resolve();
  await Promise.all([a, b, w]);
  t.same(order, ['a-start', 'a-end', 'b']);
  t.ok(unlocked);
});

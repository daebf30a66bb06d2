/**
 * Ordering for blocks whose location changes (remap on write error, migration, manual remap/unremap).
 * A block being moved is locked: I/O that touches it waits, then routes again. The mover first waits
 * for writes that were already in flight on that block, so none of them can land on the old location
 * after the switch.
 */
import type { MainBlock } from './units';

interface ActiveWrite {
  readonly first: MainBlock;
  readonly last: MainBlock;
  readonly done: Promise<unknown>;
}

export class BlockLocks {
  private readonly locks = new Map<MainBlock, Promise<void>>();
  private readonly activeWrites = new Set<ActiveWrite>();

  get anyLocked(): boolean {
    return this.locks.size > 0;
  }

  /** The lock on a block, if it is held. */
  held(block: MainBlock): Promise<void> | undefined {
    return this.locks.get(block);
  }

  /** Wait until no block in [first, last] is locked. */
  async waitUnlocked(first: MainBlock, last: MainBlock): Promise<void> {
    for (;;) {
      let wait: Promise<void> | undefined;
      if (this.locks.size > 0) {
        if (last - first + 1 <= this.locks.size) {
          for (let b = first; b <= last && !wait; b++) wait = this.locks.get(b);
        } else {
          for (const [b, p] of this.locks) if (b >= first && b <= last) { wait = p; break; }
        }
      }
      if (!wait) return;
      await wait;
    }
  }

  /** Track a write in flight on [first, last] until `done` settles. */
  trackWrite<T>(first: MainBlock, last: MainBlock, done: Promise<T>): Promise<T> {
    const w: ActiveWrite = { first, last, done };
    this.activeWrites.add(w);
    const clear = () => this.activeWrites.delete(w);
    done.then(clear, clear);
    return done;
  }

  /**
   * Run `fn` holding the lock on `block`: waits for the current holder, then for writes in flight on
   * the block, then runs. Concurrent callers run one after another.
   */
  async withLock<T>(block: MainBlock, fn: () => Promise<T>): Promise<T> {
    while (this.locks.has(block)) await this.locks.get(block);
    let release!: () => void;
    this.locks.set(block, new Promise<void>((r) => (release = r)));
    try {
      const inFlight: Promise<unknown>[] = [];
      for (const w of this.activeWrites) if (w.first <= block && w.last >= block) inFlight.push(w.done);
      await Promise.allSettled(inFlight);
      return await fn();
    } finally {
      this.locks.delete(block);
      release();
    }
  }
}

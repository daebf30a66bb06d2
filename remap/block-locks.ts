/**
 * Ordering for blocks whose location changes (remap on write error, migration, manual remap/unremap).
 * A block being moved is locked: I/O that touches it waits, then routes again. The mover first waits
 * for the writes that were already in flight when it took the lock, so none of them can land on the old
 * location after the switch.
 *
 * In-flight writes are counted, not listed: every write joins the current *generation* (a counter);
 * taking a lock closes the generation and waits until it and every older one has drained. A mover may
 * thus wait for a write to another block too (microseconds to milliseconds; moves are rare), and the
 * write path pays one increment and one decrement instead of an entry in a set: it must cost no more
 * than the passthrough device's (docs/PERFORMANCE.md, remap layer cost).
 */
import type { MainBlock } from '../units';

/** Writes begun and in flight over all generations (for WriteStamp). */
interface WriteTotals {
  begun: number;
  active: number;
}

/**
 * "No write has begun since, and none was in flight then": data read after a stamp was taken is still
 * what the device holds while unchangedSince(stamp) is true. undefined: writes were in flight.
 */
export type WriteStamp = number | undefined;

/** The writes started between two lock acquisitions. */
export class WriteGeneration {
  private inFlight = 0;
  private previous: WriteGeneration | undefined;
  private drained: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    previous: WriteGeneration | undefined,
    private readonly totals: WriteTotals,
  ) {
    this.previous = previous;
  }

  /** A write joined this generation; call end() once its backend I/O settled (success or not). */
  begin(): this {
    this.inFlight++;
    this.totals.begun++;
    this.totals.active++;
    return this;
  }

  end(): void {
    this.totals.active--;
    if (--this.inFlight === 0 && this.wake) {
      this.wake();
      this.wake = undefined;
    }
  }

  /** Resolves once no write of this generation or an older one is in flight. */
  async drain(): Promise<void> {
    if (this.previous) {
      await this.previous.drain();
      this.previous = undefined; // drained: let the chain go
    }
    if (this.inFlight === 0) return;
    this.drained ??= new Promise<void>((r) => (this.wake = r));
    await this.drained;
  }
}

export class BlockLocks {
  private readonly locks = new Map<MainBlock, Promise<void>>();
  private readonly totals: WriteTotals = { begun: 0, active: 0 };
  private generation = new WriteGeneration(undefined, this.totals);

  /** Take before reading data that a mover may use later (see WriteStamp). */
  writeStamp(): WriteStamp {
    return this.totals.active === 0 ? this.totals.begun : undefined;
  }

  /** True when no write was in flight at `stamp` and none has begun since. */
  unchangedSince(stamp: WriteStamp): boolean {
    return stamp !== undefined && stamp === this.totals.begun;
  }

  get anyLocked(): boolean {
    return this.locks.size > 0;
  }

  /** The lock on a block, if it is held. */
  held(block: MainBlock): Promise<void> | undefined {
    return this.locks.get(block);
  }

  /** The lock of some block in [first, last], if one is held (synchronous: no tick passes). */
  lockedIn(first: MainBlock, last: MainBlock): Promise<void> | undefined {
    if (this.locks.size === 0) return undefined;
    if (last - first + 1 <= this.locks.size) {
      for (let b = first; b <= last; b++) {
        const p = this.locks.get(b);
        if (p) return p;
      }
      return undefined;
    }
    for (const [b, p] of this.locks) if (b >= first && b <= last) return p;
    return undefined;
  }

  /**
   * Wait until no block in [first, last] is locked. Code after `await` runs a tick later, when a lock
   * may be held again: to act on "unlocked", loop on lockedIn() and act synchronously after it.
   */
  async waitUnlocked(first: MainBlock, last: MainBlock): Promise<void> {
    for (;;) {
      const wait = this.lockedIn(first, last);
      if (!wait) return;
      await wait;
    }
  }

  /**
   * A write is about to start (synchronously after routing): end() the returned generation once its
   * backend I/O settled. The hot path's form of trackWrite().
   */
  beginWrite(): WriteGeneration {
    return this.generation.begin();
  }

  /** Track a write in flight until `done` settles. */
  trackWrite<T>(done: Promise<T>): Promise<T> {
    const g = this.generation.begin();
    const end = (): void => g.end();
    done.then(end, end);
    return done;
  }

  /**
   * Run `fn` holding the lock on `block`: waits for the current holder, then for the writes in flight,
   * then runs. Concurrent callers run one after another.
   */
  async withLock<T>(block: MainBlock, fn: () => Promise<T>): Promise<T> {
    while (this.locks.has(block)) await this.locks.get(block);
    let release!: () => void;
    this.locks.set(block, new Promise<void>((r) => (release = r)));
    try {
      const closed = this.generation;
      this.generation = new WriteGeneration(closed, this.totals);
      await closed.drain();
      return await fn();
    } finally {
      this.locks.delete(block);
      release();
    }
  }
}

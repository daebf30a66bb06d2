/**
 * Ordering of writes around read-modify-write, for O_DIRECT backends. A write that does not cover
 * whole sectors reads its head/tail sectors, merges, and writes them back; if another write touched
 * the same sectors in between, the read-modify-write would put the old bytes back and lose it. So a
 * read-modify-write waits for every in-flight write overlapping its sectors, and any write
 * overlapping a read-modify-write in flight (or waiting) waits for it. Aligned writes that meet no
 * read-modify-write pass straight through (the common case costs a Set insert and delete).
 * Waiters start in arrival order among those that conflict, so none is starved.
 */

interface Entry {
  readonly lo: number;
  readonly hi: number;
  readonly rmw: boolean;
}

interface Waiter extends Entry {
  readonly start: () => void;
}

function conflict(a: Entry, b: Entry): boolean {
  return (a.rmw || b.rmw) && a.lo < b.hi && b.lo < a.hi;
}

export class WriteOrder {
  private readonly active = new Set<Entry>();
  private activeRmw = 0;
  private waiting: Waiter[] = [];

  /** Runs `fn` once no conflicting write is in flight; [lo, hi) are whole sectors. */
  run<T>(lo: number, hi: number, rmw: boolean, fn: () => Promise<T>): Promise<T> {
    const entry: Entry = { lo, hi, rmw };
    if (this.mayStart(entry, this.waiting.length)) return this.start(entry, fn);
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ lo, hi, rmw, start: () => this.start(entry, fn).then(resolve, reject) });
    });
  }

  /** Writes in flight plus writes waiting (diagnostics, tests). */
  get size(): number {
    return this.active.size + this.waiting.length;
  }

  private mayStart(e: Entry, waitersBefore: number): boolean {
    if (this.activeRmw === 0 && !e.rmw && waitersBefore === 0) return true;
    for (const a of this.active) if (conflict(a, e)) return false;
    for (let i = 0; i < waitersBefore; i++) if (conflict(this.waiting[i], e)) return false;
    return true;
  }

  private start<T>(e: Entry, fn: () => Promise<T>): Promise<T> {
    this.active.add(e);
    if (e.rmw) this.activeRmw++;
    let p: Promise<T>;
    try {
      p = fn();
    } catch (err) {
      p = Promise.reject(err);
    }
    return p.finally(() => this.finish(e));
  }

  private finish(e: Entry): void {
    this.active.delete(e);
    if (e.rmw) this.activeRmw--;
    if (this.waiting.length === 0) return;
    const still: Waiter[] = [];
    const ready: Waiter[] = [];
    for (const w of this.waiting) {
      let ok = true;
      for (const a of this.active)
        if (conflict(a, w)) {
          ok = false;
          break;
        }
      if (ok)
        for (const s of still)
          if (conflict(s, w)) {
            ok = false;
            break;
          }
      if (ok)
        for (const r of ready)
          if (conflict(r, w)) {
            ok = false;
            break;
          }
      (ok ? ready : still).push(w);
    }
    this.waiting = still;
    for (const w of ready) w.start();
  }
}

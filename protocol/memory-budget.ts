/**
 * One budget for the request and reply buffers of all connections together. The per-connection
 * window (maxOutstandingBytes) bounds one client; this bounds all of them: eight clients that pipeline
 * READs and never read the replies would otherwise hold eight windows of reply buffers.
 *
 * A connection's charge is what it holds: the bytes of the READs and WRITEs it is executing plus the
 * reply bytes queued on its socket and not yet taken by the kernel. When the sum reaches the limit,
 * connections stop being read (backpressure, never a drop) and are woken as charges shrink.
 *
 * Every connection keeps a reserve: while its own charge is below `reserve` it may read its next
 * request even when the budget is used up. A client that reads its replies drains to zero between
 * requests, so non-reading clients that hold the whole budget cannot starve it. The price is a bounded
 * overdraft: past the limit, each connection can add at most one request on top of less than `reserve`.
 */

/** What the budget needs from a connection: a way to wake it when memory was freed. */
export interface BudgetMember {
  /** Re-check whether reading can resume (the connection applies its own limits too). */
  budgetFreed(): void;
}

export const DEFAULT_BUFFER_BUDGET = 256 * 1024 * 1024;
/** Below this charge a connection may always read its next request. */
export const DEFAULT_RESERVE = 256 * 1024;

export class MemoryBudget {
  private used = 0;
  private readonly charges = new Map<BudgetMember, number>();
  /** Connections that stopped reading because the budget was used up. */
  private readonly waiting = new Set<BudgetMember>();
  private waking = false;

  constructor(
    readonly limit = DEFAULT_BUFFER_BUDGET,
    readonly reserve = DEFAULT_RESERVE,
  ) {}

  /** Bytes charged across all connections. */
  get usedBytes(): number {
    return this.used;
  }

  /** Set what `m` holds now (bytes); 0 also forgets it (closed connections). */
  set(m: BudgetMember, bytes: number): void {
    const before = this.charges.get(m) ?? 0;
    if (bytes === before) return;
    if (bytes === 0) this.charges.delete(m);
    else this.charges.set(m, bytes);
    this.used += bytes - before;
    if (bytes < before && this.waiting.size > 0 && this.used < this.limit) this.wake();
  }

  /** Forget a connection (it closed): its charge is released and it is no longer woken. */
  remove(m: BudgetMember): void {
    this.waiting.delete(m);
    this.set(m, 0);
  }

  /**
   * May `m` read another request? Yes below the limit, or while its own charge is under the reserve.
   * When not, it is woken (budgetFreed) once the total drops below the limit again.
   */
  mayRead(m: BudgetMember): boolean {
    if (this.used < this.limit || (this.charges.get(m) ?? 0) < this.reserve) {
      this.waiting.delete(m);
      return true;
    }
    this.waiting.add(m);
    return false;
  }

  private wake(): void {
    if (this.waking) return; // a woken connection frees more memory from inside budgetFreed
    this.waking = true;
    try {
      // Oldest waiters first; each re-registers (mayRead) if it still cannot read.
      for (const m of [...this.waiting]) {
        if (this.used >= this.limit) break;
        this.waiting.delete(m);
        m.budgetFreed();
      }
    } finally {
      this.waking = false;
    }
  }
}

/**
 * One budget for the request and reply buffers of all connections together. The per-connection
 * window (maxOutstandingBytes) bounds one client; this bounds all of them: eight clients that pipeline
 * READs and never read the replies would otherwise hold eight windows of reply buffers.
 *
 * A connection's charge is what it holds: bytes received and not yet executed (request headers and
 * WRITE payloads as they arrive, so a half-sent 32 MiB WRITE costs what was sent, not 32 MiB), the
 * READs and WRITEs it is executing, and the reply bytes queued on its socket and not yet taken by the
 * kernel. When the sum reaches the limit, connections stop being read (backpressure, never a drop) and
 * are woken as charges shrink.
 *
 * Past the limit, two things must still move, and both draw on one shared overdraft of fixed size
 * (max(limit / 2, 2 requests of 32 MiB)), so the total is bounded by limit + overdraft whatever the
 * number of connections:
 * - The reserve: a connection holding less than `reserve` may read up to its next request header, so
 *   clients that never read their replies cannot starve one that does. Its request is admitted if it
 *   fits what is left of the reserve; a larger one needs a grant of its size from the overdraft (one per
 *   connection, FIFO). Before, every connection could add a whole request past the limit: 200
 *   connections trickling 32 MiB WRITEs held 200 x 32 MiB.
 * - Finishing: a request whose payload was being received when the limit was reached must be able to
 *   complete, or a budget full of half-received WRITEs would wait for itself forever. Such a connection
 *   asks for a grant of its missing bytes; these grants may use at most half of the overdraft (at least
 *   one maximal request), so clients that stall half-sent WRITEs cannot take the part that serves the
 *   next request of a connection that behaves.
 * A request larger than the whole budget goes through the overdraft the same way. A grant is held until
 * its request and reply are gone (the connection's charge is back under the reserve).
 *
 * What it cannot do: memory given to a request whose client stops sending, or never reads its reply,
 * stays given (nothing is dropped for memory). Clients that hold the budget and every overdraft grant
 * that way make others wait, not the daemon grow.
 */
import { MAX_PAYLOAD } from './constants';

/** What the budget needs from a connection: a way to wake it when memory was freed. */
export interface BudgetMember {
  /** Re-check whether reading can resume (the connection applies its own limits too). */
  budgetFreed(): void;
}

export const DEFAULT_BUFFER_BUDGET = 256 * 1024 * 1024;
/** Below this charge a connection may always read up to its next request. */
export const DEFAULT_RESERVE = 256 * 1024;

/** The shared overdraft for a budget of `limit` bytes (see the header comment). */
export function defaultOverdraft(limit: number): number {
  return Math.max(Math.floor(limit / 2), 2 * MAX_PAYLOAD);
}

type GrantKind = 'request' | 'finish';

interface Grant {
  readonly bytes: number;
  readonly kind: GrantKind;
}

export class MemoryBudget {
  private used = 0;
  private readonly charges = new Map<BudgetMember, number>();
  private readonly grants = new Map<BudgetMember, Grant>();
  private granted = 0;
  private grantedToFinish = 0;
  /** Connections that stopped reading (or hold a request header) because the budget was used up. */
  private readonly waiting = new Set<BudgetMember>();
  private waking = false;

  constructor(
    readonly limit = DEFAULT_BUFFER_BUDGET,
    readonly reserve = DEFAULT_RESERVE,
    readonly overdraft = defaultOverdraft(limit),
  ) {}

  /** Bytes charged across all connections. */
  get usedBytes(): number {
    return this.used;
  }

  /** Bytes of the overdraft granted now. */
  get grantedBytes(): number {
    return this.granted;
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

  /** Forget a connection (it closed): its charge and its grant are released and it is no longer woken. */
  remove(m: BudgetMember): void {
    this.waiting.delete(m);
    this.releaseGrant(m);
    this.set(m, 0);
  }

  /** True while `m` holds an overdraft grant. */
  hasGrant(m: BudgetMember): boolean {
    return this.grants.has(m);
  }

  /**
   * May `m` read more bytes? `missing` is what is still to arrive of the request it is receiving
   * (0 at a request boundary). Yes below the limit; past it, under the reserve at a request boundary
   * (to read the next header, see admit()), or mid-request with a finishing grant obtained now (the
   * connection then reads that payload to its end without asking again). When not, `m` is woken
   * (budgetFreed) once memory was freed.
   */
  mayRead(m: BudgetMember, missing = 0): boolean {
    if (this.used < this.limit) return this.ok(m);
    if (missing === 0) return (this.charges.get(m) ?? 0) < this.reserve ? this.ok(m) : this.wait(m);
    return this.tryGrant(m, missing, 'finish') ? this.ok(m) : this.wait(m);
  }

  /**
   * May `m` start receiving or executing a request that will hold `extra` more bytes (a READ's reply,
   * the part of a WRITE's payload not received yet)? Yes below the limit, if it fits what is left of
   * `m`'s reserve, or with a grant of `extra` from the overdraft when `m` holds less than its reserve or
   * is `idle` (nothing executing, no reply queued: all it holds is input that waits for this request).
   * When not, `m` keeps the request's header unread and is woken once memory was freed.
   */
  admit(m: BudgetMember, extra: number, idle = false): boolean {
    if (extra <= 0 || this.used < this.limit) return this.ok(m);
    const charge = this.charges.get(m) ?? 0;
    if (charge + extra <= this.reserve) return this.ok(m);
    if ((charge < this.reserve || idle) && this.tryGrant(m, extra, 'request')) return this.ok(m);
    return this.wait(m);
  }

  /** The request a grant covered is done (or its connection closed): give the grant back. */
  releaseGrant(m: BudgetMember): void {
    const g = this.grants.get(m);
    if (!g) return;
    this.grants.delete(m);
    this.granted -= g.bytes;
    if (g.kind === 'finish') this.grantedToFinish -= g.bytes;
    if (this.waiting.size > 0) this.wake();
  }

  private tryGrant(m: BudgetMember, bytes: number, kind: GrantKind): boolean {
    if (this.grants.has(m)) return false;
    if (this.granted + bytes > this.overdraft) return false;
    if (kind === 'finish' && this.grantedToFinish + bytes > this.finishShare) return false;
    this.grants.set(m, { bytes, kind });
    this.granted += bytes;
    if (kind === 'finish') this.grantedToFinish += bytes;
    return true;
  }

  /** The part of the overdraft that finishing grants may use (at least one maximal request). */
  private get finishShare(): number {
    return Math.max(Math.floor(this.overdraft / 2), Math.min(MAX_PAYLOAD, this.overdraft));
  }

  private ok(m: BudgetMember): true {
    this.waiting.delete(m);
    return true;
  }

  private wait(m: BudgetMember): false {
    this.waiting.add(m);
    return false;
  }

  private wake(): void {
    if (this.waking) return; // a woken connection frees more memory from inside budgetFreed
    this.waking = true;
    try {
      // Oldest waiters first; each re-registers (mayRead/admit) if it still cannot go on. Past the limit
      // only a released grant wakes anyone, and then every waiter may try for what is free.
      for (const m of [...this.waiting]) {
        if (!this.waiting.has(m)) continue;
        this.waiting.delete(m);
        m.budgetFreed();
      }
    } finally {
      this.waking = false;
    }
  }
}

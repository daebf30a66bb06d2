/**
 * The socket side of one connection (what nbdkit keeps apart from protocol.c): bytes in, bytes out,
 * and backpressure. It owns the window of work in flight: reading pauses while `maxInFlight` requests
 * or `maxOutstandingBytes` of request payloads and queued replies are outstanding, or while the
 * server-wide buffer budget is used up, and resumes as they drain. It never drops anything itself.
 * Its charge on the budget includes the request bytes received and not yet executed; past the budget's
 * limit it stops reading the socket between two reads (the parser keeps emitting what already arrived),
 * takes at most the reserve per read, and asks the budget before each READ or WRITE header is taken
 * (admit, memory-budget.ts).
 *
 * Writes: replies completed in the same event-loop turn go out in one write (the socket is corked on
 * the first and uncorked in setImmediate), so the socket stays the connection's single writer.
 *
 * Reads: in transmission, plain sockets read straight into large slabs or into the parser's WRITE
 * payload buffer (user-buffer reads, node-internals.ts) instead of 64 KiB 'data' chunks.
 */
import type { Socket } from 'node:net';
import type { ConnectionLimits } from './limits';
import type { BudgetMember, MemoryBudget } from './memory-budget';
import { useUserBufferReads } from './node-internals';
import type { ClientParser } from './parser';

/**
 * A slab is handed out piece by piece and never reused, so the parser and WRITE payloads can keep
 * views into it: one read syscall and one JS callback per up to READ_SLAB - pos bytes.
 * REMAPD_LARGE_READS=0 keeps Node's default 64 KiB 'data' chunks.
 */
const READ_SLAB = 1024 * 1024;
const READ_MIN = 128 * 1024;
const LARGE_READS = process.env.REMAPD_LARGE_READS !== '0';
const EMPTY = Buffer.alloc(0);

/** What the channel reports to its connection. */
export interface ChannelEvents {
  /** Bytes arrived that the parser could not take (it failed): drop the connection. */
  onParseFailure(err: unknown): void;
  onError(err: Error, socket: Socket): void;
  onEnd(): void;
  onClose(): void;
  /** Reading may resume only in this state (transmission). */
  isTransmitting(): boolean;
  /** The connection is gone: sends are discarded. */
  isClosed(): boolean;
}

export class SocketChannel implements BudgetMember {
  private corked = false;
  private readPaused = false;
  /** The socket is not read because the shared budget is used up (the parser still runs). */
  private budgetPaused = false;
  /** The overdraft grant held covers the WRITE payload being received: read it to the end. */
  private grantPayload = false;
  /** A request was taken since the grant was obtained: the grant goes back once it is done. */
  private grantTaken = false;
  private inFlightCount = 0;
  private outstanding = 0;

  constructor(
    private sock: Socket,
    private readonly parser: ClientParser,
    private readonly limits: ConnectionLimits,
    private readonly events: ChannelEvents,
    private readonly budget?: MemoryBudget,
  ) {}

  get socket(): Socket {
    return this.sock;
  }

  /** Requests executing now. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Listen to `s` (the accepted socket, or the TLS socket that replaced it). */
  attach(s: Socket): void {
    this.sock = s;
    s.on('data', (chunk: Buffer) => this.push(chunk));
    s.on('error', (err) => this.events.onError(err, s));
    s.on('close', () => this.events.onClose());
    s.on('drain', () => {
      this.syncBudget();
      this.maybeResume();
    });
    s.on('end', () => this.events.onEnd());
  }

  /** Stop listening to the current socket, with its queued bytes flushed (STARTTLS takes it over). */
  detach(): Socket {
    const raw = this.sock;
    if (this.corked) {
      this.corked = false;
      raw.uncork();
    }
    for (const ev of ['data', 'end', 'drain', 'error', 'close']) raw.removeAllListeners(ev);
    return raw;
  }

  private push(chunk: Buffer): void {
    try {
      this.parser.push(chunk);
    } catch (err) {
      this.events.onParseFailure(err);
    }
    this.afterRead();
  }

  // ------------------------------------------------------------------ writing

  /** Queue bytes; `written` runs once they were handed to the kernel (or dropped with the socket). */
  send(buf: Buffer, written?: () => void): void {
    const s = this.sock;
    if (this.events.isClosed() || s.destroyed) {
      written?.();
      return;
    }
    if (!this.corked) {
      this.corked = true;
      s.cork();
      setImmediate(this.uncork);
    }
    if (written) s.write(buf, written);
    else s.write(buf);
    if (s.writableLength > this.limits.maxOutstandingBytes) this.pauseReading();
  }

  /** Run `fn` once everything queued so far is written out (at once when the socket is gone). */
  afterWritten(fn: () => void): void {
    if (this.sock.destroyed || this.events.isClosed()) fn();
    else this.sock.write(EMPTY, fn);
  }

  /** Hold several sends together (they are one reply). */
  cork(): void {
    this.sock.cork();
  }

  uncorkNow(): void {
    this.sock.uncork();
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.sock.uncork();
    this.syncBudget();
  };

  // ------------------------------------------------------------------ the window and the budget

  /** A request of `cost` bytes starts executing; reading pauses if the window or budget is full. */
  begin(cost: number): void {
    this.inFlightCount++;
    this.outstanding += cost;
    this.syncBudget();
    if (this.inFlightCount >= this.limits.maxInFlight || this.outstanding >= this.limits.maxOutstandingBytes) {
      this.pauseReading();
    }
  }

  /** A request started with begin(cost) finished (its reply is queued). */
  end(cost: number): void {
    this.inFlightCount--;
    this.outstanding -= cost;
    this.syncBudget();
  }

  pauseReading(): void {
    if (this.readPaused) return;
    this.readPaused = true;
    this.parser.pause();
    this.sock.pause();
  }

  /** Resume reading if it was paused and the window and the budget have room again. */
  maybeResume(): void {
    if (!this.readPaused || !this.events.isTransmitting()) return;
    if (this.inFlightCount >= this.limits.maxInFlight) return;
    if (this.outstanding >= this.limits.maxOutstandingBytes) return;
    if (this.sock.writableLength > this.limits.maxOutstandingBytes) return;
    this.readPaused = false;
    if (!this.budgetPaused) this.sock.resume();
    this.parser.resume();
  }

  /** The shared budget has room again: retry a header waiting for admission, then reading. */
  budgetFreed(): void {
    if (this.events.isClosed() || !this.events.isTransmitting()) return;
    this.parser.poke();
    if (this.budgetPaused && this.budgetAllowsRead()) {
      this.budgetPaused = false;
      if (!this.readPaused) this.sock.resume();
    }
  }

  /** Parser hook: may a request adding `extra` bytes to what this connection holds start now? */
  admit(extra: number): boolean {
    const b = this.budget;
    if (!b || b.usedBytes < b.limit) return true; // the common case, one comparison per request
    this.syncBudget();
    const had = b.hasGrant(this);
    if (!b.admit(this, extra, this.inFlightCount === 0 && this.sock.writableLength === 0)) return false;
    if (!had && b.hasGrant(this)) this.granted();
    return true;
  }

  /** The connection took a request from the parser (executed or rejected). */
  requestTaken(): void {
    if (this.budget?.hasGrant(this)) this.grantTaken = true;
  }

  private granted(): void {
    this.grantPayload = true; // cleared at once when no payload follows (a READ)
    this.grantTaken = false;
  }

  /** After bytes arrived: charge them, and stop reading if the budget says so. */
  private afterRead(): void {
    if (!this.budget || this.events.isClosed() || !this.events.isTransmitting()) return;
    this.syncBudget();
    if (!this.budgetPaused && !this.budgetAllowsRead()) {
      this.budgetPaused = true;
      this.sock.pause();
    }
  }

  /**
   * The most one read may take: past the budget's limit, without a grant for the payload being
   * received, at most the reserve (so one read adds that much, not a whole kernel receive buffer).
   */
  private readCap(): number {
    const b = this.budget;
    if (!b || b.usedBytes < b.limit || (this.grantPayload && this.parser.payloadMissing > 0)) return Infinity;
    return b.reserve;
  }

  /** May the socket be read as far as the shared budget goes? */
  private budgetAllowsRead(): boolean {
    const b = this.budget;
    if (!b) return true;
    const missing = this.parser.payloadMissing;
    if (missing === 0) this.grantPayload = false;
    if (this.grantPayload) return true;
    const had = b.hasGrant(this);
    if (!b.mayRead(this, missing)) return false;
    if (!had && b.hasGrant(this)) this.granted();
    return true;
  }

  /**
   * Tell the shared budget what this connection holds: request bytes received and not yet executed,
   * requests executing, replies still queued. An overdraft grant goes back once its request is done.
   */
  private syncBudget(): void {
    const b = this.budget;
    if (!b || this.events.isClosed()) return;
    const queued = this.sock.writableLength;
    b.set(this, this.parser.buffered + this.outstanding + queued);
    if (this.grantTaken && this.inFlightCount === 0 && this.parser.payloadMissing === 0 && queued < b.reserve && b.hasGrant(this)) {
      this.grantTaken = false;
      this.grantPayload = false;
      b.releaseGrant(this);
    }
  }

  /** The connection closed: give its share of the budget back. */
  released(): void {
    this.budget?.remove(this);
  }

  // ------------------------------------------------------------------ reading

  /**
   * Transmission starts: read plain sockets into our own slabs and WRITE payload buffers. TLS sockets
   * and Nodes without the internals keep 'data' events.
   */
  useLargeReads(isTls: boolean): void {
    if (!LARGE_READS || isTls) return;
    let slab = Buffer.allocUnsafeSlow(READ_SLAB);
    let pos = 0;
    // True while the socket reads into the parser's large WRITE payload buffer (parser.directTarget).
    let direct = false;
    useUserBufferReads(this.sock, {
      next: (): Buffer => {
        const target = this.events.isTransmitting() ? this.parser.directTarget() : undefined;
        direct = target !== undefined;
        const cap = this.readCap();
        if (target) return target.length > cap ? target.subarray(0, cap) : target;
        if (slab.length - pos < READ_MIN) {
          slab = Buffer.allocUnsafeSlow(READ_SLAB);
          pos = 0;
        }
        // A client streaming large WRITEs: read just the next header, so that its payload is read
        // straight into the payload buffer (no copy out of the slab, and the slab, fresh memory each
        // time it is replaced, is hardly used). One more small read per large request; any other
        // request switches back.
        const missing = this.parser.expectingLargeWrite ? this.parser.headerBytesMissing() : 0;
        const end = missing > 0 ? pos + missing : slab.length;
        return slab.subarray(pos, Math.min(end, pos + cap));
      },
      filled: (nread: number, buf: Buffer): void => {
        if (direct) {
          try {
            this.parser.directFilled(nread);
          } catch (err) {
            this.events.onParseFailure(err);
          }
          this.afterRead();
          return;
        }
        pos += nread;
        this.push(buf.subarray(0, nread));
      },
    });
  }
}

/**
 * Incremental parser of the bytes a client sends: client flags, then option requests, then
 * transmission requests. Bytes may arrive split at any boundary. The parser emits one typed message per
 * complete unit and can be paused (the connection's in-flight window is full) and resumed.
 *
 * The phase is switched by the connection (setPhase) from inside the message callback, so the bytes that
 * follow a GO in the same TCP segment are already parsed as requests. *
 * Before a READ or WRITE header is taken (and before a WRITE's payload buffer is allocated) the
 * connection is asked whether the memory the request will add may be spent (admit); if not, the header
 * stays unread until poke().
 */
import { ByteQueue } from './byte-queue';
import { sharedPool, type Lease } from './buffer-pool';
import {
  Cmd,
  CLIENT_FLAGS_SIZE,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  MAX_OPTION_LENGTH,
  MAX_PAYLOAD,
  OPTION_HEADER_SIZE,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
} from './constants';
import type { ClientMessage } from './messages';

export type ParserPhase = 'clientFlags' | 'options' | 'transmission' | 'closed';

const TWO_POW_32 = 4294967296;

/**
 * A WRITE payload at least this large that has not fully arrived is collected straight into a pooled
 * buffer: bytes already received are copied once, and the reader can have the socket read the rest
 * directly into it (directTarget/directFilled) instead of into receive chunks that would then be copied.
 */
export const DIRECT_PAYLOAD_MIN = 64 * 1024;

interface DirectWrite {
  readonly flags: number;
  readonly cookieHi: number;
  readonly cookieLo: number;
  readonly offset: number;
  readonly length: number;
  readonly lease: Lease;
  filled: number;
}

export class ClientParser {
  private readonly queue = new ByteQueue();
  private phase: ParserPhase = 'clientFlags';
  private paused = false;
  private draining = false;
  private direct: DirectWrite | undefined;
  private lastLargeWrite = false;

  /**
   * @param admit asked before a READ or WRITE header is taken, with the bytes the request will add to
   * what this connection holds (a READ's reply, the part of a WRITE's payload not received yet). false
   * leaves the header unread until poke() (the memory budget, memory-budget.ts).
   */
  constructor(
    private readonly onMessage: (m: ClientMessage) => void,
    private readonly admit: (extra: number) => boolean = () => true,
  ) {}

  get currentPhase(): ParserPhase {
    return this.phase;
  }

  /** Bytes received but not yet turned into messages. */
  get buffered(): number {
    const d = this.direct;
    return this.queue.length + (d ? REQUEST_HEADER_SIZE + d.filled : 0);
  }

  /**
   * Where the next received bytes belong when a large WRITE payload is being collected (see
   * DIRECT_PAYLOAD_MIN): the unfilled rest of its buffer. Read at most that many bytes into it and
   * report them with directFilled(). undefined when the next bytes should go through push().
   */
  directTarget(): Buffer | undefined {
    const d = this.direct;
    if (!d || d.filled >= d.length || this.phase !== 'transmission') return undefined;
    return d.lease.buf.subarray(d.filled);
  }

  /**
   * True when the last request header parsed was a WRITE with a payload of at least DIRECT_PAYLOAD_MIN
   * (a client streaming large writes will likely send another).
   */
  get expectingLargeWrite(): boolean {
    return this.lastLargeWrite;
  }

  /**
   * Bytes still missing from the next request header (1..REQUEST_HEADER_SIZE) when the parser is at a
   * request boundary in the transmission phase; 0 otherwise. A reader expecting a large WRITE reads just
   * this many, so that the payload that follows goes straight into its buffer (directTarget) instead of
   * through receive chunks and a copy.
   */
  headerBytesMissing(): number {
    if (this.phase !== 'transmission' || this.direct || this.queue.discarding > 0) return 0;
    const have = this.queue.length;
    return have < REQUEST_HEADER_SIZE ? REQUEST_HEADER_SIZE - have : 0;
  }

  /** Bytes of the WRITE payload being collected that have not arrived yet (0 at a request boundary). */
  get payloadMissing(): number {
    const d = this.direct;
    return d ? d.length - d.filled : 0;
  }

  /** Try again what waited for admission (when not paused). */
  poke(): void {
    if (!this.paused) this.drain();
  }

  /** `n` bytes were written into directTarget(). */
  directFilled(n: number): void {
    const d = this.direct;
    if (!d) throw new Error('directFilled without a direct payload');
    d.filled += n;
    if (d.filled >= d.length) this.drain();
  }

  /** Remove and return every byte received but not parsed (used when TLS takes over the stream). */
  takeBuffered(): Buffer {
    return this.queue.take(this.queue.length);
  }

  /**
   * Planned restart (protocol/handover.ts): remove and return every byte received but not yet emitted,
   * starting at a request boundary. A large WRITE being collected is given back as its header and the
   * payload bytes received so far.
   */
  takeUnparsed(): Buffer {
    const d = this.direct;
    this.direct = undefined;
    const rest = this.queue.take(this.queue.length);
    if (!d) return Buffer.from(rest);
    const head = Buffer.alloc(REQUEST_HEADER_SIZE);
    head.writeUInt32BE(REQUEST_MAGIC, 0);
    head.writeUInt32BE(((d.flags << 16) | Cmd.WRITE) >>> 0, 4);
    head.writeUInt32BE(d.cookieHi, 8);
    head.writeUInt32BE(d.cookieLo, 12);
    head.writeUInt32BE(Math.floor(d.offset / TWO_POW_32), 16);
    head.writeUInt32BE(d.offset % TWO_POW_32, 20);
    head.writeUInt32BE(d.length, 24);
    const out = Buffer.concat([head, d.lease.buf.subarray(0, d.filled), rest]);
    d.lease.release();
    return out;
  }

  setPhase(phase: ParserPhase): void {
    this.phase = phase;
    // A half-received payload is dropped with the connection (not returned to the pool: the socket
    // may still hold it as its read target).
    if (phase === 'closed') this.direct = undefined;
  }

  push(chunk: Buffer): void {
    this.queue.push(chunk);
    this.drain();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.drain();
  }

  private drain(): void {
    if (this.draining) return; // re-entrant resume() from inside a callback
    this.draining = true;
    try {
      while (!this.paused && this.phase !== 'closed') {
        const m = this.next();
        if (m === undefined) break;
        if (m.kind === 'violation') this.phase = 'closed';
        this.onMessage(m);
      }
    } finally {
      this.draining = false;
    }
  }

  private next(): ClientMessage | undefined {
    const q = this.queue;
    switch (this.phase) {
      case 'clientFlags': {
        if (q.length < CLIENT_FLAGS_SIZE) return undefined;
        const flags = q.take(CLIENT_FLAGS_SIZE).readUInt32BE(0);
        this.phase = 'options';
        return { kind: 'clientFlags', flags };
      }
      case 'options': {
        if (q.discarding > 0 || q.length < OPTION_HEADER_SIZE) return undefined;
        if (q.peekUInt32(0) !== IHAVEOPT_HI || q.peekUInt32(4) !== IHAVEOPT_LO) {
          return { kind: 'violation', reason: 'bad option magic' };
        }
        const option = q.peekUInt32(8);
        const length = q.peekUInt32(12);
        if (length > MAX_OPTION_LENGTH) {
          q.take(OPTION_HEADER_SIZE);
          q.discard(length);
          return { kind: 'oversizedOption', option, length };
        }
        if (q.length < OPTION_HEADER_SIZE + length) return undefined;
        q.take(OPTION_HEADER_SIZE);
        // Copy: the option data outlives this chunk only briefly, but must not pin a large read buffer.
        const data = Buffer.from(q.take(length));
        return { kind: 'option', option, data };
      }
      case 'transmission': {
        const d = this.direct;
        if (d) {
          if (d.filled < d.length && q.length > 0) {
            const n = Math.min(q.length, d.length - d.filled);
            q.takeInto(n, d.lease.buf, d.filled);
            d.filled += n;
          }
          if (d.filled < d.length) return undefined;
          this.direct = undefined;
          return {
            kind: 'request',
            flags: d.flags,
            type: Cmd.WRITE,
            cookieHi: d.cookieHi,
            cookieLo: d.cookieLo,
            offset: d.offset,
            length: d.length,
            payload: d.lease.buf,
            release: d.lease.release,
          };
        }
        if (q.length < REQUEST_HEADER_SIZE) return undefined;
        const head = q.length >= REQUEST_HEADER_SIZE ? q.peekUInt32(0) : 0;
        if (head !== REQUEST_MAGIC) {
          return { kind: 'violation', reason: `bad request magic 0x${head.toString(16)}` };
        }
        const flagsType = q.peekUInt32(4);
        const type = flagsType & 0xffff;
        const length = q.peekUInt32(24);
        let payloadLength = 0;
        if (type === Cmd.WRITE) {
          if (length > MAX_PAYLOAD) {
            return { kind: 'violation', reason: `WRITE payload of ${length} bytes exceeds ${MAX_PAYLOAD}` };
          }
          payloadLength = length;
        }
        this.lastLargeWrite = payloadLength >= DIRECT_PAYLOAD_MIN;
        const complete = q.length >= REQUEST_HEADER_SIZE + payloadLength;
        if (!complete && payloadLength < DIRECT_PAYLOAD_MIN) return undefined;
        // A READ longer than a request may be is rejected without a buffer: it costs nothing.
        const extra =
          type === Cmd.WRITE ? REQUEST_HEADER_SIZE + payloadLength - q.length : type === Cmd.READ && length <= MAX_PAYLOAD ? length : 0;
        if (extra > 0 && !this.admit(extra)) return undefined;
        if (!complete) {
          // Start collecting the payload in its own buffer; the request is emitted once it is full.
          const h = q.take(REQUEST_HEADER_SIZE);
          const lease = sharedPool.acquire(payloadLength);
          const have = q.length;
          q.takeInto(have, lease.buf, 0);
          this.direct = {
            flags: flagsType >>> 16,
            cookieHi: h.readUInt32BE(8),
            cookieLo: h.readUInt32BE(12),
            offset: h.readUInt32BE(16) * TWO_POW_32 + h.readUInt32BE(20),
            length,
            lease,
            filled: have,
          };
          return undefined;
        }
        const h = q.take(REQUEST_HEADER_SIZE);
        const offset = h.readUInt32BE(16) * TWO_POW_32 + h.readUInt32BE(20);
        const lease = type === Cmd.WRITE ? q.takeLease(payloadLength) : undefined;
        return {
          kind: 'request',
          flags: flagsType >>> 16,
          type,
          cookieHi: h.readUInt32BE(8),
          cookieLo: h.readUInt32BE(12),
          offset,
          length,
          payload: lease?.buf,
          release: lease?.release,
        };
      }
      case 'closed':
        return undefined;
    }
  }
}

/**
 * Incremental parser of the bytes a client sends: client flags, then option requests, then
 * transmission requests. Bytes may arrive split at any boundary. The parser emits one typed message per
 * complete unit and can be paused (the connection's in-flight window is full) and resumed.
 *
 * The phase is switched by the connection (setPhase) from inside the message callback, so the bytes that
 * follow a GO in the same TCP segment are already parsed as requests.
 */
import { ByteQueue } from './byte-queue';
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

export class ClientParser {
  private readonly queue = new ByteQueue();
  private phase: ParserPhase = 'clientFlags';
  private paused = false;
  private draining = false;

  constructor(private readonly onMessage: (m: ClientMessage) => void) {}

  get currentPhase(): ParserPhase {
    return this.phase;
  }

  /** Bytes received but not yet turned into messages. */
  get buffered(): number {
    return this.queue.length;
  }

  /** Remove and return every byte received but not parsed (used when TLS takes over the stream). */
  takeBuffered(): Buffer {
    return this.queue.take(this.queue.length);
  }

  setPhase(phase: ParserPhase): void {
    this.phase = phase;
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
        if (q.length < REQUEST_HEADER_SIZE + payloadLength) return undefined;
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

/**
 * Test-side reader of a byte stream (socket or TLS socket): buffers what arrives and hands out exact
 * byte counts, waiting with a timeout. Shared by the raw NBD client (raw-nbd.ts) and the TLS tests'
 * hand-driven handshake (tls-pki.ts).
 */
import type { Duplex } from 'node:stream';

export class ByteStream {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  /** The stream ended, closed or failed: no more bytes will come. */
  closed = false;
  private readonly onData = (b: Buffer): void => {
    this.buf = this.buf.length ? Buffer.concat([this.buf, b]) : b;
    this.wake();
  };
  private readonly onClose = (): void => {
    this.closed = true;
    this.wake();
  };

  constructor(readonly stream: Duplex) {
    stream.on('data', this.onData);
    stream.on('close', this.onClose);
    stream.on('end', this.onClose);
    stream.on('error', this.onClose);
  }

  /** Bytes received and not read yet. */
  get buffered(): number {
    return this.buf.length;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Stop consuming the stream (e.g. before handing it to tls.connect); returns the unread bytes. */
  detach(): Buffer {
    this.stream.off('data', this.onData);
    this.stream.off('close', this.onClose);
    this.stream.off('end', this.onClose);
    this.stream.off('error', this.onClose);
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  /** Exactly n bytes, or throws once the stream is closed or the timeout passes. */
  async read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`stream closed after ${this.buf.length}/${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((res) => {
        const timer = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          res();
        });
      });
    }
    const out = Buffer.from(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
    return out;
  }
}

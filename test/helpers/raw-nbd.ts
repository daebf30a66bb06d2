/**
 * A deliberately minimal raw NBD client over a Unix socket, for sending malformed or partial bytes.
 * Only what the e2e malformed-client tests need: greeting, options, GO, simple-reply transmission.
 */
import { connect, type Socket } from 'node:net';
import { ByteStream } from './byte-stream';

export const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
export const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');
export const OPT_REPLY_MAGIC = Buffer.from('0003e889045565a9', 'hex');
export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, GO: 7, STRUCTURED_REPLY: 8 } as const;
export const REP = { ACK: 1, SERVER: 2, INFO: 3, ERR_UNSUP: 0x80000001, ERR_INVALID: 0x80000003, ERR_UNKNOWN: 0x80000006 } as const;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3 } as const;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;

export class RawConn {
  readonly sock: Socket;
  private readonly input: ByteStream;
  /** The socket closed ('close' event). */
  closed = false;
  readonly closedP: Promise<void>;
  error: Error | null = null;

  private constructor(sock: Socket) {
    this.sock = sock;
    this.input = new ByteStream(sock);
    sock.on('error', (e) => {
      this.error = e;
    });
    this.closedP = new Promise((res) =>
      sock.on('close', () => {
        this.closed = true;
        res();
      }),
    );
  }

  static open(path: string, timeoutMs = 10_000): Promise<RawConn> {
    return new Promise((res, rej) => {
      const s = connect(path);
      const timer = setTimeout(() => {
        s.destroy();
        rej(new Error(`connect ${path}: timeout`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        res(new RawConn(s));
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        rej(e);
      });
    });
  }

  /** Exactly n bytes, or throws on close/timeout. */
  read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    return this.input.read(n, timeoutMs);
  }

  write(b: Buffer): void {
    if (!this.closed) this.sock.write(b);
  }

  /** True if the peer closed the connection within timeoutMs (data it sent is discarded). */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.closed) return true;
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closedP.then(() => true),
      new Promise<boolean>((res) => {
        timer = setTimeout(() => res(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    return r;
  }

  destroy(): void {
    this.sock.destroy();
  }

  // ---------------------------------------------------------------- protocol steps

  /** Read the 18-byte newstyle greeting; returns the handshake flags. */
  async greeting(timeoutMs = 10_000): Promise<number> {
    const g = await this.read(18, timeoutMs);
    if (!g.subarray(0, 8).equals(NBDMAGIC) || !g.subarray(8, 16).equals(IHAVEOPT)) {
      throw new Error(`bad greeting ${g.toString('hex')}`);
    }
    return g.readUInt16BE(16);
  }

  sendClientFlags(flags: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags >>> 0);
    this.write(b);
  }

  /** Greeting + client flags (fixed newstyle, and no-zeroes if offered). */
  async handshake(timeoutMs = 10_000): Promise<void> {
    const f = await this.greeting(timeoutMs);
    this.sendClientFlags(f & 0x3);
  }

  sendOption(opt: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    IHAVEOPT.copy(h, 0);
    h.writeUInt32BE(opt >>> 0, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async readOptionReply(timeoutMs = 10_000): Promise<{ opt: number; type: number; data: Buffer }> {
    const h = await this.read(20, timeoutMs);
    if (!h.subarray(0, 8).equals(OPT_REPLY_MAGIC)) throw new Error(`bad option reply magic ${h.toString('hex')}`);
    const len = h.readUInt32BE(16);
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(len, timeoutMs) };
  }

  /** NBD_OPT_GO for `name` (no info requests); returns export size and transmission flags. */
  async go(name = '', timeoutMs = 10_000): Promise<{ size: bigint; flags: number }> {
    const n = Buffer.from(name, 'utf8');
    const d = Buffer.alloc(4 + n.length + 2);
    d.writeUInt32BE(n.length, 0);
    n.copy(d, 4);
    this.sendOption(OPT.GO, d);
    let size = -1n;
    let flags = 0;
    for (;;) {
      const r = await this.readOptionReply(timeoutMs);
      if (r.type === REP.INFO && r.data.readUInt16BE(0) === 0) {
        size = r.data.readBigUInt64BE(2);
        flags = r.data.readUInt16BE(10);
      } else if (r.type === REP.ACK) {
        if (size < 0n) throw new Error('GO acknowledged without NBD_INFO_EXPORT');
        return { size, flags };
      } else if (r.type & 0x80000000) {
        throw new Error(`GO failed: reply type 0x${r.type.toString(16)} ${r.data.toString()}`);
      }
    }
  }

  sendRequest(type: number, flags: number, cookie: bigint, offset: bigint, length: number, payload?: Buffer): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(offset, 16);
    h.writeUInt32BE(length >>> 0, 24);
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /** Simple reply header: error and cookie (read `dataLength` more bytes when error is 0). */
  async readSimpleReply(dataLength = 0): Promise<{ error: number; cookie: bigint; data: Buffer }> {
    const h = await this.read(16);
    if (h.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error(`bad reply magic ${h.toString('hex')}`);
    const error = h.readUInt32BE(4);
    const data = error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0);
    return { error, cookie: h.readBigUInt64BE(8), data };
  }
}

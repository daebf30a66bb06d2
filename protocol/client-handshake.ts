/**
 * The client side of the NBD handshake, as the kernel needs it done for it: fixed newstyle, then one
 * NBD_OPT_GO asking for the export's description and block sizes. No structured replies and no meta
 * contexts (the kernel speaks simple replies only). On success the socket is left in the transmission
 * phase, not reading, ready to be handed to the kernel (`remapd attach`, daemon/commands/attach.ts).
 */
import net from 'node:net';
import {
  ClientFlag,
  HandshakeFlag,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  Info,
  NBDMAGIC_HI,
  NBDMAGIC_LO,
  OPT_REPLY_MAGIC_HI,
  OPT_REPLY_MAGIC_LO,
  Opt,
  Rep,
} from './constants';

export interface NegotiatedExport {
  readonly socket: net.Socket;
  readonly size: number;
  readonly transmissionFlags: number;
  readonly description: string | undefined;
  readonly blockSize: { minimum: number; preferred: number; maximum: number } | undefined;
}

export class HandshakeError extends Error {}

/** Reads exact byte counts from a socket. */
class Reader {
  private buf: Buffer = Buffer.alloc(0);
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', (b: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, b]) : b;
      this.serve();
    });
    const fail = (e: Error): void => {
      this.failure ??= e;
      this.want?.reject(this.failure);
      this.want = undefined;
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new HandshakeError('the server closed the connection during the handshake')));
  }

  read(n: number): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.want = { n, resolve, reject };
      this.serve();
    });
  }

  private serve(): void {
    const w = this.want;
    if (!w || this.buf.length < w.n) return;
    this.want = undefined;
    const out = Buffer.from(this.buf.subarray(0, w.n));
    this.buf = this.buf.subarray(w.n);
    w.resolve(out);
  }

  /** Stop reading: the kernel takes the socket from here. Bytes left over mean a confused server. */
  release(): number {
    this.socket.pause();
    this.socket.removeAllListeners('data');
    return this.buf.length;
  }
}

function option(opt: number, data: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(IHAVEOPT_HI, 0);
  h.writeUInt32BE(IHAVEOPT_LO, 4);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

function goPayload(exportName: string): Buffer {
  const name = Buffer.from(exportName, 'utf8');
  const b = Buffer.alloc(4 + name.length + 2 + 4);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(2, 4 + name.length);
  b.writeUInt16BE(Info.DESCRIPTION, 6 + name.length);
  b.writeUInt16BE(Info.BLOCK_SIZE, 8 + name.length);
  return b;
}

/** Connect to a Unix socket and negotiate `exportName` for the kernel. */
export async function negotiate(socketPath: string, exportName: string, timeoutMs = 30_000): Promise<NegotiatedExport> {
  const socket = net.connect(socketPath);
  const timer = setTimeout(
    () => socket.destroy(new HandshakeError(`handshake with ${socketPath} not finished within ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const r = new Reader(socket);
    const greeting = await r.read(18);
    if (greeting.readUInt32BE(0) !== NBDMAGIC_HI || greeting.readUInt32BE(4) !== NBDMAGIC_LO)
      throw new HandshakeError('not an NBD server (bad greeting)');
    if (greeting.readUInt32BE(8) !== IHAVEOPT_HI || greeting.readUInt32BE(12) !== IHAVEOPT_LO)
      throw new HandshakeError('the server does not speak newstyle NBD');
    const hflags = greeting.readUInt16BE(16);
    if (!(hflags & HandshakeFlag.FIXED_NEWSTYLE)) throw new HandshakeError('the server does not speak fixed newstyle NBD');
    const cflags = Buffer.alloc(4);
    cflags.writeUInt32BE(ClientFlag.FIXED_NEWSTYLE | (hflags & HandshakeFlag.NO_ZEROES ? ClientFlag.NO_ZEROES : 0));
    socket.write(Buffer.concat([cflags, option(Opt.GO, goPayload(exportName))]));
    let size: number | undefined;
    let flags = 0;
    let description: string | undefined;
    let blockSize: NegotiatedExport['blockSize'];
    for (;;) {
      const h = await r.read(20);
      if (h.readUInt32BE(0) !== OPT_REPLY_MAGIC_HI || h.readUInt32BE(4) !== OPT_REPLY_MAGIC_LO)
        throw new HandshakeError('bad option reply magic');
      const type = h.readUInt32BE(12);
      const len = h.readUInt32BE(16);
      if (len > 64 * 1024) throw new HandshakeError(`option reply of ${len} bytes`);
      const data = await r.read(len);
      if (type === Rep.ACK) break;
      if (type & 0x80000000)
        throw new HandshakeError(`the server refused export '${exportName}': ${data.toString('utf8') || `error 0x${type.toString(16)}`}`);
      if (type !== Rep.INFO || data.length < 2) continue;
      const info = data.readUInt16BE(0);
      if (info === Info.EXPORT && data.length >= 12) {
        size = Number(data.readBigUInt64BE(2));
        flags = data.readUInt16BE(10);
      } else if (info === Info.DESCRIPTION) {
        description = data.subarray(2).toString('utf8');
      } else if (info === Info.BLOCK_SIZE && data.length >= 14) {
        blockSize = { minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
      }
    }
    if (size === undefined) throw new HandshakeError('the server acknowledged GO without sending the export size');
    if (r.release() !== 0) throw new HandshakeError('the server sent bytes after the handshake');
    return { socket, size, transmissionFlags: flags, description, blockSize };
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

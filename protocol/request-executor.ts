/**
 * Runs one validated transmission request against the export's device and sends its reply: simple or
 * structured, READ data (with holes as OFFSET_HOLE chunks when that saves bytes), block status, and
 * errors (an error chunk with the failing offset under structured replies). What nbdkit's protocol.c
 * does after a request was read; the socket side is socket-channel.ts.
 *
 * One executor per connection, made when transmission starts. It never touches reading or the window:
 * the connection accounts for each request around execute().
 *
 * The request's offset from the wire becomes a ByteOffset (units/) here, where it meets the device.
 */
import type { Logger } from 'pino';
import { byteOffset } from '../units';
import { DeviceError, type BlockDevice } from './block-device';
import { isPooled, sharedPool } from './buffer-pool';
import { CMD_NAMES, Cmd, CmdFlag, NbdErrno, SIMPLE_REPLY_SIZE, StateFlag, type NbdErrnoName } from './constants';
import type { Session } from './handshake';
import type { RequestMessage, StatusDescriptor } from './messages';
import {
  READ_CHUNK_HEADER_SIZE,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeOffsetHole,
  encodeSimpleReply,
  writeOffsetDataHeader,
  writeSimpleReplyHeader,
} from './serializer';
import type { SocketChannel } from './socket-channel';

/** Structured READs at least this long report holes as OFFSET_HOLE chunks. */
const HOLE_REPLY_MIN = 64 * 1024;
/** At most this many large reads go by without an allocation lookup. */
const MAX_HOLE_PROBE_INTERVAL = 255;

export class RequestExecutor {
  private readonly dev: BlockDevice;
  /** Large structured reads left before the next allocation lookup, and the current spacing. */
  private holeProbeSkip = 0;
  private holeProbeInterval = 0;

  constructor(
    private readonly session: Session,
    private readonly channel: SocketChannel,
    private readonly log: Logger,
  ) {
    this.dev = session.export.device;
  }

  /**
   * Run `req` and send its reply; rejects (with no reply sent) when the device fails. READ and WRITE,
   * nearly every request, take no async frame of their own: one promise chain from the device to the
   * reply.
   */
  execute(req: RequestMessage): Promise<void> {
    try {
      if (req.type === Cmd.READ) return this.read(req);
      if (req.type === Cmd.WRITE && (req.flags & CmdFlag.FUA) === 0) {
        return this.dev.write(byteOffset(req.offset), req.payload!, false).then(() => this.replyOk(req));
      }
    } catch (err) {
      return Promise.reject(err); // a device that threw instead of rejecting: still this request's failure
    }
    return this.executeOther(req);
  }

  private replyOk(req: RequestMessage): void {
    this.channel.send(encodeSimpleReply(0, req.cookieHi, req.cookieLo));
  }

  private async executeOther(req: RequestMessage): Promise<void> {
    const dev = this.dev;
    const fua = (req.flags & CmdFlag.FUA) !== 0;
    const emulateFua = fua && dev.capabilities.fua === 'emulate';
    const nativeFua = fua && dev.capabilities.fua === 'native';
    switch (req.type) {
      case Cmd.WRITE:
        await dev.write(byteOffset(req.offset), req.payload!, nativeFua);
        break;
      case Cmd.FLUSH:
        await dev.flush();
        break;
      case Cmd.TRIM:
        await dev.trim(byteOffset(req.offset), req.length, nativeFua);
        break;
      case Cmd.WRITE_ZEROES:
        await dev.zero(byteOffset(req.offset), req.length, {
          noHole: (req.flags & CmdFlag.NO_HOLE) !== 0,
          fastZero: (req.flags & CmdFlag.FAST_ZERO) !== 0,
          fua: nativeFua,
        });
        break;
      case Cmd.CACHE:
        await dev.cache(byteOffset(req.offset), req.length);
        break;
      case Cmd.BLOCK_STATUS:
        return this.blockStatus(req);
    }
    if (emulateFua) await dev.flush();
    this.replyOk(req);
  }

  private read(req: RequestMessage): Promise<void> {
    const dev = this.dev;
    const structured = this.session.structuredReplies;
    const header = structured ? READ_CHUNK_HEADER_SIZE : SIMPLE_REPLY_SIZE;
    const lease = sharedPool.acquire(header + req.length);
    if (structured && !isPooled(lease)) return this.structuredRead(req, lease.buf); // nothing to give back
    if (structured && req.length >= HOLE_REPLY_MIN) {
      // Chunks are queued on the socket; release once they are written out.
      const release = () => this.channel.afterWritten(() => lease.release());
      return this.structuredRead(req, lease.buf).then(release, (err: unknown) => {
        release();
        throw err;
      });
    }
    // One reply, never a hole probe: the buffer goes back to the pool once its one write is out.
    let io: Promise<void>;
    try {
      io = dev.read(byteOffset(req.offset), req.length, lease.buf, header);
    } catch (err) {
      io = Promise.reject(err);
    }
    return io.then(
      () => {
        if (structured) writeOffsetDataHeader(lease.buf, 0, true, req.cookieHi, req.cookieLo, req.offset, req.length);
        else writeSimpleReplyHeader(lease.buf, 0, 0, req.cookieHi, req.cookieLo);
        this.channel.send(lease.buf, lease.release);
      },
      (err: unknown) => {
        lease.release();
        throw err;
      },
    );
  }

  private async structuredRead(req: RequestMessage, buf: Buffer): Promise<void> {
    const dev = this.dev;
    // For larger reads, ask for the allocation map at the same time: holes go out as OFFSET_HOLE
    // chunks (no zero bytes on the wire). DF asks for a single chunk, so it gets plain data.
    // Reporting holes is optional: while lookups keep finding none (a fully allocated disk), ask
    // exponentially less often, so a dense device pays almost nothing for it.
    const wantHoles =
      req.length >= HOLE_REPLY_MIN && (req.flags & CmdFlag.DF) === 0 && dev.capabilities.extents && --this.holeProbeSkip < 0;
    if (wantHoles) {
      const [, extents] = await Promise.all([
        dev.read(byteOffset(req.offset), req.length, buf, READ_CHUNK_HEADER_SIZE),
        dev.extents(byteOffset(req.offset), req.length).catch(() => undefined),
      ]);
      if (extents && extents.some((e) => e.flags & StateFlag.HOLE)) {
        this.holeProbeInterval = 0;
        this.holeProbeSkip = 0;
        this.sendReadChunks(req, buf, extents);
        return;
      }
      this.holeProbeInterval = Math.min(MAX_HOLE_PROBE_INTERVAL, this.holeProbeInterval * 2 + 1);
      this.holeProbeSkip = this.holeProbeInterval;
    } else {
      await dev.read(byteOffset(req.offset), req.length, buf, READ_CHUNK_HEADER_SIZE);
    }
    writeOffsetDataHeader(buf, 0, true, req.cookieHi, req.cookieLo, req.offset, req.length);
    this.channel.send(buf);
  }

  /** A READ reply as OFFSET_DATA and OFFSET_HOLE chunks following the extents; the last one is DONE. */
  private sendReadChunks(req: RequestMessage, buf: Buffer, extents: readonly { length: number; flags: number }[]): void {
    const pieces: { at: number; length: number; hole: boolean }[] = [];
    let at = 0;
    for (const e of extents) {
      if (at >= req.length) break;
      const length = Math.min(e.length, req.length - at);
      const hole = (e.flags & StateFlag.HOLE) !== 0;
      const last = pieces[pieces.length - 1];
      if (last && last.hole === hole) last.length += length;
      else pieces.push({ at, length, hole });
      at += length;
    }
    if (at < req.length) {
      const last = pieces[pieces.length - 1];
      if (last && !last.hole) last.length += req.length - at;
      else pieces.push({ at, length: req.length - at, hole: false });
    }
    this.channel.cork();
    pieces.forEach((p, i) => {
      const done = i === pieces.length - 1;
      if (p.hole) {
        this.channel.send(encodeOffsetHole(done, req.cookieHi, req.cookieLo, req.offset + p.at, p.length));
      } else {
        const header = Buffer.allocUnsafe(READ_CHUNK_HEADER_SIZE);
        writeOffsetDataHeader(header, 0, done, req.cookieHi, req.cookieLo, req.offset + p.at, p.length);
        this.channel.send(header);
        this.channel.send(buf.subarray(READ_CHUNK_HEADER_SIZE + p.at, READ_CHUNK_HEADER_SIZE + p.at + p.length));
      }
    });
    this.channel.uncorkNow();
  }

  private async blockStatus(req: RequestMessage): Promise<void> {
    const extents = await this.dev.extents(byteOffset(req.offset), req.length);
    const reqOne = (req.flags & CmdFlag.REQ_ONE) !== 0;
    const descriptors: StatusDescriptor[] = [];
    let covered = 0;
    for (const e of extents) {
      if (covered >= req.length || e.length <= 0) break;
      const length = Math.min(e.length, req.length - covered);
      const last = descriptors[descriptors.length - 1];
      if (last && last.flags === e.flags) (last as { length: number }).length += length;
      else descriptors.push({ length, flags: e.flags });
      covered += length;
      if (reqOne) break;
    }
    if (descriptors.length === 0) throw new DeviceError('EIO', 'device returned no extents');
    if (reqOne) descriptors.length = 1;
    const ids = [...this.session.metaContexts.keys()];
    ids.forEach((id, i) => {
      this.channel.send(encodeBlockStatusChunk(i === ids.length - 1, req.cookieHi, req.cookieLo, id, descriptors));
    });
  }

  /** Turn a failure of execute() into an error reply; returns the errno sent. */
  reportFailure(req: RequestMessage, err: unknown): NbdErrnoName {
    let errno: NbdErrnoName = 'EIO';
    let offset: number | undefined;
    let message: string;
    if (err instanceof DeviceError) {
      errno = err.errno;
      offset = err.offset;
      message = err.message;
      if (!this.session.structuredReplies && err.simpleErrno) errno = err.simpleErrno;
      this.log.warn({ cmd: CMD_NAMES[req.type], offset: req.offset, length: req.length, errno, failedAt: offset }, message);
    } else {
      message = 'internal error';
      this.log.error({ err, cmd: CMD_NAMES[req.type], offset: req.offset, length: req.length }, 'request failed unexpectedly');
    }
    const inRange = offset !== undefined && offset >= req.offset && offset < req.offset + req.length;
    replyError(this.channel, this.session.structuredReplies, req, errno, message, inRange ? offset : undefined);
    return errno;
  }
}

/** An error reply: an error chunk (message, failing offset) under structured replies, else a simple one. */
export function replyError(
  channel: SocketChannel,
  structured: boolean,
  req: RequestMessage,
  errno: NbdErrnoName,
  message: string,
  offset?: number,
): void {
  const code = NbdErrno[errno] ?? NbdErrno.EIO;
  // With structured replies, READ must be answered with chunks; others may use simple replies, but an
  // error chunk carries the message and the failing offset, so use it for every command.
  if (structured) {
    const withOffset = offset !== undefined && req.type !== Cmd.FLUSH ? offset : undefined;
    channel.send(encodeErrorChunk(code, message, req.cookieHi, req.cookieLo, withOffset));
  } else {
    channel.send(encodeSimpleReply(code, req.cookieHi, req.cookieLo));
  }
}

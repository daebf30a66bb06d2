/**
 * Everything the server writes on the wire, as bytes. Pure functions: no socket, no state.
 * Replies that carry data are built so the data can be read straight into the reply buffer
 * (the header occupies the first bytes; see SIMPLE_REPLY_SIZE and READ_CHUNK_HEADER_SIZE).
 */
import {
  Chunk,
  EXPORT_NAME_PAD_SIZE,
  GREETING_SIZE,
  Info,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  NBDMAGIC_HI,
  NBDMAGIC_LO,
  OPT_REPLY_MAGIC_HI,
  OPT_REPLY_MAGIC_LO,
  OPTION_REPLY_HEADER_SIZE,
  ReplyFlag,
  Rep,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from './constants';
import type { StatusDescriptor } from './messages';

const TWO_POW_32 = 4294967296;

function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_POW_32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** Newstyle greeting: NBDMAGIC, IHAVEOPT, u16 handshake flags. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(GREETING_SIZE);
  b.writeUInt32BE(NBDMAGIC_HI, 0);
  b.writeUInt32BE(NBDMAGIC_LO, 4);
  b.writeUInt32BE(IHAVEOPT_HI, 8);
  b.writeUInt32BE(IHAVEOPT_LO, 12);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

/** Option reply: magic, echoed option, reply type, data. */
export function encodeOptionReply(option: number, replyType: number, data?: Buffer): Buffer {
  const len = data ? data.length : 0;
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_SIZE + len);
  b.writeUInt32BE(OPT_REPLY_MAGIC_HI, 0);
  b.writeUInt32BE(OPT_REPLY_MAGIC_LO, 4);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(len, 16);
  if (data) data.copy(b, OPTION_REPLY_HEADER_SIZE);
  return b;
}

/** An error option reply with a human-readable message. */
export function encodeOptionError(option: number, errorType: number, message: string): Buffer {
  return encodeOptionReply(option, errorType, Buffer.from(message, 'utf8'));
}

/** NBD_REP_SERVER payload: u32 name length, name, description. */
export function encodeServerEntry(option: number, name: string, description: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const data = Buffer.allocUnsafe(4 + n.length + d.length);
  data.writeUInt32BE(n.length, 0);
  n.copy(data, 4);
  d.copy(data, 4 + n.length);
  return encodeOptionReply(option, Rep.SERVER, data);
}

export function encodeInfoExport(option: number, size: number, transmissionFlags: number): Buffer {
  const data = Buffer.alloc(12);
  data.writeUInt16BE(Info.EXPORT, 0);
  writeU64(data, size, 2);
  data.writeUInt16BE(transmissionFlags, 10);
  return encodeOptionReply(option, Rep.INFO, data);
}

export function encodeInfoText(option: number, infoType: number, text: string): Buffer {
  const t = Buffer.from(text, 'utf8');
  const data = Buffer.allocUnsafe(2 + t.length);
  data.writeUInt16BE(infoType, 0);
  t.copy(data, 2);
  return encodeOptionReply(option, Rep.INFO, data);
}

export function encodeInfoBlockSize(option: number, minimum: number, preferred: number, maximum: number): Buffer {
  const data = Buffer.alloc(14);
  data.writeUInt16BE(Info.BLOCK_SIZE, 0);
  data.writeUInt32BE(minimum, 2);
  data.writeUInt32BE(preferred, 6);
  data.writeUInt32BE(maximum, 10);
  return encodeOptionReply(option, Rep.INFO, data);
}

export function encodeMetaContext(option: number, contextId: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const data = Buffer.allocUnsafe(4 + n.length);
  data.writeUInt32BE(contextId, 0);
  n.copy(data, 4);
  return encodeOptionReply(option, Rep.META_CONTEXT, data);
}

/** Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, and 124 zero bytes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PAD_SIZE));
  writeU64(b, size, 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/**
 * Simple reply header into `buf` at `at` (16 bytes): magic, error, cookie.
 * For a successful READ, allocate SIMPLE_REPLY_SIZE + length and read the data in after the header.
 */
export function writeSimpleReplyHeader(buf: Buffer, at: number, error: number, cookieHi: number, cookieLo: number): void {
  buf.writeUInt32BE(SIMPLE_REPLY_MAGIC, at);
  buf.writeUInt32BE(error, at + 4);
  buf.writeUInt32BE(cookieHi, at + 8);
  buf.writeUInt32BE(cookieLo, at + 12);
}

export function encodeSimpleReply(error: number, cookieHi: number, cookieLo: number): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
  writeSimpleReplyHeader(b, 0, error, cookieHi, cookieLo);
  return b;
}

/** Structured reply chunk header (20 bytes) into `buf` at `at`. */
export function writeChunkHeader(
  buf: Buffer,
  at: number,
  flags: number,
  type: number,
  cookieHi: number,
  cookieLo: number,
  payloadLength: number,
): void {
  buf.writeUInt32BE(STRUCTURED_REPLY_MAGIC, at);
  buf.writeUInt16BE(flags, at + 4);
  buf.writeUInt16BE(type, at + 6);
  buf.writeUInt32BE(cookieHi, at + 8);
  buf.writeUInt32BE(cookieLo, at + 12);
  buf.writeUInt32BE(payloadLength, at + 16);
}

/** Size of the header in front of OFFSET_DATA bytes: chunk header plus u64 offset. */
export const READ_CHUNK_HEADER_SIZE = STRUCTURED_REPLY_HEADER_SIZE + 8;

/** Fill the OFFSET_DATA header in front of `dataLength` bytes already placed at buf[at+28…]. */
export function writeOffsetDataHeader(
  buf: Buffer,
  at: number,
  done: boolean,
  cookieHi: number,
  cookieLo: number,
  offset: number,
  dataLength: number,
): void {
  writeChunkHeader(buf, at, done ? ReplyFlag.DONE : 0, Chunk.OFFSET_DATA, cookieHi, cookieLo, 8 + dataLength);
  writeU64(buf, offset, at + STRUCTURED_REPLY_HEADER_SIZE);
}

export function encodeOffsetHole(done: boolean, cookieHi: number, cookieLo: number, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + 12);
  writeChunkHeader(b, 0, done ? ReplyFlag.DONE : 0, Chunk.OFFSET_HOLE, cookieHi, cookieLo, 12);
  writeU64(b, offset, STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt32BE(length, STRUCTURED_REPLY_HEADER_SIZE + 8);
  return b;
}

/** NBD_REPLY_TYPE_NONE with DONE: the request succeeded and nothing more follows. */
export function encodeNoneChunk(cookieHi: number, cookieLo: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE);
  writeChunkHeader(b, 0, ReplyFlag.DONE, Chunk.NONE, cookieHi, cookieLo, 0);
  return b;
}

/**
 * ERROR (whole request failed) or, when `offset` is given, ERROR_OFFSET (the failure starts there).
 * Always marked DONE: nothing follows an error from this server.
 */
export function encodeErrorChunk(error: number, message: string, cookieHi: number, cookieLo: number, offset?: number): Buffer {
  let msg = Buffer.from(message, 'utf8');
  if (msg.length > 4096) msg = msg.subarray(0, 4096);
  const withOffset = offset !== undefined;
  const payload = 6 + msg.length + (withOffset ? 8 : 0);
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + payload);
  writeChunkHeader(b, 0, ReplyFlag.DONE, withOffset ? Chunk.ERROR_OFFSET : Chunk.ERROR, cookieHi, cookieLo, payload);
  let at = STRUCTURED_REPLY_HEADER_SIZE;
  b.writeUInt32BE(error, at);
  b.writeUInt16BE(msg.length, at + 4);
  msg.copy(b, at + 6);
  at += 6 + msg.length;
  if (withOffset) writeU64(b, offset, at);
  return b;
}

/** BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatusChunk(
  done: boolean,
  cookieHi: number,
  cookieLo: number,
  contextId: number,
  descriptors: readonly StatusDescriptor[],
): Buffer {
  const payload = 4 + descriptors.length * 8;
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + payload);
  writeChunkHeader(b, 0, done ? ReplyFlag.DONE : 0, Chunk.BLOCK_STATUS, cookieHi, cookieLo, payload);
  let at = STRUCTURED_REPLY_HEADER_SIZE;
  b.writeUInt32BE(contextId, at);
  at += 4;
  for (const d of descriptors) {
    b.writeUInt32BE(d.length, at);
    b.writeUInt32BE(d.flags, at + 4);
    at += 8;
  }
  return b;
}

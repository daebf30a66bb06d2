/**
 * Test-side NBD client codec, written independently of protocol/ (u64 values use BigInt here, while the
 * server uses two u32 halves), so round trips through it check the server codec against a second
 * implementation of the spec rather than against itself.
 *
 * Encoders produce what a client sends; decoders parse what a server sends.
 */

export const W = {
  NBDMAGIC: 0x4e42444d41474943n,
  IHAVEOPT: 0x49484156454f5054n,
  OPT_REPLY_MAGIC: 0x0003e889045565a9n,
  REQUEST_MAGIC: 0x25609513,
  SIMPLE_REPLY_MAGIC: 0x67446698,
  STRUCTURED_REPLY_MAGIC: 0x668e33ef,
} as const;

export type U64 = bigint | number;
const big = (v: U64): bigint => (typeof v === 'bigint' ? v : BigInt(v));

// ------------------------------------------------------------------ client → server encoders

export function clientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

/** IHAVEOPT | option u32 | length u32 | data. `lengthOverride` lies about the length (fuzzing). */
export function option(opt: number, data: Buffer = Buffer.alloc(0), lengthOverride?: number): Buffer {
  const b = Buffer.alloc(16 + data.length);
  b.writeBigUInt64BE(W.IHAVEOPT, 0);
  b.writeUInt32BE(opt >>> 0, 8);
  b.writeUInt32BE((lengthOverride ?? data.length) >>> 0, 12);
  data.copy(b, 16);
  return b;
}

/** INFO/GO payload: u32 name length, name, u16 count, count × u16. */
export function infoPayload(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length + 2 + infos.length * 2);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + i * 2));
  return b;
}

/** LIST/SET_META_CONTEXT payload: u32 name length, name, u32 count, count × (u32 len, query). */
export function metaPayload(name: string, queries: string[] = []): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(name, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(n.length, 0);
  parts.push(head, n);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    const l = Buffer.alloc(4);
    l.writeUInt32BE(qb.length, 0);
    parts.push(l, qb);
  }
  return Buffer.concat(parts);
}

export interface ClientRequest {
  flags?: number;
  type: number;
  cookie?: U64;
  offset?: U64;
  length?: number;
  /** WRITE data; when given and `length` is absent, length = payload.length. */
  payload?: Buffer;
}

/** Compact request: u32 magic, u16 flags, u16 type, u64 cookie, u64 offset, u32 length [, payload]. */
export function request(r: ClientRequest): Buffer {
  const payload = r.payload ?? Buffer.alloc(0);
  const b = Buffer.alloc(28 + payload.length);
  b.writeUInt32BE(W.REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags ?? 0, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(big(r.cookie ?? 0), 8);
  b.writeBigUInt64BE(big(r.offset ?? 0), 16);
  b.writeUInt32BE((r.length ?? payload.length) >>> 0, 24);
  payload.copy(b, 28);
  return b;
}

// ------------------------------------------------------------------ server → client decoders

export class WireError extends Error {}

function need(buf: Buffer, n: number, what: string): void {
  if (buf.length < n) throw new WireError(`${what}: need ${n} bytes, have ${buf.length}`);
}

export interface Greeting {
  handshakeFlags: number;
}

export function decodeGreeting(buf: Buffer): Greeting {
  need(buf, 18, 'greeting');
  if (buf.length !== 18) throw new WireError(`greeting must be 18 bytes, got ${buf.length}`);
  if (buf.readBigUInt64BE(0) !== W.NBDMAGIC) throw new WireError('bad NBDMAGIC');
  if (buf.readBigUInt64BE(8) !== W.IHAVEOPT) throw new WireError('bad IHAVEOPT');
  return { handshakeFlags: buf.readUInt16BE(16) };
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
  /** Total bytes this reply occupied. */
  size: number;
}

/** One option reply at `at`; returns undefined if incomplete. */
export function decodeOptionReply(buf: Buffer, at = 0): OptionReply | undefined {
  if (buf.length - at < 20) return undefined;
  if (buf.readBigUInt64BE(at) !== W.OPT_REPLY_MAGIC) throw new WireError('bad option reply magic');
  const len = buf.readUInt32BE(at + 16);
  if (buf.length - at < 20 + len) return undefined;
  return {
    option: buf.readUInt32BE(at + 8),
    type: buf.readUInt32BE(at + 12),
    data: buf.subarray(at + 20, at + 20 + len),
    size: 20 + len,
  };
}

/** All option replies in a buffer that must contain whole replies only. */
export function decodeOptionReplies(buf: Buffer): OptionReply[] {
  const out: OptionReply[] = [];
  let at = 0;
  while (at < buf.length) {
    const r = decodeOptionReply(buf, at);
    if (!r) throw new WireError(`truncated option reply at ${at}`);
    out.push(r);
    at += r.size;
  }
  return out;
}

export type InfoReply =
  | { info: 'export'; size: bigint; flags: number }
  | { info: 'name'; name: string }
  | { info: 'description'; text: string }
  | { info: 'blockSize'; minimum: number; preferred: number; maximum: number }
  | { info: 'unknown'; type: number; raw: Buffer };

export function decodeInfo(data: Buffer): InfoReply {
  need(data, 2, 'REP_INFO');
  const type = data.readUInt16BE(0);
  switch (type) {
    case 0:
      if (data.length !== 12) throw new WireError(`INFO_EXPORT length ${data.length} != 12`);
      return { info: 'export', size: data.readBigUInt64BE(2), flags: data.readUInt16BE(10) };
    case 1:
      return { info: 'name', name: data.toString('utf8', 2) };
    case 2:
      return { info: 'description', text: data.toString('utf8', 2) };
    case 3:
      if (data.length !== 14) throw new WireError(`INFO_BLOCK_SIZE length ${data.length} != 14`);
      return {
        info: 'blockSize',
        minimum: data.readUInt32BE(2),
        preferred: data.readUInt32BE(6),
        maximum: data.readUInt32BE(10),
      };
    default:
      return { info: 'unknown', type, raw: data.subarray(2) };
  }
}

export function decodeServerEntry(data: Buffer): { name: string; description: string } {
  need(data, 4, 'REP_SERVER');
  const n = data.readUInt32BE(0);
  need(data, 4 + n, 'REP_SERVER name');
  return { name: data.toString('utf8', 4, 4 + n), description: data.toString('utf8', 4 + n) };
}

export function decodeMetaContext(data: Buffer): { id: number; name: string } {
  need(data, 4, 'REP_META_CONTEXT');
  return { id: data.readUInt32BE(0), name: data.toString('utf8', 4) };
}

export function decodeExportNameReply(buf: Buffer, noZeroes: boolean): { size: bigint; flags: number } {
  const want = noZeroes ? 10 : 134;
  if (buf.length !== want) throw new WireError(`EXPORT_NAME reply must be ${want} bytes, got ${buf.length}`);
  if (!noZeroes && buf.subarray(10).some((x) => x !== 0)) throw new WireError('EXPORT_NAME padding not zero');
  return { size: buf.readBigUInt64BE(0), flags: buf.readUInt16BE(8) };
}

export interface SimpleReply {
  kind: 'simple';
  error: number;
  cookie: bigint;
  /** Bytes after the 16-byte header (READ data); the caller says how many. */
  data: Buffer;
  size: number;
}

export type ChunkBody =
  | { chunk: 'none' }
  | { chunk: 'data'; offset: bigint; data: Buffer }
  | { chunk: 'hole'; offset: bigint; length: number }
  | { chunk: 'blockStatus'; contextId: number; descriptors: { length: number; flags: number }[] }
  | { chunk: 'error'; error: number; message: string }
  | { chunk: 'errorOffset'; error: number; message: string; offset: bigint }
  | { chunk: 'unknown'; type: number; raw: Buffer };

export interface StructuredChunk {
  kind: 'chunk';
  flags: number;
  done: boolean;
  type: number;
  cookie: bigint;
  body: ChunkBody;
  size: number;
}

function decodeChunkBody(type: number, p: Buffer): ChunkBody {
  switch (type) {
    case 0:
      if (p.length !== 0) throw new WireError('NONE chunk with payload');
      return { chunk: 'none' };
    case 1:
      if (p.length < 9) throw new WireError(`OFFSET_DATA payload ${p.length} < 9`);
      return { chunk: 'data', offset: p.readBigUInt64BE(0), data: p.subarray(8) };
    case 2:
      if (p.length !== 12) throw new WireError(`OFFSET_HOLE payload ${p.length} != 12`);
      return { chunk: 'hole', offset: p.readBigUInt64BE(0), length: p.readUInt32BE(8) };
    case 5: {
      if (p.length < 12 || (p.length - 4) % 8 !== 0) throw new WireError(`BLOCK_STATUS payload ${p.length}`);
      const descriptors = [];
      for (let at = 4; at < p.length; at += 8) descriptors.push({ length: p.readUInt32BE(at), flags: p.readUInt32BE(at + 4) });
      return { chunk: 'blockStatus', contextId: p.readUInt32BE(0), descriptors };
    }
    case 0x8001:
    case 0x8002: {
      need(p, 6, 'error chunk');
      const error = p.readUInt32BE(0);
      const ml = p.readUInt16BE(4);
      const tail = type === 0x8002 ? 8 : 0;
      if (p.length !== 6 + ml + tail) throw new WireError(`error chunk payload ${p.length} != ${6 + ml + tail}`);
      const message = p.toString('utf8', 6, 6 + ml);
      if (type === 0x8001) return { chunk: 'error', error, message };
      return { chunk: 'errorOffset', error, message, offset: p.readBigUInt64BE(6 + ml) };
    }
    default:
      return { chunk: 'unknown', type, raw: p };
  }
}

/**
 * One transmission reply at `at`. Simple replies carry no length: `readLength(cookie)` tells how many
 * data bytes follow a successful simple reply (0 when not a READ). Returns undefined if incomplete.
 */
export function decodeTransmissionReply(
  buf: Buffer,
  at = 0,
  readLength: (cookie: bigint) => number = () => 0,
): SimpleReply | StructuredChunk | undefined {
  if (buf.length - at < 4) return undefined;
  const magic = buf.readUInt32BE(at);
  if (magic === W.SIMPLE_REPLY_MAGIC) {
    if (buf.length - at < 16) return undefined;
    const error = buf.readUInt32BE(at + 4);
    const cookie = buf.readBigUInt64BE(at + 8);
    const dl = error === 0 ? readLength(cookie) : 0;
    if (buf.length - at < 16 + dl) return undefined;
    return { kind: 'simple', error, cookie, data: buf.subarray(at + 16, at + 16 + dl), size: 16 + dl };
  }
  if (magic === W.STRUCTURED_REPLY_MAGIC) {
    if (buf.length - at < 20) return undefined;
    const flags = buf.readUInt16BE(at + 4);
    const type = buf.readUInt16BE(at + 6);
    const cookie = buf.readBigUInt64BE(at + 8);
    const len = buf.readUInt32BE(at + 16);
    if (buf.length - at < 20 + len) return undefined;
    const body = decodeChunkBody(type, buf.subarray(at + 20, at + 20 + len));
    return { kind: 'chunk', flags, done: (flags & 1) !== 0, type, cookie, body, size: 20 + len };
  }
  throw new WireError(`bad reply magic 0x${magic.toString(16)}`);
}

/** Hex dump helper for failure messages. */
export function hex(buf: Buffer, max = 4096): string {
  const s = buf.subarray(0, max).toString('hex');
  return buf.length > max ? `${s}… (${buf.length} bytes)` : s;
}

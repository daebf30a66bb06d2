/**
 * Server → client layouts, byte for byte against the spec (expected bytes are written out by hand as
 * hex, not produced by the code under test), then decoded with the independent test-side codec.
 */
import t from 'tap';
import * as S from '../../protocol/serializer';
import { Chunk, Info, Opt, Rep, TxFlag } from '../../protocol/constants';
import * as wire from '../helpers/nbd-wire';

const h = (s: string): Buffer => Buffer.from(s.replace(/[\s_|]/g, ''), 'hex');
const OPT_MAGIC = '0003e889045565a9';

t.test('greeting is 18 bytes: NBDMAGIC, IHAVEOPT, u16 flags', async (t) => {
  const g = S.encodeGreeting(0x0003);
  t.equal(g.length, 18);
  t.same(g, h('4e42444d41474943 49484156454f5054 0003'));
  t.equal(g.subarray(0, 8).toString('latin1'), 'NBDMAGIC');
  t.equal(g.subarray(8, 16).toString('latin1'), 'IHAVEOPT');
  t.same(wire.decodeGreeting(g), { handshakeFlags: 3 });
  t.same(S.encodeGreeting(0x0001).subarray(16), h('0001'));
});

t.test('option reply header: magic, option, type, length, data', async (t) => {
  const ack = S.encodeOptionReply(Opt.GO, Rep.ACK);
  t.same(ack, h(`${OPT_MAGIC} 00000007 00000001 00000000`));
  const withData = S.encodeOptionReply(0xdeadbeef, Rep.ERR_UNSUP, Buffer.from('ab'));
  t.same(withData, h(`${OPT_MAGIC} deadbeef 80000001 00000002 6162`));
  const err = S.encodeOptionError(Opt.LIST, Rep.ERR_INVALID, 'bad');
  t.same(err, h(`${OPT_MAGIC} 00000003 80000003 00000003 626164`));
  // Every error type keeps bit 31 and encodes unsigned.
  for (const [name, v] of Object.entries(Rep)) {
    const b = S.encodeOptionReply(1, v);
    t.equal(b.readUInt32BE(12), v, name);
  }
  t.same(wire.decodeOptionReply(err), { option: 3, type: 0x80000003, data: Buffer.from('bad'), size: 23 });
});

t.test('REP_SERVER: u32 name length, name, description', async (t) => {
  const b = S.encodeServerEntry(Opt.LIST, 'disk', 'main');
  t.same(b, h(`${OPT_MAGIC} 00000003 00000002 0000000c 00000004 6469736b 6d61696e`));
  t.same(wire.decodeServerEntry(wire.decodeOptionReply(b)!.data), { name: 'disk', description: 'main' });
  const empty = S.encodeServerEntry(Opt.LIST, '', '');
  t.same(empty, h(`${OPT_MAGIC} 00000003 00000002 00000004 00000000`));
  const utf = S.encodeServerEntry(Opt.LIST, 'é', '');
  t.equal(utf.readUInt32BE(20), 2, 'name length counts UTF-8 bytes');
});

t.test('REP_INFO INFO_EXPORT: length 12, u16 0, u64 size, u16 flags', async (t) => {
  const b = S.encodeInfoExport(Opt.GO, 64 * 1024 * 1024, 0x0ded);
  t.same(b, h(`${OPT_MAGIC} 00000007 00000003 0000000c 0000 0000000004000000 0ded`));
  // above 2^32 and near 2^53
  const big = S.encodeInfoExport(Opt.INFO, 2 ** 32 + 4096, 1);
  t.same(big.subarray(20), h('0000 0000000100001000 0001'));
  const max = S.encodeInfoExport(Opt.INFO, Number.MAX_SAFE_INTEGER, 1);
  t.same(max.subarray(20), h('0000 001fffffffffffff 0001'));
  const d = wire.decodeInfo(wire.decodeOptionReply(max)!.data);
  t.same(d, { info: 'export', size: BigInt(Number.MAX_SAFE_INTEGER), flags: 1 });
  const nearTop = 2 ** 53 - 512;
  t.same(wire.decodeInfo(S.encodeInfoExport(6, nearTop, 3).subarray(20)), { info: 'export', size: BigInt(nearTop), flags: 3 });
});

t.test('REP_INFO INFO_NAME / INFO_DESCRIPTION: u16 type + text', async (t) => {
  const n = S.encodeInfoText(Opt.GO, Info.NAME, 'disk');
  t.same(n, h(`${OPT_MAGIC} 00000007 00000003 00000006 0001 6469736b`));
  const d = S.encodeInfoText(Opt.INFO, Info.DESCRIPTION, 'hi');
  t.same(d, h(`${OPT_MAGIC} 00000006 00000003 00000004 0002 6869`));
  t.same(wire.decodeInfo(d.subarray(20)), { info: 'description', text: 'hi' });
  t.same(wire.decodeInfo(S.encodeInfoText(7, Info.NAME, '').subarray(20)), { info: 'name', name: '' });
});

t.test('REP_INFO INFO_BLOCK_SIZE: length 14, u16 3, u32 min, u32 preferred, u32 max', async (t) => {
  const b = S.encodeInfoBlockSize(Opt.GO, 1, 4096, 32 * 1024 * 1024);
  t.same(b, h(`${OPT_MAGIC} 00000007 00000003 0000000e 0003 00000001 00001000 02000000`));
  t.same(wire.decodeInfo(b.subarray(20)), { info: 'blockSize', minimum: 1, preferred: 4096, maximum: 33554432 });
  const top = S.encodeInfoBlockSize(Opt.GO, 512, 65536, 0xffffffff);
  t.same(top.subarray(20), h('0003 00000200 00010000 ffffffff'));
});

t.test('REP_META_CONTEXT: u32 id, name', async (t) => {
  const b = S.encodeMetaContext(Opt.SET_META_CONTEXT, 1, 'base:allocation');
  t.same(b, h(`${OPT_MAGIC} 0000000a 00000004 00000013 00000001 ${Buffer.from('base:allocation').toString('hex')}`));
  t.same(wire.decodeMetaContext(wire.decodeOptionReply(b)!.data), { id: 1, name: 'base:allocation' });
  const big = S.encodeMetaContext(9, 0xfffffffe, 'x');
  t.same(big.subarray(20), h('fffffffe 78'));
});

t.test('EXPORT_NAME reply: u64 size, u16 flags, 124 zero bytes unless NO_ZEROES', async (t) => {
  const padded = S.encodeExportNameReply(1024 * 1024, 0x0003, false);
  t.equal(padded.length, 134);
  t.same(padded.subarray(0, 10), h('0000000000100000 0003'));
  t.same(padded.subarray(10), Buffer.alloc(124), '124 zero bytes');
  t.same(wire.decodeExportNameReply(padded, false), { size: 1048576n, flags: 3 });
  const bare = S.encodeExportNameReply(2 ** 40 + 1, TxFlag.HAS_FLAGS | TxFlag.READ_ONLY, true);
  t.same(bare, h('0000010000000001 0003'));
  t.same(wire.decodeExportNameReply(bare, true), { size: 2n ** 40n + 1n, flags: 3 });
  // A recycled pool buffer must not leak into the padding.
  for (let i = 0; i < 50; i++) Buffer.allocUnsafe(134).fill(0xaa);
  t.ok(
    S.encodeExportNameReply(5, 1, false)
      .subarray(10)
      .every((x) => x === 0),
    'padding zeroed even after pool churn',
  );
});

t.test('simple reply: u32 magic, u32 error, u64 cookie', async (t) => {
  const b = S.encodeSimpleReply(22, 0x01020304, 0xa0b0c0d0);
  t.same(b, h('67446698 00000016 01020304a0b0c0d0'));
  const r = wire.decodeTransmissionReply(b)!;
  t.same(r, { kind: 'simple', error: 22, cookie: 0x01020304a0b0c0d0n, data: Buffer.alloc(0), size: 16 });
  // Header written in front of READ data.
  const buf = Buffer.alloc(16 + 4, 0xee);
  buf.write('DATA', 16);
  S.writeSimpleReplyHeader(buf, 0, 0, 0xffffffff, 0xffffffff);
  t.same(buf, h('67446698 00000000 ffffffffffffffff 44415441'));
  const rr = wire.decodeTransmissionReply(buf, 0, () => 4)!;
  t.equal(rr.kind, 'simple');
  t.same((rr as wire.SimpleReply).data, Buffer.from('DATA'));
});

t.test('structured chunk header: magic, u16 flags, u16 type, u64 cookie, u32 length', async (t) => {
  const b = Buffer.alloc(20);
  S.writeChunkHeader(b, 0, 1, 0x8002, 0x11223344, 0x55667788, 0x01020304);
  t.same(b, h('668e33ef 0001 8002 1122334455667788 01020304'));
});

t.test('OFFSET_DATA chunk: header + u64 offset + data', async (t) => {
  const off = 2 ** 32 + 512; // above 2^32
  const buf = Buffer.alloc(S.READ_CHUNK_HEADER_SIZE + 3);
  t.equal(S.READ_CHUNK_HEADER_SIZE, 28);
  buf.write('xyz', 28);
  S.writeOffsetDataHeader(buf, 0, true, 0, 7, off, 3);
  t.same(buf, h('668e33ef 0001 0001 0000000000000007 0000000b 0000000100000200 78797a'));
  const c = wire.decodeTransmissionReply(buf) as wire.StructuredChunk;
  t.same(c.body, { chunk: 'data', offset: 2n ** 32n + 512n, data: Buffer.from('xyz') });
  t.equal(c.done, true);
  const notDone = Buffer.alloc(29);
  S.writeOffsetDataHeader(notDone, 0, false, 1, 2, 2 ** 53 - 1, 1);
  t.same(notDone.subarray(0, 28), h('668e33ef 0000 0001 0000000100000002 00000009 001fffffffffffff'));
});

t.test('OFFSET_HOLE chunk: length 12, u64 offset, u32 size', async (t) => {
  const b = S.encodeOffsetHole(false, 0xcafebabe, 1, 2 ** 40, 65536);
  t.same(b, h('668e33ef 0000 0002 cafebabe00000001 0000000c 0000010000000000 00010000'));
  t.same((wire.decodeTransmissionReply(b) as wire.StructuredChunk).body, { chunk: 'hole', offset: 2n ** 40n, length: 65536 });
  t.equal(S.encodeOffsetHole(true, 0, 0, 0, 1).readUInt16BE(4), 1, 'DONE flag');
});

t.test('NONE chunk: DONE, empty payload', async (t) => {
  const b = S.encodeNoneChunk(0, 0x2a);
  t.same(b, h('668e33ef 0001 0000 000000000000002a 00000000'));
  t.same((wire.decodeTransmissionReply(b) as wire.StructuredChunk).body, { chunk: 'none' });
});

t.test('ERROR chunk: u32 error, u16 msg len, msg', async (t) => {
  const b = S.encodeErrorChunk(5, 'io', 0, 9);
  t.same(b, h('668e33ef 0001 8001 0000000000000009 00000008 00000005 0002 696f'));
  t.same((wire.decodeTransmissionReply(b) as wire.StructuredChunk).body, { chunk: 'error', error: 5, message: 'io' });
  const empty = S.encodeErrorChunk(22, '', 1, 1);
  t.same(empty, h('668e33ef 0001 8001 0000000100000001 00000006 00000016 0000'));
});

t.test('ERROR_OFFSET chunk: u32 error, u16 msg len, msg, u64 offset', async (t) => {
  const b = S.encodeErrorChunk(5, 'bad', 0, 3, 2 ** 33 + 1);
  t.same(b, h('668e33ef 0001 8002 0000000000000003 00000011 00000005 0003 626164 0000000200000001'));
  t.same((wire.decodeTransmissionReply(b) as wire.StructuredChunk).body, {
    chunk: 'errorOffset',
    error: 5,
    message: 'bad',
    offset: 2n ** 33n + 1n,
  });
  const zero = S.encodeErrorChunk(5, '', 0, 3, 0);
  t.equal(zero.readUInt16BE(6), Chunk.ERROR_OFFSET, 'offset 0 still selects ERROR_OFFSET');
  // message is capped; the length field matches what was written
  const long = S.encodeErrorChunk(5, 'x'.repeat(10000), 0, 0);
  t.equal(long.readUInt16BE(24), 4096);
  t.equal(long.length, 20 + 6 + 4096);
  t.equal(long.readUInt32BE(16), 6 + 4096);
});

t.test('BLOCK_STATUS chunk: u32 context id, n × (u32 length, u32 flags)', async (t) => {
  const b = S.encodeBlockStatusChunk(true, 0, 1, 1, [
    { length: 4096, flags: 0 },
    { length: 0xfffff000, flags: 3 },
  ]);
  t.same(b, h('668e33ef 0001 0005 0000000000000001 00000014 00000001 00001000 00000000 fffff000 00000003'));
  t.same((wire.decodeTransmissionReply(b) as wire.StructuredChunk).body, {
    chunk: 'blockStatus',
    contextId: 1,
    descriptors: [
      { length: 4096, flags: 0 },
      { length: 0xfffff000, flags: 3 },
    ],
  });
  t.equal(S.encodeBlockStatusChunk(false, 0, 0, 2, [{ length: 1, flags: 0 }]).readUInt16BE(4), 0, 'not DONE');
});

t.test('decoder rejects malformed server bytes (the client codec can fail)', async (t) => {
  t.throws(() => wire.decodeGreeting(Buffer.alloc(18)));
  t.throws(() => wire.decodeOptionReply(Buffer.alloc(20)));
  t.throws(() => wire.decodeTransmissionReply(h('12345678 00000000 0000000000000000')));
  t.throws(() => wire.decodeExportNameReply(Buffer.alloc(10), false));
  t.equal(wire.decodeTransmissionReply(h('668e33ef 0001 0000')), undefined, 'incomplete → undefined');
});

/**
 * protocol/handshake.ts as a socket-free state machine: option requests in, replies (decoded with the
 * test-side codec) and next steps out.
 */
import t from 'tap';
import { Handshake, SERVER_HANDSHAKE_FLAGS, BASE_ALLOCATION_ID, type HandshakeStep } from '../../protocol/handshake';
import { ClientFlag, HandshakeFlag, Info, MAX_OPTIONS, MAX_PAYLOAD, Opt, Rep, TxFlag } from '../../protocol/constants';
import * as wire from '../helpers/nbd-wire';
import { standardCatalog } from '../fuzz/fake-device';

const FIXED = ClientFlag.FIXED_NEWSTYLE;
const NOZ = ClientFlag.NO_ZEROES;

function hs(flags = FIXED, shuttingDown = false): { h: Handshake; std: ReturnType<typeof standardCatalog>; stop: () => void } {
  const std = standardCatalog();
  let down = shuttingDown;
  const h = new Handshake(std.catalog, { shuttingDown: () => down });
  const problem = h.acceptClientFlags(flags);
  if (problem) throw new Error(problem);
  return { h, std, stop: () => (down = true) };
}

const opt = (h: Handshake, option: number, data: Buffer = Buffer.alloc(0)): HandshakeStep => h.handle({ kind: 'option', option, data });

const replies = (s: HandshakeStep): wire.OptionReply[] => wire.decodeOptionReplies(Buffer.concat(s.send));
const types = (s: HandshakeStep): number[] => replies(s).map((r) => r.type);

t.test('server handshake flags: fixed newstyle and no zeroes only', async (t) => {
  t.equal(SERVER_HANDSHAKE_FLAGS, HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES);
  t.equal(SERVER_HANDSHAKE_FLAGS, 3);
});

t.test('client flags: unknown bits are refused', async (t) => {
  const { catalog } = standardCatalog();
  const h = new Handshake(catalog, { shuttingDown: () => false });
  t.type(h.acceptClientFlags(4), 'string');
  t.type(h.acceptClientFlags(0x80000000), 'string');
  t.equal(h.acceptClientFlags(3), undefined);
  t.equal(h.noZeroes, true);
  t.equal(h.fixedNewstyle, true);
  t.equal(new Handshake(catalog, { shuttingDown: () => false }).acceptClientFlags(0), undefined);
});

t.test('EXPORT_NAME known export: size + flags + 124 zeroes, or 10 bytes with NO_ZEROES', async (t) => {
  {
    const { h, std } = hs(FIXED);
    const s = opt(h, Opt.EXPORT_NAME, Buffer.from('disk'));
    t.equal(s.next, 'transmission');
    const r = wire.decodeExportNameReply(Buffer.concat(s.send), false);
    t.equal(r.size, BigInt(std.disk.device.size));
    t.equal(r.flags & TxFlag.HAS_FLAGS, TxFlag.HAS_FLAGS);
    t.equal(r.flags & TxFlag.SEND_DF, 0, 'no DF without structured replies');
    if (s.next === 'transmission') {
      t.equal(s.session.export, std.disk);
      t.equal(s.session.structuredReplies, false);
      t.equal(s.session.transmissionFlags, r.flags);
      t.same(s.session.options, ['EXPORT_NAME']);
    }
  }
  {
    const { h } = hs(FIXED | NOZ);
    const s = opt(h, Opt.EXPORT_NAME, Buffer.from('ro'));
    t.equal(s.next, 'transmission');
    const r = wire.decodeExportNameReply(Buffer.concat(s.send), true);
    t.equal(r.size, 2n ** 30n + 4096n);
    t.ok(r.flags & TxFlag.READ_ONLY);
  }
  {
    // non-fixed newstyle: EXPORT_NAME is the one option allowed; empty name = default export
    const { h, std } = hs(0);
    const s = opt(h, Opt.EXPORT_NAME);
    t.equal(s.next, 'transmission');
    if (s.next === 'transmission') t.equal(s.session.export, std.disk);
  }
});

t.test('EXPORT_NAME unknown export: hard disconnect, nothing sent', async (t) => {
  const { h } = hs();
  const s = opt(h, Opt.EXPORT_NAME, Buffer.from('nope'));
  t.equal(s.next, 'drop');
  t.same(s.send, []);
});

t.test('without fixed newstyle any other option drops the connection', async (t) => {
  for (const o of [Opt.LIST, Opt.GO, Opt.ABORT, Opt.STRUCTURED_REPLY, 99]) {
    const { h } = hs(0);
    const s = opt(h, o);
    t.equal(s.next, 'drop', `option ${o}`);
    t.same(s.send, []);
  }
});

t.test('ABORT: ACK then close, payload ignored', async (t) => {
  const { h } = hs();
  const s = opt(h, Opt.ABORT, Buffer.from('junk'));
  t.equal(s.next, 'abort');
  t.same(
    replies(s).map((r) => [r.option, r.type, r.data.length]),
    [[Opt.ABORT, Rep.ACK, 0]],
  );
});

t.test('LIST: one REP_SERVER per export then ACK; data → ERR_INVALID', async (t) => {
  const { h } = hs();
  const s = opt(h, Opt.LIST);
  t.equal(s.next, 'continue');
  const r = replies(s);
  t.same(
    r.map((x) => x.type),
    [Rep.SERVER, Rep.SERVER, Rep.ACK],
  );
  t.ok(r.every((x) => x.option === Opt.LIST));
  t.same(
    r.slice(0, 2).map((x) => wire.decodeServerEntry(x.data)),
    [
      { name: 'disk', description: 'test disk' },
      { name: 'ro', description: '' },
    ],
  );
  t.same(types(opt(h, Opt.LIST, Buffer.from([0]))), [Rep.ERR_INVALID]);
});

t.test('INFO then GO give identical information', async (t) => {
  const { h, std } = hs();
  t.same(types(opt(h, Opt.STRUCTURED_REPLY)), [Rep.ACK]);
  const payload = wire.infoPayload('disk', [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE, 0x7777]);
  const info = opt(h, Opt.INFO, payload);
  t.equal(info.next, 'continue');
  const go = opt(h, Opt.GO, payload);
  t.equal(go.next, 'transmission');
  const a = replies(info);
  const b = replies(go);
  t.ok(a.every((r) => r.option === Opt.INFO));
  t.ok(b.every((r) => r.option === Opt.GO));
  t.same(
    a.map((r) => [r.type, r.data.toString('hex')]),
    b.map((r) => [r.type, r.data.toString('hex')]),
  );
  t.same(
    a.map((r) => r.type),
    [Rep.INFO, Rep.INFO, Rep.INFO, Rep.INFO, Rep.ACK],
  );
  const infos = a.slice(0, 4).map((r) => wire.decodeInfo(r.data));
  t.same(infos[0], {
    info: 'export',
    size: BigInt(std.disk.device.size),
    flags: go.next === 'transmission' ? go.session.transmissionFlags : -1,
  });
  t.same(infos[1], { info: 'name', name: 'disk' });
  t.same(infos[2], { info: 'description', text: 'test disk' });
  t.same(infos[3], { info: 'blockSize', minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 });
  if (go.next === 'transmission') {
    t.equal(go.session.structuredReplies, true);
    t.ok(go.session.transmissionFlags & TxFlag.SEND_DF, 'DF advertised with structured replies');
    t.same(go.session.options, ['STRUCTURED_REPLY', 'INFO', 'GO']);
  }
});

t.test('GO on the default export with no info requests still sends INFO_EXPORT; block size max clamped', async (t) => {
  const { h } = hs();
  const s = opt(h, Opt.GO, wire.infoPayload('', []));
  t.equal(s.next, 'transmission');
  t.same(types(s), [Rep.INFO, Rep.ACK]);
  t.equal(wire.decodeInfo(replies(s)[0].data).info, 'export');
  const ro = hs().h;
  const s2 = opt(ro, Opt.GO, wire.infoPayload('ro', [Info.BLOCK_SIZE, Info.DESCRIPTION]));
  const r2 = replies(s2).map((r) => (r.type === Rep.INFO ? wire.decodeInfo(r.data) : r.type));
  t.same(r2[1], { info: 'blockSize', minimum: 512, preferred: 4096, maximum: MAX_PAYLOAD }, 'max clamped to MAX_PAYLOAD');
  t.equal(r2.length, 3, 'no DESCRIPTION for an export without one');
  const e = r2[0] as { info: string; flags: number };
  t.ok(e.flags & TxFlag.READ_ONLY);
  t.notOk(e.flags & (TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES | TxFlag.SEND_FAST_ZERO), 'no write-type features read-only');
});

t.test('GO / INFO with an unknown export → ERR_UNKNOWN and haggling continues', async (t) => {
  const { h } = hs();
  for (const o of [Opt.GO, Opt.INFO]) {
    const s = opt(h, o, wire.infoPayload('missing', [Info.NAME]));
    t.equal(s.next, 'continue');
    t.same(types(s), [Rep.ERR_UNKNOWN]);
    t.equal(replies(s)[0].option, o);
  }
  t.equal(opt(h, Opt.GO, wire.infoPayload('disk')).next, 'transmission');
});

t.test('malformed INFO/GO payloads → ERR_INVALID', async (t) => {
  const good = wire.infoPayload('disk', [Info.NAME]);
  const cases: Record<string, Buffer> = {
    empty: Buffer.alloc(0),
    'name length truncated': Buffer.from([0, 0]),
    'name longer than payload': Buffer.from([0, 0, 0, 9, 0x61]),
    'count missing': good.subarray(0, 8),
    'count says 2, one given': Buffer.concat([good.subarray(0, 8), Buffer.from([0, 2, 0, 1])]),
    'trailing byte': Buffer.concat([good, Buffer.from([0])]),
    'name over 4096 bytes': wire.infoPayload('x'.repeat(4097)),
    'name length 0xffffffff': Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0]),
  };
  for (const [name, data] of Object.entries(cases)) {
    for (const o of [Opt.INFO, Opt.GO]) {
      const { h } = hs();
      const s = opt(h, o, data);
      t.equal(s.next, 'continue', `${name} (${o})`);
      t.same(types(s), [Rep.ERR_INVALID], `${name} (${o})`);
    }
  }
  t.same(
    types(opt(hs().h, Opt.INFO, wire.infoPayload('x'.repeat(4096).replace(/^x/, 'y')))),
    [Rep.ERR_UNKNOWN],
    '4096-byte name accepted by the decoder',
  );
});

t.test('STRUCTURED_REPLY: ACK once, then ERR_INVALID; with data → ERR_INVALID', async (t) => {
  const { h } = hs();
  t.same(types(opt(h, Opt.STRUCTURED_REPLY, Buffer.from([1]))), [Rep.ERR_INVALID]);
  t.same(types(opt(h, Opt.STRUCTURED_REPLY)), [Rep.ACK]);
  t.same(types(opt(h, Opt.STRUCTURED_REPLY)), [Rep.ERR_INVALID]);
  const go = opt(h, Opt.GO, wire.infoPayload('disk'));
  t.ok(go.next === 'transmission' && go.session.structuredReplies);
});

t.test('SET_META_CONTEXT before STRUCTURED_REPLY → ERR_INVALID; LIST too', async (t) => {
  const { h } = hs();
  t.same(types(opt(h, Opt.SET_META_CONTEXT, wire.metaPayload('disk', ['base:allocation']))), [Rep.ERR_INVALID]);
  t.same(types(opt(h, Opt.LIST_META_CONTEXT, wire.metaPayload('disk', []))), [Rep.ERR_INVALID]);
  const go = opt(h, Opt.GO, wire.infoPayload('disk'));
  t.ok(go.next === 'transmission' && go.session.metaContexts.size === 0);
});

t.test('LIST_META_CONTEXT with 0 queries lists base:allocation (id 0); base: wildcard', async (t) => {
  const { h } = hs();
  opt(h, Opt.STRUCTURED_REPLY);
  for (const q of [[], ['base:'], ['base:allocation'], ['qemu:dirty-bitmap:x', 'base:allocation']]) {
    const s = opt(h, Opt.LIST_META_CONTEXT, wire.metaPayload('disk', q));
    t.same(types(s), [Rep.META_CONTEXT, Rep.ACK], JSON.stringify(q));
    t.same(wire.decodeMetaContext(replies(s)[0].data), { id: 0, name: 'base:allocation' });
  }
  const none = opt(h, Opt.LIST_META_CONTEXT, wire.metaPayload('disk', ['qemu:allocation-depth']));
  t.same(types(none), [Rep.ACK], 'unknown namespace ignored');
  t.same(types(opt(h, Opt.LIST_META_CONTEXT, wire.metaPayload('zzz', []))), [Rep.ERR_UNKNOWN]);
  t.same(types(opt(h, Opt.LIST_META_CONTEXT, Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]))), [Rep.ERR_INVALID], 'query count 1, no query');
  t.same(
    types(opt(h, Opt.LIST_META_CONTEXT, Buffer.concat([wire.metaPayload('disk', []), Buffer.from([7])]))),
    [Rep.ERR_INVALID],
    'trailing bytes',
  );
  const go = opt(h, Opt.GO, wire.infoPayload('disk'));
  t.ok(go.next === 'transmission' && go.session.metaContexts.size === 0, 'LIST selects nothing');
});

t.test('SET_META_CONTEXT selects base:allocation for its export; replaces previous selection', async (t) => {
  {
    const { h } = hs();
    opt(h, Opt.STRUCTURED_REPLY);
    const s = opt(h, Opt.SET_META_CONTEXT, wire.metaPayload('disk', ['base:allocation']));
    t.same(types(s), [Rep.META_CONTEXT, Rep.ACK]);
    t.same(wire.decodeMetaContext(replies(s)[0].data), { id: BASE_ALLOCATION_ID, name: 'base:allocation' });
    const go = opt(h, Opt.GO, wire.infoPayload('', []));
    t.ok(go.next === 'transmission');
    if (go.next === 'transmission')
      t.same([...go.session.metaContexts], [[BASE_ALLOCATION_ID, 'base:allocation']], 'default name reaches the same export');
  }
  {
    const { h } = hs();
    opt(h, Opt.STRUCTURED_REPLY);
    t.same(types(opt(h, Opt.SET_META_CONTEXT, wire.metaPayload('disk', ['base:']))), [Rep.ACK], 'base: ignored in SET');
    t.same(types(opt(h, Opt.SET_META_CONTEXT, wire.metaPayload('disk', []))), [Rep.ACK], 'zero queries select nothing');
    opt(h, Opt.SET_META_CONTEXT, wire.metaPayload('disk', ['base:allocation']));
    t.same(types(opt(h, Opt.SET_META_CONTEXT, Buffer.from([1]))), [Rep.ERR_INVALID]);
    const go = opt(h, Opt.GO, wire.infoPayload('disk'));
    t.ok(go.next === 'transmission' && go.session.metaContexts.size === 0, 'failed SET still cleared the selection');
  }
  {
    const { h } = hs();
    opt(h, Opt.STRUCTURED_REPLY);
    opt(h, Opt.SET_META_CONTEXT, wire.metaPayload('ro', ['base:allocation']));
    const go = opt(h, Opt.GO, wire.infoPayload('disk'));
    t.ok(go.next === 'transmission' && go.session.metaContexts.size === 0, 'contexts chosen for another export do not apply');
  }
});

t.test('unknown options → ERR_UNSUP; STARTTLS without TLS configured → ERR_UNSUP or ERR_POLICY; haggling continues', async (t) => {
  const { h } = hs();
  for (const o of [Opt.PEEK_EXPORT, Opt.EXTENDED_HEADERS, 0, 12, 0x7fffffff, 0xffffffff]) {
    const s = opt(h, o, Buffer.from('payload'));
    t.equal(s.next, 'continue');
    const r = replies(s);
    t.same(
      r.map((x) => [x.option, x.type]),
      [[o, Rep.ERR_UNSUP]],
      `option ${o}`,
    );
  }
  const tls = types(opt(h, Opt.STARTTLS));
  t.equal(tls.length, 1);
  t.ok(tls[0] === Rep.ERR_UNSUP || tls[0] === Rep.ERR_POLICY, `STARTTLS refused (${tls[0].toString(16)})`);
  t.equal(opt(h, Opt.GO, wire.infoPayload('disk')).next, 'transmission');
});

t.test(`option count limit: ${MAX_OPTIONS} options answered, the next one drops`, async (t) => {
  const { h } = hs();
  for (let i = 0; i < MAX_OPTIONS; i++) {
    const s = opt(h, Opt.LIST);
    if (s.next !== 'continue') return t.fail(`option ${i + 1} was not answered`);
  }
  const s = opt(h, Opt.LIST);
  t.equal(s.next, 'drop');
  t.same(s.send, []);
});

t.test('oversized option: ERR_TOO_BIG with fixed newstyle, drop for EXPORT_NAME or non-fixed', async (t) => {
  const { h } = hs();
  const s = h.oversized(Opt.GO, 1 << 20);
  t.equal(s.next, 'continue');
  t.same(
    replies(s).map((r) => [r.option, r.type]),
    [[Opt.GO, Rep.ERR_TOO_BIG]],
  );
  t.equal(h.oversized(Opt.EXPORT_NAME, 1 << 20).next, 'drop');
  t.equal(hs(0).h.oversized(Opt.LIST, 1 << 20).next, 'drop');
});

t.test('oversized options count towards the option limit', async (t) => {
  // Otherwise a client can keep a connection in haggling forever (one ERR_TOO_BIG per 16 KiB sent),
  // bounded only by the handshake timeout.
  const { h } = hs();
  let last: HandshakeStep | undefined;
  for (let i = 0; i < MAX_OPTIONS + 5; i++) {
    last = h.oversized(Opt.INFO, 1 << 20);
    if (last.next === 'drop') break;
  }
  t.equal(last?.next, 'drop', `dropped within ${MAX_OPTIONS + 5} oversized options`);
});

t.test('shutting down: ERR_SHUTDOWN for options, ACK for ABORT, drop for EXPORT_NAME', async (t) => {
  const { h, stop } = hs();
  t.same(types(opt(h, Opt.LIST)), [Rep.SERVER, Rep.SERVER, Rep.ACK]);
  stop();
  for (const o of [Opt.LIST, Opt.GO, Opt.INFO, Opt.STRUCTURED_REPLY, Opt.SET_META_CONTEXT, 99]) {
    const s = opt(h, o, wire.infoPayload('disk'));
    t.equal(s.next, 'continue');
    t.same(
      replies(s).map((r) => [r.option, r.type]),
      [[o, Rep.ERR_SHUTDOWN]],
      `option ${o}`,
    );
  }
  t.equal(opt(h, Opt.EXPORT_NAME, Buffer.from('disk')).next, 'drop');
  const a = opt(h, Opt.ABORT);
  t.equal(a.next, 'abort');
  t.same(types(a), [Rep.ACK]);
});

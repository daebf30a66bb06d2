/**
 * ClientParser and ByteQueue: a whole client session encoded by the test-side codec, fed in every
 * possible split, must yield the same messages; 64-bit offsets; pause/resume; discard; oversized options.
 */
import t from 'tap';
import { ClientParser } from '../../protocol/parser';
import { ByteQueue } from '../../protocol/byte-queue';
import { Cmd, CmdFlag, Info, MAX_OPTION_LENGTH, MAX_PAYLOAD, Opt } from '../../protocol/constants';
import type { ClientMessage } from '../../protocol/messages';
import * as wire from '../helpers/nbd-wire';

/** Messages with Buffers turned into hex so t.same compares content, not identity. */
type Plain = Record<string, unknown>;
function plain(m: ClientMessage): Plain {
  const o: Plain = { ...m };
  for (const [k, v] of Object.entries(o)) {
    if (Buffer.isBuffer(v)) o[k] = v.toString('hex');
    else if (typeof v === 'function' || v === undefined) delete o[k]; // e.g. a pooled payload's release()
  }
  return o;
}

/** Feed chunks to a parser that behaves like Connection: GO/EXPORT_NAME switch to transmission. */
function parseChunks(chunks: Buffer[]): Plain[] {
  const out: Plain[] = [];
  const p: ClientParser = new ClientParser((m) => {
    out.push(plain(m));
    if (m.kind === 'option' && (m.option === Opt.GO || m.option === Opt.EXPORT_NAME)) p.setPhase('transmission');
  });
  for (const c of chunks) p.push(c);
  return out;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const writeData = Buffer.from(Array.from({ length: 700 }, (_, i) => (i * 7 + 3) & 0xff));
const srData = Buffer.alloc(0);
const listMeta = wire.metaPayload('disk', []);
const infoData = wire.infoPayload('disk', [Info.BLOCK_SIZE, Info.DESCRIPTION]);
const setMeta = wire.metaPayload('disk', ['base:allocation']);
const goData = wire.infoPayload('', [Info.BLOCK_SIZE]);

const sessionParts: Buffer[] = [
  wire.clientFlags(3),
  wire.option(Opt.STRUCTURED_REPLY, srData),
  wire.option(Opt.LIST_META_CONTEXT, listMeta),
  wire.option(Opt.INFO, infoData),
  wire.option(Opt.SET_META_CONTEXT, setMeta),
  wire.option(Opt.GO, goData),
  wire.request({ type: Cmd.READ, cookie: 1n, offset: 0, length: 4096 }),
  wire.request({ type: Cmd.WRITE, flags: CmdFlag.FUA, cookie: 0xfedcba9876543210n, offset: 2 ** 32 + 4096, payload: writeData }),
  wire.request({ type: Cmd.FLUSH, cookie: 3n }),
  wire.request({ type: Cmd.WRITE, cookie: 4n, offset: 512, payload: Buffer.from('z') }),
  wire.request({ type: Cmd.TRIM, cookie: 5n, offset: 2 ** 53 - 8192, length: 8192 }),
  wire.request({ type: Cmd.READ, flags: CmdFlag.DF, cookie: 6n, offset: 2 ** 40, length: 1 }),
  wire.request({ type: Cmd.BLOCK_STATUS, flags: CmdFlag.REQ_ONE, cookie: 7n, offset: 0, length: 0xffffffff }),
  wire.request({ type: Cmd.DISC, cookie: 8n }),
];
const session = Buffer.concat(sessionParts);

const req = (type: number, flags: number, cookie: bigint, offset: number, length: number, payload?: Buffer): Plain => ({
  kind: 'request',
  flags,
  type,
  cookieHi: Number(cookie >> 32n),
  cookieLo: Number(cookie & 0xffffffffn),
  offset,
  length,
  ...(payload ? { payload: payload.toString('hex') } : {}),
});
const expected: Plain[] = [
  { kind: 'clientFlags', flags: 3 },
  { kind: 'option', option: Opt.STRUCTURED_REPLY, data: '' },
  { kind: 'option', option: Opt.LIST_META_CONTEXT, data: listMeta.toString('hex') },
  { kind: 'option', option: Opt.INFO, data: infoData.toString('hex') },
  { kind: 'option', option: Opt.SET_META_CONTEXT, data: setMeta.toString('hex') },
  { kind: 'option', option: Opt.GO, data: goData.toString('hex') },
  req(Cmd.READ, 0, 1n, 0, 4096),
  req(Cmd.WRITE, CmdFlag.FUA, 0xfedcba9876543210n, 2 ** 32 + 4096, 700, writeData),
  req(Cmd.FLUSH, 0, 3n, 0, 0),
  req(Cmd.WRITE, 0, 4n, 512, 1, Buffer.from('z')),
  req(Cmd.TRIM, 0, 5n, 2 ** 53 - 8192, 8192),
  req(Cmd.READ, CmdFlag.DF, 6n, 2 ** 40, 1),
  req(Cmd.BLOCK_STATUS, CmdFlag.REQ_ONE, 7n, 0, 0xffffffff),
  req(Cmd.DISC, 0, 8n, 0, 0),
];

t.test('whole session in one chunk', async (t) => {
  t.same(parseChunks([session]), expected);
  // the expectation is strict: a one-byte change in the stream is noticed
  const changed = Buffer.from(session);
  changed[session.length - 5] ^= 1;
  t.notSame(parseChunks([changed]), expected);
});

t.test('split into two at every byte boundary', async (t) => {
  let bad = -1;
  for (let i = 0; i <= session.length; i++) {
    const got = parseChunks([session.subarray(0, i), session.subarray(i)]);
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      bad = i;
      t.same(got, expected, `split at ${i}`);
      break;
    }
  }
  t.equal(bad, -1, `all ${session.length + 1} splits identical`);
});

t.test('split into three at every pair of boundaries in the header-dense region', async (t) => {
  // all (i, j) pairs over the option + first requests region (payload bytes are not interesting)
  const end = Math.min(session.length, 400);
  let failures = 0;
  for (let i = 0; i <= end && failures === 0; i++) {
    for (let j = i; j <= end; j += 3) {
      const got = parseChunks([session.subarray(0, i), session.subarray(i, j), session.subarray(j)]);
      if (JSON.stringify(got) !== JSON.stringify(expected)) {
        failures++;
        t.same(got, expected, `split at ${i},${j}`);
        break;
      }
    }
  }
  t.equal(failures, 0);
});

t.test('byte by byte', async (t) => {
  const chunks = Array.from(session, (_, i) => session.subarray(i, i + 1));
  t.same(parseChunks(chunks), expected);
});

t.test('random chunkings (seeded)', async (t) => {
  const seed = 0x5eed;
  const rnd = mulberry32(seed);
  for (let round = 0; round < 500; round++) {
    const chunks: Buffer[] = [];
    let at = 0;
    while (at < session.length) {
      const n = rnd() < 0.3 ? 1 + Math.floor(rnd() * 4) : Math.floor(rnd() * 200);
      chunks.push(session.subarray(at, at + n));
      at += n;
    }
    const got = parseChunks(chunks);
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      t.same(got, expected, `seed ${seed} round ${round} sizes ${chunks.map((c) => c.length).join(',')}`);
      return;
    }
  }
  t.pass('500 random chunkings identical');
});

t.test('64-bit offsets: exact up to 2^53, larger values stay above any export', async (t) => {
  const offsets = [2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 48 + 12345, 2 ** 53 - 1];
  const p = new ClientParser(() => undefined);
  const got: number[] = [];
  const parser = new ClientParser((m) => {
    if (m.kind === 'request') got.push(m.offset);
  });
  parser.setPhase('transmission');
  for (const off of offsets) parser.push(wire.request({ type: Cmd.READ, offset: off, length: 1 }));
  t.same(got, offsets);
  got.length = 0;
  parser.push(wire.request({ type: Cmd.READ, offset: 2n ** 64n - 1n, length: 1 }));
  parser.push(wire.request({ type: Cmd.READ, offset: 2n ** 53n + 1n, length: 1 }));
  t.ok(got[0] >= 2 ** 63, 'u64 max parses as a huge number');
  t.ok(got[1] >= 2 ** 53, 'above 2^53 never rounds below 2^53');
  t.equal(p.currentPhase, 'clientFlags');
});

t.test('pause and resume mid-buffer', async (t) => {
  const out: Plain[] = [];
  let pauseEach = true;
  const p: ClientParser = new ClientParser((m) => {
    out.push(plain(m));
    if (m.kind === 'option' && m.option === Opt.GO) p.setPhase('transmission');
    if (pauseEach) p.pause();
  });
  p.push(session);
  t.equal(out.length, 1, 'paused after the first message');
  t.equal(p.buffered, session.length - 4);
  p.push(Buffer.alloc(0));
  t.equal(out.length, 1, 'push while paused does not parse');
  for (let i = 2; i <= expected.length; i++) {
    p.resume();
    t.equal(out.length, i, `resume ${i - 1} yields exactly one more message`);
  }
  p.resume();
  t.equal(out.length, expected.length);
  t.same(out, expected);
  t.equal(p.buffered, 0);

  // pause then resume from inside the callback (re-entrant) must not lose or duplicate messages
  out.length = 0;
  pauseEach = false;
  const q: ClientParser = new ClientParser((m) => {
    out.push(plain(m));
    if (m.kind === 'option' && m.option === Opt.GO) q.setPhase('transmission');
    q.pause();
    q.resume();
  });
  q.push(session);
  t.same(out, expected);

  // resume while paused with bytes arriving in pieces
  out.length = 0;
  const r: ClientParser = new ClientParser((m) => {
    out.push(plain(m));
    if (m.kind === 'option' && m.option === Opt.GO) r.setPhase('transmission');
  });
  r.pause();
  for (let i = 0; i < session.length; i += 37) r.push(session.subarray(i, i + 37));
  t.equal(out.length, 0);
  r.resume();
  t.same(out, expected);
});

t.test('ByteQueue: take across chunks, peek across chunks, discard across chunks', async (t) => {
  const q = new ByteQueue();
  q.push(Buffer.from('0102', 'hex'));
  q.push(Buffer.from('03', 'hex'));
  q.push(Buffer.from('0405060708', 'hex'));
  t.equal(q.length, 8);
  t.equal(q.peekUInt32(0), 0x01020304);
  t.equal(q.peekUInt32(1), 0x02030405);
  t.equal(q.peekUInt32(3), 0x04050607);
  t.same(q.take(3), Buffer.from('010203', 'hex'));
  t.equal(q.peekUInt32(0), 0x04050607);
  q.discard(2);
  t.equal(q.length, 3);
  t.same(q.take(3), Buffer.from('060708', 'hex'));

  // discard more than is buffered: the rest is skipped as it arrives, over several chunks
  q.push(Buffer.from('aabb', 'hex'));
  q.discard(10); // 2 now, 8 later
  t.equal(q.length, 0);
  t.equal(q.discarding, 8);
  q.push(Buffer.from('010203', 'hex'));
  t.equal(q.discarding, 5);
  q.push(Buffer.alloc(0));
  q.push(Buffer.from('0405', 'hex'));
  t.equal(q.discarding, 3);
  q.push(Buffer.from('060708c0ffee', 'hex'));
  t.equal(q.discarding, 0);
  t.equal(q.length, 3);
  t.same(q.take(3), Buffer.from('c0ffee', 'hex'));
  t.same(q.take(0), Buffer.alloc(0));

  // exact-length discard leaves no residue
  q.discard(4);
  q.push(Buffer.from('01020304', 'hex'));
  t.equal(q.length, 0);
  t.equal(q.discarding, 0);
  q.push(Buffer.from('05', 'hex'));
  t.equal(q.length, 1);
});

t.test('ByteQueue against a reference model (random operations)', async (t) => {
  const rnd = mulberry32(77);
  const q = new ByteQueue();
  let model: number[] = [];
  let modelDiscard = 0;
  let counter = 0;
  for (let step = 0; step < 20000; step++) {
    const op = rnd();
    if (op < 0.45) {
      const n = Math.floor(rnd() * 9);
      const c = Buffer.from(Array.from({ length: n }, () => counter++ & 0xff));
      q.push(c);
      let arr = [...c];
      const skip = Math.min(modelDiscard, arr.length);
      modelDiscard -= skip;
      arr = arr.slice(skip);
      model = model.concat(arr);
    } else if (op < 0.7) {
      const n = Math.floor(rnd() * (model.length + 1));
      const got = [...q.take(n)];
      const want = model.splice(0, n);
      if (JSON.stringify(got) !== JSON.stringify(want)) return t.fail(`take(${n}) at step ${step}`);
    } else if (op < 0.85) {
      if (model.length >= 4) {
        const at = Math.floor(rnd() * (model.length - 3));
        const want = Buffer.from(model.slice(at, at + 4)).readUInt32BE(0);
        if (q.peekUInt32(at) !== want) return t.fail(`peek(${at}) at step ${step}`);
      }
    } else {
      const n = Math.floor(rnd() * 12);
      q.discard(n);
      const now = Math.min(n, model.length);
      model.splice(0, now);
      modelDiscard += n - now;
    }
    if (q.length !== model.length || q.discarding !== modelDiscard) {
      return t.fail(`length/discarding mismatch at step ${step}`);
    }
  }
  t.pass('20000 random operations match the model');
});

t.test('oversized option is skipped and the stream stays in sync at every split', async (t) => {
  const big = Buffer.alloc(MAX_OPTION_LENGTH + 1, 0x41);
  const stream = Buffer.concat([
    wire.clientFlags(1),
    wire.option(Opt.GO, big),
    wire.option(Opt.LIST),
    wire.option(Opt.INFO, Buffer.alloc(MAX_OPTION_LENGTH, 0x42)), // exactly the limit: buffered
    wire.option(Opt.ABORT),
  ]);
  const want: Plain[] = [
    { kind: 'clientFlags', flags: 1 },
    { kind: 'oversizedOption', option: Opt.GO, length: MAX_OPTION_LENGTH + 1 },
    { kind: 'option', option: Opt.LIST, data: '' },
    { kind: 'option', option: Opt.INFO, data: Buffer.alloc(MAX_OPTION_LENGTH, 0x42).toString('hex') },
    { kind: 'option', option: Opt.ABORT, data: '' },
  ];
  t.same(parseChunks([stream]), want);
  const boundaries = [...Array(64).keys(), ...Array.from({ length: 200 }, (_, i) => 4 + 16 + MAX_OPTION_LENGTH - 100 + i)];
  for (const i of boundaries) {
    const got = parseChunks([stream.subarray(0, i), stream.subarray(i)]);
    if (JSON.stringify(got) !== JSON.stringify(want)) return t.same(got, want, `split at ${i}`);
  }
  const rnd = mulberry32(9);
  for (let round = 0; round < 50; round++) {
    const chunks: Buffer[] = [];
    for (let at = 0; at < stream.length;) {
      const n = 1 + Math.floor(rnd() * 3000);
      chunks.push(stream.subarray(at, at + n));
      at += n;
    }
    const got = parseChunks(chunks);
    if (JSON.stringify(got) !== JSON.stringify(want)) return t.same(got, want, `round ${round}`);
  }
  t.pass('in sync');
});

t.test('violations: bad option magic, bad request magic, oversized WRITE; nothing parsed after', async (t) => {
  const badOpt = Buffer.concat([wire.clientFlags(1), Buffer.from('IHAVEOPX'), Buffer.alloc(8), wire.option(Opt.LIST)]);
  const a = parseChunks([badOpt]);
  t.equal(a.length, 2);
  t.equal(a[1].kind, 'violation');

  const p1: Plain[] = [];
  const parser = new ClientParser((m) => p1.push(plain(m)));
  parser.setPhase('transmission');
  parser.push(Buffer.concat([Buffer.alloc(28, 0x11), wire.request({ type: Cmd.FLUSH })]));
  t.equal(p1.length, 1);
  t.equal(p1[0].kind, 'violation');
  t.equal(parser.currentPhase, 'closed');
  parser.push(wire.request({ type: Cmd.FLUSH }));
  t.equal(p1.length, 1, 'closed parser ignores input');

  const p2: Plain[] = [];
  const parser2 = new ClientParser((m) => p2.push(plain(m)));
  parser2.setPhase('transmission');
  // header only: the violation must be reported without waiting for 32 MiB of payload
  parser2.push(wire.request({ type: Cmd.WRITE, length: MAX_PAYLOAD + 1 }));
  t.equal(p2.length, 1);
  t.equal(p2[0].kind, 'violation');

  // a WRITE of exactly MAX_PAYLOAD waits for its payload
  const p3: Plain[] = [];
  const parser3 = new ClientParser((m) => p3.push(plain(m)));
  parser3.setPhase('transmission');
  parser3.push(wire.request({ type: Cmd.WRITE, length: MAX_PAYLOAD }));
  t.equal(p3.length, 0);
  t.equal(parser3.buffered, 28);
});

t.test('non-WRITE commands never consume a payload, whatever their length', async (t) => {
  for (const type of [Cmd.READ, Cmd.TRIM, Cmd.WRITE_ZEROES, Cmd.CACHE, Cmd.BLOCK_STATUS, 8, 0xffff]) {
    const out: Plain[] = [];
    const p = new ClientParser((m) => out.push(plain(m)));
    p.setPhase('transmission');
    p.push(Buffer.concat([wire.request({ type, length: 0xffffffff }), wire.request({ type: Cmd.FLUSH, cookie: 9n })]));
    t.equal(out.length, 2, `type ${type}`);
    t.equal(out[1].type, Cmd.FLUSH);
  }
});

t.test('large WRITEs: header-sized reads, then the payload straight into its buffer (as Connection does)', async (t) => {
  const out: ClientMessage[] = [];
  const p = new ClientParser((m) => out.push(m));
  p.setPhase('transmission');
  t.equal(p.headerBytesMissing(), 28, 'at a request boundary: a whole header is missing');
  t.notOk(p.expectingLargeWrite);
  const payloads = [Buffer.alloc(1 << 20, 1), Buffer.alloc(256 << 10, 2)];
  const stream = Buffer.concat([
    wire.request({ type: Cmd.WRITE, offset: 0n, cookie: 1n, payload: payloads[0] }),
    wire.request({ type: Cmd.WRITE, offset: 1n << 20n, cookie: 2n, payload: payloads[1] }),
    wire.request({ type: Cmd.READ, offset: 0n, length: 4096, cookie: 3n }),
    wire.request({ type: Cmd.WRITE, offset: 0n, cookie: 4n, payload: Buffer.alloc(4096, 3) }),
  ]);
  // A reader in the style of Connection's large-read mode: the direct target when there is one, else the
  // missing header bytes when a large write is expected, else up to 100,000 bytes.
  let at = 0;
  let directReads = 0;
  let headerReads = 0;
  while (at < stream.length) {
    const target = p.directTarget();
    if (target) {
      const n = Math.min(target.length, 200_000, stream.length - at);
      stream.copy(target, 0, at, at + n);
      at += n;
      directReads++;
      p.directFilled(n);
      continue;
    }
    const missing = p.expectingLargeWrite ? p.headerBytesMissing() : 0;
    if (missing > 0) headerReads++;
    const n = Math.min(missing > 0 ? missing : 100_000, stream.length - at);
    p.push(Buffer.from(stream.subarray(at, at + n)));
    at += n;
  }
  t.same(
    out.map((m) => (m.kind === 'request' ? Number(m.cookieLo) : -1)),
    [1, 2, 3, 4],
    'every request, in order',
  );
  const writes = out.filter((m): m is Extract<ClientMessage, { kind: 'request' }> => m.kind === 'request' && m.type === Cmd.WRITE);
  t.ok(writes[0].payload!.equals(payloads[0]) && writes[1].payload!.equals(payloads[1]), 'payloads intact');
  t.ok(writes[2].payload!.equals(Buffer.alloc(4096, 3)));
  t.equal(headerReads, 2, 'after each large WRITE the next header is read on its own');
  t.ok(directReads >= 6, `most payload bytes went straight into the payload buffers (${directReads} direct reads)`);
  t.notOk(p.expectingLargeWrite, 'a small request ends large-write mode');
});

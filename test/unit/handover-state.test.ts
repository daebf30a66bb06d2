/**
 * Planned-restart state (protocol/handover.ts, ClientParser.takeUnparsed): the bytes a detached
 * connection had received but not parsed, handed to a fresh parser in the next process, must yield
 * exactly the requests the old parser would have produced, including a large WRITE whose payload was
 * half collected; and a session whose export changed is refused.
 */
import t from 'tap';
import { ClientParser } from '../../protocol/parser';
import { Cmd, REQUEST_HEADER_SIZE, REQUEST_MAGIC, TxFlag } from '../../protocol/constants';
import type { ClientMessage } from '../../protocol/messages';
import { restoreSession, type HandedOverSession } from '../../protocol/handover';
import { transmissionFlagsFor } from '../../protocol/handshake';
import type { BlockDevice, ExportCatalog, ExportEntry } from '../../protocol/block-device';

function request(type: number, cookie: number, offset: number, length: number, payload?: Buffer): Buffer {
  const h = Buffer.alloc(REQUEST_HEADER_SIZE);
  h.writeUInt32BE(REQUEST_MAGIC, 0);
  h.writeUInt32BE(type, 4);
  h.writeUInt32BE(0, 8);
  h.writeUInt32BE(cookie, 12);
  h.writeUInt32BE(Math.floor(offset / 2 ** 32), 16);
  h.writeUInt32BE(offset % 2 ** 32, 20);
  h.writeUInt32BE(length, 24);
  return payload ? Buffer.concat([h, payload]) : h;
}

function collect(): { p: ClientParser; got: ClientMessage[] } {
  const got: ClientMessage[] = [];
  const p = new ClientParser((m) => got.push(m));
  p.setPhase('transmission');
  return { p, got };
}

const summary = (m: ClientMessage): string =>
  m.kind === 'request'
    ? `${m.type}:${m.cookieLo}:${m.offset}:${m.length}:${m.payload ? m.payload.subarray(0, m.length).toString('hex').slice(0, 16) + m.payload.subarray(0, m.length).length : ''}`
    : m.kind;

t.test('unparsed bytes carry over at every split point, a half-collected large WRITE included', async (t) => {
  const big = Buffer.alloc(200 * 1024, 0xab);
  big.writeUInt32BE(0xdeadbeef, 1000);
  const stream = Buffer.concat([
    request(Cmd.READ, 1, 4096, 512),
    request(Cmd.WRITE, 2, 2 ** 33, big.length, big),
    request(Cmd.WRITE, 3, 0, 8, Buffer.from('abcdefgh')),
    request(Cmd.FLUSH, 4, 0, 0),
  ]);
  const whole = collect();
  whole.p.push(stream);
  const expected = whole.got.map(summary);
  t.equal(expected.length, 4, 'four requests in one piece');
  let checked = 0;
  for (const cut of [
    1,
    28,
    29,
    100,
    28 + 28 + 5,
    28 + 28 + 70_000,
    28 + 28 + big.length - 1,
    28 + 28 + big.length + 3,
    stream.length - 3,
  ]) {
    const old = collect();
    old.p.push(stream.subarray(0, cut));
    const pending = old.p.takeUnparsed();
    const next = collect();
    next.p.push(pending);
    next.p.push(stream.subarray(cut));
    t.same([...old.got, ...next.got].map(summary), expected, `cut at byte ${cut}: ${old.got.length} before, ${next.got.length} after`);
    checked++;
  }
  t.equal(checked, 9);
});

t.test('restoreSession refuses a changed export', async (t) => {
  const dev = {
    size: 1 << 20,
    capabilities: {
      writable: true,
      flush: true,
      fua: 'emulate',
      trim: true,
      zero: true,
      fastZero: false,
      cache: true,
      extents: true,
      multiConn: true,
      rotational: false,
    },
  } as unknown as BlockDevice;
  const entry: ExportEntry = { name: 'disk', description: 'd', device: dev, readOnly: false };
  const catalog: ExportCatalog = { lookup: (n) => (n === 'disk' || n === '' ? entry : undefined), list: () => [entry] };
  const flags = transmissionFlagsFor(entry, false);
  const rec: HandedOverSession = {
    export: 'disk',
    size: 1 << 20,
    transmissionFlags: flags,
    structuredReplies: false,
    metaContexts: [],
    pending: Buffer.from('xy').toString('base64'),
  };
  const ok = restoreSession(rec, catalog);
  t.ok(
    typeof ok !== 'string' && ok.pending.toString() === 'xy' && ok.session.transmissionFlags === flags,
    'same export: restored with its pending bytes',
  );
  t.match(restoreSession({ ...rec, export: 'gone' }, catalog), /not served any more/);
  t.match(restoreSession({ ...rec, size: 4096 }, catalog), /size changed/);
  t.match(restoreSession({ ...rec, transmissionFlags: flags | TxFlag.READ_ONLY }, catalog), /transmission flags changed/);
  t.match(restoreSession(null as unknown as HandedOverSession, catalog), /malformed/);
});

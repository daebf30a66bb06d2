/**
 * `remapd status`: --json fields after write-error remaps, a manual remap and a pending block; the
 * human view shows the same numbers; --watch redraws under a pseudo-terminal; the error when no
 * daemon listens names the socket and suggests --control.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, runPython, tempDir, REMAPD_BIN, MiB } from '../helpers';
import { createRemapSetup, startRemapd, qemuIo, qemuIoClean, remapctl } from '../helpers/remap-setup';
import { cleanEnv, holdNbdConnection, remapd, runUnderPty } from '../helpers/loopdev';

const B = 4096;

interface Status {
  export: string;
  size: number;
  pid: number;
  connections: number;
  setupUuid: string | null;
  blockSize: number;
  remaps: { total: number; byReason: Record<string, number> };
  pending: { count: number; offsets: number[] };
  spare: { path: string; used: number; free: number; dataBlocks: number; usedPercent: number };
  io: {
    totals: Record<string, { requests: number; errors: number; bytes: number }>;
    rates: Record<string, { requestsPerSecond: number; bytesPerSecond: number }>;
    windowSeconds: number;
  };
}

t.test('status --json, the human view and --watch', async (t) => {
  const s = await createRemapSetup(t, {
    mainBytes: 32 * MiB,
    spareBytes: 16 * MiB,
    faults: [
      { op: 'write', offset: 1 * MiB, length: 2 * B, error: 'EIO' }, // two write-error remaps
      { op: 'read', offset: 12 * MiB, length: B, error: 'EIO' }, // never reads: pending
    ],
  });
  const srv = await startRemapd(t, s);

  const w = await qemuIo(srv.uri, ['write -P 0x11 0 2M']);
  t.ok(qemuIoClean(w), 'qemu-io write over the failing range', { out: describe(w) });
  const r = await qemuIo(srv.uri, ['read 12M 4k']);
  t.notOk(qemuIoClean(r), 'reading the unreadable block fails', { out: describe(r) });
  const man = await remapctl(s, ['remap', String(8 * MiB)]);
  t.equal(man.code, 0, 'manual remap of one block', { out: describe(man) });

  const held = holdNbdConnection(t, srv.uri);
  t.ok(await held.connected, 'a client stays connected', { out: held.output() });

  const js = await remapctl(s, ['status', '--json']);
  t.equal(js.code, 0, 'status --json exits 0', { out: describe(js) });
  const st = JSON.parse(js.stdout) as Status;
  t.equal(st.pid, srv.pid, 'pid');
  t.equal(st.size, 32 * MiB, 'size');
  t.equal(st.blockSize, B, 'blockSize');
  t.equal(st.remaps.total, 3, 'remaps.total = 2 write errors + 1 manual');
  t.same(st.remaps.byReason, { 'write-error': 2, manual: 1 }, 'remaps.byReason');
  t.equal(st.pending.count, 1, 'pending.count');
  t.same(st.pending.offsets, [12 * MiB], 'pending.offsets: the unreadable block');
  t.equal(st.spare.used, 3, 'spare.used');
  t.ok(st.spare.dataBlocks > 3, 'spare.dataBlocks');
  t.equal(st.spare.free, st.spare.dataBlocks - 3, 'spare.free = dataBlocks - used');
  t.equal(st.spare.path, s.spare, 'spare.path');
  t.equal(st.connections, 1, 'connections: the held client');
  t.ok(
    st.io?.totals?.WRITE && st.io.totals.WRITE.requests > 0 && st.io.totals.WRITE.bytes >= 2 * MiB,
    'io.totals.WRITE counts the writes',
    { io: st.io },
  );
  t.ok(st.io?.rates?.WRITE && st.io.rates.WRITE.bytesPerSecond > 0, 'io.rates.WRITE: a write rate over the recent window', { io: st.io });
  t.ok(st.io?.totals?.READ && st.io.totals.READ.errors >= 1, 'io.totals.READ counts the failed read as an error', { io: st.io });

  const h = await remapctl(s, ['status']);
  t.equal(h.code, 0, 'human status exits 0', { out: describe(h) });
  const text = h.stdout;
  t.match(text, /^clients\s+1 connected$/m, 'human view: clients');
  t.match(text, /^remaps\s+3 \((write-error 2, manual 1|manual 1, write-error 2)\), block size 4096$/m, 'human view: remaps with reasons');
  t.match(text, new RegExp(`^pending\\s+1 at ${12 * MiB}$`, 'm'), 'human view: pending count and offset');
  t.match(
    text,
    new RegExp(
      `^spare\\s+${s.spare.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: 3 of ${st.spare.dataBlocks} blocks used \\(\\S+%\\), ${st.spare.free} free$`,
      'm',
    ),
    'human view: spare used/free',
  );
  t.match(text, /^io\s+read .*\/s .*write .*\/s/m, 'human view: io rates');
  t.notMatch(text, /undefined|NaN|\[object Object\]/, 'human view has no undefined/NaN');

  // --watch under a pseudo-terminal: clears the screen and redraws (at least twice).
  const pw = await runUnderPty(
    [process.execPath, REMAPD_BIN, 'status', '--watch', '--interval', '0.2', '--control', s.control],
    '\\x1b\\[2J\\x1b\\[H[^\\x1b]*clients',
    3,
    60,
  );
  t.ok(pw.matched, '--watch redrew at least twice (3 screens seen)', { out: pw.output.slice(-3000), exit: pw.exit });
  // eslint-disable-next-line no-control-regex -- terminal escape sequences are what is tested
  t.ok((pw.output.match(/\x1b\[2J/g) ?? []).length >= 2, '--watch clears the screen before each redraw');
  t.ok((pw.output.match(/^remaps\s+3 /gm) ?? []).length >= 2, 'each screen shows the numbers');

  await held.close();
});

t.test('status when no daemon runs: names the socket and suggests --control', async (t) => {
  const dir = tempDir(t, 'remapd-st-');
  const missing = join(dir, 'nope.ctl'); // nobody listens here
  const r = await remapd(['status', '--control', missing], { env: cleanEnv() });
  t.equal(r.code, 1, 'exit 1', { out: describe(r) });
  t.ok(r.stderr.includes(missing), 'names the socket path', { out: describe(r) });
  t.match(r.stderr, /--control/, 'suggests --control');
  t.equal(r.stdout, '', 'nothing on stdout');

  const rj = await remapd(['status', '--json', '--control', missing], { env: cleanEnv() });
  t.equal(rj.code, 1, '--json: exit 1 too');
  t.ok(rj.stderr.includes(missing) && /--control/.test(rj.stderr), '--json: same message on stderr', { out: describe(rj) });

  // A stale socket file (a daemon that died without removing it): ECONNREFUSED.
  const stale = join(dir, 'stale.ctl');
  const py = await runPython(`import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\n`, [stale]);
  t.equal(py.code, 0, 'stale socket created', { out: describe(py) });
  const rs = await remapd(['status', '--control', stale], { env: cleanEnv() });
  t.equal(rs.code, 1, 'stale socket: exit 1', { out: describe(rs) });
  t.ok(rs.stderr.includes(stale) && /--control/.test(rs.stderr), 'stale socket: names it and suggests --control', { out: describe(rs) });

  // Without --control the default socket is named.
  if (!existsSync('/run/remapd/disk.ctl')) {
    const rd = await remapd(['status'], { env: cleanEnv() });
    t.equal(rd.code, 1, 'default socket: exit 1', { out: describe(rd) });
    t.ok(rd.stderr.includes('/run/remapd/disk.ctl') && /--control/.test(rd.stderr), 'default socket: named, --control suggested', {
      out: describe(rd),
    });
  }
  // --watch gives up with the same message instead of looping.
  const rw = await remapd(['status', '--watch', '--interval', '0.1', '--control', missing], { env: cleanEnv(), timeoutMs: 30_000 });
  t.equal(rw.timedOut, false, '--watch does not hang when there is no daemon');
  t.ok(rw.code === 1 && rw.stderr.includes(missing), '--watch: exit 1 naming the socket', { out: describe(rw) });
});

/**
 * Resource limits: --max-connections (and the listen backlog sized for it), --max-outstanding-bytes
 * (daemon RSS stays bounded while a client pipelines requests without reading replies),
 * --handshake-timeout.
 */
import t from 'tap';
import { withServer, run, describe, logTail, RawConn, CMD, MiB, sleep } from '../helpers';
import { rssBytes } from '../helpers/tls-pki';
import { somaxconn, tcpBacklog, unixBacklog } from '../helpers/listen-backlog';

t.test('--max-connections 2: the third connection is closed at once, the first two keep working', async (t) => {
  const f = await withServer(t, { sizeBytes: 16 * MiB, extraArgs: ['--max-connections', '2'] });
  // The harness' readiness probe may still be counted for a moment after it hung up: a connection
  // refused for that reason is retried, until two are in.
  const admitted = async (): Promise<RawConn> => {
    for (let i = 0; ; i++) {
      const conn = await RawConn.open(f.server.socket);
      try {
        await conn.handshake(60_000);
        return conn;
      } catch (err) {
        conn.destroy();
        if (i >= 50) throw err;
        await sleep(200);
      }
    }
  };
  const a = await admitted();
  const b = await admitted();
  const c = await RawConn.open(f.server.socket);
  let greeting = true;
  try {
    await c.greeting(60_000);
  } catch {
    greeting = false;
  }
  t.notOk(greeting, 'connection 3 gets no greeting');
  t.ok(await c.waitClosed(60_000), 'connection 3 is closed by the daemon');
  t.match(f.server.log(), /connection limit reached/, 'the daemon logs the refusal', { log: logTail(f.server) });
  for (const [name, conn] of [
    ['1', a],
    ['2', b],
  ] as const) {
    const go = await conn.go('');
    t.equal(go.size, BigInt(16 * MiB), `connection ${name} still negotiates`);
    conn.sendRequest(CMD.READ, 0, 7n, 0n, 4096);
    const r = await conn.readSimpleReply(4096);
    t.equal(r.error, 0, `connection ${name} still reads`);
    t.equal(r.cookie, 7n, `connection ${name} reply cookie`);
  }
  a.destroy();
  await a.closedP;
  // one slot is free again: a real client gets in
  let info = await run('nbdinfo', ['--size', f.server.uri], { timeoutMs: 30_000 });
  for (let i = 0; i < 20 && info.code !== 0; i++) {
    await sleep(100);
    info = await run('nbdinfo', ['--size', f.server.uri], { timeoutMs: 30_000 });
  }
  t.equal(info.code, 0, 'after one closes, a new client is served', { out: describe(info) });
  b.destroy();
});

t.test('--max-outstanding-bytes: pipelined READs and WRITEs without reading replies keep the daemon RSS bounded', async (t) => {
  const f = await withServer(t, { sizeBytes: 64 * MiB, fill: 'random', extraArgs: ['--max-outstanding-bytes', '4M'] });
  const conn = await RawConn.open(f.server.socket);
  await conn.handshake();
  await conn.go('');
  await sleep(300);
  const base = rssBytes(f.server.pid);
  let peak = base;
  const sample = setInterval(() => {
    try {
      peak = Math.max(peak, rssBytes(f.server.pid));
    } catch {
      /* exited: asserted below */
    }
  }, 20);
  // 1 GiB of READ replies asked for, nothing read back yet
  const N = 1024;
  for (let i = 0; i < N; i++) conn.sendRequest(CMD.READ, 0, BigInt(i), BigInt((i % 64) * MiB), MiB);
  await sleep(3000);
  const midPeak = peak;
  // 64 MiB of WRITEs pipelined behind them, one per 1 MiB slot (no overlap: their order is not defined)
  const W = 64;
  const payload = (i: number): Buffer => Buffer.alloc(MiB, (i * 37 + 1) & 0xff);
  for (let i = 0; i < W; i++) conn.sendRequest(CMD.WRITE, 0, BigInt(N + i), BigInt((i % 64) * MiB), MiB, payload(i));
  await sleep(3000);
  t.ok(f.server.isRunning(), 'daemon alive while the client does not read');
  t.ok(
    midPeak - base < 256 * MiB,
    `RSS growth with 1 GiB of unread READ replies stays bounded (${((midPeak - base) / MiB).toFixed(0)} MiB)`,
    { base, midPeak },
  );
  // now read everything: every reply arrives, in full, with the right cookie
  const { readFileSync } = await import('node:fs');
  const image = readFileSync(f.image);
  let readsOk = 0;
  let writesOk = 0;
  const seen = new Set<bigint>();
  for (let i = 0; i < N + W; i++) {
    const h = await conn.read(16, 120_000);
    const err = h.readUInt32BE(4);
    const cookie = h.readBigUInt64BE(8);
    seen.add(cookie);
    if (cookie < BigInt(N)) {
      const data = err === 0 ? await conn.read(MiB, 120_000) : Buffer.alloc(0);
      if (err === 0 && data.length === MiB) readsOk++;
    } else if (err === 0) writesOk++;
  }
  clearInterval(sample);
  t.equal(seen.size, N + W, 'every request got exactly one reply');
  t.equal(readsOk, N, 'all READs answered with 1 MiB of data');
  t.equal(writesOk, W, 'all WRITEs succeeded');
  t.ok(peak - base < 320 * MiB, `peak RSS growth stays bounded (${((peak - base) / MiB).toFixed(0)} MiB for 1 GiB + 64 MiB in flight)`, {
    base,
    peak,
  });
  conn.sendRequest(CMD.FLUSH, 0, 99999n, 0n, 0);
  t.equal((await conn.readSimpleReply()).error, 0, 'flush');
  conn.sendRequest(CMD.DISC, 0, 0n, 0n, 0);
  await conn.waitClosed(10_000);
  const after = readFileSync(f.image);
  let good = 0;
  for (let slot = 0; slot < 64; slot++) if (after.subarray(slot * MiB, (slot + 1) * MiB).equals(payload(slot))) good++;
  t.equal(good, 64, 'the image holds the last pipelined write of every slot');
  t.notOk(after.equals(image), 'the image changed');
});

t.test('--handshake-timeout 2: a silent client is dropped; another client is served meanwhile', async (t) => {
  const f = await withServer(t, { sizeBytes: 16 * MiB, extraArgs: ['--handshake-timeout', '2'] });
  // Taken before connecting: the daemon's timer cannot start earlier than this.
  const opened = Date.now();
  const silent = await RawConn.open(f.server.socket);
  const half = await RawConn.open(f.server.socket);
  let silentClosedAt = 0;
  void silent.closedP.then(() => (silentClosedAt = Date.now()));
  await half.greeting(60_000); // reads the greeting, then says nothing
  const info = await run('nbdinfo', ['--size', f.server.uri], { timeoutMs: 60_000 });
  t.equal(info.code, 0, 'a normal client is served while the silent ones are connected', { out: describe(info) });
  t.ok(await silent.waitClosed(60_000), 'the silent client is dropped');
  // A loaded machine only makes the drop later; it must never come before the timeout.
  t.ok(silentClosedAt - opened >= 2000 * 0.95, `the silent client was not dropped before the timeout (${silentClosedAt - opened} ms)`);
  t.ok(await half.waitClosed(60_000), 'the client that stopped after the greeting is dropped');
  t.match(f.server.log(), /handshake not finished within 2000 ms/, 'the daemon logs why', { log: logTail(f.server) });
  // a client that finished the handshake is not subject to the timeout
  const done = await RawConn.open(f.server.socket);
  await done.handshake(60_000);
  await done.go('', 60_000);
  t.notOk(await done.waitClosed(4000), 'a client in transmission is not dropped by the handshake timeout');
  done.sendRequest(CMD.READ, 0, 1n, 0n, 512);
  t.equal((await done.readSimpleReply(512)).error, 0, 'and still reads');
  done.destroy();
});

t.test('the listen backlog fits --max-connections on every listener (Unix and TCP)', async (t) => {
  const f = await withServer(t, { sizeBytes: 16 * MiB, extraArgs: ['--max-connections', '1500', '--listen', '127.0.0.1:0'] });
  let port = 0;
  for (let i = 0; i < 600 && !port; i++) {
    port = Number(/tcp:127\.0\.0\.1:(\d+)/.exec(f.server.log())?.[1] ?? 0);
    if (!port) await sleep(100);
  }
  t.ok(port > 0, 'the daemon logged its TCP port', { log: logTail(f.server) });
  const expected = Math.min(1500, somaxconn());
  t.equal(await unixBacklog(f.server.socket), expected, `Unix socket backlog = min(1500, somaxconn ${somaxconn()})`);
  t.equal(await tcpBacklog(port), expected, 'TCP socket backlog, the same');
});

/**
 * Raw-socket clients that misbehave. The server must drop (only) the offending connection, keep
 * the option/request stream in sync where the spec allows, time out silent handshakes, and keep
 * serving everyone else.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { withServer, run, describe, RawConn, OPT, REP, CMD, MiB, serverKind, logTail, type Server } from '../helpers';

const SIZE = 16 * MiB;
const kind = serverKind();
const HANDSHAKE_TIMEOUT_S = 2;

async function stillServes(t: Test, server: Server, what: string): Promise<void> {
  const r = await run('nbdinfo', ['--size', server.uri], { timeoutMs: 120_000 });
  t.equal(r.stdout.trim(), String(SIZE), `${what}: a normal client still works`, { out: describe(r), log: logTail(server) });
  t.ok(server.isRunning(), `${what}: server process still running`);
}

t.test('malformed handshakes', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });

  {
    const c = await RawConn.open(server.socket);
    await c.handshake();
    c.write(Buffer.from('BADMAGIC\x00\x00\x00\x07\x00\x00\x00\x00', 'latin1'));
    t.ok(await c.waitClosed(30_000), 'bad option magic -> connection dropped');
    c.destroy();
  }
  await stillServes(t, server, 'after bad option magic');

  {
    const c = await RawConn.open(server.socket);
    await c.greeting();
    c.write(randomBytes(256));
    t.ok(await c.waitClosed(30_000), 'random garbage after greeting -> connection dropped');
    c.destroy();
  }
  {
    const c = await RawConn.open(server.socket);
    await c.greeting();
    c.sendClientFlags(0xfffffff0); // unknown client flags: MUST drop
    t.ok(await c.waitClosed(30_000), 'unknown client flags -> connection dropped');
    c.destroy();
  }
  {
    const c = await RawConn.open(server.socket);
    await c.handshake();
    c.sendOption(OPT.GO, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x41])); // name length beyond the option
    let answered: boolean;
    try {
      const r = await c.readOptionReply();
      answered = (r.type & 0x80000000) !== 0;
    } catch {
      answered = c.closed;
    }
    t.ok(answered, 'GO with inconsistent name length -> error reply or drop (no hang)');
    c.destroy();
  }
  {
    const c = await RawConn.open(server.socket);
    await c.handshake();
    const h = Buffer.alloc(16);
    Buffer.from('IHAVEOPT', 'latin1').copy(h, 0);
    h.writeUInt32BE(OPT.GO, 8);
    h.writeUInt32BE(0xfffffff0, 12); // absurd option length
    c.write(h);
    // acceptable: hang up, or an error reply (e.g. ERR_TOO_BIG) while skipping the announced payload
    let ok: boolean;
    try {
      const r = await c.readOptionReply();
      ok = (r.type & 0x80000000) !== 0;
    } catch {
      ok = c.closed;
    }
    t.ok(ok, 'option with a 4 GiB length -> error reply or drop, no hang');
    c.destroy();
  }
  {
    // a large (1 MiB) unknown option that is really sent: either dropped, or refused and skipped in sync
    const c = await RawConn.open(server.socket);
    await c.handshake();
    c.sendOption(0x7778, randomBytes(1024 * 1024));
    let verdict: string;
    try {
      const r = await c.readOptionReply();
      if ((r.type & 0x80000000) !== 0) {
        const { size } = await c.go('');
        verdict = size === BigInt(SIZE) ? 'refused+in-sync' : 'bad-size';
      } else verdict = `unexpected reply type ${r.type}`;
    } catch (e) {
      verdict = c.closed ? 'dropped' : `error: ${(e as Error).message}`;
    }
    t.ok(verdict === 'dropped' || verdict === 'refused+in-sync', `1 MiB unknown option: ${verdict}`);
    c.destroy();
  }
  await stillServes(t, server, 'after malformed handshakes');
});

t.test('unknown option -> ERR_UNSUP, stream stays in sync, GO then works', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random', exportName: 'disk0' });
  const c = await RawConn.open(server.socket);
  t.teardown(() => c.destroy());
  await c.handshake();
  c.sendOption(0x7777, Buffer.from('some option payload that must be skipped'));
  const r = await c.readOptionReply();
  t.equal(r.opt, 0x7777, 'reply echoes the option');
  t.equal(r.type, REP.ERR_UNSUP, 'NBD_REP_ERR_UNSUP');
  c.sendOption(4 /* PEEK_EXPORT, withdrawn */);
  const r2 = await c.readOptionReply();
  t.equal(r2.type, REP.ERR_UNSUP, 'withdrawn PEEK_EXPORT -> ERR_UNSUP');
  c.sendOption(OPT.LIST);
  const names: string[] = [];
  for (;;) {
    const l = await c.readOptionReply();
    if (l.type === REP.SERVER) names.push(l.data.subarray(4, 4 + l.data.readUInt32BE(0)).toString());
    else {
      t.equal(l.type, REP.ACK, 'LIST ends with ACK');
      break;
    }
  }
  t.ok(names.length >= 1, 'LIST returned an export', { names });
  const { size, flags } = await c.go('disk0');
  t.equal(size, BigInt(SIZE), 'GO after unknown options: size');
  t.equal(flags & 1, 1, 'HAS_FLAGS set');
  // simple-reply transmission: read 4 KiB, unknown command -> EINVAL, read again (stream in sync)
  c.sendRequest(CMD.READ, 0, 1n, 0n, 4096);
  const rd = await c.readSimpleReply(4096);
  t.equal(rd.error, 0, 'READ ok');
  t.equal(rd.cookie, 1n, 'cookie echoed');
  c.sendRequest(99, 0, 2n, 0n, 0);
  const unk = await c.readSimpleReply();
  t.equal(unk.error, 22, 'unknown command type 99 -> EINVAL');
  t.equal(unk.cookie, 2n, 'cookie echoed on error');
  c.sendRequest(CMD.WRITE, 0x8000, 3n, 0n, 4096, Buffer.alloc(4096, 0x61)); // bad flag: payload must be skipped
  const bw = await c.readSimpleReply();
  t.equal(bw.error, 22, 'WRITE with unknown flag -> EINVAL (payload consumed)');
  c.sendRequest(CMD.WRITE, 0, 4n, BigInt(SIZE), 4096, Buffer.alloc(4096, 0x62)); // past end: payload skipped
  const pe = await c.readSimpleReply();
  t.equal(pe.error, 28, 'WRITE past end -> ENOSPC (payload consumed)');
  c.sendRequest(CMD.READ, 0, 5n, 0n, 4096);
  const rd2 = await c.readSimpleReply(4096);
  t.equal(rd2.error, 0, 'READ after errors ok (stream in sync)');
  t.ok(rd2.data.equals(rd.data), 'same data as before: rejected WRITEs changed nothing');
  c.sendRequest(CMD.DISC, 0, 6n, 0n, 0);
  t.ok(await c.waitClosed(30_000), 'server closes after NBD_CMD_DISC');
});

t.test('more than 64 options in one burst: the 64 replies owed arrive, then the connection closes', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });
  const c = await RawConn.open(server.socket);
  t.teardown(() => c.destroy());
  await c.handshake();
  // 70 unknown options in one write: the daemon parses them all in one turn, answering 64 of them.
  const burst: Buffer[] = [];
  for (let i = 0; i < 70; i++) {
    const h = Buffer.alloc(16);
    Buffer.from('IHAVEOPT', 'latin1').copy(h, 0);
    h.writeUInt32BE(0x7700 + i, 8);
    burst.push(h);
  }
  c.write(Buffer.concat(burst));
  const answered: number[] = [];
  let end: string;
  for (;;) {
    try {
      const r = await c.readOptionReply(60_000);
      if (r.type !== REP.ERR_UNSUP) {
        end = `unexpected reply type 0x${r.type.toString(16)}`;
        break;
      }
      answered.push(r.opt);
    } catch (err) {
      end = (await c.waitClosed(60_000)) ? 'closed' : (err as Error).message;
      break;
    }
  }
  t.equal(answered.length, 64, 'the first 64 options are answered', { log: logTail(server) });
  t.same(
    answered,
    Array.from({ length: 64 }, (_, i) => 0x7700 + i),
    'in order, each echoing its option',
  );
  t.equal(end, 'closed', 'then the daemon closes the connection');
  t.match(server.log(), /more than 64 options/, 'and logs why', { log: logTail(server) });
  await stillServes(t, server, 'after an option flood');
});

t.test('truncated requests then close', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });
  for (const [what, bytes] of [
    ['10 bytes of a request header', 10],
    ['full WRITE header + 100 of 4096 payload bytes', -1],
  ] as const) {
    const c = await RawConn.open(server.socket);
    await c.handshake();
    await c.go('');
    if (bytes > 0) {
      c.write(Buffer.alloc(bytes, 0x25));
    } else {
      const h = Buffer.alloc(28);
      h.writeUInt32BE(0x25609513, 0);
      h.writeUInt16BE(CMD.WRITE, 6);
      h.writeUInt32BE(4096, 24);
      c.write(Buffer.concat([h, Buffer.alloc(100, 0x77)]));
    }
    c.sock.end();
    await c.waitClosed(30_000);
    c.destroy();
    await stillServes(t, server, what);
  }
  // the partial WRITE must not have been applied
  const r = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x77 0 100', server.uri], { timeoutMs: 120_000 });
  t.match(r.stdout + r.stderr, /Pattern verification failed|mismatch/i, 'truncated WRITE payload not written', { out: describe(r) });
});

t.test('WRITE with absurd length drops only that connection', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });
  const other = await RawConn.open(server.socket);
  t.teardown(() => other.destroy());
  await other.handshake();
  await other.go('');
  const c = await RawConn.open(server.socket);
  t.teardown(() => c.destroy());
  await c.handshake();
  await c.go('');
  c.sendRequest(CMD.WRITE, 0, 7n, 0n, 0xffffffff, Buffer.alloc(65536, 0x11));
  let dropped: boolean;
  try {
    // a server may send an error reply first; it must then hang up (the payload cannot be skipped)
    await c.readSimpleReply();
    dropped = await c.waitClosed(60_000);
  } catch {
    dropped = c.closed || (await c.waitClosed(60_000));
  }
  t.ok(dropped, 'connection with the 4 GiB WRITE was dropped', { log: logTail(server) });
  other.sendRequest(CMD.READ, 0, 8n, 0n, 512);
  const r = await other.readSimpleReply(512);
  t.equal(r.error, 0, 'another connection opened before keeps working');
  await stillServes(t, server, 'after absurd WRITE');
});

t.test(
  'silent client is dropped after the handshake timeout',
  { skip: kind === 'nbdkit' ? 'nbdkit has no handshake timeout' : false },
  async (t) => {
    const { server } = await withServer(t, { sizeBytes: SIZE, extraArgs: ['--handshake-timeout', String(HANDSHAKE_TIMEOUT_S)] });
    // Taken before connecting: the daemon's timer cannot start earlier than this.
    const started = Date.now();
    const silent = await RawConn.open(server.socket);
    t.teardown(() => silent.destroy());
    const halfway = await RawConn.open(server.socket);
    t.teardown(() => halfway.destroy());
    await silent.greeting(); // then say nothing
    await halfway.handshake();
    halfway.sendOption(0x7777); // one option, then silence
    await halfway.readOptionReply();
    t.ok(await silent.waitClosed((HANDSHAKE_TIMEOUT_S + 60) * 1000), 'silent client dropped');
    const elapsed = (Date.now() - started) / 1000;
    t.ok(elapsed >= HANDSHAKE_TIMEOUT_S * 0.8, `not dropped before the timeout (${elapsed.toFixed(1)} s)`);
    t.ok(await halfway.waitClosed(60_000), 'client silent after one option dropped too');
    // a connection that finished the handshake is not subject to the timeout
    const ok = await RawConn.open(server.socket);
    t.teardown(() => ok.destroy());
    await ok.handshake();
    await ok.go('');
    await new Promise((r) => setTimeout(r, (HANDSHAKE_TIMEOUT_S + 1) * 1000));
    t.notOk(ok.closed, 'idle connection in transmission phase is kept');
    ok.sendRequest(CMD.READ, 0, 9n, 0n, 512);
    t.equal((await ok.readSimpleReply(512)).error, 0, 'and still answers');
    await stillServes(t, server, 'after handshake timeouts');
  },
);

t.test('1000 concurrent idle connections, then a normal client', async (t) => {
  // The idle half stays in the handshake for as long as this test runs on a loaded machine: the
  // handshake timeout must not be what ends it.
  const { server } = await withServer(t, {
    sizeBytes: SIZE,
    fill: 'random',
    extraArgs: kind === 'remapd' ? ['--handshake-timeout', '600'] : [],
  });
  const conns: RawConn[] = [];
  t.teardown(() => conns.forEach((c) => c.destroy()));
  // All 1000 connect at once while the daemon is stopped (SIGSTOP) and accepts nothing: each connect
  // must wait in the listen queue (sized for --max-connections), as it would behind a busy accept
  // loop. A Unix socket with a full queue fails a connect with EAGAIN, so this does not depend on load.
  const paused = kind === 'remapd';
  if (paused) process.kill(server.pid, 'SIGSTOP');
  let opened: PromiseSettledResult<RawConn>[];
  try {
    opened = await Promise.allSettled(Array.from({ length: 1000 }, () => RawConn.open(server.socket, 120_000)));
  } finally {
    if (paused) process.kill(server.pid, 'SIGCONT');
  }
  for (const r of opened) if (r.status === 'fulfilled') conns.push(r.value);
  const errors = [...new Set(opened.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : [])))];
  t.equal(conns.length, 1000, `1000 connections open${paused ? ' (queued while the daemon was stopped)' : ''}`, { errors });
  // half of them in transmission phase, half idle in the handshake (they read their greeting)
  await Promise.all(
    conns.slice(0, 500).map(async (c) => {
      await c.handshake(60_000);
      await c.go('', 60_000);
    }),
  );
  await Promise.all(conns.slice(500).map((c) => c.greeting(60_000)));
  t.equal(conns.filter((c) => c.closed).length, 0, 'none dropped');
  await stillServes(t, server, 'with 1000 idle connections');
  conns[0]!.sendRequest(CMD.READ, 0, 10n, 0n, 4096);
  t.equal((await conns[0]!.readSimpleReply(4096)).error, 0, 'an idle transmission connection answers');
  t.equal(conns.filter((c) => c.closed).length, 0, 'all 1000 still open while the new client was served');
  conns.forEach((c) => c.destroy());
  await new Promise((r) => setTimeout(r, 500));
  await stillServes(t, server, 'after 1000 clients vanished at once');
});

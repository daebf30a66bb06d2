/**
 * Planned restart hand-over (daemon/handover*.ts): a libnbd client keeps doing verified writes and reads
 * on one connection while the daemon (with a spare and write faults, so blocks are being remapped) is
 * restarted ten times with SIGHUP. The client never reconnects: any failure of its connection object is
 * an error. Every write is re-read at the end. The longest write+read pair measures the stall.
 *
 * Also: a TLS connection cannot be handed over and is closed (its client reconnects) while a plain one
 * continues; a handed-over session whose export changed is refused.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PYTHON, REMAPD_BIN, REPO_ROOT, sleep, MiB, logTail, tempDir, type Server } from '../helpers';
import { makePki, tlsUri } from '../helpers/tls-pki';
import { startServiceManager } from '../helpers/service-manager';
import { createRemapSetup, logRecords, startRemapd, statusJson } from '../helpers/remap-setup';

const RESTARTS = Number(process.env.REMAPD_TEST_RESTARTS ?? 10);
const CLIENT = join(REPO_ROOT, 'test', 'helpers', 'verify-client.py');

function records(server: Server, msg: string): Record<string, unknown>[] {
  return logRecords(server).filter((r) => r.msg === msg);
}

/** PID of the process serving now (the last 'remapd serving' line; successors log to the same file). */
function currentPid(server: Server): number {
  const r = records(server, 'remapd serving');
  return Number(r[r.length - 1]?.pid ?? server.pid);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

t.test(`${RESTARTS} planned restarts (SIGHUP) under a verified write/read load: no error, no reconnect`, async (t) => {
  const s = await createRemapSetup(t, {
    mainBytes: 64 * MiB,
    spareBytes: 32 * MiB,
    // Writes into this 512 KiB fail on main: those blocks get remapped to the spare during the run.
    faults: [{ op: 'write', offset: 8 * MiB, length: 512 * 1024, error: 'EIO' }],
  });
  const server = await startRemapd(t, s, ['--no-scan']);
  t.teardown(() => {
    const pid = currentPid(server);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  const stop = join(s.dir, 'stop');
  const client = spawn(PYTHON, [CLIENT, s.socket, stop, '4'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  client.stdout.on('data', (b: Buffer) => (out += b.toString()));
  client.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const clientDone = new Promise<number | null>((r) => client.on('exit', (code) => r(code)));
  t.teardown(() => {
    writeFileSync(stop, '');
    client.kill('SIGKILL');
  });
  await waitFor('the client to connect', () => records(server, 'client connected').length >= 1);
  await sleep(500);

  const pids = [currentPid(server)];
  for (let i = 1; i <= RESTARTS; i++) {
    const before = currentPid(server);
    process.kill(before, 'SIGHUP');
    await waitFor(`hand-over ${i}`, () => records(server, 'hand-over: connections adopted').length >= i);
    await waitFor(`old process ${before} to exit`, () => !alive(before));
    pids.push(currentPid(server));
    await sleep(300); // let the client run between restarts
  }
  writeFileSync(stop, '');
  const code = await clientDone;
  t.equal(code, 0, 'client exited 0', { stderr: err });
  const result = JSON.parse(out.trim().split('\n').pop() ?? '{}') as {
    ops: number;
    nerrors: number;
    errors: string[];
    maxOpMs: number;
    maxGapMs: number;
    verified: number;
    mismatches: number;
  };
  t.equal(result.nerrors, 0, 'no error on the client connection', { errors: result.errors, log: logTail(server) });
  t.ok(result.ops > RESTARTS, `client did ${result.ops} verified write+read pairs`);
  t.ok(result.verified > 0, `final re-read of ${result.verified} written 64 KiB slots`);
  t.equal(result.mismatches, 0, 'every acknowledged write reads back');
  t.equal(new Set(pids).size, RESTARTS + 1, `${RESTARTS + 1} different processes served the connection`);

  const adopted = records(server, 'hand-over: connections adopted');
  t.ok(
    adopted.every((r) => r.adopted === 1 && r.closed === 0),
    'each successor adopted the one connection, closed none',
    { adopted },
  );
  t.equal(
    records(server, 'client connected').filter((r) => !(r.options as string[] | undefined)?.includes('(handed over)')).length,
    1,
    'the client handshook exactly once',
  );
  const drainRecs = records(server, 'hand-over: connections drained, devices closed');
  const drains = drainRecs.map((r) => Number(r.drainMs));
  // The successor loaded while the old process served; the drain (the stall) started only after that.
  t.equal(records(server, 'planned restart: successor ready').length, RESTARTS, 'each successor got ready while its predecessor served');
  t.ok(
    drainRecs.every((r) => Number(r.successorPreparedMs) > 0),
    'each drain started after its successor was prepared',
    { drainRecs },
  );
  // One owner at a time: each successor started serving (claims taken) only after its predecessor stopped.
  const order = logRecords(server)
    .filter((r) => r.msg === 'stopped' || r.msg === 'remapd serving')
    .map((r) => r.msg);
  t.same(
    order,
    ['remapd serving', ...Array<string>(RESTARTS).fill('stopped,remapd serving').join(',').split(',')],
    'stopped and serving alternate: never two owners',
  );
  const stalls = adopted.map((r) => Number(r.sinceHandoverStartMs));
  t.comment(
    `client: ${result.ops} ops, longest write+read pair ${result.maxOpMs} ms, longest gap without a completed op ${result.maxGapMs} ms; drain ms ${drains.join(',')}; hand-over start→adopted ms ${stalls.join(',')}`,
  );
  const st = await statusJson(s);
  t.ok(st.remaps.total > 0, `blocks were remapped during the run (${st.remaps.total})`);
  process.kill(currentPid(server), 'SIGTERM');
  await waitFor('the last daemon to stop', () => !alive(currentPid(server)), 30_000);
  t.notOk(existsSync(s.socket), 'the last daemon removed the socket on a normal stop');
});

t.test(`${RESTARTS} restarts through a file descriptor store (systemctl restart with FileDescriptorStoreMax=)`, async (t) => {
  const s = await createRemapSetup(t, {
    mainBytes: 64 * MiB,
    spareBytes: 32 * MiB,
    faults: [{ op: 'write', offset: 8 * MiB, length: 512 * 1024, error: 'EIO' }],
  });
  const logFile = join(s.dir, 'daemon.log');
  const mgr = startServiceManager(t, join(s.dir, 'notify.sock'), logFile, [
    process.execPath,
    REMAPD_BIN,
    'serve',
    '--main',
    s.main,
    '--spare',
    s.spare,
    '--socket',
    s.socket,
    '--control',
    s.control,
    '--faults',
    s.faultsFile,
    '--no-scan',
  ]);
  const { lines, count } = mgr;
  await waitFor('READY=1', () => count('ready') >= 1);
  const stop = join(s.dir, 'stop');
  const client = spawn(PYTHON, [CLIENT, s.socket, stop, '4'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  client.stdout.on('data', (b: Buffer) => (out += b.toString()));
  const clientDone = new Promise<number | null>((r) => client.on('exit', (code) => r(code)));
  t.teardown(() => {
    writeFileSync(stop, '');
    client.kill('SIGKILL');
  });
  await sleep(800);
  for (let i = 1; i <= RESTARTS; i++) {
    mgr.send('restart');
    await waitFor(`restart ${i}`, () => count('ready') >= i + 1);
    await sleep(300);
  }
  writeFileSync(stop, '');
  t.equal(await clientDone, 0, 'client exited 0');
  const result = JSON.parse(out.trim().split('\n').pop() ?? '{}') as {
    ops: number;
    nerrors: number;
    errors: string[];
    maxOpMs: number;
    maxGapMs: number;
    verified: number;
    mismatches: number;
  };
  t.equal(result.nerrors, 0, 'no error on the client connection', { errors: result.errors });
  t.equal(result.mismatches, 0, `every acknowledged write reads back (${result.verified} slots)`);
  const exits = lines.filter((l) => l.startsWith('exited'));
  t.ok(
    exits.every((l) => l.split(' ')[1] === '0'),
    'every old process exited 0',
    { exits },
  );
  t.ok(
    exits.every((l) => Number(l.split(' ')[2]) >= 2),
    'each left its connection and state in the store',
    { exits },
  );
  const readies = lines.filter((l) => l.startsWith('ready'));
  // What stays stored is the listener the first process created (systemd keeps listeners anyway).
  t.ok(
    readies.slice(1).every((l) => l.split(' ')[2] === '1'),
    'each successor took its connection and state out of the store (FDSTOREREMOVE); only the listener stays',
    { readies },
  );
  const adopted = readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes('hand-over: connections adopted'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.equal(adopted.length, RESTARTS, 'every start adopted');
  t.ok(
    adopted.every((r) => r.adopted === 1),
    'the one connection each time',
  );
  t.comment(
    `fd store: ${result.ops} ops, longest write+read pair ${result.maxOpMs} ms, longest gap without a completed op ${result.maxGapMs} ms; hand-over start→adopted ms ${adopted.map((r) => r.sinceHandoverStartMs).join(',')}`,
  );
  mgr.send('stop');
  await waitFor('stop', () => count('stopped') >= 1, 30_000);
});

t.test('TLS connections cannot be handed over: closed, their client reconnects; a plain one continues', async (t) => {
  const pki = await makePki(tempDir(t, 'remapd-pki-'));
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB, spareBytes: 16 * MiB });
  const server = await startRemapd(t, s, ['--no-scan', '--tls', 'on', '--tls-certificates', pki.server]);
  t.teardown(() => {
    const pid = currentPid(server);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  const go = join(s.dir, 'go');
  const script = String.raw`
import json, os, sys, time, nbd
sock, uri, go = sys.argv[1:4]
plain = nbd.NBD(); plain.connect_unix(sock)
secure = nbd.NBD(); secure.set_uri_allow_local_file(True); secure.connect_uri(uri)
plain.pwrite(b"p" * 4096, 0); secure.pwrite(b"s" * 4096, 8192)
print("connected", flush=True)
while not os.path.exists(go): time.sleep(0.05)
out = {}
try: out["plain"] = plain.pread(4096, 8192) == b"s" * 4096
except Exception as e: out["plain"] = "error: %s" % e
try: secure.pread(4096, 0); out["tls"] = "still works"
except Exception as e: out["tls"] = "closed"
again = nbd.NBD(); again.set_uri_allow_local_file(True); again.connect_uri(uri); out["tlsAgain"] = again.pread(4096, 0) == b"p" * 4096
print(json.dumps(out), flush=True)
`;
  const child = spawn(PYTHON, ['-c', script, s.socket, tlsUri(s.socket, { certs: pki.client }), go], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  t.teardown(() => child.kill('SIGKILL'));
  await waitFor('both clients to connect', () => out.includes('connected') || child.exitCode !== null, 60_000).catch((e: Error) => {
    throw new Error(`${e.message}: ${err}`);
  });
  process.kill(currentPid(server), 'SIGHUP');
  await waitFor('the hand-over', () => records(server, 'hand-over: connections adopted').length >= 1);
  writeFileSync(go, '');
  await done;
  const r = JSON.parse(out.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
  t.equal(r.plain, true, "the plain connection continued (and sees the TLS client's write)", { err });
  t.equal(r.tls, 'closed', 'the TLS connection was closed by the hand-over');
  t.equal(r.tlsAgain, true, 'a new TLS connection works with the successor');
  const adopted = records(server, 'hand-over: connections adopted')[0];
  t.equal(adopted?.adopted, 1, 'one connection adopted (the plain one)');
});

t.test('a successor that cannot start (broken upgrade) calls the restart off: the old process keeps serving', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB, spareBytes: 16 * MiB });
  const alert = join(s.dir, 'alert.sh');
  writeFileSync(alert, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  const server = await startRemapd(t, s, ['--no-scan', '--alert-program', alert]);
  t.teardown(() => {
    const pid = currentPid(server);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  const go = join(s.dir, 'go');
  const script = String.raw`
import json, os, sys, time, nbd
sock, go = sys.argv[1:3]
h = nbd.NBD(); h.connect_unix(sock)
h.pwrite(b"a" * 4096, 0)
print("connected", flush=True)
while not os.path.exists(go): time.sleep(0.05)
out = {}
try: h.pwrite(b"b" * 4096, 4096); out["after"] = h.pread(8192, 0) == b"a" * 4096 + b"b" * 4096
except Exception as e: out["after"] = "error: %s" % e
print(json.dumps(out), flush=True)
`;
  const child = spawn(PYTHON, ['-c', script, s.socket, go], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  t.teardown(() => child.kill('SIGKILL'));
  await waitFor('the client to connect', () => out.includes('connected') || child.exitCode !== null, 60_000);
  const pid = currentPid(server);
  // The new version cannot start: its configuration names an alert program that is gone.
  chmodSync(alert, 0o644);
  process.kill(pid, 'SIGHUP');
  await waitFor(
    'the restart to be called off',
    () => records(server, 'planned restart called off: the successor is not ready; this process keeps serving').length >= 1,
  );
  writeFileSync(go, '');
  await done;
  const r = JSON.parse(out.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
  t.equal(r.after, true, 'the connection still works, on the same process');
  t.ok(alive(pid), 'the old process still serves');
  t.equal(currentPid(server), pid, 'no other process started serving');
  t.equal(records(server, 'shutting down').length, 0, 'the old process never stopped its device');
  // Fixed: the next SIGHUP hands over.
  chmodSync(alert, 0o755);
  process.kill(pid, 'SIGHUP');
  await waitFor('the hand-over', () => records(server, 'hand-over: connections adopted').length >= 1);
  t.not(currentPid(server), pid, 'a second SIGHUP restarts once the successor can start');
});

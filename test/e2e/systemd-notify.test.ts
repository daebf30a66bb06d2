/**
 * The sd_notify protocol against a real AF_UNIX SOCK_DGRAM listener (python3) standing in for
 * systemd: READY=1 + STATUS= after the socket listens, WATCHDOG=1 every WATCHDOG_USEC/2,
 * STOPPING=1 at SIGTERM, for both transports (native addon, systemd-notify fallback). Also the pure
 * environment parsing of daemon/systemd.ts (LISTEN_*, WATCHDOG_*).
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, sparseImage, MiB, REMAPD_BIN, PYTHON, killGroup, probeGreeting, sleep } from '../helpers';
import { takeListenFds, takeWatchdogUsec } from '../../daemon/systemd';
import { nativeAvailable } from '../../storage/native';

const LISTENER = String.raw`
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps({"t": time.monotonic(), "msg": data.decode()}), flush=True)
`;

interface Datagram {
  t: number;
  fields: Record<string, string>;
}

/** A fake systemd notify socket; records every datagram. */
async function notifyListener(tt: { teardown(fn: () => unknown): void }, path: string) {
  const proc: ChildProcess = spawn(PYTHON, ['-c', LISTENER, path], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  tt.teardown(() => killGroup(proc.pid, 'SIGKILL'));
  const got: Datagram[] = [];
  let readyResolve!: () => void;
  const ready = new Promise<void>((r) => (readyResolve = r));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const o = JSON.parse(line) as { ready?: boolean; t: number; msg: string };
    if (o.ready) return readyResolve();
    const fields: Record<string, string> = {};
    for (const l of o.msg.split('\n')) {
      const i = l.indexOf('=');
      if (i > 0) fields[l.slice(0, i)] = l.slice(i + 1);
    }
    got.push({ t: o.t, fields });
  });
  await Promise.race([ready, sleep(30_000).then(() => Promise.reject(new Error('listener did not start')))]);
  return {
    got,
    async waitFor(pred: (d: Datagram) => boolean, timeoutMs = 30_000): Promise<Datagram | undefined> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const d = got.find(pred);
        if (d || Date.now() > deadline) return d;
        await sleep(50);
      }
    },
  };
}

function startDaemon(
  tt: { teardown(fn: () => unknown): void },
  dir: string,
  env: NodeJS.ProcessEnv,
): { proc: ChildProcess; socket: string; log: () => string; exited: Promise<number | null> } {
  const image = sparseImage(join(dir, 'main.img'), 16 * MiB);
  const socket = join(dir, 'nbd.sock');
  const logFile = join(dir, 'remapd.log');
  const fd = openSync(logFile, 'a');
  const proc = spawn(process.execPath, [REMAPD_BIN, 'serve', '--main', image, '--socket', socket], {
    stdio: ['ignore', fd, fd],
    detached: true,
    env: { ...process.env, ...env },
  });
  closeSync(fd);
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  tt.teardown(() => killGroup(proc.pid, 'SIGKILL'));
  return { proc, socket, log: () => readFileSync(logFile, 'utf8'), exited };
}

const transports: [string, NodeJS.ProcessEnv, boolean][] = [
  ['native addon', {}, nativeAvailable],
  ['systemd-notify fallback', { REMAPD_NATIVE: '0' }, true],
];

for (const [name, extraEnv, available] of transports) {
  t.test(`notify via ${name}: READY, STATUS, WATCHDOG, STOPPING`, { skip: available ? false : 'native addon not built' }, async (t) => {
    const dir = tempDir(t);
    const notifySock = join(dir, 'notify.sock');
    const l = await notifyListener(t, notifySock);
    const d = startDaemon(t, dir, { ...extraEnv, NOTIFY_SOCKET: notifySock, WATCHDOG_USEC: '400000' });

    const ready = await l.waitFor((x) => x.fields.READY === '1');
    t.ok(ready, 'READY=1 received', { log: d.log(), got: l.got });
    t.match(ready?.fields.STATUS ?? '', /serving .*main\.img/, 'STATUS= describes what is served');
    t.equal(ready?.fields.MAINPID, String(d.proc.pid), 'MAINPID= is the daemon');
    t.ok(await probeGreeting(d.socket, 5000), 'the socket accepts NBD clients once READY was sent');

    // WATCHDOG_USEC=400 ms → a ping every 200 ms. Wait for several, then check the spacing.
    const readyAt = ready?.t ?? 0;
    await l.waitFor(() => l.got.filter((x) => x.fields.WATCHDOG === '1' && x.t > readyAt).length >= 10, 60_000);
    const pings = l.got.filter((x) => x.fields.WATCHDOG === '1').map((x) => x.t);
    t.ok(pings.length >= 10, `at least 10 WATCHDOG=1 pings (got ${pings.length})`, { log: d.log() });
    const gaps = pings
      .slice(1)
      .map((p, i) => p - pings[i]!)
      .sort((a, b) => a - b);
    const median = gaps[Math.floor(gaps.length / 2)] ?? 0;
    const lowerQuartile = gaps[Math.floor(gaps.length / 4)] ?? 0;
    // Half the interval. A loaded machine only makes pings later (a late timer does not catch up), so
    // bound the typical gap from below and the shorter ones from above.
    t.ok(median >= 0.15, `pings not sooner than ~0.2 s apart (median gap ${median.toFixed(3)} s)`, { gaps });
    t.ok(
      lowerQuartile < 0.4,
      `pings at half the 0.4 s watchdog interval, not the whole (lower-quartile gap ${lowerQuartile.toFixed(3)} s)`,
      { gaps },
    );

    process.kill(d.proc.pid!, 'SIGTERM');
    const stopping = await l.waitFor((x) => x.fields.STOPPING === '1');
    t.ok(stopping, 'STOPPING=1 received after SIGTERM', { got: l.got.slice(-5) });
    t.equal(await d.exited, 0, 'daemon exits 0 after SIGTERM');
    const after = l.got.filter((x) => x.fields.WATCHDOG === '1' && stopping && x.t > stopping.t + 0.05);
    t.equal(after.length, 0, 'no WATCHDOG=1 after STOPPING=1');
  });
}

t.test('WATCHDOG_PID of another process: no pings; no NOTIFY_SOCKET: nothing sent, still serves', async (t) => {
  const dir = tempDir(t);
  const notifySock = join(dir, 'notify.sock');
  const l = await notifyListener(t, notifySock);
  const d = startDaemon(t, dir, { NOTIFY_SOCKET: notifySock, WATCHDOG_USEC: '200000', WATCHDOG_PID: '1' });
  t.ok(await l.waitFor((x) => x.fields.READY === '1'), 'READY=1 still sent', { log: d.log() });
  await sleep(1500);
  t.equal(l.got.filter((x) => x.fields.WATCHDOG === '1').length, 0, 'no WATCHDOG=1 for a watchdog meant for another PID');
  process.kill(d.proc.pid!, 'SIGTERM');
  t.equal(await d.exited, 0);

  const dir2 = tempDir(t);
  const d2 = startDaemon(t, dir2, { NOTIFY_SOCKET: '', WATCHDOG_USEC: '200000' });
  let ok = false;
  for (let i = 0; i < 200 && !ok; i++) {
    ok = await probeGreeting(d2.socket, 1000);
    if (!ok) await sleep(100);
  }
  t.ok(ok, 'serves without a notify socket', { log: d2.log() });
  process.kill(d2.proc.pid!, 'SIGTERM');
  t.equal(await d2.exited, 0);
  t.notMatch(d2.log(), /cannot notify/, 'no notify attempts without NOTIFY_SOCKET');
});

t.test('environment parsing: LISTEN_* and WATCHDOG_* honoured for our PID only, and removed', async (t) => {
  let env: Record<string, string | undefined> = { LISTEN_FDS: '2', LISTEN_PID: '42', LISTEN_FDNAMES: 'nbd:tcp', OTHER: 'x' };
  t.same(takeListenFds(env, 42), [
    { fd: 3, name: 'nbd' },
    { fd: 4, name: 'tcp' },
  ]);
  t.same(Object.keys(env), ['OTHER'], 'LISTEN_* removed');
  env = { LISTEN_FDS: '1', LISTEN_PID: '41' };
  t.same(takeListenFds(env, 42), [], 'LISTEN_PID of another process: ignored');
  t.same(Object.keys(env), [], 'and still removed');
  t.same(takeListenFds({ LISTEN_FDS: 'x', LISTEN_PID: '42' }, 42), [], 'malformed count ignored');
  t.same(takeListenFds({}, 42), []);

  env = { WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' };
  t.equal(takeWatchdogUsec(env, 42), 30_000_000);
  t.same(Object.keys(env), [], 'WATCHDOG_* removed');
  t.equal(takeWatchdogUsec({ WATCHDOG_USEC: '30000000' }, 42), 30_000_000, 'WATCHDOG_PID optional');
  t.equal(takeWatchdogUsec({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '43' }, 42), 0, 'other PID: disabled');
  t.equal(takeWatchdogUsec({ WATCHDOG_USEC: '0' }, 42), 0);
  t.equal(takeWatchdogUsec({ WATCHDOG_USEC: '-5' }, 42), 0);
});

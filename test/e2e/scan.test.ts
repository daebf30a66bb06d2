/**
 * Health scanner end to end: the real daemon with --spare, fault rules injected with --faults, data
 * checked through NBD (nbdcopy, python3-libnbd) against a copy of the original image.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/e2e/scan.test.js
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { callControl } from '../../daemon/control-client';
import type { ScanStatus } from '../../health/scanner';
import {
  describe,
  killGroup,
  MiB,
  PYTHON,
  randomImage,
  REMAPD_BIN,
  run,
  runPython,
  sleep,
  startServer,
  tempDir,
  type Server,
} from '../helpers';

const B = 4096;
// Real worker threads and real reads: slow on a loaded 2-core machine (no timing is asserted).
t.setTimeout(300_000);

interface Setup {
  dir: string;
  image: string;
  original: Buffer;
  ctl: string;
  server: Server;
}

async function setup(
  t: Tap,
  o: { sizeMiB: number; faults?: unknown[]; args?: string[]; env?: Record<string, string>; dir?: string },
): Promise<Setup> {
  const dir = o.dir ?? tempDir(t, 'remapd-scan-');
  const image = join(dir, 'main.img');
  const spare = join(dir, 'spare.img');
  if (!o.dir) {
    randomImage(image, o.sizeMiB * MiB);
    copyFileSync(image, join(dir, 'original.img'));
    writeFileSync(spare, '');
    const r = await run('truncate', ['-s', '32M', spare]);
    if (r.code !== 0) throw new Error(describe(r));
    const c = await run(process.execPath, [REMAPD_BIN, 'create', '--main', image, '--spare', spare]);
    if (c.code !== 0) throw new Error(describe(c));
  }
  const args = ['--spare', spare, ...(o.args ?? [])];
  if (o.faults) {
    writeFileSync(join(dir, 'faults.json'), JSON.stringify(o.faults));
    args.push('--faults', join(dir, 'faults.json'));
  }
  const saved = { ...process.env };
  Object.assign(process.env, o.env ?? {});
  let server: Server;
  try {
    server = await startServer(t, { kind: 'remapd', image, dir, extraArgs: args });
  } finally {
    for (const k of Object.keys(o.env ?? {})) if (saved[k] === undefined) delete process.env[k];
  }
  return { dir, image, original: readFileSync(join(dir, 'original.img')), ctl: join(dir, 'nbd.ctl'), server };
}

type Tap = { teardown(fn: () => unknown): void };

const status = (s: Setup): Promise<ScanStatus> => callControl(s.ctl, 'scan.status') as Promise<ScanStatus>;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function remaps(s: Setup): Promise<Record<number, string>> {
  const l = (await callControl(s.ctl, 'list')) as { remaps: { mainBlock: number; reason: string }[] };
  return Object.fromEntries(l.remaps.map((r) => [r.mainBlock, r.reason]));
}

async function readAll(s: Setup): Promise<Buffer> {
  const out = join(s.dir, 'out.img');
  const r = await run('nbdcopy', [s.server.uri, out], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(describe(r));
  return readFileSync(out);
}

t.test('slow and flaky blocks are found and migrated with identical data', async (t) => {
  const FLAKY = 300,
    VSLOW = 1000,
    SLOW = 2000;
  const s = await setup(t, {
    sizeMiB: 16,
    faults: [
      { op: 'read', offset: FLAKY * B, length: B, error: 'EIO', count: 2 },
      { op: 'read', offset: VSLOW * B, length: B, delayMs: 300 },
      { op: 'read', offset: SLOW * B, length: B, delayMs: 100 },
    ],
    args: ['--scan-rate', '0', '--scan-interval', '1s'],
  });
  const st = await waitFor('two passes', async () => {
    const x = await status(s);
    return x.passesCompleted >= 2 && x;
  });
  const r = await waitFor('three migrations', async () => {
    const m = await remaps(s);
    return Object.keys(m).length >= 3 && m;
  });
  t.same(r, { [FLAKY]: 'scan-flaky', [VSLOW]: 'scan-slow', [SLOW]: 'scan-slow' }, 'reasons');
  t.ok(st.lastFullScanAt, 'lastFullScanAt set');
  const data = await readAll(s);
  t.equal(data.length, s.original.length);
  t.ok(data.equals(s.original), 'the whole device reads back identical to the original image');
  for (const b of [FLAKY, VSLOW, SLOW])
    t.ok(data.subarray(b * B, (b + 1) * B).equals(s.original.subarray(b * B, (b + 1) * B)), `block ${b}`);
  const json = await run(process.execPath, [REMAPD_BIN, 'scan', 'status', '--json', '--control', s.ctl]);
  t.equal(json.code, 0, describe(json));
  const parsed = JSON.parse(json.stdout) as ScanStatus;
  for (const k of ['progress', 'passesCompleted', 'lastFullScanAt', 'score', 'label']) t.ok(k in parsed, `--json has ${k}`);
  t.ok(parsed.blocks.migrated >= 3);
  t.match(s.server.log(), /health scan: block migrated to the spare/);
});

t.test('raised slow thresholds (--scan-slow, --scan-very-slow): a 300 ms block is not slow, nothing else changes', async (t) => {
  const FLAKY = 300,
    DELAYED = 1000;
  const s = await setup(t, {
    sizeMiB: 8,
    faults: [
      { op: 'read', offset: FLAKY * B, length: B, error: 'EIO', count: 2 },
      { op: 'read', offset: DELAYED * B, length: B, delayMs: 300 },
    ],
    args: ['--scan-rate', '0', '--scan-interval', '1s', '--scan-slow', '2s', '--scan-very-slow', '5s'],
  });
  const st = await waitFor('two passes', async () => {
    const x = await status(s);
    return x.passesCompleted >= 2 && x;
  });
  t.equal(st.slowMs, 2000, 'status: slowMs');
  t.equal(st.verySlowMs, 5000, 'status: verySlowMs');
  // The flaky block is the control: the scan did read and act; the delayed block (300 ms: very slow
  // with the defaults, migrated in the test above) is under the raised threshold.
  const r = await waitFor('the flaky block migrated', async () => {
    const m = await remaps(s);
    return m[FLAKY] && m;
  });
  t.same(r, { [FLAKY]: 'scan-flaky' }, 'only the flaky block migrated');
  t.same(st.slowOffsets, [], 'no slow block reported');
});

t.test('unreadable block (rules reloaded at run time) is reported, then remapped by the next write', async (t) => {
  const BAD = 777;
  const s = await setup(t, { sizeMiB: 8, faults: [], args: ['--scan-rate', '0', '--scan-interval', '1h'] });
  await waitFor('first pass', async () => (await status(s)).passesCompleted >= 1);
  // `remapd faults FILE` must reach the worker: the reloaded rule makes the next pass fail at BAD.
  writeFileSync(join(s.dir, 'bad.json'), JSON.stringify([{ op: 'read', offset: BAD * B, length: B, error: 'EIO' }]));
  await callControl(s.ctl, 'faults', { text: readFileSync(join(s.dir, 'bad.json'), 'utf8'), source: 'bad.json' });
  await callControl(s.ctl, 'scan.start');
  const st = await waitFor('pending block', async () => {
    const x = await status(s);
    return x.pendingOffsets.includes(BAD * B) && x;
  });
  t.equal(st.blocks.failed, 1);
  t.not(st.label, 'healthy', `score ${st.score}`);
  t.match(s.server.log(), new RegExp(`"offset":${BAD * B}[^\\n]*unreadable block`));
  const txt = await run(process.execPath, [REMAPD_BIN, 'scan', 'status', '--control', s.ctl]);
  t.match(txt.stdout, new RegExp(`unreadable:\\s+${BAD * B}`), 'CLI lists the offset');
  // A write to the block lands on the spare and reads back.
  const py = await runPython(
    `
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b"\\xab" * 4096, ${BAD * B}, nbd.CMD_FLAG_FUA)
print(h.pread(4096, ${BAD * B}) == b"\\xab" * 4096)
`,
    [s.server.uri],
  );
  t.equal(py.stdout.trim(), 'True', describe(py));
  const r = await remaps(s);
  t.equal(r[BAD], 'read-error', 'remapped by the write');
  t.equal((await status(s)).blocks.pending, 0);
});

t.test('a client write racing a migration wins', async (t) => {
  const X = 6000; // ~23 MiB into a 32 MiB image: the scan at 8 MiB/s reaches it after a few seconds
  const s = await setup(t, {
    sizeMiB: 32,
    faults: [{ op: 'read', offset: X * B, length: B, delayMs: 400 }],
    args: ['--scan-rate', '8M', '--scan-interval', '1h'],
  });
  // Write block X in a loop until the migration has happened, then a few more times. Every write
  // carries its sequence number; the last one must be what reads back.
  const py = await runPython(
    `
import json, nbd, socket, struct, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
def remapped():
    c = socket.socket(socket.AF_UNIX); c.connect(sys.argv[2])
    c.sendall(b'{"id":1,"cmd":"list"}\\n'); buf = b""
    while not buf.endswith(b"\\n"): buf += c.recv(65536)
    c.close()
    return any(r["mainBlock"] == ${X} for r in json.loads(buf)["result"]["remaps"])
i = 0; after = -1; deadline = time.time() + 90
while time.time() < deadline:
    i += 1
    h.pwrite(struct.pack("<Q", i) * 512, ${X * B})
    if after < 0 and i % 5 == 0 and remapped(): after = i
    if after >= 0 and i >= after + 20: break
    time.sleep(0.01)
h.flush()
got = struct.unpack("<Q", h.pread(8, ${X * B}))[0]
print(json.dumps({"last": i, "remappedAt": after, "got": got, "whole": h.pread(4096, ${X * B}) == struct.pack("<Q", i) * 512}))
`,
    [s.server.uri, s.ctl],
    120_000,
  );
  t.equal(py.code, 0, describe(py));
  const res = JSON.parse(py.stdout.trim()) as { last: number; remappedAt: number; got: number; whole: boolean };
  t.ok(res.remappedAt > 0, 'the migration happened while the client was writing');
  t.equal(res.got, res.last, 'the newest write reads back');
  t.ok(res.whole, 'the whole block is the newest write');
  t.equal((await remaps(s))[X], 'scan-slow');
});

t.test('progress survives a restart; pause and resume; a worker crash is survived', async (t) => {
  const s = await setup(t, { sizeMiB: 32, args: ['--scan-rate', '4M', '--scan-interval', '1h'], env: { REMAPD_TEST_HOOKS: '1' } });
  await waitFor('25 % progress', async () => (await status(s)).progress >= 0.25);
  // Pause: the cursor stops moving.
  let st = (await callControl(s.ctl, 'scan.pause')) as ScanStatus;
  t.equal(st.state, 'paused');
  await sleep(600);
  const held = (await status(s)).cursorOffset;
  await sleep(1000);
  t.equal((await status(s)).cursorOffset, held, 'paused: no progress');
  const cli = await run(process.execPath, [REMAPD_BIN, 'scan', 'resume', '--control', s.ctl]);
  t.equal(cli.code, 0, describe(cli));
  t.match(cli.stdout, /state:\s+running/);
  await waitFor('progress after resume', async () => (await status(s)).cursorOffset > held);

  // Crash the worker: logged, restarted, the daemon keeps serving.
  await callControl(s.ctl, 'scan.crash');
  await waitFor('worker restart', async () => (await status(s)).workerRestarts >= 1);
  t.match(s.server.log(), /health scan worker exited unexpectedly; restarting it/);
  t.ok(s.server.isRunning(), 'daemon still running');
  const before = (await status(s)).cursorOffset;
  await waitFor('progress after the restart', async () => (await status(s)).cursorOffset > before, 30_000);
  const py = await runPython('import nbd,sys\nh=nbd.NBD();h.connect_uri(sys.argv[1]);print(len(h.pread(65536,0)))', [s.server.uri]);
  t.equal(py.stdout.trim(), '65536', 'NBD still serves');

  // Restart the daemon: the scan resumes from the persisted cursor, not from 0.
  st = await status(s);
  const at = st.cursorOffset;
  const exit = await s.server.stop('SIGTERM');
  t.equal(exit.code, 0);
  const s2 = await setup(t, { sizeMiB: 32, dir: s.dir, args: ['--scan-rate', '4M', '--scan-interval', '1h'] });
  const st2 = await status(s2);
  t.ok(st2.cursorOffset >= at - 4 * MiB && st2.cursorOffset > 0, `resumed at ${st2.cursorOffset} (was ${at} at stop)`);
  t.match(s2.server.log(), /resuming the health scan where it stopped/);
  t.equal(st2.passesCompleted, 0);
});

t.test('suspect command: validated, regions read before the pass goes on, shown in remapd status', async (t) => {
  const BAD = 3900; // ~15.2 MiB into a 16 MiB image: at 1 MiB/s the pass needs ~15 s to get there
  const s = await setup(t, {
    sizeMiB: 16,
    faults: [{ op: 'read', offset: BAD * B + 512, length: 512, error: 'EIO' }],
    args: ['--scan-rate', '1M', '--scan-interval', '1h'],
  });
  const refused = await callControl(s.ctl, 'suspect', { ranges: [{ offset: 0, length: 16 * MiB + 1 }], source: 't' }).catch(
    (e: Error) => e,
  );
  t.match(String(refused), /ends past the device/);
  const noSource = await callControl(s.ctl, 'suspect', { ranges: [] }).catch((e: Error) => e);
  t.match(String(noSource), /source/);
  t.ok(s.server.isRunning(), 'bad arguments do not hurt the daemon');
  const r = (await callControl(s.ctl, 'suspect', {
    ranges: [
      { offset: (BAD - 2) * B, length: 4 * B },
      { offset: 100 * B, length: 1 },
    ],
    source: 'e2e hints',
  })) as { queued: number };
  t.same(r, { queued: 2 });
  const st = await waitFor('the suspect block pending', async () => {
    const x = await status(s);
    return x.pendingOffsets.includes(BAD * B) && x;
  });
  t.ok(st.cursorOffset < (BAD - 2) * B, `found before the pass got there (cursor ${st.cursorOffset})`);
  t.same(st.pendingOffsets, [BAD * B], 'only the bad block');
  const all = (await callControl(s.ctl, 'status')) as { scan: { suspects: { queued: number; visited: number } } };
  await waitFor('both regions visited', async () => ((await callControl(s.ctl, 'status')) as typeof all).scan.suspects.visited >= 2);
  t.same(Object.keys(all.scan.suspects).sort(), ['queued', 'queuedBytes', 'visited', 'visitedBytes']);
  const human = await run(process.execPath, [REMAPD_BIN, 'status', '--control', s.ctl]);
  t.match(human.stdout, /suspects\s+0 regions queued \(0 B\), 2 visited \(20\.0 KiB\)/, describe(human));
  t.same(await remaps(s), {}, 'nothing remapped');
});

t.test('main gone (ENXIO): device failed in scan.status and the sd_notify STATUS line, no pending block', async (t) => {
  const dir = tempDir(t, 'remapd-scan-notify-');
  const sock = join(dir, 'notify.sock');
  const got = join(dir, 'notify.log');
  // A stand-in for systemd's notify socket: records every datagram, one per line.
  const listener = spawn(
    PYTHON,
    [
      '-c',
      'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nf=open(sys.argv[2],"a")\nwhile True:\n  f.write(s.recv(65536).decode().replace("\\n"," | ")+"\\n"); f.flush()\n',
      sock,
      got,
    ],
    { stdio: 'ignore', detached: true },
  );
  t.teardown(() => killGroup(listener.pid, 'SIGKILL'));
  await waitFor('the notify listener', async () => existsSync(sock));
  const s = await setup(t, {
    sizeMiB: 8,
    faults: [{ op: 'read', offset: 3 * MiB, length: 5 * MiB, error: 'ENXIO' }],
    args: ['--scan-rate', '0', '--scan-interval', '1h'],
    env: { NOTIFY_SOCKET: sock },
  });
  const st = await waitFor('device failed', async () => {
    const x = await status(s);
    return x.state === 'device-failed' && x;
  });
  t.match(st.deviceFailure, { reason: 'device-gone', code: 'ENXIO' });
  t.equal(st.blocks.pending, 0, 'no block pending');
  const line = await waitFor(
    'STATUS line',
    async () =>
      existsSync(got) &&
      readFileSync(got, 'utf8')
        .split('\n')
        .find((l) => l.includes('MAIN DEVICE FAILED')),
  );
  t.match(line, /STATUS=MAIN DEVICE FAILED \(ENXIO\)/);
});

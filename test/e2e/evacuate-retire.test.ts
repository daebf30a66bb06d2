/**
 * After `remapd evacuate --switch` the old stack is retired (daemon/evacuate/retire-old-stack.ts), on
 * loop devices with the health scanner running; main is a loop over a failing FUSE file with one
 * unreadable block (tests/helpers/failing-disk.ts):
 * before the switch the old main and spare are claimed (`remapd create --force` on the spare and a second
 * `serve` on them are refused "in use"); after it the daemon holds no descriptor on them
 * (/proc/PID/fd), both are accepted (the second serve serves the old setup), a client connected across
 * the switch and a new one read data written before and after it, status and metrics say evacuated, the
 * commands that need the old stack (list, remap, scan, export-map, import-map) answer "evacuated: the old devices are
 * released"; then the old main vanishes (every I/O fails) and clients go on unaffected; from the switch
 * on, stop included, no error line. The new disk holds the clients' data (read raw after stop).
 */
import t from 'tap';
import { readdirSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, run, MiB, sparseImage, startServer, tempDir, REMAPD_BIN } from '../helpers';
import { spawnPython } from '../helpers/python';
import { logRecords, qemuIo, qemuIoClean, readFileRange } from '../helpers/remap-setup';
import { attachLoop, createSetup, httpGet, parseProm, sampleValue, until } from '../helpers/loopdev';
import { failingDisk } from '../helpers/failing-disk';

const SIZE = 16 * MiB;
const BAD = 12 * MiB;

/** Paths the process has open, resolved (/proc/PID/fd). */
function openPaths(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

/** Whether the process has `dev` open. */
function holds(pid: number, dev: string): boolean {
  return openPaths(pid).includes(realpathSync(dev));
}

t.test('evacuate --switch releases the old main and spare', async (t) => {
  const dir = tempDir(t, 'remapd-retire-');
  // main: a real block device with a real media error (loop over a failing FUSE file).
  const disk = await failingDisk(t, { sizeBytes: SIZE, fill: 'random', dir });
  const main = disk.device;
  await disk.failRead(BAD, 4096, 'EIO');
  const spare = await attachLoop(t, sparseImage(join(dir, 'spare.img'), 16 * MiB));
  const target = await attachLoop(t, sparseImage(join(dir, 'new.img'), SIZE));
  await createSetup(main, spare);
  const control = join(dir, 'ctl.sock');
  const ctl = (args: string[]) => run(process.execPath, [REMAPD_BIN, ...args, '--control', control], { timeoutMs: 120_000 });
  const srv = await startServer(t, {
    image: main,
    dir,
    extraArgs: ['--spare', spare, '--control', control, '--state-dir', dir, '--metrics', '127.0.0.1:0', '--scan-rate', '4M'],
  });
  const serving = logRecords(srv).find((r) => r.msg === 'remapd serving');
  const endpoint = ((serving?.endpoints ?? []) as string[]).find((e) => e.startsWith('metrics:'))?.slice('metrics:'.length);
  t.ok(endpoint, 'metrics endpoint logged', { log: srv.log() });
  const scrape = async () => parseProm((await httpGet(endpoint!)).body);

  // Data written before the evacuation.
  t.ok(qemuIoClean(await qemuIo(srv.uri, ['write -P 0x11 1M 1M'])), 'client writes 0x11 at 1M before the evacuation');

  // Before the switch the old devices are the daemon's.
  t.ok(holds(srv.pid, main) && holds(srv.pid, spare), 'before: the daemon has main and spare open');
  const createBefore = await run(process.execPath, [REMAPD_BIN, 'create', '--force', '--main', main, '--spare', spare]);
  t.not(createBefore.code, 0, 'before: create --force on the spare is refused', { out: describe(createBefore) });
  t.match(createBefore.stderr, /in use/, 'before: "in use"');
  const dir2 = tempDir(t, 'remapd-retire2-');
  const second = ['--spare', spare, '--no-scan', '--control', join(dir2, 'ctl.sock'), '--state-dir', dir2];
  const serveBefore = await run(process.execPath, [REMAPD_BIN, 'serve', '--main', main, '--socket', join(dir2, 'nbd.sock'), ...second], {
    timeoutMs: 60_000,
  });
  t.not(serveBefore.code, 0, 'before: a second serve on main+spare is refused', { out: describe(serveBefore) });
  t.match(serveBefore.stderr, /in use/, 'before: "in use"');

  // Copy, then switch with a client connected across it.
  t.equal((await ctl(['evacuate', '--to', target])).code, 0, 'evacuate --to the new loop device');
  const phase = async () => (JSON.parse((await ctl(['evacuate', '--json'])).stdout) as { phase: string }).phase;
  t.ok(await until(async () => (await phase()) === 'done', 300_000, 300), 'copy done');
  const evac = JSON.parse((await ctl(['evacuate', '--json'])).stdout) as { unreadableOffsets: number[] };
  t.same(evac.unreadableOffsets, [BAD], "the failing disk's bad block is listed");
  const marker = join(dir, 'switched');
  const py = spawnPython(
    `
import nbd, os, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
print('ready', flush=True)
while not os.path.exists(sys.argv[2]): time.sleep(0.05)
ok1 = h.pread(65536, 1048576) == b'\\x11' * 65536
h.pwrite(b'\\x22' * 65536, 4 * 1048576)
ok2 = h.pread(65536, 4 * 1048576) == b'\\x22' * 65536
h.flush()
h.shutdown()
print('ok' if ok1 and ok2 else 'mismatch %s %s' % (ok1, ok2), flush=True)
`,
    [srv.uri, marker],
  );
  t.ok(await until(() => py.output().includes('ready'), 60_000), 'client connected before the switch', { pyOut: py.output() });
  const sw = await ctl(['evacuate', '--switch']);
  t.equal(sw.code, 0, 'evacuate --switch', { out: describe(sw) });
  await run('sh', ['-c', `: > ${marker}`]);

  // (1) No descriptor on the old devices; the new one is open.
  t.notOk(holds(srv.pid, main), 'after: the daemon no longer has the old main open', { fds: openPaths(srv.pid) });
  t.notOk(holds(srv.pid, spare), 'after: the daemon no longer has the old spare open', { fds: openPaths(srv.pid) });
  t.ok(holds(srv.pid, target), 'after: it has the new disk open');

  // (3) Client I/O continues across the switch; a new client reads both writes.
  t.equal(await py.done, 0, 'the connected client stayed connected', { pyOut: py.output() });
  t.match(py.output(), /^ok$/m, 'it reads the data written before the switch and its write after it');
  const r = await qemuIo(srv.uri, ['read -P 0x11 1M 1M', 'read -P 0x22 4M 64k', 'write -P 0x33 8M 64k', 'read -P 0x33 8M 64k']);
  t.ok(qemuIoClean(r), 'a new client reads the data written before and after the switch, writes and reads back', { out: describe(r) });

  // (4) Status and metrics answer and say evacuated.
  const st = await ctl(['status', '--json']);
  t.equal(st.code, 0, 'status answers', { out: describe(st) });
  const sj = JSON.parse(st.stdout) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  t.equal(sj.main, target, 'status: main is the new disk');
  t.same(
    sj.evacuated,
    { to: target, main, spare, released: true, releasedAt: sj.evacuated?.releasedAt },
    'status: evacuated, old devices released',
  );
  t.equal(sj.spare, null, 'status: no spare in use');
  t.notOk(sj.scan || sj.health, 'status: no scan or health of the old main');
  t.equal(sj.evacuate.phase, 'switched', 'status: evacuation switched');
  const human = await ctl(['status']);
  t.match(human.stdout, new RegExp(`evacuated +to ${target}; old main ${main} and spare ${spare} released at`), 'human status says so');
  const m = await scrape();
  t.equal(sampleValue(m, 'remapd_evacuated'), 1, 'metrics: remapd_evacuated 1');
  t.equal(sampleValue(m, 'remapd_spare_blocks_free'), undefined, 'metrics: no spare samples any more');
  t.equal(sampleValue(m, 'remapd_health_score'), undefined, 'metrics: no health score of the old main');
  t.ok((sampleValue(m, 'remapd_connections') ?? -1) >= 0, 'metrics: the rest answers');

  // (5) Commands that need the old stack: a clear error.
  const mapfile = join(dir, 'found.map');
  writeFileSync(mapfile, '# Mapfile\n0x00000000  ?  1\n0x00000000  0x00100000  +\n0x00100000  0x00001000  -\n0x00101000  0x00EFF000  +\n');
  const needOld = [
    ['list'],
    ['remap', '0+4096'],
    ['scan', 'status'],
    ['export-map', '--format', 'ddrescue'],
    ['import-map', mapfile, '--format', 'ddrescue'],
  ];
  for (const args of needOld) {
    const c = await ctl(args);
    t.not(c.code, 0, `${args[0]} refused`, { out: describe(c) });
    t.match(c.stderr, /evacuated: the old devices are released/, `${args.join(' ')}: "evacuated: the old devices are released"`);
  }
  t.ok(srv.isRunning(), 'the daemon still runs');

  // (2) The locks are free: the spare may be re-created, the old setup served by another daemon.
  const serveAfter = await startServer(t, { image: main, dir: dir2, extraArgs: second });
  t.ok(serveAfter.isRunning(), 'after: a second serve on the old main+spare starts');
  const r2 = await qemuIo(serveAfter.uri, ['read -P 0x11 1M 1M']);
  t.ok(qemuIoClean(r2), 'and serves the old setup', { out: describe(r2) });
  t.equal((await serveAfter.stop()).code, 0, 'the second serve stops cleanly');
  const createAfter = await run(process.execPath, [REMAPD_BIN, 'create', '--force', '--main', main, '--spare', spare]);
  t.equal(createAfter.code, 0, 'after: create --force on the old spare is accepted', { out: describe(createAfter) });

  // The dying disk is pulled: the daemon, no longer holding it, does not notice.
  await disk.vanish(true);
  const r3 = await qemuIo(srv.uri, ['read -P 0x11 1M 1M', 'write -P 0x44 12M 4k', 'read -P 0x44 12M 4k']);
  t.ok(qemuIoClean(r3), 'old main gone: clients still read and write the new disk', { out: describe(r3) });
  t.equal((await ctl(['status', '--json'])).code, 0, 'old main gone: status answers');

  // (6) Stop is clean: exit 0, no error-level line from the switch on (the bad block logged before it).
  const exit = await srv.stop();
  t.equal(exit.code, 0, 'stop: exit 0');
  const records = logRecords(srv);
  const switched = records.findIndex((l) => /now serving the new disk/.test(String(l.msg)));
  t.ok(switched > 0, 'the switch is logged');
  const errors = records.slice(switched).filter((l) => typeof l.level === 'number' && l.level >= 50);
  t.same(errors, [], 'no error-level log line after the switch, stop included');
  t.ok(
    logRecords(srv).some((l) => l.msg === 'stopped'),
    'stopped',
  );

  // The new disk holds the data (read raw, the daemon gone).
  t.ok(
    readFileRange(target, 1 * MiB, MiB).every((b) => b === 0x11),
    'new disk: data written before the switch',
  );
  t.ok(
    readFileRange(target, 4 * MiB, 65536).every((b) => b === 0x22),
    'new disk: the write across the switch',
  );
  t.ok(
    readFileRange(target, 8 * MiB, 65536).every((b) => b === 0x33),
    'new disk: the write after the switch',
  );
});

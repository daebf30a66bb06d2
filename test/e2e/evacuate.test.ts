/**
 * `remapd evacuate`: an ext4 made through an NBD client (nbdfuse + loop device + mkfs), then a copy onto
 * a new disk while fio's nbd engine runs a write+verify workload on the rest of the export and one block
 * stays unreadable; the copy is verified (sha256 = the target's), the unreadable block is in the ddrescue
 * mapfile; `--switch` with a libnbd client connected across it; then `cmp` with an image taken through
 * NBD before the switch, and `e2fsck -fn` plus file checksums on the new disk. Second test: a restart
 * during the copy resumes it from the saved progress.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, run, MiB, sleep, killGroup, sparseImage, REMAPD_BIN } from '../helpers';
import { spawnPython } from '../helpers/python';
import { createRemapSetup, startRemapd, remapctl, qemuIo, qemuIoClean } from '../helpers/remap-setup';
import { until, runUnderPty } from '../helpers/loopdev';

const SIZE = 64 * MiB;
const BAD = 62 * MiB;

interface Evac {
  phase: string;
  unreadable: number;
  unreadableOffsets: number[];
  sha256: string | null;
  mapfile: string | null;
  bytesCopied: number;
  size: number;
  error: string | null;
}

async function evacStatus(control: string): Promise<Evac> {
  const r = await run(process.execPath, [REMAPD_BIN, 'evacuate', '--json', '--control', control]);
  return JSON.parse(r.stdout) as Evac;
}

function sha256File(path: string, length: number): string {
  return createHash('sha256').update(readFileSync(path).subarray(0, length)).digest('hex');
}

t.test('evacuate under fio, switch with a client connected, cmp and fsck', async (t) => {
  const s = await createRemapSetup(t, {
    mainBytes: SIZE,
    spareBytes: 16 * MiB,
    faults: [{ op: 'read', offset: BAD, length: 4096, error: 'EIO' }],
  });
  const srv = await startRemapd(t, s, ['--no-scan', '--state-dir', s.dir]);
  const target = sparseImage(join(s.dir, 'new.img'), SIZE);

  // ext4 on the first 32 MiB, made and filled through an NBD client.
  const mnt = join(s.dir, 'fuse');
  const fsdir = join(s.dir, 'fs');
  mkdirSync(mnt);
  mkdirSync(fsdir);
  const fuse = spawn('nbdfuse', [mnt, '--unix', s.socket], { stdio: 'ignore', detached: true });
  let loop = '';
  let mounted = false;
  const cleanupFs = async () => {
    if (mounted) await run('umount', [fsdir]);
    mounted = false;
    if (loop) await run('losetup', ['-d', loop]);
    loop = '';
    await run('fusermount3', ['-u', mnt]);
    await sleep(200);
    if (fuse.exitCode === null) killGroup(fuse.pid, 'SIGTERM');
  };
  t.teardown(cleanupFs);
  for (let i = 0; i < 100 && !existsSync(join(mnt, 'nbd')); i++) await sleep(100);
  const lo = await run('losetup', ['-f', '--show', '--sizelimit', String(32 * MiB), join(mnt, 'nbd')]);
  t.equal(lo.code, 0, 'loop device over nbdfuse', { out: describe(lo) });
  loop = lo.stdout.trim();
  t.equal((await run('mkfs.ext4', ['-F', '-q', loop], { timeoutMs: 120_000 })).code, 0, 'mkfs.ext4 through NBD');
  t.equal((await run('mount', [loop, fsdir])).code, 0, 'mount');
  mounted = true;
  const fill = await run('sh', [
    '-c',
    `set -e; cd ${fsdir}; head -c 6000000 /dev/urandom > big; for i in $(seq 1 50); do head -c $((i * 997)) /dev/urandom > f$i; done; md5sum big f* > ${s.dir}/SUMS; sync`,
  ]);
  t.equal(fill.code, 0, 'files written', { out: describe(fill) });
  await cleanupFs();

  // fio write+verify on [32M, 60M) while the copy runs (rate-limited so they overlap).
  const fio = run(
    'fio',
    [
      '--name=evac',
      '--ioengine=nbd',
      `--uri=${srv.uri}`,
      '--rw=randwrite',
      '--bs=16k',
      '--offset=32M',
      '--size=28M',
      '--iodepth=8',
      '--loops=2',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
    ],
    { timeoutMs: 600_000 },
  );
  const start = await remapctl(s, ['evacuate', '--to', target, '--rate', '8M', '--json']);
  t.equal(start.code, 0, 'evacuate --to', { out: describe(start) });
  t.equal(JSON.parse(start.stdout).phase, 'copying', 'copying');
  const f = await fio;
  t.equal(f.code, 0, 'fio write+verify passed during the copy', { out: describe(f) });
  const watch = await remapctl(s, ['evacuate', '--watch', '--json', '--interval', '0.5'], 600_000);
  t.equal(watch.code, 0, 'evacuate --watch --json ends', { out: describe(watch) });
  const lines = watch.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Evac);
  const done = lines[lines.length - 1];
  t.equal(done.phase, 'done', 'the copy is done', { done });
  t.same(done.unreadableOffsets, [BAD], 'the unreadable block is listed');
  t.equal(done.sha256, sha256File(target, SIZE), 'sha256 reported = the target image');
  const listed = await run('ddrescuelog', ['-b', '4096', '-l-', done.mapfile ?? '']);
  t.equal(listed.stdout, `${BAD / 4096}\n`, 'the mapfile (checked by ddrescuelog) lists it');
  const st = JSON.parse((await remapctl(s, ['status', '--json'])).stdout);
  t.equal(st.evacuate.phase, 'done', 'remapd status shows the evacuation');

  // Rewrite the unreadable block (mirrored), then take an image of the export through NBD.
  t.ok(qemuIoClean(await qemuIo(srv.uri, [`write -P 0x77 ${BAD} 4k`])), 'client rewrites the unreadable block');
  const image = join(s.dir, 'export.img');
  const copy = await run('nbdcopy', [srv.uri, image], { timeoutMs: 300_000 });
  t.equal(copy.code, 0, 'nbdcopy of the export', { out: describe(copy) });

  // A client connected across the switch.
  const marker = join(s.dir, 'switched');
  const py = spawnPython(
    `
import nbd, os, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b'\\xa5' * 65536, 60 * 1048576 + 524288)
print('ready', flush=True)
while not os.path.exists(sys.argv[2]): time.sleep(0.05)
h.pwrite(b'\\x5a' * 65536, 60 * 1048576 + 524288)
ok = h.pread(65536, 60 * 1048576 + 524288) == b'\\x5a' * 65536
h.pwrite(b'\\xa5' * 65536, 60 * 1048576 + 524288)
h.flush()
print('ok' if ok else 'mismatch', flush=True)
`,
    [srv.uri, marker],
  );
  t.ok(await until(() => py.output().includes('ready'), 30_000), 'client connected and wrote', { pyOut: py.output() });
  // The same bytes the client wrote are in the image too: write them there (nbdcopy ran before).
  const img = readFileSync(image);
  img.fill(0xa5, 60 * MiB + 524288, 60 * MiB + 524288 + 65536);
  writeFileSync(image, img);

  const sw = await remapctl(s, ['evacuate', '--switch']);
  t.equal(sw.code, 0, 'evacuate --switch', { out: describe(sw) });
  writeFileSync(marker, '');
  t.equal(await py.done, 0, 'the client stayed connected', { pyOut: py.output() });
  t.match(py.output(), /ok/, 'its write after the switch reads back');
  const after = JSON.parse((await remapctl(s, ['status', '--json'])).stdout);
  t.equal(after.evacuate.phase, 'switched', 'status: switched');
  t.ok(qemuIoClean(await qemuIo(srv.uri, ['read -P 0xa5 60.5M 64k'])), 'a new client reads the new disk');
  await srv.stop();

  const c = await run('cmp', [image, target]);
  t.equal(c.code, 0, 'cmp: the new disk is byte-identical to the export', { out: describe(c) });
  const l2 = await run('losetup', ['-r', '-f', '--show', '--sizelimit', String(32 * MiB), target]);
  const dev = l2.stdout.trim();
  t.teardown(() => run('losetup', ['-d', dev]));
  const fsck = await run('e2fsck', ['-fn', dev], { timeoutMs: 120_000 });
  t.equal(fsck.code, 0, 'e2fsck -fn on the new disk is clean', { out: describe(fsck) });
  const m = await run('mount', ['-o', 'ro', dev, fsdir]);
  if (m.code === 0) {
    const sums = await run('sh', ['-c', `cd ${fsdir} && md5sum -c --quiet ${s.dir}/SUMS`]);
    t.equal(sums.code, 0, 'file checksums on the new disk', { out: describe(sums) });
    await run('umount', [fsdir]);
  } else t.fail('mount the new disk', { out: describe(m) });

  // A restart after the switch serves the new disk, not the configured main.
  const srv2 = await startRemapd(t, s, ['--no-scan', '--state-dir', s.dir]);
  // (62M is out: the test's fault rules still apply to whatever is served as main.)
  const r2 = await qemuIo(srv2.uri, ['read -P 0xa5 60.5M 64k']);
  t.ok(qemuIoClean(r2), "after a restart: still the new disk (the client's last write reads back)", { out: describe(r2) });
  const st2 = JSON.parse((await remapctl(s, ['status', '--json'])).stdout);
  t.equal(st2.main, target, 'status: main is the new disk');
  t.same(st2.evacuated, { to: target, main: s.main, spare: s.spare, released: true, releasedAt: null }, 'status: evacuated');
});

t.test('a restart during the copy resumes it', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: SIZE, spareBytes: 16 * MiB, fill: 'random' });
  const srv = await startRemapd(t, s, ['--no-scan', '--state-dir', s.dir]);
  const target = sparseImage(join(s.dir, 'new.img'), SIZE);
  t.equal((await remapctl(s, ['evacuate', '--to', target, '--rate', '8M'])).code, 0, 'started');
  t.ok(await until(async () => (await evacStatus(s.control)).bytesCopied >= 16 * MiB, 60_000, 200), 'a quarter copied');
  await srv.stop();
  const saved = JSON.parse(readFileSync(join(s.dir, 'disk.evacuate.json'), 'utf8'));
  t.ok(saved.cursor > 0 && saved.cursor < SIZE && saved.phase === 'copying', `progress saved at ${saved.cursor}`);
  await startRemapd(t, s, ['--no-scan', '--state-dir', s.dir]);
  const first = await evacStatus(s.control);
  t.ok(first.bytesCopied >= saved.cursor, 'resumed where it stopped, not from 0', { first });
  // On a terminal --watch draws a progress bar, redrawn in place, until the copy is done.
  const pty = await runUnderPty(
    [process.execPath, REMAPD_BIN, 'evacuate', '--watch', '--interval', '0.3', '--control', s.control],
    'done +\\[#{40}\\] 100\\.0%',
    1,
    300,
  );
  t.ok(pty.matched, 'evacuate --watch on a terminal: a bar that ends full', { out: pty.output.slice(-2000) });
  t.match(pty.output, /copying\s+\[#*\.+\] \d+\.\d%.*\/s\s+ETA \S+\s+unreadable 0/, 'a partial bar with rate, ETA and unreadable count');
  // eslint-disable-next-line no-control-regex -- terminal escape sequences are what is tested
  t.match(pty.output, /\x1b\[\d+F\x1b\[J/, 'redrawn in place (cursor up, clear)');
  const w = await remapctl(s, ['evacuate', '--watch', '--json'], 600_000);
  const last = JSON.parse(w.stdout.trim().split('\n').pop()!) as Evac;
  t.equal(last.phase, 'done', 'done after the restart', { last });
  const c = await run('cmp', [s.main, target]);
  t.equal(c.code, 0, 'cmp main and the new disk', { out: describe(c) });
});

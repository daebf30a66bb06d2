/**
 * The export as a real block device without the nbd kernel module: nbdfuse exposes it as a file,
 * losetup turns that into /dev/loopN, then mkfs.ext4, mount, write files, umount, e2fsck -fn,
 * remount and verify checksums. Cleanup (umount, losetup -d, fusermount3 -u) runs even on failure.
 */
import t from 'tap';
import { mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { withServer, run, describe, MiB, logTail, sleep, killGroup } from '../helpers';

const SIZE = 256 * MiB;

t.test('nbdfuse + loop device + ext4', async (t) => {
  const { dir, server } = await withServer(t, { sizeBytes: SIZE });
  const mnt = join(dir, 'fuse');
  const fsdir = join(dir, 'fs');
  mkdirSync(mnt);
  mkdirSync(fsdir);
  let loop = '';
  let mounted = false;
  const fuse = spawn('nbdfuse', [mnt, '--unix', server.socket], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let fuseErr = '';
  fuse.stderr?.on('data', (b: Buffer) => (fuseErr += b.toString()));
  t.teardown(async () => {
    if (mounted) await run('umount', [fsdir], { timeoutMs: 30_000 });
    if (loop) await run('losetup', ['-d', loop], { timeoutMs: 30_000 });
    await run('fusermount3', ['-u', mnt], { timeoutMs: 30_000 });
    await sleep(200);
    if (fuse.exitCode === null) killGroup(fuse.pid, 'SIGTERM');
  });

  const dev = join(mnt, 'nbd');
  for (let i = 0; i < 100 && !existsSync(dev); i++) await sleep(100);
  t.ok(existsSync(dev), 'nbdfuse exposes mnt/nbd', { fuseErr, log: logTail(server) });
  if (!existsSync(dev)) return;

  const lo = await run('losetup', ['-f', '--show', dev], { timeoutMs: 30_000 });
  t.equal(lo.code, 0, 'losetup -f --show', { out: describe(lo) });
  loop = lo.stdout.trim();
  if (!loop) return;
  const bs = await run('blockdev', ['--getsize64', loop], { timeoutMs: 10_000 });
  t.equal(bs.stdout.trim(), String(SIZE), 'loop device has the export size');

  const mkfs = await run('mkfs.ext4', ['-F', '-q', loop], { timeoutMs: 120_000 });
  t.equal(mkfs.code, 0, 'mkfs.ext4', { out: describe(mkfs), log: logTail(server) });
  const m = await run('mount', [loop, fsdir], { timeoutMs: 30_000 });
  t.equal(m.code, 0, 'mount', { out: describe(m) });
  if (m.code !== 0) return;
  mounted = true;

  const script = `set -e; cd ${fsdir}
head -c 20971520 /dev/urandom > big.bin
mkdir small; for i in $(seq 1 200); do head -c $((i * 517)) /dev/urandom > small/f$i; done
find . -type f ! -name SUMS -print0 | sort -z | xargs -0 md5sum > SUMS
sync`;
  const w = await run('sh', ['-c', script], { timeoutMs: 120_000 });
  t.equal(w.code, 0, 'write a 20 MiB file and 200 small files, sync', { out: describe(w) });
  const fstrim = await run('fstrim', ['-v', fsdir], { timeoutMs: 60_000 });
  t.equal(fstrim.code, 0, 'fstrim (TRIM through fuse/loop)', { out: describe(fstrim) });
  const u = await run('umount', [fsdir], { timeoutMs: 60_000 });
  t.equal(u.code, 0, 'umount', { out: describe(u) });
  mounted = u.code !== 0;

  await run('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches'], { timeoutMs: 10_000 });
  const fsck = await run('e2fsck', ['-fn', loop], { timeoutMs: 120_000 });
  t.equal(fsck.code, 0, 'e2fsck -fn is clean', { out: describe(fsck) });

  const m2 = await run('mount', ['-o', 'ro', loop, fsdir], { timeoutMs: 30_000 });
  t.equal(m2.code, 0, 'read-only remount', { out: describe(m2) });
  if (m2.code === 0) {
    mounted = true;
    const v = await run('sh', ['-c', `cd ${fsdir} && md5sum -c --quiet SUMS`], { timeoutMs: 60_000 });
    t.equal(v.code, 0, 'all file checksums verify after remount', { out: describe(v) });
    const u2 = await run('umount', [fsdir], { timeoutMs: 60_000 });
    mounted = u2.code !== 0;
  }
  t.ok(server.isRunning(), 'server still running');
});

/**
 * A real kernel block device whose media fails where a test says: a loop device over the `disk` file of
 * test/tools/failing-fuse.c (a FUSE file system that fails chosen sectors with EIO or another errno).
 *
 * Why: faults injected inside remapd sit above the page cache; a real dying disk sits below it. Tests of
 * failure claims run remapd on this device with no `--faults`, so the errors come from the kernel.
 *
 * - buildFailingFuse(): compiles the C program on demand into a cache directory (keyed by a hash of the
 *   source, so an edit rebuilds; never committed as a binary).
 * - failingDisk(t, …): image + FUSE mount + loop device (`losetup --direct-io=on`, 512 or 4096-byte
 *   sectors), torn down at teardown and, as a last resort, at process exit: `losetup -d` (deferred by
 *   the kernel while someone still holds the device), stop the FUSE program, `umount -l`.
 * - The returned object sets faults and reads counters through the control file. All offsets and
 *   lengths here are BYTES of the image (multiples of 512); the C program speaks 512-byte sectors.
 *
 * Why `--direct-io=on` on the loop device: the loop driver then submits each block request to the FUSE
 * file as one direct, asynchronous I/O and hands back the errno the FUSE program chose (ENODATA stays
 * ENODATA, as a SCSI medium error does), so a reader of /dev/loopN sees one error per request, as from
 * a disk. A buffered loop device also delivers per-request errors (FUSE direct_io bypasses the backing
 * file's page cache either way) but does synchronous I/O one request at a time per worker, and on Linux
 * 6.1 (Debian 12, the kernel lab) turns every errno into EIO (the 6.18 host kernel passes it). Either way the
 * *loop device's own* page cache is in front of any buffered reader of /dev/loopN: that is exactly what
 * remapd must bypass.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, describe } from './exec';
import { REPO_ROOT, sleep } from './server';
import { tempDir, sparseImage, randomImage } from './tmp';

interface Teardown {
  teardown(fn: () => unknown): void;
}

export const FAILING_FUSE_SOURCE = join(REPO_ROOT, 'test', 'tools', 'failing-fuse.c');
const SECTOR = 512;

/** Errno names the C program accepts for failing ranges, vanish and fail-fsync. */
export type FaultErrno =
  | 'EIO'
  | 'ENODATA'
  | 'EILSEQ'
  | 'EBADMSG'
  | 'ENOSPC'
  | 'EROFS'
  | 'EACCES'
  | 'EPERM'
  | 'ENXIO'
  | 'ENODEV'
  | 'ETIMEDOUT'
  | 'EBADF'
  | 'EINVAL'
  | 'ENOLINK';

/** 'pending': reads fail until a successful write covers the sector (a drive reallocates it then). */
export type FaultKind = 'read' | 'write' | 'rw' | 'pending';

export interface FailingDiskStats {
  reads: number;
  writes: number;
  read_errors: number;
  write_errors: number;
  fsyncs: number;
  bytes_read: number;
  bytes_written: number;
}

/** Requests that touched one 512-byte sector (failed requests included). */
export interface SectorHits {
  /** byte offset of the sector in the image */
  offset: number;
  reads: number;
  writes: number;
}

export interface FailingDiskOptions {
  /** size of a new image (default 64 MiB); ignored when `image` exists */
  sizeBytes?: number;
  /** use this image file instead of a new one in the temp dir */
  image?: string;
  /** content of a new image (default zero: sparse) */
  fill?: 'zero' | 'random';
  /** logical block size of the loop device (default 512) */
  sectorSize?: 512 | 4096;
  /** `losetup --direct-io=on` (default true; see the header comment) */
  directIo?: boolean;
  /** attach a loop device (default true); false: tests use `file` directly */
  loop?: boolean;
  /** directory for the image and the mount point (default: a new temp dir) */
  dir?: string;
}

export interface FailingDisk {
  /** the image behind the FUSE file (read it directly to check what reached the "media") */
  image: string;
  mountpoint: string;
  /** the FUSE file that fails (`MOUNTPOINT/disk`) */
  file: string;
  /** the loop device over `file` (empty when loop: false) */
  device: string;
  sizeBytes: number;
  sectorSize: number;
  /** whether the loop device really uses direct I/O (sysfs loop/dio) */
  loopDirectIo: boolean;
  /** send control commands (one per line); returns the answer text; rejects on an error answer */
  command(lines: string): Promise<string>;
  fail(kind: FaultKind, offset: number, length?: number, errno?: FaultErrno): Promise<void>;
  failRead(offset: number, length?: number, errno?: FaultErrno): Promise<void>;
  failWrite(offset: number, length?: number, errno?: FaultErrno): Promise<void>;
  /** unreadable until written (a pending sector) */
  failPending(offset: number, length?: number, errno?: FaultErrno): Promise<void>;
  heal(kind: FaultKind, offset: number, length?: number): Promise<void>;
  /** requests touching [offset, offset+length) sleep `ms` first (0 removes) */
  delay(ms: number, offset: number, length?: number): Promise<void>;
  /** every I/O fails (default ENXIO; EIO through the loop device) until vanish(false) */
  vanish(on: boolean, errno?: FaultErrno): Promise<void>;
  failFsync(on: boolean, errno?: FaultErrno): Promise<void>;
  /** remove every fault */
  clear(): Promise<void>;
  /** zero all counters */
  resetCounters(): Promise<void>;
  stats(): Promise<FailingDiskStats>;
  /** per-sector hit counters over [offset, offset+length) */
  hits(offset: number, length?: number): Promise<SectorHits[]>;
  /** the active fault list as the program prints it */
  faults(): Promise<string[]>;
  /** detach, unmount, stop (idempotent; also runs at teardown) */
  teardown(): Promise<void>;
}

/** Mounts, loop devices and FUSE processes of this process, cleaned up at exit as a last resort. */
const live = new Set<{ device: string; mountpoint: string; pid?: number }>();
process.on('exit', () => {
  for (const l of live) {
    if (l.device) spawnSync('losetup', ['-d', l.device]);
    if (l.pid) {
      try {
        process.kill(l.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    spawnSync('umount', ['-l', l.mountpoint]);
  }
});

/** Compile test/tools/failing-fuse.c (once per source version) and return the binary's path. */
export async function buildFailingFuse(): Promise<string> {
  const source = readFileSync(FAILING_FUSE_SOURCE);
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const dir = process.env.REMAPD_TEST_TOOLS_CACHE ?? join(tmpdir(), 'remapd-test-tools');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, `failing-fuse-${hash}`);
  if (existsSync(bin)) return bin;
  const flags = await run('pkg-config', ['--cflags', '--libs', 'fuse3'], { timeoutMs: 30_000 });
  if (flags.code !== 0) throw new Error(`pkg-config fuse3 failed (install libfuse3-dev pkg-config):\n${describe(flags)}`);
  const tmp = `${bin}.${process.pid}.tmp`;
  const cc = await run('cc', ['-O2', '-Wall', '-o', tmp, FAILING_FUSE_SOURCE, ...flags.stdout.trim().split(/\s+/)], { timeoutMs: 120_000 });
  if (cc.code !== 0) throw new Error(`compiling ${FAILING_FUSE_SOURCE} failed:\n${describe(cc)}`);
  renameSync(tmp, bin); // atomic: parallel test files never run a half-written binary
  return bin;
}

function sectorsOf(offset: number, length: number): { start: number; count: number } {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset % SECTOR || length % SECTOR) {
    throw new Error(`failing-disk: offset ${offset} and length ${length} must be non-negative multiples of ${SECTOR} (length > 0)`);
  }
  return { start: offset / SECTOR, count: length / SECTOR };
}

async function waitFor(fn: () => boolean, limitMs: number): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (!fn()) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

function isMounted(mountpoint: string): boolean {
  try {
    return readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[1] === mountpoint);
  } catch {
    return false;
  }
}

/** Create the image, mount it through failing-fuse and attach a loop device. */
export async function failingDisk(t: Teardown, o: FailingDiskOptions = {}): Promise<FailingDisk> {
  const bin = await buildFailingFuse();
  const dir = o.dir ?? tempDir(t, 'remapd-fd-');
  const image = o.image ?? join(dir, 'media.img');
  if (!existsSync(image)) {
    const size = o.sizeBytes ?? 64 * 1024 * 1024;
    if (o.fill === 'random') randomImage(image, size);
    else sparseImage(image, size);
  }
  const sizeBytes = statSync(image).size;
  const mountpoint = join(dir, 'fuse');
  mkdirSync(mountpoint, { recursive: true });
  const file = join(mountpoint, 'disk');
  const ctl = join(mountpoint, 'ctl');
  const sectorSize = o.sectorSize ?? 512;
  const entry: { device: string; mountpoint: string; pid?: number } = { device: '', mountpoint };
  live.add(entry);

  // -f: foreground (we own the process); auto_unmount: the kernel mount goes away if we die.
  const proc: ChildProcess = spawn(bin, [image, mountpoint, '-f', '-o', 'auto_unmount'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  entry.pid = proc.pid;
  let stderr = '';
  let exited = false;
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exit = new Promise<void>((r) => proc.on('close', () => ((exited = true), r())));

  let done = false;
  const teardown = async (): Promise<void> => {
    if (done) return;
    done = true;
    if (entry.device) {
      // busy (still opened by a daemon that outlives the test): the kernel detaches on last close
      for (let i = 0; i < 20; i++) {
        const r = await run('losetup', ['-d', entry.device], { timeoutMs: 30_000 });
        if (r.code === 0 || /No such device|not a loop|No such file/i.test(r.stderr)) break;
        await sleep(250);
      }
    }
    await run('umount', ['-l', mountpoint], { timeoutMs: 30_000 });
    if (!exited) {
      try {
        process.kill(proc.pid!, 'SIGTERM');
      } catch {
        /* gone */
      }
      const timer = setTimeout(() => {
        try {
          process.kill(proc.pid!, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, 5000);
      await exit;
      clearTimeout(timer);
    }
    if (isMounted(mountpoint)) await run('umount', ['-l', mountpoint], { timeoutMs: 30_000 });
    live.delete(entry);
  };
  t.teardown(teardown);

  if (!(await waitFor(() => exited || (isMounted(mountpoint) && existsSync(file)), 20_000))) {
    await teardown();
    throw new Error(`failing-fuse did not mount ${mountpoint} within 20 s: ${stderr}`);
  }
  if (exited) throw new Error(`failing-fuse exited before mounting: ${stderr}`);

  let device = '';
  let loopDirectIo = false;
  if (o.loop !== false) {
    const args = ['-f', '--show', '--sector-size', String(sectorSize)];
    if (o.directIo !== false) args.push('--direct-io=on');
    const r = await run('losetup', [...args, file], { timeoutMs: 30_000 });
    if (r.code !== 0) {
      await teardown();
      throw new Error(`losetup ${args.join(' ')} ${file} failed:\n${describe(r)}`);
    }
    device = r.stdout.trim();
    entry.device = device;
    const name = device.replace('/dev/', '');
    try {
      loopDirectIo = readFileSync(`/sys/block/${name}/loop/dio`, 'utf8').trim() === '1';
    } catch {
      loopDirectIo = false;
    }
  }

  const command = async (lines: string): Promise<string> => {
    const fh = await open(ctl, 'r+');
    try {
      const text = lines.endsWith('\n') ? lines : `${lines}\n`;
      let writeError: unknown;
      try {
        await fh.write(text);
      } catch (e) {
        writeError = e;
      }
      const chunks: Buffer[] = [];
      const buf = Buffer.alloc(64 * 1024);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        chunks.push(Buffer.from(buf.subarray(0, bytesRead)));
      }
      const answer = Buffer.concat(chunks).toString('utf8');
      if (writeError || /^error:/m.test(answer))
        throw new Error(`failing-fuse control "${lines.trim()}": ${answer.trim() || String(writeError)}`);
      return answer;
    } finally {
      await fh.close();
    }
  };

  const fail = async (kind: FaultKind, offset: number, length = SECTOR, errno: FaultErrno = 'EIO'): Promise<void> => {
    const { start, count } = sectorsOf(offset, length);
    await command(`fail ${kind} ${start} ${count} ${errno}`);
  };

  return {
    image,
    mountpoint,
    file,
    device,
    sizeBytes,
    sectorSize,
    loopDirectIo,
    command,
    fail,
    failRead: (offset, length, errno) => fail('read', offset, length, errno),
    failWrite: (offset, length, errno) => fail('write', offset, length, errno),
    failPending: (offset, length, errno) => fail('pending', offset, length, errno),
    heal: async (kind, offset, length = SECTOR) => {
      const { start, count } = sectorsOf(offset, length);
      await command(`heal ${kind} ${start} ${count}`);
    },
    delay: async (ms, offset, length = SECTOR) => {
      const { start, count } = sectorsOf(offset, length);
      await command(`delay ${Math.round(ms)} ${start} ${count}`);
    },
    vanish: async (on, errno) => {
      await command(on ? `vanish on ${errno ?? 'ENXIO'}` : 'vanish off');
    },
    failFsync: async (on, errno) => {
      await command(on ? `fail-fsync on ${errno ?? 'EIO'}` : 'fail-fsync off');
    },
    clear: async () => {
      await command('clear');
    },
    resetCounters: async () => {
      await command('reset');
    },
    stats: async () => {
      const a = (await command('stats')).trim().split(/\s+/);
      const s: Record<string, number> = {};
      for (let i = 0; i + 1 < a.length; i += 2) s[a[i]] = Number(a[i + 1]);
      return s as unknown as FailingDiskStats;
    },
    hits: async (offset, length = SECTOR) => {
      const { start, count } = sectorsOf(offset, length);
      const out: SectorHits[] = [];
      for (let s = start; s < start + count; s += 65536) {
        const n = Math.min(65536, start + count - s);
        for (const line of (await command(`hits ${s} ${n}`)).split('\n')) {
          const m = /^(\d+) (\d+) (\d+)$/.exec(line);
          if (m) out.push({ offset: Number(m[1]) * SECTOR, reads: Number(m[2]), writes: Number(m[3]) });
        }
      }
      return out;
    },
    faults: async () => (await command('faults')).split('\n').filter((l) => l && l !== 'end'),
    teardown,
  };
}

/** Drop the kernel's clean caches (page cache of every block device included), as after a reboot. */
export async function dropCaches(): Promise<void> {
  const r = await run('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`drop_caches failed:\n${describe(r)}`);
}

/** Remove a directory tree if it exists (no error when a lazy unmount left it busy). */
export function removeQuietly(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    /* a lazily unmounted FUSE dir can stay busy for a moment */
  }
}

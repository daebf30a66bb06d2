/**
 * FileBackend on real sparse files and real loop devices, and the native addon.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/file-backend.test.js
 */
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync, spawn } from 'child_process';
import { BackendError } from '../../storage/backend';
import { openBackend, openFileBackend } from '../../storage/file-backend';
import * as native from '../../storage/native';
import { byteOffset } from '../../units';

const KiB = 1024;
const MiB = 1024 * 1024;

function tempDir(tt: { teardown(fn: () => unknown): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'remapd-fb-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function sparseFile(file: string, size: number): string {
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, size);
  return file;
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + 1) & 0xff || 1; // never zero
  return b;
}

async function expectBackendError(tt: tap.Test, p: Promise<unknown>, code: string, offset: number | undefined, msg: string): Promise<void> {
  try {
    await p;
    tt.fail(`${msg}: expected ${code}, but it succeeded`);
  } catch (err) {
    tt.ok(err instanceof BackendError, `${msg}: is a BackendError`);
    tt.equal((err as BackendError).code, code, `${msg}: code ${code}`);
    if (offset !== undefined) tt.equal((err as BackendError).offset, offset, `${msg}: offset ${offset}`);
  }
}

const blocks = (file: string): number => fs.statSync(file).blocks;

t.test('regular sparse file: read, write, trim, zero, extents', async (tt) => {
  const dir = tempDir(tt);
  const file = sparseFile(path.join(dir, 'main.img'), 64 * MiB);
  const b = await openFileBackend(file, {});
  tt.teardown(() => b.close());
  tt.equal(b.kind, 'file');
  tt.equal(b.size, 64 * MiB);
  tt.equal(b.logicalBlockSize, 512);
  tt.same(b.stableIds, {});
  tt.equal(b.readOnly, false);
  tt.equal(b.canPunchHoles, native.nativeAvailable);
  tt.equal(b.canReportHoles, native.nativeAvailable);

  const data = pattern(1 * MiB, 1);
  await b.write(byteOffset(8 * MiB), data);
  await b.write(byteOffset(20 * MiB), pattern(4 * KiB, 2));
  await b.sync();
  const got = Buffer.alloc(1 * MiB);
  await b.read(byteOffset(8 * MiB), 1 * MiB, got, 0);
  tt.ok(got.equals(data), 'read back what was written');

  // Reads into the middle of a larger target leave the rest of the target alone.
  const big = Buffer.alloc(8 * KiB, 0xee);
  await b.read(byteOffset(8 * MiB), 4 * KiB, big, 2 * KiB);
  tt.ok(big.subarray(2 * KiB, 6 * KiB).equals(data.subarray(0, 4 * KiB)), 'targetOffset honoured');
  tt.equal(big[2 * KiB - 1], 0xee);
  tt.equal(big[6 * KiB], 0xee);

  // Write with sourceOffset/length.
  const src = pattern(16 * KiB, 3);
  await b.write(byteOffset(30 * MiB), src, 4 * KiB, 8 * KiB);
  const back = Buffer.alloc(8 * KiB);
  await b.read(byteOffset(30 * MiB), 8 * KiB, back, 0);
  tt.ok(back.equals(src.subarray(4 * KiB, 12 * KiB)), 'sourceOffset/length honoured');

  if (!native.nativeAvailable) {
    tt.skip(`hole punching and SEEK_DATA: native addon not available (${native.nativeStatus})`, () => {});
    return;
  }

  tt.same(
    await b.extents(byteOffset(0), 16 * MiB),
    [
      { length: 8 * MiB, hole: true },
      { length: 1 * MiB, hole: false },
      { length: 7 * MiB, hole: true },
    ],
    'SEEK_DATA/SEEK_HOLE map of the first 16 MiB',
  );
  tt.same(
    await b.extents(byteOffset(8 * MiB + 4 * KiB), 8 * KiB),
    [{ length: 8 * KiB, hole: false }],
    'a range inside data is one data extent',
  );
  const all = await b.extents(byteOffset(0), b.size);
  tt.equal(
    all.reduce((s, e) => s + e.length, 0),
    b.size,
    'extents cover the whole range exactly',
  );
  tt.same(
    all.filter((e) => !e.hole).map((e) => e.length),
    [1 * MiB, 4 * KiB, 8 * KiB],
    'three data extents: 1 MiB at 8 MiB, 4 KiB at 20 MiB, 8 KiB at 30 MiB',
  );

  const before = blocks(file);
  await b.trim(byteOffset(8 * MiB), 512 * KiB);
  const after = blocks(file);
  tt.equal(before - after, (512 * KiB) / 512, 'trim deallocated exactly 512 KiB (stat().blocks)');
  const z = Buffer.alloc(512 * KiB, 0xff);
  await b.read(byteOffset(8 * MiB), 512 * KiB, z, 0);
  tt.ok(
    z.every((x) => x === 0),
    'trimmed range reads as zeroes',
  );
  await b.read(byteOffset(8 * MiB + 512 * KiB), 4 * KiB, got, 0);
  tt.ok(got.subarray(0, 4 * KiB).equals(data.subarray(512 * KiB, 516 * KiB)), 'data after the trim intact');
  tt.same(
    (await b.extents(byteOffset(8 * MiB), 1 * MiB)).map((e) => e.hole),
    [true, false],
    'trimmed part is a hole',
  );

  // Unaligned trim inside a block: the bytes read as zeroes, the neighbours survive.
  await b.trim(byteOffset(8 * MiB + 600 * KiB + 100), 1000);
  const u = Buffer.alloc(3000);
  await b.read(byteOffset(8 * MiB + 600 * KiB - 900), 3000, u, 0);
  const expect = Buffer.from(data.subarray(600 * KiB - 900, 600 * KiB + 2100));
  expect.fill(0, 1000, 2000);
  tt.ok(u.equals(expect), 'unaligned trim zeroes exactly the range');

  // zero(noHole=false) punches; zero(noHole=true) keeps blocks allocated.
  const b1 = blocks(file);
  await b.zero(byteOffset(8 * MiB + 768 * KiB), 64 * KiB, false);
  tt.equal(b1 - blocks(file), (64 * KiB) / 512, 'zero without noHole deallocates');
  const b2 = blocks(file);
  await b.zero(byteOffset(40 * MiB), 256 * KiB, true);
  tt.ok(blocks(file) - b2 >= (256 * KiB) / 512, 'zero with noHole allocates the range');
  const zz = Buffer.alloc(256 * KiB, 0xff);
  await b.read(byteOffset(40 * MiB), 256 * KiB, zz, 0);
  tt.ok(
    zz.every((x) => x === 0),
    'noHole-zeroed range reads zeroes',
  );
  // Zero over written data, noHole.
  await b.zero(byteOffset(20 * MiB), 4 * KiB, true);
  await b.read(byteOffset(20 * MiB), 4 * KiB, got, 0);
  tt.ok(
    got.subarray(0, 4 * KiB).every((x) => x === 0),
    'noHole zero over data reads zeroes',
  );
});

t.test('fallback without the native addon: trim writes zeroes, extents say data', async (tt) => {
  const dir = tempDir(tt);
  const file = sparseFile(path.join(dir, 'f.img'), 8 * MiB);
  const b = await openFileBackend(file, { useNative: false });
  tt.teardown(() => b.close());
  tt.equal(b.canPunchHoles, false);
  tt.equal(b.canReportHoles, false);
  await b.write(byteOffset(1 * MiB), pattern(1 * MiB, 4));
  await b.sync();
  const before = blocks(file);
  await b.trim(byteOffset(1 * MiB), 256 * KiB + 3);
  await b.sync();
  tt.equal(blocks(file), before, 'trim fallback does not deallocate');
  const r = Buffer.alloc(256 * KiB + 4, 0xff);
  await b.read(byteOffset(1 * MiB), r.length, r, 0);
  tt.ok(
    r.subarray(0, 256 * KiB + 3).every((x) => x === 0),
    'but the range reads zeroes',
  );
  tt.not(r[256 * KiB + 3], 0, 'byte after the range kept');
  await b.zero(byteOffset(3 * MiB), 2 * MiB + 5, true); // > one zero chunk
  const r2 = Buffer.alloc(2 * MiB + 5, 0xff);
  await b.read(byteOffset(3 * MiB), r2.length, r2, 0);
  tt.ok(
    r2.every((x) => x === 0),
    'zero fallback over more than one chunk',
  );
  tt.same(await b.extents(byteOffset(0), b.size), [{ length: 8 * MiB, hole: false }]);
});

t.test('read past EOF of a regular file within size yields zeroes', async (tt) => {
  const dir = tempDir(tt);
  const file = path.join(dir, 'short.img');
  fs.writeFileSync(file, pattern(10000, 5));
  const b = await openBackend(file, {});
  tt.teardown(() => b.close());
  tt.equal(b.size, 10000);
  fs.truncateSync(file, 5000); // someone shrank it under us
  const r = Buffer.alloc(6000, 0xff);
  await b.read(byteOffset(4000), 6000, r, 0);
  tt.ok(r.subarray(0, 1000).equals(pattern(10000, 5).subarray(4000, 5000)), 'data up to EOF');
  tt.ok(
    r.subarray(1000).every((x) => x === 0),
    'zeroes after EOF',
  );
});

t.test('errors are BackendErrors with code and offset', async (tt) => {
  const dir = tempDir(tt);
  const file = sparseFile(path.join(dir, 'e.img'), 1 * MiB);
  const b = await openBackend(file, {});
  const buf = Buffer.alloc(8192);
  await expectBackendError(tt, b.read(byteOffset(1 * MiB - 4096), 8192, buf, 0), 'EINVAL', 1 * MiB - 4096, 'read past size');
  await expectBackendError(tt, b.write(byteOffset(1 * MiB), buf), 'EINVAL', 1 * MiB, 'write past size');
  await expectBackendError(tt, b.read(byteOffset(0), 8192, Buffer.alloc(10), 0), 'EINVAL', 0, 'target too small');
  await b.close();
  await expectBackendError(tt, b.read(byteOffset(4096), 512, buf, 0), 'EBADF', 4096, 'read after close');

  const ro = await openBackend(file, { readOnly: true });
  tt.equal(ro.readOnly, true);
  await expectBackendError(tt, ro.write(byteOffset(512), buf, 0, 512), 'EROFS', 512, 'write on read-only');
  await expectBackendError(tt, ro.trim(byteOffset(512), 512), 'EROFS', 512, 'trim on read-only');
  await ro.read(byteOffset(0), 512, buf, 0);
  await ro.close();

  await expectBackendError(tt, openBackend(path.join(dir, 'missing.img'), {}), 'ENOENT', 0, 'missing file');
  try {
    await openBackend(dir, {});
    tt.fail('directory opened');
  } catch (err) {
    tt.equal((err as BackendError).code, 'EINVAL');
    tt.match((err as Error).message, /is a directory, not a regular file or a block device/);
  }
  try {
    await openBackend('/dev/null', {});
    tt.fail('character device opened');
  } catch (err) {
    tt.match((err as Error).message, /\/dev\/null is a character device/);
  }
  // A real OS error from the kernel, with the offset of the failing call: fd closed behind our back.
  const b2 = await openFileBackend(file, {});
  fs.closeSync(b2.fd);
  await expectBackendError(tt, b2.write(byteOffset(65536), buf, 0, 512), 'EBADF', 65536, 'kernel error code and offset');
});

t.test('parallel reads and writes at queue depth 64', async (tt) => {
  const dir = tempDir(tt);
  const file = sparseFile(path.join(dir, 'p.img'), 16 * MiB);
  const b = await openBackend(file, {});
  tt.teardown(() => b.close());
  const n = 256;
  await Promise.all(Array.from({ length: n }, (_, i) => b.write(byteOffset(i * 64 * KiB), pattern(64 * KiB, i))));
  const bufs = Array.from({ length: n }, () => Buffer.alloc(64 * KiB));
  await Promise.all(bufs.map((buf, i) => b.read(byteOffset(i * 64 * KiB), 64 * KiB, buf, 0)));
  tt.ok(
    bufs.every((buf, i) => buf.equals(pattern(64 * KiB, i))),
    'every block read back',
  );
});

function losetupAvailable(): string | undefined {
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'losetup is not installed';
  }
  if (process.getuid && process.getuid() !== 0) return 'loop devices need root';
  if (!fs.existsSync('/dev/loop-control')) return '/dev/loop-control is missing';
  return undefined;
}

function attachLoop(tt: { teardown(fn: () => unknown): void }, image: string, sectorSize?: number): string {
  const args = ['--find', '--show'];
  if (sectorSize) args.push('--sector-size', String(sectorSize));
  args.push(image);
  const dev = execFileSync('losetup', args, { encoding: 'utf8' }).trim();
  tt.teardown(() => {
    try {
      execFileSync('losetup', ['--detach', dev]);
    } catch {
      /* already gone */
    }
  });
  return dev;
}

const loopSkip = losetupAvailable();

for (const sectorSize of [512, 4096]) {
  t.test(`loop device, sector size ${sectorSize}`, { skip: loopSkip ? `skipped: ${loopSkip}` : false }, async (tt) => {
    const dir = tempDir(tt);
    const image = sparseFile(path.join(dir, 'loop.img'), 32 * MiB);
    const dev = attachLoop(tt, image, sectorSize === 512 ? undefined : sectorSize);
    const b = await openFileBackend(dev, {});
    tt.teardown(() => b.close());
    tt.equal(b.kind, 'block');
    tt.equal(b.size, 32 * MiB, 'size from sysfs');
    tt.equal(b.logicalBlockSize, sectorSize, 'logical sector size from sysfs');
    const st = fs.statSync(image);
    tt.same(
      b.stableIds,
      { serial: `loop-backing:${st.dev}:${st.ino}` },
      'a loop device is identified by its backing file (device and inode), no WWN',
    );
    tt.equal(b.canReportHoles, false);
    tt.equal(b.canPunchHoles, native.nativeAvailable);
    tt.same(await b.extents(byteOffset(0), b.size), [{ length: 32 * MiB, hole: false }]);

    const data = pattern(4 * MiB, 9);
    await b.write(byteOffset(4 * MiB), data);
    await b.sync();
    const r = Buffer.alloc(4 * MiB);
    await b.read(byteOffset(4 * MiB), 4 * MiB, r, 0);
    tt.ok(r.equals(data), 'read back through the loop device');
    // The bytes really reached the backing file.
    const fd = fs.openSync(image, 'r');
    const direct = Buffer.alloc(4096);
    fs.readSync(fd, direct, 0, 4096, 4 * MiB + 8192);
    fs.closeSync(fd);
    tt.ok(direct.equals(data.subarray(8192, 8192 + 4096)), 'backing file has the data');

    const before = blocks(image);
    await b.trim(byteOffset(4 * MiB), 1 * MiB);
    await b.read(byteOffset(4 * MiB), 1 * MiB, r, 0);
    tt.ok(
      r.subarray(0, 1 * MiB).every((x) => x === 0),
      'trimmed range reads zeroes',
    );
    if (native.nativeAvailable) {
      tt.equal(before - blocks(image), MiB / 512, 'trim deallocated 1 MiB of the backing file');
    }

    // Unaligned trim: the sector-aligned middle goes to the kernel, the edges are written.
    const start = 6 * MiB + sectorSize - 100;
    const len = 3 * sectorSize;
    await b.trim(byteOffset(start), len);
    const u = Buffer.alloc(len + 200);
    await b.read(byteOffset(start - 100), len + 200, u, 0);
    const exp = Buffer.from(data.subarray(start - 100 - 4 * MiB, start + len + 100 - 4 * MiB));
    exp.fill(0, 100, 100 + len);
    tt.ok(u.equals(exp), 'unaligned trim on a block device zeroes exactly the range');

    // zero with noHole (BLKZEROOUT) over data.
    await b.zero(byteOffset(7 * MiB), 256 * KiB, true);
    await b.read(byteOffset(7 * MiB), 256 * KiB, r, 0);
    tt.ok(
      r.subarray(0, 256 * KiB).every((x) => x === 0),
      'BLKZEROOUT range reads zeroes',
    );
    await b.read(byteOffset(7 * MiB + 256 * KiB), 4096, r, 0);
    tt.ok(r.subarray(0, 4096).equals(data.subarray(3 * MiB + 256 * KiB, 3 * MiB + 256 * KiB + 4096)), 'after it intact');

    if (native.nativeAvailable) {
      // Raw BLKDISCARD through the addon: the loop driver punches the backing file.
      await b.write(byteOffset(16 * MiB), pattern(2 * MiB, 10));
      await b.sync();
      const b0 = blocks(image);
      await native.blkDiscard(b.fd, 16 * MiB, 2 * MiB);
      tt.equal(b0 - blocks(image), (2 * MiB) / 512, 'BLKDISCARD deallocated 2 MiB of the backing file');
      try {
        await native.blkDiscard(b.fd, 16 * MiB + 1, sectorSize);
        tt.fail('unaligned BLKDISCARD accepted');
      } catch (err) {
        tt.equal((err as native.NativeError).code, 'EINVAL', 'unaligned BLKDISCARD is EINVAL');
      }
    }

    const ro = await openBackend(dev, { readOnly: true });
    tt.equal(ro.size, 32 * MiB);
    await ro.close();

    // exclusive: O_EXCL claims the device; a second exclusive open is EBUSY.
    const ex = await openBackend(dev, { exclusive: true });
    await expectBackendError(tt, openBackend(dev, { exclusive: true }), 'EBUSY', 0, 'second exclusive open');
    await ex.close();
  });
}

t.test(
  'sendDatagram reaches a Unix datagram socket',
  { skip: native.nativeAvailable ? false : `skipped: ${native.nativeStatus}` },
  async (tt) => {
    const dir = tempDir(tt);
    const sock = path.join(dir, 'notify.sock');
    // Node cannot bind datagram Unix sockets; python3 receives one datagram and prints it.
    const py = spawn(
      'python3',
      [
        '-c',
        'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("ready",flush=True)\nprint(s.recv(4096).decode(),flush=True)',
        sock,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    const ready = new Promise<void>((resolve, reject) => {
      py.on('error', reject);
      py.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('ready\n')) resolve();
      });
    });
    try {
      await ready;
    } catch (err) {
      tt.skip(`python3 not available: ${(err as Error).message}`, () => {});
      return;
    }
    const done = new Promise<void>((resolve) => py.on('close', () => resolve()));
    await native.sendDatagram(sock, 'READY=1\nSTATUS=serving');
    await done;
    tt.equal(out, 'ready\nREADY=1\nSTATUS=serving\n');
    try {
      await native.sendDatagram(path.join(dir, 'nobody.sock'), Buffer.from('X=1'));
      tt.fail('send to a missing socket succeeded');
    } catch (err) {
      tt.equal((err as native.NativeError).code, 'ENOENT');
    }
  },
);

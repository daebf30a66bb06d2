/**
 * `remapd import-map` with maps made by the real tools on a real failing disk: a loop device over the
 * failing FUSE file (test/tools/failing-fuse.c, test/helpers/failing-disk.ts, as the real-disk-*.test.ts
 * tests use) with bad sectors that fail in the kernel (EIO and ENODATA, the errno of a medium error).
 * GNU ddrescue (direct I/O, 512-byte sectors) and badblocks (read-only, 4 KiB blocks) read that device
 * and must find exactly the bad blocks. Then remapd serves THE SAME device (no --faults: every error
 * comes from the kernel) with a fresh spare and a slow scan, and gets each map: its scanner visits the
 * suspect regions before its pass gets there, exactly the bad blocks become pending, and nothing is
 * remapped blindly. Also: malformed files are refused with the line number and exit status 2, before
 * anything is sent.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/e2e/import-map.test.js
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { callControl } from '../../daemon/control-client';
import type { ScanStatus } from '../../health/scanner';
import { describe, run, MiB, sleep, startServer, sparseImage, REMAPD_BIN } from '../helpers';
import { failingDisk, type FailingDisk, type FaultErrno } from '../helpers/failing-disk';
import { createSetup } from '../helpers/loopdev';

t.setTimeout(900_000);
const B = 4096;
const SIZE = 32 * MiB;
const BAD: { offset: number; length: number; errno: FaultErrno }[] = [
  { offset: 5 * MiB, length: B, errno: 'ENODATA' },
  { offset: 17 * MiB + 8 * B, length: 3 * B, errno: 'EIO' },
  { offset: 30 * MiB, length: B, errno: 'EIO' },
];
const BAD_OFFSETS = [5 * MiB, 17 * MiB + 8 * B, 17 * MiB + 9 * B, 17 * MiB + 10 * B, 30 * MiB];

const scan = (ctl: string): Promise<ScanStatus> => callControl(ctl, 'scan.status') as Promise<ScanStatus>;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 240_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** remapd on the failing device itself: a fresh spare, its metadata, a scan slow enough (32 MiB at
 * 64 KiB/s = 512 s a pass; the first bad block is 80 s in) that only the suspects bring the bad blocks. */
async function serveOn(t: { teardown(fn: () => unknown): void }, d: FailingDisk, dir: string): Promise<string> {
  const spare = sparseImage(join(dir, 'spare.img'), 16 * MiB);
  await createSetup(d.device, spare);
  const ctl = join(dir, 'ctl.sock');
  await startServer(t, {
    kind: 'remapd',
    image: d.device,
    dir,
    socket: join(dir, 'nbd.sock'),
    extraArgs: ['--spare', spare, '--control', ctl, '--scan-rate', '64K', '--scan-interval', '1h'],
    readyTimeoutMs: 60_000,
  });
  return ctl;
}

t.test('import-map with real ddrescue and badblocks output from a real failing disk', async (t) => {
  const d = await failingDisk(t, { sizeBytes: SIZE, fill: 'random' });
  for (const b of BAD) await d.failRead(b.offset, b.length, b.errno);
  const dir = join(d.mountpoint, '..');

  // GNU ddrescue, direct I/O, 512-byte sectors, one retry pass: bad areas are exact.
  const mapFile = join(dir, 'rescue.map');
  const dd = await run('ddrescue', ['-d', '-b', '512', '-r1', '-f', d.device, join(dir, 'rescued.img'), mapFile], { timeoutMs: 300_000 });
  t.equal(dd.code, 0, 'ddrescue ran', { out: describe(dd) });
  const listed = await run('ddrescuelog', ['-b', String(B), '-l-', mapFile]);
  t.same(
    listed.stdout.trim().split('\n').map(Number),
    BAD_OFFSETS.map((o) => o / B),
    'ddrescue found exactly the bad blocks',
    { map: readFileSync(mapFile, 'utf8') },
  );

  // badblocks, read-only test, 4 KiB blocks.
  const bbFile = join(dir, 'badblocks.txt');
  const bb = await run('badblocks', ['-b', String(B), '-o', bbFile, d.device], { timeoutMs: 300_000 });
  t.equal(bb.code, 0, 'badblocks ran', { out: describe(bb) });
  t.same(
    readFileSync(bbFile, 'utf8').trim().split('\n').map(Number),
    BAD_OFFSETS.map((o) => o / B),
    'badblocks found exactly the bad blocks',
  );

  const broken = readFileSync(mapFile, 'utf8').replace(/^(0x\S+\s+0x\S+\s+)\+/m, '$1Z');
  writeFileSync(join(dir, 'broken.map'), broken);
  const refused = await run(process.execPath, [
    REMAPD_BIN,
    'import-map',
    join(dir, 'broken.map'),
    '--format',
    'ddrescue',
    '--control',
    '/nonexistent.ctl',
  ]);
  t.equal(refused.code, 2, 'a malformed mapfile: exit 2 before contacting any daemon', { out: describe(refused) });
  t.match(refused.stderr, /broken\.map:\d+: status "Z" is not one of/, 'the error names the line');

  for (const [name, args] of [
    ['ddrescue', [mapFile, '--format', 'ddrescue']],
    ['badblocks', [bbFile, '--format', 'badblocks', '-b', String(B)]],
  ] as const) {
    await t.test(`import the ${name} output into remapd on the same disk`, async (t) => {
      const sub = join(dir, `import-${name}`);
      await run('mkdir', ['-p', sub]);
      const ctl = await serveOn(t, d, sub);
      const first = await waitFor('the scan worker up', async () => {
        const x = await scan(ctl);
        return x.readsDirect !== null && x;
      });
      t.equal(first.readsDirect, true, 'the scan reads main with O_DIRECT (exact blocks need it)');
      t.equal(first.blocks.pending, 0, 'nothing pending before the import');
      const imp = await run(process.execPath, [REMAPD_BIN, 'import-map', ...args, '--control', ctl]);
      t.equal(imp.code, 0, 'import-map', { out: describe(imp) });
      t.match(imp.stdout, /suspect range\(s\), 20480 bytes sent; \d+ queued/, 'five blocks of suspect bytes sent');
      const found = await waitFor('all bad blocks pending', async () => {
        const x = await scan(ctl);
        return x.pendingOffsets.length >= BAD_OFFSETS.length && x;
      });
      t.ok(found.cursorOffset < BAD_OFFSETS[0], `found before the pass got to the first of them (cursor ${found.cursorOffset})`);
      t.same(found.pendingOffsets, BAD_OFFSETS, 'exactly the bad blocks are pending');
      t.ok(found.suspects.visited >= 1, `suspect regions visited: ${found.suspects.visited}`);
      const list = (await callControl(ctl, 'list')) as { remaps: unknown[]; pending: { count: number; offsets: number[] } };
      t.same(list.pending.offsets, BAD_OFFSETS, 'list: the same pending blocks');
      t.equal(list.remaps.length, 0, 'nothing was remapped blindly');
    });
  }
});

/**
 * Reads on a real failing block device (loop over the failing FUSE file, no --faults):
 * - neighbours readable: a client reading 4 KiB blocks in order across an unreadable block gets EIO for
 *   that block only; every other block reads with its data, and no healthy block is marked pending or
 *   remapped (through the page cache, the kernel reads main in 16 KiB folios and readahead windows, so
 *   on Linux 6.18 the three blocks after the bad one fail with it);
 * - one unthrottled scan pass over a 256 MiB device with 3 unreadable sectors marks exactly those 3 blocks
 *   pending (a buffered scanner marks about 500), and it reads the media, not the page cache: with the
 *   whole device cached beforehand, the pass still reads every byte from the disk.
 */
import t from 'tap';
import { callControl } from '../../daemon/control-client';
import type { ScanStatus } from '../../health/scanner';
import { describe, sleep, MiB } from '../helpers';
import { dropCaches } from '../helpers/failing-disk';
import { runPython } from '../helpers/python';
import { realDiskSetup, remapList, nbdPython, BLOCK as B } from '../helpers/real-disk-setup';
import { readFileRange } from '../helpers/remap-setup';

t.setTimeout(600_000);

for (const sectorSize of [512, 4096] as const)
  t.test(`neighbours of an unreadable block read fine and are never blamed (${sectorSize}-byte sectors)`, async (t) => {
    const s = await realDiskSetup(t, { sizeBytes: 16 * MiB, sectorSize });
    const bad = 300;
    await s.disk.failRead(bad * B + 512);
    await dropCaches(); // nothing of main in the page cache: every read below goes to the device
    // A client reading 4 KiB blocks in order across the bad one (as a file copy does), then once more
    // the blocks right before and after it.
    const r = await nbdPython(
      s,
      `
out = {"sweep": {}}
def rd(blk):
    try:
        return h.pread(${B}, blk * ${B}).hex()
    except nbd.Error as e:
        return "error:" + str(e.errno)
for blk in range(${bad - 10}, ${bad + 11}):
    out["sweep"][str(blk)] = rd(blk)
out["after"] = rd(${bad + 1})
out["before"] = rd(${bad - 1})
print(json.dumps(out))
`,
    );
    const sweep = (r.out.sweep ?? {}) as Record<string, string>;
    t.equal(sweep[String(bad)], 'error:EIO', `the unreadable block fails with EIO\n${describe(r.r, 400)}`);
    const wrong: number[] = [];
    for (let b = bad - 10; b <= bad + 10; b++) {
      if (b !== bad && sweep[String(b)] !== readFileRange(s.disk.image, b * B, B).toString('hex')) wrong.push(b);
    }
    t.same(wrong, [], 'every other block of a sequential 4 KiB sweep across it reads, with its data');
    t.equal(r.out.after, readFileRange(s.disk.image, (bad + 1) * B, B).toString('hex'), 'the 4 KiB block right after it reads again');
    t.equal(r.out.before, readFileRange(s.disk.image, (bad - 1) * B, B).toString('hex'), 'the block before it reads again');
    const l = await remapList(s);
    const blamed = l.pending.offsets
      .map((o) => o / B)
      .concat(l.remaps.map((x) => x.mainBlock))
      .filter((b) => b !== bad);
    t.same(blamed, [], `no healthy block is pending or remapped (pending ${JSON.stringify(l.pending.offsets)})`);
  });

t.test('one scan pass marks exactly the blocks with unreadable sectors pending, reading the media', async (t) => {
  const size = 256 * MiB;
  const bads = [1000, 30_000, 60_000];
  // Zero-filled (sparse) image: reads of holes are cheap for the FUSE program on a loaded machine.
  const s = await realDiskSetup(t, {
    sizeBytes: size,
    fill: 'zero',
    scan: true,
    args: ['--scan-rate', '0', '--scan-interval', '1h'],
    deferServe: true,
  });
  for (const b of bads) await s.disk.failRead(b * B + 3 * 512);
  // Fill the page cache with the whole device (buffered reads, skipping the chunks that fail): a scanner
  // that reads through the page cache would then see RAM, not the disk.
  const warm = await runPython(
    `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); size = int(sys.argv[2]); step = 1 << 20; bad = 0
for off in range(0, size, step):
    try:
        os.pread(fd, step, off)
    except OSError:
        bad += 1
print(bad)
`,
    [s.main, String(size)],
    300_000,
  );
  t.equal(warm.code, 0, describe(warm));
  await s.disk.resetCounters();
  await s.start();
  const st = await waitForPass(s.control);
  t.ok(st, 'the first scan pass completed');
  const l = await remapList(s);
  t.same(
    l.pending.offsets.slice().sort((a, b) => a - b),
    bads.map((b) => b * B),
    `exactly the 3 blocks are pending (got ${l.pending.count})`,
  );
  t.same(l.remaps, [], 'nothing remapped');
  const io = await s.disk.stats();
  t.ok(
    io.bytes_read >= size - bads.length * B,
    `the pass read the whole device from the media (${io.bytes_read} of ${size} bytes), not the page cache`,
  );
});

async function waitForPass(ctl: string, limitMs = 480_000): Promise<ScanStatus | undefined> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    const x = (await callControl(ctl, 'scan.status')) as ScanStatus;
    if (x.passesCompleted >= 1) return x;
    await sleep(250);
  }
  return undefined;
}

/**
 * The kernel fault lab's short subset (test/kernel/lab/kernel-lab, docs/TESTING.md): remapd itself runs
 * inside a Debian 6.1 guest and the kernel's nbd client attaches it as /dev/nbd0.
 *  - smoke: the lab works (scsi_debug main, virtio spare, O_DIRECT write/read through nbd0);
 *  - read-errors-exact: scsi_debug MEDIUM ERROR and dm error sectors inside healthy 1 MiB regions; the
 *    scanner marks exactly those blocks pending, neighbours read right.
 * The whole lab (`npm run test:kernel-lab`) takes too long for CI on 2 cores; see docs/TESTING.md.
 * KERNEL_LAB_SUBSET="a b" picks other scenarios ("none": only the replayer check, no guest).
 */
import t from 'tap';
import { join } from 'node:path';
import { closeSync, openSync, readFileSync, writeFileSync, ftruncateSync } from 'node:fs';
import { run, describe, REPO_ROOT, tempDir } from '../helpers';
import { LOG_FLUSH, LOG_FUA, LOG_MARK, readWriteLog, replay, splitPlacement } from '../kernel/lab/log-writes';

const LAB = join(REPO_ROOT, 'test', 'kernel', 'lab', 'kernel-lab');
const SUBSET = (process.env.KERNEL_LAB_SUBSET ?? 'smoke read-errors-exact').split(/\s+/).filter((s) => s && s !== 'none');
t.setTimeout(3000_000);

// The power-cut scenario's replayer on a log written here in the kernel's format (super, then per entry
// a header sector + data): entries, marks and flags parse, and replay to a point applies exactly the
// entries before it, split over two files as main and spare are.
t.test('dm-log-writes replayer', async (t) => {
  const dir = tempDir(t);
  const ss = 512;
  const sectors: Buffer[] = [];
  const sup = Buffer.alloc(ss);
  sup.writeBigUInt64LE(0x6a736677736872n, 0);
  sup.writeBigUInt64LE(1n, 8);
  sup.writeUInt32LE(ss, 24);
  sectors.push(sup);
  let n = 0;
  const entry = (sector: number, count: number, flags: number, fill?: number, mark?: string): void => {
    const h = Buffer.alloc(ss);
    h.writeBigUInt64LE(BigInt(sector), 0);
    h.writeBigUInt64LE(BigInt(count), 8);
    h.writeBigUInt64LE(BigInt(flags), 16);
    h.writeBigUInt64LE(BigInt(mark ? mark.length : 0), 24);
    if (mark) h.write(mark, 32, 'latin1');
    sectors.push(h);
    if (fill !== undefined) sectors.push(Buffer.alloc(count * ss, fill));
    n++;
  };
  entry(0, 0, LOG_MARK, undefined, 'created');
  entry(2, 2, 0, 0xaa); // spare sectors 2-3
  entry(9, 2, 0, 0xbb); // straddles spare (sector 9) and main (sector 10 = main's 0)
  entry(0, 0, LOG_FLUSH);
  entry(12, 1, LOG_FUA, 0xcc);
  entry(0, 0, LOG_MARK, undefined, 'c1');
  sup.writeBigUInt64LE(BigInt(n), 16);
  const logPath = join(dir, 'log.img');
  writeFileSync(logPath, Buffer.concat(sectors));
  const log = readWriteLog(logPath);
  t.equal(log.entries.length, 6, 'six entries');
  t.same(
    log.entries.map((e) => e.mark ?? null),
    ['created', null, null, null, null, 'c1'],
    'mark names',
  );
  t.equal(log.entries[4].flags, LOG_FUA, 'FUA flag');
  const files = ['spare', 'main'].map((f) => join(dir, f));
  const fds = files.map((f) => openSync(f, 'w+'));
  fds.forEach((fd) => ftruncateSync(fd, 10 * ss));
  const place = splitPlacement([
    { fd: fds[0], size: 10 * ss },
    { fd: fds[1], size: 10 * ss },
  ]);
  t.equal(replay(logPath, log, 0, 2, place), 2 * ss, 'replay to entry 2 writes one entry');
  t.equal(readFileSync(files[1]).filter((b) => b !== 0).length, 0, 'main untouched before the straddling write');
  replay(logPath, log, 2, 6, place);
  fds.forEach((fd) => closeSync(fd));
  const spare = readFileSync(files[0]);
  const main = readFileSync(files[1]);
  t.equal(spare[2 * ss], 0xaa, 'spare sector 2');
  t.equal(spare[9 * ss], 0xbb, 'spare sector 9 (first half of the straddling write)');
  t.equal(main[0], 0xbb, 'main sector 0 (its second half)');
  t.equal(main[2 * ss], 0xcc, 'main sector 2 (the FUA write)');
  t.equal(main[3 * ss], 0, 'nothing past it');
});

t.test(`kernel lab: ${SUBSET.join(', ')}`, { skip: SUBSET.length ? false : 'KERNEL_LAB_SUBSET=none' }, async (t) => {
  const r = await run(LAB, SUBSET, { timeoutMs: 2900_000 });
  const lines = r.stdout.split('\n').map((l) => l.trim());
  for (const name of SUBSET) {
    const line = lines.find((l) => l.split(/\s+/)[1] === name);
    t.ok(line?.startsWith('PASS '), `scenario ${name}`, { line, out: line?.startsWith('PASS ') ? undefined : describe(r, 6000) });
  }
  t.match(r.stdout, new RegExp(`kernel-lab: ${SUBSET.length} passed, 0 failed`), 'summary line', { out: describe(r, 3000) });
  t.equal(r.code, 0, 'kernel-lab exit 0');
});

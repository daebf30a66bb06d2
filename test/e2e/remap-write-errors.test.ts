/**
 * Write errors on main through fault injection, seen by real clients:
 * - qemu-io and nbdcopy writes through failing ranges succeed, read back, and land on the spare;
 *   status/list report exactly the failing blocks; everything survives a daemon restart.
 * - a partial write into a block that fails on write is read-modify-written (rest of the block kept).
 * - FUA and FLUSH with remaps; TRIM of a remapped block keeps the remap and reads as zeroes.
 * - ordering: sequential overlapping aio writes to one failing block, and concurrent writes to
 *   different blocks of one failing range: final contents = last write.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createRemapSetup,
  startRemapd,
  statusJson,
  listJson,
  qemuIo,
  qemuIoClean,
  loadFaults,
  readFileRange,
  logRecords,
  writeFaults,
  type FaultRuleSpec,
} from '../helpers/remap-setup';
import { describe, logTail, run, runPython, randomImage, MiB } from '../helpers';

const B = 4096;

/** Blocks (start offsets) that overlap any of the rules. */
function blocksOf(rules: FaultRuleSpec[]): number[] {
  const set = new Set<number>();
  for (const r of rules) {
    for (let b = Math.floor(r.offset / B); b <= Math.floor((r.offset + r.length - 1) / B); b++) set.add(b * B);
  }
  return [...set].sort((a, b) => a - b);
}

t.test('qemu-io and nbdcopy through failing write ranges; status, list, restart', async (t) => {
  const faults: FaultRuleSpec[] = [
    { op: 'write', offset: 1 * MiB, length: 8192, error: 'EIO' }, // two whole blocks
    { op: 'write', offset: 5 * MiB + 512, length: 100, error: 'EIO' }, // a few bytes inside one block
    { op: 'write', offset: 20 * MiB - 2048, length: 4096, error: 'EIO' }, // straddles two blocks
    { op: 'write', offset: 33 * MiB, length: 64 * 1024, error: 'EIO' }, // 16 blocks
    { op: 'write', offset: 64 * MiB - 4096, length: 4096, error: 'EIO' }, // the last block
  ];
  const expected = blocksOf(faults);
  const s = await createRemapSetup(t, { mainBytes: 64 * MiB, faults });
  let srv = await startRemapd(t, s);

  const q = await qemuIo(srv.uri, ['write -P 0xab 1M 64k', 'read -P 0xab 1M 64k', 'write -P 0x5c 5M 4k', 'read -P 0x5c 5M 4k']);
  t.ok(qemuIoClean(q), 'qemu-io write -P / read -P over failing blocks', { out: describe(q), log: logTail(srv) });
  let st = await statusJson(s);
  t.equal(st.remaps.byReason['write-error'], 3, 'qemu-io hit 3 failing blocks (1M, 1M+4K, 5M)');

  // nbdcopy a random image over the whole export (every failing range), then copy it back and compare
  const src = randomImage(join(s.dir, 'src.img'), 64 * MiB);
  const c1 = await run('nbdcopy', [src, srv.uri], { timeoutMs: 180_000 });
  t.equal(c1.code, 0, 'nbdcopy image -> export', { out: describe(c1), log: logTail(srv) });
  const back = join(s.dir, 'back.img');
  const c2 = await run('nbdcopy', [srv.uri, back], { timeoutMs: 180_000 });
  t.equal(c2.code, 0, 'nbdcopy export -> file', { out: describe(c2) });
  const cmp1 = await run('cmp', [src, back]);
  t.equal(cmp1.code, 0, 'copied image is identical (cmp)', { out: describe(cmp1) });

  st = await statusJson(s);
  t.equal(st.remaps.total, expected.length, `status remaps.total = ${expected.length} failing blocks`);
  t.equal(st.remaps.byReason['write-error'], expected.length, 'all remaps have reason write-error');
  t.equal(st.counters.writeErrors >= expected.length, true, 'write errors counted');
  const list = await listJson(s);
  t.same(
    list.remaps.map((e) => e.offset).sort((a, b) => a - b),
    expected,
    'list --json shows exactly the failing blocks',
  );
  t.ok(
    list.remaps.every((e) => e.reason === 'write-error'),
    'list: reasons',
  );

  // the data of remapped blocks really is on the spare, and main kept its old contents there
  const srcBuf = readFileSync(src);
  let onSpare = 0;
  let mainUntouched = 0;
  for (const e of list.remaps) {
    const want = srcBuf.subarray(e.offset, e.offset + B);
    if (readFileRange(s.spare, e.spareBlock * B, B).equals(want)) onSpare++;
    if (!readFileRange(s.main, e.offset, B).equals(want)) mainUntouched++;
  }
  t.equal(onSpare, list.remaps.length, 'every remapped block has its data in the spare block listed');
  t.equal(mainUntouched, list.remaps.length, 'main does not hold the new data of any remapped block');

  // restart (same faults): remaps still there, data still reads back
  await srv.stop('SIGTERM');
  srv = await startRemapd(t, s);
  const list2 = await listJson(s);
  t.same(
    list2.remaps.map((e) => [e.offset, e.spareBlock]).sort((a, b) => a[0] - b[0]),
    list.remaps.map((e) => [e.offset, e.spareBlock]).sort((a, b) => a[0] - b[0]),
    'after restart: same remap table',
  );
  const st2 = await statusJson(s);
  t.equal(st2.remaps.total, expected.length, 'after restart: remaps.total');
  t.equal(st2.remaps.byReason['write-error'], expected.length, 'after restart: byReason.write-error');
  const back2 = join(s.dir, 'back2.img');
  const c3 = await run('nbdcopy', [srv.uri, back2], { timeoutMs: 180_000 });
  t.equal(c3.code, 0, 'nbdcopy after restart', { out: describe(c3) });
  const cmp2 = await run('cmp', [src, back2]);
  t.equal(cmp2.code, 0, 'after restart: data identical (cmp)', { out: describe(cmp2) });
  // a restart WITHOUT the faults still reads the remapped data from the spare
  await srv.stop('SIGTERM');
  writeFaults(s.faultsFile, []);
  srv = await startRemapd(t, s);
  const back3 = join(s.dir, 'back3.img');
  const c4 = await run('nbdcopy', [srv.uri, back3], { timeoutMs: 180_000 });
  const cmp3 = await run('cmp', [src, back3]);
  t.ok(c4.code === 0 && cmp3.code === 0, 'restart without faults: data identical', { out: describe(cmp3) });
  t.ok(srv.isRunning(), 'server running');
});

t.test('partial-block write into a block failing on write: read-modify-write keeps the rest', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB });
  const srv = await startRemapd(t, s);
  const base = 2 * MiB;
  const w = await qemuIo(srv.uri, [`write -P 0x11 ${base} 64k`]);
  t.ok(qemuIoClean(w), 'known pattern written first', { out: describe(w) });
  await loadFaults(s, [{ op: 'write', offset: base + 4096, length: 4096, error: 'EIO' }]);
  // 512 bytes in the middle of the 4 KiB block at base+4K
  const p = await qemuIo(srv.uri, [`write -P 0x22 ${base + 4096 + 1536} 512`]);
  t.ok(qemuIoClean(p), 'partial write succeeds', { out: describe(p), log: logTail(srv) });
  const r = await qemuIo(srv.uri, [
    `read -P 0x11 ${base} ${4096 + 1536}`,
    `read -P 0x22 ${base + 4096 + 1536} 512`,
    `read -P 0x11 ${base + 4096 + 2048} ${2048 + 4096}`,
  ]);
  t.ok(qemuIoClean(r), 'rest of the block (and neighbours) keep the old contents', { out: describe(r) });
  const list = await listJson(s);
  t.same(
    list.remaps.map((e) => e.offset),
    [base + 4096],
    'exactly the failing block is remapped',
  );
  const spareBlock = readFileRange(s.spare, list.remaps[0].spareBlock * B, B);
  const want = Buffer.alloc(B, 0x11);
  want.fill(0x22, 1536, 2048);
  t.ok(spareBlock.equals(want), 'spare holds the merged block (old + new bytes)');
  // a second partial write to the now-remapped block goes to the spare too
  const p2 = await qemuIo(srv.uri, [
    `write -P 0x33 ${base + 4096} 100`,
    `read -P 0x33 ${base + 4096} 100`,
    `read -P 0x11 ${base + 4096 + 100} 1436`,
    `read -P 0x22 ${base + 4096 + 1536} 512`,
  ]);
  t.ok(qemuIoClean(p2), 'second partial write to the remapped block', { out: describe(p2) });
  t.equal((await statusJson(s)).remaps.total, 1, 'still one remap');
});

t.test('FUA, FLUSH and TRIM with remaps', async (t) => {
  const faults: FaultRuleSpec[] = [{ op: 'write', offset: 4 * MiB, length: 32 * 1024, error: 'EIO' }];
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB, faults, fill: 'random' });
  const srv = await startRemapd(t, s);
  const a = await qemuIo(srv.uri, [
    `write -f -P 0x41 ${4 * MiB} 16k`, // FUA write into failing blocks
    `read -P 0x41 ${4 * MiB} 16k`,
    `write -P 0x42 ${4 * MiB + 16384} 16k`,
    'flush',
    `read -P 0x42 ${4 * MiB + 16384} 16k`,
    `write -f -P 0x43 ${4 * MiB} 8k`, // FUA write to blocks already remapped
    `read -P 0x43 ${4 * MiB} 8k`,
    'flush',
  ]);
  t.ok(qemuIoClean(a), 'FUA writes and flushes over failing blocks', { out: describe(a), log: logTail(srv) });
  const st1 = await statusJson(s);
  t.equal(st1.remaps.total, 8, '8 blocks remapped');
  const recs = logRecords(srv).filter((r) => r.msg === 'block remapped to the spare');
  t.equal(recs.length, 8, 'log: 8 "block remapped" lines');
  // the spare holds FUA data even though the daemon never closed: it was synced before the ack
  const list = await listJson(s);
  const first = list.remaps.find((e) => e.offset === 4 * MiB)!;
  t.ok(readFileRange(s.spare, first.spareBlock * B, B).equals(Buffer.alloc(B, 0x43)), 'spare block has the FUA data');

  // TRIM of remapped blocks: remap stays, range reads as zero; neighbours (remapped and not) intact
  const d = await qemuIo(srv.uri, [
    `discard ${4 * MiB + 4096} 8k`,
    `read -P 0 ${4 * MiB + 4096} 8k`,
    `read -P 0x43 ${4 * MiB} 4k`,
    `read -P 0x41 ${4 * MiB + 12288} 4k`,
    `read -P 0x42 ${4 * MiB + 16384} 16k`,
  ]);
  t.ok(qemuIoClean(d), 'discard of remapped blocks reads back as zeroes; neighbours intact', { out: describe(d) });
  const st2 = await statusJson(s);
  t.same(st2.remaps, st1.remaps, 'status remaps unchanged by TRIM');
  t.equal(st2.spare.used, st1.spare.used, 'spare use unchanged by TRIM');
  const list2 = await listJson(s);
  t.same(list2.remaps, list.remaps, 'remap table unchanged by TRIM');
  // write after trim goes to the same spare block
  const w = await qemuIo(srv.uri, [`write -P 0x44 ${4 * MiB + 4096} 4k`, `read -P 0x44 ${4 * MiB + 4096} 4k`]);
  t.ok(qemuIoClean(w), 'write after TRIM', { out: describe(w) });
  t.equal((await statusJson(s)).remaps.total, 8, 'still 8 remaps');
});

const ORDER_PY = String.raw`
import nbd, random, sys, json
uri, base, nblocks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
B = 4096
h = nbd.NBD()
h.connect_uri(uri)
out = {}
# 1. sequential overlapping writes to ONE failing block via aio_pwrite, each completes before the next
rnd = random.Random(7)
model = bytearray(h.pread(B, base))
for i in range(300):
    off = rnd.randrange(0, B)
    ln = rnd.randrange(1, B - off + 1)
    data = bytes([(i * 7 + 1) & 0xff]) * ln
    buf = nbd.Buffer.from_bytearray(data)
    c = h.aio_pwrite(buf, base + off, flags=(nbd.CMD_FLAG_FUA if i % 60 == 0 else 0))
    while not h.aio_command_completed(c):
        h.poll(-1)
    model[off:off + ln] = data
out["one_block_equal"] = bytes(h.pread(B, base)) == bytes(model)
# 2. waves of concurrent writes to DIFFERENT blocks of one failing range; each wave waits for the previous
start = base + B
model = bytearray(h.pread(nblocks * B, start))
for wave in range(6):
    cookies = []
    bufs = []
    for b in rnd.sample(range(nblocks), nblocks):
        off = rnd.choice([0, rnd.randrange(0, B - 1)])
        ln = B - off if off == 0 else rnd.randrange(1, B - off + 1)
        data = rnd.randbytes(ln)
        buf = nbd.Buffer.from_bytearray(data)
        bufs.append(buf)
        cookies.append(h.aio_pwrite(buf, start + b * B + off))
        model[b * B + off:b * B + off + ln] = data
    out.setdefault("inflight", []).append(h.aio_in_flight())
    waiting = set(cookies)
    while waiting:
        for c in [c for c in waiting if h.aio_command_completed(c)]:
            waiting.discard(c)
        if waiting:
            h.poll(-1)
out["range_equal"] = bytes(h.pread(nblocks * B, start)) == bytes(model)
h.flush()
h.shutdown()
print(json.dumps(out))
`;

t.test('writes to failing blocks stay ordered (libnbd aio)', async (t) => {
  const base = 8 * MiB;
  const nblocks = 48;
  const s = await createRemapSetup(t, {
    mainBytes: 16 * MiB,
    fill: 'random',
    faults: [{ op: 'write', offset: base, length: (nblocks + 1) * B, error: 'EIO' }],
  });
  const srv = await startRemapd(t, s);
  const r = await runPython(ORDER_PY, [srv.uri, String(base), String(nblocks)], 180_000);
  let out: { one_block_equal?: boolean; range_equal?: boolean; inflight?: number[] } = {};
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  } catch {
    /* reported below */
  }
  t.equal(r.code, 0, 'python client ran', { out: describe(r), log: logTail(srv) });
  t.equal(out.one_block_equal, true, '300 sequential overlapping writes to one failing block: final = model');
  t.equal(out.range_equal, true, 'concurrent waves to different failing blocks: final = last wave');
  t.ok(
    (out.inflight ?? []).some((n) => n > 1),
    'writes of a wave really were in flight together',
    { inflight: out.inflight },
  );
  const st = await statusJson(s);
  t.equal(st.remaps.total, nblocks + 1, 'every block of the failing range remapped once');
  t.ok(srv.isRunning(), 'server running');
});

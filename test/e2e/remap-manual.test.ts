/**
 * Manual `remapd remap OFFSET+LENGTH` (data copied to the spare, reads identical before/after) and
 * `remapd unremap` (data copied back; refused with a clear message where main cannot be written).
 */
import t from 'tap';
import { createRemapSetup, startRemapd, statusJson, listJson, remapctl, loadFaults, readFileRange } from '../helpers/remap-setup';
import { describe, logTail, runPython, MiB } from '../helpers';

const B = 4096;

const READ_PY = String.raw`
import nbd, sys, hashlib
h = nbd.NBD(); h.connect_uri(sys.argv[1])
print(hashlib.sha256(h.pread(int(sys.argv[3]), int(sys.argv[2]))).hexdigest())
`;
const WRITE_PY = String.raw`
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(bytes([int(sys.argv[4])]) * int(sys.argv[3]), int(sys.argv[2]))
h.flush()
`;

async function hashOf(uri: string, offset: number, length: number): Promise<string> {
  const r = await runPython(READ_PY, [uri, String(offset), String(length)]);
  if (r.code !== 0) throw new Error(describe(r));
  return r.stdout.trim();
}

t.test('remap and unremap by hand', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 32 * MiB, fill: 'random' });
  const srv = await startRemapd(t, s);
  const at = 10 * MiB;
  const len = 64 * 1024;
  const before = await hashOf(srv.uri, at - B, len + 2 * B);
  const mainBefore = readFileRange(s.main, at, len);

  const r = await remapctl(s, ['remap', `${at}+${len}`, '--json']);
  t.equal(r.code, 0, 'remapd remap exits 0', { out: describe(r), log: logTail(srv) });
  const res = JSON.parse(r.stdout || '{}') as { results: Record<string, number[]> };
  t.equal(res.results?.migrated?.length, 16, '16 blocks migrated');
  t.equal(await hashOf(srv.uri, at - B, len + 2 * B), before, 'reads identical after remap');
  const st = await statusJson(s);
  t.equal(st.remaps.byReason.manual, 16, 'status: 16 manual remaps');
  const list = await listJson(s);
  let copied = 0;
  for (const e of list.remaps) if (readFileRange(s.spare, e.spareBlock * B, B).equals(readFileRange(s.main, e.offset, B))) copied++;
  t.equal(copied, 16, 'spare blocks hold copies of the main blocks');
  const again = await remapctl(s, ['remap', `${at}+${B}`, '--json']);
  t.same(JSON.parse(again.stdout || '{}').results, { 'already-remapped': [at] }, 'remapping again: already-remapped');

  // new data to the remapped range goes to the spare, not to main
  const w = await runPython(WRITE_PY, [srv.uri, String(at), String(len), String(0x3c)]);
  t.equal(w.code, 0, 'write to the remapped range', { out: describe(w) });
  t.ok(readFileRange(s.main, at, len).equals(mainBefore), 'main unchanged by writes to remapped blocks');
  const newHash = await hashOf(srv.uri, at, len);

  // unremap the first half: data copied back to main
  const u = await remapctl(s, ['unremap', `${at}+${len / 2}`, '--json']);
  t.equal(u.code, 0, 'remapd unremap exits 0', { out: describe(u) });
  t.equal(JSON.parse(u.stdout || '{}').results?.unremapped?.length, 8, '8 blocks unremapped');
  t.equal(await hashOf(srv.uri, at, len), newHash, 'reads identical after unremap');
  t.ok(readFileRange(s.main, at, len / 2).equals(Buffer.alloc(len / 2, 0x3c)), 'main now holds the data of the unremapped blocks');
  t.equal((await statusJson(s)).remaps.total, 8, '8 remaps left');

  // unremap where main cannot be written: refused, clear message, block stays remapped, data intact
  const badAt = at + len / 2 + 2 * B;
  await loadFaults(s, [{ op: 'write', offset: badAt + 10, length: 1, error: 'EIO' }]);
  const u2 = await remapctl(s, ['unremap', `${at + len / 2}+${len / 2}`]);
  t.not(u2.code, 0, 'unremap over an unwritable block exits non-zero', { out: describe(u2) });
  t.match(
    u2.stderr,
    new RegExp(`main device cannot be written at byte ${badAt}.*stays remapped`),
    'message names the offset and says it stays remapped',
  );
  t.match(u2.stderr, /done before/, 'message says what was done before');
  const list2 = await listJson(s);
  t.ok(
    list2.remaps.some((e) => e.offset === badAt),
    'the unwritable block is still remapped',
  );
  t.equal(list2.remaps.length, 6, 'the two blocks before it were unremapped, the rest kept');
  t.equal(await hashOf(srv.uri, at, len), newHash, 'data identical after the refused unremap');
  // the remap/unremap commands refuse bad ranges with a message
  const bad = await remapctl(s, ['remap', `${32 * MiB}+4096`]);
  t.not(bad.code, 0, 'remap past the end refused');
  t.match(bad.stderr, /past the device/, 'clear message for a range past the end');
  t.ok(srv.isRunning(), 'server running');
});

/**
 * A manual remap of block b1 racing a client write of [b1, b2] where b2 fails on write. The write's
 * first attempt on main fails (after a delay), it is retried block by block, and the retry of b1 is
 * slow. The move of b1 must not copy b1's old contents to the spare while the client's retry still
 * lands on main: the acknowledged write must read back.
 */
t.test('manual remap racing a write whose main attempt fails and is retried per block', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB });
  const srv = await startRemapd(t, s);
  const b1 = 4 * MiB;
  const b2 = b1 + B;
  const w0 = await runPython(WRITE_PY, [srv.uri, String(b1), String(2 * B), String(0x10)]);
  t.equal(w0.code, 0, 'old contents written', { out: describe(w0) });
  await loadFaults(s, [
    { op: 'write', offset: b1, length: B, delayMs: 5000 }, // every write of b1 is slow (but works)
    { op: 'write', offset: b2, length: B, error: 'EIO' }, // b2 fails on write
  ]);
  const writer = runPython(WRITE_PY, [srv.uri, String(b1), String(2 * B), String(0x20)], 60_000);
  await new Promise((r) => setTimeout(r, 500)); // the write's first attempt is in its delay now
  const m = await remapctl(s, ['remap', `${b1}+${B}`, '--json']);
  const w = await writer;
  t.equal(w.code, 0, 'client write acknowledged', { out: describe(w), log: logTail(srv) });
  t.equal(m.code, 0, 'manual remap done', { out: describe(m) });
  const got = await hashOf(srv.uri, b1, 2 * B);
  const want = (await import('node:crypto'))
    .createHash('sha256')
    .update(Buffer.alloc(2 * B, 0x20))
    .digest('hex');
  t.equal(got, want, 'the acknowledged write reads back in both blocks (not the old contents of b1)');
  const list = await listJson(s);
  t.same(
    list.remaps.map((e) => e.offset).sort((a, b) => a - b),
    [b1, b2],
    'both blocks remapped',
  );
});

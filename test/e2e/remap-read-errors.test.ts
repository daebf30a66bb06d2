/**
 * Read errors on main: a flaky block (fails three times, then reads) is rescued to the spare; a block that
 * never reads gives the client EIO at the block's offset (structured reply error chunk), is logged and
 * pending; a write to it lands on the spare and reads of it then succeed while main still fails.
 */
import t from 'tap';
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
} from '../helpers/remap-setup';
import { describe, logTail, runPython, MiB } from '../helpers';

const B = 4096;

t.test('flaky block (count: 3) is rescued to the spare', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB });
  const srv = await startRemapd(t, s);
  const at = 3 * MiB;
  const w = await qemuIo(srv.uri, [`write -P 0x5a ${at} 16k`]);
  t.ok(qemuIoClean(w), 'pattern written', { out: describe(w) });
  // Three failures: the 16k read, then its half [at, at+8k) in the bisection, then the block itself;
  // its retry reads. Only a block whose own read failed is blamed (a failed piece spanning two blocks
  // that then reads says nothing about which of them is weak).
  await loadFaults(s, [{ op: 'read', offset: at + 4096 + 100, length: 200, error: 'EIO', count: 3 }]);
  const r = await qemuIo(srv.uri, [`read -P 0x5a ${at} 16k`]);
  t.ok(qemuIoClean(r), 'read over the flaky block returns the right data', { out: describe(r), log: logTail(srv) });
  const st = await statusJson(s);
  t.equal(st.remaps.byReason['read-error'], 1, 'status: one read-error remap');
  t.equal(st.remaps.total, 1, 'status: one remap in all');
  t.equal(st.counters.rescued, 1, 'status: counters.rescued = 1');
  t.equal(st.pending.count, 0, 'nothing pending');
  const list = await listJson(s);
  t.same(
    list.remaps.map((e) => [e.offset, e.reason]),
    [[at + 4096, 'read-error']],
    'list: the flaky block, reason read-error',
  );
  t.ok(readFileRange(s.spare, list.remaps[0].spareBlock * B, B).equals(Buffer.alloc(B, 0x5a)), 'spare block holds the rescued data');
  t.ok(
    logRecords(srv).some((l) => l.offset === at + 4096 && /rescued/.test(String(l.msg))),
    'log: rescue with the block offset',
  );
  // make main fail for good: the block still reads (from the spare)
  await loadFaults(s, [{ op: 'read', offset: at + 4096, length: 4096, error: 'EIO' }]);
  const r2 = await qemuIo(srv.uri, [`read -P 0x5a ${at} 16k`]);
  t.ok(qemuIoClean(r2), 'rescued block reads from the spare while main fails', { out: describe(r2) });
});

const READ_PY = String.raw`
import nbd, sys, json, errno
uri, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
h = nbd.NBD()
h.connect_uri(uri)
out["structured"] = h.get_structured_replies_negotiated()
chunks = []
def cb(subbuf, offset, status, err):
    e = err if isinstance(err, int) else (err.value if hasattr(err, "value") else err[0] if isinstance(err, list) else None)
    chunks.append({"offset": offset, "len": len(subbuf), "status": status, "err": e})
    return 0
try:
    h.pread_structured(n, off, cb)
    out["ok"] = True
except nbd.Error as ex:
    out["ok"] = False
    out["errno"] = ex.errno
    out["errnum"] = ex.errnum
out["chunks"] = chunks
# simple replies too
h2 = nbd.NBD()
h2.set_request_structured_replies(False)
h2.connect_uri(uri)
try:
    h2.pread(n, off)
    out["simple_ok"] = True
except nbd.Error as ex:
    out["simple_ok"] = False
    out["simple_errno"] = ex.errno
print(json.dumps(out))
`;

t.test('block that never reads: EIO with its offset, pending, then a write lands on the spare', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB });
  const srv = await startRemapd(t, s);
  const at = 6 * MiB;
  const bad = at + 4096;
  const w = await qemuIo(srv.uri, [`write -P 0x66 ${at} 12k`]);
  t.ok(qemuIoClean(w), 'pattern written', { out: describe(w) });
  await loadFaults(s, [{ op: 'read', offset: bad + 1000, length: 10, error: 'EIO' }]);
  const r = await runPython(READ_PY, [srv.uri, String(at), String(12288)]);
  let out: {
    ok?: boolean;
    errno?: string;
    structured?: boolean;
    chunks?: { offset: number; status: number; err: number | null }[];
    simple_ok?: boolean;
    simple_errno?: string;
  } = {};
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  } catch {
    /* below */
  }
  t.equal(r.code, 0, 'python client ran', { out: describe(r) });
  t.equal(out.structured, true, 'structured replies negotiated');
  t.equal(out.ok, false, 'read over the bad block fails');
  t.equal(out.errno, 'EIO', 'client gets EIO');
  const errChunk = (out.chunks ?? []).find((c) => c.status === 3);
  t.ok(errChunk, 'an error chunk (NBD_REPLY_TYPE_ERROR_OFFSET) arrived', { chunks: out.chunks });
  t.equal(errChunk?.offset, bad + 1000, 'error chunk offset = the exact failing byte (inside the unreadable block)');
  t.equal(out.simple_ok, false, 'simple replies: read fails');
  t.equal(out.simple_errno, 'EIO', 'simple replies: EIO');
  const logged = logRecords(srv).filter((l) => l.level === 50 && l.offset === bad && /unreadable/.test(String(l.msg)));
  t.equal(logged.length, 1, 'log: one error line for the unreadable block, with its offset', { log: logTail(srv) });
  let st = await statusJson(s);
  t.equal(st.pending.count, 1, 'status: pending.count = 1');
  t.same(st.pending.offsets, [bad], 'status: pending.offsets = [the block]');
  t.equal(st.remaps.total, 0, 'nothing remapped yet');
  // reads of the good neighbours still work
  const n = await qemuIo(srv.uri, [`read -P 0x66 ${at} 4k`, `read -P 0x66 ${at + 8192} 4k`]);
  t.ok(qemuIoClean(n), 'neighbours read fine', { out: describe(n) });
  // a write to the pending block succeeds and lands on the spare; reads then succeed, main still fails
  const w2 = await qemuIo(srv.uri, [`write -P 0x77 ${bad} 4k`, `read -P 0x77 ${bad} 4k`, `read -P 0x66 ${at} 4k`]);
  t.ok(qemuIoClean(w2), 'write to the pending block, then it reads back', { out: describe(w2), log: logTail(srv) });
  st = await statusJson(s);
  t.equal(st.pending.count, 0, 'no longer pending');
  t.equal(st.remaps.byReason['read-error'], 1, 'remapped with reason read-error');
  const list = await listJson(s);
  t.same(
    list.remaps.map((e) => e.offset),
    [bad],
    'list: the block',
  );
  t.ok(readFileRange(s.spare, list.remaps[0].spareBlock * B, B).equals(Buffer.alloc(B, 0x77)), 'the data is on the spare');
  t.ok(readFileRange(s.main, bad, B).equals(Buffer.alloc(B, 0x66)), 'main still has the old data there');
  const r3 = await runPython(READ_PY, [srv.uri, String(at), String(12288)]);
  t.match(r3.stdout, /"ok": true/, 'structured read of the whole range succeeds now', { out: describe(r3) });
  // restart: the remap and the data persist
  await srv.stop('SIGTERM');
  const srv2 = await startRemapd(t, s);
  const r4 = await qemuIo(srv2.uri, [`read -P 0x66 ${at} 4k`, `read -P 0x77 ${bad} 4k`, `read -P 0x66 ${at + 8192} 4k`]);
  t.ok(qemuIoClean(r4), 'after restart (faults still on): reads fine', { out: describe(r4) });
});

t.test('pending survives a restart, and a partial write to it reads zeroes elsewhere', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB });
  let srv = await startRemapd(t, s);
  const bad = 9 * MiB;
  await qemuIo(srv.uri, [`write -P 0x12 ${bad} 4k`]);
  await loadFaults(s, [{ op: 'read', offset: bad, length: 4096, error: 'EIO' }]);
  const r = await qemuIo(srv.uri, [`read ${bad} 4k`]);
  t.notOk(qemuIoClean(r), 'read fails');
  await srv.stop('SIGTERM');
  // the file-based faults are the initial ones (none): main reads fine now, the block is still pending
  srv = await startRemapd(t, s);
  let st = await statusJson(s);
  t.same(st.pending.offsets, [bad], 'pending block remembered across a restart');
  // pending block that reads again is rescued
  const r2 = await qemuIo(srv.uri, [`read -P 0x12 ${bad} 4k`]);
  t.ok(qemuIoClean(r2), 'pending block reads again', { out: describe(r2) });
  st = await statusJson(s);
  t.equal(st.pending.count, 0, 'no longer pending');
  t.equal(st.remaps.byReason['read-error'], 1, 'rescued to the spare');
});

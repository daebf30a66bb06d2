/**
 * Exact errors on a real kernel block device whose media fails (a loop device over
 * test/tools/failing-fuse.c, opened by remapd with O_DIRECT; no --faults: the errors come from the
 * kernel, one per request, with no byte offset of their own):
 * - a 64 KiB write over one unwritable sector: only that remap block is remapped, the write succeeds,
 *   flushes and reads back; the neighbours were written to the media;
 * - a 1 MiB read over one unreadable sector: the client gets EIO at the exact failing byte (bisection
 *   down to the 512-byte sector), only that block is pending, its neighbours and its own healthy sectors
 *   read;
 * - the disk vanishing (every I/O failing): "main failed" in status, no pending marks, and back to ok
 *   once it answers.
 */
import t from 'tap';
import * as native from '../../storage/native';
import { remapdOnFailingDisk } from '../helpers/failing-disk-setup';
import { qemuIo, qemuIoClean, readFileRange, logRecords } from '../helpers/remap-setup';
import { statusJson, listJson, remapctl } from '../helpers/remap-setup';
import { describe, logTail, runPython, MiB } from '../helpers';

const B = 4096;
const KiB = 1024;
const skip = native.lanes ? false : `native addon not built (${native.nativeStatus})`;

function setup(t: { teardown(fn: () => unknown): void }, fill: 'random' | 'zero' = 'random', scan = false) {
  // The scanner (for the health label) reads slowly, so it never races the tests' own failing reads.
  return remapdOnFailingDisk(t, { fill, dirPrefix: 'remapd-fd-', args: scan ? ['--scan-rate', '256K'] : ['--no-scan'] });
}

const READ_PY = String.raw`
import nbd, sys, json
uri, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h = nbd.NBD()
h.connect_uri(uri)
chunks = []
def cb(subbuf, offset, status, err):
    chunks.append({"offset": offset, "status": status})
    return 0
out = {"chunks": chunks}
try:
    h.pread_structured(n, off, cb)
    out["ok"] = True
except nbd.Error as ex:
    out["ok"] = False
    out["errno"] = ex.errno
print(json.dumps(out))
`;

t.test('64 KiB write over one unwritable sector: only that block remapped', { skip }, async (t) => {
  const { s, srv, d } = await setup(t);
  const at = 4 * MiB;
  const badSector = at + 9 * B + 1024;
  await d.failWrite(badSector, 512);
  const w = await qemuIo(srv.uri, [`write -P 0x3c ${at} 64k`, 'flush', `read -P 0x3c ${at} 64k`]);
  t.ok(qemuIoClean(w), 'write, flush and read-back succeed', { out: describe(w), log: logTail(srv) });
  const list = await listJson(s);
  t.same(
    list.remaps.map((e) => e.offset),
    [at + 9 * B],
    'exactly the block holding the bad sector is remapped',
  );
  t.ok(readFileRange(s.spare, list.remaps[0].spareBlock * B, B).equals(Buffer.alloc(B, 0x3c)), 'its data is on the spare');
  const media = readFileRange(d.image, at, 64 * KiB);
  t.ok(
    media.subarray(0, 9 * B).equals(Buffer.alloc(9 * B, 0x3c)) && media.subarray(10 * B).equals(Buffer.alloc(6 * B, 0x3c)),
    'the other 15 blocks reached the media',
  );
  const st = await statusJson(s);
  t.equal(st.pending.count, 0, 'nothing pending');
});

t.test('1 MiB read over one unreadable sector: EIO at the exact byte, only its block pending', { skip }, async (t) => {
  const { s, srv, d } = await setup(t);
  const at = 8 * MiB;
  const badSector = at + 100 * B + 3 * 512;
  const blockStart = badSector - 3 * 512;
  await d.failRead(badSector, 512);
  const r = await runPython(READ_PY, [srv.uri, String(at), String(MiB)]);
  let out: { ok?: boolean; errno?: string; chunks?: { offset: number; status: number }[] } = {};
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  } catch {
    /* asserted below */
  }
  t.equal(out.ok, false, 'the read fails', { out: describe(r), log: logTail(srv) });
  t.equal(out.errno, 'EIO', 'with EIO');
  const errChunk = (out.chunks ?? []).find((c) => c.status === 3);
  t.equal(errChunk?.offset, badSector, 'the error chunk carries the exact failing byte (the bad sector)');
  const st = await statusJson(s);
  t.same(st.pending.offsets, [blockStart], 'only the block holding the bad sector is pending');
  t.equal(st.remaps.total, 0, 'nothing remapped');
  const n = await qemuIo(srv.uri, [
    `read ${blockStart - B} 4k`,
    `read ${blockStart + B} 4k`,
    `read ${blockStart} 1536`,
    `read ${badSector + 512} 2048`,
  ]);
  t.ok(qemuIoClean(n), 'the neighbours and the healthy sectors of the block read', { out: describe(n) });
  t.ok(
    logRecords(srv).some((l) => l.offset === blockStart && /unreadable block/.test(String(l.msg))),
    'the pending block is logged',
  );
});

t.test('the disk vanishes: main failed, no pending marks; back to ok when it answers', { skip }, async (t) => {
  const { s, srv, d } = await setup(t, 'random', true);
  await d.vanish(true, 'EIO');
  for (const off of [1 * MiB, 9 * MiB, 17 * MiB, 25 * MiB]) {
    const r = await qemuIo(srv.uri, [`read ${off} 64k`]);
    t.notOk(qemuIoClean(r), `read at ${off} fails`);
  }
  let st = (await statusJson(s)) as unknown as {
    mainState: { state: string; reason: string };
    pending: { count: number };
    health?: { label: string; score: number };
  };
  t.equal(st.mainState.state, 'failed', 'status: main failed', { st, log: logTail(srv) });
  t.equal(st.health?.label, 'critical', 'health: critical while main is failed (no block blamed, still not "healthy")', { st });
  t.equal(st.pending.count, 0, 'no pending marks');
  t.equal(logRecords(srv).filter((l) => /MAIN DEVICE FAILED/.test(String(l.msg))).length, 1, 'one loud log line');
  const human = await remapctl(s, ['status']);
  t.match(human.stdout, /MAIN DEVICE FAILED/, '`remapd status` shows it', { out: describe(human) });
  await d.vanish(false);
  const ok = await qemuIo(srv.uri, [`read 1M 4k`]);
  t.ok(qemuIoClean(ok), 'the disk answers: reads work', { out: describe(ok) });
  st = (await statusJson(s)) as unknown as typeof st;
  t.equal(st.mainState.state, 'ok', 'status: main ok again');
  t.equal(st.health?.label, 'healthy', 'health: healthy again', { st });
  const after = await remapctl(s, ['status']);
  t.match(
    after.stdout,
    /main {8}answers; failed 1 time\(s\) since start, last at .* for \d+ s: /,
    'the outage stays visible in `remapd status`',
    {
      out: describe(after),
    },
  );
});

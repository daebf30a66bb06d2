/**
 * The outage ride-through (--outage-hold, remap/main-state.ts hold()) on a real kernel block device: a
 * loop device over test/tools/failing-fuse.c whose every I/O fails with EIO while it "vanishes" (the
 * whole disk gone for a moment: a link reset, a controller restart), switched on and off while clients
 * read and write over NBD (python3-libnbd, one connection reading, one writing and flushing).
 *
 * - a 2.5 s outage with the hold (5 s): no client error, every write reads back, no block blamed;
 * - the same outage with --outage-hold 0: clients get EIO (today's behaviour without a hold);
 * - an outage longer than the hold (1 s): a held read fails with EIO after the hold, a request after
 *   that is not held (no pile-up), a block remapped to the spare is still served, and once the disk
 *   answers, main comes back by itself (the probe) with no client I/O needed.
 */
import t from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as native from '../../storage/native';
import { type failingDisk } from '../helpers/failing-disk';
import { remapdOnFailingDisk } from '../helpers/failing-disk-setup';
import { qemuIo, qemuIoClean, logRecords, statusJson, remapctl, type RemapSetup } from '../helpers/remap-setup';
import { describe, logTail, runPython, sleep, MiB, type Server } from '../helpers';

const B = 4096;
const skip = native.lanes ? false : `native addon not built (${native.nativeStatus})`;

interface MainStateJson {
  state: string;
  failures: number;
  held: number;
  heldTotal: number;
  heldExpired: number;
  holdSeconds: number;
}
type Status = Awaited<ReturnType<typeof statusJson>> & { mainState: MainStateJson };

function setup(t: { teardown(fn: () => unknown): void }, hold: string) {
  return remapdOnFailingDisk(t, { fill: 'random', dirPrefix: 'remapd-hold-', args: ['--no-scan', '--outage-hold', hold] });
}

/**
 * Two connections until STOP exists: one writes 64 KiB slots of the first 8 MiB (a flush every 8 writes),
 * one reads 64 KiB at random over the disk. Then every slot whose last write succeeded is read back and
 * compared. Prints one JSON line of counts.
 */
const CLIENT_PY = String.raw`
import nbd, sys, json, os, random, threading, time
uri, ready, stop = sys.argv[1], sys.argv[2], sys.argv[3]
SLOT, SLOTS, SIZE = 65536, 128, 32 << 20
out = {"writes": 0, "write_errors": 0, "flushes": 0, "flush_errors": 0, "reads": 0, "read_errors": 0,
       "errnos": {}, "max_ms": 0, "verified": 0, "verify_bad": 0}
lock = threading.Lock()
def note(err, ms):
    with lock:
        out["max_ms"] = max(out["max_ms"], round(ms))
        if err is not None:
            out["errnos"][err] = out["errnos"].get(err, 0) + 1
expect = {}
def writer():
    h = nbd.NBD(); h.connect_uri(uri)
    rnd = random.Random(1); gen = 0
    while not os.path.exists(stop):
        slot = rnd.randrange(SLOTS); gen += 1
        data = bytes([gen % 251 + 1]) * 16 + os.urandom(SLOT - 16)
        t0 = time.monotonic(); err = None
        try:
            h.pwrite(data, slot * SLOT)
            expect[slot] = data
        except nbd.Error as e:
            err = e.errno; expect[slot] = None
            out["write_errors"] += 1
        out["writes"] += 1
        note(err, (time.monotonic() - t0) * 1000)
        if gen % 8 == 0:
            t0 = time.monotonic(); err = None
            try:
                h.flush()
            except nbd.Error as e:
                err = e.errno; out["flush_errors"] += 1
            out["flushes"] += 1
            note(err, (time.monotonic() - t0) * 1000)
        time.sleep(0.01)
    h.shutdown()
def reader():
    h = nbd.NBD(); h.connect_uri(uri)
    rnd = random.Random(2)
    while not os.path.exists(stop):
        off = rnd.randrange(SIZE // SLOT) * SLOT
        t0 = time.monotonic(); err = None
        try:
            h.pread(SLOT, off)
        except nbd.Error as e:
            err = e.errno; out["read_errors"] += 1
        out["reads"] += 1
        note(err, (time.monotonic() - t0) * 1000)
        time.sleep(0.01)
    h.shutdown()
ts = [threading.Thread(target=writer), threading.Thread(target=reader)]
for x in ts: x.start()
open(ready, "w").close()
for x in ts: x.join()
h = nbd.NBD(); h.connect_uri(uri)
for slot, data in expect.items():
    if data is None:
        continue
    out["verified"] += 1
    if h.pread(SLOT, slot * SLOT) != data:
        out["verify_bad"] += 1
print(json.dumps(out))
`;

/** Each op in turn on one connection: r:OFF:LEN[:BYTE] (BYTE: check every byte), w:OFF:LEN:BYTE. */
const OPS_PY = String.raw`
import nbd, sys, json, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
out = []
for op in sys.argv[2:]:
    f = op.split(":"); off, n = int(f[1]), int(f[2])
    r = {"ok": False, "errno": None}
    t0 = time.monotonic()
    try:
        if f[0] == "r":
            data = h.pread(n, off)
            if len(f) > 3:
                r["match"] = data == bytes([int(f[3])]) * n
        else:
            h.pwrite(bytes([int(f[3])]) * n, off)
        r["ok"] = True
    except nbd.Error as e:
        r["errno"] = e.errno
    r["ms"] = round((time.monotonic() - t0) * 1000)
    out.append(r)
h.shutdown()
print(json.dumps(out))
`;

interface OpResult {
  ok: boolean;
  errno: string | null;
  ms: number;
  match?: boolean;
}

async function nbdOps(uri: string, ops: string[]): Promise<OpResult[]> {
  const r = await runPython(OPS_PY, [uri, ...ops], 120_000);
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as OpResult[];
  } catch {
    throw new Error(`libnbd ops failed: ${describe(r)}`);
  }
}

interface ClientResult {
  writes: number;
  write_errors: number;
  flushes: number;
  flush_errors: number;
  reads: number;
  read_errors: number;
  errnos: Record<string, number>;
  max_ms: number;
  verified: number;
  verify_bad: number;
}

async function waitFile(path: string, limitMs: number): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear within ${limitMs} ms`);
    await sleep(50);
  }
}

/** Clients running; the disk vanishes for outageMs in the middle; clients stop 1.5 s after it answers. */
async function clientsThroughOutage(
  s: RemapSetup,
  srv: Server,
  d: Awaited<ReturnType<typeof failingDisk>>,
  outageMs: number,
): Promise<{ out: ClientResult | undefined; raw: string }> {
  const ready = join(s.dir, 'ready');
  const stop = join(s.dir, 'stop');
  const client = runPython(CLIENT_PY, [srv.uri, ready, stop], 180_000);
  await waitFile(ready, 60_000);
  await sleep(1000);
  await d.vanish(true, 'EIO');
  await sleep(outageMs);
  await d.vanish(false);
  await sleep(1500);
  writeFileSync(stop, '');
  const r = await client;
  try {
    return { out: JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as ClientResult, raw: describe(r) };
  } catch {
    return { out: undefined, raw: describe(r) };
  }
}

t.test('a 2.5 s outage with the hold: no client error, every write reads back, no block blamed', { skip }, async (t) => {
  const { s, srv, d } = await setup(t, '5');
  const { out, raw } = await clientsThroughOutage(s, srv, d, 2500);
  t.ok(out, 'the client ran', { raw, log: logTail(srv) });
  if (!out) return;
  t.comment(`hold 5 s, 2.5 s outage: ${JSON.stringify(out)}`);
  t.ok(out.writes > 0 && out.reads > 0, 'clients did I/O');
  t.equal(out.write_errors + out.read_errors + out.flush_errors, 0, 'no client error through the outage', { out, log: logTail(srv) });
  t.ok(out.verified > 0, 'written slots were read back');
  t.equal(out.verify_bad, 0, 'every write reads back after the outage');
  const st = (await statusJson(s)) as Status;
  t.ok(st.mainState.failures >= 1, 'main was called failed in the outage', { main: st.mainState });
  t.ok(st.mainState.heldTotal > 0, 'requests were held', { main: st.mainState });
  t.equal(st.mainState.heldExpired, 0, 'none waited the whole hold');
  t.equal(st.mainState.held, 0, 'none held now');
  t.equal(st.mainState.state, 'ok', 'main ok again');
  t.equal(st.pending.count, 0, 'no block pending');
  t.equal(st.remaps.total, 0, 'no block remapped', {
    remaps: st.remaps,
    log: logRecords(srv)
      .filter((l) => /remap|FAILED|answers|write to main|isolat|refuses/.test(String(l.msg)))
      .map((l) => JSON.stringify(l)),
  });
  t.ok(
    logRecords(srv).some((l) => /main device answers again/.test(String(l.msg)) && Number(l.held) > 0),
    'the log says main answered with requests held',
  );
});

t.test('the same outage with --outage-hold 0: clients get EIO', { skip }, async (t) => {
  const { s, srv, d } = await setup(t, '0');
  const { out, raw } = await clientsThroughOutage(s, srv, d, 2500);
  t.ok(out, 'the client ran', { raw, log: logTail(srv) });
  if (!out) return;
  t.comment(`hold 0, 2.5 s outage: ${JSON.stringify(out)}`);
  t.ok(out.write_errors + out.read_errors > 0, 'client requests failed in the outage', { out });
  t.ok((out.errnos.EIO ?? 0) > 0, 'with EIO', { out });
  t.equal(out.verify_bad, 0, 'every write that succeeded reads back');
  const st = (await statusJson(s)) as Status;
  t.equal(st.mainState.heldTotal, 0, 'nothing held');
  t.equal(st.pending.count, 0, 'no block pending');
  t.equal(st.remaps.total, 0, 'no block remapped', { remaps: st.remaps });
});

t.test('an outage longer than the hold: EIO after the hold, no pile-up, spare served, back by itself', { skip }, async (t) => {
  const { s, srv, d } = await setup(t, '1');
  const remapped = 20 * MiB;
  const w = await qemuIo(srv.uri, [`write -P 0x5a ${remapped} 4k`, 'flush']);
  t.ok(qemuIoClean(w), 'a block written', { out: describe(w) });
  const r = await remapctl(s, ['remap', `${remapped}+${B}`]);
  t.equal(r.code, 0, 'and remapped to the spare', { out: describe(r) });

  await d.vanish(true, 'EIO');
  // libnbd, not qemu-io: qemu-io flushes at exit, and a flush of the vanished disk is retried 7.75 s
  const [first] = await nbdOps(srv.uri, ['r:1048576:65536']);
  t.equal(first?.errno, 'EIO', 'a read in the outage fails with EIO', { first, log: logTail(srv) });
  t.ok((first?.ms ?? 0) >= 1000, `after the hold (${first?.ms} ms)`);
  let st = (await statusJson(s)) as Status;
  t.equal(st.mainState.state, 'failed', 'main failed');
  t.equal(st.mainState.heldExpired, 1, 'it waited the whole hold', { main: st.mainState });
  const heldBefore = st.mainState.heldTotal;

  const later = await nbdOps(srv.uri, ['r:9437184:65536', 'w:9437184:4096:17', `r:${remapped}:4096:90`]);
  t.equal(later[0]?.errno, 'EIO', 'a later read fails', { later });
  t.equal(later[1]?.errno, 'EIO', 'a later write fails');
  st = (await statusJson(s)) as Status;
  t.equal(st.mainState.heldTotal, heldBefore, 'and they are not held: the outage is older than the hold', { main: st.mainState });
  t.same(
    later[2],
    { ok: true, errno: null, ms: later[2]?.ms, match: true },
    'the remapped block is served from the spare during the outage',
  );

  await d.vanish(false);
  const deadline = Date.now() + 60_000;
  while (st.mainState.state !== 'ok' && Date.now() < deadline) {
    await sleep(250);
    st = (await statusJson(s)) as Status;
  }
  t.equal(st.mainState.state, 'ok', 'main ok again with no client I/O (the probe)', { main: st.mainState, log: logTail(srv) });
  const after = await qemuIo(srv.uri, [`read 1M 64k`, `write -P 0x22 9M 4k`, `read -P 0x22 9M 4k`]);
  t.ok(qemuIoClean(after), 'service resumes', { out: describe(after) });
  t.equal(st.pending.count, 0, 'no block pending');
  t.equal(st.remaps.total, 1, 'only the block remapped by hand');
});

/**
 * Spare exhausted: the smallest spare the metadata store accepts, more blocks failing on write than
 * fit. Writes that need a new remap fail (ENOSPC with structured replies, EIO with simple replies),
 * status says exhausted, the log says so (error level) and warned at 90 %, earlier data is intact.
 */
import t from 'tap';
import { computeLayout } from '../../metadata/layout';
import { createRemapSetup, startRemapd, statusJson, loadFaults, logRecords } from '../helpers/remap-setup';
import { describe, logTail, runPython, MiB } from '../helpers';

const B = 4096;

/** Smallest spare size (64 KiB steps) whose layout computeLayout accepts with the default journal. */
function smallestSpare(): number {
  for (let size = 64 * 1024; size < 256 * MiB; size += 64 * 1024) {
    try {
      computeLayout(size, B, 512);
      return size;
    } catch {
      /* too small */
    }
  }
  throw new Error('no spare size accepted');
}

const PY = String.raw`
import nbd, sys, json
uri, region, n, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
B = 4096
out = {}
h = nbd.NBD()
h.connect_uri(uri)
out["structured"] = h.get_structured_replies_negotiated()
# fill the spare: one write covering n failing blocks
h.pwrite(bytes([0xa1]) * (n * B), region)
out["fill_ok"] = True
res = []
for k in range(extra):
    try:
        h.pwrite(bytes([0xb2]) * B, region + (n + k) * B)
        res.append("ok")
    except nbd.Error as e:
        res.append(e.errno)
out["structured_results"] = res
# simple replies
h2 = nbd.NBD()
h2.set_request_structured_replies(False)
h2.connect_uri(uri)
out["simple_negotiated"] = h2.get_structured_replies_negotiated()
try:
    h2.pwrite(bytes([0xb3]) * B, region + (n + extra) * B)
    out["simple"] = "ok"
except nbd.Error as e:
    out["simple"] = e.errno
# writes to already-remapped blocks and to healthy blocks still work
h.pwrite(bytes([0xc4]) * B, region)
h.pwrite(bytes([0xc5]) * B, 0)
h.flush()
# read back everything
data = h.pread(n * B, region)
out["remapped_ok"] = data[:B] == bytes([0xc4]) * B and data[B:] == bytes([0xa1]) * ((n - 1) * B)
tail = h.pread((extra + 1) * B, region + n * B)
out["unremapped_kept_old"] = tail == bytes([0x5e]) * len(tail)
out["healthy_ok"] = h.pread(B, 0) == bytes([0xc5]) * B and h.pread(B, B) == bytes([0x5e]) * B
print(json.dumps(out))
`;

t.test('spare exhausted: ENOSPC / EIO, status, loud log, nothing else lost', async (t) => {
  const spareBytes = smallestSpare();
  t.comment(`smallest accepted spare: ${spareBytes} bytes`);
  const mainBytes = 32 * MiB;
  const s = await createRemapSetup(t, { mainBytes, spareBytes });
  const srv = await startRemapd(t, s);
  let st = await statusJson(s);
  const n = st.spare.dataBlocks;
  t.ok(n > 0 && n * B < spareBytes, `spare has ${n} data blocks`);
  t.equal(st.spare.exhausted, false, 'not exhausted at start');
  // fill the whole region with a known pattern (no faults yet)
  const region = 4 * MiB;
  const extra = 4;
  const fill = await runPython(
    String.raw`
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(bytes([0x5e]) * (16 * 1024 * 1024), 0)
h.flush()
`,
    [srv.uri],
  );
  t.equal(fill.code, 0, 'pattern written', { out: describe(fill) });
  await loadFaults(s, [{ op: 'write', offset: region, length: (n + extra + 1) * B, error: 'EIO' }]);
  const r = await runPython(PY, [srv.uri, String(region), String(n), String(extra)], 300_000);
  let out: Record<string, unknown> = {};
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  } catch {
    /* below */
  }
  t.equal(r.code, 0, 'client ran', { out: describe(r), log: logTail(srv) });
  t.equal(out.fill_ok, true, `${n} failing blocks remapped (spare now full)`);
  t.same(out.structured_results, Array(extra).fill('ENOSPC'), 'structured replies: writes needing a new remap fail with ENOSPC');
  t.equal(out.simple_negotiated, false, 'second handle uses simple replies');
  t.equal(out.simple, 'EIO', 'simple replies: EIO');
  t.equal(out.remapped_ok, true, 'remapped blocks keep their data and can still be written');
  t.equal(out.unremapped_kept_old, true, 'blocks whose write failed keep their old contents');
  t.equal(out.healthy_ok, true, 'healthy blocks unaffected');
  st = await statusJson(s);
  t.equal(st.spare.exhausted, true, 'status: spare.exhausted');
  t.equal(st.spare.free, 0, 'status: spare.free = 0');
  t.equal(st.spare.low, true, 'status: spare.low');
  t.equal(st.remaps.total, n, 'status: remaps.total = data blocks');
  const logs = logRecords(srv);
  const exhausted = logs.filter((l) => /SPARE EXHAUSTED/.test(String(l.msg)));
  t.ok(exhausted.length >= extra + 1, 'log: SPARE EXHAUSTED for every refused remap');
  t.ok(
    exhausted.every((l) => (l.level as number) >= 50),
    'log: at error level or above',
  );
  t.ok(
    exhausted.some((l) => l.offset === region + n * B),
    'log: names the offset of the first refused block',
  );
  const low = logs.filter((l) => /running out of space/.test(String(l.msg)));
  t.equal(low.length, 1, 'log: the 90 % warning appeared once');
  t.ok(low.length === 1 && (low[0].used as number) >= Math.ceil(0.9 * n) && (low[0].used as number) <= n, '90 % warning at >= 90 % used', {
    low,
  });
  // restart: still exhausted, remaps all there
  await srv.stop('SIGTERM');
  const srv2 = await startRemapd(t, s);
  const st2 = await statusJson(s);
  t.equal(st2.remaps.total, n, 'after restart: all remaps');
  t.equal(st2.spare.exhausted, true, 'after restart: exhausted');
  t.ok(srv2.isRunning(), 'server running');
});

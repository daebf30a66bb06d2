/**
 * Crash consistency: 20+ rounds of { start the daemon with write faults on many ranges, run a write
 * workload (python3-libnbd, numbered random 4 KiB blocks, some FUA, FLUSH every few writes, every
 * issue/ack/flush logged), kill -9 the daemon at a random moment, check the spare's metadata offline
 * (MetadataStore.inspect: a valid copy is chosen), restart, read every touched block and every
 * remapped block back }. A write acknowledged with FUA, or acknowledged before a completed FLUSH, must
 * read back (or a write issued after it); a block must never read data that was never written to it
 * (which is what a remap to never-written spare space would show: the image starts random).
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { MetadataStore } from '../../metadata/store';
import { openBackend } from '../../storage/file-backend';
import { createRemapSetup, startRemapd, listJson, type FaultRuleSpec } from '../helpers/remap-setup';
import { runPython, sleep, describe, MiB } from '../helpers';
import { spawn } from 'node:child_process';

const B = 4096;
const REGION_BLOCKS = 2048; // 8 MiB of the device is written
const ROUNDS = Number(process.env.REMAPD_CRASH_ROUNDS ?? 20);

const WRITER_PY = String.raw`
import nbd, sys, random, hashlib
uri, rnd_seed, nblocks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
B = 4096
r = random.Random(rnd_seed)
h = nbd.NBD()
h.connect_uri(uri)
seq = 0
try:
    while True:
        seq += 1
        blk = r.randrange(nblocks)
        data = (b"%d:%d:%d:" % (rnd_seed, seq, blk)).ljust(64, b".") + r.randbytes(B - 64)
        fua = r.random() < 0.3
        print("I %d %d %s %d" % (seq, blk, hashlib.sha256(data).hexdigest(), 1 if fua else 0), flush=True)
        h.pwrite(data, blk * B, nbd.CMD_FLAG_FUA if fua else 0)
        print("A %d" % seq, flush=True)
        if seq % 8 == 0:
            h.flush()
            print("F %d" % seq, flush=True)
except Exception as e:
    print("E %s" % e, flush=True)
`;

const VERIFY_PY = String.raw`
import nbd, sys, hashlib, json
h = nbd.NBD()
h.connect_uri(sys.argv[1])
blocks = json.loads(sys.stdin.readline())
out = {}
for b in blocks:
    out[str(b)] = hashlib.sha256(h.pread(4096, b * 4096)).hexdigest()
print(json.dumps(out))
`;

interface Write {
  seq: number;
  block: number;
  sha: string;
  fua: boolean;
  acked: boolean;
  durable: boolean;
}

function parseWriterLog(text: string): Write[] {
  const writes = new Map<number, Write>();
  const order: Write[] = [];
  for (const line of text.split('\n')) {
    const p = line.split(' ');
    if (p[0] === 'I' && p.length === 5) {
      const w: Write = { seq: +p[1], block: +p[2], sha: p[3], fua: p[4] === '1', acked: false, durable: false };
      writes.set(w.seq, w);
      order.push(w);
    } else if (p[0] === 'A') {
      const w = writes.get(+p[1]);
      if (w) {
        w.acked = true;
        if (w.fua) w.durable = true;
      }
    } else if (p[0] === 'F') {
      // the client is sequential: every write acked before this FLUSH was sent is durable now
      for (const w of order) if (w.acked && w.seq <= +p[1]) w.durable = true;
    }
  }
  return order;
}

t.test(`crash loop: ${ROUNDS} rounds of kill -9 under a write workload with failing blocks`, async (t) => {
  const mainBytes = 32 * MiB;
  const faults: FaultRuleSpec[] = [];
  // every 16th block of the written region fails on write (128 blocks), plus some unaligned ranges
  for (let b = 0; b < REGION_BLOCKS; b += 16)
    faults.push({ op: 'write', offset: b * B + (b % 3) * 1000, length: b % 5 === 0 ? 6000 : 512, error: 'EIO' });
  const s = await createRemapSetup(t, { mainBytes, spareBytes: 32 * MiB, fill: 'random', faults });
  // expected sha256 of every block of the region: the random initial contents
  const img = readFileSync(s.main);
  const expected = new Map<number, string>();
  for (let b = 0; b < REGION_BLOCKS; b++)
    expected.set(
      b,
      createHash('sha256')
        .update(img.subarray(b * B, (b + 1) * B))
        .digest('hex'),
    );

  let violations = 0;
  let totalAcked = 0;
  let totalDurable = 0;
  let killedMidRemap = 0;
  let maxRemaps = 0;
  const seenRemaps = new Set<number>();
  for (let round = 1; round <= ROUNDS; round++) {
    const srv = await startRemapd(null, s);
    // writer in the background; kill the daemon at a random moment
    const writer = spawn('/usr/bin/python3', ['-', srv.uri, String(round), String(REGION_BLOCKS)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let wlog = '';
    writer.stdout.on('data', (d: Buffer) => (wlog += d.toString()));
    writer.stdin.end(WRITER_PY);
    const writerDone = new Promise<void>((res) => writer.on('close', () => res()));
    // wait for the first acknowledged write, then a random delay
    for (let i = 0; i < 300 && !/\nA /.test('\n' + wlog); i++) await sleep(50);
    await sleep(50 + Math.floor(Math.random() * 1500));
    const log = srv.log();
    srv.proc.kill('SIGKILL');
    await srv.exited;
    await writerDone;
    if (/write to main failed/.test(log.split('\n').slice(-3).join('\n'))) killedMidRemap++;
    const writes = parseWriterLog(wlog);
    totalAcked += writes.filter((w) => w.acked).length;
    totalDurable += writes.filter((w) => w.durable).length;

    // offline check of the metadata copies
    const spare = await openBackend(s.spare, { readOnly: true });
    const report = await MetadataStore.inspect(spare);
    await spare.close();
    if (report.chosen === null || report.chosen === undefined) {
      violations++;
      t.fail(`round ${round}: no valid metadata copy`, { report });
    }

    // restart and verify
    const srv2 = await startRemapd(null, s);
    try {
      const list = await listJson(s);
      for (const e of list.remaps) seenRemaps.add(e.mainBlock);
      maxRemaps = Math.max(maxRemaps, list.remaps.length);
      if (report.table && report.table.remaps !== list.remaps.length) {
        violations++;
        t.fail(`round ${round}: inspect saw ${report.table.remaps} remaps, the daemon loaded ${list.remaps.length}`);
      }
      const touched = new Set<number>(writes.map((w) => w.block));
      for (const e of list.remaps) if (e.mainBlock < REGION_BLOCKS) touched.add(e.mainBlock);
      const outside = list.remaps.filter((e) => e.mainBlock >= REGION_BLOCKS);
      if (outside.length) {
        violations++;
        t.fail(`round ${round}: remaps outside the written region`, { outside });
      }
      const vr = await runVerify(srv2.uri, [...touched]);
      for (const b of touched) {
        const got = vr[String(b)];
        const ws = writes.filter((w) => w.block === b);
        let lastDurable = -1;
        ws.forEach((w, i) => {
          if (w.durable) lastDurable = i;
        });
        const allowed = new Set<string>(
          lastDurable >= 0 ? ws.slice(lastDurable).map((w) => w.sha) : [expected.get(b)!, ...ws.map((w) => w.sha)],
        );
        if (!allowed.has(got)) {
          violations++;
          if (violations <= 10)
            t.fail(`round ${round}: block ${b} holds data never written there (or lost a durable write)`, {
              got,
              writes: ws,
              before: expected.get(b),
            });
        } else {
          expected.set(b, got);
        }
      }
    } finally {
      await srv2.stop('SIGTERM');
    }
  }
  t.equal(violations, 0, `${ROUNDS} rounds: every FUA/flushed write read back, no block read unwritten data`);
  t.ok(totalDurable > 0, `the workload acknowledged ${totalAcked} writes, ${totalDurable} of them durable`);
  t.ok(
    seenRemaps.size > 0,
    `remaps happened during the loop (${seenRemaps.size} blocks; ${killedMidRemap} kills right after a main write error)`,
  );
  t.comment(`acked ${totalAcked}, durable ${totalDurable}, remapped blocks ${seenRemaps.size}, max remaps ${maxRemaps}`);
});

async function runVerify(uri: string, blocks: number[]): Promise<Record<string, string>> {
  const r = await runPython(
    VERIFY_PY.replace('json.loads(sys.stdin.readline())', `json.loads(${JSON.stringify(JSON.stringify(blocks))})`),
    [uri],
    120_000,
  );
  if (r.code !== 0) throw new Error(describe(r));
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, string>;
}

/**
 * remap: the cost of the remap layer. remapd without --spare (passthrough) against remapd with a spare
 * holding 0 remaps and 10,000 remaps spread over the device, on sequential and random 4 KiB fio
 * workloads (all three servers up at once, workload-major, rotating order). Targets: 0 remaps ≤ 1 %
 * slower than passthrough, 10,000 remaps ≤ 5 % slower (IOPS).
 *
 * The 10,000 remaps are made the way a failing disk makes them: a fault file fails writes on 10,000
 * spread blocks, a python3-libnbd client writes each of them once (QD 64, so commits are grouped), then
 * empty rules are loaded with `remapd faults`. The setup time is reported.
 * Also runs dist/bench/metadata.js (commit latency with 0 / 100,000 remaps, load time of 1,000,000
 * remaps) when it exists.
 */
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import type { Workload } from '../lib/fio';
import { fmt, table } from '../lib/markdown';
import type { Suite, SuiteContext, Verdict } from '../lib/suite';
import type { RunningServer } from '../lib/servers';

const REMAPS = Number(process.env.BENCH_REMAP_COUNT ?? 10_000);
const B = 4096;

const WORKLOADS: readonly Workload[] = [
  { id: 'seq-read-4k', label: 'seq read 4K QD32', rw: 'read', bs: '4k', iodepth: 32 },
  { id: 'seq-write-4k', label: 'seq write 4K QD32', rw: 'write', bs: '4k', iodepth: 32 },
  { id: 'rand-read-4k', label: 'rand read 4K QD32', rw: 'randread', bs: '4k', iodepth: 32 },
  { id: 'rand-write-4k', label: 'rand write 4K QD32', rw: 'randwrite', bs: '4k', iodepth: 32 },
];

const WRITE_BLOCKS_PY = String.raw`
import nbd, sys, json
uri, blocks = sys.argv[1], json.load(open(sys.argv[2]))
h = nbd.NBD(); h.connect_uri(uri)
B = 4096
bufs = {}
pending = set()
i = 0
while i < len(blocks) or pending:
    while i < len(blocks) and len(pending) < 64:
        b = blocks[i]; i += 1
        buf = nbd.Buffer.from_bytearray(h.pread(B, b * B))  # keep the contents: only the location changes
        c = h.aio_pwrite(buf, b * B)
        bufs[c] = buf
        pending.add(c)
    h.poll(-1)
    for c in [c for c in pending if h.aio_command_completed(c)]:
        pending.discard(c); bufs.pop(c, None)
h.flush()
print("ok")
`;

async function createMetadata(main: string, spare: string): Promise<void> {
  // compiled to dist/bench/suites/: the product modules are two levels up
  const { MetadataStore } = await import('../../metadata/store');
  const { identityFromBackend } = await import('../../metadata/fingerprint');
  const { openBackend } = await import('../../remap/file-backend');
  const mb = await openBackend(main, { readOnly: true });
  const sb = await openBackend(spare, {});
  try {
    const store = await MetadataStore.create(sb, identityFromBackend(mb), { blockSize: B, force: true });
    await store.close();
  } finally {
    await sb.close();
    await mb.close();
  }
}

function remapctl(ctx: SuiteContext, control: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ctx.config.repoRoot, 'bin', 'remapd'), ...args, '--control', control], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Variant { label: string; server?: RunningServer; control?: string }

export const remapSuite: Suite = {
  name: 'remap',
  description: `remap layer vs passthrough: 4K seq/rand fio with 0 and ${REMAPS} remaps; metadata commit/load numbers`,
  async run(ctx: SuiteContext) {
    const imageBytes = fs.statSync(ctx.image).size;
    const totalBlocks = Math.floor(imageBytes / B);
    const data: Record<string, unknown> = { remaps: REMAPS };
    const verdicts: Verdict[] = [];

    // ---- setup: spares, metadata, fault files
    const mk = async (name: string): Promise<{ spare: string; faults: string; control: string }> => {
      const spare = path.join(ctx.workDir, `${name}-spare.img`);
      fs.writeFileSync(spare, '');
      fs.truncateSync(spare, 256 * 1024 * 1024);
      await createMetadata(ctx.image, spare);
      const faults = path.join(ctx.workDir, `${name}-faults.json`);
      fs.writeFileSync(faults, '[]');
      return { spare, faults, control: path.join(ctx.workDir, `${name}.ctl`) };
    };
    const r0 = await mk('remap0');
    const rN = await mk('remapN');
    const stride = Math.floor(totalBlocks / REMAPS);
    const blocks = Array.from({ length: REMAPS }, (_, i) => i * stride + (i % Math.max(1, stride)));
    fs.writeFileSync(rN.faults, JSON.stringify(blocks.map((b) => ({ op: 'write', offset: b * B, length: B, error: 'EIO' }))));
    const blocksFile = path.join(ctx.workDir, 'remap-blocks.json');
    fs.writeFileSync(blocksFile, JSON.stringify(blocks));

    const variants: Variant[] = [{ label: 'passthrough' }, { label: 'remap-0', control: r0.control }, { label: `remap-${REMAPS}`, control: rN.control }];
    // The measured daemons run exactly like passthrough but for --spare: no fault injection, no scanner.
    variants[0].server = await ctx.startServer('remapd', { label: 'passthrough' });
    variants[1].server = await ctx.startServer('remapd', { label: 'remap-0', extraArgs: ['--spare', r0.spare, '--no-scan', '--control', r0.control] });
    const t0 = Date.now();
    variants[2].server = await ctx.startServer('remapd', { label: `remap-${REMAPS}`, extraArgs: ['--spare', rN.spare, '--no-scan', '--faults', rN.faults, '--control', rN.control] });
    const tStarted = Date.now();
    const py = spawnSync('/usr/bin/python3', ['-', variants[2].server.uri, blocksFile], { input: WRITE_BLOCKS_PY, encoding: 'utf8', timeout: 1_800_000 });
    const tWritten = Date.now();
    fs.writeFileSync(rN.faults, '[]');
    const fr = remapctl(ctx, rN.control, ['faults', rN.faults]);
    const st = remapctl(ctx, rN.control, ['status', '--json']);
    let remapsMade = -1;
    try { remapsMade = (JSON.parse(st.stdout) as { remaps: { total: number } }).remaps.total; } catch { /* below */ }
    if (py.status !== 0 || fr.code !== 0 || remapsMade !== REMAPS) {
      ctx.setupError(`making ${REMAPS} remaps failed: python ${py.status} ${py.stderr?.slice(-500)}; faults ${fr.code} ${fr.stderr}; remaps ${remapsMade}`);
    }
    const setup = { serverStartSec: (tStarted - t0) / 1000, writeRemapsSec: (tWritten - tStarted) / 1000, remapsMade };
    data.setup = setup;
    ctx.log(`setup of ${remapsMade} remaps: ${setup.writeRemapsSec.toFixed(1)} s`);
    // restart-time of the daemon with the remaps (table load)
    const tr0 = Date.now();
    await ctx.stopServer(variants[2].server);
    // Restarted without fault injection: the remaps are in the metadata, the I/O path is the plain one.
    variants[2].server = await ctx.startServer('remapd', { label: `remap-${REMAPS}`, extraArgs: ['--spare', rN.spare, '--no-scan', '--control', rN.control] });
    (setup as Record<string, number>).restartSec = (Date.now() - tr0) / 1000;

    // ---- fio, workload-major, rotating order
    const results: Record<string, Record<string, { iops: number; mbps: number; p99: number; cpu: number }>> = {};
    for (let wi = 0; wi < WORKLOADS.length; wi++) {
      const w = WORKLOADS[wi];
      results[w.id] = {};
      for (let k = 0; k < variants.length; k++) {
        const v = variants[(wi + k) % variants.length];
        try {
          const m = await ctx.runFio(v.server!, w);
          results[w.id][v.label] = { iops: m.fio.main.iops, mbps: m.fio.main.mbps, p99: m.fio.main.clatP99Us, cpu: m.serverCpuPct };
          if (m.fio.errors) ctx.setupError(`${v.label} ${w.id}: fio reported ${m.fio.errors} errors`);
        } catch (err) {
          ctx.setupError(`${v.label} ${w.id}: ${(err as Error).message}`);
        }
      }
    }
    data.fio = results;

    const rows: string[][] = [];
    for (const w of WORKLOADS) {
      const base = results[w.id].passthrough;
      for (const v of variants) {
        const r = results[w.id][v.label];
        if (!r) { rows.push([w.label, v.label, '–', '–', '–', '–', '–']); continue; }
        const slower = base ? (100 * (base.iops - r.iops)) / base.iops : NaN;
        rows.push([w.label, v.label, fmt(r.iops, 0), fmt(r.mbps, 1), fmt(r.p99, 0), fmt(r.cpu, 0), v.label === 'passthrough' ? '' : `${slower >= 0 ? '' : '−'}${fmt(Math.abs(slower), 1)} %${slower >= 0 ? ' slower' : ' faster'}`]);
        if (v.label !== 'passthrough' && base) {
          const limit = v.label === 'remap-0' ? 1 : 5;
          verdicts.push({ name: `${w.id} ${v.label} ≤ ${limit}% slower than passthrough`, pass: slower <= limit, detail: `${fmt(r.iops, 0)} vs ${fmt(base.iops, 0)} IOPS (${fmt(slower, 1)} % slower)` });
        }
      }
    }

    // ---- metadata numbers (bench/metadata.ts, another engineer's), if built
    let metaMd = '`dist/bench/metadata.js` not found: metadata numbers not measured.';
    const metaJs = path.join(ctx.config.repoRoot, 'dist', 'bench', 'metadata.js');
    if (fs.existsSync(metaJs)) {
      const m = spawnSync(process.execPath, [metaJs, ctx.workDir], { encoding: 'utf8', timeout: 1_800_000 });
      try {
        const j = JSON.parse(m.stdout.slice(m.stdout.indexOf('{'))) as Record<string, unknown>;
        data.metadata = j;
        metaMd = `Metadata store (\`node dist/bench/metadata.js\`, fdatasync per commit round on this disk):\n\n` +
          table(['measure', 'value'], Object.entries(j).map(([k, v]) => [k, typeof v === 'number' ? fmt(v, 2) : JSON.stringify(v)]));
      } catch {
        metaMd = `\`dist/bench/metadata.js\` failed (exit ${m.status}): ${(m.stderr || m.stdout).slice(-300)}`;
        ctx.setupError(`metadata bench failed: exit ${m.status}`);
      }
    }

    const md = [
      `### Remap layer cost (${ctx.config.runtimeSec}s per job, ${fmt(imageBytes / 2 ** 20, 0)} MiB image, ${ctx.machine.cpus ?? '?'} CPUs)`,
      '',
      `remapd serving the image without a spare (passthrough), with a spare and 0 remaps, and with ${REMAPS} remaps spread evenly ` +
        `over the device (every ${stride}th block). Setup of the ${remapsMade} remaps through fault injection (10,000 failing write rules, ` +
        `each block written once at QD 64, then empty rules loaded): **${setup.writeRemapsSec.toFixed(1)} s**; daemon restart with them: ` +
        `${(setup as Record<string, number>).restartSec.toFixed(1)} s. Targets: 0 remaps ≤ 1 % slower, ${REMAPS} remaps ≤ 5 % slower (IOPS).`,
      '',
      table(['workload', 'server', 'IOPS', 'MB/s', 'p99 µs', 'server CPU %', 'vs passthrough'], rows),
      '',
      ...verdicts.map((v) => `- ${v.pass ? 'PASS' : 'FAIL'} ${v.name}: ${v.detail}`),
      '',
      metaMd,
    ].join('\n');
    return { markdown: md, data, verdicts };
  },
};

/**
 * nbd-servers: remapd against the reference NBD servers (nbdkit file plugin, qemu-nbd, nbd-server), all
 * serving the same image over Unix sockets, with fio's nbd engine. Bars: remapd >= 0.8x nbdkit on the
 * sequential workloads and >= 0.5x on the random ones (MB/s).
 */
import { STANDARD_WORKLOADS, type Workload } from '../lib/fio';
import { fmt, table } from '../lib/markdown';
import type { RunningServer, ServerKind } from '../lib/servers';
import type { MeasuredRun, Suite, SuiteContext, Verdict } from '../lib/suite';
import { median } from '../lib/stats';

const BARS: Readonly<Record<string, number>> = {
  'seq-read': 0.8,
  'seq-write': 0.8,
  'rand-read': 0.5,
  'rand-write': 0.5,
};
const REFERENCE: ServerKind = 'nbdkit';

interface Cell {
  runs: MeasuredRun[];
  error?: string;
}

/** The run with the median MB/s (so MB/s, IOPS, p99 and CPU in a row come from one real run). */
function medianRun(runs: MeasuredRun[]): MeasuredRun | undefined {
  if (!runs.length) return undefined;
  const target = median(runs.map((r) => r.fio.main.mbps));
  return runs.reduce((best, r) => (Math.abs(r.fio.main.mbps - target) < Math.abs(best.fio.main.mbps - target) ? r : best));
}

export const nbdServersSuite: Suite = {
  name: 'nbd-servers',
  description: 'remapd vs nbdkit / qemu-nbd / nbd-server, fio nbd engine over Unix sockets',
  async run(ctx: SuiteContext) {
    const cfg = ctx.config;
    const servers = cfg.servers as ServerKind[];
    const workloads: readonly Workload[] = STANDARD_WORKLOADS;
    const cells = new Map<string, Cell>();
    const cell = (s: string, w: string): Cell => {
      const k = `${s}/${w}`;
      let c = cells.get(k);
      if (!c) {
        c = { runs: [] };
        cells.set(k, c);
      }
      return c;
    };
    const commandLines = new Map<string, string>();
    const t0 = Date.now();

    // All servers stay up for the whole suite (idle ones cost nothing) and the loop is workload-major:
    // for each workload, every server runs back to back, in an order that rotates. On a shared, noisy
    // machine this keeps the runs being compared (remapd vs nbdkit) seconds apart instead of minutes.
    const up = new Map<ServerKind, RunningServer>();
    try {
      for (const kind of servers) {
        try {
          const s = await ctx.startServer(kind);
          up.set(kind, s);
          commandLines.set(kind, s.commandLine);
        } catch (err) {
          for (const w of workloads) cell(kind, w.id).error ??= 'did not start';
          ctx.setupError(`${kind} did not start: ${(err as Error).message}`);
        }
      }
      let turn = 0;
      for (let rep = 0; rep < cfg.repeat; rep++) {
        for (const w of workloads) {
          const order = servers.map((_, i) => servers[(i + turn) % servers.length]);
          turn++;
          for (const kind of order) {
            const server = up.get(kind);
            const c = cell(kind, w.id);
            if (!server || c.error) continue;
            try {
              const m = await ctx.runFio(server, w, { tag: cfg.repeat > 1 ? `r${rep + 1}` : undefined });
              c.runs.push(m);
              ctx.log(
                `${kind} ${w.id}: ${fmt(m.fio.main.mbps, 1)} MB/s, ${fmt(m.fio.main.iops)} IOPS, ` +
                  `p99 ${fmt(m.fio.main.clatP99Us)} us, server CPU ${fmt(m.serverCpuPct)}%, load ${m.loadAvgBefore}`,
              );
            } catch (err) {
              c.error = (err as Error).message.split('\n')[0];
              ctx.setupError(`${kind} ${w.id}: ${(err as Error).message}`);
              if (server.exited()) {
                for (const w2 of workloads) cell(kind, w2.id).error ??= `server died during ${w.id}`;
              }
            }
          }
        }
      }
    } finally {
      for (const s of up.values()) await ctx.stopServer(s);
    }
    const elapsedSec = (Date.now() - t0) / 1000;

    // ---- table
    const rows: string[][] = [];
    const summary: Record<string, Record<string, unknown>> = {};
    for (const w of workloads) {
      const ref = medianRun(cell(REFERENCE, w.id).runs);
      for (const kind of servers) {
        const c = cell(kind, w.id);
        const m = medianRun(c.runs);
        (summary[kind] ??= {})[w.id] = m
          ? {
              mbps: m.fio.main.mbps,
              iops: m.fio.main.iops,
              p99Us: m.fio.main.clatP99Us,
              p50Us: m.fio.main.clatP50Us,
              serverCpuPct: m.serverCpuPct,
              ratioToNbdkit: ref ? m.fio.main.mbps / ref.fio.main.mbps : null,
              runs: c.runs.map((r) => r.fio.main.mbps),
            }
          : { error: c.error ?? 'not run' };
        if (!m) {
          rows.push([w.label, kind, c.error ?? 'not run', '', '', '', '']);
          continue;
        }
        const ratio = ref ? m.fio.main.mbps / ref.fio.main.mbps : undefined;
        rows.push([
          w.label,
          kind,
          fmt(m.fio.main.mbps, 1),
          fmt(m.fio.main.iops),
          fmt(m.fio.main.clatP99Us),
          ratio === undefined ? 'n/a' : `${fmt(ratio, 2)}×`,
          fmt(m.serverCpuPct),
        ]);
      }
    }
    const resultTable = table(['workload', 'server', 'MB/s', 'IOPS', 'p99 clat (µs)', 'vs nbdkit', 'server CPU %'], rows, [
      'l',
      'l',
      'r',
      'r',
      'r',
      'r',
      'r',
    ]);

    // ---- bars
    const verdicts: Verdict[] = [];
    if (servers.includes('remapd')) {
      for (const w of workloads) {
        const bar = BARS[w.id];
        const r = medianRun(cell('remapd', w.id).runs);
        const ref = medianRun(cell(REFERENCE, w.id).runs);
        const name = `remapd ${w.label} >= ${bar}× nbdkit`;
        if (!r || !ref) {
          verdicts.push({ name, pass: false, detail: !r ? `remapd: ${cell('remapd', w.id).error ?? 'not run'}` : 'nbdkit not measured' });
          continue;
        }
        const ratio = r.fio.main.mbps / ref.fio.main.mbps;
        verdicts.push({
          name,
          pass: ratio >= bar,
          detail: `${fmt(ratio, 2)}× (${fmt(r.fio.main.mbps, 1)} vs ${fmt(ref.fio.main.mbps, 1)} MB/s)`,
        });
      }
    }
    const barLines = verdicts.map((v) => `- **${v.pass ? 'PASS' : 'FAIL'}** ${v.name}: ${v.detail}`);

    // ---- conditions
    const allRuns = [...cells.values()].flatMap((c) => c.runs);
    const loads = allRuns.map((r) => r.loadAvgBefore);
    const versions: string[] = [];
    for (const kind of servers) versions.push(`- ${kind}: ${await ctx.version(kind)} — \`${commandLines.get(kind) ?? 'not started'}\``);
    const m = ctx.machine;
    const md = [
      `### NBD servers: remapd vs reference servers`,
      '',
      `Run ${new Date().toISOString()}${cfg.quick ? ' — **QUICK MODE (BENCH_QUICK=1): short runs, for checking the harness only**' : ''}.`,
      `fio ${m.fio}, \`--ioengine=nbd\` over a Unix socket, 1 job, ${cfg.runtimeSec} s measured after ${cfg.rampSec} s ramp,` +
        ` ${cfg.repeat} run(s) per cell (median shown), same \`--randrepeat=1\` offsets for every server.` +
        ` MB/s = 10^6 bytes/s; p99 = fio completion latency; "vs nbdkit" = MB/s ratio; server CPU = server process tree, % of one core.`,
      '',
      resultTable,
      '',
      `**Bars** (remapd / nbdkit MB/s; ≥0.8× sequential, ≥0.5× random):`,
      '',
      ...(barLines.length ? barLines : ['- remapd not in BENCH_SERVERS; bars not judged']),
      '',
      `**Conditions.** ${m.cpus} × ${m.cpuModel}, ${m.memGiB} GiB RAM, ${m.os}, kernel ${m.kernel}, node ${m.node}.` +
        ` Image: ${(cfg.imageBytes / 2 ** 30).toFixed(2)} GiB of random data on the local disk (\`${ctx.image}\`), page cache ON for every` +
        ` server (image pre-read; \`sync\` before each job, outside the timed region), so this measures the servers, not the disk.` +
        ` 1-min load average before jobs: min ${fmt(Math.min(...loads), 2)}, max ${fmt(Math.max(...loads), 2)}` +
        ` (fio itself keeps about one core busy; anything above ~2 means other work shared the 2 cores).` +
        ` Suite wall time ${fmt(elapsedSec)} s.`,
      '',
      'Servers:',
      ...versions,
    ].join('\n');

    return {
      markdown: md,
      verdicts,
      data: {
        config: { runtimeSec: cfg.runtimeSec, rampSec: cfg.rampSec, repeat: cfg.repeat, quick: cfg.quick, servers },
        machine: m,
        elapsedSec,
        summary,
        runs: Object.fromEntries(
          [...cells.entries()].map(([k, c]) => [
            k,
            {
              error: c.error,
              runs: c.runs.map((r) => ({
                main: r.fio.main,
                serverCpuPct: r.serverCpuPct,
                loadAvgBefore: r.loadAvgBefore,
                wallSec: r.wallSec,
                args: r.fio.args,
              })),
            },
          ]),
        ),
      },
    };
  },
};

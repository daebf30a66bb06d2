/**
 * remapd-profile: run remapd under `node --cpu-prof` during the random-read workload (4K QD32; more with
 * BENCH_PROFILE_WORKLOADS) and report
 * where the main thread's time goes (top functions by self time). Profiling slows the server a little;
 * these numbers are for finding hot spots, not for the comparison table.
 */
import * as fs from 'fs';
import * as path from 'path';
import { summarizeCpuProfile } from '../lib/cpuprofile';
import { STANDARD_WORKLOADS, type Workload } from '../lib/fio';
import { fmt, table } from '../lib/markdown';
import type { Suite, SuiteContext } from '../lib/suite';

/** BENCH_PROFILE_WORKLOADS=rand-read,seq-write,… picks the workloads profiled (default rand-read). */
function profiledWorkloads(): Workload[] {
  const ids = (process.env.BENCH_PROFILE_WORKLOADS || 'rand-read')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  return ids.map((id) => {
    const w = STANDARD_WORKLOADS.find((x) => x.id === id);
    if (!w) throw new Error(`BENCH_PROFILE_WORKLOADS: unknown workload ${id} (${STANDARD_WORKLOADS.map((x) => x.id).join(', ')})`);
    return w;
  });
}

export const remapdProfileSuite: Suite = {
  name: 'remapd-profile',
  description: 'CPU profile of remapd (node --cpu-prof) under rand read 4K QD32 (BENCH_PROFILE_WORKLOADS for others)',
  async run(ctx: SuiteContext) {
    const sections: string[] = [];
    const data: Record<string, unknown> = {};
    for (const w of profiledWorkloads()) {
      const r = await profileOne(ctx, w);
      sections.push(r.markdown);
      data[w.id] = r.data;
    }
    return { markdown: sections.join('\n\n'), data };
  },
};

async function profileOne(ctx: SuiteContext, w: Workload): Promise<{ markdown: string; data?: unknown }> {
  {
    const profDir = path.join(ctx.rawDir, `remapd-cpuprofile-${w.id}`);
    fs.mkdirSync(profDir, { recursive: true });
    const preload = path.join(ctx.config.repoRoot, 'dist', 'bench', 'lib', 'exit-on-signal.js');
    const nodeOptions = ['--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval=250', '--require', preload];

    let run;
    try {
      run = await ctx.withServer('remapd', { nodeOptions, label: `remapd-prof-${w.id}` }, (s) => ctx.runFio(s, w));
    } catch (err) {
      const msg = (err as Error).message;
      ctx.setupError(`remapd profile run: ${msg}`);
      return { markdown: `### remapd CPU profile (${w.label})\n\nNot measured: ${msg.split('\n')[0]}` };
    }
    const files = fs
      .readdirSync(profDir)
      .filter((f) => f.endsWith('.cpuprofile'))
      .map((f) => path.join(profDir, f))
      .sort((a, b) => fs.statSync(b).size - fs.statSync(a).size);
    if (!files.length) {
      ctx.setupError('remapd exited without writing a .cpuprofile');
      return { markdown: `### remapd CPU profile (${w.label})\n\nNo profile written (remapd did not exit normally on SIGTERM).` };
    }
    // only the measured part of the fio job: skip startup, the ramp, and shutdown
    const sum = summarizeCpuProfile(files[0], ctx.config.repoRoot, 20, {
      fromUs: run.startMonoUs + ctx.config.rampSec * 1e6 + 200_000,
      toUs: run.endMonoUs - 200_000,
    });
    const busy = 100 - sum.idlePct;
    const md = [
      `### remapd CPU profile (${w.label})`,
      '',
      `Run ${new Date().toISOString()}${ctx.config.quick ? ' (QUICK MODE)' : ''}: \`node --cpu-prof --cpu-prof-interval=250\` on remapd's main` +
        ` thread while fio ran ${ctx.config.runtimeSec} s + ${ctx.config.rampSec} s ramp; under profiling remapd did` +
        ` ${fmt(run.fio.main.iops)} IOPS (${fmt(run.fio.main.mbps, 1)} MB/s, p99 ${fmt(run.fio.main.clatP99Us)} µs),` +
        ` server CPU ${fmt(run.serverCpuPct)}% of a core (incl. libuv threadpool). Summary covers ${fmt(sum.durationMs / 1000, 1)} s` +
        ` (${fmt(sum.samples)} samples, ${sum.windowed ? 'the measured part of the fio job only' : 'whole profile incl. startup and shutdown'}); main thread busy ${fmt(busy, 1)}%, idle ${fmt(sum.idlePct, 1)}%.`,
      '',
      "Where the main thread's time goes, by category (% of profile):",
      '',
      table(
        ['category', 'ms', '%'],
        sum.byCategory.map((c) => [c.category, fmt(c.ms), fmt(c.pct, 1)]),
        ['l', 'r', 'r'],
      ),
      '',
      'Top functions by self time (total = inclusive time, including callees):',
      '',
      table(
        ['#', 'function', 'where', 'category', 'self ms', 'self %', 'total %'],
        sum.top.map((f, i) => [
          String(i + 1),
          `\`${f.name}\``,
          f.where ? `\`${f.where}\`` : '',
          f.category,
          fmt(f.selfMs),
          fmt(f.selfPct, 1),
          fmt(f.totalPct, 1),
        ]),
        ['r', 'l', 'l', 'l', 'r', 'r', 'r'],
      ),
      '',
      `Profile file: \`${path.relative(ctx.config.repoRoot, files[0])}\` (open in Chrome DevTools → Performance, or speedscope).`,
    ].join('\n');
    return { markdown: md, data: { fio: run.fio.main, serverCpuPct: run.serverCpuPct, profile: sum } };
  }
}

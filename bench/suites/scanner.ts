/**
 * scanner: what the background health scan costs clients, and how fast it reads when idle.
 *  - fio seq read 1M QD8 and rand read 4K QD32 against remapd --spare with the scanner paused (baseline), with the scan at its
 *    default rate (64 MiB/s, back-off on), and with back-off disabled (REMAPD_SCAN_BACKOFF=0: the scan keeps
 *    reading at the full rate while fio runs — the worst case). Bars: seq ≥ 95 %, rand ≥ 90 % of no-scan.
 *    The three daemons (each with its own spare) are up at once and BENCH_SCAN_ROUNDS rounds (default 3)
 *    run every workload on each, in an order that rotates; medians are reported, since single fio runs on
 *    this 2-vCPU machine differ by up to ±20 % between identical servers. While one daemon is measured, the
 *    scanners of the others are paused, so only the measured daemon's own scan runs.
 *  - main-thread event-loop delay p99 (scan.loopdelay) during each fio run and while idle.
 *  - idle full-pass time with --scan-rate 0 (unlimited) vs `dd bs=1M` of the same file, and the measured rate
 *    at the default 64 MiB/s.
 */
import * as fs from 'fs';
import * as path from 'path';
import { callControl } from '../../daemon/control-client';
import type { ScanStatus } from '../../health/scanner';
import type { LoopDelay } from '../../health/loop-delay';
import { STANDARD_WORKLOADS, type Workload } from '../lib/fio';
import { fmt, table } from '../lib/markdown';
import { run } from '../lib/proc';
import type { RunningServer } from '../lib/servers';
import type { Suite, SuiteContext, Verdict } from '../lib/suite';

const WORKLOADS: Workload[] = ['seq-read', 'rand-read'].map((id) => STANDARD_WORKLOADS.find((w) => w.id === id)!);
const BARS: Record<string, number> = { 'seq-read': 0.95, 'rand-read': 0.9 };

function ctlOf(s: RunningServer): string {
  return s.socketPath.replace(/\.sock$/, '') + '.ctl';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitControl(ctl: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await callControl(ctl, 'scan.status', {}, 2000);
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`no scan control on ${ctl}`);
}

async function makeSpare(ctx: SuiteContext, name: string): Promise<string> {
  const spare = path.join(ctx.workDir, `scanner-${name}-spare.img`);
  fs.rmSync(spare, { force: true });
  fs.closeSync(fs.openSync(spare, 'w'));
  fs.truncateSync(spare, 256 * 1024 * 1024);
  const r = await run(process.execPath, [path.join(ctx.config.repoRoot, 'bin', 'remapd'), 'create', '--main', ctx.image, '--spare', spare]);
  if (r.code !== 0) throw new Error(`remapd create failed: ${r.stderr}`);
  return spare;
}

interface Cell {
  mbps: number;
  iops: number;
  p99Us: number;
  loop: LoopDelay | null;
  scannedMiB: number | null;
}

export const scannerSuite: Suite = {
  name: 'scanner',
  description: 'health scan: client throughput with/without the scan, event-loop delay, idle scan speed vs dd',
  async run(ctx: SuiteContext) {
    const verdicts: Verdict[] = [];
    const data: Record<string, unknown> = {};
    const modes = [
      // The baseline keeps the scanner attached but paused before any measurement, so scan.loopdelay exists;
      // a paused scanner's worker is idle (no reads, no messages).
      { id: 'no-scan', label: 'no scan (scanner paused)', args: ['--scan-interval', '1h'], env: {} as Record<string, string> },
      { id: 'scan', label: 'scan 64 MiB/s (default, back-off on)', args: ['--scan-interval', '0s'], env: {} },
      {
        id: 'scan-nobackoff',
        label: 'scan 64 MiB/s, back-off off (worst case)',
        args: ['--scan-interval', '0s'],
        env: { REMAPD_SCAN_BACKOFF: '0' },
      },
    ];
    const rounds = Number(process.env.BENCH_SCAN_ROUNDS ?? (ctx.config.quick ? 1 : 3));
    const servers: Record<string, { s: RunningServer; ctl: string }> = {};
    for (const m of modes) {
      const spare = await makeSpare(ctx, m.id);
      const s = await ctx.startServer('remapd', { label: `remapd-${m.id}`, extraArgs: ['--spare', spare, ...m.args], env: m.env });
      const ctl = ctlOf(s);
      await waitControl(ctl);
      await callControl(ctl, 'scan.pause');
      servers[m.id] = { s, ctl };
    }
    /** Only `id`'s scanner runs (none for the baseline). */
    const only = async (id: string): Promise<void> => {
      for (const m of modes) {
        if (m.id === 'no-scan') continue;
        await callControl(servers[m.id].ctl, m.id === id ? 'scan.resume' : 'scan.pause');
      }
    };
    const idleLoop: Record<string, LoopDelay> = {};
    for (const m of modes) {
      // Idle event-loop delay over 3 s (the scan reads at its rate; no clients).
      const { ctl } = servers[m.id];
      await only(m.id);
      await callControl(ctl, 'scan.loopdelay', { reset: true }).catch(() => undefined);
      await sleep(3000);
      const idle = (await callControl(ctl, 'scan.loopdelay', { reset: true }).catch(() => null)) as LoopDelay | null;
      if (idle) idleLoop[m.id] = idle;
    }
    const runs: Record<string, Record<string, Cell[]>> = Object.fromEntries(
      modes.map((m) => [m.id, Object.fromEntries(WORKLOADS.map((w) => [w.id, [] as Cell[]]))]),
    );
    for (let r = 0; r < rounds; r++) {
      for (let wi = 0; wi < WORKLOADS.length; wi++) {
        const w = WORKLOADS[wi];
        for (let k = 0; k < modes.length; k++) {
          const m = modes[(r + wi + k) % modes.length];
          const { s, ctl } = servers[m.id];
          const hasScan = m.id !== 'no-scan';
          await only(m.id);
          const before = hasScan ? ((await callControl(ctl, 'scan.status')) as ScanStatus) : undefined;
          await callControl(ctl, 'scan.loopdelay', { reset: true }).catch(() => undefined);
          const res = await ctx.runFio(s, w, { tag: `${m.id}-r${r}` });
          const loop = (await callControl(ctl, 'scan.loopdelay', { reset: true }).catch(() => null)) as LoopDelay | null;
          const after = hasScan ? ((await callControl(ctl, 'scan.status')) as ScanStatus) : undefined;
          let scannedMiB: number | null = null;
          if (before && after) {
            const passes = after.passesCompleted - before.passesCompleted;
            scannedMiB = (passes * after.size + after.cursorOffset - before.cursorOffset) / 2 ** 20;
          }
          runs[m.id][w.id].push({ mbps: res.fio.main.mbps, iops: res.fio.main.iops, p99Us: res.fio.main.clatP99Us, loop, scannedMiB });
        }
      }
      ctx.log(`round ${r + 1}/${rounds} done`);
    }
    for (const m of modes) await ctx.stopServer(servers[m.id].s);
    // Per cell: the run with the median MB/s (its other numbers come with it).
    const cells: Record<string, Record<string, Cell>> = {};
    for (const m of modes) {
      cells[m.id] = {};
      for (const w of WORKLOADS) {
        const sorted = [...runs[m.id][w.id]].sort((a, b) => a.mbps - b.mbps);
        cells[m.id][w.id] = sorted[Math.floor(sorted.length / 2)];
      }
    }
    data.runs = runs;
    data.cells = cells;
    data.idleLoop = idleLoop;

    // Idle full pass, unlimited rate, vs dd.
    let passSec: number | undefined;
    let rate64: number | undefined;
    const unlimitedSpare = await makeSpare(ctx, 'unlimited');
    await ctx.withServer(
      'remapd',
      { label: 'remapd-scan-unlimited', extraArgs: ['--spare', unlimitedSpare, '--scan-rate', '0', '--scan-interval', '1h'] },
      async (s) => {
        const ctl = ctlOf(s);
        await waitControl(ctl);
        // Finish whatever pass the persisted cursor left, then time one whole pass from offset 0.
        const passesNow = async (): Promise<number> => ((await callControl(ctl, 'scan.status')) as ScanStatus).passesCompleted;
        const waitPass = async (n: number): Promise<void> => {
          const t = Date.now();
          while ((await passesNow()) < n) {
            if (Date.now() - t > 600_000) throw new Error('full pass took over 10 min');
            await sleep(20);
          }
        };
        await callControl(ctl, 'scan.start');
        const p0 = await passesNow();
        await waitPass(p0 + 1);
        const t0 = Date.now();
        await callControl(ctl, 'scan.start');
        await waitPass(p0 + 2);
        passSec = (Date.now() - t0) / 1000;
        await callControl(ctl, 'scan.set', { rate: 64 * 2 ** 20 });
        await callControl(ctl, 'scan.start');
        await sleep(6000);
        rate64 = ((await callControl(ctl, 'scan.status')) as ScanStatus).currentRate;
      },
    );
    const dd0 = Date.now();
    const dd = await run('dd', [`if=${ctx.image}`, 'of=/dev/null', 'bs=1M']);
    const ddSec = (Date.now() - dd0) / 1000;
    if (dd.code !== 0) ctx.setupError(`dd failed: ${dd.stderr}`);
    const sizeMiB = fs.statSync(ctx.image).size / 2 ** 20;
    data.idle = { passSec, ddSec, rate64, sizeMiB };

    // Markdown.
    const rows: string[][] = [];
    for (const w of WORKLOADS) {
      const base = cells['no-scan'][w.id];
      for (const m of modes) {
        const c = cells[m.id][w.id];
        rows.push([
          w.label,
          m.label,
          fmt(c.mbps, 1),
          fmt(c.iops),
          fmt(c.p99Us),
          `${((100 * c.mbps) / base.mbps).toFixed(1)} %`,
          c.loop ? fmt(c.loop.p99, 1) : '–',
          c.scannedMiB === null ? '–' : fmt(c.scannedMiB),
        ]);
      }
      // The bars apply to the default configuration; the worst case (no back-off) is reported, not judged.
      for (const m of modes.slice(1, 2)) {
        const ratio = cells[m.id][w.id].mbps / base.mbps;
        verdicts.push({
          name: `${w.label}: ${m.label} ≥ ${BARS[w.id] * 100} % of no scan`,
          pass: ratio >= BARS[w.id],
          detail: `${(100 * ratio).toFixed(1)} %`,
        });
      }
    }
    const idleRows = modes.map((m) => [
      m.label,
      idleLoop[m.id] ? fmt(idleLoop[m.id].p99, 2) : '–',
      idleLoop[m.id] ? fmt(idleLoop[m.id].max, 2) : '–',
    ]);
    const md = [
      '### Health scanner',
      '',
      `Run ${new Date().toISOString()}${ctx.config.quick ? ' — **QUICK MODE**' : ''}. remapd with a spare (\`--spare\`, 256 MiB), image ${fmt(sizeMiB)} MiB of random data in the page cache; fio ${ctx.config.runtimeSec} s + ${ctx.config.rampSec} s ramp per run. The three daemons are up at once (each with its own spare); ${rounds} round(s), each running every workload on each daemon in a rotating order, while the other daemons' scanners are paused; each cell is the run with the median MB/s. "scanned" = MiB the scan read during the fio job (the default back-off holds the scan while clients do ≥ 200 requests/s). Loop p99 = main-thread event-loop delay (perf_hooks.monitorEventLoopDelay, 10 ms resolution) during the job.`,
      '',
      table(['workload', 'mode', 'MB/s', 'IOPS', 'p99 clat (µs)', 'vs no scan', 'loop p99 (ms)', 'scanned MiB'], rows, [
        'l',
        'l',
        'r',
        'r',
        'r',
        'r',
        'r',
        'r',
      ]),
      '',
      '**Bars**:',
      '',
      ...verdicts.map((v) => `- **${v.pass ? 'PASS' : 'FAIL'}** ${v.name}: ${v.detail}`),
      '',
      'Idle event-loop delay (3 s, no clients; the scan reading at its rate):',
      '',
      table(['mode', 'loop p99 (ms)', 'loop max (ms)'], idleRows, ['l', 'r', 'r']),
      '',
      `Idle full pass (\`--scan-rate 0\`, unlimited): ${passSec === undefined ? '–' : `${passSec.toFixed(2)} s = ${fmt(sizeMiB / passSec)} MiB/s`}; \`dd if=IMG of=/dev/null bs=1M\`: ${ddSec.toFixed(2)} s = ${fmt(sizeMiB / ddSec)} MiB/s${passSec ? ` (scan/dd speed ${((100 * ddSec) / passSec).toFixed(0)} %)` : ''}. At the default rate the scan measured ${rate64 === undefined ? '–' : `${fmt(rate64 / 2 ** 20, 1)} MiB/s`} (configured 64 MiB/s).`,
    ].join('\n');
    return { markdown: md, data, verdicts };
  },
};

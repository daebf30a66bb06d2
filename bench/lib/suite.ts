/**
 * The plug-in interface for bench suites. A suite is `{ name, description, run(ctx) }`; `run` starts servers
 * and runs fio through the helpers on `ctx` and returns a markdown section. bench/run.ts puts that section in
 * docs/PERFORMANCE.md between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`, prints it, and
 * saves `data` as JSON under bench/results/. To add a suite: write bench/suites/NAME.ts exporting a Suite
 * and add it to SUITES in bench/run.ts.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { BenchConfig } from './config';
import { runFio, type FioResult, type Workload } from './fio';
import { syncDisks } from './image';
import { loadAvg1, type MachineInfo } from './machine';
import { treeCpuSeconds } from './proc';
import { serverVersion, startServer, type RunningServer, type ServerKind, type ServerOptions } from './servers';

export interface Verdict {
  readonly name: string;
  /** undefined = could not be judged (e.g. the server did not run). */
  readonly pass: boolean | undefined;
  readonly detail: string;
}

export interface SuiteOutcome {
  /** Markdown for docs/PERFORMANCE.md (no markers; the runner adds them). */
  readonly markdown: string;
  /** Anything JSON-serialisable; saved as bench/results/<run>/<suite>.json. */
  readonly data?: unknown;
  /** PASS/FAIL lines printed by the runner. A FAIL does not change the exit code. */
  readonly verdicts?: readonly Verdict[];
}

export interface Suite {
  readonly name: string;
  readonly description: string;
  run(ctx: SuiteContext): Promise<SuiteOutcome>;
}

export interface MeasuredRun {
  readonly fio: FioResult;
  /** CPU used by the server process tree during the fio job, in % of one core (100 = one full core). */
  readonly serverCpuPct: number;
  /** 1-minute load average just before the job (noise indicator: other work on the machine). */
  readonly loadAvgBefore: number;
  readonly wallSec: number;
  /** fio start/end on the monotonic clock, microseconds (same clock as V8 .cpuprofile timestamps). */
  readonly startMonoUs: number;
  readonly endMonoUs: number;
}

export interface FioOverrides {
  readonly runtimeSec?: number;
  readonly rampSec?: number;
  /** Distinguishes repeated runs in raw file names. */
  readonly tag?: string;
  /** Pin fio to these CPUs (`taskset -c`). */
  readonly cpus?: string;
}

export class SuiteContext {
  private readonly running = new Set<RunningServer>();
  private readonly errors: string[] = [];

  constructor(
    readonly suiteName: string,
    readonly config: BenchConfig,
    readonly machine: MachineInfo,
    /** The shared random-data test image. */
    readonly image: string,
    /** Scratch directory for sockets, configs, logs of this run. */
    readonly workDir: string,
    /** bench/results/<run-stamp>/ */
    readonly rawDir: string,
  ) {}

  log(msg: string): void {
    process.stderr.write(`[bench ${this.suiteName}] ${msg}\n`);
  }

  /** Record a setup error: the run continues where it can, and the bench exits non-zero at the end. */
  setupError(msg: string): void {
    this.errors.push(msg);
    this.log(`SETUP ERROR: ${msg}`);
  }

  get setupErrors(): readonly string[] {
    return this.errors;
  }

  version(kind: ServerKind): Promise<string> {
    return serverVersion(kind, this.config.repoRoot);
  }

  async startServer(kind: ServerKind, opts: ServerOptions = {}): Promise<RunningServer> {
    const s = await startServer(
      kind,
      {
        repoRoot: this.config.repoRoot,
        image: opts.image ?? this.image,
        workDir: this.workDir,
        remapdNodeOptions: this.config.remapdNodeOptions,
      },
      opts,
    );
    this.running.add(s);
    this.log(`started ${s.label} (pid ${s.pid}): ${s.commandLine}`);
    return s;
  }

  async stopServer(s: RunningServer): Promise<void> {
    await s.stop();
    this.running.delete(s);
  }

  /** Start a server, run `fn`, always stop it. */
  async withServer<T>(kind: ServerKind, opts: ServerOptions, fn: (s: RunningServer) => Promise<T>): Promise<T> {
    const s = await this.startServer(kind, opts);
    try {
      return await fn(s);
    } finally {
      await this.stopServer(s);
    }
  }

  /** `sync`, then one fio job against the server, measuring the server's CPU use. Raw JSON goes to rawDir. */
  async runFio(server: RunningServer, w: Workload, o: FioOverrides = {}): Promise<MeasuredRun> {
    await syncDisks();
    const dead = server.exited();
    if (dead) throw new Error(`${server.label} ${dead} (log: ${server.logFile})`);
    const outFile = path.join(this.rawDir, `${this.suiteName}-${server.label}-${w.id}${o.tag ? `-${o.tag}` : ''}.fio.json`);
    const loadAvgBefore = loadAvg1();
    const cpu0 = treeCpuSeconds(server.pid);
    const t0 = process.hrtime.bigint();
    const fio = await runFio(server.uri, w, {
      runtimeSec: o.runtimeSec ?? this.config.runtimeSec,
      rampSec: o.rampSec ?? this.config.rampSec,
      outFile,
      cpus: o.cpus,
    });
    const t1 = process.hrtime.bigint();
    const wallSec = Number(t1 - t0) / 1e9;
    const cpu1 = treeCpuSeconds(server.pid);
    const after = server.exited();
    if (after) throw new Error(`${server.label} ${after} during ${w.id} (log: ${server.logFile})`);
    return {
      fio,
      serverCpuPct: (100 * (cpu1 - cpu0)) / wallSec,
      loadAvgBefore,
      wallSec,
      startMonoUs: Number(t0 / 1000n),
      endMonoUs: Number(t1 / 1000n),
    };
  }

  /** Save extra raw data (JSON) next to the fio output; returns the path. */
  saveRaw(name: string, data: unknown): string {
    const file = path.join(this.rawDir, `${this.suiteName}-${name}.json`);
    fs.writeFileSync(file, JSON.stringify(data, null, 2));
    return file;
  }

  /** Stop anything still running (on errors / interrupts). */
  async cleanup(): Promise<void> {
    for (const s of [...this.running]) await this.stopServer(s).catch(() => undefined);
  }
}

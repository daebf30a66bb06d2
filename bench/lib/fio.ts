/** Run one fio job against an NBD URI with the nbd engine and extract the numbers we report. */
import * as fs from 'fs';
import * as path from 'path';
import { run } from './proc';

export interface Workload {
  /** Short id, used in file names. */
  readonly id: string;
  /** Human label for tables. */
  readonly label: string;
  readonly rw: 'read' | 'write' | 'randread' | 'randwrite' | 'randrw' | 'rw';
  readonly bs: string;
  readonly iodepth: number;
  /** Extra fio options, e.g. ['--rwmixread=70']. */
  readonly extra?: readonly string[];
}

/** The four standard workloads. */
export const STANDARD_WORKLOADS: readonly Workload[] = [
  { id: 'seq-read', label: 'seq read 1M QD8', rw: 'read', bs: '1M', iodepth: 8 },
  { id: 'seq-write', label: 'seq write 1M QD8', rw: 'write', bs: '1M', iodepth: 8 },
  { id: 'rand-read', label: 'rand read 4K QD32', rw: 'randread', bs: '4k', iodepth: 32 },
  { id: 'rand-write', label: 'rand write 4K QD32', rw: 'randwrite', bs: '4k', iodepth: 32 },
];

export interface DirStats {
  /** MB/s, 10^6 bytes per second. */
  readonly mbps: number;
  readonly iops: number;
  /** Completion-latency percentiles in microseconds. */
  readonly clatP50Us: number;
  readonly clatP99Us: number;
  readonly clatMeanUs: number;
}

export interface FioResult {
  readonly workload: Workload;
  readonly uri: string;
  readonly args: readonly string[];
  /** The direction that matters for the workload (read for reads, write for writes). */
  readonly main: DirStats;
  readonly read?: DirStats;
  readonly write?: DirStats;
  readonly errors: number;
  /** Raw fio JSON. */
  readonly raw: unknown;
}

export interface FioRunOptions {
  readonly runtimeSec: number;
  readonly rampSec: number;
  /** Where fio writes its JSON. */
  readonly outFile: string;
  /** CPU list for `taskset -c`. */
  readonly cpus?: string;
}

interface FioDirJson {
  bw_bytes: number;
  iops: number;
  total_ios: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
}

function dirStats(d: FioDirJson): DirStats {
  const pct = d.clat_ns.percentile ?? {};
  return {
    mbps: d.bw_bytes / 1e6,
    iops: d.iops,
    clatP50Us: (pct['50.000000'] ?? NaN) / 1000,
    clatP99Us: (pct['99.000000'] ?? NaN) / 1000,
    clatMeanUs: d.clat_ns.mean / 1000,
  };
}

export function fioArgs(uri: string, w: Workload, o: FioRunOptions): string[] {
  return [
    `--name=${w.id}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${w.rw}`,
    `--bs=${w.bs}`,
    `--iodepth=${w.iodepth}`,
    '--numjobs=1',
    '--time_based',
    `--runtime=${o.runtimeSec}`,
    `--ramp_time=${o.rampSec}`,
    // Same random offsets for every server.
    '--randrepeat=1',
    '--output-format=json',
    `--output=${o.outFile}`,
    ...(w.extra ?? []),
  ];
}

/** Run fio; throws with fio's stderr if it fails or reports an error. */
export async function runFio(uri: string, w: Workload, o: FioRunOptions): Promise<FioResult> {
  fs.mkdirSync(path.dirname(o.outFile), { recursive: true });
  try {
    fs.unlinkSync(o.outFile);
  } catch {
    /* none */
  }
  const args = fioArgs(uri, w, o);
  const timeout = { timeoutMs: (o.runtimeSec + o.rampSec + 60) * 1000 };
  const r = await (o.cpus ? run('taskset', ['-c', o.cpus, 'fio', ...args], timeout) : run('fio', args, timeout));
  let json: { jobs?: Array<{ error: number; read: FioDirJson; write: FioDirJson }> } | undefined;
  try {
    json = JSON.parse(fs.readFileSync(o.outFile, 'utf8'));
  } catch {
    json = undefined;
  }
  const job = json?.jobs?.[0];
  if (r.code !== 0 || !job || job.error !== 0) {
    const why = r.signal ? `killed by ${r.signal} (timeout?)` : `exit code ${r.code}`;
    throw new Error(`fio ${w.id} on ${uri}: ${why}, job error ${job?.error ?? '?'}\n${(r.stderr + r.stdout).trim().slice(-1500)}`);
  }
  const read = job.read.total_ios > 0 ? dirStats(job.read) : undefined;
  const write = job.write.total_ios > 0 ? dirStats(job.write) : undefined;
  const main = (w.rw.includes('write') ? write : read) ?? read ?? write;
  if (!main) throw new Error(`fio ${w.id} on ${uri}: no I/O completed`);
  return { workload: w, uri, args, main, read, write, errors: job.error, raw: json };
}

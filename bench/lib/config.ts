/**
 * Bench settings, all from the environment so `npm run bench` needs no arguments.
 *
 *   BENCH_QUICK=1          short runs (3 s + 1 s ramp) for checking the harness, not for numbers
 *   BENCH_RUNTIME=10       seconds measured per fio job
 *   BENCH_RAMP=2           seconds of warm-up per fio job (not measured)
 *   BENCH_REPEAT=1         run every (server, workload) pair N times, report the median
 *   BENCH_SERVERS=…        comma list, default remapd,nbdkit,qemu-nbd,nbd-server
 *   BENCH_CACHE_DIR=…      where the test image lives between runs (default /var/tmp/remapd-bench)
 *   BENCH_IMAGE_MIB=1024   test image size
 *   BENCH_NO_DOC=1         do not touch docs/PERFORMANCE.md (stdout + bench/results only)
 *   REMAPD_NODE_OPTIONS=…  extra node flags for the remapd process (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p")
 */
import * as path from 'path';

export interface BenchConfig {
  readonly quick: boolean;
  readonly runtimeSec: number;
  readonly rampSec: number;
  readonly repeat: number;
  readonly servers: readonly string[];
  readonly cacheDir: string;
  readonly imageBytes: number;
  readonly writeDoc: boolean;
  readonly remapdNodeOptions: readonly string[];
  /** Repository root (where package.json lives). */
  readonly repoRoot: string;
  readonly resultsDir: string;
  readonly docPath: string;
}

function intEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min) throw new Error(`${name}=${raw}: expected a number >= ${min}`);
  return v;
}

export const ALL_SERVERS = ['remapd', 'nbdkit', 'qemu-nbd', 'nbd-server'] as const;

export function loadConfig(): BenchConfig {
  const quick = process.env.BENCH_QUICK === '1';
  // dist/bench/lib/config.js -> repo root is three levels up.
  const repoRoot = path.resolve(__dirname, '..', '..', '..');
  const servers = (process.env.BENCH_SERVERS ?? ALL_SERVERS.join(','))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const s of servers) {
    if (!(ALL_SERVERS as readonly string[]).includes(s)) {
      throw new Error(`BENCH_SERVERS: unknown server "${s}" (known: ${ALL_SERVERS.join(', ')})`);
    }
  }
  return {
    quick,
    runtimeSec: intEnv('BENCH_RUNTIME', quick ? 3 : 10, 1),
    rampSec: intEnv('BENCH_RAMP', quick ? 1 : 2, 0),
    repeat: intEnv('BENCH_REPEAT', 1, 1),
    servers,
    cacheDir: process.env.BENCH_CACHE_DIR || '/var/tmp/remapd-bench',
    imageBytes: intEnv('BENCH_IMAGE_MIB', 1024, 16) * 1024 * 1024,
    writeDoc: process.env.BENCH_NO_DOC !== '1',
    remapdNodeOptions: (process.env.REMAPD_NODE_OPTIONS ?? '').split(/\s+/).filter((s) => s !== ''),
    repoRoot,
    resultsDir: path.join(repoRoot, 'bench', 'results'),
    docPath: path.join(repoRoot, 'docs', 'PERFORMANCE.md'),
  };
}

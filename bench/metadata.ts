/**
 * Metadata benchmark (real sparse file on this disk, fdatasync on every commit round). Prints JSON:
 *  - loadMs1M: MetadataStore.open() of a spare holding 1,000,000 remaps (+ the engine's RemapTable view: O(1)),
 *    each time in a fresh node process (as a daemon start does; the file is in the page cache): the median of
 *    LOAD_RUNS runs, and every run. The table is made the way a daemon makes it: commits of 10,000 remaps, so
 *    the spare holds a checkpoint plus a journal full of frames to replay (the slowest state to load).
 *  - openCpuMs1M: CPU time of those opens (less sensitive to machine load than wall time); loadavg meanwhile
 *  - rssMB1M: RSS of the fresh process after the open (the table is compact: typed arrays, no object per entry)
 *  - coldLoadMs1M: the same open after dropping the page cache (root only; reads ~130 MB of metadata copies)
 *  - lookupNs: ns per RemapTable.lookup (the per-block lookup of the I/O path), hits and misses mixed,
 *    with 1,000,000 / 10,000 / 0 remaps
 *  - commit latency p50/p99 (ms) of single-remap commits, one at a time, with 0 and 100,000 existing remaps
 * Usage: node dist/bench/metadata.js [dir]   (default: os.tmpdir())
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Backend } from '../storage/backend';
import { MetadataStore } from '../metadata/store';
import { RemapTable } from '../remap/remap-table';
import { spawnSync } from 'child_process';
import { median } from './lib/stats';
import { mainBlock } from '../units';

const LOAD_RUNS = 5;

const MAIN = { size: 2 ** 40, logicalBlockSize: 512 };

async function openSpare(file: string, size: number): Promise<Backend> {
  const f = await fs.promises.open(file, 'w');
  await f.truncate(size);
  await f.close();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fb = require('../storage/file-backend') as { openBackend(p: string, o: { readOnly?: boolean }): Promise<Backend> };
  return fb.openBackend(file, { readOnly: false });
}

async function fill(s: MetadataStore, n: number, batch = 10_000): Promise<void> {
  for (let i = 0; i < n; i += batch) {
    const add = [];
    for (let j = i; j < Math.min(n, i + batch); j++)
      add.push({ mainBlock: mainBlock(j * 3), spareBlock: s.allocateSpareBlock()!, reason: 'write-error' as const, createdAt: Date.now() });
    await s.commit({ add });
  }
}

function pct(a: number[], p: number): number {
  const s = [...a].sort((x, y) => x - y);
  return +s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(3);
}

async function latency(
  existing: number,
  dir: string,
  samples: number,
): Promise<{ p50: number; p99: number; max: number; samples: number }> {
  const file = path.join(dir, `bench-lat-${existing}.img`);
  const spare = await openSpare(file, 8 * 2 ** 30);
  const s = await MetadataStore.create(spare, MAIN, { blockSize: 4096, force: true });
  await fill(s, existing);
  await s.checkpoint();
  const lat: number[] = [];
  for (let i = 0; i < samples; i++) {
    const t0 = process.hrtime.bigint();
    await s.commit({
      add: [
        {
          mainBlock: mainBlock(3 * existing + 1 + 3 * i),
          spareBlock: s.allocateSpareBlock()!,
          reason: 'write-error',
          createdAt: Date.now(),
        },
      ],
    });
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  await s.close();
  await spare.close();
  fs.rmSync(file, { force: true });
  return { p50: pct(lat, 50), p99: pct(lat, 99), max: +Math.max(...lat).toFixed(3), samples };
}

/** ns per lookup over `n` probes of main blocks in [0, range): about a third of them hit in the benches. */
function lookupNs(table: RemapTable, range: number, n = 2_000_000): number {
  const keys = new Float64Array(4096);
  for (let i = 0; i < keys.length; i++) keys[i] = Math.floor(Math.random() * range);
  let hits = 0;
  for (let i = 0; i < n / 4; i++) if (table.lookup(mainBlock(keys[i & 4095])) !== undefined) hits++; // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) if (table.lookup(mainBlock(keys[i & 4095])) !== undefined) hits++;
  const ns = Number(process.hrtime.bigint() - t0) / n;
  return hits < 0 ? -1 : +ns.toFixed(1);
}

async function smallTableLookupNs(dir: string, remaps: number): Promise<number> {
  const file = path.join(dir, `bench-lookup-${remaps}.img`);
  const spare = await openSpare(file, 1 * 2 ** 30);
  const s = await MetadataStore.create(spare, MAIN, { blockSize: 4096, force: true });
  await fill(s, remaps);
  const ns = lookupNs(RemapTable.from(s), 3 * remaps + 3);
  await s.close();
  await spare.close();
  fs.rmSync(file, { force: true });
  return ns;
}

interface OpenResult {
  count: number;
  ms: number;
  cpuMs: number;
  rssMB: number;
  lookupNs?: number;
}

/** `--open FILE`: the child side. Opens FILE's metadata once, prints an OpenResult as JSON. */
async function openOnce(file: string, lookups: boolean): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fb = require('../storage/file-backend') as { openBackend(p: string, o: { readOnly?: boolean }): Promise<Backend> };
  const spare = await fb.openBackend(file, { readOnly: false });
  const c1 = process.cpuUsage();
  const t1 = process.hrtime.bigint();
  const s = await MetadataStore.open(spare, MAIN);
  const table = RemapTable.from(s);
  const ms = Number(process.hrtime.bigint() - t1) / 1e6;
  const cpu = process.cpuUsage(c1);
  const out: OpenResult = {
    count: table.size,
    ms: +ms.toFixed(1),
    cpuMs: +((cpu.user + cpu.system) / 1000).toFixed(1),
    rssMB: +(process.memoryUsage().rss / 2 ** 20).toFixed(1),
  };
  if (lookups) out.lookupNs = lookupNs(table, 3_000_003);
  await s.close();
  await spare.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function openInChild(file: string, lookups = false): OpenResult {
  const r = spawnSync(process.execPath, [__filename, '--open', file, ...(lookups ? ['--lookups'] : [])], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (r.status !== 0) throw new Error(`open in a fresh process failed (exit ${r.status}): ${r.stderr.slice(-500)}`);
  return JSON.parse(r.stdout) as OpenResult;
}

function dropPageCache(): boolean {
  try {
    spawnSync('sync');
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(process.argv[2] ?? os.tmpdir(), 'remapd-bench-'));
  try {
    const file = path.join(dir, 'bench-1m.img');
    const spare = await openSpare(file, 5 * 2 ** 30);
    const s = await MetadataStore.create(spare, MAIN, { blockSize: 4096, force: true });
    const t0 = Date.now();
    await fill(s, 1_000_000);
    const fillMs = Date.now() - t0;
    await s.commit({ add: [{ mainBlock: mainBlock(1), spareBlock: s.allocateSpareBlock()!, reason: 'manual', createdAt: Date.now() }] }); // one more journal frame to replay
    await s.close();
    await spare.close();
    const runs: OpenResult[] = [];
    for (let i = 0; i < LOAD_RUNS; i++) runs.push(openInChild(file, i === 0));
    const loadavg = os.loadavg().map((x) => +x.toFixed(2));
    const cold = dropPageCache() ? openInChild(file) : undefined;
    fs.rmSync(file, { force: true });
    const out = {
      remapsLoaded: runs[0].count,
      loadMs1M: median(runs.map((r) => r.ms)),
      loadMs1MRuns: runs.map((r) => r.ms),
      openCpuMs1M: median(runs.map((r) => r.cpuMs)),
      loadavgDuringOpens: loadavg,
      rssMB1M: median(runs.map((r) => r.rssMB)),
      coldLoadMs1M: cold ? cold.ms : 'not measured (needs root to drop the page cache)',
      lookupNs: { remaps1M: runs[0].lookupNs, remaps10k: await smallTableLookupNs(dir, 10_000), remaps0: await smallTableLookupNs(dir, 0) },
      fill1MBatchesOf10kMs: fillMs,
      commitLatencyMs: { existing0: await latency(0, dir, 1000), existing100k: await latency(100_000, dir, 1000) },
      note: 'loads: each in a fresh node process, file in the page cache (cold: after drop_caches); commits: single-remap commits issued one at a time, each = 1 journal frame x 5 copies + fdatasync; a journal-full checkpoint shows up in max',
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const openArg = process.argv.indexOf('--open');
(openArg >= 0 ? openOnce(process.argv[openArg + 1], process.argv.includes('--lookups')) : main()).catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});

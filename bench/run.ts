/**
 * Bench driver: `npm run bench [-- SUITE...]` (bench/run.sh builds, then runs dist/bench/run.js).
 * Runs every suite in SUITES (or those named in argv), prints each suite's markdown, writes it into
 * docs/PERFORMANCE.md between the suite's markers, saves raw JSON under bench/results/<stamp>/.
 * Exit status: 0 even when a performance bar is missed; 1 on setup errors (a server or fio failed);
 * 2 on a crash of the driver itself. Settings: see bench/lib/config.ts.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadConfig } from './lib/config';
import { ensureImage, warmPageCache } from './lib/image';
import { machineInfo } from './lib/machine';
import { writeSection } from './lib/markdown';
import { SuiteContext, type Suite } from './lib/suite';
import { nbdServersSuite } from './suites/nbd-servers';
import { remapdProfileSuite } from './suites/remapd-profile';
import { remapSuite } from './suites/remap';
import { scannerSuite } from './suites/scanner';
import { directIoSuite } from './suites/direct-io';

/** Registered suites, in run order. Add new suites here. */
export const SUITES: readonly Suite[] = [nbdServersSuite, remapdProfileSuite, scannerSuite, remapSuite, directIoSuite];

async function main(argv: string[]): Promise<number> {
  const cfg = loadConfig();
  const names = argv.filter((a) => !a.startsWith('-'));
  if (argv.includes('--list')) {
    for (const s of SUITES) process.stdout.write(`${s.name}\t${s.description}\n`);
    return 0;
  }
  const unknown = names.filter((n) => !SUITES.some((s) => s.name === n));
  if (unknown.length) throw new Error(`unknown suite(s): ${unknown.join(', ')} (known: ${SUITES.map((s) => s.name).join(', ')})`);
  const selected = names.length ? SUITES.filter((s) => names.includes(s.name)) : SUITES;

  const t0 = Date.now();
  const log = (m: string): void => {
    process.stderr.write(`[bench] ${m}\n`);
  };
  const machine = await machineInfo();
  const image = ensureImage(cfg.cacheDir, cfg.imageBytes, log);
  log(`pre-reading ${image} into the page cache`);
  await warmPageCache(image);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const rawDir = path.join(cfg.resultsDir, stamp);
  fs.mkdirSync(rawDir, { recursive: true });
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'remapd-bench-'));
  log(`${cfg.quick ? 'QUICK mode, ' : ''}${cfg.runtimeSec}s+${cfg.rampSec}s per job; raw results in ${rawDir}; scratch ${workDir}`);

  let setupErrors = 0;
  let current: SuiteContext | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: stopping servers`);
    void (current?.cleanup() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const summaryLines: string[] = [];
  for (const suite of selected) {
    const ctx = new SuiteContext(suite.name, cfg, machine, image, workDir, rawDir);
    current = ctx;
    ctx.log(`start: ${suite.description}`);
    const st = Date.now();
    try {
      const out = await suite.run(ctx);
      const secs = (Date.now() - st) / 1000;
      process.stdout.write(`\n${out.markdown.trim()}\n\n`);
      if (cfg.writeDoc) writeSection(cfg.docPath, suite.name, out.markdown);
      fs.writeFileSync(
        path.join(rawDir, `${suite.name}.json`),
        JSON.stringify({ suite: suite.name, seconds: secs, setupErrors: ctx.setupErrors, data: out.data ?? null }, null, 2),
      );
      fs.copyFileSync(path.join(rawDir, `${suite.name}.json`), path.join(cfg.resultsDir, `latest-${suite.name}.json`));
      for (const v of out.verdicts ?? []) {
        summaryLines.push(`${v.pass === undefined ? 'SKIP' : v.pass ? 'PASS' : 'FAIL'}  ${v.name}: ${v.detail}`);
      }
      summaryLines.push(`suite ${suite.name}: ${secs.toFixed(0)} s, ${ctx.setupErrors.length} setup error(s)`);
    } catch (err) {
      ctx.setupError(`suite crashed: ${(err as Error).stack ?? err}`);
      summaryLines.push(`suite ${suite.name}: CRASHED: ${(err as Error).message}`);
    } finally {
      await ctx.cleanup();
    }
    setupErrors += ctx.setupErrors.length;
  }
  fs.rmSync(workDir, { recursive: true, force: true });
  process.stdout.write(`${summaryLines.join('\n')}\n`);
  process.stdout.write(
    `bench total: ${((Date.now() - t0) / 1000).toFixed(0)} s${cfg.writeDoc ? `; wrote ${path.relative(cfg.repoRoot, cfg.docPath)}` : ''}\n`,
  );
  if (setupErrors) process.stdout.write(`${setupErrors} setup error(s): exit 1 (see messages above)\n`);
  return setupErrors ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`bench: ${(err as Error).stack ?? err}\n`);
      process.exit(2);
    },
  );
}

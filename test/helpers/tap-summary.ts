/**
 * Summarise raw TAP files written by `tap --output-file` (run by test/run-all.sh).
 *
 * What is counted: every *leaf* test point (assertion), using tap-parser's flat mode, which also
 * turns a test file or subtest that failed without any failing assertion of its own (crash at load,
 * non-zero exit, timeout) into one failed test point. Skipped and todo test points count as skipped.
 *
 * Usage: node dist/test/helpers/tap-summary.js FILE.tap... ; prints per-file lines, then
 * `SUMMARY <passed> <failed> <skipped>` as the last line (run-all.sh formats the final line).
 */
import { readFileSync, existsSync } from 'node:fs';
import { Parser, type Result } from 'tap-parser';

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
  failures: string[];
}

function summarise(tap: string): Counts {
  const c: Counts = { passed: 0, failed: 0, skipped: 0, failures: [] };
  const p = new Parser({ flat: true });
  p.on('result', (r: Result) => {
    if (r.todo || r.skip) c.skipped++;
    else if (r.ok) c.passed++;
    else {
      c.failed++;
      c.failures.push(r.fullname || r.name);
    }
  });
  p.end(tap);
  return c;
}

function main(files: string[]): void {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for (const f of files) {
    if (!existsSync(f)) continue;
    const c = summarise(readFileSync(f, 'utf8'));
    passed += c.passed;
    failed += c.failed;
    skipped += c.skipped;
    for (const name of c.failures) process.stdout.write(`FAILED: ${name}\n`);
  }
  process.stdout.write(`SUMMARY ${passed} ${failed} ${skipped}\n`);
}

main(process.argv.slice(2));

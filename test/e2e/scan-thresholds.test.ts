/**
 * The scanner's slow-read thresholds from the command line and the config file (`--scan-slow`,
 * `--scan-very-slow`, `scanSlow`, `scanVerySlow`): bad values end with exit 2 and a message naming the
 * flag; good ones are in effect (scan.status shows them). Their effect on what is migrated is in
 * scan.test.ts ('raised slow thresholds: ...').
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { callControl } from '../../daemon/control-client';
import type { ScanStatus } from '../../health/scanner';
import { describe, MiB, REMAPD_BIN, run, sparseImage, startServer, tempDir } from '../helpers';

t.setTimeout(180_000);

const serve = (args: string[]) => run(process.execPath, [REMAPD_BIN, 'serve', ...args], { timeoutMs: 60_000 });

t.test('bad thresholds on the command line: exit 2, the flag named', async (t) => {
  const dir = tempDir(t);
  const main = join(dir, 'main.img');
  for (const [args, msg] of [
    [['--scan-slow', '0'], /--scan-slow must be from 1ms to 10m, not '0'/],
    [['--scan-very-slow', 'soon'], /--scan-very-slow: 'soon' is not a duration/],
    [['--scan-slow', '20m', '--scan-very-slow', '30m'], /--scan-slow must be from 1ms to 10m/],
    [['--scan-slow', '1s'], /--scan-very-slow \(200ms\) must be at least --scan-slow \(1s\): set --scan-very-slow too/],
    [['--scan-slow', '2s', '--scan-very-slow', '1s'], /--scan-very-slow \(1s\) must be at least --scan-slow \(2s\)/],
  ] as const) {
    const r = await serve(['--main', main, '--socket', join(dir, 's.sock'), ...args]);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`, { out: describe(r) });
    t.match(r.stderr, msg, `${args.join(' ')}: message`, { out: describe(r) });
  }
});

t.test('bad thresholds in the config file: exit 2, the file and keys named', async (t) => {
  const dir = tempDir(t);
  const cfg = join(dir, 'c.json');
  writeFileSync(cfg, JSON.stringify({ main: join(dir, 'main.img'), scanSlow: '2s', scanVerySlow: '1s' }));
  const r = await serve(['--config', cfg, '--socket', join(dir, 's.sock')]);
  t.equal(r.code, 2, { out: describe(r) });
  t.match(r.stderr, `--scan-very-slow (1s) must be at least --scan-slow (2s) (in ${cfg}: scanSlow, scanVerySlow)`);
  writeFileSync(cfg, JSON.stringify({ main: join(dir, 'main.img'), scanSlow: 5 }));
  const r2 = await serve(['--config', cfg]);
  t.equal(r2.code, 2, { out: describe(r2) });
  t.match(r2.stderr, `${cfg}: key "scanSlow" must be a non-empty string, not 5`);
});

t.test('thresholds from the config file, one overridden by a flag, are in effect', async (t) => {
  const dir = tempDir(t);
  const image = join(dir, 'main.img');
  const spare = join(dir, 'spare.img');
  sparseImage(image, 8 * MiB);
  sparseImage(spare, 16 * MiB);
  const c = await run(process.execPath, [REMAPD_BIN, 'create', '--main', image, '--spare', spare]);
  t.equal(c.code, 0, describe(c));
  const cfg = join(dir, 'c.json');
  writeFileSync(cfg, JSON.stringify({ scanSlow: '1500ms', scanVerySlow: '3s' }));
  await startServer(t, { kind: 'remapd', image, dir, extraArgs: ['--spare', spare, '--config', cfg, '--scan-very-slow', '4s'] });
  const st = (await callControl(join(dir, 'nbd.ctl'), 'scan.status')) as ScanStatus;
  t.equal(st.slowMs, 1500, 'scanSlow from the file');
  t.equal(st.verySlowMs, 4000, '--scan-very-slow beats the file');
});

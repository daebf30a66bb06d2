/**
 * The alert runner at shutdown (daemon/alerts/alert-runner.ts), with real shell scripts: a run under way is
 * waited for so its output lands before the daemon goes, one that outlives the grace is left alone and
 * logged, and events queued behind it are dropped and logged, never run after close.
 */
import t from 'tap';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { AlertRunner } from '../../daemon/alerts/alert-runner';
import { tempDir } from '../helpers/tmp';

function rig(t: { teardown(fn: () => unknown): void }, body: string, timeoutMs = 30_000) {
  const dir = tempDir(t, 'remapd-alert-');
  const program = join(dir, 'alert.sh');
  writeFileSync(program, `#!/bin/sh\n${body.replaceAll('$DIR', dir)}\n`);
  chmodSync(program, 0o755);
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const runner = new AlertRunner({ program, setup: 'disk', timeoutMs, logger, environment: () => ({ REMAPD_REMAPS: 1 }) });
  return { dir, runner, lines };
}

const started = (dir: string) => existsSync(join(dir, 'started'));
async function waitFor(f: () => boolean): Promise<void> {
  for (let i = 0; i < 600 && !f(); i++) await new Promise((r) => setTimeout(r, 50));
}

t.test('close waits for the run under way; queued events are dropped and logged', async (t) => {
  const { dir, runner, lines } = rig(t, 'touch $DIR/started; sleep 0.5; echo "$1" >> $DIR/ran');
  runner.raise('Remap', 'offset=0 reason=manual');
  runner.raise('Pending', 'offset=4096');
  await waitFor(() => started(dir));
  await runner.close();
  t.equal(readFileSync(join(dir, 'ran'), 'utf8'), 'Remap\n', 'the run under way finished before close resolved; the queued one never ran');
  t.ok(
    lines.some((l) => l.msg === 'shutting down: queued alerts not run' && JSON.stringify(l.events) === '["Pending"]'),
    'the dropped event is logged',
  );
  runner.raise('Remap');
  await new Promise((r) => setTimeout(r, 700));
  t.equal(readFileSync(join(dir, 'ran'), 'utf8'), 'Remap\n', 'nothing runs after close');
});

t.test('a run that outlives the grace is left alone, and the log says so', async (t) => {
  const { dir, runner, lines } = rig(t, 'touch $DIR/started; sleep 3; echo late >> $DIR/ran');
  runner.raise('Remap');
  await waitFor(() => started(dir));
  const t0 = process.hrtime.bigint();
  await runner.close(200);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  t.ok(ms < 2500, `close gave up after the grace, not after the program (${ms.toFixed(0)} ms)`);
  t.notOk(existsSync(join(dir, 'ran')), 'the program was still running');
  t.ok(
    lines.some((l) => l.msg === 'shutting down: an alert program is still running; left to finish alone'),
    'logged',
  );
  await waitFor(() => existsSync(join(dir, 'ran')));
  t.ok(existsSync(join(dir, 'ran')), 'it finished alone (not killed)');
});

t.test('close with nothing running resolves at once', async (t) => {
  const { runner } = rig(t, 'exit 0');
  await runner.close();
  t.pass('closed');
});

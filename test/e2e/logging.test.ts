/**
 * Daemon logs: JSON lines on stdout when it is not a terminal (every line has level, time, msg);
 * --log-level debug adds one line per request, --log-level warn hides the info start-up line; under a
 * pseudo-terminal the lines are readable text, unless REMAPD_LOG_JSON=1.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, run, tempDir, sparseImage, probeGreeting, sleep, nbdUri, killGroup, REMAPD_BIN, MiB } from '../helpers';
import { cleanEnv, runUnderPty } from '../helpers/loopdev';

interface Tap {
  teardown(fn: () => unknown): void;
}

interface Daemon {
  stdout(): string;
  stderr(): string;
  uri: string;
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** serve with stdout and stderr in separate files (neither is a terminal). */
async function serve(t: Tap, dir: string, name: string, extra: string[]): Promise<Daemon> {
  const image = sparseImage(join(dir, `${name}.img`), 8 * MiB);
  const socket = join(dir, `${name}.sock`);
  const outFile = join(dir, `${name}.out`);
  const errFile = join(dir, `${name}.err`);
  const out = openSync(outFile, 'w');
  const err = openSync(errFile, 'w');
  const proc = spawn(process.execPath, [REMAPD_BIN, 'serve', '--main', image, '--socket', socket, ...extra], {
    stdio: ['ignore', out, err],
    detached: true,
    env: cleanEnv(),
  });
  closeSync(out);
  closeSync(err);
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.on('exit', (code, signal) => ((running = false), r({ code, signal }))),
  );
  const stop = async () => {
    if (running) process.kill(proc.pid!, 'SIGTERM');
    const timer = setTimeout(() => killGroup(proc.pid, 'SIGKILL'), 15_000);
    const info = await exited;
    clearTimeout(timer);
    return info;
  };
  t.teardown(stop);
  const d: Daemon = { stdout: () => readFileSync(outFile, 'utf8'), stderr: () => readFileSync(errFile, 'utf8'), uri: nbdUri(socket), stop };
  for (let i = 0; ; i++) {
    if (!running) throw new Error(`serve exited early:\n${d.stdout()}\n${d.stderr()}`);
    if (await probeGreeting(socket, 1000)) break;
    if (i > 300) throw new Error(`serve did not start:\n${d.stdout()}`);
    await sleep(100);
  }
  return d;
}

function records(text: string): { lines: string[]; parsed: Record<string, unknown>[]; bad: string[] } {
  const lines = text.split('\n').filter((l) => l !== '');
  const parsed: Record<string, unknown>[] = [];
  const bad: string[] = [];
  for (const l of lines) {
    try {
      const o = JSON.parse(l) as Record<string, unknown>;
      if (typeof o === 'object' && o && typeof o.level === 'number' && typeof o.time === 'number' && typeof o.msg === 'string')
        parsed.push(o);
      else bad.push(l);
    } catch {
      bad.push(l);
    }
  }
  return { lines, parsed, bad };
}

t.test('stdout not a terminal: JSON lines; levels', async (t) => {
  const dir = tempDir(t, 'remapd-log-');

  // default level (info)
  const d = await serve(t, dir, 'info', []);
  const i1 = await run('nbdinfo', ['--size', d.uri]);
  t.equal(i1.code, 0, 'nbdinfo', { out: describe(i1) });
  const info = await d.stop();
  t.equal(info.code, 0, 'stopped cleanly');
  let r = records(d.stdout());
  t.ok(r.lines.length >= 3, 'several lines logged', { out: d.stdout() });
  t.same(r.bad, [], 'every stdout line is JSON with level, time and msg');
  const serving = r.parsed.find((o) => o.msg === 'remapd serving');
  t.ok(serving, 'start-up line present');
  t.equal(serving?.level, 30, 'start-up line at info (30)');
  t.ok(Array.isArray(serving?.endpoints), 'start-up line lists endpoints');
  t.ok(
    r.parsed.some((o) => o.msg === 'stopped'),
    'shutdown logged',
  );
  t.notOk(
    r.parsed.some((o) => o.msg === 'request'),
    'no per-request lines at info',
  );
  t.ok(
    r.parsed.every((o) => (o.level as number) >= 30),
    'nothing below info',
  );

  // debug: one line per request
  const dd = await serve(t, dir, 'debug', ['--log-level', 'debug']);
  const q = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 4096 8192', '-c', 'read -P 0x33 4096 8192', dd.uri], {
    timeoutMs: 60_000,
  });
  t.equal(q.code, 0, 'qemu-io write + read', { out: describe(q) });
  await dd.stop();
  r = records(dd.stdout());
  t.same(r.bad, [], 'debug: every line is JSON');
  const reqs = r.parsed.filter((o) => o.msg === 'request');
  t.ok(
    reqs.some((o) => o.cmd === 'WRITE' && o.offset === 4096 && o.length === 8192 && o.level === 20),
    'debug: a "request" line for the WRITE with offset and length',
    { reqs },
  );
  t.ok(
    reqs.some((o) => o.cmd === 'READ' && o.offset === 4096 && o.length === 8192),
    'debug: a "request" line for the READ',
  );
  t.ok(dd.stdout().includes('"msg":"request"'), 'raw text has "msg":"request"');

  // warn: the info start-up line is hidden
  const dw = await serve(t, dir, 'warn', ['--log-level', 'warn']);
  const i3 = await run('nbdinfo', ['--size', dw.uri]);
  t.equal(i3.code, 0, 'warn: the daemon serves', { out: describe(i3) });
  await dw.stop();
  r = records(dw.stdout());
  t.same(r.bad, [], 'warn: every line (if any) is JSON');
  t.notOk(
    r.parsed.some((o) => o.msg === 'remapd serving'),
    'warn: no start-up line',
  );
  t.ok(
    r.parsed.every((o) => (o.level as number) >= 40),
    'warn: nothing below warn',
    { out: dw.stdout() },
  );
});

t.test('under a pseudo-terminal: readable lines', async (t) => {
  const dir = tempDir(t, 'remapd-logp-');
  const image = sparseImage(join(dir, 'p.img'), 8 * MiB);
  const argv = [process.execPath, REMAPD_BIN, 'serve', '--main', image, '--socket', join(dir, 'p.sock')];
  const p = await runUnderPty(argv, 'remapd serving', 1, 60);
  t.ok(p.matched, 'start-up line seen on the terminal', { out: p.output, exit: p.exit });
  const lines = p.output.split(/\r?\n/).filter((l) => l.trim() !== '');
  t.ok(lines.length >= 1, 'some output');
  t.ok(
    lines.every((l) => !l.trimStart().startsWith('{')),
    'no JSON lines on a terminal',
    { out: p.output },
  );
  t.match(p.output, /^\d\d:\d\d:\d\d\.\d{3} INFO remapd serving/m, 'time, level name and message', { out: p.output });
  t.match(p.output, /"endpoints":\[/, 'extra fields still shown');

  // REMAPD_LOG_JSON=1 forces JSON even on a terminal (assemble relies on it for its log files).
  const pj = await runUnderPty([...argv.slice(0, -1), join(dir, 'q.sock')], 'remapd serving', 1, 60, cleanEnv({ REMAPD_LOG_JSON: '1' }));
  t.ok(pj.matched, 'REMAPD_LOG_JSON=1: start-up line seen', { out: pj.output });
  const first = pj.output.split(/\r?\n/).find((l) => l.includes('remapd serving')) ?? '';
  let parsed: Record<string, unknown> | undefined;
  try {
    parsed = JSON.parse(first) as Record<string, unknown>;
  } catch {
    parsed = undefined;
  }
  t.equal(parsed?.msg, 'remapd serving', 'REMAPD_LOG_JSON=1: the line is JSON', { first });
});

/**
 * Helpers for the assemble / metrics / status / logging e2e tests:
 * - loop devices (losetup) that are always detached at teardown, even when the test fails;
 * - a pseudo-terminal runner (python3 pty) that stops its child itself;
 * - HTTP GET over loopback and a small Prometheus text parser;
 * - `remapd create` and a plain CLI runner.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { run, killGroup, type RunResult } from './exec';
import { PYTHON } from './python';
import { REMAPD_BIN, sleep } from './server';

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** Loop devices attached by this process (detached at teardown and, as a last resort, at exit). */
const attached = new Set<string>();
process.on('exit', () => {
  for (const dev of attached) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      require('node:child_process').spawnSync('losetup', ['-d', dev]);
    } catch {
      /* best effort */
    }
  }
});

/** `losetup -f --show FILE`; the device is detached at teardown. */
export async function attachLoop(t: Teardown, file: string): Promise<string> {
  const r = await run('losetup', ['-f', '--show', file], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`losetup -f --show ${file} failed: ${r.stderr}`);
  const dev = r.stdout.trim();
  attached.add(dev);
  t.teardown(() => detachLoop(dev));
  return dev;
}

/** Detach one of our loop devices (no-op if already detached by us). Retries while it is busy. */
export async function detachLoop(dev: string): Promise<void> {
  if (!attached.has(dev)) return;
  for (let i = 0; i < 20; i++) {
    const r = await run('losetup', ['-d', dev], { timeoutMs: 30_000 });
    if (r.code === 0 || /No such device|not a loop|No such file/i.test(r.stderr)) break;
    await sleep(250);
  }
  attached.delete(dev);
}

/** Backing file of a loop device (from sysfs), or undefined. */
export async function loopBacking(dev: string): Promise<string | undefined> {
  const r = await run('losetup', ['-n', '-O', 'BACK-FILE', dev], { timeoutMs: 10_000 });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** Run `node bin/remapd ARGS…`. */
export function remapd(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return run(process.execPath, [REMAPD_BIN, ...args], { timeoutMs: opts.timeoutMs ?? 60_000, env: opts.env });
}

/** `remapd create --main M --spare S`; returns the setup UUID. */
export async function createSetup(main: string, spare: string, extra: string[] = []): Promise<string> {
  const r = await remapd(['create', '--main', main, '--spare', spare, ...extra]);
  const m = /created setup ([0-9a-f-]{36})/.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`remapd create --main ${main} --spare ${spare} failed (exit ${r.code}): ${r.stdout}${r.stderr}`);
  return m[1];
}

/** Environment without variables that change the daemon's log format or control socket. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.REMAPD_LOG_JSON;
  delete env.REMAPD_LOG_LEVEL;
  delete env.REMAPD_CONTROL;
  return { ...env, ...extra };
}

export interface PtyResult {
  /** everything the child wrote to the terminal */
  output: string;
  /** true if the pattern was seen `count` times before the time limit */
  matched: boolean;
  /** child's wait status summary from python */
  exit: string;
  raw: RunResult;
}

/**
 * Run ARGV under a pseudo-terminal (python3 pty.fork) until `pattern` (a Python regex) has matched
 * `count` times in the output, or `limitSeconds` passed; then SIGTERM the child (SIGKILL after 5 s).
 * The python process waits for its child, so nothing is left behind.
 */
export async function runUnderPty(
  argv: string[],
  pattern: string,
  count = 1,
  limitSeconds = 60,
  env?: NodeJS.ProcessEnv,
): Promise<PtyResult> {
  const code = String.raw`
import json, os, pty, re, select, signal, sys, time
argv = json.loads(sys.argv[1]); pat = re.compile(sys.argv[2]); want = int(sys.argv[3]); limit = float(sys.argv[4])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
buf = b''; matched = False; deadline = time.time() + limit; exited = None
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            d = os.read(fd, 65536)
        except OSError:
            d = b''
        if not d:
            break
        buf += d
        if len(pat.findall(buf.decode('utf-8', 'replace'))) >= want:
            matched = True
            break
    w = os.waitpid(pid, os.WNOHANG)
    if w[0] == pid:
        exited = w[1]
        break
if exited is None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    end = time.time() + 5
    while time.time() < end:
        w = os.waitpid(pid, os.WNOHANG)
        if w[0] == pid:
            exited = w[1]; break
        try:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                d = os.read(fd, 65536)
                if d: buf += d
        except OSError:
            pass
    if exited is None:
        os.kill(pid, signal.SIGKILL); exited = os.waitpid(pid, 0)[1]
sys.stdout.write(json.dumps({"output": buf.decode('utf-8', 'replace'), "matched": matched, "exit": str(exited)}))
`;
  const raw = await run(PYTHON, ['-c', code, JSON.stringify(argv), pattern, String(count), String(limitSeconds)], {
    timeoutMs: (limitSeconds + 30) * 1000,
    env: env ?? cleanEnv(),
  });
  try {
    const o = JSON.parse(raw.stdout) as { output: string; matched: boolean; exit: string };
    return { ...o, raw };
  } catch {
    return { output: raw.stdout + raw.stderr, matched: false, exit: 'python failed', raw };
  }
}

/** GET http://HOST:PORT/PATH over loopback. */
export function httpGet(url: string, timeoutMs = 30_000): Promise<{ status: number; body: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
          contentType: String(res.headers['content-type'] ?? ''),
        }),
      );
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** One sample of the Prometheus text format. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parse the Prometheus text exposition format (enough for prom-client output). */
export function parseProm(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l: RegExpExecArray | null;
      while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    }
    const v = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
    out.push({ name: m[1], labels, value: v });
  }
  return out;
}

/** Value of the sample with this name whose labels include `labels` (undefined if absent). */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const s = samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value;
}

/** Sum of all samples with this name (any labels). */
export function sampleSum(samples: Sample[], name: string): number {
  return samples.filter((x) => x.name === name).reduce((a, x) => a + x.value, 0);
}

/**
 * A python3-libnbd client that connects to URI, prints "connected", and keeps the connection open
 * until close() (stdin closed). Use it to observe a live connection from outside.
 */
export interface HeldConnection {
  proc: ChildProcess;
  connected: Promise<boolean>;
  output(): string;
  close(): Promise<void>;
}

export function holdNbdConnection(t: Teardown, uri: string): HeldConnection {
  const code = String.raw`
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pread(512, 0)
print("connected", flush=True)
sys.stdin.read()
h.shutdown()
print("closed", flush=True)
`;
  const proc = spawn(PYTHON, ['-c', code, uri], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  let out = '';
  let exited = false;
  const done = new Promise<void>((r) => proc.on('close', () => ((exited = true), r())));
  const connected = new Promise<boolean>((resolve) => {
    proc.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('connected')) resolve(true);
    });
    proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    proc.on('close', () => resolve(false));
  });
  const close = async (): Promise<void> => {
    if (exited) return;
    proc.stdin!.end();
    const timer = setTimeout(() => killGroup(proc.pid, 'SIGKILL'), 15_000);
    await done;
    clearTimeout(timer);
  };
  t.teardown(close);
  return { proc, connected, output: () => out, close };
}

/** Poll `fn` until it returns true (no timing assertion: only a generous upper bound). */
export async function until(fn: () => Promise<boolean> | boolean, limitMs = 30_000, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    if (await fn()) return true;
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
}

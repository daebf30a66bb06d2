/**
 * Run an external command with a hard timeout, capturing stdout/stderr.
 * The child gets its own process group so a timeout kills it and everything it spawned.
 */
import { spawn, type SpawnOptions } from 'node:child_process';

export interface RunOptions {
  timeoutMs?: number;
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface RunResult {
  cmd: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const started = Date.now();
  const display = [cmd, ...args].map((a) => (/[\s'"]/.test(a) ? JSON.stringify(a) : a)).join(' ');
  return new Promise((resolve) => {
    const spawnOpts: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      detached: true,
    };
    const child = spawn(cmd, args, spawnOpts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid, 'SIGKILL');
    }, timeoutMs);
    const finish = (code: number | null, signal: NodeJS.Signals | null, extra = ''): void => {
      clearTimeout(timer);
      resolve({
        cmd: display,
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + extra,
        timedOut,
        ms: Date.now() - started,
      });
    };
    child.on('error', (e) => finish(127, null, `\nspawn error: ${e.message}`));
    child.on('close', (code, signal) => finish(code, signal));
  });
}

/** Kill a process group we created (detached child). Never used on anything we did not spawn. */
export function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

/** Short human-readable description of a result, for assertion messages. */
export function describe(r: RunResult, maxChars = 3000): string {
  const tail = (s: string): string => (s.length > maxChars ? '…' + s.slice(-maxChars) : s);
  return (
    `$ ${r.cmd}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut} (${r.ms} ms)\n` +
    `--- stdout\n${tail(r.stdout)}\n--- stderr\n${tail(r.stderr)}`
  );
}

export async function haveCommand(name: string): Promise<boolean> {
  const r = await run('sh', ['-c', `command -v ${name}`], { timeoutMs: 5000 });
  return r.code === 0;
}

/** Small process helpers: run a command to completion, read /proc CPU times, wait for a Unix socket. */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';

export interface RunResult {
  readonly code: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a command, capture output. Rejects only if it cannot be started; check `code` yourself. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** First line of a command's output (stdout, else stderr), or "unknown". */
export async function versionOf(cmd: string, args: readonly string[]): Promise<string> {
  try {
    const r = await run(cmd, args, { timeoutMs: 10_000 });
    const text = (r.stdout.trim() || r.stderr.trim()).split('\n')[0];
    return text || 'unknown';
  } catch {
    return 'not installed';
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** true while the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on

interface ProcStat {
  pid: number;
  ppid: number;
  cpuTicks: number;
  childTicks: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields after "(comm)": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
    return { pid, ppid: Number(f[1]), cpuTicks: Number(f[11]) + Number(f[12]), childTicks: Number(f[13]) + Number(f[14]) };
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds used by a process, its live descendants, and the descendants it has already reaped.
 * (nbd-server forks a child per connection; nbdkit/qemu-nbd/node use threads, counted in the process.)
 */
export function treeCpuSeconds(rootPid: number): number {
  const all: ProcStat[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) all.push(s);
  }
  const byParent = new Map<number, ProcStat[]>();
  for (const s of all) {
    const list = byParent.get(s.ppid);
    if (list) list.push(s);
    else byParent.set(s.ppid, [s]);
  }
  const root = all.find((s) => s.pid === rootPid);
  if (!root) return NaN;
  let ticks = root.cpuTicks + root.childTicks;
  const stack = [...(byParent.get(rootPid) ?? [])];
  while (stack.length) {
    const s = stack.pop() as ProcStat;
    ticks += s.cpuTicks;
    stack.push(...(byParent.get(s.pid) ?? []));
  }
  return ticks / CLK_TCK;
}

/** Resolve once a connection to the Unix socket succeeds and the server sends its 8-byte NBDMAGIC. */
export async function waitForNbdSocket(socketPath: string, timeoutMs: number, stillRunning: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr = 'socket never appeared';
  while (Date.now() < deadline) {
    const dead = stillRunning();
    if (dead) throw new Error(dead);
    if (fs.existsSync(socketPath)) {
      try {
        await probe(socketPath);
        return;
      } catch (err) {
        lastErr = (err as Error).message;
      }
    }
    await sleep(100);
  }
  throw new Error(`no NBD greeting on ${socketPath} within ${timeoutMs} ms (${lastErr})`);
}

function probe(socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('greeting timeout'));
    }, 2000);
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 8) {
        clearTimeout(timer);
        sock.destroy();
        if (got.subarray(0, 8).toString('latin1') === 'NBDMAGIC') resolve();
        else reject(new Error(`unexpected greeting ${got.subarray(0, 8).toString('hex')}`));
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      reject(new Error('closed before greeting'));
    });
  });
}

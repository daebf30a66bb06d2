/**
 * Start/stop the NBD server under test: remapd (default) or nbdkit (reference server used to
 * validate the harness itself). Select with REMAPD_TEST_SERVER=remapd|nbdkit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync, existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { killGroup } from './exec';

export type ServerKind = 'remapd' | 'nbdkit';

/** Repository root (this file is compiled to dist/test/helpers/). */
export const REPO_ROOT = resolve(__dirname, '..', '..', '..');
export const REMAPD_BIN = join(REPO_ROOT, 'bin', 'remapd');

export function serverKind(): ServerKind {
  const k = process.env.REMAPD_TEST_SERVER ?? 'remapd';
  if (k !== 'remapd' && k !== 'nbdkit') throw new Error(`REMAPD_TEST_SERVER must be remapd or nbdkit, not ${k}`);
  return k;
}

export interface ServerOptions {
  kind?: ServerKind;
  /** file backing the export (remapd --main) */
  image: string;
  /** directory for the socket and the log file */
  dir: string;
  /** socket path; default DIR/nbd.sock */
  socket?: string;
  exportName?: string;
  readOnly?: boolean;
  /** extra CLI arguments for the server */
  extraArgs?: string[];
  /** how long to wait for the socket to accept connections */
  readyTimeoutMs?: number;
  /** do not wait for readiness (for tests that expect start-up to fail) */
  noWait?: boolean;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Server {
  kind: ServerKind;
  socket: string;
  /** NBD URI of the named export (or the default export) */
  uri: string;
  /** NBD URI of the default (empty-name) export */
  defaultUri: string;
  exportName: string;
  logFile: string;
  proc: ChildProcess;
  pid: number;
  exited: Promise<ExitInfo>;
  isRunning(): boolean;
  log(): string;
  /** SIGTERM (or the given signal), wait up to timeoutMs, then SIGKILL. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitInfo>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export function nbdUri(socket: string, exportName = ''): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
}

export function serverCommand(o: ServerOptions & { socket: string }): { cmd: string; args: string[] } {
  const kind = o.kind ?? serverKind();
  if (kind === 'remapd') {
    const args = [REMAPD_BIN, 'serve', '--main', o.image, '--socket', o.socket];
    if (o.exportName) args.push('--export', o.exportName);
    if (o.readOnly) args.push('--read-only');
    return { cmd: process.execPath, args: [...args, ...(o.extraArgs ?? [])] };
  }
  const args = ['-f', '-U', o.socket];
  if (o.exportName) args.push('-e', o.exportName);
  if (o.readOnly) args.push('-r');
  args.push(...(o.extraArgs ?? []), 'file', o.image);
  return { cmd: 'nbdkit', args };
}

export async function startServer(t: Teardown | null, o: ServerOptions): Promise<Server> {
  const kind = o.kind ?? serverKind();
  const socket = o.socket ?? join(o.dir, 'nbd.sock');
  const logFile = join(o.dir, `${kind}-${Date.now()}.log`);
  const { cmd, args } = serverCommand({ ...o, kind, socket });
  const fd = openSync(logFile, 'a');
  const proc = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached: true, env: process.env });
  closeSync(fd);
  let running = true;
  const exited = new Promise<ExitInfo>((res) => {
    proc.on('exit', (code, signal) => {
      running = false;
      res({ code, signal });
    });
    proc.on('error', () => {
      running = false;
      res({ code: 127, signal: null });
    });
  });
  const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<ExitInfo> => {
    if (running && proc.pid) {
      try {
        process.kill(proc.pid, signal);
      } catch {
        /* gone */
      }
      const timer = setTimeout(() => killGroup(proc.pid, 'SIGKILL'), timeoutMs);
      const info = await exited;
      clearTimeout(timer);
      return info;
    }
    return exited;
  };
  const exportName = o.exportName ?? '';
  const server: Server = {
    kind,
    socket,
    uri: nbdUri(socket, exportName),
    defaultUri: nbdUri(socket, ''),
    exportName,
    logFile,
    proc,
    pid: proc.pid ?? -1,
    exited,
    isRunning: () => running,
    log,
    stop,
  };
  if (t) {
    t.teardown(async () => {
      if (running) {
        await stop('SIGTERM', 10_000);
      }
      killGroup(proc.pid, 'SIGKILL'); // anything the server left in its group
    });
  }
  if (!o.noWait) {
    const timeoutMs = o.readyTimeoutMs ?? 120_000; // generous: a loaded machine can take long to start node
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!running) {
        throw new Error(`${kind} exited before listening on ${socket}\n$ ${cmd} ${args.join(' ')}\n${log()}`);
      }
      if (await probeGreeting(socket, 1000)) break;
      if (Date.now() > deadline) {
        await stop('SIGKILL');
        throw new Error(`${kind} did not accept connections on ${socket} within ${timeoutMs} ms\n${log()}`);
      }
      await sleep(100);
    }
  }
  return server;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** True if the socket accepts a connection and sends the NBD greeting ("NBDMAGIC"). */
export function probeGreeting(socket: string, timeoutMs: number): Promise<boolean> {
  return new Promise((res) => {
    let got = Buffer.alloc(0);
    let done = false;
    const s = connect(socket);
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      res(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    s.on('data', (b: Buffer) => {
      got = Buffer.concat([got, b]);
      if (got.length >= 8) finish(got.subarray(0, 8).toString('latin1') === 'NBDMAGIC');
    });
    s.on('error', () => finish(false));
    s.on('close', () => finish(false));
  });
}

/** Wait until something accepts connections on a Unix socket (no protocol check). */
export async function waitForSocket(socket: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect(socket);
      s.on('connect', () => {
        s.destroy();
        res(true);
      });
      s.on('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing accepted connections on ${socket} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

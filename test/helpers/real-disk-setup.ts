/**
 * remapd on a real failing block device, for the real-disk e2e tests: main = a loop device over the
 * failing FUSE file (test/helpers/failing-disk.ts), spare = a sparse file, metadata made by
 * `remapd create`, remapd started with --spare and --control and NO --faults: every error the daemon
 * sees comes from the kernel. Plus a restart that drops the kernel's caches in between (what a reboot
 * does), and python3-libnbd snippets for single requests.
 */
import { join } from 'node:path';
import { callControl } from '../../daemon/control-client';
import { describe, run, type RunResult } from './exec';
import { failingDisk, dropCaches, type FailingDisk, type FailingDiskOptions } from './failing-disk';
import { createSetup } from './loopdev';
import { runPython } from './python';
import { startServer, type Server } from './server';
import { sparseImage, tempDir } from './tmp';

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface RealDiskSetup {
  t: Teardown;
  dir: string;
  disk: FailingDisk;
  /** the loop device: remapd's main */
  main: string;
  spare: string;
  control: string;
  socket: string;
  serveArgs: string[];
  /** the running daemon (after start(); started at once unless deferServe) */
  server: Server;
  /** start the daemon (only needed with deferServe) */
  start(): Promise<Server>;
  /** stop the daemon (SIGTERM), drop the kernel's caches, start it again on the same setup */
  restart(): Promise<Server>;
}

export interface RealDiskOptions extends FailingDiskOptions {
  spareBytes?: number;
  /** extra `serve` arguments (e.g. --scan-rate 0); --no-scan is added unless `scan` is true */
  args?: string[];
  scan?: boolean;
  /** do not start the daemon yet (plant faults or warm caches first, then start()) */
  deferServe?: boolean;
}

const B = 4096;
export const BLOCK = B;

export async function realDiskSetup(t: Teardown, o: RealDiskOptions = {}): Promise<RealDiskSetup> {
  const dir = tempDir(t, 'remapd-rd-');
  const disk = await failingDisk(t, { fill: 'random', ...o, dir });
  const spare = sparseImage(join(dir, 'spare.img'), o.spareBytes ?? 32 * 1024 * 1024);
  await createSetup(disk.device, spare);
  const control = join(dir, 'ctl.sock');
  const socket = join(dir, 'nbd.sock');
  const serveArgs = ['--spare', spare, '--control', control, ...(o.scan ? [] : ['--no-scan']), ...(o.args ?? [])];
  const start = (): Promise<Server> =>
    startServer(t, { kind: 'remapd', image: disk.device, dir, socket, extraArgs: serveArgs, readyTimeoutMs: 60_000 });
  const s: RealDiskSetup = {
    t,
    dir,
    disk,
    main: disk.device,
    spare,
    control,
    socket,
    serveArgs,
    server: undefined as unknown as Server,
    start: async () => (s.server = await start()),
    restart: async () => {
      const info = await s.server.stop('SIGTERM', 30_000);
      if (info.code !== 0)
        throw new Error(`remapd did not stop cleanly (code ${info.code}, signal ${info.signal}):\n${s.server.log().slice(-3000)}`);
      await dropCaches();
      s.server = await start();
      return s.server;
    },
  };
  if (!o.deferServe) await s.start();
  return s;
}

/** Remaps and pending blocks as the daemon lists them. */
export async function remapList(
  s: RealDiskSetup,
): Promise<{ remaps: { mainBlock: number; reason: string }[]; pending: { count: number; offsets: number[] } }> {
  return (await callControl(s.control, 'list')) as {
    remaps: { mainBlock: number; reason: string }[];
    pending: { count: number; offsets: number[] };
  };
}

/** One python3-libnbd script against the export; prints JSON on its last line. */
export async function nbdPython(
  s: RealDiskSetup,
  body: string,
  args: string[] = [],
  timeoutMs = 180_000,
): Promise<{ r: RunResult; out: Record<string, unknown> }> {
  const code = `import json, nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\n${body}`;
  const r = await runPython(code, [s.server.uri, ...args], timeoutMs);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let out: Record<string, unknown> = {};
  try {
    out = JSON.parse(line) as Record<string, unknown>;
  } catch {
    out = { unparsed: r.stdout, error: describe(r) };
  }
  return { r, out };
}

/** `nbdcopy ARGS…` with a generous timeout. */
export function nbdcopy(args: string[], timeoutMs = 600_000): Promise<RunResult> {
  return run('nbdcopy', args, { timeoutMs });
}

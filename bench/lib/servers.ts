/**
 * Start/stop the NBD servers under test, each on its own Unix socket, all serving the same image file.
 *
 * Fairness policy (same for every server): the host page cache is ON (no O_DIRECT anywhere), the image is
 * pre-read into it, and `sync` runs between fio jobs. Each server keeps its default concurrency:
 *   remapd      bin/remapd serve --main IMG --socket S --no-main-direct   (main on its own 4-thread I/O lane)
 *   nbdkit      nbdkit -f -U S file file=IMG                (file plugin: thread model "parallel", 16 threads)
 *   qemu-nbd    qemu-nbd -k S -f raw --cache=writeback --aio=threads --persistent --shared=8 IMG
 *   nbd-server  daemon with a generated config: [generic] unixsock=S, [bench] exportname=IMG (max_threads 4)
 * With `direct: true` (the direct-io suite) the page cache is bypassed instead:
 *   remapd      … --main-direct (O_DIRECT on main, remapd's default outside benchmarks)
 *   qemu-nbd    … --cache=none --aio=native
 */
import { execFileSync, spawn, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { isAlive, sleep, versionOf, waitForNbdSocket } from './proc';

export type ServerKind = 'remapd' | 'nbdkit' | 'qemu-nbd' | 'nbd-server';

export interface ServerOptions {
  /** Extra CLI arguments (remapd: e.g. ['--spare', PATH]). */
  readonly extraArgs?: readonly string[];
  /** Extra node flags for remapd (added to REMAPD_NODE_OPTIONS). */
  readonly nodeOptions?: readonly string[];
  /** Extra environment for the server process. */
  readonly env?: Readonly<Record<string, string>>;
  /** Label used in file names and logs; defaults to the kind. */
  readonly label?: string;
  readonly readyTimeoutMs?: number;
  /** Serve this image instead of the suite's (e.g. a copy on tmpfs). */
  readonly image?: string;
  /** CPU list for `taskset -c` (every thread of the server runs there). */
  readonly cpus?: string;
  /** Bypass the page cache (remapd --main-direct, qemu-nbd --cache=none --aio=native). */
  readonly direct?: boolean;
}

export interface RunningServer {
  readonly kind: ServerKind;
  readonly label: string;
  /** NBD URI for libnbd/fio. */
  readonly uri: string;
  readonly socketPath: string;
  /** pid of the serving process (for CPU accounting). */
  readonly pid: number;
  readonly logFile: string;
  /** The command line used, for the report. */
  readonly commandLine: string;
  /** Undefined while running, else a description of how it ended. */
  exited(): string | undefined;
  stop(): Promise<void>;
}

export interface ServerEnv {
  readonly repoRoot: string;
  readonly image: string;
  /** Directory for sockets, configs, logs of this run. */
  readonly workDir: string;
  readonly remapdNodeOptions: readonly string[];
}

export async function serverVersion(kind: ServerKind, repoRoot: string): Promise<string> {
  switch (kind) {
    case 'remapd': {
      try {
        const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version?: string };
        const { run } = await import('./proc');
        const head = await run('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']);
        return `remapd ${pkg.version ?? '?'} (git ${head.stdout.trim() || '?'}, node ${process.version})`;
      } catch {
        return 'remapd (unknown)';
      }
    }
    case 'nbdkit':
      return versionOf('nbdkit', ['--version']);
    case 'qemu-nbd':
      return versionOf('qemu-nbd', ['--version']);
    case 'nbd-server':
      return (await versionOf('nbd-server', ['-V'])).replace(/^This is /, '');
  }
}

function removeStale(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch {
    /* absent */
  }
}

/** Wrap a foreground child process. */
function childServer(
  kind: ServerKind,
  label: string,
  socketPath: string,
  uri: string,
  logFile: string,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  cpus?: string,
): { server: RunningServer; child: ChildProcess } {
  if (cpus) {
    // taskset execs the server: same pid, and threads started later inherit the CPU list.
    args = ['-c', cpus, cmd, ...args];
    cmd = 'taskset';
  }
  const log = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { env, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let ended: string | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.on('exit', (code, signal) => {
      ended = `exited with ${signal ?? `code ${code}`}`;
      resolve();
    });
    child.on('error', (err) => {
      ended = `failed to start: ${err.message}`;
      resolve();
    });
  });
  const server: RunningServer = {
    kind,
    label,
    uri,
    socketPath,
    logFile,
    pid: child.pid ?? -1,
    commandLine: [cmd, ...args].join(' '),
    exited: () => ended,
    async stop() {
      if (ended === undefined) {
        child.kill('SIGTERM');
        const t = setTimeout(() => {
          if (ended === undefined) child.kill('SIGKILL');
        }, 15_000);
        await exitPromise;
        clearTimeout(t);
      }
      removeStale(socketPath);
    },
  };
  return { server, child };
}

/**
 * A daemon's own copy of the image (made once, reflinked where the filesystem can). remapd claims its main
 * device (one owner per setup), so two remapd daemons that are up at once cannot share one image file. Only
 * for direct I/O, where no page cache makes a copy cost or gain anything against the other servers.
 */
function privateCopy(image: string, label: string): string {
  const copy = `${image}.${label}`;
  const want = fs.statSync(image).size;
  if (!fs.existsSync(copy) || fs.statSync(copy).size !== want) {
    execFileSync('cp', ['--reflink=auto', '--sparse=always', image, copy]);
  }
  return copy;
}

export async function startServer(kind: ServerKind, senv: ServerEnv, opts: ServerOptions = {}): Promise<RunningServer> {
  const label = opts.label ?? kind;
  const socketPath = path.join(senv.workDir, `${label}.sock`);
  const logFile = path.join(senv.workDir, `${label}.log`);
  removeStale(socketPath);
  const env = { ...process.env, ...(opts.env ?? {}) };
  const extra = [...(opts.extraArgs ?? [])];
  let server: RunningServer;

  switch (kind) {
    case 'remapd': {
      const nodeArgs = [...senv.remapdNodeOptions, ...(opts.nodeOptions ?? [])];
      const bin = path.join(senv.repoRoot, 'bin', 'remapd');
      server = childServer(
        kind,
        label,
        socketPath,
        `nbd+unix:///?socket=${socketPath}`,
        logFile,
        process.execPath,
        [
          ...nodeArgs,
          bin,
          'serve',
          '--main',
          opts.image ?? (opts.direct ? privateCopy(senv.image, label) : senv.image),
          '--socket',
          socketPath,
          opts.direct ? '--main-direct' : '--no-main-direct',
          ...extra,
        ],
        env,
        opts.cpus,
      ).server;
      break;
    }
    case 'nbdkit':
      server = childServer(
        kind,
        label,
        socketPath,
        `nbd+unix:///?socket=${socketPath}`,
        logFile,
        'nbdkit',
        ['-f', '--exit-with-parent', '-U', socketPath, ...extra, 'file', `file=${senv.image}`],
        env,
        opts.cpus,
      ).server;
      break;
    case 'qemu-nbd':
      server = childServer(
        kind,
        label,
        socketPath,
        `nbd+unix:///?socket=${socketPath}`,
        logFile,
        'qemu-nbd',
        [
          '-k',
          socketPath,
          '-f',
          'raw',
          ...(opts.direct ? ['--cache=none', '--aio=native'] : ['--cache=writeback', '--aio=threads']),
          '--persistent',
          '--shared=8',
          ...extra,
          opts.image ?? senv.image,
        ],
        env,
        opts.cpus,
      ).server;
      break;
    case 'nbd-server':
      server = await startNbdServer(label, socketPath, logFile, senv, extra, env);
      break;
  }

  try {
    await waitForNbdSocket(socketPath, opts.readyTimeoutMs ?? 20_000, () => {
      const e = server.exited();
      return e ? `${label} ${e} before serving (log: ${logFile})` : undefined;
    });
  } catch (err) {
    await server.stop().catch(() => undefined);
    const tail = readTail(logFile);
    throw new Error(`${(err as Error).message}${tail ? `\n--- ${label} log tail ---\n${tail}` : ''}`, { cause: err });
  }
  return server;
}

/** nbd-server runs as a real daemon (it forks and the parent exits); it is tracked through its pid file. */
async function startNbdServer(
  label: string,
  socketPath: string,
  logFile: string,
  senv: ServerEnv,
  extra: string[],
  env: NodeJS.ProcessEnv,
): Promise<RunningServer> {
  const conf = path.join(senv.workDir, `${label}.conf`);
  const pidFile = path.join(senv.workDir, `${label}.pid`);
  removeStale(pidFile);
  fs.writeFileSync(
    conf,
    ['# generated by bench/lib/servers.ts', '[generic]', `unixsock = ${socketPath}`, '[bench]', `exportname = ${senv.image}`, ''].join(
      '\n',
    ),
  );
  const args = ['-C', conf, '-p', pidFile, ...extra];
  const launcher = childServer('nbd-server', label, socketPath, '', logFile, 'nbd-server', args, env).server;
  // wait for the launcher to exit (daemonized) and the pid file to appear
  const deadline = Date.now() + 10_000;
  let pid = NaN;
  while (Date.now() < deadline) {
    try {
      pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    } catch {
      /* not yet */
    }
    if (Number.isInteger(pid) && pid > 0) break;
    const e = launcher.exited();
    if (e && e !== 'exited with code 0') throw new Error(`nbd-server ${e} (log: ${logFile})`);
    await sleep(50);
  }
  if (!(pid > 0)) throw new Error(`nbd-server wrote no pid file ${pidFile}`);
  const daemonPid = pid;
  return {
    kind: 'nbd-server',
    label,
    socketPath,
    logFile,
    pid: daemonPid,
    uri: `nbd+unix:///bench?socket=${socketPath}`,
    commandLine: `nbd-server ${args.join(' ')}`,
    exited: () => (isAlive(daemonPid) ? undefined : 'daemon is gone'),
    async stop() {
      if (isAlive(daemonPid)) {
        try {
          process.kill(daemonPid, 'SIGTERM');
        } catch {
          /* gone */
        }
        const until = Date.now() + 15_000;
        while (isAlive(daemonPid) && Date.now() < until) await sleep(50);
        if (isAlive(daemonPid)) {
          try {
            process.kill(daemonPid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
      removeStale(socketPath);
      removeStale(pidFile);
    },
  };
}

export function readTail(file: string, bytes = 2000): string {
  try {
    const buf = fs.readFileSync(file);
    return buf
      .subarray(Math.max(0, buf.length - bytes))
      .toString('utf8')
      .trim();
  } catch {
    return '';
  }
}

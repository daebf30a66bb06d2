/**
 * Planned restart by re-exec (SIGHUP), old-process side: start the successor *before* stopping.
 *
 * Starting a Node process, loading remapd's modules, reading the configuration and the metadata takes
 * from a fraction of a second (a quiet host) to over 10 s (the kernel lab's emulated CPU). If the old
 * process stopped serving first, every request of the kernel would wait that long. So:
 *
 *   1. The successor is spawned while this process keeps serving. It inherits, at fd 3, 4, …, the
 *      listening sockets and the sockets of the connections open now (named in
 *      REMAPD_HANDOVER_FDNAMES; it does not touch them yet) and an IPC channel, and gets
 *      REMAPD_HANDOVER_PREPARED=1.
 *   2. It loads everything it can without owning the setup (modules, configuration, a read-only pass
 *      over the metadata, which also warms the page cache) and says 'ready'.
 *   3. Only then does this process drain its connections, close the devices and release its claims on
 *      main and spare (daemon/handover.ts), and send 'go' with the hand-over state. The successor
 *      claims main and spare after that: there is no moment where two processes own the setup.
 *
 * A successor that does not become ready (a broken upgrade, a bad configuration, a crash, or more than
 * PREPARE_TIMEOUT_MS) is killed and this process keeps serving: a failed restart costs nothing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import type { RunningDaemon } from './serve';
import type { Systemd } from './systemd';
import { notifyBarrier } from './restart-native';
import { FD_NAME_PREFIX, HANDOVER_ENV, PREPARED_ENV, type HandoverState } from './handover-state';

/** How long the successor may take to get ready before the restart is called off. */
export const PREPARE_TIMEOUT_MS = 180_000;

/** IPC messages between the two processes. */
export type SuccessorMessage = { readonly type: 'ready'; readonly pid: number; readonly preparedMs: number };
export type PredecessorMessage = { readonly type: 'go'; readonly state: HandoverState };

export interface PreparedSuccessor {
  readonly pid: number;
  /** Name of each inherited descriptor, by its number in this process. */
  readonly names: ReadonlyMap<number, string>;
  readonly listenerNames: readonly string[];
  /** ms from the signal until the successor was ready (this process served meanwhile). */
  readonly preparedMs: number;
  /** Send the state; resolves once it is written to the channel (then this process may exit). */
  go(state: HandoverState): Promise<void>;
  /** The drain failed after all: stop the successor, keep serving. */
  abandon(): void;
}

/** Kills the successor still getting ready, if any (a stop came meanwhile). */
let abortPreparing: (() => void) | undefined;
export function abortPreparation(): void {
  abortPreparing?.();
}

function waitReady(child: ChildProcess, timeoutMs: number): Promise<SuccessorMessage | string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(`not ready within ${timeoutMs} ms`), timeoutMs);
    const done = (r: SuccessorMessage | string): void => {
      clearTimeout(timer);
      child.removeAllListeners('message');
      resolve(r);
    };
    child.on('message', (m: SuccessorMessage) => {
      if (m?.type === 'ready') done(m);
    });
    child.once('exit', (code, signal) => done(`exited (${signal ?? `code ${code}`}) before it was ready`));
    child.once('error', (err) => done(`could not start: ${err.message}`));
  });
}

/**
 * Spawn the successor with the current listeners and connections and wait until it is ready. Returns
 * undefined (logged) when it failed: the caller keeps serving.
 */
export async function startSuccessor(
  daemon: RunningDaemon,
  systemd: Systemd,
  log: Logger,
  timeoutMs = PREPARE_TIMEOUT_MS,
): Promise<PreparedSuccessor | undefined> {
  const t0 = Date.now();
  const { listenerFds, connections } = daemon.server.handoverCandidates();
  const fds: { name: string; fd: number }[] = [];
  const listenerNames: string[] = [];
  listenerFds.forEach((fd, i) => {
    if (fd < 0) return;
    const name = `${FD_NAME_PREFIX}listen-${i}`;
    fds.push({ name, fd });
    listenerNames.push(name);
  });
  connections.forEach((c, i) => {
    if (c.fd >= 0) fds.push({ name: `${FD_NAME_PREFIX}conn-${i}`, fd: c.fd });
  });
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['inherit', 'inherit', 'inherit', ...fds.map((f) => f.fd), 'ipc'],
    env: {
      ...process.env,
      [HANDOVER_ENV]: fds.map((f) => f.name).join(':'),
      [PREPARED_ENV]: '1',
      ...(systemd.notifySocket ? { NOTIFY_SOCKET: systemd.notifySocket } : {}),
      ...(systemd.watchdogUsec ? { WATCHDOG_USEC: String(systemd.watchdogUsec) } : {}),
    },
  });
  log.info({ successor: child.pid, descriptors: fds.length }, 'planned restart: successor starting; still serving meanwhile');
  abortPreparing = () => child.kill('SIGKILL');
  const ready = await waitReady(child, timeoutMs).finally(() => (abortPreparing = undefined));
  if (typeof ready === 'string') {
    log.error(
      { successor: child.pid, reason: ready },
      'planned restart called off: the successor is not ready; this process keeps serving',
    );
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return undefined;
  }
  const preparedMs = Date.now() - t0;
  log.info({ successor: child.pid, preparedMs, successorLoadMs: ready.preparedMs }, 'planned restart: successor ready');
  return {
    pid: child.pid!,
    names: new Map(fds.map((f) => [f.fd, f.name])),
    listenerNames,
    preparedMs,
    go: async (state) => {
      const msg: PredecessorMessage = { type: 'go', state };
      await new Promise<void>((resolve, reject) => child.send(msg, (err) => (err ? reject(err) : resolve())));
      if (systemd.notifySocket) {
        await systemd.notify(`MAINPID=${child.pid}\n`);
        if (notifyBarrier) notifyBarrier(systemd.notifySocket, 5000);
      }
      log.info({ successor: child.pid }, 'hand-over: successor started');
      child.unref();
      child.channel?.unref();
    },
    abandon: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

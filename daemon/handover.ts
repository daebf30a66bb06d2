/**
 * Planned restart, old-process side: hand the established NBD connections and the listening sockets to
 * the next remapd process, so that clients (the kernel included) see a pause and never a reconnect.
 *
 *   1. Sockets accepted from now on are not greeted (the next process greets them).
 *   2. Each connection stops reading at a request boundary, finishes the requests it already received
 *      and flushes their replies (Connection.detachForHandover). TLS connections cannot be handed over
 *      (their session keys live in this process) and are closed: those clients reconnect.
 *   3. The device is stopped as in a shutdown: scanner stopped, both devices flushed, metadata closed,
 *      so the next process opens them in a clean state.
 *   4. The state of every connection (export, size, flags, structured replies, meta contexts, bytes
 *      received but not parsed) goes into an unlinked temporary file passed as one more descriptor.
 *   5. The descriptors go to the next process:
 *      - 'exec' (SIGHUP, with or without systemd): this process starts its successor with the same
 *        command line, the descriptors inherited at 3, 4, … and their names in REMAPD_HANDOVER_FDNAMES;
 *        under systemd it first declares the successor the main PID (MAINPID=).
 *      - 'fdstore' (SIGTERM under systemd with FileDescriptorStoreMax=, i.e. `systemctl restart`):
 *        each descriptor goes to systemd's file descriptor store with FDSTORE=1 and FDNAME=; systemd
 *        passes them to the next start in LISTEN_FDS/LISTEN_FDNAMES. A `systemctl stop` drops them
 *        (the store is kept only while a start job is queued), which closes the connections.
 * The next process adopts them in daemon/handover-adopt.ts.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Connection } from '../protocol/connection';
import { fdOf, sessionRecord, stopSocketReads, type DetachedConnection, type HandedOverSession } from '../protocol/handover';
import type { RunningDaemon } from './serve';
import type { Systemd } from './systemd';
import { notifyBarrier, sendFds } from './restart-native';

/** Names of handed-over descriptors all start with this (LISTEN_FDNAMES / REMAPD_HANDOVER_FDNAMES). */
export const FD_NAME_PREFIX = 'remapd-';
export const STATE_FD_NAME = 'remapd-state';
/** Environment variable naming the descriptors a re-executed successor inherits at 3, 4, … */
export const HANDOVER_ENV = 'REMAPD_HANDOVER_FDNAMES';
/** A connection whose requests have not finished by then is closed instead of handed over. */
const DRAIN_TIMEOUT_MS = 30_000;

export type HandoverHow = 'exec' | 'fdstore';

export interface HandoverState {
  readonly version: 1;
  /** Monotonic ms timestamp and pid of the old process, for the stall figure in the log. */
  readonly startedAtEpochMs: number;
  readonly from: number;
  readonly listeners: readonly { readonly name: string }[];
  /** Unix socket paths to remove when the daemon finally stops. */
  readonly socketPaths: readonly string[];
  readonly connections: readonly (
    { readonly name: string; readonly fresh: true } | { readonly name: string; readonly session: HandedOverSession }
  )[];
}

/** Whether this process can hand over with `how` (fdstore needs the addon and a notify socket). */
export function handoverSupported(how: HandoverHow, systemd: Systemd): boolean {
  if (how === 'exec') return true;
  return systemd.notifySocket !== undefined && sendFds !== undefined;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]).finally(() => clearTimeout(timer));
}

async function closeGracefully(c: Connection): Promise<void> {
  c.beginShutdown(1000);
  await withTimeout(c.closed, 3000);
  c.destroy();
}

/** Writes the state into an unlinked temporary file and returns its descriptor. */
function stateFile(state: HandoverState): number {
  const path = join(tmpdir(), `remapd-handover-${process.pid}-${Date.now()}.json`);
  const fd = openSync(path, 'wx+', 0o600);
  unlinkSync(path);
  writeSync(fd, JSON.stringify(state));
  return fd;
}

/**
 * Runs the hand-over and ends this process. Never resolves: on success the process exits 0 once the
 * successor (or systemd) holds every descriptor.
 */
export async function handOver(
  daemon: RunningDaemon,
  systemd: Systemd,
  log: Logger,
  how: HandoverHow,
  activationFds: ReadonlySet<number> = new Set(),
): Promise<never> {
  const startedAtEpochMs = Date.now();
  log.info({ how }, 'planned restart: handing connections over');
  void systemd.status('handing connections over to the next process');
  const fresh: Socket[] = [];
  const { listenerFds, ownedPaths, connections } = daemon.server.beginHandover((s) => {
    stopSocketReads(s);
    fresh.push(s);
  });
  const detached: DetachedConnection[] = [];
  const closing: Promise<void>[] = [];
  await Promise.all(
    connections.map(async (c) => {
      const d = await withTimeout(c.detachForHandover(), DRAIN_TIMEOUT_MS);
      if (d) detached.push(d);
      else closing.push(closeGracefully(c));
    }),
  );
  if (closing.length)
    log.warn(
      { closed: closing.length },
      'hand-over: closing connections that cannot be handed over (TLS, mid-handshake, or requests still running); their clients reconnect',
    );
  await Promise.all(closing);
  await daemon.stop('planned restart');

  const fds: { name: string; fd: number }[] = [];
  // systemd keeps the listeners it passed us (socket unit or store) by itself: store only our own.
  const stateListeners = listenerFds
    .filter((fd) => fd >= 0 && !(how === 'fdstore' && activationFds.has(fd)))
    .map((fd, i) => {
      const name = `${FD_NAME_PREFIX}listen-${i}`;
      fds.push({ name, fd });
      return { name };
    });
  const stateConnections: HandoverState['connections'][number][] = [];
  detached.forEach((d, i) => {
    const name = `${FD_NAME_PREFIX}conn-${i}`;
    fds.push({ name, fd: fdOf(d.socket) });
    stateConnections.push({ name, session: sessionRecord(d) });
  });
  fresh.forEach((s, i) => {
    const name = `${FD_NAME_PREFIX}new-${i}`;
    fds.push({ name, fd: fdOf(s) });
    stateConnections.push({ name, fresh: true });
  });
  const state: HandoverState = {
    version: 1,
    startedAtEpochMs,
    from: process.pid,
    listeners: stateListeners,
    socketPaths: ownedPaths,
    connections: stateConnections,
  };
  fds.unshift({ name: STATE_FD_NAME, fd: stateFile(state) });
  const usable = fds.filter((f) => f.fd >= 0);
  log.info(
    { how, connections: detached.length, fresh: fresh.length, listeners: stateListeners.length, drainMs: Date.now() - startedAtEpochMs },
    'hand-over: connections drained, devices closed',
  );

  if (how === 'fdstore') {
    for (const f of usable) sendFds!(systemd.notifySocket!, `FDSTORE=1\nFDNAME=${f.name}\n`, [f.fd]);
    const processed = notifyBarrier ? notifyBarrier(systemd.notifySocket!, 5000) : false;
    log.info({ stored: usable.length, processed }, 'hand-over: descriptors are in the systemd file descriptor store');
  } else {
    const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      stdio: ['inherit', 'inherit', 'inherit', ...usable.map((f) => f.fd)],
      env: {
        ...process.env,
        [HANDOVER_ENV]: usable.map((f) => f.name).join(':'),
        ...(systemd.notifySocket ? { NOTIFY_SOCKET: systemd.notifySocket } : {}),
        ...(systemd.watchdogUsec ? { WATCHDOG_USEC: String(systemd.watchdogUsec) } : {}),
      },
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    if (systemd.notifySocket) {
      await systemd.notify(`MAINPID=${child.pid}\n`);
      if (notifyBarrier) notifyBarrier(systemd.notifySocket, 5000);
      else await new Promise((r) => setTimeout(r, 200));
    }
    log.info({ successor: child.pid }, 'hand-over: successor started');
    child.unref();
  }
  await systemd.flush();
  for (const f of usable) if (f.name === STATE_FD_NAME) closeSync(f.fd);
  // Exit without closing the sockets ourselves: a path-bound Unix listener would unlink its path.
  process.exit(0);
}

/**
 * Planned restart, old-process side: hand the established NBD connections and the listening sockets to
 * the next remapd process, so that clients (the kernel included) see a pause and never a reconnect.
 *
 *   0. 'exec' only: the successor is started first and loads everything it can while this process
 *      still serves (daemon/handover-successor.ts); if it does not get ready, the restart is called off.
 *   1. Sockets accepted from now on are not greeted (the next process greets them; under 'exec' they
 *      are closed, the successor has no copy of them).
 *   2. Each connection stops reading at a request boundary, finishes the requests it already received
 *      and flushes their replies (Connection.detachForHandover). TLS connections cannot be handed over
 *      (their session keys live in this process) and are closed: those clients reconnect.
 *   3. The device is stopped as in a shutdown: scanner stopped, both devices flushed, metadata closed,
 *      claims on main and spare released, so the next process claims and opens them in a clean state.
 *   4. The state of every connection (export, size, flags, structured replies, meta contexts, bytes
 *      received but not parsed) goes to the next process:
 *      - 'exec' (SIGHUP, with or without systemd): over the IPC channel to the prepared successor, which
 *        inherited the sockets when it was spawned; under systemd this process then declares the
 *        successor the main PID (MAINPID=).
 *      - 'fdstore' (SIGTERM under systemd with FileDescriptorStoreMax=, when a restart job is queued:
 *        daemon/stop-intent.ts): in an unlinked temporary file; it and each socket go to systemd's file
 *        descriptor store with FDSTORE=1 and FDNAME=; systemd passes them to the next start in
 *        LISTEN_FDS/LISTEN_FDNAMES.
 * The next process adopts them in daemon/handover-adopt.ts.
 */
import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Connection } from '../protocol/connection';
import { fdOf, sessionRecord, stopSocketReads, type DetachedConnection } from '../protocol/handover';
import type { RunningDaemon } from './serve';
import type { Systemd } from './systemd';
import { notifyBarrier, sendFds } from './restart-native';
import { FD_NAME_PREFIX, STATE_FD_NAME, type HandoverState } from './handover-state';
import { startSuccessor, type PreparedSuccessor } from './handover-successor';

export { FD_NAME_PREFIX, HANDOVER_ENV, STATE_FD_NAME, type HandoverState } from './handover-state';
/** A connection whose requests have not finished by then is closed instead of handed over. */
const DRAIN_TIMEOUT_MS = 30_000;

export type HandoverHow = 'exec' | 'fdstore';

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

/** Names the drained connections and fresh sockets travel under, per transport. */
function nameConnections(
  detached: readonly DetachedConnection[],
  fresh: readonly Socket[],
  successor: PreparedSuccessor | undefined,
): { fds: { name: string; fd: number }[]; records: HandoverState['connections'][number][]; dropped: Socket[] } {
  const fds: { name: string; fd: number }[] = [];
  const records: HandoverState['connections'][number][] = [];
  const dropped: Socket[] = [];
  detached.forEach((d, i) => {
    const fd = fdOf(d.socket);
    // re-exec: only what the successor inherited when it was spawned; a later connection is closed
    const name = successor ? successor.names.get(fd) : `${FD_NAME_PREFIX}conn-${i}`;
    if (name === undefined || fd < 0) return dropped.push(d.socket);
    fds.push({ name, fd });
    records.push({ name, session: sessionRecord(d) });
  });
  fresh.forEach((s, i) => {
    if (successor) return dropped.push(s); // accepted after the successor was spawned: it cannot get them
    const name = `${FD_NAME_PREFIX}new-${i}`;
    fds.push({ name, fd: fdOf(s) });
    records.push({ name, fresh: true });
  });
  return { fds, records, dropped };
}

/**
 * Runs the hand-over and ends this process. Resolves only when a re-exec hand-over is called off
 * because the successor did not get ready (this process then keeps serving); otherwise the process
 * exits 0 once the successor (or systemd) holds every descriptor.
 */
export async function handOver(
  daemon: RunningDaemon,
  systemd: Systemd,
  log: Logger,
  how: HandoverHow,
  activationFds: ReadonlySet<number> = new Set(),
  /** True when a stop was asked for while the successor was getting ready: call the restart off. */
  stopRequested: () => boolean = () => false,
): Promise<void> {
  const signalledAtEpochMs = Date.now();
  log.info({ how }, 'planned restart: handing connections over');
  void systemd.status(how === 'exec' ? 'starting the next process' : 'handing connections over to the next process');
  // re-exec: the successor starts and loads while this process still serves (daemon/handover-successor.ts)
  const successor = how === 'exec' ? await startSuccessor(daemon, systemd, log) : undefined;
  if (how === 'exec' && (!successor || stopRequested())) {
    if (successor) {
      log.warn({ successor: successor.pid }, 'planned restart called off: a stop was asked for meanwhile');
      successor.abandon();
    }
    void systemd.status('serving (the planned restart was called off)');
    return;
  }
  const startedAtEpochMs = Date.now();
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
  const named = nameConnections(detached, fresh, successor);
  if (closing.length || named.dropped.length)
    log.warn(
      { closed: closing.length + named.dropped.length },
      'hand-over: closing connections that cannot be handed over (TLS, mid-handshake, requests still running, or connected during the restart); their clients reconnect',
    );
  for (const s of named.dropped) s.destroy();
  await Promise.all(closing);
  // Scanner stopped, devices flushed, metadata closed, claims on main and spare released: from here on
  // the successor may claim them.
  await daemon.stop('planned restart');

  const fds: { name: string; fd: number }[] = [];
  let listeners: { name: string }[];
  if (successor) {
    listeners = successor.listenerNames.map((name) => ({ name })); // inherited at spawn
  } else {
    // systemd keeps the listeners it passed us (socket unit or store) by itself: store only our own.
    listeners = listenerFds
      .filter((fd) => fd >= 0 && !activationFds.has(fd))
      .map((fd, i) => {
        const name = `${FD_NAME_PREFIX}listen-${i}`;
        fds.push({ name, fd });
        return { name };
      });
  }
  fds.push(...named.fds);
  const state: HandoverState = {
    version: 1,
    startedAtEpochMs,
    signalledAtEpochMs,
    from: process.pid,
    listeners,
    socketPaths: ownedPaths,
    connections: named.records,
  };
  log.info(
    {
      how,
      connections: named.records.filter((r) => 'session' in r).length,
      fresh: named.records.filter((r) => 'fresh' in r).length,
      listeners: listeners.length,
      drainMs: Date.now() - startedAtEpochMs,
      ...(successor ? { successorPreparedMs: successor.preparedMs } : {}),
    },
    'hand-over: connections drained, devices closed',
  );

  if (successor) {
    try {
      await successor.go(state);
    } catch (err) {
      // The devices are closed already: nothing to go back to. The clients reconnect to whoever serves next.
      log.fatal({ err }, 'hand-over: the successor could not be told to take over');
      successor.abandon();
      process.exit(1);
    }
  } else {
    const usable = [{ name: STATE_FD_NAME, fd: stateFile(state) }, ...fds.filter((f) => f.fd >= 0)];
    for (const f of usable) sendFds!(systemd.notifySocket!, `FDSTORE=1\nFDNAME=${f.name}\n`, [f.fd]);
    const processed = notifyBarrier ? notifyBarrier(systemd.notifySocket!, 5000) : false;
    closeSync(usable[0].fd);
    log.info({ stored: usable.length, processed }, 'hand-over: descriptors are in the systemd file descriptor store');
  }
  await systemd.flush();
  // Exit without closing the sockets ourselves: a path-bound Unix listener would unlink its path.
  process.exit(0);
}

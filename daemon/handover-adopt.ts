/**
 * Planned restart, new-process side: pick up what daemon/handover.ts left — descriptors inherited from
 * the old process (REMAPD_HANDOVER_FDNAMES, fds 3, 4, …) or passed back by systemd's file descriptor
 * store (LISTEN_FDNAMES entries named remapd-*) — then serve the listeners and continue each connection
 * in the transmission phase with the session it had negotiated.
 *
 * A connection whose export changed (name, size or transmission flags, e.g. an upgrade that changed the
 * configuration) cannot continue: it is closed so that its client reconnects and renegotiates.
 * Descriptors that came from the systemd store are removed from it (FDSTOREREMOVE=1) once adopted, so
 * that closing a connection here really closes it.
 */
import { closeSync, fstatSync, readSync } from 'node:fs';
import { Socket } from 'node:net';
import type { Logger } from 'pino';
import { restoreSession } from '../protocol/handover';
import { FD_NAME_PREFIX, HANDOVER_ENV, PREPARED_ENV, STATE_FD_NAME, checkHandoverState, type HandoverState } from './handover-state';
import type { PredecessorMessage, SuccessorMessage } from './handover-successor';
import type { RunningDaemon } from './serve';
import { LISTEN_FDS_START, type ListenFd, type Systemd } from './systemd';

export interface InheritedHandover {
  /** Listening sockets to serve: handed-over ones plus socket-unit ones (not named remapd-*). */
  readonly listenFds: number[];
  /** undefined: unreadable, or (prepared) not received yet: awaitGo() fills it in. */
  state: HandoverState | undefined;
  /** Started by the old process before it stopped serving: the state comes over IPC (awaitGo). */
  readonly prepared: boolean;
  /** Handed-over descriptors by name. */
  readonly fds: ReadonlyMap<string, number>;
  readonly fromStore: boolean;
}

function readState(fd: number, log: Logger): HandoverState | undefined {
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.alloc(size);
    let at = 0;
    while (at < size) {
      const n = readSync(fd, buf, at, size - at, at);
      if (n <= 0) break;
      at += n;
    }
    return checkHandoverState(JSON.parse(buf.subarray(0, at).toString('utf8')));
  } catch (err) {
    log.error({ err: (err as Error).message }, 'hand-over: unreadable state; handed-over connections will be closed');
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * The hand-over this process inherited, or undefined for an ordinary start. Consumes
 * REMAPD_HANDOVER_FDNAMES. `systemdFds` are the LISTEN_FDS systemd passed.
 */
export function takeHandover(
  systemdFds: readonly ListenFd[],
  log: Logger,
  env: Record<string, string | undefined> = process.env,
): InheritedHandover | undefined {
  const names = env[HANDOVER_ENV];
  const prepared = names !== undefined && env[PREPARED_ENV] === '1';
  delete env[HANDOVER_ENV];
  delete env[PREPARED_ENV];
  let passed: ListenFd[];
  let fromStore = false;
  if (names) {
    passed = names.split(':').map((name, i) => ({ fd: LISTEN_FDS_START + i, name }));
  } else {
    passed = [...systemdFds];
    fromStore = true;
    if (!passed.some((f) => f.name.startsWith(FD_NAME_PREFIX))) return undefined;
  }
  const fds = new Map<string, number>();
  const listenFds: number[] = [];
  for (const f of passed) {
    if (f.name.startsWith(FD_NAME_PREFIX)) fds.set(f.name, f.fd);
    else listenFds.push(f.fd); // a socket unit's listener
  }
  const stateFd = fds.get(STATE_FD_NAME);
  fds.delete(STATE_FD_NAME);
  const state = stateFd === undefined ? undefined : readState(stateFd, log);
  for (const [name, fd] of fds) if (name.startsWith(`${FD_NAME_PREFIX}listen-`)) listenFds.push(fd);
  return { listenFds, state, fds, fromStore, prepared };
}

/**
 * Prepared successor (daemon/handover-successor.ts): tell the old process we are ready, then wait for
 * its 'go' with the state (stored in inh.state). Until then the old process serves and owns the setup:
 * nothing here may claim or write main or spare. Resolves false when the old process went away without
 * 'go' (it called the restart off, or died): this process must then leave without touching anything.
 */
export function awaitGo(inh: InheritedHandover, loadMs: number, log: Logger): Promise<boolean> {
  return new Promise((resolve) => {
    if (!process.send) {
      log.error('hand-over: prepared start without an IPC channel to the old process');
      return resolve(false);
    }
    const finish = (go: boolean, st: HandoverState | undefined): void => {
      process.removeAllListeners('message');
      process.removeAllListeners('disconnect');
      if (process.connected) process.disconnect();
      inh.state = st;
      resolve(go);
    };
    process.on('message', (m: PredecessorMessage) => {
      if (m?.type !== 'go') return;
      try {
        finish(true, checkHandoverState(m.state));
      } catch (err) {
        log.error({ err: (err as Error).message }, 'hand-over: unreadable state; handed-over connections will be closed');
        finish(true, undefined);
      }
    });
    process.once('disconnect', () => finish(false, undefined));
    const ready: SuccessorMessage = { type: 'ready', pid: process.pid, preparedMs: loadMs };
    process.send(ready);
    log.info({ loadMs }, 'hand-over: ready; waiting for the old process to drain and release the setup');
  });
}

/** Serve the handed-over connections (the listeners were given to startDaemon as listenFds). */
export async function adoptHandover(daemon: RunningDaemon, inh: InheritedHandover, systemd: Systemd, log: Logger): Promise<void> {
  for (const path of inh.state?.socketPaths ?? []) daemon.server.removeOnShutdown(path);
  const known = new Set<string>();
  let adopted = 0;
  let fresh = 0;
  let closed = 0;
  for (const c of inh.state?.connections ?? []) {
    const fd = inh.fds.get(c.name);
    if (fd === undefined) continue;
    known.add(c.name);
    let socket: Socket;
    try {
      socket = new Socket({ fd, readable: true, writable: true });
    } catch (err) {
      log.error({ name: c.name, err: (err as Error).message }, 'hand-over: cannot open a handed-over socket');
      closed++;
      continue;
    }
    if ('fresh' in c) {
      daemon.server.adopt(socket);
      fresh++;
      continue;
    }
    const restored = restoreSession(c.session, daemon.server.catalog);
    if (typeof restored === 'string') {
      log.warn({ name: c.name, reason: restored }, 'hand-over: connection cannot continue here; closing it so that its client reconnects');
      socket.destroy();
      closed++;
      continue;
    }
    daemon.server.adoptEstablished(socket, restored.session, restored.pending);
    adopted++;
  }
  // Connection descriptors without state (unreadable state file): close, the clients reconnect.
  for (const [name, fd] of inh.fds) {
    if (known.has(name) || name.startsWith(`${FD_NAME_PREFIX}listen-`)) continue;
    closeSync(fd);
    closed++;
  }
  if (inh.fromStore) {
    for (const name of [STATE_FD_NAME, ...inh.fds.keys()]) {
      if (!name.startsWith(`${FD_NAME_PREFIX}listen-`)) await systemd.notify(`FDSTOREREMOVE=1\nFDNAME=${name}\n`);
    }
  }
  const stallMs = inh.state ? Date.now() - inh.state.startedAtEpochMs : undefined;
  log.info(
    { adopted, fresh, closed, listeners: inh.listenFds.length, from: inh.state?.from, sinceHandoverStartMs: stallMs },
    'hand-over: connections adopted',
  );
}

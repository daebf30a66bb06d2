/**
 * `remapd attach`: keep a kernel nbd device connected to a remapd export across daemon crashes.
 *
 *   1. Negotiate N connections with the daemon (protocol/client-handshake.ts) and check they agree.
 *   2. NBD_CMD_CONNECT with the sockets, size, block size, flags, request timeout, dead-connection
 *      timeout (the kernel queues I/O that long while no connection is alive) and, where the kernel
 *      knows it (Linux >= 5.14), the backend identifier = the setup UUID, so the kernel itself refuses a
 *      reconfigure from another setup. Older kernels: the same comparison is made here.
 *   3. Stay running, watching the nbd multicast group. On NBD_CMD_LINK_DEAD for our device: reconnect
 *      with back-off, redo the handshake, refuse anything that is not the same export (attach-policy),
 *      and hand the new sockets in with NBD_CMD_RECONFIGURE. The kernel then re-sends the requests
 *      that had no reply, which remapd applies idempotently.
 *   4. SIGTERM/SIGINT: disconnect the device and exit (the unit is being stopped). A crash of this
 *      process leaves the device attached; the next `remapd attach --device` finds the state file,
 *      re-adopts the device and hands in fresh sockets (the kernel ignores them while its own live).
 * The state file (/run/remapd/nbdN.attach.json) lets `remapd detach` and a restarted attach find it.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { negotiate, type NegotiatedExport } from '../protocol/client-handshake';
import { backendIdentifier, refuseMultiConnection, refuseReattach, type ExportIdentity } from './attach-policy';
import { fdOf } from '../protocol/handover';
import { NbdNetlink } from './nbd-netlink';

export interface AttachOptions {
  readonly socket: string;
  readonly exportName: string;
  /** /dev/nbdN index, or undefined to let the kernel choose. */
  readonly index: number | undefined;
  readonly connections: number;
  readonly deadTimeoutSec: number;
  readonly timeoutSec: number;
  readonly blockSize: number;
  readonly stateDir: string;
}

export interface AttachState {
  readonly index: number;
  readonly socket: string;
  readonly exportName: string;
  readonly identity: ExportIdentity;
  readonly pid: number;
}

export function statePath(stateDir: string, index: number): string {
  return join(stateDir, `nbd${index}.attach.json`);
}

export function readAttachState(stateDir: string, index: number): AttachState | undefined {
  const p = statePath(stateDir, index);
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as AttachState;
  } catch {
    return undefined;
  }
}

function writeState(stateDir: string, s: AttachState): void {
  const p = statePath(stateDir, s.index);
  mkdirSync(dirname(p), { recursive: true, mode: 0o755 });
  writeFileSync(`${p}.tmp`, JSON.stringify(s) + '\n', { mode: 0o644 });
  renameSync(`${p}.tmp`, p);
}

export function removeAttachState(stateDir: string, index: number): void {
  try {
    unlinkSync(statePath(stateDir, index));
  } catch {
    /* gone */
  }
}

const identityOf = (n: NegotiatedExport, exportName: string): ExportIdentity => ({
  backend: backendIdentifier(n.description, exportName),
  size: n.size,
  transmissionFlags: n.transmissionFlags,
});

/** N negotiated connections to the export, all for the same export; closed again on refusal. */
export async function negotiateAll(
  o: Pick<AttachOptions, 'socket' | 'exportName' | 'connections'>,
): Promise<{ conns: NegotiatedExport[]; identity: ExportIdentity }> {
  const conns: NegotiatedExport[] = [];
  try {
    for (let i = 0; i < o.connections; i++) conns.push(await negotiate(o.socket, o.exportName));
    const identity = identityOf(conns[0], o.exportName);
    for (const c of conns.slice(1)) {
      const why = refuseMultiConnection(identity, identityOf(c, o.exportName));
      if (why) throw new Error(why);
    }
    return { conns, identity };
  } catch (err) {
    for (const c of conns) c.socket.destroy();
    throw err;
  }
}

/** Our copies of the sockets go away once the kernel holds them (close only: no shutdown). */
function release(conns: NegotiatedExport[]): void {
  for (const c of conns) c.socket.destroy();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class AttachSession {
  private index = -1;
  private identity: ExportIdentity | undefined;
  private stopping = false;
  private reconnecting = false;
  /** Reconnects done, and the refusals met, for logs and tests. */
  readonly stats = { reconnects: 0, refusals: 0, linkDead: 0 };

  constructor(
    private readonly o: AttachOptions,
    private readonly log: Logger,
    private readonly nl: NbdNetlink = new NbdNetlink(),
  ) {}

  get device(): string {
    return `/dev/nbd${this.index}`;
  }

  /** Attach (or re-adopt a device this tool attached before it was restarted). Returns the index. */
  async start(): Promise<number> {
    const { conns, identity } = await negotiateAll(this.o);
    const previous = this.o.index === undefined ? undefined : readAttachState(this.o.stateDir, this.o.index);
    const backend = this.nl.knowsBackendIdentifier ? identity.backend : undefined;
    try {
      if (previous) {
        const why = refuseReattach(previous.identity, identity);
        if (why) throw new Error(`refusing to re-adopt /dev/nbd${previous.index}: ${why}`);
        this.index = previous.index;
        this.nl.reconfigure(
          this.index,
          conns.map((c) => fdOf(c.socket)),
          backend,
        );
        this.log.info(
          { device: this.device, backend: identity.backend },
          'attach: re-adopted the device attached by an earlier remapd attach',
        );
      } else {
        this.index = this.nl.connect({
          index: this.o.index,
          sizeBytes: identity.size,
          blockSizeBytes: this.o.blockSize,
          serverFlags: identity.transmissionFlags,
          timeoutSec: this.o.timeoutSec,
          deadConnTimeoutSec: this.o.deadTimeoutSec,
          fds: conns.map((c) => fdOf(c.socket)),
          backendIdentifier: backend,
        });
      }
    } finally {
      release(conns);
    }
    this.identity = identity;
    writeState(this.o.stateDir, { index: this.index, socket: this.o.socket, exportName: this.o.exportName, identity, pid: process.pid });
    this.log.info(
      {
        device: this.device,
        size: identity.size,
        flags: `0x${identity.transmissionFlags.toString(16)}`,
        backend: identity.backend,
        kernelChecksBackend: this.nl.knowsBackendIdentifier,
        connections: this.o.connections,
        deadTimeoutSec: this.o.deadTimeoutSec,
      },
      'attach: device connected',
    );
    return this.index;
  }

  /** Watch for link-dead until stop(); resolves when stopped. */
  async run(): Promise<void> {
    this.nl.watchLinkDead();
    while (!this.stopping) {
      const dead = this.nl.pollLinkDead(0);
      if (dead.includes(this.index)) {
        this.stats.linkDead++;
        this.log.warn({ device: this.device }, 'attach: the kernel reports the connection dead; reconnecting');
        await this.reconnect();
      } else {
        await sleep(200);
      }
    }
  }

  /** Reconnect with back-off until it works, the export is refused for good, or we stop. */
  async reconnect(): Promise<void> {
    if (this.reconnecting) return;
    this.reconnecting = true;
    let delay = 100;
    try {
      while (!this.stopping) {
        try {
          const { conns, identity } = await negotiateAll(this.o);
          try {
            const why = refuseReattach(this.identity!, identity);
            if (why) {
              this.stats.refusals++;
              this.log.error(
                { device: this.device, reason: why },
                'attach: refusing to reconnect the device to this export; the device keeps waiting for the right one (until its dead-connection timeout)',
              );
              throw new Error(why);
            }
            this.nl.reconfigure(
              this.index,
              conns.map((c) => fdOf(c.socket)),
              identity.backend,
            );
          } finally {
            release(conns);
          }
          this.stats.reconnects++;
          this.log.info({ device: this.device, reconnects: this.stats.reconnects }, 'attach: reconnected');
          return;
        } catch (err) {
          this.log.debug({ err: (err as Error).message, retryMs: delay }, 'attach: reconnect attempt failed');
          await sleep(delay);
          delay = Math.min(delay * 2, 5000);
        }
      }
    } finally {
      this.reconnecting = false;
    }
  }

  /** Stop watching; with `disconnect`, also detach the device. */
  stop(disconnect: boolean): void {
    this.stopping = true;
    if (disconnect && this.index >= 0) {
      this.nl.disconnect(this.index);
      removeAttachState(this.o.stateDir, this.index);
      this.log.info({ device: this.device }, 'attach: device disconnected');
    }
  }
}

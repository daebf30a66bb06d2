/**
 * The serve lifecycle: open the devices, listen, run until SIGTERM/SIGINT, then drain, flush and exit.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { BlockDevice } from '../protocol/block-device';
import { NbdServer, ServerStartError } from '../protocol/server';
import type { Backend } from '../remap/backend';
import { openBackend } from '../remap/file-backend';
import { PassthroughDevice } from '../remap/passthrough-device';
import { isLoopback, parseListenAddress } from './listen-address';
import { SingleExportCatalog } from './single-export';

export interface ServeOptions {
  readonly main: string;
  readonly socket?: string;
  readonly listen?: string;
  readonly exportName: string;
  readonly readOnly: boolean;
  readonly handshakeTimeoutSec: number;
  readonly maxConnections: number;
  readonly socketMode: number;
  /** Listening sockets passed by systemd (socket activation); served in addition to socket/listen. */
  readonly listenFds?: readonly number[];
}

export class UsageError extends Error {}

export interface RunningDaemon {
  readonly server: NbdServer;
  readonly device: BlockDevice;
  /** Resolves when the daemon has stopped. */
  readonly stopped: Promise<void>;
  stop(reason: string): Promise<void>;
}

export async function startDaemon(opts: ServeOptions, log: Logger): Promise<RunningDaemon> {
  const backends: Backend[] = [];
  const main = await openBackend(opts.main, { readOnly: opts.readOnly });
  backends.push(main);
  const device: BlockDevice = new PassthroughDevice(main, { readOnly: opts.readOnly });

  const catalog = new SingleExportCatalog(opts.exportName, device, opts.readOnly);
  const server = new NbdServer({
    catalog,
    logger: log,
    maxConnections: opts.maxConnections,
    limits: { handshakeTimeoutMs: opts.handshakeTimeoutSec * 1000 },
  });

  const endpoints: string[] = [];
  try {
    for (const fd of opts.listenFds ?? []) {
      await server.listenFd(fd);
      endpoints.push(`fd:${fd}`);
    }
    if (opts.socket) {
      mkdirSync(dirname(opts.socket), { recursive: true, mode: 0o755 });
      await server.listenUnix(opts.socket, opts.socketMode);
      endpoints.push(`unix:${opts.socket}`);
    }
    if (opts.listen) {
      const addr = parseListenAddress(opts.listen);
      const bound = await server.listenTcp(addr.host, addr.port);
      endpoints.push(`tcp:${addr.host}:${bound.port}`);
      if (!isLoopback(addr.host)) {
        log.warn({ listen: opts.listen }, 'listening on a non-loopback address without TLS: anyone who can reach it can read and overwrite the disk');
      }
    }
  } catch (err) {
    await server.shutdown(0);
    for (const b of backends) await b.close().catch(() => undefined);
    throw err;
  }

  log.info(
    { main: main.path, size: device.size, export: opts.exportName, readOnly: opts.readOnly, endpoints, pid: process.pid },
    'remapd serving',
  );

  let stopping: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  const stop = (reason: string): Promise<void> => {
    if (stopping) return stopping;
    stopping = (async () => {
      log.info({ reason }, 'shutting down');
      await server.shutdown();
      try {
        await device.flush();
      } catch (err) {
        log.error({ err }, 'final flush failed');
      }
      for (const b of backends) await b.close().catch((err) => log.error({ err }, 'close failed'));
      log.info('stopped');
      resolveStopped();
    })();
    return stopping;
  };
  return { server, device, stopped, stop };
}

export { ServerStartError };

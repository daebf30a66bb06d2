/**
 * The serve lifecycle: open the devices, listen, run until SIGTERM/SIGINT, then drain, flush and exit.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { BlockDevice } from '../protocol/block-device';
import { NbdServer, ServerStartError } from '../protocol/server';
import type { Backend } from '../storage/backend';
import { openBackend } from '../storage/file-backend';
import { PassthroughDevice } from '../remap/passthrough-device';
import { RemapDevice } from '../remap/remap-device';
import { FaultRules } from '../storage/faults';
import { FaultInjectingBackend } from '../storage/fault-backend';
import { MetadataStore } from '../metadata/store';
import { identityFromBackend } from '../metadata/fingerprint';
import { ControlServer } from './control-server';
import { registerDeviceCommands, statusSections } from './control-commands';
import { Metrics } from './metrics';
import { loadTlsSettings, type TlsFlags } from './tls-config';
import { isLoopback, parseListenAddress } from './listen-address';
import { SingleExportCatalog } from './single-export';
import { sharedPool } from '../protocol/buffer-pool';
import { allocAligned } from '../storage/native';
import { isHeldByStuckIo } from '../storage/stuck-buffers';
import { openLanes } from '../storage/io-lane';
import { claimSetup, ownMarker } from './owner-lock';
import { OldStack } from './evacuate/retire-old-stack';

/** Default main I/O deadline: longer than a desktop drive's own retries of one sector (7-30 s). */
export const DEFAULT_MAIN_IO_DEADLINE_MS = 30_000;
/** Threads of main's I/O lane (the spare keeps the lane default, 4). */
export const MAIN_IO_THREADS = 16;
import { registerMapCommand } from './maps/map-source';

export interface ServeOptions {
  readonly main: string;
  readonly socket?: string;
  readonly listen?: string;
  readonly exportName: string;
  readonly readOnly: boolean;
  readonly handshakeTimeoutSec: number;
  readonly maxConnections: number;
  readonly socketMode: number;
  /** Group owning the NBD and control sockets (with a mode like 0660, its members may connect). */
  readonly socketGroup?: number;
  /** Spare device holding the metadata and remapped blocks; without it main is served as is. */
  readonly spare?: string;
  /** JSON fault-injection rules applied to every reader and writer of the main device. */
  readonly faults?: string;
  /** Control socket path (status, remap, unremap, list, faults …). */
  readonly control?: string;
  /** The control path was not chosen by the user: failing to create it is a warning, not an error. */
  readonly controlIsDefault?: boolean;
  /** TLS mode and credentials (NBD_OPT_STARTTLS). */
  readonly tls?: TlsFlags;
  /** Serve Prometheus metrics on HOST:PORT. */
  readonly metrics?: string;
  /** Bytes of requests and replies in flight per connection before reading pauses. */
  readonly maxOutstandingBytes?: number;
  /** Bytes of requests and replies held by all connections together before reading pauses. */
  readonly bufferBudget?: number;
  /** Extra attempts after a failed read of a main block. */
  readonly readRetries?: number;
  /** While main is failed, requests that need it wait this long for it (ms; 0 = fail at once). */
  readonly outageHoldMs?: number;
  /** Wrap the device before it is served (a layer such as daemon/evacuate/mirror-device.ts). */
  readonly wrapDevice?: (device: BlockDevice) => BlockDevice;
  /** Listening sockets passed by systemd (socket activation); served in addition to socket/listen. */
  readonly listenFds?: readonly number[];
  /** Open main with O_DIRECT (default true; falls back to buffered with a warning where impossible). */
  readonly mainDirect?: boolean;
  /** A main I/O slower than this fails with ETIMEDOUT (a media error); 0 = no deadline. */
  readonly mainIoDeadlineMs?: number;
}

export class UsageError extends Error {}

export interface RunningDaemon {
  readonly server: NbdServer;
  readonly device: BlockDevice;
  /** The remapping device, when a spare is configured. */
  readonly remap: RemapDevice | undefined;
  /** Metadata copies repaired when the spare was opened (undefined: none); raised as MetadataRepaired. */
  readonly metadataRepairedAtOpen?: number;
  readonly control: ControlServer | undefined;
  /** Called on stop, before the devices close (scanner, metrics …). */
  readonly beforeStop: (() => Promise<void>)[];
  /** Main, spare, metadata and claims: closed at stop, or retired after `evacuate --switch`. */
  readonly oldStack: OldStack;
  /** The fault rules in force (undefined without --faults). */
  faultRules(): FaultRules | undefined;
  /** Be told when `remapd faults FILE` reloads the rules (the scanner worker needs them). */
  onFaultRules(listener: (rules: FaultRules) => void): void;
  /** Resolves when the daemon has stopped. */
  readonly stopped: Promise<void>;
  stop(reason: string): Promise<void>;
}

export async function startDaemon(opts: ServeOptions, log: Logger): Promise<RunningDaemon> {
  const faultListeners: ((rules: FaultRules) => void)[] = [];
  const backends: Backend[] = [];
  // READ/WRITE payloads on page-aligned slabs reach an O_DIRECT main without a bounce copy; a slab an
  // abandoned (timed-out) I/O may still touch is never handed out again.
  if (allocAligned) sharedPool.configure({ allocate: allocAligned, mayReuse: (slab) => !isHeldByStuckIo(slab) });
  // One owner per setup: claim main and spare before opening them (refuses with the owner's name).
  const claim = await claimSetup({ main: opts.main, spare: opts.spare });
  let rawMain: Backend;
  try {
    rawMain = await openBackend(opts.main, {
      readOnly: opts.readOnly,
      direct: opts.mainDirect ?? true,
      deadlineMs: opts.mainIoDeadlineMs ?? DEFAULT_MAIN_IO_DEADLINE_MS,
      laneName: 'main',
      // A slow region must not take every thread: a dying disk often answers some requests in seconds
      // while the rest of it is fine (kernel lab: slow-disk). The deadline bounds how long each waits.
      ioThreads: MAIN_IO_THREADS,
    });
  } catch (err) {
    claim.release();
    throw err;
  }
  backends.push(rawMain);
  if (rawMain.direct)
    log.info(
      { main: rawMain.path, ioDeadlineMs: opts.mainIoDeadlineMs ?? DEFAULT_MAIN_IO_DEADLINE_MS },
      'main opened with direct I/O (O_DIRECT)',
    );
  else if (opts.mainDirect ?? true)
    log.warn(
      { main: rawMain.path, reason: (rawMain as { directNotice?: string }).directNotice },
      'main is NOT opened with direct I/O: write errors may surface late, at the next flush',
    );
  let faultRules: FaultRules | undefined;
  let main: Backend = rawMain;
  let store: MetadataStore | undefined;
  let remap: RemapDevice | undefined;
  let device: BlockDevice;
  try {
    if (opts.faults) {
      faultRules = FaultRules.parse(readFileSync(opts.faults, 'utf8'), opts.faults);
      main = new FaultInjectingBackend(rawMain, faultRules);
      log.warn({ faults: opts.faults, rules: faultRules.rules.length }, 'fault injection is active on the main device');
    }
    if (opts.spare) {
      // Buffered (fastest; its data is synced before a remap commits), on its own I/O lane.
      const spare = await openBackend(opts.spare, { readOnly: opts.readOnly, laneName: 'spare' });
      backends.push(spare);
      store = await MetadataStore.open(spare, identityFromBackend(rawMain));
      if (!opts.readOnly) await store.claim(ownMarker());
      // The description carries the setup UUID: `remapd attach` checks it on every reconnect (daemon/attach-policy.ts).
      remap = new RemapDevice(main, spare, store, {
        logger: log,
        readOnly: opts.readOnly,
        readRetries: opts.readRetries,
        outageHoldMs: opts.outageHoldMs,
        description: `remapd setup=${store.setupUuid} main=${rawMain.path} spare=${spare.path}`,
      });
      device = remap;
      const dev = remap;
      store.onRepaired = (copies) => dev.emit('metadata-repaired', { copies });
      log.info(
        { spare: spare.path, setup: store.setupUuid, ...remap.status().remaps, pending: remap.status().pending.count },
        'remap table loaded',
      );
    } else {
      device = new PassthroughDevice(main, { readOnly: opts.readOnly });
    }
  } catch (err) {
    await store?.close().catch(() => undefined);
    for (const b of backends) await b.close().catch(() => undefined);
    claim.release();
    throw err;
  }

  const oldStack = new OldStack({ main: rawMain.path, spare: opts.spare, device, remap, store, backends, claim, log });
  const catalog = new SingleExportCatalog(opts.exportName, opts.wrapDevice ? opts.wrapDevice(device) : device, opts.readOnly);
  // eslint-disable-next-line prefer-const
  let server: NbdServer;
  const metrics = new Metrics({
    connections: () => server.connectionCount,
    remaps: remap
      ? () => {
          if (oldStack.retired) return undefined; // evacuated: no spare in use any more
          const s = remap!.status();
          return {
            total: s.remaps.total,
            byReason: s.remaps.byReason,
            pending: s.pending.count,
            spareUsed: s.spare.used,
            spareFree: s.spare.free,
            spareBlocks: s.spare.dataBlocks,
            exhausted: s.spare.exhausted,
            spareFailing: s.spare.failing,
            mainFailed: s.main.state === 'failed',
            mainHeld: s.main.held,
            mainHeldTotal: s.main.heldTotal,
          };
        }
      : undefined,
    health: () => statusSections.get('health')?.() as { score: number } | undefined,
    scan: () => statusSections.get('scan')?.() as { progress: number; passesCompleted: number } | undefined,
    lanes: () => openLanes().map((l) => l.stats()),
    evacuated: () => (statusSections.get('evacuate')?.() as { phase?: string } | undefined)?.phase === 'switched',
  });
  metrics.startRates();
  statusSections.set('io', () => metrics.io());
  statusSections.set('lanes', () => openLanes().map((l) => l.stats()));
  const tls = opts.tls ? loadTlsSettings(opts.tls) : undefined;
  server = new NbdServer({
    tls,
    onRequestDone: metrics.onRequestDone,
    catalog,
    logger: log,
    maxConnections: opts.maxConnections,
    ...(opts.bufferBudget ? { bufferBudget: opts.bufferBudget } : {}),
    limits: {
      handshakeTimeoutMs: opts.handshakeTimeoutSec * 1000,
      ...(opts.maxOutstandingBytes ? { maxOutstandingBytes: opts.maxOutstandingBytes } : {}),
    },
  });

  const endpoints: string[] = [];
  let control: ControlServer | undefined;
  try {
    if (opts.control) {
      control = new ControlServer(log);
      registerDeviceCommands(control, {
        device,
        remap,
        server,
        store,
        retired: () => oldStack.retired,
        main: rawMain.path,
        exportName: opts.exportName,
        setFaults: (text: string, source: string) => {
          if (!(main instanceof FaultInjectingBackend)) {
            throw new Error('fault injection was not enabled at start (serve --faults FILE)');
          }
          const rules = FaultRules.parse(text, source);
          main.setRules(rules);
          faultRules = rules;
          for (const l of faultListeners) l(rules);
          log.warn({ source, rules: rules.rules.length }, 'fault rules reloaded');
          return rules.rules.length;
        },
      });
      registerMapCommand(control, store, device.size);
      try {
        mkdirSync(dirname(opts.control), { recursive: true, mode: 0o755 });
        await control.listen(opts.control, opts.socketMode, opts.socketGroup);
      } catch (err) {
        if (!opts.controlIsDefault) throw err;
        // The default place is a convenience: a daemon that can serve should not fail over it.
        log.warn(
          { control: opts.control, err: (err as Error).message },
          'control socket unavailable; status and remap commands will not work',
        );
        control = undefined;
      }
    }
    for (const fd of opts.listenFds ?? []) {
      await server.listenFd(fd);
      endpoints.push(`fd:${fd}`);
    }
    if (opts.metrics) {
      const addr = parseListenAddress(opts.metrics, 9810);
      const port = await metrics.listen(addr.host, addr.port, log);
      endpoints.push(`metrics:http://${addr.host}:${port}/metrics`);
    }
    if (opts.socket) {
      mkdirSync(dirname(opts.socket), { recursive: true, mode: 0o755 });
      await server.listenUnix(opts.socket, opts.socketMode, opts.socketGroup);
      endpoints.push(`unix:${opts.socket}`);
    }
    if (opts.listen) {
      const addr = parseListenAddress(opts.listen);
      const bound = await server.listenTcp(addr.host, addr.port);
      endpoints.push(`tcp:${addr.host}:${bound.port}`);
      if (!isLoopback(addr.host) && tls?.mode !== 'require') {
        log.warn(
          { listen: opts.listen },
          'LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT --tls require: anyone who can reach it can read and overwrite the disk',
        );
      }
    }
  } catch (err) {
    await server.shutdown(0);
    await control?.close();
    await metrics.close();
    await store?.close().catch(() => undefined);
    for (const b of backends) await b.close().catch(() => undefined);
    claim.release();
    throw err;
  }

  log.info(
    {
      main: main.path,
      size: device.size,
      export: opts.exportName,
      readOnly: opts.readOnly,
      endpoints,
      control: control ? opts.control : null,
      pid: process.pid,
      claims: claim.claims.map((c) => `${c.path}:${c.how}`),
    },
    'remapd serving',
  );

  const beforeStop: (() => Promise<void>)[] = [];
  let stopping: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  const stop = (reason: string): Promise<void> => {
    if (stopping) return stopping;
    stopping = (async () => {
      log.info({ reason }, 'shutting down');
      await server.shutdown();
      for (const f of beforeStop) await f().catch((err) => log.error({ err }, 'stop hook failed'));
      await control?.close();
      await metrics.close();
      // After `evacuate --switch` the old devices are retired already (the evacuation closed the new one).
      if (!oldStack.retired) {
        try {
          await device.flush();
        } catch (err) {
          log.error({ err }, 'final flush failed');
        }
      }
      await oldStack.close();
      log.info('stopped');
      resolveStopped();
    })();
    return stopping;
  };
  return {
    server,
    device,
    remap,
    metadataRepairedAtOpen: store?.repairedAtOpen,
    control,
    beforeStop,
    oldStack,
    stopped,
    stop,
    faultRules: () => faultRules,
    onFaultRules: (l) => faultListeners.push(l),
  };
}

export { ServerStartError };

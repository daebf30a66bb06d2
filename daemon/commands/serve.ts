import type { CommandModule } from 'yargs';
import { createLogger, LOG_LEVELS } from '../logger';
import { startDaemon, ServerStartError } from '../serve';
import { applyConfigFile, ConfigFileError } from '../config-file';
import { Systemd, activationFds, statusFollowsDevice } from '../systemd';
import { defaultControlPath } from '../control-protocol';
import { parseSize } from '../../remap/units';
import { resolveGroup } from '../groups';
import { attachScanner } from '../../health/attach';
import { parseDuration } from '../../health/duration';
import { slowThresholds } from '../../health/config';
import { statusSections } from '../control-commands';
import { ioPathStuck } from '../io-watchdog';
import { openLanes } from '../../storage/io-lane';
import { attachAlerts, subscribeScanner } from '../alerts/attach-alerts';
import { checkAlertProgram } from '../alerts/check-program';
import { MirrorDevice } from '../evacuate/mirror-device';
import { attachEvacuation, previousEvacuation } from '../evacuate/attach-evacuation';
import { statePath } from '../evacuate/evacuation-state';
import { takeHandover, adoptHandover, awaitGo } from '../handover-adopt';
import { preloadForHandover } from '../handover-preload';
import { installHandoverSignals } from '../handover-signals';
import { DEFAULT_MAX_CONNECTIONS } from '../../protocol/server';

interface ServeArgs {
  main?: string;
  socket?: string;
  listen?: string;
  export: string;
  'read-only': boolean;
  'handshake-timeout': number;
  'max-connections': number;
  'socket-mode': string;
  'socket-group'?: string;
  'log-level': string;
  config?: string;
  spare?: string;
  faults?: string;
  control?: string;
  'read-retries': number;
  metrics?: string;
  'max-outstanding-bytes': string;
  'buffer-budget': string;
  tls: string;
  'tls-certificates'?: string;
  'tls-verify-peer': boolean;
  'tls-psk'?: string;
  scan?: boolean;
  'scan-rate'?: string;
  'scan-interval'?: string;
  'scan-slow'?: string;
  'scan-very-slow'?: string;
  'main-direct': boolean;
  'main-io-deadline': string;
  'outage-hold': number;
  'alert-program'?: string;
  'alert-timeout': number;
  'state-dir': string;
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'Serve the main device over NBD',
  builder: (y) =>
    y
      .option('main', { type: 'string', describe: 'Main (failing) device or image file [required, here or in --config]' })
      .option('socket', { type: 'string', describe: 'Unix socket to listen on [default: /run/remapd/<export>.sock unless --listen]' })
      .option('listen', { type: 'string', describe: 'Also/instead listen on TCP HOST[:PORT] (port 10809 if omitted)' })
      .option('export', { type: 'string', default: 'disk', describe: 'Export name (the empty name reaches it too)' })
      .option('read-only', { type: 'boolean', default: false, describe: 'Refuse writes' })
      .option('handshake-timeout', { type: 'number', default: 30, describe: 'Seconds a client may take to finish the handshake' })
      .option('max-connections', { type: 'number', default: DEFAULT_MAX_CONNECTIONS, describe: 'Connections accepted at once' })
      .option('socket-group', {
        type: 'string',
        describe: 'Group (name or GID) owning the NBD and control sockets; use with --socket-mode 0660',
      })
      .option('socket-mode', { type: 'string', default: '0600', describe: 'Mode of the Unix socket (octal)' })
      .option('log-level', {
        type: 'string',
        choices: LOG_LEVELS,
        default: process.env.REMAPD_LOG_LEVEL ?? 'info',
        describe: 'Least severe log level written (env REMAPD_LOG_LEVEL)',
      })
      .option('spare', {
        type: 'string',
        describe: 'Spare device holding the remap metadata (remapd create first); without it main is served as is',
      })
      .option('control', { type: 'string', describe: 'Control socket [default: beside the NBD socket, <name>.ctl]' })
      .option('faults', { type: 'string', describe: 'Fault-injection rules (JSON) applied to the main device, for tests and demos' })
      .option('tls', {
        type: 'string',
        choices: ['off', 'on', 'require'],
        default: 'off',
        describe: 'TLS via NBD_OPT_STARTTLS: off, on (offered), require (nothing without TLS)',
      })
      .option('tls-certificates', { type: 'string', describe: 'Directory with ca-cert.pem, server-cert.pem, server-key.pem' })
      .option('tls-verify-peer', { type: 'boolean', default: false, describe: 'Require client certificates signed by ca-cert.pem' })
      .option('tls-psk', { type: 'string', describe: 'TLS-PSK key file: identity:hexkey lines (psktool format)' })
      .option('metrics', { type: 'string', describe: 'Serve Prometheus metrics at http://HOST:PORT/metrics (port 9810 if omitted)' })
      .option('max-outstanding-bytes', {
        type: 'string',
        default: '64M',
        describe: 'Request and reply bytes in flight per connection before reading pauses',
      })
      .option('buffer-budget', {
        type: 'string',
        default: '256M',
        describe: 'Request and reply bytes held by all connections together before reading pauses',
      })
      .option('read-retries', { type: 'number', default: 3, describe: 'Extra attempts after a failed read of a main block' })
      .option('scan', {
        type: 'boolean',
        describe: 'Background health scan of the main device (--no-scan to disable) [default: on with --spare, unless --read-only]',
      })
      .option('scan-rate', { type: 'string', describe: 'Health scan read rate, bytes/s with K/M/G suffix; 0 = unlimited [default: 64M]' })
      .option('scan-interval', { type: 'string', describe: 'Time between full health scan passes: 30s, 15m, 12h, 7d [default: 7d]' })
      .option('scan-slow', {
        type: 'string',
        describe: 'A health scan read taking at least this long is slow (2 slow passes: migrated): 50ms, 2s [default: 50ms]',
      })
      .option('scan-very-slow', {
        type: 'string',
        describe: 'A health scan read taking at least this long is very slow (twice: migrated at once) [default: 200ms]',
      })
      .option('main-direct', {
        type: 'boolean',
        default: true,
        describe: 'Read and write main with O_DIRECT, bypassing the page cache (--no-main-direct: buffered)',
      })
      .option('main-io-deadline', {
        type: 'string',
        default: '30s',
        describe: 'A main read or write slower than this fails (ETIMEDOUT, counted as a media error): 30s, 500ms; 0 = none',
      })
      .option('outage-hold', {
        type: 'number',
        default: 5,
        describe: 'Seconds a request that needs a failed (gone) main device waits for it before EIO; 0 = fail at once',
      })
      .option('alert-program', {
        type: 'string',
        describe: 'Run PATH EVENT SETUP [DETAIL] on remaps, pending blocks, health changes, spare low/full, … (REMAPD_* environment)',
      })
      .option('alert-timeout', { type: 'number', default: 30, describe: 'Seconds the alert program may run before it is killed' })
      .option('state-dir', {
        type: 'string',
        default: '/var/lib/remapd',
        describe: 'Where evacuation progress is kept (survives restarts)',
      })
      .option('config', { type: 'string', describe: 'JSON config file (/etc/remapd/NAME.json); flags given here override it' })
      .check((a) => {
        if (!(a['handshake-timeout'] > 0)) throw new Error('--handshake-timeout must be a positive number of seconds');
        if (!(Number.isInteger(a['max-connections']) && a['max-connections'] > 0))
          throw new Error('--max-connections must be a positive integer');
        let outstanding: number;
        try {
          outstanding = parseSize(a['max-outstanding-bytes']);
        } catch (err) {
          throw new Error(`--max-outstanding-bytes: ${(err as Error).message}`, { cause: err });
        }
        if (outstanding < 1024 * 1024) throw new Error('--max-outstanding-bytes must be at least 1M');
        let budget: number;
        try {
          budget = parseSize(a['buffer-budget']);
        } catch (err) {
          throw new Error(`--buffer-budget: ${(err as Error).message}`, { cause: err });
        }
        if (budget < 1024 * 1024) throw new Error('--buffer-budget must be at least 1M');
        if (!(Number.isInteger(a['read-retries']) && a['read-retries'] >= 0 && a['read-retries'] <= 100))
          throw new Error('--read-retries must be an integer from 0 to 100');
        if (!(Number.isFinite(a['outage-hold']) && a['outage-hold'] >= 0 && a['outage-hold'] <= 25))
          throw new Error("--outage-hold must be a number of seconds from 0 to 25 (under the kernel nbd client's 30 s timeout)");
        if (!/^0?[0-7]{3}$/.test(a['socket-mode'])) throw new Error('--socket-mode must be an octal mode like 0600');
        if (a['scan-rate'] !== undefined) parseSize(a['scan-rate']);
        if (a['scan-interval'] !== undefined) parseDuration(a['scan-interval']);
        slowThresholds(a['scan-slow'], a['scan-very-slow']);
        try {
          parseDuration(a['main-io-deadline']);
        } catch (err) {
          throw new Error(`--main-io-deadline: ${(err as Error).message}`, { cause: err });
        }
        if (!(a['alert-timeout'] > 0)) throw new Error('--alert-timeout must be a positive number of seconds');
        return true;
      })
      .example('$0 serve --main /dev/sdb --socket /run/remapd/sdb.sock', 'serve a disk on a Unix socket')
      .example(
        '$0 serve --main /dev/sdb --spare /dev/sdc --socket /run/remapd/sdb.sock',
        'serve a failing disk, remapping bad blocks to a spare',
      )
      .example('$0 serve --main disk.img --listen 127.0.0.1:10809', 'serve an image over TCP on loopback'),
  handler: async (argv) => {
    let a: typeof argv;
    try {
      a = applyConfigFile(argv);
    } catch (err) {
      if (!(err instanceof ConfigFileError)) throw err;
      process.stderr.write(`remapd: ${err.message}\n`);
      process.exit(2);
    }
    const evacuationState = statePath(a['state-dir'], a.export);
    let previousEvac: ReturnType<typeof previousEvacuation>;
    try {
      previousEvac = previousEvacuation(evacuationState);
    } catch (err) {
      process.stderr.write(`remapd: ${(err as Error).message}\n`);
      process.exit(2);
    }
    if (previousEvac?.phase === 'switched') {
      // The data lives on the evacuated disk now: serving the old main would go back in time.
      // `remapd status` says so as after the switch itself (the old devices are not even opened).
      const evacuated = { to: previousEvac.target, main: a.main ?? null, spare: a.spare ?? null, released: true, releasedAt: null };
      statusSections.set('evacuated', () => evacuated);
      a = { ...a, main: previousEvac.target, spare: undefined, scan: false };
    }
    let thresholds: ReturnType<typeof slowThresholds>;
    try {
      thresholds = slowThresholds(a['scan-slow'], a['scan-very-slow']); // again: the config file may set them
    } catch (err) {
      const where = a.config ? ` (in ${a.config}: scanSlow, scanVerySlow)` : '';
      process.stderr.write(`remapd: ${(err as Error).message}${where}\n`);
      process.exit(2);
    }
    if (!a.main) {
      process.stderr.write('remapd: missing --main (or "main" in the --config file)\n');
      process.exit(2);
    }
    if (a['alert-program'] !== undefined) {
      const problem = checkAlertProgram(a['alert-program']);
      if (problem) {
        process.stderr.write(`remapd: ${problem}\n`);
        process.exit(2);
      }
    }
    const log = createLogger(a['log-level']);
    if (previousEvac?.phase === 'switched') {
      log.warn(
        { target: previousEvac.target, state: evacuationState },
        'this setup was evacuated: serving the new disk, not the configured main; update the config and remove the state file',
      );
    }
    let mirror: MirrorDevice | undefined;
    const systemd = new Systemd(log);
    systemd.startWatchdog(() => ioPathStuck(openLanes()));
    // A planned restart hands over listeners and connections (daemon/handover*.ts).
    const inherited = takeHandover(systemd.listenFds, log);
    if (inherited?.prepared) {
      // Started by the old process while it still serves: load what can be loaded without owning the
      // setup, then wait for it to drain and release main and spare (daemon/handover-successor.ts).
      const loadMs = await preloadForHandover(a.spare, log, process.uptime() * 1000);
      if (!(await awaitGo(inherited, loadMs, log))) {
        log.warn('hand-over: the old process called the restart off; it keeps serving, exiting');
        process.exit(1);
      }
    }
    const fds = inherited ? inherited.listenFds : activationFds(systemd, a, log);
    const configuredSocket = a.socket ?? (a.listen ? undefined : `/run/remapd/${a.export}.sock`);
    const socket = fds.length || inherited ? undefined : configuredSocket;
    let daemon;
    try {
      daemon = await startDaemon(
        {
          main: a.main,
          socket,
          listen: fds.length || inherited ? undefined : a.listen,
          listenFds: fds,
          exportName: a.export,
          readOnly: a['read-only'],
          handshakeTimeoutSec: a['handshake-timeout'],
          maxConnections: a['max-connections'],
          socketMode: parseInt(a['socket-mode'], 8),
          socketGroup: a['socket-group'] === undefined ? undefined : resolveGroup(a['socket-group']),
          spare: a.spare,
          faults: a.faults,
          control: a.control ?? defaultControlPath(inherited ? configuredSocket : socket, a.export),
          controlIsDefault: a.control === undefined,
          readRetries: a['read-retries'],
          outageHoldMs: Math.round(a['outage-hold'] * 1000),
          metrics: a.metrics,
          tls: {
            mode: a.tls as 'off' | 'on' | 'require',
            certificates: a['tls-certificates'],
            verifyPeer: a['tls-verify-peer'],
            psk: a['tls-psk'],
          },
          maxOutstandingBytes: parseSize(a['max-outstanding-bytes']),
          mainDirect: a['main-direct'],
          mainIoDeadlineMs: parseDuration(a['main-io-deadline']),
          wrapDevice: (d) => (mirror = new MirrorDevice(d)),
          bufferBudget: parseSize(a['buffer-budget']),
        },
        log,
      );
    } catch (err) {
      const msg = err instanceof ServerStartError ? err.message : (err as Error).message;
      log.fatal({ err }, `cannot start: ${msg}`);
      process.stderr.write(`remapd: cannot start: ${msg}\n`);
      await systemd.status(`cannot start: ${msg}`);
      await systemd.flush();
      process.exit(1);
    }
    let scanner: ReturnType<typeof attachScanner> | undefined;
    const evacuateDone: ((detail: string) => void)[] = [];
    if (daemon.remap && (a.scan ?? !a['read-only'])) {
      scanner = attachScanner(daemon, daemon.remap, {
        mainPath: a.main,
        logger: log,
        sections: statusSections,
        settings: {
          ...(a['scan-rate'] !== undefined ? { rate: parseSize(a['scan-rate']) } : {}),
          ...(a['scan-interval'] !== undefined ? { intervalMs: parseDuration(a['scan-interval']) } : {}),
          ...thresholds,
        },
      });
      // The scan found main gone as a whole: say so in systemctl status, and again when it reads again.
      scanner.on(
        'device-failed',
        (f: { code: string; message: string }) => void systemd.status(`MAIN DEVICE FAILED (${f.code}): ${f.message}`),
      );
      scanner.on(
        'device-recovered',
        () => void systemd.status(`serving ${a.main} as export '${a.export}' (main reads again after a device failure)`),
      );
    } else if (a.scan && !daemon.remap) {
      log.warn('--scan needs --spare (found blocks are migrated to it); health scan disabled');
    }
    if (a['alert-program'] !== undefined) {
      const alerts = attachAlerts(daemon.remap, {
        program: a['alert-program'],
        timeoutMs: a['alert-timeout'] * 1000,
        setup: a.export,
        main: a.main,
        logger: log,
        health: () => statusSections.get('health')?.() as { score?: number; label?: string } | undefined,
        evacuatedTo: () => daemon.oldStack.retired?.to,
      });
      if (scanner) subscribeScanner(scanner, alerts);
      // Repaired at open, before the alerts were attached: raise it once now.
      if (daemon.metadataRepairedAtOpen !== undefined) alerts.raise('MetadataRepaired', `copies=${daemon.metadataRepairedAtOpen}`);
      evacuateDone.push((detail) => alerts.raise('EvacuateDone', detail));
      daemon.beforeStop.push(() => alerts.close());
    }
    await attachEvacuation(
      {
        mirror: mirror!,
        statePath: evacuationState,
        own: { main: a.main, spare: a.spare },
        blockSize: daemon.remap?.remapBlockSize ?? 4096,
        log,
        control: daemon.control,
        sections: statusSections,
        beforeStop: daemon.beforeStop,
        onDone: (st) => evacuateDone.forEach((f) => f(`to=${st.target} unreadable=${st.unreadable.length}`)),
        // The new disk serves every request: close the old stack and release main and spare now.
        onSwitched: async (target) => {
          await daemon.oldStack.retire(target, daemon.control, statusSections);
          void systemd.status(`serving ${target} as export '${a.export}' (evacuated; the old main and spare are released)`);
        },
      },
      previousEvac,
    );
    const onSignal = (sig: NodeJS.Signals) => {
      void systemd.stopping(`stopping (${sig})`);
      void daemon
        .stop(sig)
        .then(() => systemd.flush())
        .then(() => process.exit(0));
    };
    if (inherited) await adoptHandover(daemon, inherited, systemd, log);
    installHandoverSignals(daemon, systemd, log, new Set(systemd.listenFds.map((f) => f.fd)), onSignal);
    process.on('SIGINT', onSignal);
    const serving = `serving ${a.main} as export '${a.export}' on ${fds.length ? `passed fds ${fds.join(',')}` : [socket, a.listen].filter(Boolean).join(', ')}`;
    void systemd.ready(serving);
    if (daemon.remap) statusFollowsDevice(systemd, daemon.remap, serving);
    await daemon.stopped;
  },
};

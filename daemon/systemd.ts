/**
 * systemd integration without libsystemd: the readiness/status protocol (sd_notify), the service
 * watchdog and socket activation (sd_listen_fds). Every variable systemd passes (NOTIFY_SOCKET,
 * WATCHDOG_USEC/WATCHDOG_PID, LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES) is read once and removed from
 * process.env, so child processes and worker threads do not inherit them.
 *
 * Notification transport. sd_notify is one datagram on an AF_UNIX SOCK_DGRAM socket, which Node
 * cannot open. In order of preference:
 *   1. the native addon's sendDatagram (storage/native.ts): sent from this process, so systemd sees the
 *      main PID and no process is spawned per watchdog ping;
 *   2. otherwise `systemd-notify --pid=<our pid> VAR=VALUE…`, spawned per message. As root it forges
 *      our PID in SCM_CREDENTIALS; if it cannot, the sender is the child, which is why the unit sets
 *      NotifyAccess=all (the unit's cgroup holds nothing but remapd and these helpers).
 * Messages are sent in order, one at a time. Failures are logged once and never stop the daemon.
 */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import { nativeAvailable, sendDatagram } from '../storage/native';
import { explicitKeys } from './config-file';

/** First passed fd (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

export interface ListenFd {
  readonly fd: number;
  /** From LISTEN_FDNAMES (FileDescriptorName= in the .socket unit); 'unknown' when absent. */
  readonly name: string;
}

type Env = Record<string, string | undefined>;

function take(env: Env, names: string[]): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const n of names) {
    out[n] = env[n];
    delete env[n];
  }
  return out;
}

/**
 * sd_listen_fds(unset=true): the sockets systemd passed us, or [] when LISTEN_PID is not our PID or
 * the variables are absent or malformed. The variables are removed either way.
 */
export function takeListenFds(env: Env = process.env, pid = process.pid): ListenFd[] {
  const v = take(env, ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES']);
  if (v.LISTEN_FDS === undefined || v.LISTEN_PID === undefined) return [];
  if (!/^\d+$/.test(v.LISTEN_PID) || Number(v.LISTEN_PID) !== pid) return [];
  if (!/^\d+$/.test(v.LISTEN_FDS)) return [];
  const n = Number(v.LISTEN_FDS);
  const names = v.LISTEN_FDNAMES ? v.LISTEN_FDNAMES.split(':') : [];
  const out: ListenFd[] = [];
  for (let i = 0; i < n; i++) out.push({ fd: LISTEN_FDS_START + i, name: names[i] || 'unknown' });
  return out;
}

/**
 * sd_watchdog_enabled(unset=true): the watchdog interval in microseconds, or 0 when disabled, not
 * meant for us (WATCHDOG_PID set to another PID) or malformed. The variables are removed either way.
 */
export function takeWatchdogUsec(env: Env = process.env, pid = process.pid): number {
  const v = take(env, ['WATCHDOG_USEC', 'WATCHDOG_PID']);
  if (v.WATCHDOG_USEC === undefined || !/^\d+$/.test(v.WATCHDOG_USEC)) return 0;
  if (v.WATCHDOG_PID !== undefined && (!/^\d+$/.test(v.WATCHDOG_PID) || Number(v.WATCHDOG_PID) !== pid)) return 0;
  const usec = Number(v.WATCHDOG_USEC);
  return Number.isSafeInteger(usec) && usec > 0 ? usec : 0;
}

export type NotifyTransport = (socketPath: string, message: string) => Promise<void>;

/** Transport 1: the native addon. */
export const nativeTransport: NotifyTransport = (socketPath, message) => sendDatagram(socketPath, message);

/** Transport 2: the systemd-notify tool (one process per message). */
export const systemdNotifyTransport: NotifyTransport = (socketPath, message) =>
  new Promise((resolve, reject) => {
    const args = [`--pid=${process.pid}`, ...message.split('\n').filter((l) => l !== '')];
    const child = spawn('systemd-notify', args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NOTIFY_SOCKET: socketPath },
    });
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`systemd-notify exited ${code}: ${stderr.trim()}`))));
  });

export function defaultTransport(): { name: string; send: NotifyTransport } {
  return nativeAvailable ? { name: 'native', send: nativeTransport } : { name: 'systemd-notify', send: systemdNotifyTransport };
}

/** One status line for STATUS= (no newlines, bounded). */
function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').slice(0, 200);
}

export interface SystemdOptions {
  env?: Env;
  pid?: number;
  transport?: { name: string; send: NotifyTransport };
}

/**
 * The daemon's view of systemd. Construct once, early (it consumes the environment variables).
 * Without NOTIFY_SOCKET every notification is a no-op; `listenFds` is independent of notify.
 */
export class Systemd {
  readonly listenFds: ListenFd[];
  readonly watchdogUsec: number;
  readonly notifySocket: string | undefined;
  readonly transportName: string;
  private readonly send: NotifyTransport;
  private queue: Promise<void> = Promise.resolve();
  private watchdogTimer: NodeJS.Timeout | undefined;
  private warned = false;

  constructor(
    private readonly log: Logger,
    opts: SystemdOptions = {},
  ) {
    const env = opts.env ?? process.env;
    const pid = opts.pid ?? process.pid;
    this.listenFds = takeListenFds(env, pid);
    this.watchdogUsec = takeWatchdogUsec(env, pid);
    this.notifySocket = take(env, ['NOTIFY_SOCKET']).NOTIFY_SOCKET || undefined;
    const t = opts.transport ?? defaultTransport();
    this.transportName = t.name;
    this.send = t.send;
    if (this.notifySocket) log.debug({ notifySocket: this.notifySocket, transport: t.name }, 'systemd notify enabled');
  }

  /** Queues one notification (lines VAR=VALUE). Resolves when sent or failed (never rejects). */
  notify(message: string): Promise<void> {
    const socketPath = this.notifySocket;
    if (!socketPath) return Promise.resolve();
    this.queue = this.queue.then(() =>
      this.send(socketPath, message).catch((err: Error) => {
        if (this.warned) return;
        this.warned = true;
        this.log.warn({ err, notifySocket: socketPath, transport: this.transportName }, 'cannot notify systemd');
      }),
    );
    return this.queue;
  }

  /** READY=1 with a status line. */
  ready(status: string): Promise<void> {
    return this.notify(`READY=1\nSTATUS=${oneLine(status)}\nMAINPID=${process.pid}\n`);
  }

  status(status: string): Promise<void> {
    return this.notify(`STATUS=${oneLine(status)}\n`);
  }

  /** STOPPING=1 (and a status line); stops the watchdog pings. */
  stopping(status = 'stopping'): Promise<void> {
    this.stopWatchdog();
    return this.notify(`STOPPING=1\nSTATUS=${oneLine(status)}\n`);
  }

  /**
   * Sends WATCHDOG=1 every half interval from a timer on the event loop: if the loop is blocked, the
   * pings stop and systemd restarts us after WatchdogSec=. Unref'd so it never keeps the process up.
   * `stuck` (daemon/io-watchdog.ts) is asked before each ping: while it names a stuck I/O path the
   * pings stop too (one error log and a STATUS line), so a hung spare/metadata path gets the daemon
   * restarted, not only a blocked event loop.
   */
  startWatchdog(stuck?: () => string | undefined): void {
    if (!this.watchdogUsec || !this.notifySocket || this.watchdogTimer) return;
    const intervalMs = Math.max(1, Math.floor(this.watchdogUsec / 2000));
    this.log.info({ watchdogSec: this.watchdogUsec / 1e6, pingMs: intervalMs }, 'systemd watchdog enabled');
    let withheld = false;
    const ping = (): void => {
      const problem = stuck?.();
      if (problem !== undefined) {
        if (!withheld) {
          withheld = true;
          this.log.error({ problem }, 'I/O path stuck: withholding the systemd watchdog ping');
          void this.status(`I/O stuck: ${problem}`);
        }
        return;
      }
      if (withheld) {
        withheld = false;
        this.log.warn('I/O path answers again: watchdog pings resumed');
      }
      void this.notify('WATCHDOG=1\n');
    };
    ping();
    this.watchdogTimer = setInterval(ping, intervalMs);
    this.watchdogTimer.unref();
  }

  stopWatchdog(): void {
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    this.watchdogTimer = undefined;
  }

  /** Waits for queued notifications, at most `timeoutMs` (call before process.exit). */
  async flush(timeoutMs = 2000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.queue, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }
}

/**
 * The passed sockets `serve` should use. Socket activation wins over `socket`/`listen` from the
 * config file (the .socket unit owns the addresses, so one config file works with and without it),
 * but an explicit --socket or --listen on the command line turns activation off.
 */
export function activationFds(
  systemd: Pick<Systemd, 'listenFds'>,
  argv: { socket?: unknown; listen?: unknown },
  log: Logger,
  rawArgs: readonly string[] = process.argv.slice(2),
): number[] {
  const fds = systemd.listenFds.map((f) => f.fd);
  if (!fds.length) return [];
  const explicit = explicitKeys(rawArgs);
  if (explicit.has('socket') || explicit.has('listen')) {
    log.warn({ listenFds: fds }, 'systemd passed listening sockets but --socket/--listen was given: not using them');
    return [];
  }
  if (argv.socket !== undefined || argv.listen !== undefined) {
    log.info(
      { socket: argv.socket, listen: argv.listen, listenFds: fds },
      'socket-activated: serving the passed sockets, not socket/listen from the config file',
    );
  }
  return fds;
}

/** What statusFollowsDevice needs from the remapping device (RemapDevice satisfies it). */
export interface FailureStates {
  on(event: string, listener: () => void): unknown;
  status(): { main: { state: string; reason: string | null }; spare: { failing: boolean; cause: string | null } };
}

/**
 * Keep STATUS= in step with the device's failure states: "MAIN DEVICE FAILED: …" and "SPARE FAILING: …"
 * lead the line while they last (`systemctl status` shows it), then the line returns to `serving`.
 */
export function statusFollowsDevice(systemd: Pick<Systemd, 'status'>, device: FailureStates, serving: string): void {
  const update = (): void => {
    const s = device.status();
    const alarms: string[] = [];
    if (s.main.state === 'failed') alarms.push(`MAIN DEVICE FAILED: ${s.main.reason ?? 'unknown'}`);
    if (s.spare.failing) alarms.push(`SPARE FAILING (no new remaps): ${s.spare.cause ?? 'unknown'}`);
    void systemd.status(alarms.length ? `${alarms.join('; ')}; ${serving}` : serving);
  };
  for (const ev of ['main-failed', 'main-recovered', 'spare-failing', 'spare-recovered']) device.on(ev, update);
}

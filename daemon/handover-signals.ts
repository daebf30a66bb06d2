/**
 * Which signal starts a planned-restart hand-over (daemon/handover.ts):
 *   SIGHUP   always: the daemon starts its successor itself and passes it the sockets ('exec').
 *   SIGTERM  under systemd with a file descriptor store (FileDescriptorStoreMax= > 0, announced to us by
 *            $FDSTORE from systemd ≥ 254, or REMAPD_FDSTORE=N set in the unit for older systemd) and
 *            the native addon, when systemd is restarting the unit (daemon/stop-intent.ts): the
 *            sockets go to the store and the next start adopts them (`systemctl restart`). Any other
 *            SIGTERM (`systemctl stop`, or no store) is the real stop, `onStop`.
 */
import type { Logger } from 'pino';
import { handOver, handoverSupported } from './handover';
import type { RunningDaemon } from './serve';
import type { Systemd } from './systemd';
import { stopIntent } from './stop-intent';
import { abortPreparation } from './handover-successor';

export function fdStoreEnabled(env: Record<string, string | undefined> = process.env): boolean {
  const n = Number(env.FDSTORE ?? env.REMAPD_FDSTORE ?? 0);
  return Number.isInteger(n) && n > 0;
}

export function installHandoverSignals(
  daemon: RunningDaemon,
  systemd: Systemd,
  log: Logger,
  activation: ReadonlySet<number>,
  onStop: (sig: NodeJS.Signals) => void,
): void {
  let started = false;
  let stopRequested = false;
  const start = (how: 'exec' | 'fdstore', sig: string): void => {
    if (started) {
      log.warn({ signal: sig }, 'hand-over already running');
      return;
    }
    started = true;
    handOver(daemon, systemd, log, how, activation, () => stopRequested).then(
      () => {
        // called off (the successor did not get ready, or a stop came meanwhile): still serving
        started = false;
        if (stopRequested) onStop('SIGTERM');
      },
      (err: Error) => {
        log.fatal({ err }, 'hand-over failed; exiting (clients reconnect)');
        process.exit(1);
      },
    );
  };
  process.on('SIGHUP', () => start('exec', 'SIGHUP'));
  const useStore = fdStoreEnabled() && handoverSupported('fdstore', systemd);
  process.on('SIGTERM', () => {
    if (started) {
      // A successor still getting ready is abandoned and this process stops (systemd's stop also
      // signals the successor, which is in the same cgroup); a drain already running finishes the hand-over.
      stopRequested = true;
      abortPreparation();
      return log.warn({ signal: 'SIGTERM' }, 'stop asked for during a planned restart');
    }
    if (!useStore) return onStop('SIGTERM');
    void stopIntent().then((intent) => {
      log.info({ intent }, intent === 'restart' ? 'SIGTERM for a restart: handing over through the fd store' : 'SIGTERM for a stop');
      if (intent === 'restart') start('fdstore', 'SIGTERM');
      else onStop('SIGTERM');
    });
  });
}

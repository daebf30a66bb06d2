/**
 * Which signal starts a planned-restart hand-over (daemon/handover.ts):
 *   SIGHUP   always: the daemon starts its successor itself and passes it the sockets ('exec').
 *   SIGTERM  under systemd with a file descriptor store (FileDescriptorStoreMax= > 0, announced to us by
 *            $FDSTORE from systemd ≥ 254, or REMAPD_FDSTORE=N set in the unit for older systemd) and
 *            the native addon: the sockets go to the store and the next start adopts them, which is
 *            what `systemctl restart` needs. Otherwise SIGTERM is the ordinary drain-and-stop.
 * Returns true when SIGTERM is taken care of here.
 */
import type { Logger } from 'pino';
import { handOver, handoverSupported } from './handover';
import type { RunningDaemon } from './serve';
import type { Systemd } from './systemd';

export function fdStoreEnabled(env: Record<string, string | undefined> = process.env): boolean {
  const n = Number(env.FDSTORE ?? env.REMAPD_FDSTORE ?? 0);
  return Number.isInteger(n) && n > 0;
}

export function installHandoverSignals(daemon: RunningDaemon, systemd: Systemd, log: Logger, activation: ReadonlySet<number>): boolean {
  let started = false;
  const start = (how: 'exec' | 'fdstore', sig: string): void => {
    if (started) {
      log.warn({ signal: sig }, 'hand-over already running');
      return;
    }
    started = true;
    handOver(daemon, systemd, log, how, activation).catch((err: Error) => {
      log.fatal({ err }, 'hand-over failed; exiting (clients reconnect)');
      process.exit(1);
    });
  };
  process.on('SIGHUP', () => start('exec', 'SIGHUP'));
  const useStore = fdStoreEnabled() && handoverSupported('fdstore', systemd);
  if (useStore) process.on('SIGTERM', () => start('fdstore', 'SIGTERM'));
  return useStore;
}

/**
 * Is an I/O path stuck? Asked by the systemd watchdog (daemon/systemd.ts) before each ping.
 *
 * Only lanes without a deadline count: the spare (remapped data and every metadata commit) and main
 * when run with --main-io-deadline 0. A main with a deadline cannot be "stuck" from the daemon's
 * point of view: its slow I/O fails with ETIMEDOUT, is handled as a media error (retry, remap), and
 * its blocked threads are replaced (storage/io-lane.ts); restarting the daemon would not make the
 * disk answer, it would only drop every client. A spare that does not answer is different: no remap
 * can commit and no write to a remapped block can finish, and nothing else will time it out.
 */
import type { LaneStats } from '../storage/io-lane';

/** An op on a lane without deadline older than this means the path is stuck. */
export const IO_STUCK_LIMIT_MS = 60_000;

/** A description of the stuck path, or undefined when every lane answers. */
export function ioPathStuck(lanes: readonly { stats(): LaneStats }[], limitMs = IO_STUCK_LIMIT_MS): string | undefined {
  for (const lane of lanes) {
    const s = lane.stats();
    if (s.deadlineMs > 0) continue;
    if (s.oldestInFlightMs > limitMs) {
      return `${s.name} I/O has not answered for ${Math.round(s.oldestInFlightMs / 1000)} s (${s.inFlight} in flight)`;
    }
  }
  return undefined;
}

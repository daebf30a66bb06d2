/**
 * What a SIGTERM means under systemd with a file descriptor store: `systemctl restart` (hand the
 * connections to the store; the next start adopts them) or `systemctl stop` (a real stop: drain each
 * connection to a request boundary, answer everything read, close). systemd sends the same signal for
 * both; what differs is the job it is running for the unit: while a restart stops the service, the
 * unit's job has type "restart" (it becomes "start" once the stop is done); a stop runs a "stop" job.
 *
 * Before this, every SIGTERM went to the store, and on `systemctl stop` systemd then closed the stored
 * sockets itself: clients lost the connection with no chance to have been drained by a process that
 * meant to stop (and a TLS client, or one mid-handshake, was cut rather than told ESHUTDOWN).
 *
 * The job is read with `systemctl list-jobs --no-legend --plain UNIT` (UNIT from /proc/self/cgroup).
 * When that cannot be asked (no systemctl, no D-Bus, not a service), the answer is "stop": a stop done
 * for a restart costs a reconnect (`remapd attach` reconnects; I/O waits, nothing fails), whereas
 * connections left in a store that is then dropped are cut. REMAPD_SYSTEMCTL names another systemctl
 * (the tests' stand-in service manager has one).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';

export type StopIntent = 'restart' | 'stop';

/** The systemd unit this process runs in (from its cgroup), e.g. remapd@disk.service. */
export function ownUnit(cgroupText?: string): string | undefined {
  let text = cgroupText;
  try {
    text ??= readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const path = line.split(':').slice(2).join(':');
    const last = path.split('/').pop() ?? '';
    if (last.endsWith('.service')) return last;
  }
  return undefined;
}

/** 'restart' when the list-jobs output shows a restart (or queued start) job for `unit`. */
export function intentFromJobs(listJobs: string, unit: string | undefined): StopIntent {
  for (const line of listJobs.split('\n')) {
    const [, name, type] = line.trim().split(/\s+/);
    if (unit !== undefined && name !== unit) continue;
    if (type === 'restart' || type === 'try-restart' || type === 'start') return 'restart';
  }
  return 'stop';
}

/** Ask systemd what this SIGTERM is for (at most `timeoutMs`; 'stop' when it cannot tell). */
export function stopIntent(env: Record<string, string | undefined> = process.env, timeoutMs = 5000): Promise<StopIntent> {
  const unit = ownUnit();
  const systemctl = env.REMAPD_SYSTEMCTL || 'systemctl';
  return new Promise((resolve) => {
    execFile(
      systemctl,
      ['list-jobs', '--no-legend', '--plain', '--no-pager', ...(unit ? [unit] : [])],
      { timeout: timeoutMs },
      (err, stdout) => resolve(err ? 'stop' : intentFromJobs(String(stdout), unit)),
    );
  });
}

/**
 * The stand-in service manager (fake-service-manager.py) driven from a test: it runs one command line as a
 * service with a notify socket and a file descriptor store, takes `restart`/`stop` on stdin, and prints one
 * line per event ('ready …', 'exited …', 'stopped CODE STORED'). systemd is not PID 1 on the test machines,
 * so this is how the fd-store restart and the stop are exercised.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { PYTHON, REPO_ROOT, sleep } from './index';

const MANAGER = join(REPO_ROOT, 'test', 'helpers', 'fake-service-manager.py');

export interface ServiceManager {
  /** Every line the manager printed, in order. */
  readonly lines: string[];
  /** How many lines start with `prefix`. */
  count(prefix: string): number;
  /** Sends one command (`restart`, `stop`). */
  send(command: string): void;
}

export function startServiceManager(
  t: { teardown(fn: () => unknown): void },
  notifySocket: string,
  logFile: string,
  argv: readonly string[],
): ServiceManager {
  const mgr = spawn(PYTHON, [MANAGER, notifySocket, logFile, '--', ...argv], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let partial = '';
  mgr.stdout.on('data', (b: Buffer) => {
    partial += b.toString();
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
  });
  const done = new Promise<void>((r) => mgr.on('exit', () => r()));
  t.teardown(async () => {
    mgr.stdin.end();
    await Promise.race([done, sleep(20_000)]);
    mgr.kill('SIGKILL');
  });
  return {
    lines,
    count: (prefix) => lines.filter((l) => l.startsWith(prefix)).length,
    send: (command) => void mgr.stdin.write(`${command}\n`),
  };
}

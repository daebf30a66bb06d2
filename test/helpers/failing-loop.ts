/**
 * A real kernel block device with real bad sectors, without the nbd or dm drivers: remapd serves an
 * image with fault-injected read errors (passthrough, no spare), nbdfuse exposes the export as a FUSE
 * file, losetup makes that a /dev/loopN. Reads of the bad sectors fail with EIO in the kernel, as on a
 * dying disk; ddrescue and badblocks run on it unchanged. Everything is torn down at teardown.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { run, killGroup } from './exec';
import { startServer, sleep } from './server';
import { attachLoop } from './loopdev';
import { writeFaults, type FaultRuleSpec } from './remap-setup';

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function failingLoopDevice(t: Teardown, dir: string, image: string, faults: FaultRuleSpec[]): Promise<string> {
  const faultsFile = join(dir, 'failing-faults.json');
  writeFaults(faultsFile, faults);
  const socket = join(dir, 'failing.sock');
  await startServer(t, {
    kind: 'remapd',
    image,
    dir,
    socket,
    readOnly: true,
    extraArgs: ['--faults', faultsFile, '--control', join(dir, 'failing.ctl'), '--read-retries', '0'],
  });
  const mnt = join(dir, 'failing-fuse');
  mkdirSync(mnt, { recursive: true });
  const fuse = spawn('nbdfuse', ['-r', mnt, '--unix', socket], { stdio: 'ignore', detached: true });
  t.teardown(async () => {
    await run('fusermount3', ['-u', mnt], { timeoutMs: 30_000 });
    await sleep(200);
    if (fuse.exitCode === null) killGroup(fuse.pid, 'SIGTERM');
  });
  const file = join(mnt, 'nbd');
  for (let i = 0; i < 100 && !existsSync(file); i++) await sleep(100);
  if (!existsSync(file)) throw new Error('nbdfuse did not expose the export');
  return attachLoop(t, file);
}

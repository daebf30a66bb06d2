/**
 * The real Linux nbd driver: test/kernel/kernel-nbd-check boots Debian's 6.1 kernel under QEMU,
 * attaches /dev/nbd0 to the server's Unix socket with nbd-client (netlink, NBD_OPT_GO) and runs
 * raw I/O, FUA, flush, discard, mkfs.ext4, mount, write, remount verify, e2fsck, disconnect.
 * 256 MiB export, with 1 and with 4 connections (the latter needs CAN_MULTI_CONN).
 */
import t from 'tap';
import { join } from 'node:path';
import { withServer, run, describe, MiB, REPO_ROOT, logTail } from '../helpers';

const KNC = join(REPO_ROOT, 'test', 'kernel', 'kernel-nbd-check');
const SIZE = 256 * MiB;
t.setTimeout(1500_000);

for (const connections of [1, 4]) {
  t.test(`kernel nbd driver, ${connections} connection(s)`, async (t) => {
    const { dir, server } = await withServer(t, { sizeBytes: SIZE, exportName: 'disk0' });
    const logFile = join(dir, `kernel-${connections}.log`);
    const r = await run(
      KNC,
      [
        // 2 vCPUs: the host has 2 cores, and TCG with more vCPUs than host cores can stall the boot.
        // All 4 connections are negotiated; blk-mq spreads the I/O over the ones mapped to the 2 CPUs.
        '--socket',
        server.socket,
        '--export',
        'disk0',
        '--connections',
        String(connections),
        '--cpus',
        '2',
        '--timeout',
        '540',
        '--nbd-timeout',
        '60',
        '--keep-log',
        logFile,
      ],
      { timeoutMs: 600_000 },
    );
    // step lines ("  PASS raw-io 3.64s …") go to stderr
    const steps = (r.stdout + '\n' + r.stderr)
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /^(PASS|FAIL|SKIP) /.test(l));
    for (const s of steps) {
      const [verdict, name] = s.split(/\s+/);
      if (verdict === 'SKIP') t.ok(true, `step ${name}`, { skip: s });
      else t.equal(verdict, 'PASS', `step ${name}`, { line: s });
    }
    t.ok(steps.length >= 8, 'kernel-nbd-check ran its steps', { out: describe(r, 6000) });
    t.equal(r.code, 0, `kernel-nbd-check exit 0 (${connections} connection(s))`, {
      out: describe(r, 6000),
      log: logTail(server),
    });
    t.ok(server.isRunning(), 'server still running after the guest disconnected');
  });
}

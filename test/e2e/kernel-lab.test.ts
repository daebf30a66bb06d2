/**
 * The kernel fault lab's short subset (test/kernel/lab/kernel-lab, docs/TESTING.md): remapd itself runs
 * inside a Debian 6.1 guest and the kernel's nbd client attaches it as /dev/nbd0.
 *  - smoke: the lab works (scsi_debug main, virtio spare, O_DIRECT write/read through nbd0);
 *  - read-errors-exact: scsi_debug MEDIUM ERROR and dm error sectors inside healthy 1 MiB regions; the
 *    scanner marks exactly those blocks pending, neighbours read right.
 * The whole lab (`npm run test:kernel-lab`) takes too long for CI on 2 cores; see docs/TESTING.md.
 * KERNEL_LAB_SUBSET="a b" picks other scenarios.
 */
import t from 'tap';
import { join } from 'node:path';
import { run, describe, REPO_ROOT } from '../helpers';

const LAB = join(REPO_ROOT, 'test', 'kernel', 'lab', 'kernel-lab');
const SUBSET = (process.env.KERNEL_LAB_SUBSET ?? 'smoke read-errors-exact').split(/\s+/).filter(Boolean);
t.setTimeout(3000_000);

t.test(`kernel lab: ${SUBSET.join(', ')}`, async (t) => {
  const r = await run(LAB, SUBSET, { timeoutMs: 2900_000 });
  const lines = r.stdout.split('\n').map((l) => l.trim());
  for (const name of SUBSET) {
    const line = lines.find((l) => l.split(/\s+/)[1] === name);
    t.ok(line?.startsWith('PASS '), `scenario ${name}`, { line, out: line?.startsWith('PASS ') ? undefined : describe(r, 6000) });
  }
  t.match(r.stdout, new RegExp(`kernel-lab: ${SUBSET.length} passed, 0 failed`), 'summary line', { out: describe(r, 3000) });
  t.equal(r.code, 0, 'kernel-lab exit 0');
});

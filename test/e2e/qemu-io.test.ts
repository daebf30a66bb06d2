/**
 * qemu-io against the export: patterned writes/reads with and without FUA, flush, discard,
 * write-zeroes (with and without unmap), and read-back of zeroes; unaligned I/O.
 */
import t from 'tap';
import { withServer, run, describe, MiB, logTail } from '../helpers';

const SIZE = 64 * MiB;

async function qio(uri: string, cmds: string[]): Promise<ReturnType<typeof run>> {
  const args = ['-f', 'raw'];
  for (const c of cmds) args.push('-c', c);
  args.push(uri);
  return run('qemu-io', args, { timeoutMs: 60_000 });
}

/** qemu-io prints errors but exits 0 for some of them: treat any error text as failure too. */
function clean(r: Awaited<ReturnType<typeof run>>): boolean {
  return r.code === 0 && !/(error|failed|Pattern verification failed|mismatch)/i.test(r.stdout + r.stderr);
}

t.test('qemu-io write/read patterns, FUA, flush, discard, write zeroes', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });
  const steps: [string, string[]][] = [
    ['write -P then read -P (no FUA)', ['write -P 0xab 0 1M', 'read -P 0xab 0 1M']],
    ['write -f (FUA) then read -P', ['write -f -P 0xcd 1M 1M', 'read -P 0xcd 1M 1M']],
    ['flush', ['write -P 0x11 2M 64k', 'flush', 'read -P 0x11 2M 64k']],
    ['unaligned write/read', ['write -P 0x22 3000001 777', 'read -P 0x22 3000001 777']],
    ['discard then rewrite', ['discard 4M 1M', 'write -P 0x33 4M 1M', 'read -P 0x33 4M 1M']],
    ['write -z reads back zeroes', ['write -P 0x44 6M 1M', 'write -z 6M 1M', 'read -P 0 6M 1M']],
    ['write -z -f (FUA) reads back zeroes', ['write -P 0x45 8M 1M', 'write -z -f 8M 1M', 'read -P 0 8M 1M']],
    ['write -z -u (may unmap) reads back zeroes', ['write -P 0x46 10M 1M', 'write -z -u 10M 1M', 'read -P 0 10M 1M']],
    [
      'neighbours untouched by write -z',
      ['write -P 0x47 12M 3M', 'write -z 13M 1M', 'read -P 0x47 12M 1M', 'read -P 0 13M 1M', 'read -P 0x47 14M 1M'],
    ],
    ['last block of the export', [`write -P 0x66 ${SIZE - 65536} 64k`, `read -P 0x66 ${SIZE - 65536} 64k`]],
    [
      'aio writes, then reads',
      ['aio_write -P 0x77 16M 256k', 'aio_write -P 0x78 17M 256k', 'aio_flush', 'read -P 0x77 16M 256k', 'read -P 0x78 17M 256k'],
    ],
  ];
  for (const [name, cmds] of steps) {
    const r = await qio(server.uri, cmds);
    t.ok(clean(r), name, { out: describe(r), log: logTail(server, 1500) });
  }
  // a separate connection sees data written by earlier ones
  const r = await qio(server.uri, ['read -P 0xab 0 1M', 'read -P 0xcd 1M 1M', 'read -P 0x33 4M 1M', 'read -P 0 6M 1M']);
  t.ok(clean(r), 'new connection reads everything back', { out: describe(r) });
  // wrong pattern must be detected (the check is real)
  const neg = await qio(server.uri, ['read -P 0xee 0 4k']);
  t.notOk(clean(neg), 'read -P with the wrong pattern fails', { out: describe(neg) });
  t.ok(server.isRunning(), 'server still running');
});

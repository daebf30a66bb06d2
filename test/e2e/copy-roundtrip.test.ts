/**
 * Data integrity through whole-image copies: nbdcopy in and out (multi-connection, with flush),
 * cmp, qemu-img compare; and a sparse image (zeroing / hole paths in the copy tools).
 */
import t from 'tap';
import { join } from 'node:path';
import { withServer, run, describe, randomImage, sparseRandomImage, MiB, logTail } from '../helpers';

const SIZE = 64 * MiB;

t.test('random 64 MiB image: nbdcopy in, nbdcopy out, cmp, qemu-img compare', async (t) => {
  const { dir, server } = await withServer(t, { sizeBytes: SIZE });
  const src = randomImage(join(dir, 'src.img'), SIZE);
  const out = join(dir, 'out.img');

  const cin = await run('nbdcopy', ['--flush', '-C', '4', '--requests=16', src, server.uri], { timeoutMs: 120_000 });
  t.equal(cin.code, 0, 'nbdcopy file -> server', { out: describe(cin), log: logTail(server) });

  const cout = await run('nbdcopy', [server.uri, out], { timeoutMs: 120_000 });
  t.equal(cout.code, 0, 'nbdcopy server -> file', { out: describe(cout), log: logTail(server) });

  const cmp = await run('cmp', [src, out], { timeoutMs: 60_000 });
  t.equal(cmp.code, 0, 'copied-out image is identical to the source', { out: describe(cmp) });

  const qc = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, server.uri], { timeoutMs: 120_000 });
  t.equal(qc.code, 0, 'qemu-img compare: source == export', { out: describe(qc) });

  // the backing file itself must hold the data (no server-side cache that never reaches the disk)
  const cmpMain = await run('cmp', [src, join(dir, 'main.img')], { timeoutMs: 60_000 });
  t.equal(cmpMain.code, 0, 'backing image equals the source after flush', { out: describe(cmpMain) });

  // a single differing byte must be detected by qemu-img compare (proves the check is real)
  const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 12345678 1', server.uri], { timeoutMs: 30_000 });
  t.equal(w.code, 0, 'qemu-io writes one byte', { out: describe(w) });
  const qc2 = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, server.uri], { timeoutMs: 120_000 });
  t.equal(qc2.code, 1, 'qemu-img compare sees the 1-byte difference', { out: describe(qc2) });
  t.ok(server.isRunning(), 'server still running');
});

t.test('sparse image with holes: nbdcopy round trip, qemu-img convert, compare', async (t) => {
  // the export starts full of random bytes, so the holes of the source must be written as zeroes
  const { dir, server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });
  const src = sparseRandomImage(join(dir, 'sparse.img'), SIZE, 2 * MiB);
  const out = join(dir, 'out.img');

  const cin = await run('nbdcopy', [src, server.uri], { timeoutMs: 120_000 });
  t.equal(cin.code, 0, 'nbdcopy sparse file -> server', { out: describe(cin), log: logTail(server) });
  const cout = await run('nbdcopy', ['--flush', server.uri, out], { timeoutMs: 120_000 });
  t.equal(cout.code, 0, 'nbdcopy server -> file', { out: describe(cout) });
  const cmp = await run('cmp', [src, out], { timeoutMs: 60_000 });
  t.equal(cmp.code, 0, 'holes read back as zeroes, data intact', { out: describe(cmp) });

  // qemu-img convert uses its own request pattern (write zeroes / trim for holes)
  const random2 = randomImage(join(dir, 'random2.img'), SIZE);
  const conv = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', random2, server.uri], { timeoutMs: 120_000 });
  t.equal(conv.code, 0, 'qemu-img convert -> server', { out: describe(conv) });
  const qc = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', random2, server.uri], { timeoutMs: 120_000 });
  t.equal(qc.code, 0, 'qemu-img compare after convert', { out: describe(qc) });
  const conv2 = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, server.uri], { timeoutMs: 120_000 });
  t.equal(conv2.code, 0, 'qemu-img convert sparse -> server', { out: describe(conv2) });
  const qc2 = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, server.uri], { timeoutMs: 120_000 });
  t.equal(qc2.code, 0, 'qemu-img compare after sparse convert (holes zeroed)', { out: describe(qc2) });
});

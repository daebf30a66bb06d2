/** nbd-client 3.24 `-l` (NBD_OPT_LIST then ABORT, closing without reading the ACK). */
import t from 'tap';
import { withServer, run, describe, serverKind, logTail } from '../helpers';

t.test('nbd-client -l -u SOCK lists the export', async (t) => {
  const { server } = await withServer(t, { exportName: 'disk0' });
  const r = await run('nbd-client', ['-l', '-u', server.socket], { timeoutMs: 30_000 });
  t.equal(r.code, 0, 'nbd-client -l exits 0', { out: describe(r), log: logTail(server) });
  const lines = r.stdout.split('\n').map((l) => l.trim());
  if (serverKind() === 'remapd')
    t.ok(
      lines.some((l) => l === 'disk0' || l.startsWith('disk0:')),
      'export disk0 listed',
      { out: describe(r) },
    );
  else t.match(r.stdout, /Negotiation: \.\./, 'negotiated');
  // the ABORT without reading the ACK must not disturb the server
  for (let i = 0; i < 3; i++) {
    const again = await run('nbd-client', ['-l', '-u', server.socket], { timeoutMs: 30_000 });
    t.equal(again.code, 0, `repeat ${i + 1}`, { out: describe(again) });
  }
  const info = await run('nbdinfo', ['--size', server.uri], { timeoutMs: 30_000 });
  t.equal(info.code, 0, 'server still serves after LIST/ABORT clients', { out: describe(info) });
  t.ok(server.isRunning(), 'server still running');
});

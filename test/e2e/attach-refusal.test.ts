/**
 * `remapd attach` against real daemons, on a host without the nbd driver: the kernel-side handshake
 * (protocol/client-handshake.ts) reads the export's size, flags and setup UUID; a daemon serving
 * another setup, a resized export or a read-only export on the same socket is refused for a device that
 * was attached to the first one; and the command fails cleanly when the kernel has no nbd driver.
 * The kernel half (CONNECT, LINK_DEAD, RECONFIGURE) runs in the kernel lab (test/kernel).
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { MiB, REMAPD_BIN, run } from '../helpers';
import { createRemapSetup, logRecords, startRemapd } from '../helpers/remap-setup';
import { negotiateAll } from '../../daemon/attach-session';
import { refuseReattach } from '../../daemon/attach-policy';

t.test('handshake identity and refusals on the same socket path', async (t) => {
  const a = await createRemapSetup(t, { mainBytes: 32 * MiB, spareBytes: 16 * MiB });
  let server = await startRemapd(t, a, ['--no-scan']);
  const first = await negotiateAll({ socket: a.socket, exportName: '', connections: 1 });
  first.conns.forEach((c) => c.socket.destroy());
  const setup = logRecords(server).find((r) => r.msg === 'remap table loaded')?.setup as string;
  t.equal(first.identity.backend, `remapd-setup-${setup}`, 'backend identifier = the setup UUID the daemon loaded');
  t.equal(first.identity.size, 32 * MiB, 'size');
  t.equal(first.identity.transmissionFlags & 0x2, 0, 'writable');
  await server.stop();

  // The same setup again (a restart): accepted.
  server = await startRemapd(t, a, ['--no-scan']);
  const again = await negotiateAll({ socket: a.socket, exportName: '', connections: 1 });
  again.conns.forEach((c) => c.socket.destroy());
  t.equal(refuseReattach(first.identity, again.identity), undefined, 'the restarted daemon of the same setup is accepted');
  await server.stop();

  // The same setup, read-only.
  server = await startRemapd(t, a, ['--no-scan', '--read-only']);
  const ro = await negotiateAll({ socket: a.socket, exportName: '', connections: 1 });
  ro.conns.forEach((c) => c.socket.destroy());
  t.match(refuseReattach(first.identity, ro.identity), /read-only/, 'read-only export refused for a writable device');
  await server.stop();

  // Another setup (same size) on the same socket path.
  const b = await createRemapSetup(t, { mainBytes: 32 * MiB, spareBytes: 16 * MiB });
  server = await startRemapd(t, { ...b, socket: a.socket, control: `${b.dir}/ctl.sock` }, ['--no-scan']);
  const other = await negotiateAll({ socket: a.socket, exportName: '', connections: 1 });
  other.conns.forEach((c) => c.socket.destroy());
  t.match(refuseReattach(first.identity, other.identity), /another setup/, 'a different setup is refused');
  await server.stop();

  // A different size: passthrough daemons (no spare) of the same export name, 32 then 48 MiB.
  const p1 = await createRemapSetup(t, { mainBytes: 32 * MiB, spareBytes: 16 * MiB });
  server = await startRemapd(t, { ...p1, socket: a.socket }, ['--no-scan'], { spare: false });
  const small = await negotiateAll({ socket: a.socket, exportName: '', connections: 1 });
  small.conns.forEach((x) => x.socket.destroy());
  t.equal(small.identity.backend, 'remapd-passthrough-default', 'a daemon without a spare is identified by its export');
  await server.stop();
  const c = await createRemapSetup(t, { mainBytes: 48 * MiB, spareBytes: 16 * MiB });
  server = await startRemapd(t, { ...c, socket: a.socket }, ['--no-scan'], { spare: false });
  const bigger = await negotiateAll({ socket: a.socket, exportName: '', connections: 1 });
  bigger.conns.forEach((x) => x.socket.destroy());
  t.match(refuseReattach(small.identity, bigger.identity), /size changed from 33554432 to 50331648/, 'a resized export is refused');
  t.rejects(
    negotiateAll({ socket: a.socket, exportName: 'nosuch', connections: 1 }),
    /refused export 'nosuch'/,
    'an unknown export name is an error, not a hang',
  );
  await server.stop();
});

t.test(
  'remapd attach without the kernel nbd driver fails cleanly',
  { skip: existsSync('/sys/module/nbd') ? 'nbd is loaded here' : false },
  async (t) => {
    const a = await createRemapSetup(t, { mainBytes: 16 * MiB, spareBytes: 16 * MiB });
    await startRemapd(t, a, ['--no-scan']);
    const r = await run(process.execPath, [REMAPD_BIN, 'attach', '--socket', a.socket, '--device', '/dev/nbd3', '--state-dir', a.dir], {
      timeoutMs: 30_000,
    });
    t.equal(r.code, 1, 'exit 1');
    t.match(r.stderr, /modprobe nbd/, 'says what to do');
    const bad = await run(process.execPath, [REMAPD_BIN, 'attach', '--socket', a.socket, '--device', '/dev/sda'], { timeoutMs: 30_000 });
    t.not(bad.code, 0, 'a device that is not /dev/nbdN is refused');
    t.match(bad.stderr, /not an nbd device/, 'with a clear message');
  },
);

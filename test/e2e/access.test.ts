/**
 * Who may connect: Unix socket and control socket modes (0600 default, --socket-mode), an unprivileged
 * user (nobody, via setpriv) gets EACCES on both, and the loud warning for --listen on a non-loopback
 * address without --tls require.
 */
import t from 'tap';
import { chmodSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { withServer, run, describe, logTail, MiB } from '../helpers';
import { makePki } from '../helpers/tls-pki';
import { tempDir } from '../helpers';

const AS_NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

/** connect() to a Unix socket as nobody; prints OK or the errno code. */
async function connectAsNobody(path: string): Promise<string> {
  const code = `const s=require('net').connect(${JSON.stringify(path)});s.on('connect',()=>{console.log('OK');s.destroy()});s.on('error',e=>console.log(e.code))`;
  const r = await run('setpriv', [...AS_NOBODY, process.execPath, '-e', code], { timeoutMs: 30_000 });
  return r.stdout.trim() || `no output: ${describe(r)}`;
}

const mode = (p: string): number => statSync(p).mode & 0o777;

t.test('sockets are 0600 by default and nobody gets EACCES on both', async (t) => {
  const f = await withServer(t, { sizeBytes: 4 * MiB });
  chmodSync(f.dir, 0o755); // the directory must not be what stops nobody
  const ctl = join(f.dir, 'nbd.ctl');
  t.equal(mode(f.server.socket), 0o600, 'NBD socket mode 0600');
  t.equal(mode(ctl), 0o600, 'control socket mode 0600');
  t.equal(await connectAsNobody(f.server.socket), 'EACCES', 'nobody: EACCES on the NBD socket');
  t.equal(await connectAsNobody(ctl), 'EACCES', 'nobody: EACCES on the control socket');
  const nb = await run('setpriv', [...AS_NOBODY, 'nbdinfo', '--size', f.server.uri], { timeoutMs: 30_000 });
  t.not(nb.code, 0, 'nbdinfo as nobody fails', { out: describe(nb) });
  t.match(nb.stderr, /Permission denied/, 'with Permission denied');
  const st = await run(
    'setpriv',
    [...AS_NOBODY, process.execPath, join(__dirname, '..', '..', '..', 'bin', 'remapd'), 'status', '--control', ctl],
    { timeoutMs: 30_000 },
  );
  t.not(st.code, 0, 'remapd status as nobody fails', { out: describe(st) });
  const own = await run('nbdinfo', ['--size', f.server.uri], { timeoutMs: 30_000 });
  t.equal(own.code, 0, 'the owner (root here) connects', { out: describe(own) });
});

t.test('--socket-mode 0666 applies to both sockets, and then nobody can connect (the check above is real)', async (t) => {
  const f = await withServer(t, { sizeBytes: 4 * MiB, extraArgs: ['--socket-mode', '0666'] });
  chmodSync(f.dir, 0o755);
  const ctl = join(f.dir, 'nbd.ctl');
  t.equal(mode(f.server.socket), 0o666, 'NBD socket mode 0666');
  t.equal(mode(ctl), 0o666, 'control socket mode 0666');
  t.equal(await connectAsNobody(f.server.socket), 'OK', 'nobody connects to the NBD socket');
  t.equal(await connectAsNobody(ctl), 'OK', 'nobody connects to the control socket');
});

t.test('--socket-mode 0660: group bits set', async (t) => {
  const f = await withServer(t, { sizeBytes: 4 * MiB, extraArgs: ['--socket-mode', '0660'] });
  t.equal(mode(f.server.socket), 0o660, 'NBD socket mode 0660');
  t.equal(mode(join(f.dir, 'nbd.ctl')), 0o660, 'control socket mode 0660');
});

t.test('a group for the sockets (--socket-group)', async (t) => {
  const f = await withServer(t, { sizeBytes: 4 * MiB, extraArgs: ['--socket-mode', '0660', '--socket-group', 'nogroup'] });
  t.equal(statSync(f.server.socket).gid, 65534, 'NBD socket group nogroup');
  t.equal(statSync(join(f.dir, 'nbd.ctl')).gid, 65534, 'control socket group nogroup');
});

const WARNING = /NON-LOOPBACK ADDRESS WITHOUT --tls require/;

t.test('--listen on a non-loopback address warns unless --tls require', async (t) => {
  const wild = await withServer(t, { sizeBytes: 4 * MiB, extraArgs: ['--listen', '0.0.0.0:0'] });
  t.match(wild.server.log(), WARNING, '--listen 0.0.0.0 without TLS: loud warning', { log: logTail(wild.server) });
  t.match(wild.server.log(), /"level":40/, 'at warn level');
  const on = await withServer(t, {
    sizeBytes: 4 * MiB,
    extraArgs: ['--listen', '0.0.0.0:0', '--tls', 'on', '--tls-psk', await pskFile(t)],
  });
  t.match(on.server.log(), WARNING, '--tls on (plaintext still allowed): warning');
  const req = await withServer(t, {
    sizeBytes: 4 * MiB,
    extraArgs: ['--listen', '0.0.0.0:0', '--tls', 'require', '--tls-psk', await pskFile(t)],
  });
  t.notMatch(req.server.log(), WARNING, '--tls require: no warning', { log: logTail(req.server) });
  t.match(req.server.log(), /"tcp:0\.0\.0\.0:\d+"/, 'and it did listen on 0.0.0.0');
  const lo = await withServer(t, { sizeBytes: 4 * MiB, extraArgs: ['--listen', '127.0.0.1:0'] });
  t.notMatch(lo.server.log(), WARNING, 'loopback without TLS: no warning');
  const lo6 = await withServer(t, { sizeBytes: 4 * MiB, extraArgs: ['--listen', '[::1]:0'] });
  t.notMatch(lo6.server.log(), WARNING, '::1 without TLS: no warning', { log: logTail(lo6.server) });
});

async function pskFile(t: Tap): Promise<string> {
  const pki = await makePki(tempDir(t, 'remapd-pki-'));
  return pki.pskFile;
}
type Tap = Parameters<typeof tempDir>[0];

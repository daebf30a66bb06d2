/**
 * TLS with real clients (libnbd nbdinfo/nbdcopy, qemu-img, nbd-client -l) against a throwaway PKI made
 * per run (test/helpers/tls-pki.ts): round trip, wrong CA, expired server certificate, client
 * certificates with --tls-verify-peer, PSK, --tls require vs plaintext, --tls on, the state reset after
 * STARTTLS (raw socket + Node tls.connect), and old protocol versions.
 */
import t, { type Test } from 'tap';
import { join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { withServer, run, describe, randomImage, MiB, logTail, tempDir, type Fixture } from '../helpers';
import { makePki, tlsUri, readPem, StreamReader, type Pki } from '../helpers/tls-pki';

const SIZE = 16 * MiB;
const OPT = { STARTTLS: 5, GO: 7, STRUCTURED_REPLY: 8, SET_META_CONTEXT: 10 };
const REP = { ACK: 1, META_CONTEXT: 4, ERR_UNSUP: 0x80000001, ERR_INVALID: 0x80000003, ERR_TLS_REQD: 0x80000005 };
/** What a client stderr says when the failure is about TLS/certificates (not, say, a missing socket). */
const TLS_FAILURE = /tls|certificate|verif|handshake|gnutls|alert|psk|push function/i;

let pki: Pki;
t.before(async () => {
  pki = await makePki(tempDir(t, 'remapd-pki-'));
});

function tlsArgs(mode: 'on' | 'require', o: { certs?: string; psk?: string; verifyPeer?: boolean } = {}): string[] {
  const a = ['--tls', mode];
  if (o.certs) a.push('--tls-certificates', o.certs);
  if (o.psk) a.push('--tls-psk', o.psk);
  if (o.verifyPeer) a.push('--tls-verify-peer');
  return a;
}

async function nbdinfoSize(uri: string): ReturnType<typeof run> {
  return run('nbdinfo', ['--size', uri], { timeoutMs: 30_000 });
}

/** A refused connection: non-zero exit, with a TLS-ish reason, and the daemon is still serving. */
function refused(t: Test, r: Awaited<ReturnType<typeof run>>, what: string, f: Fixture): void {
  t.not(r.code, 0, `${what}: refused`, { out: describe(r), log: logTail(f.server) });
  t.match(r.stderr, TLS_FAILURE, `${what}: the failure is a TLS one`, { out: describe(r) });
  t.notMatch(r.stdout, String(SIZE), `${what}: no export size leaked`);
  t.ok(f.server.isRunning(), `${what}: server still running`);
}

t.test('certificates: nbdcopy round trip over TLS (libnbd), qemu-img info/convert, nbd-client -l', async (t) => {
  const f = await withServer(t, { sizeBytes: SIZE, extraArgs: tlsArgs('require', { certs: pki.server }) });
  const uri = tlsUri(f.server.socket, { certs: pki.clientNoCert });
  const src = randomImage(join(f.dir, 'src.img'), SIZE);
  const out = join(f.dir, 'out.img');
  const cin = await run('nbdcopy', ['--flush', src, uri], { timeoutMs: 120_000 });
  t.equal(cin.code, 0, 'nbdcopy file -> nbds+unix', { out: describe(cin), log: logTail(f.server) });
  const cout = await run('nbdcopy', [uri, out], { timeoutMs: 120_000 });
  t.equal(cout.code, 0, 'nbdcopy nbds+unix -> file', { out: describe(cout) });
  const cmp = await run('cmp', [src, out]);
  t.equal(cmp.code, 0, 'data round trip over TLS is exact', { out: describe(cmp) });
  t.match(f.server.log(), /"tls":true/, 'the daemon logged the connection as TLS');

  const qobj = ['--object', `tls-creds-x509,id=tls0,dir=${pki.clientNoCert},endpoint=client`];
  const qi = await run(
    'qemu-img',
    ['info', ...qobj, '--image-opts', `driver=nbd,path=${f.server.socket},tls-creds=tls0,tls-hostname=localhost`],
    { timeoutMs: 60_000 },
  );
  t.equal(qi.code, 0, 'qemu-img info over TLS', { out: describe(qi) });
  t.match(qi.stdout, new RegExp(`${SIZE} bytes`), 'qemu-img sees the size');
  const qout = join(f.dir, 'qout.img');
  const qc = await run(
    'qemu-img',
    ['convert', '-O', 'raw', ...qobj, '--image-opts', `driver=nbd,path=${f.server.socket},tls-creds=tls0,tls-hostname=localhost`, qout],
    { timeoutMs: 120_000 },
  );
  t.equal(qc.code, 0, 'qemu-img convert over TLS', { out: describe(qc) });
  t.equal((await run('cmp', [src, qout])).code, 0, 'qemu-img convert copy is exact');
  // qemu needs a hostname to check the certificate against when the transport is a Unix socket
  const qnh = await run('qemu-img', ['info', ...qobj, '--image-opts', `driver=nbd,path=${f.server.socket},tls-creds=tls0`], {
    timeoutMs: 60_000,
  });
  t.not(qnh.code, 0, 'qemu-img without tls-hostname over a Unix socket refuses to connect', { out: describe(qnh) });
  // qemu with the wrong CA
  const qbad = await run(
    'qemu-img',
    [
      'info',
      '--object',
      `tls-creds-x509,id=tls0,dir=${pki.clientWrongCa},endpoint=client`,
      '--image-opts',
      `driver=nbd,path=${f.server.socket},tls-creds=tls0,tls-hostname=localhost`,
    ],
    { timeoutMs: 60_000 },
  );
  refused(t, qbad, 'qemu-img with an unrelated CA', f);

  // nbd-client 3.24: -l works with TLS over the Unix socket (listing needs no kernel device)
  const nc = await run('nbd-client', ['-l', '-u', f.server.socket, '-cacertfile', pki.caCert, '-tlshostname', 'localhost'], {
    timeoutMs: 30_000,
  });
  t.equal(nc.code, 0, 'nbd-client -l with -cacertfile over TLS', { out: describe(nc), log: logTail(f.server) });
  t.match(nc.stdout, /disk/, 'nbd-client lists the export inside TLS');
  const ncPlain = await run('nbd-client', ['-l', '-u', f.server.socket], { timeoutMs: 30_000 });
  t.not(ncPlain.code, 0, 'nbd-client -l without TLS is refused by --tls require', { out: describe(ncPlain) });
  t.match(ncPlain.stdout + ncPlain.stderr, /requires TLS/, 'and is told that TLS is required');
  const ncBad = await run('nbd-client', ['-l', '-u', f.server.socket, '-cacertfile', pki.otherCaCert, '-tlshostname', 'localhost'], {
    timeoutMs: 30_000,
  });
  t.not(ncBad.code, 0, 'nbd-client -l trusting an unrelated CA is refused', { out: describe(ncBad) });
  t.notMatch(ncBad.stdout, /disk/, 'nbd-client with the wrong CA lists nothing');
});

/**
 * libnbd 1.14 (Debian 12) does not check the server certificate on a Unix socket at all (it has no
 * hostname to verify and no tls-hostname setting before 1.22), so server-certificate refusals are
 * checked with libnbd over loopback TCP (hostname "localhost" from the URI, in the SAN), with qemu-img
 * over the Unix socket (tls-hostname=localhost) and with nbd-client -l (-tlshostname localhost).
 */
async function serverCertRefused(t: Test, f: Fixture, what: string, clientDir: string, caFile: string): Promise<void> {
  const port = tcpPort(f);
  refused(t, await nbdinfoSize(`nbds://localhost:${port}/?tls-certificates=${clientDir}`), `${what} (libnbd, TCP)`, f);
  const q = await run(
    'qemu-img',
    [
      'info',
      '--object',
      `tls-creds-x509,id=tls0,dir=${clientDir},endpoint=client`,
      '--image-opts',
      `driver=nbd,path=${f.server.socket},tls-creds=tls0,tls-hostname=localhost`,
    ],
    { timeoutMs: 60_000 },
  );
  refused(t, q, `${what} (qemu-img, Unix socket)`, f);
  const nc = await run('nbd-client', ['-l', '-u', f.server.socket, '-cacertfile', caFile, '-tlshostname', 'localhost'], {
    timeoutMs: 30_000,
  });
  t.not(nc.code, 0, `${what} (nbd-client -l): refused`, { out: describe(nc) });
  t.notMatch(nc.stdout, /disk/, `${what} (nbd-client -l): nothing listed`);
}

t.test('wrong CA and expired server certificate are refused by the client', async (t) => {
  const good = await withServer(t, {
    sizeBytes: SIZE,
    extraArgs: [...tlsArgs('require', { certs: pki.server }), '--listen', '127.0.0.1:0'],
  });
  const port = tcpPort(good);
  const ok = await nbdinfoSize(`nbds://localhost:${port}/?tls-certificates=${pki.clientNoCert}`);
  t.equal(ok.code, 0, 'control: libnbd over TCP accepts the good certificate', { out: describe(ok), log: logTail(good.server) });
  t.equal(ok.stdout.trim(), String(SIZE), 'size over TLS');
  const ip = await nbdinfoSize(`nbds://127.0.0.1:${port}/?tls-certificates=${pki.clientNoCert}`);
  t.equal(ip.code, 0, 'control: the IP SAN 127.0.0.1 matches too', { out: describe(ip) });
  await serverCertRefused(t, good, 'client trusting only an unrelated CA', pki.clientWrongCa, pki.otherCaCert);

  const other = await withServer(t, {
    sizeBytes: SIZE,
    extraArgs: [...tlsArgs('require', { certs: pki.serverOther }), '--listen', '127.0.0.1:0'],
  });
  await serverCertRefused(t, other, 'server certificate from an unrelated CA', pki.clientNoCert, pki.caCert);

  const expired = await withServer(t, {
    sizeBytes: SIZE,
    extraArgs: [...tlsArgs('require', { certs: pki.serverExpired }), '--listen', '127.0.0.1:0'],
  });
  await serverCertRefused(t, expired, 'expired server certificate', pki.clientNoCert, pki.caCert);
  const r = await nbdinfoSize(`nbds://localhost:${tcpPort(expired)}/?tls-certificates=${pki.clientNoCert}`);
  t.match(r.stderr, /expire|verif|certificate/i, 'libnbd names the certificate problem', { out: describe(r) });
});

/** The TCP port the daemon bound for --listen 127.0.0.1:0 (from its "remapd serving" log line). */
function tcpPort(f: Fixture): number {
  const m = /"tcp:127\.0\.0\.1:(\d+)"/.exec(f.server.log());
  if (!m) throw new Error(`no TCP endpoint in the log\n${logTail(f.server)}`);
  return Number(m[1]);
}

t.test('--tls-verify-peer: client certificate required and checked against ca-cert.pem', async (t) => {
  const f = await withServer(t, { sizeBytes: SIZE, extraArgs: tlsArgs('require', { certs: pki.server, verifyPeer: true }) });
  const ok = await nbdinfoSize(tlsUri(f.server.socket, { certs: pki.client }));
  t.equal(ok.code, 0, 'good client certificate: works', { out: describe(ok), log: logTail(f.server) });
  t.equal(ok.stdout.trim(), String(SIZE), 'size read with a client certificate');
  refused(t, await nbdinfoSize(tlsUri(f.server.socket, { certs: pki.clientNoCert })), 'no client certificate', f);
  refused(t, await nbdinfoSize(tlsUri(f.server.socket, { certs: pki.clientBadCert })), 'client certificate from an unrelated CA', f);
  // Node client that presents the unrelated-CA certificate regardless of the server's CA list
  // (GnuTLS would just not send it), so the server's own chain check is exercised.
  const res = await nodeStartTls(f.server.socket, {
    ca: readPem(pki.caCert),
    servername: 'localhost',
    cert: readPem(join(pki.clientBadCert, 'client-cert.pem')),
    key: readPem(join(pki.clientBadCert, 'client-key.pem')),
  });
  t.not(res.outcome, 'options', 'Node client with a certificate from an unrelated CA gets no option haggling', { res });
  const good = await nodeStartTls(f.server.socket, {
    ca: readPem(pki.caCert),
    servername: 'localhost',
    cert: readPem(join(pki.client, 'client-cert.pem')),
    key: readPem(join(pki.client, 'client-key.pem')),
  });
  t.equal(good.outcome, 'options', 'control: the same Node client with the good certificate gets in', { good });
  t.match(f.server.log(), /certificate/i, 'the daemon logged the certificate failures');
});

t.test('TLS-PSK: right key works, wrong key and unknown identity refused', async (t) => {
  const f = await withServer(t, { sizeBytes: SIZE, extraArgs: tlsArgs('require', { psk: pki.pskFile }) });
  const ok = await nbdinfoSize(tlsUri(f.server.socket, { psk: pki.pskFile, user: pki.pskIdentity }));
  t.equal(ok.code, 0, 'right PSK: works', { out: describe(ok), log: logTail(f.server) });
  t.equal(ok.stdout.trim(), String(SIZE), 'size over TLS-PSK');
  const src = randomImage(join(f.dir, 'src.img'), 4 * MiB);
  const uri = tlsUri(f.server.socket, { psk: pki.pskFile, user: pki.pskIdentity });
  const w = await run('nbdcopy', ['--flush', src, uri], { timeoutMs: 60_000 });
  t.equal(w.code, 0, 'nbdcopy writes over TLS-PSK', { out: describe(w) });
  const cmp = await run('cmp', ['-n', String(4 * MiB), src, f.image]);
  t.equal(cmp.code, 0, 'the data reached the disk', { out: describe(cmp) });
  refused(t, await nbdinfoSize(tlsUri(f.server.socket, { psk: pki.pskWrongFile, user: pki.pskIdentity })), 'wrong PSK', f);
  // libnbd looks the username up in its own key file: give it a file that has "bob"
  const bobFile = join(f.dir, 'bob.keys');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(bobFile, 'bob:' + 'ab'.repeat(32) + '\n');
  refused(t, await nbdinfoSize(tlsUri(f.server.socket, { psk: bobFile, user: 'bob' })), 'unknown PSK identity', f);
  refused(t, await nbdinfoSize(tlsUri(f.server.socket, { certs: pki.clientNoCert })), 'certificate client against a PSK-only server', f);
});

t.test('--tls require refuses plaintext; --tls on accepts both', async (t) => {
  const req = await withServer(t, { sizeBytes: SIZE, extraArgs: tlsArgs('require', { certs: pki.server }) });
  const plain = await run('nbdinfo', [req.server.uri], { timeoutMs: 30_000 });
  t.not(plain.code, 0, 'plaintext nbdinfo against --tls require is refused', { out: describe(plain) });
  t.notMatch(plain.stdout, /export-size/, 'no export details in plaintext');
  const plainSize = await nbdinfoSize(req.server.uri);
  t.not(plainSize.code, 0, 'plaintext nbdinfo --size is refused', { out: describe(plainSize) });
  t.match(plainSize.stderr, /server requires TLS/i, 'nbdinfo reports that the server requires TLS');
  const plainCopy = await run('nbdcopy', [req.server.uri, join(req.dir, 'leak.img')], { timeoutMs: 30_000 });
  t.not(plainCopy.code, 0, 'plaintext nbdcopy read is refused', { out: describe(plainCopy) });
  const q = await run('qemu-img', ['info', req.server.uri], { timeoutMs: 30_000 });
  t.not(q.code, 0, 'plaintext qemu-img is refused', { out: describe(q) });
  // raw: every option but STARTTLS/ABORT gets ERR_TLS_REQD
  const s = await rawOpen(req.server.socket);
  s.sendOption(OPT.STRUCTURED_REPLY);
  t.equal((await s.optionReply()).type, REP.ERR_TLS_REQD, 'STRUCTURED_REPLY in plaintext: ERR_TLS_REQD');
  s.sendOption(OPT.GO, goPayload(''));
  t.equal((await s.optionReply()).type, REP.ERR_TLS_REQD, 'GO in plaintext: ERR_TLS_REQD');
  s.stream.destroy();

  const on = await withServer(t, { sizeBytes: SIZE, extraArgs: tlsArgs('on', { certs: pki.server }) });
  const p = await nbdinfoSize(on.server.uri);
  t.equal(p.code, 0, '--tls on: plaintext client served', { out: describe(p), log: logTail(on.server) });
  t.equal(p.stdout.trim(), String(SIZE), 'plaintext size');
  const e = await nbdinfoSize(tlsUri(on.server.socket, { certs: pki.clientNoCert }));
  t.equal(e.code, 0, '--tls on: TLS client served', { out: describe(e) });
  t.equal(e.stdout.trim(), String(SIZE), 'TLS size');
  const bad = await run(
    'qemu-img',
    [
      'info',
      '--object',
      `tls-creds-x509,id=tls0,dir=${pki.clientWrongCa},endpoint=client`,
      '--image-opts',
      `driver=nbd,path=${on.server.socket},tls-creds=tls0,tls-hostname=localhost`,
    ],
    { timeoutMs: 60_000 },
  );
  refused(t, bad, '--tls on: TLS client (qemu-img) with the wrong CA', on);
  const logLines = on.server
    .log()
    .split('\n')
    .filter((l) => l.includes('client connected'));
  t.ok(
    logLines.some((l) => l.includes('"tls":true')) && logLines.some((l) => l.includes('"tls":false')),
    'the log tells TLS and plaintext connections apart',
    { logLines },
  );
});

t.test('STARTTLS forgets what was negotiated in plaintext (structured replies, meta contexts)', async (t) => {
  const f = await withServer(t, { sizeBytes: SIZE, extraArgs: tlsArgs('on', { certs: pki.server }) });
  // control: in plaintext, SR then SET_META_CONTEXT works (so the refusal below is about the reset)
  const c = await rawOpen(f.server.socket);
  c.sendOption(OPT.STRUCTURED_REPLY);
  t.equal((await c.optionReply()).type, REP.ACK, 'plaintext: STRUCTURED_REPLY acked');
  c.sendOption(OPT.SET_META_CONTEXT, metaPayload('', ['base:allocation']));
  const ctl = await c.optionReplies();
  t.same(
    ctl.map((r) => r.type),
    [REP.META_CONTEXT, REP.ACK],
    'plaintext: SET_META_CONTEXT works after SR',
  );
  c.stream.destroy();

  const s = await rawOpen(f.server.socket);
  s.sendOption(OPT.STRUCTURED_REPLY);
  t.equal((await s.optionReply()).type, REP.ACK, 'STRUCTURED_REPLY acked in plaintext');
  s.sendOption(OPT.SET_META_CONTEXT, metaPayload('', ['base:allocation']));
  t.same(
    (await s.optionReplies()).map((r) => r.type),
    [REP.META_CONTEXT, REP.ACK],
    'meta context selected in plaintext',
  );
  s.sendOption(OPT.STARTTLS);
  const st = await s.optionReply();
  t.equal(st.type, REP.ACK, 'STARTTLS acked');
  const rest = s.detach();
  t.equal(rest.length, 0, 'nothing after the STARTTLS ACK in plaintext');
  const secure = tls.connect({ socket: s.stream as net.Socket, ca: readPem(pki.caCert), servername: 'localhost' });
  await new Promise<void>((res, rej) => {
    secure.once('secureConnect', res);
    secure.once('error', rej);
  });
  t.ok(secure.authorized, 'server certificate verified by Node');
  const r = new StreamReader(secure);
  r.sendOption(OPT.SET_META_CONTEXT, metaPayload('', ['base:allocation']));
  const m = await r.optionReplies();
  t.equal(
    m[m.length - 1].type,
    REP.ERR_INVALID,
    'SET_META_CONTEXT inside TLS before a new STRUCTURED_REPLY is refused (SR was forgotten)',
    { m },
  );
  t.notOk(
    m.some((x) => x.type === REP.META_CONTEXT),
    'no meta context granted',
  );
  r.sendOption(OPT.STARTTLS);
  t.equal((await r.optionReply()).type, REP.ERR_INVALID, 'a second STARTTLS is refused');
  r.sendOption(OPT.STRUCTURED_REPLY);
  t.equal((await r.optionReply()).type, REP.ACK, 'STRUCTURED_REPLY can be negotiated again inside TLS');
  r.sendOption(OPT.GO, goPayload(''));
  const go = await r.optionReplies();
  t.equal(go[go.length - 1].type, REP.ACK, 'GO inside TLS');
  secure.destroy();
  await waitFor(() => /"options":\["STRUCTURED_REPLY","SET_META_CONTEXT","STARTTLS"/.test(f.server.log()));
  const line =
    f.server
      .log()
      .split('\n')
      .find((l) => l.includes('"options":["STRUCTURED_REPLY","SET_META_CONTEXT","STARTTLS"')) ?? '';
  t.match(line, /"metaContexts":\[\]/, 'the session has no meta context from plaintext');
  t.match(line, /"tls":true/, 'the session is logged as TLS');
});

t.test('old TLS versions are refused (TLS 1.2 minimum)', async (t) => {
  const f = await withServer(t, { sizeBytes: SIZE, extraArgs: tlsArgs('require', { certs: pki.server }) });
  // SECLEVEL=0 lets this OpenSSL 3.0 client actually offer TLS 1.0/1.1, so it is the server that refuses
  const old = await nodeStartTls(f.server.socket, {
    ca: readPem(pki.caCert),
    servername: 'localhost',
    minVersion: 'TLSv1',
    maxVersion: 'TLSv1.1',
    ciphers: 'DEFAULT@SECLEVEL=0',
  });
  t.not(old.outcome, 'options', 'TLS 1.1 client gets no option haggling', { old });
  t.match(old.error ?? '', /protocol|version|alert/i, 'refused because of the protocol version', { old });
  const v12 = await nodeStartTls(f.server.socket, {
    ca: readPem(pki.caCert),
    servername: 'localhost',
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.2',
    ciphers: 'DEFAULT@SECLEVEL=0',
  });
  t.equal(v12.outcome, 'options', 'control: the same client with TLS 1.2 gets in', { v12 });
  t.equal(v12.protocol, 'TLSv1.2', 'negotiated TLS 1.2');
  const v13 = await nodeStartTls(f.server.socket, { ca: readPem(pki.caCert), servername: 'localhost' });
  t.equal(v13.protocol, 'TLSv1.3', 'a default client gets TLS 1.3');
});

// ------------------------------------------------------------------ raw helpers

async function rawOpen(socket: string): Promise<StreamReader> {
  const sock = net.connect(socket);
  await new Promise<void>((res, rej) => {
    sock.once('connect', res);
    sock.once('error', rej);
  });
  const r = new StreamReader(sock);
  const g = await r.read(18);
  if (g.subarray(0, 16).toString('latin1') !== 'NBDMAGICIHAVEOPT') throw new Error(`bad greeting ${g.toString('hex')}`);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(g.readUInt16BE(16) & 3);
  r.write(flags);
  return r;
}

function goPayload(name: string): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(6 + n.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  return b;
}

function metaPayload(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v);
    return b;
  };
  parts.push(u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length));
  for (const q of queries) parts.push(u32(Buffer.byteLength(q)), Buffer.from(q));
  return Buffer.concat(parts);
}

async function waitFor(cond: () => boolean, ms = 60_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

interface StartTlsResult {
  outcome: 'options' | 'tls-failed' | 'closed';
  protocol?: string | null;
  error?: string;
}

/** Plaintext greeting + STARTTLS, then Node's tls.connect over the same socket, then one GO inside TLS. */
async function nodeStartTls(socket: string, o: tls.ConnectionOptions): Promise<StartTlsResult> {
  const s = await rawOpen(socket);
  s.sendOption(OPT.STARTTLS);
  const ack = await s.optionReply();
  if (ack.type !== REP.ACK) throw new Error(`STARTTLS not acked: ${ack.type.toString(16)}`);
  s.detach();
  const secure = tls.connect({ ...o, socket: s.stream as net.Socket });
  try {
    await new Promise<void>((res, rej) => {
      secure.once('secureConnect', res);
      secure.once('error', rej);
      secure.once('close', () => rej(new Error('closed during the TLS handshake')));
    });
  } catch (err) {
    secure.destroy();
    return { outcome: 'tls-failed', error: (err as Error).message };
  }
  const protocol = secure.getProtocol();
  // TLS 1.3: a refused client certificate only shows after the handshake, on the first read
  const r = new StreamReader(secure);
  try {
    r.sendOption(OPT.GO, goPayload(''));
    const go = await r.optionReplies();
    secure.destroy();
    return go[go.length - 1].type === REP.ACK
      ? { outcome: 'options', protocol }
      : { outcome: 'closed', protocol, error: `GO: ${go[go.length - 1].type.toString(16)}` };
  } catch (err) {
    secure.destroy();
    return { outcome: 'closed', protocol, error: (err as Error).message };
  }
}

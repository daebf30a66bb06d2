/**
 * Throwaway PKI for the TLS e2e tests, made with the openssl CLI in a temp dir (nothing is reused
 * between runs). Directories follow nbdkit's/libnbd's layout so they can be passed as they are to
 * `remapd serve --tls-certificates DIR` and to libnbd's `tls-certificates=DIR`:
 *
 *   server/         ca-cert.pem server-cert.pem server-key.pem            (good server, SAN localhost,127.0.0.1)
 *   server-expired/ ca-cert.pem server-cert.pem server-key.pem            (same CA, validity in 2020)
 *   server-other/   ca-cert.pem server-cert.pem server-key.pem            (signed by the unrelated CA)
 *   client/         ca-cert.pem client-cert.pem client-key.pem            (good client cert)
 *   client-nocert/  ca-cert.pem                                           (trusts the CA, no client cert)
 *   client-wrongca/ ca-cert.pem = the unrelated CA                        (does not trust the server)
 *   client-badcert/ ca-cert.pem client-cert.pem client-key.pem            (trusts the CA; cert from the unrelated CA)
 *   psk.keys        "alice:<hex>"   psk-wrong.keys "alice:<other hex>"   (psktool format)
 *
 * Expired certificate: OpenSSL 3.0's `x509 -req` has no -not_before/-not_after (3.4+) and -days cannot be
 * negative, so it is issued with `openssl ca -startdate 20200101000000Z -enddate 20200102000000Z`.
 */
import { mkdirSync, writeFileSync, copyFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { run, describe } from './exec';
import { ByteStream } from './byte-stream';

export interface Pki {
  root: string;
  caCert: string;
  otherCaCert: string;
  server: string;
  serverExpired: string;
  serverOther: string;
  client: string;
  clientNoCert: string;
  clientWrongCa: string;
  clientBadCert: string;
  pskIdentity: string;
  pskFile: string;
  pskWrongFile: string;
}

async function ssl(args: string[], cwd: string): Promise<void> {
  const r = await run('openssl', args, { cwd, timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`openssl failed\n${describe(r)}`);
}

const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function makeCa(dir: string, name: string, cn: string): Promise<void> {
  await ssl(
    [
      'req',
      '-x509',
      ...KEY,
      '-keyout',
      `${name}-key.pem`,
      '-out',
      `${name}-cert.pem`,
      '-days',
      '3',
      '-subj',
      `/CN=${cn}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
}

async function makeLeaf(dir: string, name: string, ca: string, cn: string, ext: string): Promise<void> {
  writeFileSync(join(dir, `${name}.ext`), ext);
  await ssl(['req', '-new', ...KEY, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
  await ssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${ca}-cert.pem`,
      '-CAkey',
      `${ca}-key.pem`,
      '-set_serial',
      '0x' + randomBytes(8).toString('hex'),
      '-days',
      '3',
      '-out',
      `${name}-cert.pem`,
      '-extfile',
      `${name}.ext`,
    ],
    dir,
  );
}

const SERVER_EXT =
  'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n';
const CLIENT_EXT = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n';

function layout(root: string, name: string, files: Record<string, string>): string {
  const d = join(root, name);
  mkdirSync(d, { recursive: true });
  for (const [to, from] of Object.entries(files)) copyFileSync(join(root, 'work', from), join(d, to));
  return d;
}

/** Build the whole PKI under `root` (which must exist). Takes well under a second with EC keys. */
export async function makePki(root: string): Promise<Pki> {
  const w = join(root, 'work');
  mkdirSync(w, { recursive: true });
  await makeCa(w, 'ca', 'remapd test CA');
  await makeCa(w, 'ca2', 'unrelated test CA');
  await makeLeaf(w, 'server', 'ca', 'localhost', SERVER_EXT);
  await makeLeaf(w, 'server2', 'ca2', 'localhost', SERVER_EXT);
  await makeLeaf(w, 'client', 'ca', 'remapd test client', CLIENT_EXT);
  await makeLeaf(w, 'client2', 'ca2', 'remapd test client', CLIENT_EXT);
  // expired server certificate, same key and CA as the good one
  mkdirSync(join(w, 'newcerts'));
  writeFileSync(join(w, 'index.txt'), '');
  writeFileSync(join(w, 'serial'), randomBytes(8).toString('hex') + '\n');
  writeFileSync(
    join(w, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = testca',
      '[testca]',
      `dir = ${w}`,
      'database = $dir/index.txt',
      'new_certs_dir = $dir/newcerts',
      'serial = $dir/serial',
      'certificate = $dir/ca-cert.pem',
      'private_key = $dir/ca-key.pem',
      'default_md = sha256',
      'policy = anything',
      'unique_subject = no',
      'copy_extensions = none',
      '[anything]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );
  await ssl(
    [
      'ca',
      '-batch',
      '-notext',
      '-config',
      'ca.cnf',
      '-startdate',
      '20200101000000Z',
      '-enddate',
      '20200102000000Z',
      '-in',
      'server.csr',
      '-out',
      'expired-cert.pem',
      '-extfile',
      'server.ext',
    ],
    w,
  );

  const pskIdentity = 'alice';
  const pskFile = join(root, 'psk.keys');
  const pskWrongFile = join(root, 'psk-wrong.keys');
  writeFileSync(pskFile, `${pskIdentity}:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  writeFileSync(pskWrongFile, `${pskIdentity}:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });

  return {
    root,
    caCert: join(w, 'ca-cert.pem'),
    otherCaCert: join(w, 'ca2-cert.pem'),
    server: layout(root, 'server', {
      'ca-cert.pem': 'ca-cert.pem',
      'server-cert.pem': 'server-cert.pem',
      'server-key.pem': 'server-key.pem',
    }),
    serverExpired: layout(root, 'server-expired', {
      'ca-cert.pem': 'ca-cert.pem',
      'server-cert.pem': 'expired-cert.pem',
      'server-key.pem': 'server-key.pem',
    }),
    serverOther: layout(root, 'server-other', {
      'ca-cert.pem': 'ca2-cert.pem',
      'server-cert.pem': 'server2-cert.pem',
      'server-key.pem': 'server2-key.pem',
    }),
    client: layout(root, 'client', {
      'ca-cert.pem': 'ca-cert.pem',
      'client-cert.pem': 'client-cert.pem',
      'client-key.pem': 'client-key.pem',
    }),
    clientNoCert: layout(root, 'client-nocert', { 'ca-cert.pem': 'ca-cert.pem' }),
    clientWrongCa: layout(root, 'client-wrongca', { 'ca-cert.pem': 'ca2-cert.pem' }),
    clientBadCert: layout(root, 'client-badcert', {
      'ca-cert.pem': 'ca-cert.pem',
      'client-cert.pem': 'client2-cert.pem',
      'client-key.pem': 'client2-key.pem',
    }),
    pskIdentity,
    pskFile,
    pskWrongFile,
  };
}

/** libnbd URI for a TLS connection over a Unix socket. */
export function tlsUri(socket: string, o: { certs?: string; psk?: string; user?: string; exportName?: string }): string {
  const q = [`socket=${socket}`];
  if (o.certs) q.push(`tls-certificates=${o.certs}`);
  if (o.psk) q.push(`tls-psk-file=${o.psk}`);
  return `nbds+unix://${o.user ? `${o.user}@` : ''}/${encodeURIComponent(o.exportName ?? '')}?${q.join('&')}`;
}

export function readPem(path: string): Buffer {
  return readFileSync(path);
}

/** Exact-length reads from any stream (net.Socket before STARTTLS, TLSSocket after), plus option helpers. */
export class StreamReader extends ByteStream {
  write(b: Buffer): void {
    this.stream.write(b);
  }

  sendOption(opt: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(opt >>> 0, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ opt: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== 0x0003e889045565a9n) throw new Error(`bad option reply magic ${h.toString('hex')}`);
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(h.readUInt32BE(16)) };
  }

  /** Read replies until ACK or an error reply; returns all of them. */
  async optionReplies(): Promise<{ opt: number; type: number; data: Buffer }[]> {
    const all = [];
    for (;;) {
      const r = await this.optionReply();
      all.push(r);
      if (r.type === 1 || (r.type & 0x80000000) !== 0) return all;
    }
  }
}

/** VmRSS of a process in bytes (Linux /proc). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

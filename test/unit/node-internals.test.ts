/**
 * protocol/node-internals.ts: the private Node internals remapd relies on still exist and behave. When a
 * Node upgrade breaks this test, fix node-internals.ts (large reads fall back to 'data' chunks, and
 * STARTTLS with --tls-verify-peer refuses every client, until then).
 */
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tlsPeerVerifyError, useUserBufferReads } from '../../protocol/node-internals';

t.test('user-buffer reads on a server-accepted socket', async (t) => {
  const got: Buffer[] = [];
  let dataEvents = 0;
  let buffers = 0;
  let switched: boolean | undefined;
  const done = new Promise<void>((resolve) => {
    const server = net.createServer((s) => {
      s.on('data', () => dataEvents++);
      s.on('end', () => {
        s.destroy();
        server.close();
        resolve();
      });
      const slab = Buffer.alloc(64 * 1024);
      switched = useUserBufferReads(s, {
        next: () => (buffers++, slab),
        filled: (n, buf) => void got.push(Buffer.from(buf.subarray(0, n))),
      });
      s.write('k'); // switched: the client may send now
    });
    server.listen(0, '127.0.0.1', () => {
      const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      c.once('data', () => c.end(Buffer.alloc(100_000, 0x5a)));
      c.on('error', () => undefined);
    });
  });
  await done;
  t.equal(switched, true, 'kBuffer/kBufferCb/kBufferGen and _handle.useUserBuffer exist (Node internals unchanged)');
  const all = Buffer.concat(got);
  t.equal(all.length, 100_000, 'every byte arrived through the callback');
  t.ok(
    all.every((b) => b === 0x5a),
    'the bytes are right',
  );
  t.equal(dataEvents, 0, "no 'data' events: the socket really reads into our buffers");
  t.ok(buffers >= 2, 'the generator supplies the next buffers');
});

function selfSigned(dir: string, name: string): { key: Buffer; cert: Buffer } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  return { key: readFileSync(key), cert: readFileSync(cert) };
}

/** A hand-made server-side TLSSocket (as STARTTLS makes one) trusting `trusted`; the client presents `client`. */
async function verifyResult(
  server: { key: Buffer; cert: Buffer },
  trusted: Buffer,
  client?: { key: Buffer; cert: Buffer },
): Promise<Error | null | 'threw'> {
  return new Promise((resolve, reject) => {
    const listener = net.createServer((raw) => {
      const secure = new tls.TLSSocket(raw, {
        isServer: true,
        secureContext: tls.createSecureContext({ key: server.key, cert: server.cert, ca: trusted }),
        requestCert: true,
        rejectUnauthorized: true,
      });
      secure.on('error', () => undefined);
      secure.once('secure', () => {
        let r: Error | null | 'threw';
        try {
          r = tlsPeerVerifyError(secure);
        } catch {
          r = 'threw';
        }
        secure.destroy();
        listener.close();
        resolve(r);
      });
    });
    listener.listen(0, '127.0.0.1', () => {
      const c = tls.connect({
        port: (listener.address() as net.AddressInfo).port,
        host: '127.0.0.1',
        rejectUnauthorized: false,
        ...(client ? { key: client.key, cert: client.cert } : {}),
      });
      c.on('error', () => undefined);
      c.on('secureConnect', () => setTimeout(() => c.destroy(), 100));
    });
    setTimeout(() => reject(new Error('TLS handshake did not finish')), 60_000).unref();
  });
}

t.test('TLSSocket._handle.verifyError on a hand-made server socket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'node-internals-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const server = selfSigned(dir, 'server');
  const good = selfSigned(dir, 'good');
  const other = selfSigned(dir, 'other');
  const ok = await verifyResult(server, good.cert, good);
  t.equal(ok, null, 'a trusted client certificate verifies (null)');
  const bad = await verifyResult(server, good.cert, other);
  t.not(bad, 'threw', '_handle.verifyError exists (Node internals unchanged)');
  t.ok(
    bad instanceof Error && typeof (bad as NodeJS.ErrnoException).code === 'string',
    'an untrusted certificate gives an Error with a code',
    { bad: String(bad) },
  );
});

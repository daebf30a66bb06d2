/**
 * TLS settings from the command line, in nbdkit's conventions:
 *   --tls-certificates DIR   ca-cert.pem, server-cert.pem, server-key.pem
 *   --tls-verify-peer        require a client certificate signed by ca-cert.pem
 *   --tls-psk FILE           TLS-PSK keys, one "identity:hexkey" per line (the psktool format)
 * TLS 1.2 is the minimum. With PSK only, the cipher list is restricted to PSK suites.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import type { TlsServerSettings } from '../protocol/connection';
import type { TlsMode } from '../protocol/handshake';

export class TlsConfigError extends Error {}

export interface TlsFlags {
  readonly mode: TlsMode;
  readonly certificates?: string;
  readonly verifyPeer?: boolean;
  readonly psk?: string;
}

/** Parse a PSK file: "identity:hexkey" lines; blank lines and # comments ignored. */
export function parsePskFile(text: string, source: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new TlsConfigError(`${source}:${i + 1}: expected identity:hexkey`);
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new TlsConfigError(`${source}:${i + 1}: the key of '${identity}' is not hexadecimal`);
    keys.set(identity, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new TlsConfigError(`${source}: no keys`);
  return keys;
}

function readPem(dir: string, name: string, required: boolean): Buffer | undefined {
  const path = join(dir, name);
  try {
    return readFileSync(path);
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TlsConfigError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function loadTlsSettings(f: TlsFlags): TlsServerSettings | undefined {
  if (f.mode === 'off') {
    if (f.certificates || f.psk)
      throw new TlsConfigError('--tls-certificates/--tls-psk given but --tls is off; use --tls on or --tls require');
    return undefined;
  }
  if (!f.certificates && !f.psk) throw new TlsConfigError(`--tls ${f.mode} needs --tls-certificates DIR or --tls-psk FILE`);
  const opts: SecureContextOptions = { minVersion: 'TLSv1.2' };
  let pskCallback: TlsServerSettings['pskCallback'];
  if (f.certificates) {
    try {
      if (!statSync(f.certificates).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new TlsConfigError(`--tls-certificates ${f.certificates}: ${(err as Error).message}`);
    }
    opts.cert = readPem(f.certificates, 'server-cert.pem', true);
    opts.key = readPem(f.certificates, 'server-key.pem', true);
    const ca = readPem(f.certificates, 'ca-cert.pem', !!f.verifyPeer);
    if (ca) opts.ca = ca;
  } else if (f.verifyPeer) {
    throw new TlsConfigError('--tls-verify-peer needs --tls-certificates DIR (with ca-cert.pem)');
  }
  if (f.psk) {
    let text: string;
    try {
      text = readFileSync(f.psk, 'utf8');
    } catch (err) {
      throw new TlsConfigError(`--tls-psk ${f.psk}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const keys = parsePskFile(text, f.psk);
    pskCallback = (_socket, identity) => keys.get(identity) ?? null;
    if (!f.certificates) {
      // PSK without certificates: only PSK suites, and TLS 1.2 (Node's PSK support is for TLS 1.2).
      opts.ciphers =
        'PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256';
      opts.maxVersion = 'TLSv1.2';
    }
  }
  let secureContext;
  try {
    secureContext = createSecureContext(opts);
  } catch (err) {
    throw new TlsConfigError(`TLS setup failed: ${(err as Error).message}`);
  }
  return { mode: f.mode, secureContext, verifyPeer: !!f.verifyPeer, pskCallback };
}

/**
 * NBD_OPT_STARTTLS: the plain socket of a connection in option haggling becomes a server-side
 * TLSSocket. Bytes the client sent early (its ClientHello, read together with the STARTTLS option)
 * are handed back to the TLS layer. A hand-made TLSSocket never rejects a bad peer certificate by
 * itself, so the result of OpenSSL's verification is checked here once the handshake is done.
 */
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { TlsMode } from './handshake';
import { tlsPeerVerifyError } from './node-internals';

/** What a connection needs to run STARTTLS. */
export interface TlsServerSettings {
  readonly mode: TlsMode;
  readonly secureContext: SecureContext;
  /** Ask for and verify a client certificate against the CA. */
  readonly verifyPeer: boolean;
  /** TLS-PSK: the key for an identity, or null to refuse it. */
  readonly pskCallback?: (socket: TLSSocket, identity: string) => Buffer | null;
}

export interface TlsOutcome {
  /** The TLS handshake is done and the peer acceptable: continue option haggling inside TLS. */
  established(secure: TLSSocket): void;
  /** The peer certificate was refused (the reason is for the log). */
  rejected(reason: string): void;
}

/**
 * Start the server side of TLS on `raw` (its listeners already removed), after pushing back `early`.
 * Returns the TLSSocket at once, so the caller can listen to it (errors, close) during the handshake.
 */
export function startTls(raw: Socket, early: Buffer, tls: TlsServerSettings, outcome: TlsOutcome): TLSSocket {
  if (early.length) raw.unshift(early);
  const secure = new TLSSocket(raw, {
    isServer: true,
    secureContext: tls.secureContext,
    requestCert: tls.verifyPeer,
    rejectUnauthorized: tls.verifyPeer,
    ...(tls.pskCallback ? { pskCallback: tls.pskCallback } : {}),
  } as ConstructorParameters<typeof TLSSocket>[1]);
  secure.once('secure', () => {
    if (tls.verifyPeer) {
      let verifyError: Error | null;
      try {
        verifyError = tlsPeerVerifyError(secure);
      } catch (err) {
        outcome.rejected((err as Error).message); // fail closed
        return;
      }
      if (verifyError || !secure.getPeerCertificate()) {
        outcome.rejected(
          `client certificate rejected: ${(verifyError as NodeJS.ErrnoException | null)?.code ?? verifyError?.message ?? 'none presented'}`,
        );
        return;
      }
    }
    outcome.established(secure);
  });
  return secure;
}

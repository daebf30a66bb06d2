/**
 * The only place remapd touches private Node internals; test/unit/node-internals.test.ts fails loudly
 * when a Node upgrade changes them.
 *
 * - User-buffer reads (`onread` of net.Socket, which a server-accepted socket cannot be given at
 *   construction): the `kBuffer`/`kBufferCb`/`kBufferGen` symbol fields of the socket and
 *   `_handle.useUserBuffer`. libuv then reads into buffers we choose, with no 'data' event per chunk.
 *   When a piece is missing the socket is left as it is (Node's default 64 KiB 'data' chunks): slower,
 *   never wrong.
 * - `_handle.verifyError()` of a TLSSocket: a TLSSocket made by hand for STARTTLS (not by tls.Server)
 *   never checks the peer certificate by itself. When it is missing, verification fails closed.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface UserBufferReads {
  /** The buffer libuv reads into next. */
  next(): Buffer;
  /** `nread` bytes were read into `buf` (the buffer next() returned). */
  filled(nread: number, buf: Buffer): void;
}

/** Switch `socket` to user-buffer reads; false (socket unchanged) when Node lacks a piece of it. */
export function useUserBufferReads(socket: Socket, reads: UserBufferReads): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') return false;
  const syms = Object.getOwnPropertySymbols(socket);
  const kBuffer = syms.find((x) => x.description === 'kBuffer');
  const kBufferCb = syms.find((x) => x.description === 'kBufferCb');
  const kBufferGen = syms.find((x) => x.description === 'kBufferGen');
  if (!kBuffer || !kBufferCb || !kBufferGen) return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  if (fields[kBuffer] || fields[kBufferCb]) return false; // already in user-buffer mode
  const first = reads.next();
  fields[kBufferCb] = (nread: number, buf: Buffer): void => reads.filled(nread, buf);
  fields[kBufferGen] = (): Buffer => reads.next();
  fields[kBuffer] = first;
  handle.useUserBuffer(first);
  return true;
}

/** Thrown by tlsPeerVerifyError when Node no longer has the internal it reads. */
export class NodeInternalsChanged extends Error {}

/**
 * The result of OpenSSL's verification of the peer certificate on a server-side TLSSocket, after
 * 'secure': null when it verified, else the error (its `code` names the reason).
 */
export function tlsPeerVerifyError(socket: TLSSocket): Error | null {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => Error | null } })._handle;
  if (!handle || typeof handle.verifyError !== 'function') {
    throw new NodeInternalsChanged('TLSSocket._handle.verifyError() is gone: cannot verify the client certificate');
  }
  return handle.verifyError();
}

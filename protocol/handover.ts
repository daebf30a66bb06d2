/**
 * Planned-restart hand-over of established NBD connections, protocol side: what a connection's
 * negotiated state is on the wire between two processes, how a socket stops being read at a request
 * boundary, and how an adopted socket gets its session back.
 *
 * The old process stops reading each connection, lets the requests it already received finish, and
 * gives up the socket with the bytes it had received but not yet parsed (`pending`, from a request
 * boundary on). The next process rebuilds the session from a `HandedOverSession` record (checked against
 * its own export: same name, size and transmission flags, else the connection is closed so the client
 * reconnects) and feeds `pending` to a fresh parser. The client sees a pause, never a reconnect.
 *
 * TLS connections cannot be handed over: the TLS session state lives inside this process's OpenSSL
 * objects. They are closed instead; their clients reconnect.
 */
import type { Socket } from 'node:net';
import type { ExportCatalog } from './block-device';
import { transmissionFlagsFor, type Session } from './handshake';

/** A connection given up by Connection.detachForHandover(). */
export interface DetachedConnection {
  readonly socket: Socket;
  readonly session: Session;
  /** Bytes received but not parsed, starting at a request boundary. */
  readonly pending: Buffer;
}

/** The negotiated state of one connection, as JSON between processes. */
export interface HandedOverSession {
  readonly export: string;
  readonly size: number;
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  readonly metaContexts: readonly (readonly [number, string])[];
  /** base64 */
  readonly pending: string;
}

export function sessionRecord(d: DetachedConnection): HandedOverSession {
  return {
    export: d.session.export.name,
    size: d.session.export.device.size,
    transmissionFlags: d.session.transmissionFlags,
    structuredReplies: d.session.structuredReplies,
    metaContexts: [...d.session.metaContexts.entries()],
    pending: d.pending.toString('base64'),
  };
}

/**
 * The session a handed-over connection continues with, or a string saying why it cannot continue
 * here (the export changed under the client: another name, size or set of transmission flags).
 */
export function restoreSession(rec: HandedOverSession, catalog: ExportCatalog): { session: Session; pending: Buffer } | string {
  if (typeof rec !== 'object' || rec === null || typeof rec.export !== 'string') return 'malformed session record';
  const entry = catalog.lookup(rec.export);
  if (!entry) return `export '${rec.export}' is not served any more`;
  if (entry.device.size !== rec.size) return `export size changed from ${rec.size} to ${entry.device.size}`;
  const structured = rec.structuredReplies === true;
  const flags = transmissionFlagsFor(entry, structured);
  if (flags !== rec.transmissionFlags) {
    return `transmission flags changed from 0x${Number(rec.transmissionFlags).toString(16)} to 0x${flags.toString(16)}`;
  }
  const metaContexts = new Map<number, string>(
    Array.isArray(rec.metaContexts) ? rec.metaContexts.map(([id, name]) => [Number(id), String(name)]) : [],
  );
  return {
    session: { export: entry, structuredReplies: structured, metaContexts, transmissionFlags: flags, options: ['(handed over)'] },
    pending: Buffer.from(typeof rec.pending === 'string' ? rec.pending : '', 'base64'),
  };
}

type Internals = Record<string | symbol, unknown> & {
  _handle?: { reading?: boolean; readStop?: () => number; fd?: number };
  _read?: () => void;
};

/**
 * Stop reading from the kernel for good; bytes Node had already buffered are delivered to the 'data'
 * listener. Whatever the client sends from now on stays in the socket for the next process.
 */
export function stopSocketReads(socket: Socket): void {
  const s = socket as unknown as Internals;
  const kBuffer = Object.getOwnPropertySymbols(s).find((x) => x.description === 'kBuffer');
  const userBuffer = kBuffer !== undefined && s[kBuffer];
  s._read = () => undefined;
  if (s._handle?.reading) {
    s._handle.reading = false;
    s._handle.readStop?.();
  }
  // In user-buffer mode nothing is buffered in the stream (and resume() would start reading again).
  if (!userBuffer && socket.readableLength > 0) socket.resume();
}

/** The file descriptor under a socket or listening server (-1 when there is none). */
export function fdOf(handleOwner: object): number {
  const fd = (handleOwner as Internals)._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

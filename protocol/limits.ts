/** The per-connection limits: the window of work in flight and the handshake deadline. */

export interface ConnectionLimits {
  /** Requests executing at once before reading pauses (the kernel sends at most 128). */
  readonly maxInFlight: number;
  /** Bytes of request payloads plus replies in flight before reading pauses. */
  readonly maxOutstandingBytes: number;
  /** A client that has not finished the handshake by then is dropped. */
  readonly handshakeTimeoutMs: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  maxInFlight: 128,
  maxOutstandingBytes: 64 * 1024 * 1024,
  handshakeTimeoutMs: 30_000,
};

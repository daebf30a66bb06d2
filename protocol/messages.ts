/**
 * Typed messages of the NBD protocol, in both directions. The parser (client → server bytes) produces
 * ClientMessage values; the serializer turns server replies into bytes. Offsets and lengths are bytes.
 */

/** The 64-bit cookie, kept as two 32-bit halves (it is opaque: only echoed). */
export interface Cookie {
  readonly hi: number;
  readonly lo: number;
}

/** The client's 32-bit flags, sent once after the greeting. */
export interface ClientFlagsMessage {
  readonly kind: 'clientFlags';
  readonly flags: number;
}

/** One option request during haggling. */
export interface OptionMessage {
  readonly kind: 'option';
  readonly option: number;
  readonly data: Buffer;
}

/** An option whose payload was larger than we buffer; its bytes are skipped. */
export interface OversizedOptionMessage {
  readonly kind: 'oversizedOption';
  readonly option: number;
  readonly length: number;
}

/** A transmission-phase request (compact 28-byte header), with its payload for WRITE. */
export interface RequestMessage {
  readonly kind: 'request';
  readonly flags: number;
  readonly type: number;
  readonly cookieHi: number;
  readonly cookieLo: number;
  /** Byte offset. Values above 2^53 are approximate but always larger than any export. */
  readonly offset: number;
  readonly length: number;
  /** WRITE payload; undefined for every other command. */
  readonly payload: Buffer | undefined;
  /** Give the payload's buffer back to the pool once the request is finished with it. */
  readonly release: (() => void) | undefined;
}

/** A byte stream that no longer follows the protocol: the connection must be dropped. */
export interface ProtocolViolation {
  readonly kind: 'violation';
  readonly reason: string;
}

export type ClientMessage = ClientFlagsMessage | OptionMessage | OversizedOptionMessage | RequestMessage | ProtocolViolation;

/** Parsed NBD_OPT_INFO / NBD_OPT_GO payload. */
export interface InfoRequest {
  readonly name: string;
  readonly infos: number[];
}

/** Parsed NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload. */
export interface MetaContextRequest {
  readonly exportName: string;
  readonly queries: string[];
}

/** A base:allocation (or other context) descriptor in a BLOCK_STATUS reply. */
export interface StatusDescriptor {
  readonly length: number;
  readonly flags: number;
}

/**
 * Option haggling, as a synchronous state machine with no socket: feed it each option request, get
 * back the bytes to send and what happens next. One instance per connection.
 */
import { BASE_ALLOCATION, ClientFlag, HandshakeFlag, Info, MAX_OPTIONS, MAX_PAYLOAD, Opt, Rep, TxFlag } from './constants';
import type { ExportCatalog, ExportEntry } from './block-device';
import type { OptionMessage } from './messages';
import { decodeInfoRequest, decodeMetaContextRequest } from './option-payloads';
import {
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoText,
  encodeMetaContext,
  encodeOptionError,
  encodeOptionReply,
  encodeServerEntry,
} from './serializer';

/** Context id we give base:allocation when a client selects it. */
export const BASE_ALLOCATION_ID = 1;

export const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES;

/** What the connection does after an option. */
export type HandshakeStep =
  | { readonly next: 'continue'; readonly send: Buffer[] }
  /** Send, then switch to transmission with this export. */
  | { readonly next: 'transmission'; readonly send: Buffer[]; readonly session: Session }
  /** Send the ACK, then run the TLS handshake on the socket (NBD_OPT_STARTTLS). */
  | { readonly next: 'starttls'; readonly send: Buffer[] }
  /** Send, then close politely (NBD_OPT_ABORT). */
  | { readonly next: 'abort'; readonly send: Buffer[] }
  /** Close without a reply (the protocol leaves no other choice). */
  | { readonly next: 'drop'; readonly send: Buffer[]; readonly reason: string };

/** What was agreed for the transmission phase. */
export interface Session {
  readonly export: ExportEntry;
  readonly structuredReplies: boolean;
  /** Selected meta contexts for this export (id → name). */
  readonly metaContexts: ReadonlyMap<number, string>;
  readonly transmissionFlags: number;
  /** Names of the options the client sent, in order, for the connection log line. */
  readonly options: readonly string[];
}

/** off: STARTTLS refused. on: TLS offered, plaintext allowed. require: nothing but STARTTLS/ABORT without TLS. */
export type TlsMode = 'off' | 'on' | 'require';

export interface HandshakeOptions {
  /** When true, every option is answered ERR_SHUTDOWN (the server is stopping). */
  readonly shuttingDown: () => boolean;
  readonly tls?: TlsMode;
}

const OPTION_NAMES: Record<number, string> = {
  1: 'EXPORT_NAME',
  2: 'ABORT',
  3: 'LIST',
  4: 'PEEK_EXPORT',
  5: 'STARTTLS',
  6: 'INFO',
  7: 'GO',
  8: 'STRUCTURED_REPLY',
  9: 'LIST_META_CONTEXT',
  10: 'SET_META_CONTEXT',
  11: 'EXTENDED_HEADERS',
};

export function optionName(option: number): string {
  return OPTION_NAMES[option] ?? `OPT_${option}`;
}

/** Transmission flags for an export, derived from what its device can do. */
export function transmissionFlagsFor(entry: ExportEntry, structuredReplies: boolean): number {
  const caps = entry.device.capabilities;
  const writable = caps.writable && !entry.readOnly;
  let f = TxFlag.HAS_FLAGS;
  if (!writable) f |= TxFlag.READ_ONLY;
  if (caps.flush) f |= TxFlag.SEND_FLUSH;
  if (caps.fua !== 'none') f |= TxFlag.SEND_FUA;
  if (caps.rotational) f |= TxFlag.ROTATIONAL;
  if (writable && caps.trim) f |= TxFlag.SEND_TRIM;
  if (writable && caps.zero) {
    f |= TxFlag.SEND_WRITE_ZEROES;
    if (caps.fastZero) f |= TxFlag.SEND_FAST_ZERO;
  }
  if (structuredReplies) f |= TxFlag.SEND_DF;
  if (caps.multiConn) f |= TxFlag.CAN_MULTI_CONN;
  if (caps.cache) f |= TxFlag.SEND_CACHE;
  return f;
}

export class Handshake {
  private clientFlags = 0;
  private structured = false;
  /** Meta contexts chosen by SET_META_CONTEXT, and for which export name. */
  private metaContexts = new Map<number, string>();
  private metaContextExport: string | undefined;
  private optionCount = 0;
  private readonly seen: string[] = [];
  private tlsActive = false;

  constructor(
    private readonly catalog: ExportCatalog,
    private readonly opts: HandshakeOptions,
  ) {}

  /** Validate the client flags; undefined when acceptable, else the reason to drop. */
  acceptClientFlags(flags: number): string | undefined {
    const known = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
    if ((flags & ~known) !== 0) return `unknown client flags 0x${flags.toString(16)}`;
    this.clientFlags = flags;
    return undefined;
  }

  /** TLS is now up: forget everything negotiated in plaintext, as the spec requires. */
  tlsEstablished(): void {
    this.tlsActive = true;
    this.structured = false;
    this.metaContexts = new Map();
    this.metaContextExport = undefined;
  }

  get tls(): boolean {
    return this.tlsActive;
  }

  get noZeroes(): boolean {
    return (this.clientFlags & ClientFlag.NO_ZEROES) !== 0;
  }

  get fixedNewstyle(): boolean {
    return (this.clientFlags & ClientFlag.FIXED_NEWSTYLE) !== 0;
  }

  /** The option that was too large to buffer: its payload is being skipped. */
  oversized(option: number, length: number): HandshakeStep {
    this.seen.push(optionName(option));
    if (++this.optionCount > MAX_OPTIONS) {
      return { next: 'drop', send: [], reason: `more than ${MAX_OPTIONS} options` };
    }
    if (!this.fixedNewstyle || option === Opt.EXPORT_NAME) {
      return { next: 'drop', send: [], reason: `option ${optionName(option)} of ${length} bytes is too large` };
    }
    return { next: 'continue', send: [encodeOptionError(option, Rep.ERR_TOO_BIG, 'option payload too large')] };
  }

  handle(m: OptionMessage): HandshakeStep {
    const { option, data } = m;
    this.seen.push(optionName(option));
    if (++this.optionCount > MAX_OPTIONS) {
      return { next: 'drop', send: [], reason: `more than ${MAX_OPTIONS} options` };
    }
    if (!this.fixedNewstyle && option !== Opt.EXPORT_NAME) {
      // Without fixed newstyle there are no option replies; the only way to refuse is to hang up.
      return { next: 'drop', send: [], reason: `option ${optionName(option)} without fixed newstyle` };
    }
    const tlsMode = this.opts.tls ?? 'off';
    if (tlsMode === 'require' && !this.tlsActive && option !== Opt.STARTTLS && option !== Opt.ABORT) {
      // FORCEDTLS: nothing is negotiated in plaintext.
      if (option === Opt.EXPORT_NAME) return { next: 'drop', send: [], reason: 'EXPORT_NAME without TLS on a TLS-only server' };
      return this.error(option, Rep.ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
    }
    if (this.opts.shuttingDown() && option !== Opt.ABORT) {
      if (option === Opt.EXPORT_NAME) return { next: 'drop', send: [], reason: 'server shutting down' };
      return { next: 'continue', send: [encodeOptionError(option, Rep.ERR_SHUTDOWN, 'server is shutting down')] };
    }
    switch (option) {
      case Opt.EXPORT_NAME:
        return this.exportName(data);
      case Opt.ABORT:
        return { next: 'abort', send: [encodeOptionReply(option, Rep.ACK)] };
      case Opt.LIST:
        return this.list(option, data);
      case Opt.INFO:
      case Opt.GO:
        return this.infoOrGo(option, data);
      case Opt.STRUCTURED_REPLY:
        if (data.length !== 0) return this.error(option, Rep.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
        if (this.structured) return this.error(option, Rep.ERR_INVALID, 'structured replies already negotiated');
        this.structured = true;
        return { next: 'continue', send: [encodeOptionReply(option, Rep.ACK)] };
      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT:
        return this.metaContext(option, data);
      case Opt.STARTTLS:
        if (tlsMode === 'off') return this.error(option, Rep.ERR_UNSUP, 'TLS is not enabled on this server');
        if (data.length !== 0) return this.error(option, Rep.ERR_INVALID, 'STARTTLS takes no data');
        if (this.tlsActive) return this.error(option, Rep.ERR_INVALID, 'TLS is already active');
        return { next: 'starttls', send: [encodeOptionReply(option, Rep.ACK)] };
      default:
        return this.error(option, Rep.ERR_UNSUP, `option ${optionName(option)} is not supported`);
    }
  }

  private error(option: number, type: number, message: string): HandshakeStep {
    return { next: 'continue', send: [encodeOptionError(option, type, message)] };
  }

  private session(entry: ExportEntry): Session {
    const contexts =
      this.metaContextExport === entry.name ||
      (this.metaContextExport !== undefined && this.catalog.lookup(this.metaContextExport) === entry)
        ? this.metaContexts
        : new Map<number, string>();
    return {
      export: entry,
      structuredReplies: this.structured,
      metaContexts: contexts,
      transmissionFlags: transmissionFlagsFor(entry, this.structured),
      options: this.seen.slice(),
    };
  }

  private exportName(data: Buffer): HandshakeStep {
    const name = data.toString('utf8');
    const entry = this.catalog.lookup(name);
    if (!entry) return { next: 'drop', send: [], reason: `unknown export '${name}' (EXPORT_NAME)` };
    const session = this.session(entry);
    return {
      next: 'transmission',
      send: [encodeExportNameReply(entry.device.size, session.transmissionFlags, this.noZeroes)],
      session,
    };
  }

  private list(option: number, data: Buffer): HandshakeStep {
    if (data.length !== 0) return this.error(option, Rep.ERR_INVALID, 'LIST takes no data');
    const send = this.catalog.list().map((e) => encodeServerEntry(option, e.name, e.description));
    send.push(encodeOptionReply(option, Rep.ACK));
    return { next: 'continue', send };
  }

  private infoOrGo(option: number, data: Buffer): HandshakeStep {
    const req = decodeInfoRequest(data);
    if (typeof req === 'string') return this.error(option, Rep.ERR_INVALID, req);
    const entry = this.catalog.lookup(req.name);
    if (!entry) return this.error(option, Rep.ERR_UNKNOWN, `no export named '${req.name}'`);
    const session = this.session(entry);
    const dev = entry.device;
    const send: Buffer[] = [encodeInfoExport(option, dev.size, session.transmissionFlags)];
    const asked = new Set(req.infos);
    if (asked.has(Info.NAME)) send.push(encodeInfoText(option, Info.NAME, entry.name));
    if (asked.has(Info.DESCRIPTION) && entry.description) {
      send.push(encodeInfoText(option, Info.DESCRIPTION, entry.description));
    }
    if (asked.has(Info.BLOCK_SIZE)) {
      const bs = dev.blockSize;
      send.push(encodeInfoBlockSize(option, bs.minimum, bs.preferred, Math.min(bs.maximum, MAX_PAYLOAD)));
    }
    send.push(encodeOptionReply(option, Rep.ACK));
    if (option === Opt.INFO) return { next: 'continue', send };
    return { next: 'transmission', send, session };
  }

  private metaContext(option: number, data: Buffer): HandshakeStep {
    const isSet = option === Opt.SET_META_CONTEXT;
    if (isSet) {
      // SET replaces the previous selection even when it fails.
      this.metaContexts = new Map();
      this.metaContextExport = undefined;
    }
    if (!this.structured) {
      return this.error(option, Rep.ERR_INVALID, 'meta contexts need structured replies first');
    }
    const req = decodeMetaContextRequest(data);
    if (typeof req === 'string') return this.error(option, Rep.ERR_INVALID, req);
    const entry = this.catalog.lookup(req.exportName);
    if (!entry) return this.error(option, Rep.ERR_UNKNOWN, `no export named '${req.exportName}'`);
    const send: Buffer[] = [];
    const matches = (q: string): boolean => q === BASE_ALLOCATION || (!isSet && (q === 'base:' || q === ''));
    const wanted = req.queries.length === 0 ? !isSet : req.queries.some(matches);
    if (wanted) {
      send.push(encodeMetaContext(option, isSet ? BASE_ALLOCATION_ID : 0, BASE_ALLOCATION));
      if (isSet) {
        this.metaContexts.set(BASE_ALLOCATION_ID, BASE_ALLOCATION);
        this.metaContextExport = entry.name;
      }
    }
    send.push(encodeOptionReply(option, Rep.ACK));
    return { next: 'continue', send };
  }
}

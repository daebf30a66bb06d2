/**
 * One client connection: greeting, option haggling, then transmission. Requests run in parallel (up to
 * a window of `maxInFlight` requests and `maxOutstandingBytes` bytes), replies go out as each completes,
 * each as one contiguous write, so the socket is the connection's single writer.
 *
 * Anything a client sends can at worst close its own connection: every failure path ends in
 * `drop(reason)`, which logs one line and destroys this socket only.
 */
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { CMD_NAMES, Cmd, CmdFlag, NbdErrno, REQUEST_HEADER_SIZE, SIMPLE_REPLY_SIZE, StateFlag, type NbdErrnoName } from './constants';

/**
 * Transmission-phase socket reads go straight into large slabs (see useLargeReads): one read syscall
 * and one JS callback per up to READ_SLAB - pos bytes instead of per 64 KiB chunk. A slab is handed out
 * piece by piece and never reused, so the parser and WRITE payloads can keep views into it.
 * REMAPD_LARGE_READS=0 keeps Node's default 64 KiB 'data' chunks.
 */
const READ_SLAB = 1024 * 1024;
const READ_MIN = 128 * 1024;
const LARGE_READS = process.env.REMAPD_LARGE_READS !== '0';

/** Structured READs at least this long report holes as OFFSET_HOLE chunks. */
const HOLE_REPLY_MIN = 64 * 1024;
/** At most this many large reads go by without an allocation lookup. */
const MAX_HOLE_PROBE_INTERVAL = 255;
const EMPTY = Buffer.alloc(0);
import { DeviceError, type BlockDevice, type ExportCatalog } from './block-device';
import { Handshake, SERVER_HANDSHAKE_FLAGS, optionName, type HandshakeStep, type Session, type TlsMode } from './handshake';
import type { ClientMessage, RequestMessage, StatusDescriptor } from './messages';
import { ClientParser } from './parser';
import {
  READ_CHUNK_HEADER_SIZE,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeGreeting,
  encodeOffsetHole,
  encodeSimpleReply,
  writeOffsetDataHeader,
  writeSimpleReplyHeader,
} from './serializer';
import { validateRequest, type ValidationContext } from './validate';
import { isPooled, sharedPool } from './buffer-pool';
import type { BudgetMember, MemoryBudget } from './memory-budget';

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

export interface ConnectionContext {
  readonly id: number;
  readonly catalog: ExportCatalog;
  readonly logger: Logger;
  readonly limits: ConnectionLimits;
  readonly isShuttingDown: () => boolean;
  readonly tls?: TlsServerSettings;
  /** The buffer budget shared by all connections of the server (none: only the per-connection window). */
  readonly budget?: MemoryBudget;
  /** Called for every completed request (metrics). */
  readonly onRequestDone?: (type: number, bytes: number, ms: number, error: NbdErrnoName | undefined) => void;
}

/** What a connection needs to run STARTTLS. */
export interface TlsServerSettings {
  readonly mode: TlsMode;
  readonly secureContext: SecureContext;
  /** Ask for and verify a client certificate against the CA. */
  readonly verifyPeer: boolean;
  /** TLS-PSK: the key for an identity, or null to refuse it. */
  readonly pskCallback?: (socket: TLSSocket, identity: string) => Buffer | null;
}

type Phase = 'handshake' | 'transmission' | 'closing' | 'closed';

export class Connection implements BudgetMember {
  private readonly parser: ClientParser;
  private readonly handshake: Handshake;
  private readonly log: Logger;
  private readonly trace: boolean;
  private phase: Phase = 'handshake';
  private session: Session | undefined;
  private device: BlockDevice | undefined;
  private validation: ValidationContext | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private outstandingBytes = 0;
  private readPaused = false;
  private disconnectRequested = false;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;
  readonly stats = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0 };

  constructor(
    private socket: Socket,
    private readonly ctx: ConnectionContext,
  ) {
    this.log = ctx.logger.child({ conn: ctx.id });
    this.trace = this.log.isLevelEnabled('debug');
    this.handshake = new Handshake(ctx.catalog, { shuttingDown: ctx.isShuttingDown, tls: ctx.tls?.mode });
    this.parser = new ClientParser((m) => this.onMessage(m));
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
  }

  /** Resolves once the socket is closed. */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  get inTransmission(): boolean {
    return this.phase === 'transmission';
  }

  start(): void {
    this.socket.setNoDelay?.(true);
    this.attach(this.socket);
    this.handshakeTimer = setTimeout(
      () => this.drop(`handshake not finished within ${this.ctx.limits.handshakeTimeoutMs} ms`),
      this.ctx.limits.handshakeTimeoutMs,
    );
    this.handshakeTimer.unref();
    this.send(encodeGreeting(SERVER_HANDSHAKE_FLAGS));
  }

  private attach(s: Socket): void {
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('error', (err) => this.drop(`socket error: ${err.message}`, s instanceof TLSSocket && this.phase === 'handshake' ? 'warn' : 'debug'));
    s.on('close', () => this.onClose());
    s.on('drain', () => {
      this.syncBudget();
      this.maybeResume();
    });
    s.on('end', () => {
      if (this.phase === 'handshake') this.drop('client closed during handshake', 'debug');
      else this.beginClose();
    });
  }

  /**
   * NBD_OPT_STARTTLS was acknowledged: run the TLS handshake on this socket, then continue option
   * haggling inside TLS with a clean slate. Bytes the client sent early (its ClientHello) are handed
   * to the TLS layer.
   */
  private startTls(): void {
    const tls = this.ctx.tls!;
    const raw = this.socket;
    this.parser.pause();
    // The ACK is queued on the plain socket, which may be corked for this turn: flush it first.
    if (this.corked) {
      this.corked = false;
      raw.uncork();
    }
    const early = this.parser.takeBuffered();
    for (const ev of ['data', 'end', 'drain', 'error', 'close']) raw.removeAllListeners(ev);
    if (early.length) raw.unshift(early);
    const secure = new TLSSocket(raw, {
      isServer: true,
      secureContext: tls.secureContext,
      requestCert: tls.verifyPeer,
      rejectUnauthorized: tls.verifyPeer,
      ...(tls.pskCallback ? { pskCallback: tls.pskCallback } : {}),
    } as ConstructorParameters<typeof TLSSocket>[1]);
    this.socket = secure;
    this.attach(secure);
    secure.once('secure', () => {
      // A TLSSocket made by hand (not by tls.Server) never rejects a bad peer certificate by itself.
      const verifyError = (secure as unknown as { _handle?: { verifyError(): Error | null } })._handle?.verifyError() ?? null;
      if (tls.verifyPeer && (verifyError || !secure.getPeerCertificate())) {
        this.drop(`client certificate rejected: ${(verifyError as NodeJS.ErrnoException | null)?.code ?? verifyError?.message ?? 'none presented'}`);
        return;
      }
      this.handshake.tlsEstablished();
      this.log.debug({ protocol: secure.getProtocol(), cipher: secure.getCipher()?.name, peer: tls.verifyPeer ? 'verified' : 'not checked' }, 'TLS established');
      this.parser.resume();
    });
  }

  /** The server is stopping: refuse new work, finish what is in flight, then close. */
  beginShutdown(graceMs: number): void {
    if (this.phase === 'handshake') {
      // Options now get ERR_SHUTDOWN; give the client a moment to read one, then hang up.
      setTimeout(() => this.drop('server shutting down during handshake', 'info'), Math.min(graceMs, 1000)).unref();
      return;
    }
    // Keep answering (ESHUTDOWN) while in-flight requests finish, then close shortly after.
    this.closeWhenIdleMs = Math.min(graceMs, 250);
    if (this.inFlight === 0) this.scheduleIdleClose();
  }

  private closeWhenIdleMs: number | undefined;

  private scheduleIdleClose(): void {
    const ms = this.closeWhenIdleMs;
    if (ms === undefined) return;
    this.closeWhenIdleMs = undefined;
    setTimeout(() => this.beginClose(), ms).unref();
  }

  /** Hard close, for shutdown timeouts. */
  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    try {
      this.parser.push(chunk);
    } catch (err) {
      this.drop(`internal error while parsing: ${(err as Error).stack ?? err}`, 'error');
    }
  }

  private onMessage(m: ClientMessage): void {
    if (this.phase === 'closed') return;
    switch (m.kind) {
      case 'violation':
        this.drop(`protocol violation: ${m.reason}`);
        return;
      case 'clientFlags': {
        const problem = this.handshake.acceptClientFlags(m.flags);
        if (problem) this.drop(problem);
        return;
      }
      case 'oversizedOption':
        this.afterOption(this.handshake.oversized(m.option, m.length));
        return;
      case 'option':
        if (this.trace) this.log.debug({ option: optionName(m.option), bytes: m.data.length }, 'option');
        this.afterOption(this.handshake.handle(m));
        return;
      case 'request':
        this.onRequest(m);
        return;
    }
  }

  /**
   * Switch a plain (non-TLS) socket to Node's user-buffer read mode (the `onread` option of
   * net.Socket, which a server-accepted socket cannot be given at construction): libuv reads into
   * our slab and the bytes go to onData without a 'data' event. pause()/resume() and 'end' keep
   * working. Any missing piece of Node internals leaves the socket as it is.
   */
  private useLargeReads(): void {
    const s = this.socket;
    if (s instanceof TLSSocket) return;
    const handle = (s as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
    if (!handle || typeof handle.useUserBuffer !== 'function') return;
    const syms = Object.getOwnPropertySymbols(s);
    const kBuffer = syms.find((x) => x.description === 'kBuffer');
    const kBufferCb = syms.find((x) => x.description === 'kBufferCb');
    const kBufferGen = syms.find((x) => x.description === 'kBufferGen');
    if (!kBuffer || !kBufferCb || !kBufferGen) return;
    const fields = s as unknown as Record<symbol, unknown>;
    if (fields[kBuffer] || fields[kBufferCb]) return;
    let slab = Buffer.allocUnsafeSlow(READ_SLAB);
    let pos = 0;
    // True while the socket reads into the parser's large WRITE payload buffer (parser.directTarget).
    let direct = false;
    fields[kBufferCb] = (nread: number, buf: Buffer): void => {
      if (direct) {
        try {
          this.parser.directFilled(nread);
        } catch (err) {
          this.drop(`internal error while parsing: ${(err as Error).stack ?? err}`, 'error');
        }
        return;
      }
      pos += nread;
      this.onData(buf.subarray(0, nread));
    };
    fields[kBufferGen] = (): Buffer => {
      const target = this.phase === 'transmission' ? this.parser.directTarget() : undefined;
      direct = target !== undefined;
      if (target) return target;
      if (slab.length - pos < READ_MIN) {
        slab = Buffer.allocUnsafeSlow(READ_SLAB);
        pos = 0;
      }
      // A client streaming large WRITEs: read just the next header, so that its payload is read straight
      // into the payload buffer (no copy out of the slab, and the slab, fresh memory each time it is
      // replaced, is hardly used). One more small read per large request; any other request switches back.
      const missing = this.parser.expectingLargeWrite ? this.parser.headerBytesMissing() : 0;
      return missing > 0 ? slab.subarray(pos, pos + missing) : slab.subarray(pos);
    };
    fields[kBuffer] = slab;
    handle.useUserBuffer(slab);
  }

  private afterOption(step: HandshakeStep): void {
    for (const b of step.send) this.send(b);
    switch (step.next) {
      case 'continue':
        return;
      case 'abort':
        this.log.debug('client aborted the handshake');
        this.parser.setPhase('closed');
        this.socket.end();
        return;
      case 'drop':
        this.closeAfterReplies(step.reason);
        return;
      case 'transmission':
        this.enterTransmission(step.session);
        return;
      case 'starttls':
        this.startTls();
        return;
    }
  }

  private enterTransmission(session: Session): void {
    clearTimeout(this.handshakeTimer);
    this.session = session;
    this.device = session.export.device;
    this.validation = {
      size: this.device.size,
      transmissionFlags: session.transmissionFlags,
      structuredReplies: session.structuredReplies,
      hasMetaContext: session.metaContexts.size > 0,
    };
    this.phase = 'transmission';
    this.parser.setPhase('transmission');
    if (LARGE_READS) this.useLargeReads();
    this.log.info(
      {
        export: session.export.name,
        size: this.device.size,
        options: session.options,
        structuredReplies: session.structuredReplies,
        metaContexts: [...session.metaContexts.values()],
        transmissionFlags: `0x${session.transmissionFlags.toString(16)}`,
        noZeroes: this.handshake.noZeroes,
        tls: this.handshake.tls,
      },
      'client connected',
    );
  }

  private onRequest(req: RequestMessage): void {
    const session = this.session!;
    if (this.disconnectRequested) return; // nothing after DISC is valid; ignore
    if (req.type === Cmd.DISC) {
      if (this.trace) this.log.debug('DISC');
      this.disconnectRequested = true;
      this.beginClose();
      return;
    }
    this.stats.requests++;
    if (this.phase !== 'transmission' || this.ctx.isShuttingDown()) {
      req.release?.();
      this.replyError(req, 'ESHUTDOWN', 'server is shutting down');
      return;
    }
    const invalid = validateRequest(req, this.validation!);
    if (invalid) {
      req.release?.();
      if (this.trace) this.log.debug({ cmd: CMD_NAMES[req.type] ?? req.type, offset: req.offset, length: req.length, error: invalid }, 'rejected');
      this.replyError(req, invalid, `${CMD_NAMES[req.type] ?? `command ${req.type}`} rejected: ${invalid}`);
      return;
    }
    const cost = req.type === Cmd.READ || req.type === Cmd.WRITE ? req.length : 0;
    this.inFlight++;
    this.outstandingBytes += cost;
    this.syncBudget();
    if (
      this.inFlight >= this.ctx.limits.maxInFlight ||
      this.outstandingBytes >= this.ctx.limits.maxOutstandingBytes ||
      (this.ctx.budget && !this.ctx.budget.mayRead(this))
    ) {
      this.pauseReading();
    }
    const started = this.trace || this.ctx.onRequestDone ? performance.now() : 0;
    this.execute(req, session).then(
      () => this.finished(req, cost, started, undefined),
      (err: unknown) => {
        const errno = this.reportFailure(req, err);
        this.finished(req, cost, started, errno);
      },
    );
  }

  private finished(req: RequestMessage, cost: number, started: number, errno: NbdErrnoName | undefined): void {
    req.release?.();
    this.inFlight--;
    this.outstandingBytes -= cost;
    this.syncBudget();
    if (errno) this.stats.errors++;
    else if (req.type === Cmd.READ) this.stats.bytesRead += req.length;
    else if (req.type === Cmd.WRITE) this.stats.bytesWritten += req.length;
    if (this.trace || this.ctx.onRequestDone) {
      const ms = performance.now() - started;
      if (this.trace) {
        this.log.debug({ cmd: CMD_NAMES[req.type], flags: req.flags, offset: req.offset, length: req.length, ms: +ms.toFixed(3), error: errno }, 'request');
      }
      this.ctx.onRequestDone?.(req.type, req.type === Cmd.READ || req.type === Cmd.WRITE ? req.length : 0, ms, errno);
    }
    if (this.phase === 'closing' && this.inFlight === 0) this.finishClose();
    else {
      if (this.inFlight === 0) this.scheduleIdleClose();
      this.maybeResume();
    }
  }

  private async execute(req: RequestMessage, session: Session): Promise<void> {
    const dev = this.device!;
    const fua = (req.flags & CmdFlag.FUA) !== 0;
    const emulateFua = fua && dev.capabilities.fua === 'emulate';
    const nativeFua = fua && dev.capabilities.fua === 'native';
    switch (req.type) {
      case Cmd.READ:
        return this.read(req, session);
      case Cmd.WRITE:
        await dev.write(req.offset, req.payload!, nativeFua);
        break;
      case Cmd.FLUSH:
        await dev.flush();
        break;
      case Cmd.TRIM:
        await dev.trim(req.offset, req.length, nativeFua);
        break;
      case Cmd.WRITE_ZEROES:
        await dev.zero(req.offset, req.length, {
          noHole: (req.flags & CmdFlag.NO_HOLE) !== 0,
          fastZero: (req.flags & CmdFlag.FAST_ZERO) !== 0,
          fua: nativeFua,
        });
        break;
      case Cmd.CACHE:
        await dev.cache(req.offset, req.length);
        break;
      case Cmd.BLOCK_STATUS:
        return this.blockStatus(req, session);
    }
    if (emulateFua) await dev.flush();
    this.send(encodeSimpleReply(0, req.cookieHi, req.cookieLo));
  }

  private async read(req: RequestMessage, session: Session): Promise<void> {
    const dev = this.device!;
    if (!session.structuredReplies) {
      const lease = sharedPool.acquire(SIMPLE_REPLY_SIZE + req.length);
      try {
        await dev.read(req.offset, req.length, lease.buf, SIMPLE_REPLY_SIZE);
      } catch (err) {
        lease.release();
        throw err;
      }
      writeSimpleReplyHeader(lease.buf, 0, 0, req.cookieHi, req.cookieLo);
      this.send(lease.buf, lease.release);
      return;
    }
    const lease = sharedPool.acquire(READ_CHUNK_HEADER_SIZE + req.length);
    if (!isPooled(lease)) return this.structuredRead(req, lease.buf); // nothing to give back
    try {
      await this.structuredRead(req, lease.buf);
    } finally {
      // Chunks are queued on the socket; release once they are written out.
      if (this.socket.destroyed || this.phase === 'closed') lease.release();
      else this.socket.write(EMPTY, () => lease.release());
    }
  }

  private async structuredRead(req: RequestMessage, buf: Buffer): Promise<void> {
    const dev = this.device!;
    // For larger reads, ask for the allocation map at the same time: holes go out as OFFSET_HOLE
    // chunks (no zero bytes on the wire). DF asks for a single chunk, so it gets plain data.
    // Reporting holes is optional: while lookups keep finding none (a fully allocated disk), ask
    // exponentially less often, so a dense device pays almost nothing for it.
    const wantHoles = req.length >= HOLE_REPLY_MIN && (req.flags & CmdFlag.DF) === 0 && dev.capabilities.extents && --this.holeProbeSkip < 0;
    if (wantHoles) {
      const [, extents] = await Promise.all([
        dev.read(req.offset, req.length, buf, READ_CHUNK_HEADER_SIZE),
        dev.extents(req.offset, req.length).catch(() => undefined),
      ]);
      if (extents && extents.some((e) => e.flags & StateFlag.HOLE)) {
        this.holeProbeInterval = 0;
        this.holeProbeSkip = 0;
        this.sendReadChunks(req, buf, extents);
        return;
      }
      this.holeProbeInterval = Math.min(MAX_HOLE_PROBE_INTERVAL, this.holeProbeInterval * 2 + 1);
      this.holeProbeSkip = this.holeProbeInterval;
    } else {
      await dev.read(req.offset, req.length, buf, READ_CHUNK_HEADER_SIZE);
    }
    writeOffsetDataHeader(buf, 0, true, req.cookieHi, req.cookieLo, req.offset, req.length);
    this.send(buf);
  }

  /** A READ reply as OFFSET_DATA and OFFSET_HOLE chunks following the extents; the last one is DONE. */
  private sendReadChunks(req: RequestMessage, buf: Buffer, extents: readonly { length: number; flags: number }[]): void {
    const pieces: { at: number; length: number; hole: boolean }[] = [];
    let at = 0;
    for (const e of extents) {
      if (at >= req.length) break;
      const length = Math.min(e.length, req.length - at);
      const hole = (e.flags & StateFlag.HOLE) !== 0;
      const last = pieces[pieces.length - 1];
      if (last && last.hole === hole) last.length += length;
      else pieces.push({ at, length, hole });
      at += length;
    }
    if (at < req.length) {
      const last = pieces[pieces.length - 1];
      if (last && !last.hole) last.length += req.length - at;
      else pieces.push({ at, length: req.length - at, hole: false });
    }
    this.socket.cork();
    pieces.forEach((p, i) => {
      const done = i === pieces.length - 1;
      if (p.hole) {
        this.send(encodeOffsetHole(done, req.cookieHi, req.cookieLo, req.offset + p.at, p.length));
      } else {
        const header = Buffer.allocUnsafe(READ_CHUNK_HEADER_SIZE);
        writeOffsetDataHeader(header, 0, done, req.cookieHi, req.cookieLo, req.offset + p.at, p.length);
        this.send(header);
        this.send(buf.subarray(READ_CHUNK_HEADER_SIZE + p.at, READ_CHUNK_HEADER_SIZE + p.at + p.length));
      }
    });
    this.socket.uncork();
  }

  private async blockStatus(req: RequestMessage, session: Session): Promise<void> {
    const dev = this.device!;
    const extents = await dev.extents(req.offset, req.length);
    const reqOne = (req.flags & CmdFlag.REQ_ONE) !== 0;
    const descriptors: StatusDescriptor[] = [];
    let covered = 0;
    for (const e of extents) {
      if (covered >= req.length || e.length <= 0) break;
      const length = Math.min(e.length, req.length - covered);
      const last = descriptors[descriptors.length - 1];
      if (last && last.flags === e.flags) (last as { length: number }).length += length;
      else descriptors.push({ length, flags: e.flags });
      covered += length;
      if (reqOne) break;
    }
    if (descriptors.length === 0) throw new DeviceError('EIO', 'device returned no extents');
    if (reqOne) descriptors.length = 1;
    const ids = [...session.metaContexts.keys()];
    ids.forEach((id, i) => {
      this.send(encodeBlockStatusChunk(i === ids.length - 1, req.cookieHi, req.cookieLo, id, descriptors));
    });
  }

  /** Turn a failure into an error reply; returns the errno sent. */
  private reportFailure(req: RequestMessage, err: unknown): NbdErrnoName {
    let errno: NbdErrnoName = 'EIO';
    let offset: number | undefined;
    let message: string;
    if (err instanceof DeviceError) {
      errno = err.errno;
      offset = err.offset;
      message = err.message;
      if (!this.session?.structuredReplies && err.simpleErrno) errno = err.simpleErrno;
      this.log.warn({ cmd: CMD_NAMES[req.type], offset: req.offset, length: req.length, errno, failedAt: offset }, message);
    } else {
      message = 'internal error';
      this.log.error({ err, cmd: CMD_NAMES[req.type], offset: req.offset, length: req.length }, 'request failed unexpectedly');
    }
    const inRange = offset !== undefined && offset >= req.offset && offset < req.offset + req.length;
    this.replyError(req, errno, message, inRange ? offset : undefined);
    return errno;
  }

  private replyError(req: RequestMessage, errno: NbdErrnoName, message: string, offset?: number): void {
    const code = NbdErrno[errno] ?? NbdErrno.EIO;
    const structured = this.session?.structuredReplies ?? false;
    // With structured replies, READ must be answered with chunks; others may use simple replies, but an
    // error chunk carries the message and the failing offset, so use it for every command.
    if (structured) {
      const withOffset = offset !== undefined && req.type !== Cmd.FLUSH ? offset : undefined;
      this.send(encodeErrorChunk(code, message, req.cookieHi, req.cookieLo, withOffset));
    } else {
      this.send(encodeSimpleReply(code, req.cookieHi, req.cookieLo));
    }
  }

  /**
   * Queue bytes on the socket. Replies completed in the same event-loop turn go out in one write:
   * the socket is corked on the first and uncorked in setImmediate.
   */
  private send(buf: Buffer, written?: () => void): void {
    if (this.phase === 'closed' || this.socket.destroyed) {
      written?.();
      return;
    }
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    if (written) this.socket.write(buf, written);
    else this.socket.write(buf);
    if (this.socket.writableLength > this.ctx.limits.maxOutstandingBytes) this.pauseReading();
  }

  private corked = false;
  /** Large structured reads left before the next allocation lookup, and the current spacing. */
  private holeProbeSkip = 0;
  private holeProbeInterval = 0;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
    this.syncBudget();
  };

  /** Tell the shared budget what this connection holds: requests executing plus replies still queued. */
  private syncBudget(): void {
    const budget = this.ctx.budget;
    if (!budget || this.phase === 'closed') return;
    budget.set(this, this.outstandingBytes + this.socket.writableLength);
  }

  /** The shared budget has room again. */
  budgetFreed(): void {
    this.maybeResume();
  }

  private pauseReading(): void {
    if (this.readPaused) return;
    this.readPaused = true;
    this.parser.pause();
    this.socket.pause();
  }

  private maybeResume(): void {
    if (!this.readPaused || this.phase !== 'transmission') return;
    if (this.inFlight >= this.ctx.limits.maxInFlight) return;
    if (this.outstandingBytes >= this.ctx.limits.maxOutstandingBytes) return;
    if (this.socket.writableLength > this.ctx.limits.maxOutstandingBytes) return;
    if (this.ctx.budget && !this.ctx.budget.mayRead(this)) return;
    this.readPaused = false;
    this.socket.resume();
    this.parser.resume();
  }

  /** Stop reading, let in-flight requests finish, then close. */
  private beginClose(): void {
    if (this.phase === 'closing' || this.phase === 'closed') return;
    this.phase = 'closing';
    // The parser ignores anything more; keep the socket flowing so the peer's close is seen.
    this.parser.setPhase('closed');
    this.socket.resume();
    if (this.inFlight === 0) this.finishClose();
  }

  private finishClose(): void {
    if (this.phase === 'closed') return;
    this.socket.end();
    // A peer that never closes its side must not keep the connection (and shutdown) waiting.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /**
   * Like drop(), but the option replies already owed (queued, maybe corked for this turn) go out first:
   * the socket is ended, not destroyed, so a client that sent too many options in one burst still
   * reads the answers to the ones within the limit before the close.
   */
  private closeAfterReplies(reason: string): void {
    if (this.phase === 'closed' || this.phase === 'closing') return;
    this.log.warn({ phase: this.phase }, `dropping connection: ${reason}`);
    clearTimeout(this.handshakeTimer);
    this.phase = 'closing';
    this.parser.setPhase('closed');
    this.socket.resume(); // bytes the client still sends are read and ignored, so its close is seen
    this.finishClose();
  }

  private drop(reason: string, level: 'warn' | 'info' | 'debug' | 'error' = 'warn'): void {
    if (this.phase === 'closed') return;
    this.log[level]({ phase: this.phase }, `dropping connection: ${reason}`);
    this.parser.setPhase('closed');
    this.phase = 'closed';
    clearTimeout(this.handshakeTimer);
    this.socket.destroy();
  }

  private onClose(): void {
    clearTimeout(this.handshakeTimer);
    const wasTransmitting = this.session !== undefined;
    this.phase = 'closed';
    this.parser.setPhase('closed');
    this.ctx.budget?.remove(this);
    if (wasTransmitting) {
      this.log.info({ ...this.stats, inFlight: this.inFlight }, 'client disconnected');
    }
    this.resolveClosed();
  }
}

export { REQUEST_HEADER_SIZE };

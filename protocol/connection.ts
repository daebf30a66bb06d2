/**
 * One client connection and its lifecycle: greeting, option haggling (handshake.ts), STARTTLS
 * (starttls.ts), then transmission, where requests run in parallel (request-executor.ts) within the
 * window that socket-channel.ts keeps, and finally the close. This file decides what happens next;
 * the socket side, TLS and the replies live in those modules.
 *
 * Anything a client sends can at worst close its own connection: every failure path ends in
 * `drop(reason)` (or `closeAfterReplies(reason)` when replies are still owed), which logs one line and
 * closes this socket only.
 */
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { ExportCatalog } from './block-device';
import { CMD_NAMES, Cmd, REQUEST_HEADER_SIZE, type NbdErrnoName } from './constants';
import { Handshake, SERVER_HANDSHAKE_FLAGS, optionName, type HandshakeStep, type Session } from './handshake';
import type { ConnectionLimits } from './limits';
import type { MemoryBudget } from './memory-budget';
import type { ClientMessage, RequestMessage } from './messages';
import { ClientParser } from './parser';
import { RequestExecutor, replyError } from './request-executor';
import { encodeGreeting } from './serializer';
import { SocketChannel } from './socket-channel';
import { startTls, type TlsServerSettings } from './starttls';
import { validateRequest, type ValidationContext } from './validate';
import { fdOf, stopSocketReads, type DetachedConnection } from './handover';

export { DEFAULT_LIMITS, type ConnectionLimits } from './limits';
export type { TlsServerSettings } from './starttls';

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

type Phase = 'handshake' | 'transmission' | 'closing' | 'closed';

export class Connection {
  private readonly parser: ClientParser;
  private readonly handshake: Handshake;
  private readonly channel: SocketChannel;
  private readonly log: Logger;
  private readonly trace: boolean;
  private phase: Phase = 'handshake';
  private session: Session | undefined;
  private executor: RequestExecutor | undefined;
  private validation: ValidationContext | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private disconnectRequested = false;
  private closeWhenIdleMs: number | undefined;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;
  readonly stats = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0 };

  constructor(
    socket: Socket,
    private readonly ctx: ConnectionContext,
  ) {
    this.log = ctx.logger.child({ conn: ctx.id });
    this.trace = this.log.isLevelEnabled('debug');
    this.handshake = new Handshake(ctx.catalog, { shuttingDown: ctx.isShuttingDown, tls: ctx.tls?.mode });
    this.parser = new ClientParser(
      (m) => this.onMessage(m),
      (extra) => this.channel.admit(extra),
    );
    this.channel = new SocketChannel(
      socket,
      this.parser,
      ctx.limits,
      {
        onParseFailure: (err) => this.drop(`internal error while parsing: ${(err as Error).stack ?? err}`, 'error'),
        onError: (err, s) =>
          this.drop(`socket error: ${err.message}`, s instanceof TLSSocket && this.phase === 'handshake' ? 'warn' : 'debug'),
        onEnd: () => {
          if (this.phase === 'handshake') this.drop('client closed during handshake', 'debug');
          else this.beginClose();
        },
        onClose: () => this.onClose(),
        isTransmitting: () => this.phase === 'transmission' && !this.onDetached,
        isClosed: () => this.phase === 'closed',
      },
      ctx.budget,
    );
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
    const socket = this.channel.socket;
    socket.setNoDelay?.(true);
    this.channel.attach(socket);
    this.handshakeTimer = setTimeout(
      () => this.drop(`handshake not finished within ${this.ctx.limits.handshakeTimeoutMs} ms`),
      this.ctx.limits.handshakeTimeoutMs,
    );
    this.handshakeTimer.unref();
    this.channel.send(encodeGreeting(SERVER_HANDSHAKE_FLAGS));
  }

  /** Planned restart: continue a connection whose handshake an earlier process did (protocol/handover.ts). */
  startAdopted(session: Session, pending: Buffer): void {
    const socket = this.channel.socket;
    socket.setNoDelay?.(true);
    this.channel.attach(socket);
    this.enterTransmission(session);
    if (pending.length) this.parser.push(pending);
  }

  private onDetached: ((d: DetachedConnection | undefined) => void) | undefined;

  /** The socket's file descriptor (-1 for TLS, whose socket has no descriptor of its own here). */
  get fd(): number {
    return fdOf(this.channel.socket);
  }

  /**
   * Planned restart: stop reading at a request boundary, finish the requests in flight, flush the replies
   * and give up the socket without closing it. undefined when it cannot be handed over (still in the
   * handshake, TLS, closing): the caller closes it instead.
   */
  detachForHandover(): Promise<DetachedConnection | undefined> {
    if (this.phase !== 'transmission' || this.handshake.tls || !this.session || this.onDetached) return Promise.resolve(undefined);
    stopSocketReads(this.channel.socket);
    return new Promise((resolve) => {
      this.onDetached = resolve;
      this.checkDetached();
    });
  }

  private checkDetached(): void {
    const done = this.onDetached;
    if (!done || (this.channel.inFlight > 0 && this.phase === 'transmission')) return;
    this.onDetached = undefined;
    if (this.phase !== 'transmission') return done(undefined);
    const pending = this.parser.takeUnparsed();
    this.parser.setPhase('closed');
    this.phase = 'closed';
    clearTimeout(this.handshakeTimer);
    const socket = this.channel.socket;
    this.channel.uncorkNow();
    socket.write(Buffer.alloc(0), () => {
      for (const ev of ['data', 'end', 'drain', 'error', 'close']) socket.removeAllListeners(ev);
      socket.on('error', () => undefined);
      this.channel.released();
      this.log.info({ ...this.stats, pending: pending.length }, 'connection detached for hand-over');
      done({ socket, session: this.session!, pending });
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
    if (this.channel.inFlight === 0) this.scheduleIdleClose();
  }

  private scheduleIdleClose(): void {
    const ms = this.closeWhenIdleMs;
    if (ms === undefined) return;
    this.closeWhenIdleMs = undefined;
    setTimeout(() => this.beginClose(), ms).unref();
  }

  /** Hard close, for shutdown timeouts. */
  destroy(): void {
    this.channel.socket.destroy();
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

  // ------------------------------------------------------------------ handshake

  private afterOption(step: HandshakeStep): void {
    for (const b of step.send) this.channel.send(b);
    switch (step.next) {
      case 'continue':
        return;
      case 'abort':
        this.log.debug('client aborted the handshake');
        this.parser.setPhase('closed');
        this.channel.socket.end();
        return;
      case 'drop':
        this.closeAfterReplies(step.reason);
        return;
      case 'transmission':
        this.enterTransmission(step.session);
        return;
      case 'starttls':
        this.beginTls();
        return;
    }
  }

  /**
   * NBD_OPT_STARTTLS was acknowledged: run the TLS handshake on this socket, then continue option
   * haggling inside TLS with a clean slate.
   */
  private beginTls(): void {
    const tls = this.ctx.tls!;
    this.parser.pause();
    // The ACK is queued on the plain socket, which may be corked for this turn: detach() flushes it.
    const raw = this.channel.detach();
    const secure = startTls(raw, this.parser.takeBuffered(), tls, {
      established: (s) => {
        this.handshake.tlsEstablished();
        this.log.debug(
          { protocol: s.getProtocol(), cipher: s.getCipher()?.name, peer: tls.verifyPeer ? 'verified' : 'not checked' },
          'TLS established',
        );
        this.parser.resume();
      },
      rejected: (reason) => this.drop(reason),
    });
    this.channel.attach(secure);
  }

  private enterTransmission(session: Session): void {
    clearTimeout(this.handshakeTimer);
    this.session = session;
    const device = session.export.device;
    this.executor = new RequestExecutor(session, this.channel, this.log);
    this.validation = {
      size: device.size,
      transmissionFlags: session.transmissionFlags,
      structuredReplies: session.structuredReplies,
      hasMetaContext: session.metaContexts.size > 0,
    };
    this.phase = 'transmission';
    this.parser.setPhase('transmission');
    this.channel.useLargeReads(this.channel.socket instanceof TLSSocket);
    this.log.info(
      {
        export: session.export.name,
        size: device.size,
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

  // ------------------------------------------------------------------ transmission

  private onRequest(req: RequestMessage): void {
    this.channel.requestTaken();
    if (this.disconnectRequested) return; // nothing after DISC is valid; ignore
    if (req.type === Cmd.DISC) {
      if (this.trace) this.log.debug('DISC');
      this.disconnectRequested = true;
      this.beginClose();
      return;
    }
    this.stats.requests++;
    const structured = this.session!.structuredReplies;
    if (this.phase !== 'transmission' || this.ctx.isShuttingDown()) {
      req.release?.();
      replyError(this.channel, structured, req, 'ESHUTDOWN', 'server is shutting down');
      return;
    }
    const invalid = validateRequest(req, this.validation!);
    if (invalid) {
      req.release?.();
      if (this.trace)
        this.log.debug({ cmd: CMD_NAMES[req.type] ?? req.type, offset: req.offset, length: req.length, error: invalid }, 'rejected');
      replyError(this.channel, structured, req, invalid, `${CMD_NAMES[req.type] ?? `command ${req.type}`} rejected: ${invalid}`);
      return;
    }
    const cost = req.type === Cmd.READ || req.type === Cmd.WRITE ? req.length : 0;
    this.channel.begin(cost);
    const started = this.trace || this.ctx.onRequestDone ? performance.now() : 0;
    const executor = this.executor!;
    executor.execute(req).then(
      () => this.finished(req, cost, started, undefined),
      (err: unknown) => this.finished(req, cost, started, executor.reportFailure(req, err)),
    );
  }

  private finished(req: RequestMessage, cost: number, started: number, errno: NbdErrnoName | undefined): void {
    req.release?.();
    this.channel.end(cost);
    if (errno) this.stats.errors++;
    else if (req.type === Cmd.READ) this.stats.bytesRead += req.length;
    else if (req.type === Cmd.WRITE) this.stats.bytesWritten += req.length;
    if (this.trace || this.ctx.onRequestDone) {
      const ms = performance.now() - started;
      if (this.trace) {
        this.log.debug(
          { cmd: CMD_NAMES[req.type], flags: req.flags, offset: req.offset, length: req.length, ms: +ms.toFixed(3), error: errno },
          'request',
        );
      }
      this.ctx.onRequestDone?.(req.type, req.type === Cmd.READ || req.type === Cmd.WRITE ? req.length : 0, ms, errno);
    }
    const idle = this.channel.inFlight === 0;
    if (this.phase === 'closing' && idle) this.finishClose();
    else {
      if (idle) this.scheduleIdleClose();
      this.channel.maybeResume();
    }
    this.checkDetached();
  }

  // ------------------------------------------------------------------ closing

  /** Stop reading, let in-flight requests finish, then close. */
  private beginClose(): void {
    if (this.phase === 'closing' || this.phase === 'closed') return;
    this.phase = 'closing';
    // The parser ignores anything more; keep the socket flowing so the peer's close is seen.
    this.parser.setPhase('closed');
    this.channel.socket.resume();
    if (this.channel.inFlight === 0) this.finishClose();
  }

  private finishClose(): void {
    if (this.phase === 'closed') return;
    const socket = this.channel.socket;
    socket.end();
    // A peer that never closes its side must not keep the connection (and shutdown) waiting.
    setTimeout(() => socket.destroy(), 2000).unref();
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
    this.channel.socket.resume(); // bytes the client still sends are read and ignored, so its close is seen
    this.finishClose();
  }

  private drop(reason: string, level: 'warn' | 'info' | 'debug' | 'error' = 'warn'): void {
    if (this.phase === 'closed') return;
    this.log[level]({ phase: this.phase }, `dropping connection: ${reason}`);
    this.parser.setPhase('closed');
    this.phase = 'closed';
    clearTimeout(this.handshakeTimer);
    this.channel.socket.destroy();
  }

  private onClose(): void {
    clearTimeout(this.handshakeTimer);
    const wasTransmitting = this.session !== undefined;
    this.phase = 'closed';
    this.parser.setPhase('closed');
    this.channel.released();
    if (wasTransmitting) {
      this.log.info({ ...this.stats, inFlight: this.channel.inFlight }, 'client disconnected');
    }
    this.checkDetached();
    this.resolveClosed();
  }
}

export { REQUEST_HEADER_SIZE };

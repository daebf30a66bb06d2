/**
 * Listening sockets and the set of live connections. Unix sockets are created with a restrictive mode
 * and a stale socket file is replaced only when nothing listens on it.
 *
 * Every listener (Unix, TCP, and sockets passed by systemd, which are listen()ed again) gets a backlog
 * sized for `maxConnections`: a burst of connects that outruns the accept loop of a busy daemon waits in
 * the kernel's queue. Node's default (511) is too small for that: a Unix socket whose queue is full
 * answers a non-blocking connect with EAGAIN at once, it does not queue or retry.
 */
import { existsSync, lstatSync, unlinkSync, chmodSync, chownSync, readFileSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import type { ExportCatalog } from './block-device';
import { Connection, DEFAULT_LIMITS, type ConnectionContext, type ConnectionLimits, type TlsServerSettings } from './connection';
import { DEFAULT_BUFFER_BUDGET, MemoryBudget } from './memory-budget';
import type { Session } from './handshake';
import { fdOf } from './handover';

export interface NbdServerOptions {
  readonly catalog: ExportCatalog;
  readonly logger: Logger;
  readonly limits?: Partial<ConnectionLimits>;
  /** Connections beyond this are closed at once. */
  readonly maxConnections?: number;
  /** Request and reply bytes held by all connections together before reading pauses (memory-budget.ts). */
  readonly bufferBudget?: number;
  readonly onRequestDone?: ConnectionContext['onRequestDone'];
  readonly tls?: TlsServerSettings;
}

export class ServerStartError extends Error {}

/** Connections served at once unless --max-connections says otherwise (systemd/remapd@.socket's Backlog= matches). */
export const DEFAULT_MAX_CONNECTIONS = 4096;
/** Node's own listen backlog, kept as the floor so that a small --max-connections never shrinks it. */
const NODE_DEFAULT_BACKLOG = 511;
/** The kernel's default net.core.somaxconn since Linux 5.4, assumed when /proc cannot be read. */
const DEFAULT_SOMAXCONN = 4096;

/** net.core.somaxconn: the kernel silently caps every listen() backlog at this value. */
export function readSomaxconn(path = '/proc/sys/net/core/somaxconn'): number {
  try {
    const v = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isInteger(v) && v > 0 ? v : DEFAULT_SOMAXCONN;
  } catch {
    return DEFAULT_SOMAXCONN;
  }
}

/**
 * The listen backlog for a server that holds up to `maxConnections` at once: enough for all of them
 * to connect in one burst, never below Node's default, capped by somaxconn (asking for more is
 * pointless: the kernel would cap it without saying so).
 */
export function listenBacklog(maxConnections: number, somaxconn = readSomaxconn()): number {
  return Math.min(Math.max(maxConnections, NODE_DEFAULT_BACKLOG), somaxconn);
}

/** Is something accepting connections on this Unix socket path? */
function probeUnixSocket(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export class NbdServer {
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<Connection>();
  private readonly unixPaths: string[] = [];
  private nextId = 1;
  private stopping = false;
  private readonly limits: ConnectionLimits;
  private readonly maxConnections: number;
  private refusedSinceLog = 0;
  /** The listen() backlog of every listener. */
  readonly backlog: number;
  /** Request and reply buffers of all connections together. */
  readonly budget: MemoryBudget;

  constructor(private readonly opts: NbdServerOptions) {
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.budget = new MemoryBudget(opts.bufferBudget ?? DEFAULT_BUFFER_BUDGET);
    const somaxconn = readSomaxconn();
    this.backlog = listenBacklog(this.maxConnections, somaxconn);
    if (this.backlog < this.maxConnections) {
      opts.logger.warn(
        { maxConnections: this.maxConnections, somaxconn, backlog: this.backlog },
        'listen backlog capped by net.core.somaxconn: a burst of more connects than that may be refused (raise it with sysctl)',
      );
    }
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Planned restart, before it starts: the listeners' and live connections' descriptors (nothing changes). */
  handoverCandidates(): { listenerFds: number[]; connections: Connection[] } {
    return { listenerFds: this.servers.map((srv) => fdOf(srv)), connections: [...this.connections] };
  }

  get catalog(): ExportCatalog {
    return this.opts.catalog;
  }

  get isShuttingDown(): boolean {
    return this.stopping;
  }

  /** Listen on a Unix socket created with `mode` (and group `gid`, when given). */
  async listenUnix(path: string, mode = 0o600, gid?: number): Promise<void> {
    if (existsSync(path)) {
      const st = lstatSync(path);
      if (!st.isSocket()) throw new ServerStartError(`${path} exists and is not a socket; refusing to replace it`);
      if (await probeUnixSocket(path)) {
        throw new ServerStartError(`another server is already listening on ${path}`);
      }
      unlinkSync(path); // stale: nothing listens
    }
    const server = this.makeServer();
    const oldMask = process.umask(0o777 & ~mode);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ path, backlog: this.backlog }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    chmodSync(path, mode);
    if (gid !== undefined) chownSync(path, process.getuid?.() ?? 0, gid);
    this.unixPaths.push(path);
    this.servers.push(server);
  }

  async listenTcp(host: string, port: number): Promise<net.AddressInfo> {
    const server = this.makeServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new ServerStartError(`cannot listen on ${host}:${port}: ${err.code ?? err.message}`)),
      );
      server.listen({ host, port, backlog: this.backlog }, () => resolve());
    });
    this.servers.push(server);
    return server.address() as net.AddressInfo;
  }

  /**
   * Serve on an already-listening socket passed in by systemd (LISTEN_FDS). Node calls listen() on it
   * again, which on Linux replaces the unit's Backlog= with ours.
   */
  async listenFd(fd: number): Promise<void> {
    const server = this.makeServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // A handle-style listen takes its backlog as the second argument (options.backlog is ignored).
      server.listen({ fd }, this.backlog, () => resolve());
    });
    this.servers.push(server);
  }

  /** Remove this Unix socket path at shutdown (a handed-over listener this server now owns). */
  removeOnShutdown(path: string): void {
    this.unixPaths.push(path);
  }

  /** Serve one already-connected socket (stdio / inetd style, and tests). */
  adopt(socket: net.Socket): void {
    this.onConnection(socket);
  }

  /** Planned restart: continue a connection that an earlier process negotiated (protocol/handover.ts). */
  adoptEstablished(socket: net.Socket, session: Session, pending: Buffer): void {
    this.makeConnection(socket).startAdopted(session, pending);
  }

  private onFresh: ((s: net.Socket) => void) | undefined;

  /**
   * Planned restart: from now on, accepted sockets go untouched to `onFresh` (the next process greets
   * them). Returns the listeners' descriptors (left open: closing a path-bound Unix listener would
   * unlink its path), the socket paths this server would remove at shutdown (now the next process's
   * job) and the live connections, which the caller detaches one by one.
   */
  beginHandover(onFresh: (s: net.Socket) => void): { listenerFds: number[]; ownedPaths: string[]; connections: Connection[] } {
    this.onFresh = onFresh;
    const listenerFds = this.servers.map((srv) => fdOf(srv));
    const ownedPaths = this.unixPaths.splice(0);
    this.servers.length = 0;
    const connections = [...this.connections];
    this.connections.clear();
    return { listenerFds, ownedPaths, connections };
  }

  private makeServer(): net.Server {
    const server = net.createServer({ noDelay: true, pauseOnConnect: false }, (s) => this.onConnection(s));
    server.on('error', (err) => this.opts.logger.error({ err }, 'listener error'));
    return server;
  }

  private onConnection(socket: net.Socket): void {
    if (this.onFresh) return this.onFresh(socket);
    if (this.stopping) {
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.maxConnections) {
      if (this.refusedSinceLog++ === 0) {
        this.opts.logger.warn({ limit: this.maxConnections }, 'connection limit reached; refusing new connections');
        setTimeout(() => {
          if (this.refusedSinceLog > 1) {
            this.opts.logger.warn({ refused: this.refusedSinceLog }, 'connections refused at the limit');
          }
          this.refusedSinceLog = 0;
        }, 5000).unref();
      }
      socket.destroy();
      return;
    }
    this.makeConnection(socket).start();
  }

  private makeConnection(socket: net.Socket): Connection {
    const conn = new Connection(socket, {
      id: this.nextId++,
      catalog: this.opts.catalog,
      logger: this.opts.logger,
      limits: this.limits,
      isShuttingDown: () => this.stopping,
      tls: this.opts.tls,
      budget: this.budget,
      onRequestDone: this.opts.onRequestDone,
    });
    this.connections.add(conn);
    conn.closed.then(() => this.connections.delete(conn));
    return conn;
  }

  /**
   * Stop: close listeners; answer new options with ERR_SHUTDOWN; let in-flight requests finish; close
   * connections. Sockets still open after `timeoutMs` are destroyed.
   *
   * Connections in the transmission phase are drained to a request boundary (as for a hand-over):
   * reading stops, every request already read is finished and answered, then the socket is closed.
   * Requests the client sent after that point get no reply rather than an ESHUTDOWN error, because a
   * kernel client passes an error reply to the filesystem as an I/O error, while an unanswered
   * request is re-sent after a reconnect (`remapd attach`) or failed only after the kernel's
   * dead-connection timeout. (rbd-nbd and ublk stop the same way.) TLS connections, which cannot stop
   * reading at a boundary here, and connections in the handshake get ESHUTDOWN / ERR_SHUTDOWN.
   */
  async shutdown(timeoutMs = 10_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    // net.Server.close() reports only once every connection has ended: stop accepting now, and wait
    // for the listeners after the connections below were closed.
    const listenersClosed = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const p of this.unixPaths) {
      try {
        unlinkSync(p);
      } catch {
        /* already gone */
      }
    }
    const all = Promise.all(
      [...this.connections].map(async (c) => {
        const d = await c.detachForHandover();
        if (!d) {
          c.beginShutdown(timeoutMs);
          return c.closed;
        }
        this.connections.delete(c);
        d.socket.destroy();
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs)));
    const late = await Promise.race([all.then(() => false), timedOut]);
    clearTimeout(timer);
    if (late) {
      this.opts.logger.warn({ open: this.connections.size }, 'shutdown timeout: closing remaining connections');
      for (const c of this.connections) c.destroy();
    }
    await listenersClosed;
  }
}

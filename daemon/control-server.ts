/**
 * The control socket: a Unix socket (mode 0600 by default) that takes JSON-line commands from the
 * remapd CLI (status, remap, unremap, list, faults, scan …). Handlers are registered by name.
 * Only the owner (and root) can connect unless a group is given; peers are additionally checked by
 * the socket file's permissions, which the kernel enforces at connect().
 */
import { chmodSync, chownSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { MAX_CONTROL_LINE, type ControlRequest, type ControlResponse } from './control-protocol';

export type ControlHandler = (args: Record<string, unknown>) => Promise<unknown> | unknown;

/** An error whose message is meant for the operator (no stack in the log). */
export class ControlError extends Error {}

export class ControlServer {
  private readonly handlers = new Map<string, ControlHandler>();
  private server: net.Server | undefined;
  private path: string | undefined;
  private readonly clients = new Set<net.Socket>();

  constructor(private readonly log: Logger) {}

  register(cmd: string, handler: ControlHandler): void {
    this.handlers.set(cmd, handler);
  }

  commands(): string[] {
    return [...this.handlers.keys()].sort();
  }

  async listen(path: string, mode = 0o600, group?: number): Promise<void> {
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket`);
      const alive = await new Promise<boolean>((resolve) => {
        const s = net.connect(path);
        s.once('connect', () => (s.destroy(), resolve(true)));
        s.once('error', () => resolve(false));
      });
      if (alive) throw new Error(`another remapd is already using the control socket ${path}`);
      unlinkSync(path);
    }
    const server = net.createServer((s) => this.onClient(s));
    const oldMask = process.umask(0o777 & ~mode);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => (server.off('error', reject), resolve()));
      });
    } finally {
      process.umask(oldMask);
    }
    chmodSync(path, mode);
    if (group !== undefined) chownSync(path, process.getuid?.() ?? 0, group);
    this.server = server;
    this.path = path;
  }

  private onClient(socket: net.Socket): void {
    this.clients.add(socket);
    socket.on('close', () => this.clients.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_CONTROL_LINE) {
        this.log.warn('control client sent an oversized request; closing it');
        socket.destroy();
        return;
      }
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim()) void this.dispatch(socket, line);
      }
    });
  }

  private async dispatch(socket: net.Socket, line: string): Promise<void> {
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
      if (typeof req !== 'object' || req === null || typeof req.cmd !== 'string') throw new Error('not a request');
    } catch {
      this.reply(socket, { id: 0, ok: false, error: 'malformed request: expected one JSON object per line' });
      return;
    }
    const id = typeof req.id === 'number' ? req.id : 0;
    const handler = this.handlers.get(req.cmd);
    if (!handler) {
      this.reply(socket, { id, ok: false, error: `unknown command '${req.cmd}' (known: ${this.commands().join(', ')})` });
      return;
    }
    try {
      const result = await handler(req.args && typeof req.args === 'object' ? req.args : {});
      this.reply(socket, { id, ok: true, result: result ?? null });
    } catch (err) {
      const message = (err as Error).message ?? String(err);
      if (!(err instanceof ControlError)) this.log.error({ err, cmd: req.cmd }, 'control command failed');
      this.reply(socket, { id, ok: false, error: message });
    }
  }

  private reply(socket: net.Socket, res: ControlResponse): void {
    if (!socket.destroyed) socket.write(JSON.stringify(res) + '\n');
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    if (this.server) await new Promise<void>((r) => this.server!.close(() => r()));
    if (this.path) {
      try {
        unlinkSync(this.path);
      } catch {
        /* gone */
      }
    }
  }
}

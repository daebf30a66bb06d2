/** The CLI side of the control socket: send one command, wait for its answer. */
import net from 'node:net';
import type { ControlResponse } from './control-protocol';

export class ControlClientError extends Error {}

export async function callControl(path: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let buffered = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ControlClientError(`no answer from ${path} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write(JSON.stringify({ id: 1, cmd, args }) + '\n'));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const hint =
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? ' (is remapd running? pass --control PATH)'
          : err.code === 'EACCES'
            ? " (permission denied: run as the daemon's user or root)"
            : '';
      reject(new ControlClientError(`cannot reach the control socket ${path}: ${err.code ?? err.message}${hint}`));
    });
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      socket.end();
      let res: ControlResponse;
      try {
        res = JSON.parse(buffered.slice(0, nl)) as ControlResponse;
      } catch {
        reject(new ControlClientError('malformed answer from the daemon'));
        return;
      }
      if (res.ok) resolve(res.result);
      else reject(new ControlClientError(res.error));
    });
  });
}

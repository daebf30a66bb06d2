/**
 * Daemon lifecycle: SIGTERM with a connected client (exit 0, socket file removed), stale socket
 * file replaced at start, a live socket makes a second instance fail with a clear message.
 */
import t from 'tap';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { withServer, startServer, runPython, run, describe, RawConn, CMD, MiB, tempDir, sparseImage, logTail, sleep } from '../helpers';

const SIZE = 16 * MiB;

t.test('SIGTERM while a client is connected -> exit 0, socket removed', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });
  const c = await RawConn.open(server.socket);
  t.teardown(() => c.destroy());
  await c.handshake();
  await c.go('');
  c.sendRequest(CMD.READ, 0, 1n, 0n, 4096);
  t.equal((await c.readSimpleReply(4096)).error, 0, 'client read works before SIGTERM');
  const idle = await RawConn.open(server.socket); // and one still in the handshake
  t.teardown(() => idle.destroy());
  await idle.greeting();

  const t0 = Date.now();
  const exit = await server.stop('SIGTERM', 30_000);
  t.same(exit, { code: 0, signal: null }, 'exit code 0 after SIGTERM', { log: logTail(server) });
  t.ok(Date.now() - t0 < 20_000, `exited promptly (${Date.now() - t0} ms)`);
  t.notOk(existsSync(server.socket), 'socket file removed');
  t.ok(await c.waitClosed(5000), 'connected client was disconnected');
  t.ok(await idle.waitClosed(5000), 'handshaking client was disconnected');
});

t.test('SIGTERM with a client doing I/O: writes before the signal are on disk', async (t) => {
  const { server, image } = await withServer(t, { sizeBytes: SIZE });
  const c = await RawConn.open(server.socket);
  t.teardown(() => c.destroy());
  await c.handshake();
  await c.go('');
  const data = Buffer.alloc(65536, 0x5c);
  c.sendRequest(CMD.WRITE, 0, 2n, 1048576n, data.length, data);
  t.equal((await c.readSimpleReply()).error, 0, 'write acknowledged');
  const exit = await server.stop('SIGTERM', 30_000);
  t.equal(exit.code, 0, 'exit 0', { log: logTail(server) });
  const r = await run('cmp', ['-n', '65536', '-i', '1048576:0', image, '-'], { input: data, timeoutMs: 10_000 });
  t.equal(r.code, 0, 'acknowledged write is in the image after shutdown', { out: describe(r) });
});

t.test('stale socket file (no listener) is replaced on start', async (t) => {
  const dir = tempDir(t);
  const socket = join(dir, 'stale.sock');
  const py = await runPython(`import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\n`, [socket]);
  t.equal(py.code, 0, 'created a stale socket file', { out: describe(py) });
  t.ok(existsSync(socket) && statSync(socket).isSocket(), 'stale socket exists');
  const image = sparseImage(join(dir, 'main.img'), SIZE);
  const server = await startServer(t, { dir, image, socket });
  const r = await run('nbdinfo', ['--size', server.uri], { timeoutMs: 20_000 });
  t.equal(r.stdout.trim(), String(SIZE), 'server took over the stale path and serves', { out: describe(r), log: logTail(server) });
});

t.test('live socket: a second instance fails with a clear message, first keeps serving', async (t) => {
  const { dir, image, server } = await withServer(t, { sizeBytes: SIZE });
  const second = await startServer(t, { dir, image, socket: server.socket, noWait: true });
  const timer = sleep(20_000).then(() => 'timeout' as const);
  const res = await Promise.race([second.exited, timer]);
  t.not(res, 'timeout', 'second instance exits by itself', { log: second.log() });
  if (res !== 'timeout') t.not(res.code, 0, 'second instance exits non-zero');
  t.match(second.log(), /in use|already|EADDRINUSE|another|listening/i, 'clear message about the socket being in use', {
    log: second.log(),
  });
  t.ok(existsSync(server.socket), 'socket file of the first instance still exists');
  const r = await run('nbdinfo', ['--size', server.uri], { timeoutMs: 20_000 });
  t.equal(r.stdout.trim(), String(SIZE), 'first instance still serves', { out: describe(r), log: logTail(server) });
});

/**
 * A real stop drains and closes: no error reply reaches a client, and under systemd with a file
 * descriptor store only a restart (not a stop) leaves the connections in the store.
 *
 * 1. SIGTERM while a client keeps sending writes: every request the daemon read is answered with
 *    success, the rest get no reply (the connection closes); none gets ESHUTDOWN, which a kernel
 *    client would pass to the filesystem as an I/O error (`remapd attach` re-sends unanswered ones).
 * 2. The stand-in service manager (test/helpers/fake-service-manager.py) runs `stop`: the daemon asks
 *    which job it is stopping for (daemon/stop-intent.ts), stops for real (drain, close, socket file
 *    removed) and stores nothing; a `restart` still goes through the store.
 */
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { withServer, RawConn, CMD, MiB, logTail, sleep, REMAPD_BIN } from '../helpers';
import { createRemapSetup, logRecords, startRemapd } from '../helpers/remap-setup';
import { startServiceManager } from '../helpers/service-manager';
import { intentFromJobs, ownUnit } from '../../daemon/stop-intent';

const ESHUTDOWN = 108;

async function waitFor(what: string, cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

t.test('SIGTERM under a stream of writes: every reply is a success, none is ESHUTDOWN', async (t) => {
  const { server } = await withServer(t, { sizeBytes: 16 * MiB });
  const c = await RawConn.open(server.socket);
  t.teardown(() => c.destroy());
  await c.handshake();
  await c.go('');
  const payload = Buffer.alloc(4096, 0x5a);
  let sent = 0;
  const replies: number[] = [];
  const reader = (async () => {
    for (;;) {
      try {
        replies.push((await c.readSimpleReply()).error);
      } catch {
        return; // closed
      }
    }
  })();
  // Keep writing before, during and after the signal, until the daemon closes the connection.
  const writer = (async () => {
    while (!c.closed && sent < 20_000) {
      c.sendRequest(CMD.WRITE, 0, BigInt(sent), BigInt((sent % 4096) * 4096), 4096, payload);
      sent++;
      if (sent % 8 === 0) await sleep(2);
    }
  })();
  await sleep(300);
  const exit = await server.stop('SIGTERM', 30_000);
  await writer;
  await reader;
  t.same(exit, { code: 0, signal: null }, 'exit 0', { log: logTail(server) });
  t.ok(replies.length > 0, `${replies.length} of ${sent} writes were answered`);
  t.equal(replies.filter((e) => e === ESHUTDOWN).length, 0, 'no request was answered with ESHUTDOWN');
  t.equal(replies.filter((e) => e !== 0).length, 0, 'every answered write succeeded');
  t.notOk(existsSync(server.socket), 'socket file removed');
});

t.test('stop intent: the job systemd runs for the unit', async (t) => {
  t.equal(ownUnit('0::/system.slice/system-remapd.slice/remapd@disk.service\n'), 'remapd@disk.service');
  t.equal(ownUnit('0::/\n'), undefined, 'not in a service');
  t.equal(intentFromJobs('42 remapd@disk.service restart running\n', 'remapd@disk.service'), 'restart');
  t.equal(intentFromJobs('42 remapd@disk.service stop running\n', 'remapd@disk.service'), 'stop');
  t.equal(intentFromJobs('7 other.service restart running\n', 'remapd@disk.service'), 'stop', "another unit's restart");
  t.equal(intentFromJobs('', 'remapd@disk.service'), 'stop', 'no job (a signal from someone else): stop');
});

t.test('fd store: `stop` is a real stop (nothing stored, socket removed), `restart` hands over', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB, spareBytes: 16 * MiB });
  const logFile = join(s.dir, 'daemon.log');
  const args = ['serve', '--main', s.main, '--spare', s.spare, '--socket', s.socket, '--control', s.control, '--no-scan'];
  const mgr = startServiceManager(t, join(s.dir, 'notify.sock'), logFile, [process.execPath, REMAPD_BIN, ...args]);
  const { lines, count } = mgr;
  await waitFor('READY=1', () => count('ready') >= 1);
  const c = await RawConn.open(s.socket);
  t.teardown(() => c.destroy());
  await c.handshake();
  await c.go('');
  c.sendRequest(CMD.WRITE, 0, 1n, 0n, 4096, Buffer.alloc(4096, 1));
  t.equal((await c.readSimpleReply()).error, 0, 'a write before the restart');

  mgr.send('restart');
  await waitFor('the restart', () => count('ready') >= 2);
  c.sendRequest(CMD.READ, 0, 2n, 0n, 4096);
  const r = await c.readSimpleReply(4096);
  t.ok(r.error === 0 && r.data.equals(Buffer.alloc(4096, 1)), 'the same connection works after `restart` (handed over through the store)');
  const log = (): string => readFileSync(logFile, 'utf8');
  t.match(log(), /SIGTERM for a restart: handing over through the fd store/, 'the restart was recognised');

  mgr.send('stop');
  await waitFor('the stop', () => count('stopped') >= 1, 30_000);
  const [, code, stored] = lines.find((l) => l.startsWith('stopped'))!.split(' ');
  t.equal(code, '0', 'exit 0 on stop');
  // What systemd may still hold is the listener it keeps for the next start anyway: no connection, no state.
  t.ok(Number(stored) <= 1, `nothing but the listener left in the store (${stored})`);
  t.match(log(), /SIGTERM for a stop/, 'the stop was recognised');
  t.ok(await c.waitClosed(10_000), 'the daemon closed the connection itself');
  t.notOk(existsSync(s.socket), 'socket file removed (a real stop)');
  t.equal(
    log()
      .split('\n')
      .filter((l) => l.includes('descriptors are in the systemd file descriptor store')).length,
    1,
    'only the restart used the store',
  );
});

t.test('SIGTERM while the successor of a SIGHUP is still getting ready: the restart is called off and the daemon stops', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB, spareBytes: 16 * MiB });
  const server = await startRemapd(t, s, ['--no-scan']);
  process.kill(server.pid, 'SIGHUP');
  await waitFor('the successor to be started', () =>
    logRecords(server).some((r) => r.msg === 'planned restart: successor starting; still serving meanwhile'),
  );
  const successor = Number(
    logRecords(server).find((r) => r.msg === 'planned restart: successor starting; still serving meanwhile')?.successor,
  );
  const exit = await server.stop('SIGTERM', 60_000);
  t.same(exit, { code: 0, signal: null }, 'the daemon stopped with exit 0', { log: logTail(server) });
  const msgs = logRecords(server).map((r) => r.msg);
  t.ok(
    msgs.includes('planned restart called off: a stop was asked for meanwhile') ||
      msgs.includes('planned restart called off: the successor is not ready; this process keeps serving'),
    'the restart was called off',
  );
  t.ok(msgs.includes('stopped'), 'then the daemon stopped normally');
  t.equal(msgs.filter((m) => m === 'remapd serving').length, 1, 'the successor never served');
  await waitFor(
    'the successor to be gone',
    () => {
      try {
        process.kill(successor, 0);
        return false;
      } catch {
        return true;
      }
    },
    10_000,
  );
  t.pass('the successor is gone');
  t.notOk(existsSync(s.socket), 'socket file removed');
});

/**
 * Socket activation: `systemd-socket-activate -l SOCK bin/remapd serve --main IMG` (LISTEN_FDS=1,
 * LISTEN_PID = the daemon) with no --socket/--listen: the daemon serves fd 3, checked with real NBD
 * clients (nbdinfo, nbdcopy round trip). Also: --config with socket activation, and an explicit
 * --socket turning activation off.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir, run, describe, randomImage, MiB, REMAPD_BIN, killGroup, probeGreeting, nbdUri, sleep } from '../helpers';
import { somaxconn, unixBacklog } from '../helpers/listen-backlog';

/** Skip reason when a tool is missing (tap's skip option needs it synchronously). */
function need(cmd: string): string | false {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0 ? false : `${cmd} not installed`;
}

const SIZE = 8 * MiB;

interface Activated {
  proc: ChildProcess;
  log: () => string;
  exited: Promise<number | null>;
}

async function activate(tt: { teardown(fn: () => unknown): void }, dir: string, sock: string, args: string[]): Promise<Activated> {
  const logFile = join(dir, 'activate.log');
  const fd = openSync(logFile, 'a');
  const proc = spawn('systemd-socket-activate', ['-l', sock, process.execPath, REMAPD_BIN, 'serve', ...args], {
    stdio: ['ignore', fd, fd],
    detached: true,
    env: { ...process.env, REMAPD_LOG_JSON: '1' },
  });
  closeSync(fd);
  tt.teardown(() => killGroup(proc.pid, 'SIGKILL'));
  const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
  const deadline = Date.now() + 30_000;
  while (!existsSync(sock) && Date.now() < deadline) await sleep(50);
  return { proc, log: () => readFileSync(logFile, 'utf8'), exited };
}

t.test('serves the passed fd: nbdinfo and an nbdcopy round trip', { skip: need('systemd-socket-activate') }, async (t) => {
  const dir = tempDir(t);
  const image = randomImage(join(dir, 'main.img'), SIZE);
  const sock = join(dir, 'act.sock');
  const a = await activate(t, dir, sock, [
    '--main',
    image,
    '--export',
    'act',
    '--control',
    join(dir, 'ctl.sock'),
    '--max-connections',
    '1000',
  ]);

  // The first connection makes systemd-socket-activate exec the daemon; nbdinfo waits in the queue.
  const info = await run('nbdinfo', ['--json', nbdUri(sock, 'act')], { timeoutMs: 60_000 });
  t.equal(info.code, 0, 'nbdinfo succeeds on the activated socket', { out: describe(info), log: a.log() });
  let size = -1;
  try {
    size = (JSON.parse(info.stdout) as { exports: { 'export-size': number }[] }).exports[0]!['export-size'];
  } catch {
    /* reported below */
  }
  t.equal(size, SIZE, 'export size');
  t.match(a.log(), /"endpoints":\["fd:3"\]/, 'daemon reports serving fd 3 and nothing else');
  t.notOk(existsSync(join('/run/remapd', 'act.sock')), 'no default socket was created');
  // The daemon listen()s on the passed socket again, with the backlog sized for --max-connections.
  t.equal(await unixBacklog(sock), Math.min(1000, somaxconn()), 'the passed socket got the backlog for --max-connections 1000');

  const out = join(dir, 'copy.img');
  const c1 = await run('nbdcopy', [nbdUri(sock, 'act'), out], { timeoutMs: 120_000 });
  t.equal(c1.code, 0, 'nbdcopy out', { out: describe(c1) });
  t.ok(readFileSync(out).equals(readFileSync(image)), 'copied bytes equal the image');
  const src = randomImage(join(dir, 'src.img'), SIZE);
  const c2 = await run('nbdcopy', [src, nbdUri(sock, 'act')], { timeoutMs: 120_000 });
  t.equal(c2.code, 0, 'nbdcopy in', { out: describe(c2) });
  t.ok(readFileSync(image).equals(readFileSync(src)), 'written bytes reached the image');

  process.kill(a.proc.pid!, 'SIGTERM'); // the daemon replaced systemd-socket-activate (exec)
  t.equal(await a.exited, 0, 'daemon exits 0 on SIGTERM', { log: a.log() });
});

t.test('--config: passed fd wins over socket/listen from the file', { skip: need('systemd-socket-activate') }, async (t) => {
  const dir = tempDir(t);
  randomImage(join(dir, 'main.img'), SIZE);
  const fileSock = join(dir, 'from-file.sock');
  const cfg = join(dir, 'setup.json');
  writeFileSync(cfg, JSON.stringify({ main: 'main.img', export: 'cfg', socket: fileSock, readOnly: true, control: 'ctl.sock' }));
  const sock = join(dir, 'act.sock');
  const a = await activate(t, dir, sock, ['--config', cfg]);
  const info = await run('nbdinfo', ['--json', nbdUri(sock, 'cfg')], { timeoutMs: 60_000 });
  t.equal(info.code, 0, 'export from the config file served on the passed fd', { out: describe(info), log: a.log() });
  t.match(info.stdout, /"is_read_only": true/, 'readOnly from the config file');
  t.notOk(existsSync(fileSock), 'socket from the config file not created');
  process.kill(a.proc.pid!, 'SIGTERM');
  t.equal(await a.exited, 0);
});

t.test('an explicit --socket turns activation off', { skip: need('systemd-socket-activate') }, async (t) => {
  const dir = tempDir(t);
  const image = randomImage(join(dir, 'main.img'), SIZE);
  const own = join(dir, 'own.sock');
  const sock = join(dir, 'act.sock');
  const a = await activate(t, dir, sock, ['--main', image, '--socket', own, '--control', join(dir, 'ctl.sock')]);
  // Nothing runs until the first connection; this one triggers the exec but is never served.
  const trigger = probeGreeting(sock, 3000);
  let ok = false;
  for (let i = 0; i < 300 && !ok; i++) {
    ok = existsSync(own) && (await probeGreeting(own, 1000));
    if (!ok) await sleep(100);
  }
  t.ok(ok, 'serves on --socket', { log: a.log() });
  t.equal(await trigger, false, 'the passed socket is not served');
  t.match(a.log(), /not using them/, 'logs that the passed sockets are ignored');
  process.kill(a.proc.pid!, 'SIGTERM');
  t.equal(await a.exited, 0);
});

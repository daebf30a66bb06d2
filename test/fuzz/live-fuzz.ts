/**
 * Live fuzzer: starts the real daemon on a Unix socket, opens many connections that send mutated
 * sessions (in random chunks, sometimes without reading replies, sometimes closing early), and checks
 * that the daemon stays up, its RSS stays bounded, it logs no internal error, and a well-behaved
 * client still works at the end (our own client: write + read back + compare; then nbdinfo --size).
 */
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Cmd, Info, Opt, Rep } from '../../protocol/constants';
import * as wire from '../helpers/nbd-wire';
import { generateInput, int, oversizedSession, rng, validSessions } from './corpus';

export interface LiveFuzzOptions {
  seed: number;
  seconds: number;
  /** Connections open at once. */
  concurrency?: number;
  /** Daemon RSS bound in bytes (default 400 MiB). */
  maxRssBytes?: number;
  log?: (line: string) => void;
}

export interface LiveFuzzResult {
  seed: number;
  connections: number;
  bytesSent: number;
  seconds: number;
  connectionsPerSecond: number;
  maxRssBytes: number;
  startRssBytes: number;
  problems: string[];
  /** Last inputs sent (hex), to reproduce a crash. */
  recent: string[];
}

const REPO = resolve(__dirname, '..', '..', '..');
const IMAGE_BYTES = 64 * 1024 * 1024;

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Open sockets of a process (listeners + connections), from /proc/PID/fd. */
function socketsOf(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).filter((f) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${f}`).startsWith('socket:');
      } catch {
        return false;
      }
    }).length;
  } catch {
    return -1;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function waitGreeting(sock: string, timeoutMs: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(sock);
    const timer = setTimeout(() => done(false), timeoutMs);
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      res(ok);
    };
    s.on('data', (b: Buffer) => done(b.length >= 8 && b.subarray(0, 8).toString('latin1') === 'NBDMAGIC'));
    s.on('error', () => done(false));
  });
}

/** One fuzz connection: send `input` in random pieces, read (or not), close after a short while. */
function fuzzConnection(sock: string, input: Buffer, seed: number): Promise<void> {
  const r = rng(seed);
  return new Promise((res) => {
    const s: Socket = connect(sock);
    const readReplies = r() < 0.85;
    if (!readReplies) s.pause();
    const lifetime = 20 + int(r, 400);
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(kill);
      s.destroy();
      res();
    };
    const kill = setTimeout(finish, lifetime);
    s.on('error', finish);
    s.on('close', finish);
    s.on('data', () => undefined);
    s.once('connect', async () => {
      let at = 0;
      while (at < input.length && !finished) {
        const n = r() < 0.5 ? input.length : 1 + int(r, 512);
        const ok = s.write(input.subarray(at, at + n));
        at += n;
        if (!ok || r() < 0.1) await sleep(int(r, 5));
      }
      if (!finished && r() < 0.3) s.end(); // half-close
    });
  });
}

/** A careful client: handshake with GO, WRITE a pattern, READ it back, DISC. Returns a problem or undefined. */
export async function wellBehavedClient(sock: string): Promise<string | undefined> {
  const s = connect(sock);
  let buf = Buffer.alloc(0);
  let waiter: (() => void) | undefined;
  s.on('data', (b: Buffer) => {
    buf = Buffer.concat([buf, b]);
    waiter?.();
  });
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  s.on('error', () => undefined);
  const need = async (n: number): Promise<Buffer> => {
    const deadline = Date.now() + 5000;
    while (buf.length < n) {
      if (Date.now() > deadline || s.destroyed) throw new Error(`timed out waiting for ${n} bytes (have ${buf.length})`);
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 100);
      });
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  try {
    const g = wire.decodeGreeting(await need(18));
    if (!(g.handshakeFlags & 1)) return 'server did not offer fixed newstyle';
    s.write(wire.clientFlags(1));
    s.write(wire.option(Opt.STRUCTURED_REPLY));
    const sr = wire.decodeOptionReply(Buffer.concat([await need(20)]))!;
    if (sr.type !== Rep.ACK) return `STRUCTURED_REPLY answered ${sr.type}`;
    s.write(wire.option(Opt.GO, wire.infoPayload('', [Info.BLOCK_SIZE])));
    let size = -1n;
    for (;;) {
      const head = await need(20);
      const len = head.readUInt32BE(16);
      const rep = wire.decodeOptionReply(Buffer.concat([head, await need(len)]))!;
      if (rep.type === Rep.INFO) {
        const i = wire.decodeInfo(rep.data);
        if (i.info === 'export') size = i.size;
      } else if (rep.type === Rep.ACK) break;
      else return `GO answered ${rep.type}`;
    }
    if (size !== BigInt(IMAGE_BYTES)) return `export size ${size}`;
    const pattern = Buffer.alloc(8192);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 31 + 7) & 0xff;
    s.write(wire.request({ type: Cmd.WRITE, cookie: 1n, offset: 1 << 20, payload: pattern }));
    const w = await need(16);
    const wr = wire.decodeTransmissionReply(w);
    if (!wr || wr.kind !== 'simple' || wr.error !== 0 || wr.cookie !== 1n) return `WRITE reply ${w.toString('hex')}`;
    s.write(wire.request({ type: Cmd.READ, cookie: 2n, offset: 1 << 20, length: pattern.length }));
    const head = await need(20);
    const c = wire.decodeTransmissionReply(Buffer.concat([head, await need(head.readUInt32BE(16))]));
    if (!c || c.kind !== 'chunk' || c.cookie !== 2n || c.body.chunk !== 'data') return `READ reply ${JSON.stringify(c)}`;
    if (!c.body.data.equals(pattern) || !c.done) return 'READ returned different data';
    s.write(wire.request({ type: Cmd.DISC, cookie: 3n }));
    await Promise.race([closed, sleep(2000)]);
    return undefined;
  } catch (err) {
    return `well-behaved client: ${(err as Error).message}`;
  } finally {
    s.destroy();
  }
}

export async function runLiveFuzz(opts: LiveFuzzOptions): Promise<LiveFuzzResult> {
  const log = opts.log ?? (() => undefined);
  const concurrency = opts.concurrency ?? 24;
  const maxRss = opts.maxRssBytes ?? 400 * 1024 * 1024;
  const dir = mkdtempSync(join(tmpdir(), 'remapd-fuzz-'));
  const image = join(dir, 'main.img');
  const fd = openSync(image, 'w');
  ftruncateSync(fd, IMAGE_BYTES);
  closeSync(fd);
  const sock = join(dir, 'nbd.sock');
  const logFile = join(dir, 'remapd.log');
  const out = openSync(logFile, 'a');
  const proc = spawn(
    process.execPath,
    [
      join(REPO, 'bin', 'remapd'),
      'serve',
      '--main',
      image,
      '--socket',
      sock,
      '--handshake-timeout',
      '2',
      '--log-level',
      process.env.FUZZ_LOG_LEVEL ?? 'info',
    ],
    { stdio: ['ignore', out, out] },
  );
  closeSync(out);
  let exited: string | undefined;
  proc.on('exit', (code, signal) => (exited = `daemon exited (code ${code}, signal ${signal})`));
  // never leave the daemon behind if this process is killed (e.g. a test timeout)
  const killDaemon = (): void => {
    if (!exited) proc.kill('SIGKILL');
  };
  process.once('exit', killDaemon);
  const onSignal = (sig: NodeJS.Signals): void => {
    killDaemon();
    process.kill(process.pid, sig);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const problems: string[] = [];
  const recent: string[] = [];
  let connections = 0;
  let bytesSent = 0;
  let maxRssBytes = 0;
  let startRssBytes = 0;
  const started = Date.now();
  try {
    const ready = Date.now() + 60_000; // a loaded machine can take long to start node
    while (!(await waitGreeting(sock, 1000))) {
      if (exited || Date.now() > ready) throw new Error(`daemon did not start: ${exited ?? 'timeout'}\n${readFileSync(logFile, 'utf8')}`);
      await sleep(100);
    }
    startRssBytes = rssOf(proc.pid!);
    const baselineSockets = socketsOf(proc.pid!);
    log(`live fuzz: daemon pid ${proc.pid}, rss ${(startRssBytes / 1048576).toFixed(1)} MiB, seed ${opts.seed}`);
    const corpus = validSessions();
    const big = oversizedSession();
    const deadline = Date.now() + opts.seconds * 1000;
    const monitor = setInterval(() => {
      const rss = rssOf(proc.pid!);
      maxRssBytes = Math.max(maxRssBytes, rss);
      if (rss > maxRss && problems.length < 10) problems.push(`daemon RSS ${rss} bytes exceeds ${maxRss}`);
    }, 200);
    let next = 0;
    const lane = async (): Promise<void> => {
      while (Date.now() < deadline && !exited) {
        const i = next++;
        const { input } = generateInput(opts.seed, i, corpus, big);
        recent.push(input.toString('hex'));
        if (recent.length > concurrency * 2) recent.shift();
        await fuzzConnection(sock, input, opts.seed ^ i);
        connections++;
        bytesSent += input.length;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, lane));
    clearInterval(monitor);
    if (exited) problems.push(exited);
    else {
      // Every fuzz client has closed its socket; after the 2 s handshake timeout the daemon must hold
      // no connection any more (a leftover one is a leaked socket and delays shutdown).
      let leftover = 0;
      for (let waited = 0; waited < 6000; waited += 250) {
        await sleep(250);
        leftover = socketsOf(proc.pid!) - baselineSockets;
        if (leftover <= 0) break;
      }
      if (leftover > 0) problems.push(`${leftover} connection socket(s) still open in the daemon 6 s after every client closed`);
      // Let handshake timeouts (2 s) clear any connection the fuzz left hanging, then check a real client.
      const problem = await wellBehavedClient(sock);
      if (problem) problems.push(problem);
      try {
        const size = execFileSync('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`], { timeout: 20_000 })
          .toString()
          .trim();
        if (size !== String(IMAGE_BYTES)) problems.push(`nbdinfo --size printed ${size}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(`nbdinfo failed: ${(err as Error).message}`);
      }
      maxRssBytes = Math.max(maxRssBytes, rssOf(proc.pid!));
    }
    const daemonLog = readFileSync(logFile, 'utf8');
    const errors = daemonLog.split('\n').filter((l) => /"level":(50|60)/.test(l));
    if (problems.length) {
      // connections that said hello but never said goodbye
      const open = new Map<number, string>();
      for (const line of daemonLog.split('\n')) {
        const m = /"conn":(\d+)/.exec(line);
        if (!m) continue;
        if (/client disconnected|dropping connection/.test(line)) open.delete(Number(m[1]));
        else open.set(Number(m[1]), line);
      }
      for (const line of [...open.values()].slice(0, 5)) problems.push(`connection without a close in the log: ${line.slice(0, 600)}`);
    }
    if (errors.length) problems.push(`daemon logged ${errors.length} error line(s), first: ${errors[0].slice(0, 1500)}`);
  } finally {
    if (!exited) {
      proc.kill('SIGTERM');
      const t0 = Date.now();
      while (!exited && Date.now() - t0 < 15_000) await sleep(50);
      if (!exited) {
        problems.push('daemon did not exit within 15 s of SIGTERM');
        proc.kill('SIGKILL');
      }
    }
    process.off('exit', killDaemon);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    if (process.env.REMAPD_TEST_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
  }
  const seconds = (Date.now() - started) / 1000;
  return {
    seed: opts.seed,
    connections,
    bytesSent,
    seconds,
    connectionsPerSecond: Math.round(connections / Math.max(opts.seconds, 0.001)),
    maxRssBytes,
    startRssBytes,
    problems,
    recent: problems.length ? recent.slice(-8) : [],
  };
}

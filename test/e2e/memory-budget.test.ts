/**
 * The global buffer budget (--buffer-budget, default 256M): hostile clients that pipeline 64 MiB of
 * 1 MiB READs each and never read a reply. First 8 of them, then 64 more. The daemon's VmRSS stays
 * under 512 MiB, none of them is dropped (backpressure only), and a well-behaved client's writes and
 * reads still complete meanwhile. Then the first 8 start reading: every reply they asked for arrives.
 */
import t, { type Test } from 'tap';
import { run, describe, logTail, withServer, RawConn, CMD, MiB, sleep, type Server } from '../helpers';
import { rssBytes } from '../helpers/tls-pki';

const SIZE = 64 * MiB;
const READS_PER_CLIENT = 64; // 64 MiB of 1 MiB READs
const RSS_LIMIT = 512 * MiB;

/** A client that negotiates, pipelines its READs, and then stops reading its socket. */
async function hostile(server: Server): Promise<RawConn> {
  const c = await RawConn.open(server.socket, 60_000);
  await c.handshake(60_000);
  await c.go('', 60_000);
  c.sock.pause();
  for (let i = 0; i < READS_PER_CLIENT; i++) c.sendRequest(CMD.READ, 0, BigInt(i), BigInt(i * MiB), MiB);
  return c;
}

/** Peak VmRSS of a process, sampled until stop(). */
function rssSampler(pid: number): { peak(): number; stop(): void } {
  let peak = 0;
  const sample = (): void => {
    try {
      peak = Math.max(peak, rssBytes(pid));
    } catch {
      /* exited: asserted by the caller */
    }
  };
  sample();
  const timer = setInterval(sample, 25);
  return { peak: () => (sample(), peak), stop: () => clearInterval(timer) };
}

/** Sample until the daemon has stopped taking in requests (RSS flat for a while), at most `ms`. */
async function settle(rss: { peak(): number }, ms: number): Promise<void> {
  const end = Date.now() + ms;
  let last = rss.peak();
  let flat = 0;
  while (Date.now() < end && flat < 8) {
    await sleep(250);
    const now = rss.peak();
    flat = now === last ? flat + 1 : 0;
    last = now;
  }
}

/** A well-behaved client: qemu-io writes a pattern and reads it back. */
async function normalIo(t: Test, server: Server, pattern: number, what: string): Promise<void> {
  const off = (pattern % 16) * 4 * MiB;
  const r = await run('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${off} 4M`, '-c', `read -P ${pattern} ${off} 4M`, server.uri], {
    timeoutMs: 300_000,
  });
  t.equal(r.code, 0, `${what}: qemu-io exits 0`, { out: describe(r), log: logTail(server) });
  t.notMatch(r.stdout + r.stderr, /fail|error|mismatch/i, `${what}: a normal client's write and read-back complete`, { out: describe(r) });
}

t.test('never-reading clients: RSS bounded, no drops, a normal client is served', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, fill: 'random' });
  const rss = rssSampler(server.pid);
  t.teardown(() => rss.stop());
  const clients: RawConn[] = [];
  t.teardown(() => clients.forEach((c) => c.destroy()));
  await sleep(300);
  const base = rss.peak();

  for (const [stage, count] of [
    ['8 clients', 8],
    ['64 more clients', 64],
  ] as const) {
    for (let i = 0; i < count; i += 8) {
      clients.push(...(await Promise.all(Array.from({ length: Math.min(8, count - i) }, () => hostile(server)))));
      // Stop early (and fail) rather than push a daemon without a budget into gigabytes.
      if (rss.peak() > RSS_LIMIT) break;
    }
    await settle(rss, 30_000);
    t.ok(
      rss.peak() < RSS_LIMIT,
      `${stage} (${clients.length} never reading, ${clients.length * READS_PER_CLIENT} MiB of READs asked): daemon VmRSS peak ${(rss.peak() / MiB).toFixed(0)} MiB < 512 MiB (${(base / MiB).toFixed(0)} MiB before)`,
      { log: logTail(server) },
    );
    if (rss.peak() > RSS_LIMIT) return;
    t.ok(server.isRunning(), `${stage}: daemon running`);
    t.equal(clients.filter((c) => c.closed).length, 0, `${stage}: no connection dropped`);
    await normalIo(t, server, stage === '8 clients' ? 0x5a : 0xa5, stage);
  }
  t.ok(rss.peak() < RSS_LIMIT, `VmRSS peak over the whole run: ${(rss.peak() / MiB).toFixed(0)} MiB`);

  // Backpressure, not loss: the first 8 read now and get every reply they asked for, in full.
  const readers = clients.slice(0, 8);
  for (const c of clients.slice(8)) c.destroy();
  const results = await Promise.all(
    readers.map(async (c) => {
      c.sock.resume();
      const cookies = new Set<bigint>();
      let full = 0;
      for (let i = 0; i < READS_PER_CLIENT; i++) {
        const h = await c.read(16, 120_000);
        cookies.add(h.readBigUInt64BE(8));
        if (h.readUInt32BE(0) === 0x67446698 && h.readUInt32BE(4) === 0 && (await c.read(MiB, 120_000)).length === MiB) full++;
      }
      return { cookies: cookies.size, full };
    }),
  );
  t.same(
    results,
    readers.map(() => ({ cookies: READS_PER_CLIENT, full: READS_PER_CLIENT })),
    'each of the first 8 gets all 64 replies with 1 MiB of data',
  );
  t.ok(rss.peak() < RSS_LIMIT, `VmRSS peak including the drain: ${(rss.peak() / MiB).toFixed(0)} MiB`);
});

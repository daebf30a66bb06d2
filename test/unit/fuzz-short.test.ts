/**
 * Short, seeded version of `npm run fuzz` for the normal suite: ≈100k codec inputs and ≈10 s of live
 * fuzzing against the real daemon. The seed is printed; FUZZ_SEED overrides it. A failure prints the
 * input in hex and the command that reproduces it.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { describeFailure, runCodecFuzzInWorker } from '../fuzz/codec-fuzz';
import { runLiveFuzz } from '../fuzz/live-fuzz';

const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : 20261124;
t.setTimeout(150_000);
t.comment(`fuzz seed ${seed} (set FUZZ_SEED to change)`);

t.test('codec fuzz: 100k inputs through parser + handshake + validation', async (t) => {
  const r = await runCodecFuzzInWorker({ seed, iterations: 100_000, hangMs: 10_000 });
  t.comment(
    `codec: ${r.iterations} inputs in ${r.seconds.toFixed(1)} s = ${r.inputsPerSecond} inputs/s, max heap ${(r.maxHeapBytes / 1048576).toFixed(1)} MiB`,
  );
  t.notOk(r.failure, r.failure ? describeFailure(r.failure) : 'no failure');
  t.equal(r.iterations, 100_000);
  // the generator really reaches every layer
  t.ok((r.reached['step:transmission'] ?? 0) > 1000, 'many inputs reach transmission');
  t.ok((r.reached['oversizedOption'] ?? 0) > 100, 'oversized options exercised');
  for (const type of [0, 1, 3, 4, 5, 6, 7]) t.ok((r.reached[`ok:${type}`] ?? 0) > 0, `command ${type} accepted at least once`);
});

const daemon = resolve(__dirname, '..', '..', 'daemon', 'cli.js');
t.test(
  'live fuzz: 10 s of mutated sessions against the daemon',
  { skip: !existsSync(daemon) && 'dist/daemon not built', timeout: 240_000 },
  async (t) => {
    const r = await runLiveFuzz({ seed, seconds: 10, log: (l) => t.comment(l) });
    t.comment(
      `live: ${r.connections} connections = ${r.connectionsPerSecond}/s, daemon rss ${(r.startRssBytes / 1048576).toFixed(1)} → max ${(r.maxRssBytes / 1048576).toFixed(1)} MiB`,
    );
    for (const p of r.problems) t.comment(`problem: ${p}`);
    t.same(r.problems, [], r.problems.length ? `recent inputs:\n${r.recent.join('\n')}` : 'daemon healthy');
    t.ok(r.connections > 200, 'enough connections were made');
    t.ok(r.maxRssBytes > 0, 'RSS was measured');
  },
);

/**
 * `npm run fuzz`: long codec fuzz + live daemon fuzz.
 *   FUZZ_SEED        seed (default: random, printed)
 *   FUZZ_ITERATIONS  codec inputs (default 3,000,000)
 *   FUZZ_SECONDS     live fuzz duration (default 120)
 *   FUZZ_ONLY        run just this codec iteration (reproduce a failure)
 *   --codec-only / --live-only
 * Exit status 1 on any failure; the failing input is printed in hex.
 */
import { randomInt } from 'node:crypto';
import { describeFailure, runCodecFuzzInWorker } from './codec-fuzz';
import { runLiveFuzz } from './live-fuzz';

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : randomInt(2 ** 31);
  const iterations = Number(process.env.FUZZ_ITERATIONS ?? 3_000_000);
  const seconds = Number(process.env.FUZZ_SECONDS ?? 120);
  const only = process.env.FUZZ_ONLY !== undefined ? Number(process.env.FUZZ_ONLY) : undefined;
  console.log(`fuzz seed ${seed} (FUZZ_SEED=${seed} reproduces this run)`);
  let failed = false;
  if (!args.includes('--live-only')) {
    console.log(only !== undefined ? `codec: iteration ${only} only` : `codec: ${iterations} inputs`);
    const r = await runCodecFuzzInWorker({ seed, iterations, only });
    console.log(
      `codec: ${r.iterations} inputs, ${(r.bytes / 1048576).toFixed(1)} MiB, ${r.messages} messages in ${r.seconds.toFixed(1)} s ` +
        `= ${r.inputsPerSecond} inputs/s; max heap ${(r.maxHeapBytes / 1048576).toFixed(1)} MiB, max rss ${(r.maxRssBytes / 1048576).toFixed(1)} MiB`,
    );
    console.log(`codec coverage: ${JSON.stringify(r.reached)}`);
    if (r.failure) {
      console.log(describeFailure(r.failure));
      failed = true;
    }
  }
  if (!args.includes('--codec-only') && only === undefined) {
    const r = await runLiveFuzz({ seed, seconds, log: (l) => console.log(l) });
    console.log(
      `live: ${r.connections} connections, ${(r.bytesSent / 1048576).toFixed(1)} MiB sent in ${seconds} s = ${r.connectionsPerSecond} connections/s; ` +
        `daemon rss ${(r.startRssBytes / 1048576).toFixed(1)} → max ${(r.maxRssBytes / 1048576).toFixed(1)} MiB`,
    );
    if (r.problems.length) {
      failed = true;
      for (const p of r.problems) console.log(`live problem: ${p}`);
      for (const h of r.recent) console.log(`recent input: ${h}`);
    }
  }
  console.log(failed ? 'FUZZ FAILED' : 'fuzz ok');
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);

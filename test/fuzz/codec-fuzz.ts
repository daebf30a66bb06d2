/**
 * Codec fuzzer: feeds generated inputs through ClientParser + Handshake + validateRequest the way
 * protocol/connection.ts wires them (minus the socket), and checks
 *   - no exception escapes,
 *   - every byte the handshake answers with is a well-formed server message (checked with the
 *     independent test-side decoder),
 *   - bounded work (messages per input ≤ input bytes / 4 + 1) and bounded buffering,
 *   - one push and a random chunking with random pause/resume produce the same transcript,
 *   - memory stays below a bound over the run.
 * Hangs are caught by runCodecFuzzInWorker: the loop runs in a worker that publishes its current input
 * in shared memory, and a watchdog in the parent terminates it and prints that input.
 */
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { ClientParser } from '../../protocol/parser';
import { Handshake, type HandshakeStep } from '../../protocol/handshake';
import { validateRequest, type ValidationContext } from '../../protocol/validate';
import { Cmd, MAX_PAYLOAD, NbdErrno, Opt, Rep } from '../../protocol/constants';
import type { ClientMessage } from '../../protocol/messages';
import * as wire from '../helpers/nbd-wire';
import { generateInput, int, oversizedSession, validSessions, type Rng } from './corpus';
import { standardCatalog } from './fake-device';

export interface CodecFuzzOptions {
  seed: number;
  iterations: number;
  /** Stop early after this many seconds (0 = no limit). */
  seconds?: number;
  /** Heap bound in bytes (default 256 MiB). */
  maxHeapBytes?: number;
  /** Progress shared with a watchdog: [iteration, inputLength], then input bytes. */
  shared?: SharedArrayBuffer;
  /** Run only this iteration (reproduce a failure). */
  only?: number;
}

export interface CodecFuzzFailure {
  seed: number;
  iteration: number;
  how: string;
  inputHex: string;
  error: string;
}

export interface CodecFuzzResult {
  seed: number;
  iterations: number;
  bytes: number;
  messages: number;
  seconds: number;
  inputsPerSecond: number;
  maxHeapBytes: number;
  maxRssBytes: number;
  failure?: CodecFuzzFailure;
  /** How often each message kind / step was reached (evidence the fuzzer gets past the handshake). */
  reached: Record<string, number>;
}

export class FuzzCheckError extends Error {}

function check(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new FuzzCheckError(msg);
}

const ERRNO_NAMES = new Set(Object.keys(NbdErrno));

/** Validate the bytes a handshake step sends, against the option that caused it. */
function checkStep(step: HandshakeStep, option: number, noZeroes: boolean): void {
  if (step.next === 'drop') {
    check(step.send.length === 0, 'drop step sends bytes');
    return;
  }
  const bytes = Buffer.concat(step.send);
  if (step.next === 'transmission' && option === Opt.EXPORT_NAME) {
    wire.decodeExportNameReply(bytes, noZeroes);
    return;
  }
  const replies = wire.decodeOptionReplies(bytes);
  check(replies.length > 0, 'option answered with nothing');
  for (const r of replies) check(r.option === option, `reply echoes option ${r.option}, not ${option}`);
  const last = replies[replies.length - 1];
  for (const r of replies.slice(0, -1))
    check(r.type === Rep.SERVER || r.type === Rep.INFO || r.type === Rep.META_CONTEXT, `non-final reply type ${r.type}`);
  check(last.type === Rep.ACK || last.type >= 0x80000000, `final reply type ${last.type}`);
  if (last.type === Rep.ACK && (option === Opt.INFO || option === Opt.GO)) {
    check(
      replies.some((r) => r.type === Rep.INFO && wire.decodeInfo(r.data).info === 'export'),
      'INFO/GO ACK without INFO_EXPORT',
    );
  }
  for (const r of replies) {
    if (r.type === Rep.INFO) wire.decodeInfo(r.data);
    if (r.type === Rep.SERVER) wire.decodeServerEntry(r.data);
    if (r.type === Rep.META_CONTEXT) wire.decodeMetaContext(r.data);
  }
  if (step.next === 'transmission') check(option === Opt.GO && last.type === Rep.ACK, 'transmission without GO+ACK');
  if (step.next === 'abort') check(option === Opt.ABORT, 'abort step for another option');
}

interface Transcript {
  events: string[];
  messages: number;
}

/**
 * Run one input as a connection would. `chunker` (when given) splits the input and randomly pauses
 * and resumes the parser; `shutdownAt` turns on shutting-down after that many options.
 */
const { catalog } = standardCatalog(); // read-only: shared by every run

function runOne(input: Buffer, chunker: Rng | undefined, shutdownAt: number, reached: Record<string, number> | undefined): Transcript {
  let options = 0;
  const hs = new Handshake(catalog, { shuttingDown: () => options >= shutdownAt });
  const events: string[] = [];
  let messages = 0;
  let closed = false;
  let validation: ValidationContext | undefined;
  let pauseNext = false;
  const parser: ClientParser = new ClientParser((m: ClientMessage) => {
    messages++;
    check(!closed, 'message after close');
    if (reached) reached[m.kind] = (reached[m.kind] ?? 0) + 1;
    switch (m.kind) {
      case 'violation':
        events.push(`V`);
        closed = true;
        break;
      case 'clientFlags': {
        const problem = hs.acceptClientFlags(m.flags);
        events.push(`F${m.flags}:${problem ? 'drop' : 'ok'}`);
        if (problem) {
          closed = true;
          parser.setPhase('closed');
        }
        break;
      }
      case 'oversizedOption':
      case 'option': {
        options++;
        const step = m.kind === 'option' ? hs.handle(m) : hs.oversized(m.option, m.length);
        if (reached) reached[`step:${step.next}`] = (reached[`step:${step.next}`] ?? 0) + 1;
        checkStep(step, m.option, hs.noZeroes);
        events.push(
          `O${m.option}:${m.kind === 'option' ? m.data.length : m.length}:${step.next}:${step.send.reduce((a, b) => a + b.length, 0)}`,
        );
        if (step.next === 'transmission') {
          validation = {
            size: step.session.export.device.size,
            transmissionFlags: step.session.transmissionFlags,
            structuredReplies: step.session.structuredReplies,
            hasMetaContext: step.session.metaContexts.size > 0,
          };
          parser.setPhase('transmission');
        } else if (step.next !== 'continue') {
          closed = true;
          parser.setPhase('closed');
        }
        break;
      }
      case 'request': {
        check(validation !== undefined, 'request before transmission');
        check(m.type !== Cmd.WRITE || m.payload?.length === m.length, 'WRITE payload length mismatch');
        check(m.type === Cmd.WRITE || m.payload === undefined, 'payload on a non-WRITE');
        if (m.type === Cmd.DISC) {
          events.push('D');
          closed = true;
          parser.setPhase('closed');
          break;
        }
        const v = validateRequest(m, validation);
        check(v === undefined || ERRNO_NAMES.has(v), `unknown errno ${v}`);
        if (v === undefined) {
          if (reached) reached[`ok:${m.type}`] = (reached[`ok:${m.type}`] ?? 0) + 1;
          if (m.type === Cmd.READ || m.type === Cmd.WRITE) {
            check(m.length > 0 && m.length <= MAX_PAYLOAD, 'accepted READ/WRITE length out of range');
          }
          if (m.type !== Cmd.FLUSH) check(m.offset + m.length <= validation.size, 'accepted request past the end');
        }
        events.push(`R${m.type}:${m.flags}:${m.cookieHi}:${m.cookieLo}:${m.offset}:${m.length}:${v ?? 'ok'}`);
        break;
      }
    }
    if (pauseNext) parser.pause();
  });

  if (!chunker) {
    parser.push(input);
  } else {
    let at = 0;
    while (at < input.length) {
      const n = chunker() < 0.3 ? 1 + int(chunker, 3) : int(chunker, 300);
      pauseNext = chunker() < 0.2;
      parser.push(input.subarray(at, at + n));
      at += n;
      // resume until it stops making progress (a paused parser holds data; resuming drains it)
      for (let guard = 0; guard <= input.length + 1; guard++) {
        const before = messages;
        pauseNext = chunker() < 0.5;
        parser.resume();
        if (messages === before) break;
      }
    }
    pauseNext = false;
    parser.resume();
  }
  check(messages <= input.length / 4 + 1, `${messages} messages from ${input.length} bytes`);
  check(parser.buffered <= input.length, 'parser buffers more than it was given');
  return { events, messages };
}

/** Fuzz in the current thread. */
export function runCodecFuzz(opts: CodecFuzzOptions): CodecFuzzResult {
  const corpus = validSessions();
  const big = oversizedSession();
  const maxHeap = opts.maxHeapBytes ?? 256 * 1024 * 1024;
  const progress = opts.shared ? new Int32Array(opts.shared, 0, 2) : undefined;
  const sharedBytes = opts.shared ? new Uint8Array(opts.shared, 8) : undefined;
  const started = process.hrtime.bigint();
  const deadline = opts.seconds ? Date.now() + opts.seconds * 1000 : Infinity;
  const reached: Record<string, number> = {};
  let bytes = 0;
  let messages = 0;
  let maxHeapBytes = 0;
  let maxRssBytes = 0;
  let failure: CodecFuzzFailure | undefined;
  let i = opts.only ?? 0;
  const end = opts.only !== undefined ? opts.only + 1 : opts.iterations;
  for (; i < end; i++) {
    const { input, how, rng: r } = generateInput(opts.seed, i, corpus, big);
    if (progress && sharedBytes) {
      const n = Math.min(input.length, sharedBytes.length);
      sharedBytes.set(input.subarray(0, n), 0);
      Atomics.store(progress, 1, n);
      Atomics.store(progress, 0, i);
    }
    try {
      const shutdownAt = r() < 0.05 ? int(r, 4) : Infinity;
      const a = runOne(input, undefined, shutdownAt, reached);
      const b = runOne(input, r, shutdownAt, undefined);
      if (a.events.join('|') !== b.events.join('|')) {
        throw new FuzzCheckError(`chunked parse differs:\n one push: ${a.events.join(' ')}\n chunked:  ${b.events.join(' ')}`);
      }
      messages += a.messages;
      bytes += input.length;
    } catch (err) {
      failure = {
        seed: opts.seed,
        iteration: i,
        how,
        inputHex: input.toString('hex'),
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      };
      break;
    }
    if ((i & 0x3fff) === 0) {
      const mu = process.memoryUsage();
      maxHeapBytes = Math.max(maxHeapBytes, mu.heapUsed);
      maxRssBytes = Math.max(maxRssBytes, mu.rss);
      if (mu.heapUsed > maxHeap) {
        failure = {
          seed: opts.seed,
          iteration: i,
          how,
          inputHex: '',
          error: `heap ${mu.heapUsed} bytes exceeds the ${maxHeap} byte bound`,
        };
        break;
      }
      if (Date.now() > deadline) {
        i++;
        break;
      }
    }
  }
  const mu = process.memoryUsage();
  maxHeapBytes = Math.max(maxHeapBytes, mu.heapUsed);
  maxRssBytes = Math.max(maxRssBytes, mu.rss);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const iterations = i - (opts.only ?? 0);
  return {
    seed: opts.seed,
    iterations,
    bytes,
    messages,
    seconds,
    inputsPerSecond: Math.round(iterations / seconds),
    maxHeapBytes,
    maxRssBytes,
    failure,
    reached,
  };
}

const SHARED_INPUT_BYTES = 1 << 17;

/**
 * Fuzz in a worker thread under a watchdog: if the worker's iteration counter does not move for
 * `hangMs`, the worker is terminated and the input it was working on is reported as a hang.
 */
export function runCodecFuzzInWorker(opts: CodecFuzzOptions & { hangMs?: number }): Promise<CodecFuzzResult> {
  const shared = new SharedArrayBuffer(8 + SHARED_INPUT_BYTES);
  const progress = new Int32Array(shared, 0, 2);
  const hangMs = opts.hangMs ?? 10_000;
  Atomics.store(progress, 0, -1); // not started yet: start-up time is not a hang
  return new Promise((resolve, reject) => {
    const worker = new Worker(join(__dirname, 'codec-worker.js'), {
      workerData: { ...opts, shared },
      // no inherited loaders/instrumentation (e.g. tap's): the worker runs plain compiled JS
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: 1024 },
    });
    let last = -1;
    let lastChange = Date.now();
    let settled = false;
    const timer = setInterval(() => {
      const now = Atomics.load(progress, 0);
      if (now !== last || now === -1) {
        last = now;
        lastChange = Date.now();
        return;
      }
      if (Date.now() - lastChange > hangMs && !settled) {
        settled = true;
        clearInterval(timer);
        const n = Atomics.load(progress, 1);
        const input = Buffer.from(new Uint8Array(shared, 8, n));
        void worker.terminate();
        resolve({
          seed: opts.seed,
          iterations: now,
          bytes: 0,
          messages: 0,
          seconds: 0,
          inputsPerSecond: 0,
          maxHeapBytes: 0,
          maxRssBytes: 0,
          reached: {},
          failure: {
            seed: opts.seed,
            iteration: now,
            how: 'hang',
            inputHex: input.toString('hex'),
            error: `no progress for ${hangMs} ms (hang)`,
          },
        });
      }
    }, 250);
    worker.once('message', (r: CodecFuzzResult) => {
      settled = true;
      clearInterval(timer);
      resolve(r);
    });
    worker.once('error', (err) => {
      if (settled) return;
      settled = true;
      clearInterval(timer);
      reject(err);
    });
    worker.once('exit', (code) => {
      clearInterval(timer);
      if (!settled) {
        settled = true;
        reject(new Error(`codec fuzz worker exited with code ${code} (out of memory?)`));
      }
    });
  });
}

export function describeFailure(f: CodecFuzzFailure): string {
  return [
    `codec fuzz failure: seed=${f.seed} iteration=${f.iteration} (${f.how})`,
    `reproduce: FUZZ_SEED=${f.seed} FUZZ_ONLY=${f.iteration} npm run fuzz -- --codec-only`,
    `input (${f.inputHex.length / 2} bytes): ${f.inputHex}`,
    f.error,
  ].join('\n');
}

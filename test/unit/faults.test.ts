/**
 * Fault rules (parse, validation, interval index, shared counters across threads) and the
 * fault-injecting backend on a real file.
 * Run: npx tap --disable-coverage --allow-incomplete-coverage dist/test/unit/faults.test.js
 */
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { BackendError } from '../../storage/backend';
import { FaultRule, FaultRules, FaultRuleError } from '../../storage/faults';
import { FaultInjectingBackend } from '../../storage/fault-backend';
import { openBackend } from '../../storage/file-backend';
import { byteOffset } from '../../units';

const KiB = 1024;
const MiB = 1024 * 1024;
const FAULTS_JS = path.resolve(__dirname, '../../storage/faults.js');

function tempFile(tt: { teardown(fn: () => unknown): void }, size: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'remapd-faults-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'main.img');
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, size);
  return file;
}

t.test('matching: ops, overlap, failOffset', async (tt) => {
  const rules = FaultRules.parse(
    JSON.stringify([
      { op: 'read', offset: 4096, length: 512, error: 'EIO' },
      { op: 'write', offset: 8192, length: 4096, error: 'ENOSPC' },
      { op: 'any', offset: 65536, length: 1, error: 'EROFS' },
      { op: 'read', offset: 100000, length: 1000, delayMs: 7 },
    ]),
  );
  tt.equal(rules.size, 4);
  tt.same(rules.match('read', 0, 4096), { delayMs: 0 }, 'adjacent below: no match');
  tt.same(rules.match('read', 4608, 4096), { delayMs: 0 }, 'adjacent above: no match');
  tt.same(rules.match('read', 0, 8192), { error: 'EIO', delayMs: 0, failOffset: 4096, rule: 0 }, 'covering');
  tt.same(rules.match('read', 4200, 100), { error: 'EIO', delayMs: 0, failOffset: 4200, rule: 0 }, 'inside');
  tt.same(rules.match('write', 4096, 512), { delayMs: 0 }, 'read rule ignores writes');
  tt.same(rules.match('read', 8192, 4096), { delayMs: 0 }, 'write rule ignores reads');
  tt.equal(rules.match('write', 0, 10000).failOffset, 8192);
  tt.equal(rules.match('read', 65536, 1).error, 'EROFS', 'any matches reads');
  tt.equal(rules.match('write', 60000, 10000).error, 'EROFS', 'any matches writes');
  tt.same(rules.match('read', 100500, 4096), { delayMs: 7 }, 'delay without error');
  tt.same(rules.match('read', 0, 0), { delayMs: 0 }, 'empty operation');
  // One I/O over two failing rules: the first failing byte decides.
  const two = FaultRules.parse(
    JSON.stringify([
      { op: 'read', offset: 20000, length: 10, error: 'ENODATA' },
      { op: 'read', offset: 10000, length: 10, error: 'EIO', delayMs: 3 },
      { op: 'read', offset: 5000, length: 10, delayMs: 9 },
    ]),
  );
  tt.same(two.match('read', 0, 30000), { error: 'EIO', delayMs: 9, failOffset: 10000, rule: 1 });
});

t.test('count: only the first N matching operations are affected', async (tt) => {
  const rules = FaultRules.parse(
    JSON.stringify([
      { op: 'read', offset: 0, length: 4096, error: 'EIO', count: 2 },
      { op: 'read', offset: 4096, length: 4096, error: 'EIO', count: 0 },
      { op: 'write', offset: 8192, length: 4096, delayMs: 5, count: 1 },
    ]),
  );
  tt.equal(rules.match('read', 0, 512).error, 'EIO');
  tt.equal(rules.match('read', 1024, 512).error, 'EIO');
  tt.equal(rules.remainingCount(0), 0);
  tt.same(rules.match('read', 0, 512), { delayMs: 0 }, 'third read succeeds');
  tt.same(rules.match('read', 4096, 512), { delayMs: 0 }, 'count 0 never fires');
  tt.equal(rules.remainingCount(2), 1);
  tt.same(rules.match('write', 8192, 1), { delayMs: 5 });
  tt.same(rules.match('write', 8192, 1), { delayMs: 0 });
  tt.equal(rules.remainingCount(1), 0);
  const unlimited = FaultRules.parse('[{"op":"read","offset":0,"length":1,"error":"EIO"}]');
  tt.equal(unlimited.remainingCount(0), -1);
  for (let i = 0; i < 5; i++) tt.equal(unlimited.match('read', 0, 1).error, 'EIO');
  // An operation that fails on an earlier rule does not reach (or consume) a later one.
  const seq = FaultRules.parse(
    JSON.stringify([
      { op: 'read', offset: 0, length: 10, error: 'EIO', count: 1 },
      { op: 'read', offset: 100, length: 10, error: 'EIO', count: 1 },
    ]),
  );
  tt.equal(seq.match('read', 0, 200).failOffset, 0);
  tt.equal(seq.remainingCount(1), 1, 'the rule past the failure keeps its count');
  tt.equal(seq.match('read', 0, 200).failOffset, 100);
  tt.same(seq.match('read', 0, 200), { delayMs: 0 });
});

t.test('count is shared by instances built from the same shared object', async (tt) => {
  const a = FaultRules.parse('[{"op":"read","offset":0,"length":4096,"error":"EIO","count":3}]', 'shared.json');
  const shared = a.toShared();
  const b = FaultRules.fromShared(shared);
  const c = FaultRules.fromShared(structuredClone(shared));
  tt.equal(c.source, 'shared.json');
  const results = [a, b, c, b, a, c].map((r) => r.match('read', 0, 512).error ?? 'ok');
  tt.same(results, ['EIO', 'EIO', 'EIO', 'ok', 'ok', 'ok'], 'three failures in total across instances');
});

t.test('count is shared with a worker thread (atomic under contention)', async (tt) => {
  const rules = FaultRules.parse(JSON.stringify([{ op: 'any', offset: 1 * MiB, length: 64 * KiB, error: 'EIO', count: 5000 }]));
  // Start barrier: both threads begin matching at the same moment.
  const gate = new Int32Array(new SharedArrayBuffer(4));
  const workerSource = `
    const { parentPort, workerData } = require('worker_threads');
    const { FaultRules } = require(${JSON.stringify(FAULTS_JS)});
    const rules = FaultRules.fromShared(workerData.shared);
    parentPort.postMessage('ready');
    Atomics.wait(workerData.gate, 0, 0);
    let failures = 0;
    for (let i = 0; i < workerData.ops; i++) {
      if (rules.match('read', 1048576 + (i % 16) * 4096, 4096).error) failures++;
    }
    parentPort.postMessage(failures);
  `;
  const ops = 20000;
  const worker = new Worker(workerSource, { eval: true, workerData: { shared: rules.toShared(), ops, gate } });
  const messages: unknown[] = [];
  const waiters: ((m: unknown) => void)[] = [];
  worker.on('message', (m) => {
    const w = waiters.shift();
    if (w) w(m);
    else messages.push(m);
  });
  const next = (): Promise<unknown> =>
    messages.length ? Promise.resolve(messages.shift()) : new Promise((resolve) => waiters.push(resolve));
  const failed = new Promise<never>((_, reject) => worker.once('error', reject));
  tt.equal(await Promise.race([next(), failed]), 'ready');
  Atomics.store(gate, 0, 1);
  Atomics.notify(gate, 0);
  let mainFailures = 0;
  for (let i = 0; i < ops; i++) {
    if (rules.match('write', 1 * MiB + (i % 16) * 4096, 4096).error) mainFailures++;
  }
  const workerFailures = (await Promise.race([next(), failed])) as number;
  await worker.terminate();
  tt.comment(`main thread saw ${mainFailures} failures, worker ${workerFailures}`);
  tt.equal(mainFailures + workerFailures, 5000, 'exactly count failures across both threads');
  // Unshared counters would give 10,000 here (5000 per thread). How the 5000 split between the
  // threads depends on scheduling, so only the sum is asserted.
  tt.equal(rules.remainingCount(0), 0);
});

t.test('validation names the rule index and key', async (tt) => {
  const bad: [string, RegExp][] = [
    ['{}', /must be a JSON array/],
    ['[1', /invalid JSON/],
    ['[{"op":"read","offset":0,"length":1},{"op":"read","offset":0,"length":1,"eror":"EIO"}]', /rule 1 key "eror": unknown key/],
    ['[{"op":"read","offset":-1,"length":1}]', /rule 0 key "offset": must not be negative/],
    ['[{"op":"read","offset":0,"length":1,"delayMs":-5}]', /rule 0 key "delayMs": must not be negative/],
    ['[{"op":"read","offset":0,"length":1,"count":-1}]', /rule 0 key "count": must not be negative/],
    ['[{"op":"read","offset":0,"length":0}]', /rule 0 key "length": must be at least 1/],
    ['[{"op":"read","offset":1.5,"length":1}]', /rule 0 key "offset": must be an integer/],
    ['[{"op":"read","offset":"0","length":1}]', /rule 0 key "offset": must be an integer/],
    ['[{"op":"trim","offset":0,"length":1}]', /rule 0 key "op": unknown op "trim"/],
    ['[{"offset":0,"length":1}]', /rule 0 key "op": missing/],
    ['[{"op":"read","length":1}]', /rule 0 key "offset": missing/],
    ['[{"op":"read","offset":0,"length":1,"error":"EBOGUS"}]', /rule 0 key "error": unknown errno name "EBOGUS"/],
    ['[{"op":"read","offset":0,"length":1,"error":5}]', /rule 0 key "error": unknown errno name 5/],
    ['[null]', /rule 0: must be an object/],
  ];
  for (const [text, re] of bad) {
    try {
      FaultRules.parse(text, 'rules.json');
      tt.fail(`accepted ${text}`);
    } catch (err) {
      tt.ok(err instanceof FaultRuleError, `FaultRuleError for ${text}`);
      tt.match((err as Error).message, re, text);
      tt.match((err as Error).message, /^rules\.json: /, 'message names the source');
    }
  }
  tt.equal(FaultRules.parse('[]').size, 0);
});

/** The obvious linear-scan semantics, as a reference for the interval index. */
function reference(rules: FaultRule[], op: 'read' | 'write', offset: number, length: number) {
  const end = offset + length;
  const hits = rules
    .map((r, i) => ({ r, i, s: Math.max(r.offset, offset) }))
    .filter(({ r }) => (r.op === 'any' || r.op === op) && r.offset < end && r.offset + r.length > offset)
    .sort((a, b) => a.s - b.s || a.i - b.i);
  let delayMs = 0;
  for (const h of hits) {
    delayMs = Math.max(delayMs, h.r.delayMs);
    if (h.r.error) return { error: h.r.error, delayMs, failOffset: h.s, rule: h.i };
  }
  return { delayMs };
}

t.test('10,000 rules: parse time, lookup time, same answers as a linear scan', async (tt) => {
  // mulberry32: a small deterministic PRNG.
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 4294967296) * n);
  };
  const deviceBytes = 2 ** 40; // 1 TiB
  const raw: Record<string, unknown>[] = [];
  for (let i = 0; i < 10000; i++) {
    const rule: Record<string, unknown> = {
      op: ['read', 'write', 'any'][rnd(3)],
      offset: rnd(deviceBytes / 4096) * 4096,
      length: (1 + rnd(i % 100 === 0 ? 1 << 20 : 64)) * 512, // a few large rules overlap many others
    };
    if (rnd(4) !== 0) rule.error = ['EIO', 'ENOSPC', 'ENODATA'][rnd(3)];
    if (rnd(3) === 0) rule.delayMs = rnd(50);
    raw.push(rule);
  }
  const text = JSON.stringify(raw);
  let t0 = process.hrtime.bigint();
  const rules = FaultRules.parse(text, 'big.json');
  const parseMs = Number(process.hrtime.bigint() - t0) / 1e6;
  tt.comment(`parsed 10,000 rules (${(text.length / 1024).toFixed(0)} KiB) in ${parseMs.toFixed(1)} ms`);
  t0 = process.hrtime.bigint();
  const shared = FaultRules.fromShared(rules.toShared());
  tt.comment(`fromShared (index rebuild) in ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)} ms`);

  const queries: ['read' | 'write', number, number][] = [];
  for (let i = 0; i < 2000; i++) {
    const op = rnd(2) === 0 ? 'read' : 'write';
    // Half the queries aim at a rule, half anywhere.
    const base = rnd(2) === 0 ? (raw[rnd(raw.length)].offset as number) - rnd(8) * 4096 : rnd(deviceBytes / 4096) * 4096;
    queries.push([op, Math.max(0, base), (1 + rnd(256)) * 4096]);
  }
  let mismatches = 0;
  let failures = 0;
  for (const [op, off, len] of queries) {
    const got = shared.match(op, off, len);
    const exp = reference(rules.rules as FaultRule[], op, off, len);
    if (got.error) failures++;
    const canon = (m: object): string => JSON.stringify(m, Object.keys(m).sort());
    if (canon(got) !== canon(exp)) {
      if (mismatches++ < 3) tt.comment(`mismatch ${op} ${off}+${len}: got ${JSON.stringify(got)}, want ${JSON.stringify(exp)}`);
    }
  }
  tt.equal(mismatches, 0, `interval index agrees with a linear scan on ${queries.length} queries`);
  tt.ok(failures > 100 && failures < queries.length - 100, `queries hit and miss rules (${failures} failures)`);

  const n = 200000;
  t0 = process.hrtime.bigint();
  let sink = 0;
  for (let i = 0; i < n; i++) {
    const q = queries[i % queries.length];
    sink += shared.match(q[0], q[1], q[2]).delayMs;
  }
  const ns = Number(process.hrtime.bigint() - t0) / n;
  tt.comment(`match(): ${ns.toFixed(0)} ns per lookup over 10,000 rules (${sink >= 0 ? 'ok' : ''})`);
});

t.test('FaultInjectingBackend on a real file', async (tt) => {
  const file = tempFile(tt, 4 * MiB);
  const inner = await openBackend(file, {});
  tt.teardown(() => inner.close());
  const rules = FaultRules.parse(
    JSON.stringify([
      { op: 'read', offset: 1 * MiB + 512, length: 512, error: 'EIO', count: 1 },
      { op: 'write', offset: 2 * MiB, length: 4096, error: 'ENOSPC' },
      { op: 'read', offset: 3 * MiB, length: 4096, delayMs: 150, count: 1 },
      { op: 'read', offset: 3 * MiB + 8192, length: 4096, delayMs: 100, error: 'ETIMEDOUT' },
    ]),
    'test-rules',
  );
  const b = new FaultInjectingBackend(inner, rules);
  tt.equal(b.size, 4 * MiB);
  tt.equal(b.kind, 'file');
  const buf = Buffer.alloc(64 * KiB);

  await inner.write(byteOffset(1 * MiB), Buffer.alloc(4096, 0xab));
  try {
    await b.read(byteOffset(1 * MiB), 4096, buf, 0);
    tt.fail('read over the bad sector succeeded');
  } catch (err) {
    tt.ok(err instanceof BackendError);
    tt.equal((err as BackendError).code, 'EIO');
    tt.equal((err as BackendError).offset, 1 * MiB + 512, 'offset is the first failing byte');
    tt.match((err as Error).message, /injected EIO \(fault rule 0 of test-rules\)/);
  }
  await b.read(byteOffset(1 * MiB), 4096, buf, 0);
  tt.equal(buf[0], 0xab, 'second read succeeds (count 1) and returns the data');

  for (const [what, op] of [
    ['write', () => b.write(byteOffset(2 * MiB - 512), Buffer.alloc(1024))],
    ['trim', () => b.trim(byteOffset(2 * MiB), 4096)],
    ['zero', () => b.zero(byteOffset(2 * MiB + 1024), 4096, true)],
  ] as const) {
    try {
      await op();
      tt.fail(`${what} succeeded`);
    } catch (err) {
      tt.equal((err as BackendError).code, 'ENOSPC', `${what} counts as a write`);
      tt.equal((err as BackendError).offset, what === 'zero' ? 2 * MiB + 1024 : 2 * MiB, `${what} offset`);
    }
  }
  await b.read(byteOffset(2 * MiB), 4096, buf, 0); // reads are unaffected by the write rule

  let t0 = Date.now();
  await b.read(byteOffset(3 * MiB), 4096, buf, 0);
  const delayed = Date.now() - t0;
  tt.ok(delayed >= 140, `delayed read took ${delayed} ms (rule: 150)`);
  t0 = Date.now();
  await b.read(byteOffset(3 * MiB), 4096, buf, 0);
  tt.ok(Date.now() - t0 < 100, 'delay used up after count');

  t0 = Date.now();
  try {
    await b.read(byteOffset(3 * MiB + 8192), 4096, buf, 0);
    tt.fail('timed-out read succeeded');
  } catch (err) {
    tt.equal((err as BackendError).code, 'ETIMEDOUT');
    tt.ok(Date.now() - t0 >= 90, 'the error comes after the delay');
  }

  // Reload at runtime.
  b.setRules(FaultRules.parse('[{"op":"write","offset":0,"length":1,"error":"EROFS"}]'));
  await b.read(byteOffset(3 * MiB + 8192), 4096, buf, 0);
  await b.write(byteOffset(2 * MiB), Buffer.alloc(4096));
  try {
    await b.write(byteOffset(0), Buffer.alloc(512));
    tt.fail('new rule not applied');
  } catch (err) {
    tt.equal((err as BackendError).code, 'EROFS', 'reloaded rules apply');
  }
  b.setRules(FaultRules.empty());
  await b.write(byteOffset(0), Buffer.alloc(512));
  tt.same(await b.extents(byteOffset(0), 4096), await inner.extents(byteOffset(0), 4096), 'extents pass through');
});

t.test('FaultRules.load reads a file and names it in errors', async (tt) => {
  const file = tempFile(tt, 0);
  fs.writeFileSync(file, '[{"op":"read","offset":0,"length":1,"error":"EIO","cont":1}]');
  await tt.rejects(FaultRules.load(file), {
    message: `${file}: rule 0 key "cont": unknown key (allowed: op, offset, length, error, delayMs, count)`,
  });
});

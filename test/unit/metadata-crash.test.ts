/**
 * Crash test: a child commits in a loop and is SIGKILLed at random moments (during open/repair,
 * journal appends and checkpoints; the journal is small so checkpoints are frequent). After each kill,
 * open must succeed, all 5 copies must verify after open, and every commit that had resolved is present.
 */
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { spawn } from 'child_process';
import { MetadataStore } from '../../metadata/store';
import { MAIN, TestFileBackend, tmpDir } from '../helpers/metadata-util';
import { mainBlock } from '../../units';

const CHILD = path.join(__dirname, '..', 'helpers', 'metadata-crash-child.js');
const KILLS = 20;

function runAndKill(spare: string, log: string, afterReadyMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [CHILD, spare, log], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d) => {
      err += d;
    });
    c.stdout.on('data', () => setTimeout(() => c.kill('SIGKILL'), afterReadyMs));
    c.on('exit', (code, sig) => (sig === 'SIGKILL' ? resolve() : reject(new Error(`child exited ${code}: ${err}`))));
  });
}

t.test(`SIGKILL ${KILLS} times at random moments`, { timeout: 300_000 }, async (t) => {
  const dir = tmpDir(t, 'crash');
  const file = path.join(dir, 'spare.img');
  const log = path.join(dir, 'log.txt');
  const spare = await TestFileBackend.open(file, { size: 64 << 20 });
  await (await MetadataStore.create(spare, MAIN, { blockSize: 4096, journalBytes: 64 << 10 })).close();
  await spare.close();
  fs.writeFileSync(log, '');
  let checked = 0;
  for (let i = 0; i < KILLS; i++) {
    await runAndKill(file, log, Math.floor(Math.random() * 400));
    // Expected state from the log: durable adds minus durable removes; an issued-but-unconfirmed remove may go either way.
    const expect = new Map<number, number>();
    const maybeRemoved = new Set<number>();
    for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
      const [op, m, b] = line.split(' ');
      if (op === 'A') {
        expect.set(+m, +b);
        maybeRemoved.delete(+m);
      }
      if (op === 'r') maybeRemoved.add(+m);
      if (op === 'R') {
        expect.delete(+m);
        maybeRemoved.delete(+m);
      }
    }
    const sp = await TestFileBackend.open(file);
    const s = await MetadataStore.open(sp, MAIN);
    let missing = 0;
    for (const [m, b] of expect) {
      const e = s.lookup(mainBlock(m));
      if (!e && !maybeRemoved.has(m)) missing++;
      if (e && e.spareBlock !== b) missing++;
    }
    t.equal(missing, 0, `kill ${i + 1}: all ${expect.size} resolved remaps present (table has ${s.remapCount})`);
    checked += expect.size;
    await s.close();
    const r = await MetadataStore.inspect(sp);
    t.ok(
      r.copies.every((c) => c.valid && !c.stale),
      `kill ${i + 1}: all copies valid after open`,
    );
    await sp.close();
  }
  t.ok(checked > 0, 'the child did commit something');
});

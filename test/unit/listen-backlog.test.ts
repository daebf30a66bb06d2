/** protocol/server.ts: the listen backlog sized for --max-connections, capped by net.core.somaxconn. */
import t from 'tap';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenBacklog, readSomaxconn } from '../../protocol/server';

t.test('listenBacklog', async (t) => {
  t.equal(listenBacklog(4096, 4096), 4096, 'the default --max-connections fits the default somaxconn');
  t.equal(listenBacklog(1500, 4096), 1500, 'sized for --max-connections');
  t.equal(listenBacklog(10_000, 4096), 4096, 'capped by somaxconn');
  t.equal(listenBacklog(2, 4096), 511, 'never below Node’s default of 511');
  t.equal(listenBacklog(2000, 128), 128, 'an old kernel’s somaxconn of 128 caps it too');
});

t.test('readSomaxconn', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'somaxconn-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'v'), '1024\n');
  t.equal(readSomaxconn(join(dir, 'v')), 1024, 'read from the file');
  t.equal(readSomaxconn(join(dir, 'missing')), 4096, 'unreadable: the kernel default');
  writeFileSync(join(dir, 'bad'), 'x\n');
  t.equal(readSomaxconn(join(dir, 'bad')), 4096, 'garbage: the kernel default');
  t.ok(readSomaxconn() > 0, 'this machine’s value');
});

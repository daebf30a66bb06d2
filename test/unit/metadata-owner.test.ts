/**
 * The owner marker (docs/FORMAT.md §3, offsets 336–415 of the header) and the liveness check that the
 * fallback without a file lock relies on (daemon/owner-lock.ts):
 * - claim() writes pid, host and start time into every copy's header; open() and readOwner() read it back;
 *   later checkpoints keep it; a fresh setup has none;
 * - the fields sit at the documented offsets; a long host name is cut at 64 bytes without splitting a
 *   UTF-8 character;
 * - markerIsLive: a live process with its real start time is live; a wrong start time (pid reused), a dead
 *   pid, or another host is not.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hostname } from 'node:os';
import { MetadataStore, readOwner } from '../../metadata/store';
import { decodeHeader, OFF } from '../../metadata/header';
import { markerIsLive, processStartMs, ownMarker } from '../../daemon/owner-lock';
import { TestFileBackend, tmpDir, MAIN } from '../helpers/metadata-util';
import { mainBlock } from '../../units';

t.test('claim writes the marker into every header; open and readOwner read it; checkpoints keep it', async (t) => {
  const file = path.join(tmpDir(t, 'owner'), 'spare.img');
  const spare = await TestFileBackend.open(file, { size: 16 << 20 });
  const s = await MetadataStore.create(spare, MAIN);
  t.equal(s.owner, undefined, 'a fresh setup has no owner');
  t.equal(await readOwner(spare), undefined);
  const host = 'ü'.repeat(40); // 80 bytes of UTF-8: cut to 32 characters (64 bytes)
  await s.claim({ pid: 4242, host, since: 1_750_000_000_123 });
  await s.commit({ pendingAdd: [mainBlock(7)] });
  await s.checkpoint();
  await s.close();
  const s2 = await MetadataStore.open(spare, MAIN);
  t.same(s2.owner, { pid: 4242, host: 'ü'.repeat(32), since: 1_750_000_000_123 }, 'read back after reopen, host cut at 64 bytes');
  t.same(await readOwner(spare), s2.owner, 'readOwner agrees');
  t.equal(s2.pendingCount, 1, 'the table is intact');
  await s2.close();
  await spare.close();

  const bytes = fs.readFileSync(file);
  t.equal(bytes.readUInt32LE(336), 4242, 'pid at 336');
  t.equal(Number(bytes.readBigUInt64LE(344)), 1_750_000_000_123, 'since at 344');
  t.equal(bytes.subarray(352, 416).toString('utf8').replace(/\0+$/, ''), 'ü'.repeat(32), 'host at 352, 64 bytes');
  t.equal(OFF.ownerPid, 336);
  const h = decodeHeader(bytes.subarray(0, 512));
  t.ok(h.ok && h.header.owner?.pid === 4242, 'decodeHeader sees it');
});

t.test('markerIsLive: live process with its start time; not a reused pid, a dead pid, or another host', async (t) => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 100));
  const since = processStartMs(child.pid!);
  t.ok(since && Math.abs(since - Date.now()) < 60_000, `start time of the child from /proc (${since})`);
  t.ok(markerIsLive({ pid: child.pid!, host: hostname(), since: since! }), 'live');
  t.notOk(markerIsLive({ pid: child.pid!, host: hostname(), since: since! - 3_600_000 }), 'same pid, other start time: a reused pid');
  t.notOk(markerIsLive({ pid: child.pid!, host: `${hostname()}-other`, since: since! }), 'another host cannot be checked: not live');
  t.notOk(markerIsLive(ownMarker()), 'this process itself is not "another owner"');
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(markerIsLive({ pid: child.pid!, host: hostname(), since: since! }), 'dead');
});

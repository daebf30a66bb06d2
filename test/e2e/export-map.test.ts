/**
 * `remapd export-map`: the pending blocks of a running daemon (and of its spare, offline) as a GNU
 * ddrescue mapfile and as a badblocks list, checked with the real ddrescuelog (-t, -l-, -l+).
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, run, REMAPD_BIN, MiB } from '../helpers';
import { createRemapSetup, startRemapd, remapctl, qemuIo, qemuIoClean, statusJson } from '../helpers/remap-setup';

const B = 4096;

t.test('export-map: ddrescue mapfile and badblocks list', async (t) => {
  const s = await createRemapSetup(t, {
    mainBytes: 32 * MiB + 2048, // a short last block: the map must end at the exact size
    spareBytes: 16 * MiB,
    faults: [
      { op: 'write', offset: 1 * MiB, length: 2 * B, error: 'EIO' }, // remapped on write: '+'
      { op: 'read', offset: 12 * MiB, length: B, error: 'EIO' }, // pending: '-'
      { op: 'read', offset: 20 * MiB, length: 2 * B, error: 'EIO' }, // pending: '-'
    ],
  });
  const srv = await startRemapd(t, s, ['--no-scan']);
  t.ok(qemuIoClean(await qemuIo(srv.uri, ['write -P 0x22 1M 8k'])), 'write over the write-error range succeeds (remapped)');
  t.notOk(qemuIoClean(await qemuIo(srv.uri, ['read 12M 4k'])), 'read of 12M fails');
  t.notOk(qemuIoClean(await qemuIo(srv.uri, ['read 20M 8k'])), 'read of 20M fails');
  const st = await statusJson(s);
  t.equal(st.pending.count, 3, 'three pending blocks');
  t.equal(st.remaps.total, 2, 'two remaps');

  const mapFile = join(s.dir, 'disk.map');
  const ex = await remapctl(s, ['export-map', '--format', 'ddrescue', '-o', mapFile]);
  t.equal(ex.code, 0, 'export-map --format ddrescue', { out: describe(ex) });
  const text = readFileSync(mapFile, 'utf8');
  t.match(text, /^# Mapfile\. Created by remapd/, 'header comment');
  t.match(text, /^0x00000000 +\+ +1$/m, 'current status line: finished');

  const tt = await run('ddrescuelog', ['-t', mapFile]);
  t.equal(tt.code, 0, 'ddrescuelog -t accepts it', { out: describe(tt) });
  t.match(tt.stdout, /bad-sector:\s+12288 B,\s+in\s+2 area\(s\)/, 'ddrescuelog -t: 12288 bytes bad in 2 areas', { out: tt.stdout });
  t.match(tt.stdout, /current status: finished/, 'ddrescuelog -t: finished', { out: tt.stdout });
  t.match(tt.stdout, /non-tried:\s+0 B/, 'ddrescuelog -t: nothing non-tried', { out: tt.stdout });
  const bad = await run('ddrescuelog', ['-b', String(B), '-l-', mapFile]);
  t.equal(bad.stdout, `${(12 * MiB) / B}\n${(20 * MiB) / B}\n${(20 * MiB) / B + 1}\n`, 'ddrescuelog -l-: exactly the pending blocks', {
    out: describe(bad),
  });
  const good512 = await run('ddrescuelog', ['-b', '512', '-l+', mapFile]);
  const goodCount = good512.stdout.trim().split('\n').length;
  t.equal(
    goodCount,
    (32 * MiB + 2048) / 512 - 24,
    'ddrescuelog -l+: every other 512-byte sector, up to the exact size (remapped ones are good)',
  );

  const bb = await remapctl(s, ['export-map', '--format', 'badblocks', '-b', '1024']);
  t.equal(bb.code, 0, 'export-map --format badblocks', { out: describe(bb) });
  const expect1k = [12 * 1024, 12 * 1024 + 1, 12 * 1024 + 2, 12 * 1024 + 3, ...Array.from({ length: 8 }, (_, i) => 20 * 1024 + i)];
  t.equal(bb.stdout, expect1k.map((n) => `${n}\n`).join(''), 'badblocks -b 1024: every 1 KiB block of the pending blocks');
  const bb4 = await remapctl(s, ['export-map', '--format', 'badblocks', '--block-size', '4096']);
  t.equal(bb4.stdout, '3072\n5120\n5121\n', 'badblocks -b 4096');
  const bbBad = await remapctl(s, ['export-map', '--format', 'badblocks', '-b', '1000']);
  t.equal(bbBad.code, 2, 'a block size that is not a power of two: usage error', { out: describe(bbBad) });

  await srv.stop();
  const off = await run(process.execPath, [REMAPD_BIN, 'export-map', '--format', 'ddrescue', '--spare', s.spare]);
  t.equal(off.code, 0, 'export-map --spare (offline)', { out: describe(off) });
  const offFile = join(s.dir, 'offline.map');
  writeFileSync(offFile, off.stdout);
  const cmp = await run('ddrescuelog', ['-b', String(B), '-l-', offFile]);
  t.equal(cmp.stdout, bad.stdout, 'offline map lists the same bad blocks');
});

/**
 * --alert-program with a real shell script that records its calls (arguments and REMAPD_* environment):
 * Remap (a burst of thousands coalesced into a few calls whose REMAPD_EVENT_COUNT adds up), SpareLow,
 * SpareFull, Pending, HealthChange and ScanPassDone; a program that hangs is killed after
 * --alert-timeout and logged while client I/O goes on; a failing program is logged; a missing program
 * is a usage error; a metadata copy damaged before serve is repaired at open and raised as MetadataRepaired.
 */
import t from 'tap';
import { chmodSync, closeSync, existsSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, run, REMAPD_BIN, MiB } from '../helpers';
import { createRemapSetup, startRemapd, remapctl, qemuIo, qemuIoClean, logRecords, statusJson } from '../helpers/remap-setup';
import { until } from '../helpers/loopdev';

interface Call {
  args: string[];
  env: Record<string, string>;
}

function recorder(dir: string, extra = ''): { program: string; calls: () => Call[] } {
  const program = join(dir, 'alert.sh');
  const log = join(dir, 'alerts.log');
  writeFileSync(
    program,
    `#!/bin/sh
${extra}
{ printf 'ARGS'; for a in "$@"; do printf '\\t%s' "$a"; done; printf '\\n'; env | grep '^REMAPD_' | sort; echo END; } >> ${log}
`,
  );
  chmodSync(program, 0o755);
  const calls = (): Call[] => {
    if (!existsSync(log)) return [];
    const out: Call[] = [];
    let cur: Call | undefined;
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      if (line.startsWith('ARGS')) cur = { args: line.split('\t').slice(1), env: {} };
      else if (line === 'END' && cur) {
        out.push(cur);
        cur = undefined;
      } else if (cur) {
        const i = line.indexOf('=');
        cur.env[line.slice(0, i)] = line.slice(i + 1);
      }
    }
    return out;
  };
  return { program, calls };
}

t.test('events reach the program, bursts are coalesced', async (t) => {
  const s = await createRemapSetup(t, {
    mainBytes: 32 * MiB,
    spareBytes: 12 * MiB,
    faults: [{ op: 'read', offset: 30 * MiB, length: 4096, error: 'EIO' }],
  });
  // The sleep makes the program slow, so the remap burst piles up behind the first call.
  const rec = recorder(s.dir, 'sleep 0.3');
  const srv = await startRemapd(t, s, ['--alert-program', rec.program, '--scan-rate', '0', '--scan-interval', '2s', '--export', 'backup']);

  const rm = await remapctl(s, ['remap', '0+16M']);
  t.equal(rm.code, 0, 'manual remap until the spare is full', { out: describe(rm) });
  const st = await statusJson(s);
  t.ok(st.spare.exhausted, 'spare exhausted', { spare: st.spare });
  t.notOk(qemuIoClean(await qemuIo(srv.uri, ['read 30M 4k'])), 'reading the bad block fails: pending');

  const want = ['Remap', 'SpareLow', 'SpareFull', 'Pending', 'HealthChange', 'ScanPassDone'];
  const all = await until(() => want.every((e) => rec.calls().some((c) => c.args[0] === e)), 120_000, 250);
  const calls = rec.calls();
  t.ok(all, `every event seen: ${want.join(', ')}`, { seen: calls.map((c) => c.args.join(' ')) });

  const remaps = calls.filter((c) => c.args[0] === 'Remap');
  const remapEvents = remaps.reduce((n, c) => n + Number(c.env.REMAPD_EVENT_COUNT), 0);
  t.equal(remapEvents, st.remaps.total, `REMAPD_EVENT_COUNT adds up to all ${st.remaps.total} remaps`);
  // One call runs at a time and at most one per event kind waits: calls are bounded by time, not by events.
  t.ok(remaps.length * 10 < st.remaps.total, `the burst of ${st.remaps.total} remaps became ${remaps.length} calls`);
  for (const c of calls) {
    t.equal(c.args[1], 'backup', `${c.args[0]}: SETUP is the export name`);
    t.equal(c.env.REMAPD_EVENT, c.args[0], `${c.args[0]}: REMAPD_EVENT`);
    t.match(c.env.REMAPD_REMAPS, /^\d+$/, `${c.args[0]}: REMAPD_REMAPS`);
  }
  const first = remaps[0];
  t.match(first.args[2], /^offset=\d+ reason=manual$/, 'Remap DETAIL');
  t.equal(first.env.REMAPD_MAIN, s.main, 'REMAPD_MAIN');
  t.equal(first.env.REMAPD_SPARE, s.spare, 'REMAPD_SPARE');
  const last = rec.calls().at(-1)!;
  t.equal(Number(last.env.REMAPD_SPARE_FREE), 0, 'REMAPD_SPARE_FREE at the end: 0');
  const full = calls.find((c) => c.args[0] === 'SpareFull')!;
  t.equal(full.args.length, 2, 'SpareFull has no DETAIL');
  const pend = calls.find((c) => c.args[0] === 'Pending')!;
  t.equal(pend.args[2], `offset=${30 * MiB}`, 'Pending DETAIL: the offset');
  t.ok(Number(pend.env.REMAPD_PENDING) >= 1, 'REMAPD_PENDING');
  const hc = calls.find((c) => c.args[0] === 'HealthChange')!;
  t.match(hc.args[2], /^\w+->\w+ score=\d+$/, 'HealthChange DETAIL: FROM->TO score');
  t.match(hc.env.REMAPD_HEALTH_LABEL ?? '', /^(degraded|failing|critical)$/, 'REMAPD_HEALTH_LABEL');
  const ran = logRecords(srv).filter((r) => r.msg === 'alert program ran').length;
  t.ok(ran >= want.length, `the log says each run (${ran})`);
});

t.test('a hanging program is killed after --alert-timeout; I/O goes on; failures are logged', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB, spareBytes: 12 * MiB });
  // The first call hangs; every later one exits 3.
  const hang = recorder(s.dir, `if [ ! -e ${s.dir}/hung ]; then touch ${s.dir}/hung; sleep 600; fi; exit 3`);
  const srv = await startRemapd(t, s, ['--alert-program', hang.program, '--alert-timeout', '1', '--no-scan']);
  t.equal((await remapctl(s, ['remap', '1M'])).code, 0, 'one remap');
  // While the program hangs, clients are served.
  const io = await qemuIo(srv.uri, ['write -P 0x5a 2M 64k', 'read -P 0x5a 2M 64k']);
  t.ok(qemuIoClean(io), 'client I/O while the alert program hangs', { out: describe(io) });
  const killed = await until(() => logRecords(srv).some((r) => r.msg === 'alert program timed out: killing it'), 60_000, 200);
  t.ok(killed, 'timeout logged');
  const failed = await until(() => logRecords(srv).some((r) => r.msg === 'alert program failed' && r.timedOut === true), 60_000, 200);
  t.ok(failed, 'the killed run is logged as failed');
  t.equal((await remapctl(s, ['remap', '3M'])).code, 0, 'another remap: the next run starts');
  const exit3 = await until(() => logRecords(srv).some((r) => r.msg === 'alert program failed' && r.exitCode === 3), 60_000, 200);
  t.ok(exit3, 'a non-zero exit is logged with its status', { log: logRecords(srv).filter((r) => String(r.msg).startsWith('alert')) });

  const bad = await run(process.execPath, [
    REMAPD_BIN,
    'serve',
    '--main',
    s.main,
    '--socket',
    join(s.dir, 'x.sock'),
    '--alert-program',
    join(s.dir, 'missing.sh'),
  ]);
  t.equal(bad.code, 2, 'missing alert program: usage error', { out: describe(bad) });
  t.match(bad.stderr, /--alert-program .*missing\.sh is not executable: ENOENT/);
});

t.test('a metadata copy damaged before serve: repaired at open, MetadataRepaired raised', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 16 * MiB, spareBytes: 12 * MiB });
  // The headers of the 5 copies start with the magic (FORMAT.md §2): break a CRC-covered byte of copy 1's.
  const img = readFileSync(s.spare);
  const magic = Buffer.from('RMPDMETA', 'latin1');
  const headers: number[] = [];
  for (let at = img.indexOf(magic); at >= 0; at = img.indexOf(magic, at + 1)) headers.push(at);
  t.equal(headers.length, 5, 'five metadata headers on the spare', { headers });
  const fd = openSync(s.spare, 'r+');
  writeSync(fd, Buffer.from([img[headers[1] + 16] ^ 0xff]), 0, 1, headers[1] + 16);
  closeSync(fd);
  const check = await run(process.execPath, [REMAPD_BIN, 'check', '--spare', s.spare, '--json']);
  t.match(check.stdout, /failedCheck/, 'check sees the damaged copy', { out: describe(check) });

  const rec = recorder(s.dir);
  await startRemapd(t, s, ['--alert-program', rec.program, '--no-scan']);
  const seen = await until(() => rec.calls().some((c) => c.args[0] === 'MetadataRepaired'), 60_000, 200);
  t.ok(seen, 'MetadataRepaired reaches the program', { seen: rec.calls().map((c) => c.args.join(' ')) });
  const calls = rec.calls().filter((c) => c.args[0] === 'MetadataRepaired');
  t.equal(calls.length, 1, 'raised once');
  t.equal(calls[0]?.args[2], 'copies=1', 'DETAIL: one copy repaired');
});

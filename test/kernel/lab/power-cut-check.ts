/**
 * Host side of the kernel lab's power-cut scenario. The guest ran remapd with main and spare carved out
 * of ONE dm-log-writes device (so one log orders both), a journaled write workload on /dev/nbd0 (FUA
 * writes, fsync = FLUSH, a dm mark `cK` after each completed flush or FUA write), then closed the log.
 * Here the log is replayed, in order, to every FLUSH/FUA/mark entry (and to points between them), and at
 * each point (on copies of the replayed images): `remapd check` exits 0, `remapd serve` opens the metadata, and every write the client
 * was promised durable before the last mark at or before that point reads back (guest/blockio.py verify).
 *
 *   node dist/test/kernel/lab/power-cut-check.js RUN_DIR TREE
 * RUN_DIR holds base.img's geometry in out/power-cut.env, log.img and out/journal. Prints `FIG k=v`
 * lines and one `BAD text` line per failed check (the runner reads them).
 */
import { spawnSync, spawn } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LOG_FLUSH, LOG_FUA, LOG_MARK, readWriteLog, replay, splitPlacement } from './log-writes';

const [runDir, tree] = process.argv.slice(2);
const env = Object.fromEntries(
  readFileSync(join(runDir, 'out', 'power-cut.env'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('=') as [string, string]),
);
const spareBytes = Number(env.SPARE_SECTORS) * 512;
const mainBytes = Number(env.MAIN_SECTORS) * 512;
const maxPoints = process.env.KERNEL_LAB_POWERCUT_POINTS === 'all' ? Infinity : Number(process.env.KERNEL_LAB_POWERCUT_POINTS ?? 80);
const remapd = join(tree, 'bin', 'remapd');
const blockio = join(tree, 'test', 'kernel', 'lab', 'guest', 'blockio.py');

function fig(k: string, v: string | number): void {
  console.log(`FIG ${k}=${v}`);
}
let bads = 0;
function bad(t: string): void {
  bads++;
  if (bads <= 20) console.log(`BAD ${t.replace(/\s*\n\s*/g, ' / ')}`);
}

const logPath = join(runDir, 'log.img');
const log = readWriteLog(logPath);
const e = log.entries;
fig('log_entries', e.length);
if (!e.some((x) => x.mark === 'dm-log-writes-end')) bad('log has no end mark: the guest did not close it');

// candidate points: after each flush/FUA/mark entry; plus the midpoint between consecutive ones
// a power cut before `remapd create` returned leaves no setup to open: points start at the guest's
// "created" mark
const created = e.findIndex((x) => x.mark === 'created');
if (created < 0) bad('log has no "created" mark');
const sync = e.filter((x) => x.index >= created && x.flags & (LOG_FLUSH | LOG_FUA | LOG_MARK)).map((x) => x.index + 1);
const cand = new Set<number>();
for (let i = 0; i < sync.length; i++) {
  cand.add(sync[i]);
  const prev = i ? sync[i - 1] : created + 1;
  if (sync[i] - prev > 2) cand.add(prev + Math.floor((sync[i] - prev) / 2));
}
let points = [...cand].sort((a, b) => a - b);
fig('replay_candidates', points.length);
if (points.length > maxPoints) {
  const step = points.length / maxPoints;
  points = Array.from({ length: maxPoints }, (_, i) => points[Math.floor(i * step)]);
  if (!points.includes(e.length)) points.push(e.length);
}
// the last client mark at or before each entry position
const markAt: number[] = [];
let k = 0;
for (const x of e) {
  if (x.mark && /^c\d+$/.test(x.mark)) k = Number(x.mark.slice(1));
  markAt.push(k);
}

const work = join(runDir, 'replay');
spawnSync('mkdir', ['-p', work]);
// the replay builds pristine images; each point's checks run on sparse copies, because remapd writes to
// what it opens (owner marker, repairs, freeing spare space) and the next replay step must not build
// on that
const pristineSpare = join(work, 'replayed-spare.img');
const pristineMain = join(work, 'replayed-main.img');
const spare = join(work, 'spare.img');
const main = join(work, 'main.img');
const sfd = openSync(pristineSpare, 'w+');
const mfd = openSync(pristineMain, 'w+');
ftruncateSync(sfd, spareBytes);
ftruncateSync(mfd, mainBytes);
const place = splitPlacement([
  { fd: sfd, size: spareBytes },
  { fd: mfd, size: mainBytes },
]);

async function serveAndVerify(point: number, mark: number): Promise<void> {
  const sock = join(work, 'r.sock');
  rmSync(sock, { force: true });
  const srv = spawn(
    process.execPath,
    [remapd, 'serve', '--main', main, '--spare', spare, '--socket', sock, '--no-scan', '--log-level', 'warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  srv.stderr.on('data', (d) => {
    err += d;
  });
  const t0 = Date.now();
  while (!existsSync(sock) && srv.exitCode === null && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 50));
  if (!existsSync(sock)) {
    bad(`point ${point}: remapd serve did not open the metadata: ${err.slice(0, 300)}`);
    srv.kill('SIGKILL');
    return;
  }
  if (mark > 0) {
    const v = spawnSync(
      '/usr/bin/python3',
      [blockio, 'verify', '--journal', join(runDir, 'out', 'journal'), '--nbd-socket', sock, '--upto-mark', String(mark)],
      { encoding: 'utf8' },
    );
    try {
      const r = JSON.parse(v.stdout) as { checked: number; bad: string[] };
      verified += r.checked;
      for (const b of r.bad) bad(`point ${point} (mark c${mark}): ${b}`);
    } catch {
      bad(`point ${point}: verify failed: ${v.stderr.slice(-300)}`);
    }
  }
  srv.kill('SIGTERM');
  await new Promise((r) => srv.once('exit', r));
}

let verified = 0;
async function main_(): Promise<void> {
  let at = 0;
  const t0 = Date.now();
  for (const p of points) {
    replay(logPath, log, at, p, place);
    at = p;
    for (const [from, to] of [
      [pristineSpare, spare],
      [pristineMain, main],
    ]) {
      const cp = spawnSync('cp', ['--sparse=always', from, to]);
      if (cp.status !== 0) throw new Error(`cp ${from} ${to} failed: ${cp.stderr}`);
    }
    const c = spawnSync(process.execPath, [remapd, 'check', '--main', main, '--spare', spare], { encoding: 'utf8' });
    if (c.status !== 0)
      bad(`point ${p}/${e.length}: remapd check exited ${c.status}: ${(c.stdout + c.stderr).trim().split('\n').slice(-2).join(' ')}`);
    await serveAndVerify(p, markAt[p - 1] ?? 0);
  }
  closeSync(sfd);
  closeSync(mfd);
  fig('replay_points_checked', points.length);
  fig('durable_writes_verified', verified);
  fig('replay_s', Math.round((Date.now() - t0) / 1000));
  rmSync(work, { recursive: true, force: true });
}
main_().catch((err) => {
  bad(`checker crashed: ${err instanceof Error ? err.stack : err}`);
  process.exitCode = 1;
});

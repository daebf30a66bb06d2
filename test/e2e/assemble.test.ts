/**
 * `remapd assemble` over real loop devices (losetup):
 * - two setups pair by fingerprint (loop backing file device+inode), not by path: detach everything,
 *   re-attach in another order (loop numbers change: mains and spares swap numbers, setups swap),
 *   still the same pairs;
 * - without --dry-run the exports start and serve the data written earlier through a plain `serve`
 *   (including blocks that were remapped to the spare, so a wrong pairing cannot read back right);
 * - conflicts: a cloned spare, a missing main, two spares for one main (all exit non-zero);
 *   a spare with one damaged metadata copy is a warning and still assembles;
 * - a mounted device is skipped (reported with -v).
 * Every loop device is detached and every daemon is killed at teardown, also on failure.
 */
import t from 'tap';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, run, tempDir, sparseImage, sparseRandomImage, nbdUri, killGroup, MiB } from '../helpers';
import { attachLoop, detachLoop, createSetup, remapd, until } from '../helpers/loopdev';
import { startServer } from '../helpers/server';

interface AssembleJson {
  setups: {
    name: string;
    setupUuid: string;
    main: string;
    spare: string;
    socket: string;
    control: string;
    state: string;
    command: string[];
  }[];
  conflicts: { setupUuid?: string; spare?: string; problem: string }[];
  warnings: string[];
}

function parseAssemble(stdout: string): AssembleJson | undefined {
  try {
    return JSON.parse(stdout) as AssembleJson;
  } catch {
    return undefined;
  }
}

interface Tap {
  teardown(fn: () => unknown): void;
}

/** Kill every process whose command line mentions `marker` (a unique temp dir of this test: only our daemons). */
function killDaemonsMentioning(marker: string): void {
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (Number(pid) !== process.pid && cmd.includes(marker) && cmd.includes('serve')) {
      try {
        process.kill(Number(pid), 'SIGTERM');
      } catch {
        /* gone */
      }
    }
  }
}

/** Wait for the daemons started by assemble into `socketDir` to exit (SIGTERM, then SIGKILL). */
async function stopAssembled(t: Tap, socketDir: string): Promise<void> {
  killDaemonsMentioning(socketDir);
  const gone = await until(
    () =>
      !readdirSync('/proc').some((p) => {
        try {
          const c = readFileSync(`/proc/${p}/cmdline`, 'utf8');
          return /^\d+$/.test(p) && c.includes(socketDir) && c.includes('serve');
        } catch {
          return false;
        }
      }),
    20_000,
  );
  if (!gone) {
    for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(socketDir)) killGroup(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  void t;
}

t.test('two setups pair by fingerprint across re-attach; assembled exports serve the data', async (t) => {
  const dir = tempDir(t, 'remapd-asm-');
  const img = (n: string, size: number) => sparseImage(join(dir, `${n}.img`), size);
  // Both mains have the same size and sector size: only the backing-file identity tells them apart.
  const files = { m1: img('m1', 64 * MiB), s1: img('s1', 32 * MiB), m2: img('m2', 64 * MiB), s2: img('s2', 32 * MiB) };

  let dev: Record<keyof typeof files, string> = {
    m1: await attachLoop(t, files.m1),
    s1: await attachLoop(t, files.s1),
    m2: await attachLoop(t, files.m2),
    s2: await attachLoop(t, files.s2),
  };
  const uuid1 = await createSetup(dev.m1, dev.s1);
  const uuid2 = await createSetup(dev.m2, dev.s2);
  t.not(uuid1, uuid2, 'two setups');

  // Write data through a plain serve of each setup. Write faults on main put a range of blocks on the
  // spare, so reading it back later needs the right spare as well as the right main.
  const faults = join(dir, 'faults.json');
  const fd = openSync(faults, 'w');
  writeSync(fd, JSON.stringify([{ op: 'write', offset: 2 * MiB, length: 256 * 1024, error: 'EIO' }]));
  closeSync(fd);
  const src = { 1: sparseRandomImage(join(dir, 'src1.img'), 64 * MiB), 2: sparseRandomImage(join(dir, 'src2.img'), 64 * MiB, 512 * 1024) };
  for (const [n, m, s] of [
    [1, dev.m1, dev.s1],
    [2, dev.m2, dev.s2],
  ] as const) {
    const sdir = join(dir, `serve${n}`);
    mkdirSync(sdir);
    const srv = await startServer(t, { kind: 'remapd', image: m, dir: sdir, extraArgs: ['--spare', s, '--faults', faults] });
    const c = await run('nbdcopy', [src[n], srv.uri], { timeoutMs: 180_000 });
    t.equal(c.code, 0, `nbdcopy src${n} -> plain serve of setup ${n}`, { out: describe(c), log: srv.log().slice(-3000) });
    const info = await srv.stop('SIGTERM');
    t.equal(info.code, 0, `serve ${n} stopped cleanly`, { log: srv.log().slice(-3000) });
    t.match(srv.log(), /write-error|remap/i, `setup ${n}: the failing writes were remapped (log)`);
  }

  const expectPairs = (out: AssembleJson | undefined, what: string): void => {
    t.ok(out, `${what}: JSON output`);
    if (!out) return;
    t.equal(out.setups.length, 2, `${what}: one object per setup`, { out });
    t.same(out.conflicts, [], `${what}: no conflicts`);
    const s1 = out.setups.find((s) => s.setupUuid === uuid1);
    const s2 = out.setups.find((s) => s.setupUuid === uuid2);
    t.same(s1 && { main: s1.main, spare: s1.spare }, { main: dev.m1, spare: dev.s1 }, `${what}: setup 1 = (${dev.m1}, ${dev.s1})`);
    t.same(s2 && { main: s2.main, spare: s2.spare }, { main: dev.m2, spare: dev.s2 }, `${what}: setup 2 = (${dev.m2}, ${dev.s2})`);
  };

  const r1 = await remapd(['assemble', '--scan', '--dry-run', '--json', dev.m1, dev.s1, dev.m2, dev.s2]);
  t.equal(r1.code, 0, 'dry run exits 0', { out: describe(r1) });
  expectPairs(parseAssemble(r1.stdout), 'first attach');
  t.ok(
    parseAssemble(r1.stdout)?.setups.every((s) => s.state === 'would-start'),
    'dry run starts nothing',
  );

  // Detach all; re-attach in another order so numbers move: spare 2 takes main 1's number, etc.
  const before = { ...dev };
  for (const d of Object.values(dev)) await detachLoop(d);
  const s2 = await attachLoop(t, files.s2);
  const m2 = await attachLoop(t, files.m2);
  const s1 = await attachLoop(t, files.s1);
  const m1 = await attachLoop(t, files.m1);
  dev = { m1, s1, m2, s2 };
  // Other tests may hold loop devices at the same time, so the exact numbers are not fixed; what
  // matters is that paths moved and some device now has a number another device had before.
  const roles = Object.keys(dev) as (keyof typeof dev)[];
  t.ok(roles.filter((r) => dev[r] !== before[r]).length >= 2, 'precondition: devices got other loop numbers', { before, after: dev });
  t.ok(
    roles.some((r) => roles.some((r2) => r2 !== r && before[r2] === dev[r])),
    'precondition: an old number now belongs to another device',
    { before, after: dev },
  );

  const r2 = await remapd(['assemble', '--scan', '--dry-run', '--json', dev.s2, dev.m1, dev.s1, dev.m2]);
  t.equal(r2.code, 0, 're-attached dry run exits 0', { out: describe(r2) });
  expectPairs(parseAssemble(r2.stdout), 'after re-attach');

  // Start them for real.
  const sockDir = join(dir, 'run');
  t.teardown(() => stopAssembled(t, sockDir));
  const r3 = await remapd(['assemble', '--scan', '--json', '--socket-dir', sockDir, dev.s2, dev.m1, dev.s1, dev.m2], {
    timeoutMs: 120_000,
  });
  t.equal(r3.code, 0, 'assemble exits 0', { out: describe(r3) });
  const out3 = parseAssemble(r3.stdout);
  expectPairs(out3, 'assemble');
  for (const [n, uuid] of [
    [1, uuid1],
    [2, uuid2],
  ] as const) {
    const s = out3?.setups.find((x) => x.setupUuid === uuid);
    if (!s) {
      t.fail(`setup ${n} missing from the assemble output`);
      continue;
    }
    t.equal(s.state, 'started', `setup ${n} started`, {
      log: existsSync(join(sockDir, `${s.name}.log`)) ? readFileSync(join(sockDir, `${s.name}.log`), 'utf8').slice(-3000) : '',
    });
    const uri = nbdUri(s.socket, s.name);
    const info = await run('nbdinfo', ['--size', uri], { timeoutMs: 30_000 });
    t.equal(info.stdout.trim(), String(64 * MiB), `nbdinfo on ${s.socket}: the main's size`, { out: describe(info) });
    const back = join(dir, `back${n}.img`);
    const c = await run('nbdcopy', [uri, back], { timeoutMs: 180_000 });
    t.equal(c.code, 0, `nbdcopy setup ${n} -> file`, { out: describe(c) });
    const cmp = await run('cmp', [src[n], back]);
    t.equal(cmp.code, 0, `setup ${n}: data written through plain serve reads back (incl. remapped blocks)`, { out: describe(cmp) });
    const st = await remapd(['status', '--json', '--control', s.control]);
    const sj = JSON.parse(st.stdout || '{}') as { setupUuid?: string; remaps?: { total: number } };
    t.equal(sj.setupUuid, uuid, `setup ${n}: the daemon serves the setup it was given`);
    t.ok((sj.remaps?.total ?? 0) > 0, `setup ${n}: the remaps made through plain serve are in the table`, { status: st.stdout });
  }

  // Running again sees them running and starts nothing new.
  const r4 = await remapd(['assemble', '--scan', '--json', '--socket-dir', sockDir, dev.m1, dev.s1, dev.m2, dev.s2]);
  t.same(
    parseAssemble(r4.stdout)?.setups.map((s) => s.state),
    ['running', 'running'],
    'second assemble: both already running',
    { out: describe(r4) },
  );
  await stopAssembled(t, sockDir);
});

t.test('conflicts and warnings', async (t) => {
  const dir = tempDir(t, 'remapd-asmc-');
  const img = (n: string, size: number) => sparseImage(join(dir, `${n}.img`), size);

  // A: a setup whose spare is also present as a dd copy
  img('ma', 64 * MiB);
  img('sa', 32 * MiB);
  const ma = await attachLoop(t, join(dir, 'ma.img'));
  const sa = await attachLoop(t, join(dir, 'sa.img'));
  const uuidA = await createSetup(ma, sa);
  const dd = await run('dd', [`if=${join(dir, 'sa.img')}`, `of=${join(dir, 'sa-copy.img')}`, 'bs=1M', 'conv=sparse', 'status=none']);
  t.equal(dd.code, 0, 'dd copy of the spare', { out: describe(dd) });
  const saCopy = await attachLoop(t, join(dir, 'sa-copy.img'));
  const rA = await remapd(['assemble', '--scan', '--dry-run', '--json', ma, sa, saCopy]);
  t.not(rA.code, 0, 'cloned spare: non-zero exit', { out: describe(rA) });
  const jA = parseAssemble(rA.stdout);
  t.ok(
    jA?.conflicts.some(
      (c) => c.setupUuid === uuidA && /setup .* is on 2 spares/.test(c.problem) && c.problem.includes(sa) && c.problem.includes(saCopy),
    ),
    'conflict: setup on 2 spares, naming both',
    { out: rA.stdout },
  );
  t.notOk(
    jA?.setups.some((s) => s.setupUuid === uuidA),
    'the cloned setup is not started',
  );
  const rAt = await remapd(['assemble', '--scan', '--dry-run', ma, sa, saCopy]);
  t.not(rAt.code, 0, 'cloned spare (text): non-zero exit');
  t.match(rAt.stderr, /conflict: setup .* is on 2 spares/, 'text output: conflict on stderr', { out: describe(rAt) });

  // B: a spare whose main is not among the candidates
  const rB = await remapd(['assemble', '--scan', '--dry-run', '--json', sa]);
  t.not(rB.code, 0, 'main missing: non-zero exit', { out: describe(rB) });
  t.ok(
    parseAssemble(rB.stdout)?.conflicts.some((c) => c.setupUuid === uuidA && c.spare === sa && /main device missing/.test(c.problem)),
    'conflict: main device missing',
    { out: rB.stdout },
  );

  // C: two spares created for the same main
  img('mc', 64 * MiB);
  img('sc1', 32 * MiB);
  img('sc2', 32 * MiB);
  const mc = await attachLoop(t, join(dir, 'mc.img'));
  const sc1 = await attachLoop(t, join(dir, 'sc1.img'));
  const sc2 = await attachLoop(t, join(dir, 'sc2.img'));
  const uuidC1 = await createSetup(mc, sc1);
  const uuidC2 = await createSetup(mc, sc2);
  const rC = await remapd(['assemble', '--scan', '--dry-run', '--json', sc1, mc, sc2]);
  t.not(rC.code, 0, 'two spares for one main: non-zero exit', { out: describe(rC) });
  const jC = parseAssemble(rC.stdout);
  t.ok(
    jC?.conflicts.some(
      (c) =>
        /2 spares claim the main device/.test(c.problem) &&
        c.problem.includes(mc) &&
        c.problem.includes(uuidC1) &&
        c.problem.includes(uuidC2),
    ),
    'conflict: spares claim the main device',
    { out: rC.stdout },
  );
  t.same(jC?.setups, [], 'neither claimant is started');

  // D: one damaged metadata copy: a warning, and it still assembles (and starts)
  img('md', 64 * MiB);
  img('sd', 32 * MiB);
  const md = await attachLoop(t, join(dir, 'md.img'));
  const sdPath = join(dir, 'sd.img');
  let sd = await attachLoop(t, sdPath);
  const uuidD = await createSetup(md, sd);
  await detachLoop(sd);
  // FORMAT.md §2: copy 1's header is at alignDown(S/4, U); S = 32 MiB, U = 64 KiB -> 8 MiB. Smash its
  // magic and CRC-covered fields (header CRC then fails).
  const hdr = 8 * MiB;
  const before = readFileSync(sdPath)
    .subarray(hdr, hdr + 8)
    .toString('latin1');
  t.equal(before, 'RMPDMETA', 'precondition: copy 1 header magic at 8 MiB');
  const f = openSync(sdPath, 'r+');
  writeSync(f, Buffer.alloc(64, 0xa5), 0, 64, hdr + 16);
  closeSync(f);
  sd = await attachLoop(t, sdPath);
  const rD = await remapd(['assemble', '--scan', '--dry-run', '--json', md, sd]);
  t.equal(rD.code, 0, 'damaged copy: exit 0', { out: describe(rD) });
  const jD = parseAssemble(rD.stdout);
  t.ok(
    jD?.warnings.some((w) => w.includes(sd) && /1 metadata cop(y|ies) damaged/.test(w)),
    'warning names the spare and the damaged copy',
    { out: rD.stdout },
  );
  t.same(
    jD?.setups.map((s) => [s.setupUuid, s.main, s.spare]),
    [[uuidD, md, sd]],
    'and it still pairs',
  );
  const rDt = await remapd(['assemble', '--scan', '--dry-run', md, sd]);
  t.match(rDt.stdout, /warning: .*damaged/, 'text output shows the warning', { out: describe(rDt) });
  const sockDir = join(dir, 'run');
  t.teardown(() => stopAssembled(t, sockDir));
  const rD2 = await remapd(['assemble', '--scan', '--json', '--socket-dir', sockDir, md, sd], { timeoutMs: 120_000 });
  const startedD = parseAssemble(rD2.stdout)?.setups[0];
  t.equal(startedD?.state, 'started', 'damaged-copy setup starts', { out: describe(rD2) });
  if (startedD) {
    const info = await run('nbdinfo', ['--size', nbdUri(startedD.socket, startedD.name)], { timeoutMs: 30_000 });
    t.equal(info.stdout.trim(), String(64 * MiB), 'and serves', { out: describe(info) });
  }
  await stopAssembled(t, sockDir);
  const chk = await remapd(['check', '--spare', sd, '--main', md]);
  t.notMatch(chk.stdout + chk.stderr, /header-crc|magic/, 'served once: the damaged copy was repaired', { out: describe(chk) });
});

t.test('a mounted device is skipped', async (t) => {
  const dir = tempDir(t, 'remapd-asmm-');
  sparseImage(join(dir, 'fs.img'), 64 * MiB);
  sparseImage(join(dir, 'm.img'), 64 * MiB);
  sparseImage(join(dir, 's.img'), 32 * MiB);
  const fsDev = await attachLoop(t, join(dir, 'fs.img'));
  const m = await attachLoop(t, join(dir, 'm.img'));
  const s = await attachLoop(t, join(dir, 's.img'));
  const uuid = await createSetup(m, s);
  const mk = await run('mkfs.ext4', ['-q', '-F', fsDev], { timeoutMs: 120_000 });
  t.equal(mk.code, 0, 'mkfs.ext4', { out: describe(mk) });
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  const mo = await run('mount', [fsDev, mnt], { timeoutMs: 60_000 });
  t.equal(mo.code, 0, 'mount', { out: describe(mo) });
  // registered after attachLoop: runs before the detach
  t.teardown(async () => {
    await run('umount', [mnt], { timeoutMs: 60_000 });
  });
  const r = await remapd(['assemble', '--scan', '--dry-run', '-v', fsDev, m, s]);
  t.equal(r.code, 0, 'exit 0', { out: describe(r) });
  t.match(r.stdout, new RegExp(`candidate ${fsDev}: skipped \\(mounted\\)`), '-v: the mounted device is reported as skipped (mounted)', {
    out: describe(r),
  });
  t.match(r.stdout, new RegExp(`main ${m}, spare ${s} \\(setup ${uuid}\\): would-start`), 'the other setup still pairs', {
    out: describe(r),
  });
  const rq = await remapd(['assemble', '--scan', '--dry-run', fsDev, m, s]);
  t.notMatch(rq.stdout, /candidate/, 'without -v candidates are not listed');
  await run('umount', [mnt], { timeoutMs: 60_000 });
});

/**
 * One owner per setup, on regular files and on loop devices:
 * - a second `serve` on a setup in use exits non-zero with a message naming the owner (pid, host, since),
 *   and the first daemon keeps serving, its metadata untouched;
 * - `create --force` on a spare in use is refused the same way (and nothing is written);
 * - `assemble` reports the setup as in use instead of starting a second daemon;
 * - the lock is the truth: after a clean stop, or a kill -9 that leaves a stale owner marker behind, the
 *   next `serve` starts.
 * Two daemons on one setup both write the metadata and corrupt each other's remaps (issue 10).
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, run, tempDir, sparseImage, sparseRandomImage, MiB, REMAPD_BIN } from '../helpers';
import { attachLoop, createSetup, remapd } from '../helpers/loopdev';
import { startServer } from '../helpers/server';
import { callControl } from '../../daemon/control-client';

t.setTimeout(300_000);

interface Devices {
  dir: string;
  main: string;
  spare: string;
}

async function files(t: Tap): Promise<Devices> {
  const dir = tempDir(t, 'remapd-ex-');
  return { dir, main: sparseRandomImage(join(dir, 'main.img'), 16 * MiB), spare: sparseImage(join(dir, 'spare.img'), 16 * MiB) };
}

async function loops(t: Tap): Promise<Devices> {
  const f = await files(t);
  return { dir: f.dir, main: await attachLoop(t, f.main), spare: await attachLoop(t, f.spare) };
}

type Tap = { teardown(fn: () => unknown): void };

/** SIGKILL every `remapd serve` whose command line mentions `marker` (a temp dir of this test only). */
async function stopDaemonsMentioning(marker: string): Promise<void> {
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n) && Number(n) !== process.pid)) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes(marker) && cmd.includes('serve')) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await new Promise((r) => setTimeout(r, 500)); // let the kernel drop its claims before losetup -d
}

for (const [kind, make] of [
  ['regular files', files],
  ['loop devices', loops],
] as const) {
  t.test(`${kind}: a second serve and create --force are refused, naming the owner`, async (t) => {
    const d = await make(t);
    await createSetup(d.main, d.spare);
    const ctl = join(d.dir, 'one.ctl');
    const one = await startServer(t, {
      kind: 'remapd',
      image: d.main,
      dir: d.dir,
      socket: join(d.dir, 'one.sock'),
      extraArgs: ['--spare', d.spare, '--control', ctl, '--no-scan'],
    });
    const before = (await callControl(ctl, 'status')) as Record<string, unknown>;

    const two = await run(
      process.execPath,
      [
        REMAPD_BIN,
        'serve',
        '--main',
        d.main,
        '--spare',
        d.spare,
        '--socket',
        join(d.dir, 'two.sock'),
        '--control',
        join(d.dir, 'two.ctl'),
        '--no-scan',
      ],
      { timeoutMs: 60_000 },
    );
    t.not(two.code, 0, `the second serve exits non-zero\n${describe(two)}`);
    t.match(two.stderr, /in use/, 'says the setup is in use');
    t.match(two.stderr, new RegExp(`pid ${one.pid}\\b`), `names the owner's pid ${one.pid}`);
    t.match(two.stderr, new RegExp(hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'names the host');
    t.match(two.stderr, /since \d{4}-\d\d-\d\dT/, 'says since when');
    t.ok(one.isRunning(), 'the first daemon still runs');

    const force = await remapd(['create', '--force', '--main', d.main, '--spare', d.spare]);
    t.not(force.code, 0, `create --force on a spare in use is refused\n${describe(force)}`);
    t.match(force.stderr, new RegExp(`in use.*pid ${one.pid}\\b`, 's'), 'naming the owner');

    const after = (await callControl(ctl, 'status')) as Record<string, unknown>;
    t.same(after.remaps, before.remaps, 'the first daemon is undisturbed');
    const py = await run('nbdinfo', ['--size', one.uri], { timeoutMs: 30_000 });
    t.equal(py.stdout.trim(), String(16 * MiB), 'and still serves');

    const asmDir = join(d.dir, 'asm');
    t.teardown(() => stopDaemonsMentioning(asmDir)); // a broken assemble may start a second daemon
    const asm = await remapd(['assemble', '--scan', '--json', '--socket-dir', asmDir, d.main, d.spare]);
    const plan = JSON.parse(asm.stdout || '{}') as { setups?: { state: string }[] };
    t.equal(plan.setups?.length, 1, `assemble finds the setup\n${describe(asm)}`);
    t.match(
      plan.setups?.[0]?.state ?? '',
      new RegExp(`in use.*pid ${one.pid}\\b`),
      'assemble reports it in use instead of starting a second daemon',
    );

    // clean stop: the next serve starts
    t.equal((await one.stop('SIGTERM', 30_000)).code, 0, 'first daemon stops cleanly');
    const three = await startServer(t, {
      kind: 'remapd',
      image: d.main,
      dir: d.dir,
      socket: join(d.dir, 'three.sock'),
      extraArgs: ['--spare', d.spare, '--control', join(d.dir, 'three.ctl'), '--no-scan'],
    });
    t.ok(three.isRunning(), 'a serve after a clean stop starts');
    // kill -9: the owner marker stays behind, naming a dead process; the lock went with the process
    await three.stop('SIGKILL');
    const four = await startServer(t, {
      kind: 'remapd',
      image: d.main,
      dir: d.dir,
      socket: join(d.dir, 'four.sock'),
      extraArgs: ['--spare', d.spare, '--control', join(d.dir, 'four.ctl'), '--no-scan'],
    });
    t.ok(four.isRunning(), 'a stale owner marker of a killed daemon does not block');
    await four.stop();
    const recreate = await remapd(['create', '--force', '--main', d.main, '--spare', d.spare]);
    t.equal(recreate.code, 0, `create --force on a spare nobody uses works\n${describe(recreate)}`);
  });
}

t.test('regular files without the native addon: the owner marker of a live daemon refuses, a dead one does not', async (t) => {
  const saved = process.env.REMAPD_NATIVE;
  process.env.REMAPD_NATIVE = '0'; // every remapd started below runs without flock
  t.teardown(() => {
    if (saved === undefined) delete process.env.REMAPD_NATIVE;
    else process.env.REMAPD_NATIVE = saved;
  });
  const d = await files(t);
  await createSetup(d.main, d.spare);
  const one = await startServer(t, {
    kind: 'remapd',
    image: d.main,
    dir: d.dir,
    socket: join(d.dir, 'one.sock'),
    extraArgs: ['--spare', d.spare, '--control', join(d.dir, 'one.ctl'), '--no-scan'],
  });
  const two = await run(
    process.execPath,
    [
      REMAPD_BIN,
      'serve',
      '--main',
      d.main,
      '--spare',
      d.spare,
      '--socket',
      join(d.dir, 'two.sock'),
      '--control',
      join(d.dir, 'two.ctl'),
      '--no-scan',
    ],
    { timeoutMs: 60_000, env: process.env },
  );
  t.not(two.code, 0, `the second serve is refused\n${describe(two)}`);
  t.match(two.stderr, new RegExp(`in use by remapd pid ${one.pid}\\b.*owner marker`, 's'), 'by the marker, naming the owner');
  const force = await run(process.execPath, [REMAPD_BIN, 'create', '--force', '--main', d.main, '--spare', d.spare], {
    timeoutMs: 60_000,
    env: process.env,
  });
  t.not(force.code, 0, 'create --force refused too');
  await one.stop('SIGKILL');
  const three = await startServer(t, {
    kind: 'remapd',
    image: d.main,
    dir: d.dir,
    socket: join(d.dir, 'three.sock'),
    extraArgs: ['--spare', d.spare, '--control', join(d.dir, 'three.ctl'), '--no-scan'],
  });
  t.ok(three.isRunning(), 'the marker of a killed daemon does not block');
});

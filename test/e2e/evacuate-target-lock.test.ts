/**
 * The evacuation target has one owner (daemon/evacuate/target-claim.ts): while setup A evacuates onto a
 * loop device, setup B's `evacuate --to` the same device and a `remapd serve --main` on it are refused,
 * naming A's pid; the setup's own spare (under another name) and main are refused; a mounted filesystem
 * is refused, naming the mount point; cancel frees the target for B; after B's --switch the target stays
 * claimed. Also the flock path: two evacuations onto one image file, and another remapd's spare (named by
 * its owner marker).
 */
import t from 'tap';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, run, MiB, sparseImage, REMAPD_BIN } from '../helpers';
import { createRemapSetup, startRemapd, remapctl, type RemapSetup } from '../helpers/remap-setup';
import { attachLoop, until } from '../helpers/loopdev';

const SIZE = 16 * MiB;

async function phase(s: RemapSetup): Promise<string> {
  const r = await remapctl(s, ['evacuate', '--json']);
  return (JSON.parse(r.stdout) as { phase: string }).phase;
}

async function setupPair(t: { teardown(fn: () => unknown): void }): Promise<[RemapSetup, RemapSetup, number, number]> {
  const a = await createRemapSetup(t, { mainBytes: SIZE, spareBytes: 16 * MiB, fill: 'random' });
  const b = await createRemapSetup(t, { mainBytes: SIZE, spareBytes: 16 * MiB, fill: 'random' });
  const srvA = await startRemapd(t, a, ['--no-scan', '--state-dir', a.dir]);
  const srvB = await startRemapd(t, b, ['--no-scan', '--state-dir', b.dir]);
  return [a, b, srvA.pid, srvB.pid];
}

t.test('a block device target: one owner, never the setup itself, never a mounted disk', async (t) => {
  const [a, b, pidA] = await setupPair(t);
  const target = await attachLoop(t, sparseImage(join(a.dir, 'new.img'), SIZE));

  // The setup's own devices, under other names.
  const spareLink = join(a.dir, 'spare-alias');
  symlinkSync(a.spare, spareLink);
  const own = await remapctl(a, ['evacuate', '--to', spareLink]);
  t.not(own.code, 0, 'evacuate onto its own spare (through a symlink) refused', { out: describe(own) });
  t.match(own.stderr, /is this setup's own spare/, 'says it is the own spare');
  const ownMain = await remapctl(a, ['evacuate', '--to', a.main]);
  t.not(ownMain.code, 0, 'evacuate onto its own main refused');
  t.match(ownMain.stderr, /is this setup's own main/, 'says it is the own main');
  t.equal(await phase(a), 'none', 'nothing started');

  // A mounted filesystem.
  const fsImg = await attachLoop(t, sparseImage(join(a.dir, 'fs.img'), SIZE));
  t.equal((await run('mkfs.ext4', ['-F', '-q', fsImg], { timeoutMs: 120_000 })).code, 0, 'mkfs.ext4');
  const mnt = join(a.dir, 'mnt');
  mkdirSync(mnt);
  t.equal((await run('mount', [fsImg, mnt])).code, 0, 'mounted');
  t.teardown(() => run('umount', [mnt]).then(() => undefined));
  const mounted = await remapctl(a, ['evacuate', '--to', fsImg]);
  t.not(mounted.code, 0, 'a mounted disk refused', { out: describe(mounted) });
  t.match(mounted.stderr, new RegExp(`evacuation target ${fsImg} is in use by the filesystem mounted at ${mnt}`), 'names the mount point');

  // A claims the target; B, and a serve, are refused with A named.
  const startA = await remapctl(a, ['evacuate', '--to', target]);
  t.equal(startA.code, 0, 'A: evacuate --to the loop device', { out: describe(startA) });
  t.ok(await until(async () => (await phase(a)) === 'done', 120_000, 200), 'A: copy done (and still claimed)');
  const twice = await remapctl(b, ['evacuate', '--to', target]);
  t.not(twice.code, 0, 'B: evacuate onto the same target refused', { out: describe(twice) });
  t.match(twice.stderr, new RegExp(`evacuation target ${target} is in use by process pid ${pidA}\\b`), "names A's pid");
  t.equal(await phase(b), 'none', 'B did not start');
  const serve = await run(
    process.execPath,
    [REMAPD_BIN, 'serve', '--main', target, '--socket', join(b.dir, 'x.sock'), '--control', join(b.dir, 'x.ctl')],
    {
      timeoutMs: 60_000,
    },
  );
  t.not(serve.code, 0, 'a second serve with the target as main refused', { out: describe(serve) });
  t.match(serve.stderr, new RegExp(`main ${target} is in use by process pid ${pidA}\\b`), "names A's pid");

  // Cancel gives it back: B may take it, and keeps it after --switch.
  t.equal((await remapctl(a, ['evacuate', '--cancel'])).code, 0, 'A: cancel');
  const startB = await remapctl(b, ['evacuate', '--to', target]);
  t.equal(startB.code, 0, 'B: the target is free after A cancelled', { out: describe(startB) });
  t.ok(await until(async () => (await phase(b)) === 'done', 120_000, 200), 'B: copy done');
  t.equal((await remapctl(b, ['evacuate', '--switch'])).code, 0, 'B: switch');
  const afterSwitch = await remapctl(a, ['evacuate', '--to', target]);
  t.not(afterSwitch.code, 0, 'after the switch the target (now served) is still claimed', { out: describe(afterSwitch) });
  t.match(afterSwitch.stderr, /is in use by process pid \d+/, 'refused with the owner named');
  const cmp = await run('cmp', [b.main, target]);
  t.equal(cmp.code, 0, "B's export is on the target", { out: describe(cmp) });
});

t.test("an image file target: the flock claim; another remapd's spare named by its owner marker", async (t) => {
  const [a, b, pidA, pidB] = await setupPair(t);
  const other = await remapctl(a, ['evacuate', '--to', b.spare]);
  t.not(other.code, 0, "A: evacuate onto B's spare refused", { out: describe(other) });
  t.match(
    other.stderr,
    new RegExp(`evacuation target ${b.spare} is in use by remapd pid ${pidB} on host .*\\(locked\\)`),
    'names B by its marker',
  );
  const target = sparseImage(join(a.dir, 'new.img'), SIZE);
  t.equal((await remapctl(a, ['evacuate', '--to', target])).code, 0, 'A: evacuate --to the file');
  const twice = await remapctl(b, ['evacuate', '--to', target]);
  t.not(twice.code, 0, 'B: the same file refused', { out: describe(twice) });
  t.match(twice.stderr, new RegExp(`evacuation target ${target} is in use by process pid ${pidA}\\b.*\\(locked\\)`), "names A's pid");
});

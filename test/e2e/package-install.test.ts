/**
 * The install path: `npm run package` (packaging/build-deb.sh) builds a .deb; on this machine it is
 * installed with dpkg, the installed binary serves an image, man finds remapd(8), `systemd-analyze
 * verify` accepts the installed units by name (man:remapd(8) in Documentation= is checked too), and
 * `dpkg -P` removes every file. Skipped when a remapd package is already installed here.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, run, tempDir, sparseImage, MiB, REPO_ROOT } from '../helpers';

const installedAlready = /install ok installed/.test(
  spawnSync('dpkg-query', ['-W', '-f=${Status}', 'remapd'], { encoding: 'utf8' }).stdout ?? '',
);
const UNITS = [
  'remapd@t1.service',
  'remapd@t1.socket',
  'remapd-assemble.service',
  'remapd-nbd-attach@t1.service',
  'remapd-alert@t1.service',
];

t.test(
  'build, install, verify, uninstall',
  { skip: installedAlready ? 'a remapd package is installed on this host: not touching it' : false },
  async (t) => {
    const out = tempDir(t, 'remapd-deb-');
    const b = await run('bash', [join(REPO_ROOT, 'packaging', 'build-deb.sh')], {
      env: { ...process.env, OUT_DIR: out },
      timeoutMs: 900_000,
    });
    t.equal(b.code, 0, 'npm run package (build-deb.sh)', { out: describe(b) });
    const version = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).version as string;
    const deb = b.stdout.trim().split('\n').pop()!;
    t.match(deb, new RegExp(`remapd_${version}_\\w+\\.deb$`), 'named remapd_VERSION_ARCH.deb');
    const list = await run('dpkg-deb', ['-c', deb]);
    for (const f of [
      './usr/bin/remapd',
      './usr/lib/remapd/bin/remapd',
      './usr/lib/remapd/dist/daemon/cli.js',
      './lib/systemd/system/remapd@.service',
      './usr/share/man/man8/remapd.8.gz',
      './usr/lib/remapd/node_modules/yargs/package.json',
    ]) {
      t.match(list.stdout, new RegExp(` ${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}( ->|$)`, 'm'), `contains ${f}`);
    }
    t.notMatch(list.stdout, /node_modules\/(tap|typescript)\//, 'no dev dependencies');
    t.notMatch(list.stdout, /dist\/test\//, 'no tests');

    t.teardown(() => run('dpkg', ['-P', 'remapd'], { timeoutMs: 300_000 }));
    const inst = await run('dpkg', ['-i', deb], { timeoutMs: 300_000 });
    t.equal(inst.code, 0, 'dpkg -i', { out: describe(inst) });
    const v = await run('/usr/bin/remapd', ['--version']);
    t.equal(v.stdout.trim(), version, '/usr/bin/remapd --version');

    // The installed program (not this checkout) serves an image.
    const dir = tempDir(t, 'remapd-deb-run-');
    const img = sparseImage(join(dir, 'disk.img'), 8 * MiB);
    const sock = join(dir, 'nbd.sock');
    const srv = spawnSync(
      'sh',
      ['-c', `/usr/bin/remapd serve --main ${img} --socket ${sock} --control ${dir}/ctl --no-scan >${dir}/log 2>&1 & echo $!`],
      { encoding: 'utf8' },
    );
    const pid = Number(srv.stdout.trim());
    t.teardown(() => {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    });
    let info = await run('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`]);
    for (let i = 0; i < 50 && info.code !== 0; i++) {
      await new Promise((r) => setTimeout(r, 200));
      info = await run('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`]);
    }
    t.equal(info.stdout.trim(), String(8 * MiB), 'the installed daemon serves (nbdinfo --size)', { out: describe(info) });
    process.kill(pid, 'SIGTERM');

    const w = await run('man', ['-w', 'remapd']);
    t.equal(w.stdout.trim(), '/usr/share/man/man8/remapd.8.gz', 'man -w remapd');
    const page = await run('man', ['remapd'], { env: { ...process.env, MANPAGER: 'cat', MANWIDTH: '80' } });
    t.match(page.stdout, /EXIT STATUS/, 'man remapd renders');

    const verify = await run('systemd-analyze', ['verify', ...UNITS], {
      cwd: dir,
      env: { ...process.env, SYSTEMD_LOG_LEVEL: 'notice' },
      timeoutMs: 120_000,
    });
    t.equal(verify.code, 0, 'systemd-analyze verify of the installed units (man pages checked)', { out: describe(verify) });
    t.equal((verify.stdout + verify.stderr).trim(), '', 'no warnings', { out: describe(verify) });

    const rm = await run('dpkg', ['-P', 'remapd'], { timeoutMs: 300_000 });
    t.equal(rm.code, 0, 'dpkg -P (remove and purge)', { out: describe(rm) });
    for (const f of ['/usr/bin/remapd', '/usr/lib/remapd', '/lib/systemd/system/remapd@.service', '/usr/share/man/man8/remapd.8.gz'])
      t.notOk(existsSync(f), `${f} removed`);
    const gone = await run('systemd-analyze', ['verify', 'remapd@t1.service'], { cwd: dir });
    t.not(gone.code, 0, 'after removal the unit is unknown (the verify above was of the installed files)');
  },
);

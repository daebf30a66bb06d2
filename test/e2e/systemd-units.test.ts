/**
 * `systemd-analyze verify` on every unit in systemd/. The units reference /usr/bin/remapd,
 * which does not exist in a checkout, so a copy with ExecStart rewritten to this checkout's bin/remapd
 * is verified (templates under an instance name, as systemd would load them). A unit with a typo'd
 * key is verified too, to prove the check catches what it should.
 */
import t from 'tap';
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir, run, describe, REPO_ROOT, REMAPD_BIN } from '../helpers';
import { DEFAULT_MAX_CONNECTIONS, listenBacklog } from '../../protocol/server';

/** Skip reason when a tool is missing (tap's skip option needs it synchronously). */
function need(cmd: string): string | false {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0 ? false : `${cmd} not installed`;
}

const UNIT_DIR = join(REPO_ROOT, 'systemd');
const INSTALLED_BIN = '/usr/bin/remapd';
const units = readdirSync(UNIT_DIR)
  .filter((f) => /\.(service|socket|target|timer)$/.test(f))
  .sort();

/** The units as loaded for instance "t1", rewritten to this checkout, in a fresh directory. */
function stage(dir: string, edit: (name: string, text: string) => string = (_n, s) => s): string[] {
  const out: string[] = [];
  for (const u of units) {
    const name = u.replace('@.', '@t1.');
    const text = readFileSync(join(UNIT_DIR, u), 'utf8').split(INSTALLED_BIN).join(REMAPD_BIN);
    writeFileSync(join(dir, name), edit(name, text));
    out.push(join(dir, name));
  }
  return out;
}

/** Lines of verify output that concern our units (a host's own units may add unrelated noise). */
function ours(output: string, dir: string): string[] {
  return output.split('\n').filter((l) => l.includes(dir) || /remapd/.test(l));
}

async function verify(files: string[]) {
  return run('systemd-analyze', ['verify', '--man=no', ...files], {
    timeoutMs: 120_000,
    env: { ...process.env, SYSTEMD_LOG_LEVEL: 'notice' },
  });
}

t.test('systemd-analyze verify: every unit is clean', { skip: need('systemd-analyze') }, async (t) => {
  t.same(
    units,
    ['remapd-alert@.service', 'remapd-assemble.service', 'remapd-nbd-attach@.service', 'remapd@.service', 'remapd@.socket'],
    'the expected units exist',
  );
  const dir = tempDir(t, 'remapd-units-');
  const files = stage(dir);
  const r = await verify(files);
  t.equal(r.code, 0, 'verify exits 0', { out: describe(r) });
  t.same(ours(r.stdout + r.stderr, dir), [], 'no warnings about our units', { out: describe(r) });
});

t.test('verify is not vacuous: a misspelt key and a missing binary are reported', { skip: need('systemd-analyze') }, async (t) => {
  const dir = tempDir(t, 'remapd-units-');
  const files = stage(dir, (name, s) => (name === 'remapd@t1.service' ? s.replace('WatchdogSec=', 'WatchdogSecs=') : s));
  const r = await verify(files);
  t.match(ours(r.stdout + r.stderr, dir).join('\n'), /WatchdogSecs/, 'unknown key reported', { out: describe(r) });

  const dir2 = tempDir(t, 'remapd-units-');
  copyFileSync(join(UNIT_DIR, 'remapd-assemble.service'), join(dir2, 'remapd-assemble.service'));
  const r2 = await verify([join(dir2, 'remapd-assemble.service')]);
  t.not(r2.code, 0, 'the unmodified unit fails here (no /usr/bin/remapd): ExecStart paths are checked', { out: describe(r2) });
});

t.test('remapd@.service: the settings the daemon relies on', async (t) => {
  const s = readFileSync(join(UNIT_DIR, 'remapd@.service'), 'utf8');
  const has = (re: RegExp, what: string) => t.match(s, re, what);
  has(/^Type=notify$/m, 'Type=notify');
  has(/^NotifyAccess=all$/m, 'NotifyAccess=all (systemd-notify fallback sends from a child)');
  has(/^ExecStart=\/usr\/bin\/remapd serve --config \/etc\/remapd\/%i\.json$/m, 'one config file per instance');
  has(/^WatchdogSec=\d+/m, 'watchdog enabled');
  has(/^Restart=on-failure$/m, 'Restart=on-failure');
  has(/^RestartPreventExitStatus=2$/m, 'config errors (exit 2) are not restarted');
  has(/^ProtectSystem=strict$/m, 'ProtectSystem=strict');
  has(/^ReadWritePaths=.*\/run\/remapd.*\/var\/lib\/remapd/m, 'ReadWritePaths');
  has(/^DeviceAllow=block-\* rw$/m, 'block devices allowed');
  has(/^DevicePolicy=closed$/m, 'other devices closed');
  has(/^NoNewPrivileges=yes$/m, 'NoNewPrivileges');
  has(/^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$/m, 'address families');
  t.notMatch(s, /^MemoryDenyWriteExecute=/m, 'MemoryDenyWriteExecute not set (V8 JIT)');
  t.notMatch(s, /^PrivateNetwork=/m, 'no PrivateNetwork (TCP listen)');
  has(/^OnFailure=remapd-alert@%i\.service$/m, 'OnFailure= runs the alert unit');
  has(/^CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_SYS_RAWIO$/m, 'capabilities');
  has(/CAP_SYS_RAWIO: only for SMART\. .*smartctl/, 'CAP_SYS_RAWIO kept only for SMART, with the reason');
  const sock = readFileSync(join(UNIT_DIR, 'remapd@.socket'), 'utf8');
  t.match(sock, /^ListenStream=\/run\/remapd\/%i\.sock$/m, 'socket path matches the attach unit');
  t.match(
    sock,
    new RegExp(`^Backlog=${listenBacklog(DEFAULT_MAX_CONNECTIONS, Number.MAX_SAFE_INTEGER)}$`, 'm'),
    'Backlog= is the backlog the daemon itself listens with for the default --max-connections',
  );
  const attach = readFileSync(join(UNIT_DIR, 'remapd-nbd-attach@.service'), 'utf8');
  t.match(attach, /remapd attach --socket \/run\/remapd\/%i\.sock /, 'attach unit uses remapd attach on the instance socket');
  t.match(attach, /^Wants=remapd@%i\.service$/m, 'Wants=, not Requires=: restarting the daemon must not restart (detach) the attach unit');
  t.notMatch(attach, /^Requires=/m, 'no Requires=');
  has(/^FileDescriptorStoreMax=(\d+)$/m, 'a file descriptor store for restarts with clients kept');
  t.equal(
    /^FileDescriptorStoreMax=(\d+)$/m.exec(s)?.[1],
    /^Environment=REMAPD_FDSTORE=(\d+)$/m.exec(s)?.[1],
    'REMAPD_FDSTORE matches FileDescriptorStoreMax=',
  );
  has(/^ExecReload=\/bin\/kill -HUP \$MAINPID$/m, 'reload = SIGHUP hand-over');
  t.match(readFileSync(join(UNIT_DIR, 'remapd-assemble.service'), 'utf8'), /^ExecStart=\/usr\/bin\/remapd assemble --scan$/m);
});

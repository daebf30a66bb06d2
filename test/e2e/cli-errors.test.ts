/**
 * What a user hits at the shell: a closed output pipe (`remapd list | head -1`), a missing control
 * socket and a bad flag each end with one line on stderr (no stack trace) and the documented exit
 * status (daemon/exit-codes.ts).
 */
import t from 'tap';
import { join } from 'node:path';
import { describe, run, REMAPD_BIN, MiB } from '../helpers';
import { createRemapSetup, startRemapd, remapctl } from '../helpers/remap-setup';

/** A stack trace as Node prints it. */
const STACK = /^\s+at .+\(.*:\d+:\d+\)$|^\s+at .+:\d+:\d+$|node:internal/m;

function sh(script: string, env: NodeJS.ProcessEnv = {}) {
  return run('bash', ['-c', script], { env: { ...process.env, ...env }, timeoutMs: 120_000 });
}

t.test('closed pipe, missing socket, bad flag', async (t) => {
  const s = await createRemapSetup(t, { mainBytes: 48 * MiB, spareBytes: 40 * MiB });
  await startRemapd(t, s);
  // 16 MiB remapped = 4096 lines of `list`, far more than a pipe buffer holds.
  const rm = await remapctl(s, ['remap', '0+16M']);
  t.equal(rm.code, 0, 'remap 16 MiB by hand', { out: describe(rm) });

  const head = await sh(`node ${REMAPD_BIN} list --control ${s.control} | head -1; echo "status=\${PIPESTATUS[0]}" >&2`);
  t.match(head.stdout, /^4096 remapped block\(s\)/, 'head got the first line', { out: describe(head) });
  t.match(head.stderr, /status=141\s*$/, 'remapd exits 141 (output closed)', { out: describe(head) });
  t.notMatch(head.stderr, STACK, 'no stack trace', { out: describe(head) });
  t.notMatch(head.stderr, /EPIPE/, 'no EPIPE message', { out: describe(head) });

  const json = await sh(
    `node ${REMAPD_BIN} list --json --control ${s.control} | head -c 100 >/dev/null; echo "status=\${PIPESTATUS[0]}" >&2`,
  );
  t.match(json.stderr, /status=141\s*$/, 'list --json | head -c: 141 too', { out: describe(json) });
  t.notMatch(json.stderr, STACK, 'no stack trace (--json)', { out: describe(json) });

  const missing = join(s.dir, 'nobody-here.ctl');
  const m = await run(process.execPath, [REMAPD_BIN, 'list', '--control', missing]);
  t.equal(m.code, 1, 'missing control socket: exit 1', { out: describe(m) });
  t.equal(m.stderr.trim().split('\n').length, 1, 'one line', { out: describe(m) });
  t.match(
    m.stderr,
    /cannot reach the control socket .*nobody-here\.ctl: ENOENT \(is remapd running\? pass --control PATH\)/,
    'names the socket and the fix',
  );

  for (const args of [['list', '--bogus'], ['serve', '--main', s.main, '--read-retries', '900'], ['remap'], ['nosuchcommand']]) {
    const r = await run(process.execPath, [REMAPD_BIN, ...args]);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2 (usage)`, { out: describe(r) });
    t.notMatch(r.stderr, STACK, `${args.join(' ')}: no stack trace`, { out: describe(r) });
    t.match(r.stderr, /^remapd: .+\n\nRun 'remapd --help' for usage\.\n$/, `${args.join(' ')}: message and hint`, { out: describe(r) });
  }

  const failing = await run(process.execPath, [REMAPD_BIN, 'dump', '--spare', join(s.dir, 'absent.img')]);
  t.equal(failing.code, 1, 'a command that fails at run time: exit 1', { out: describe(failing) });
  t.notMatch(failing.stderr, STACK, 'no stack trace', { out: describe(failing) });
});

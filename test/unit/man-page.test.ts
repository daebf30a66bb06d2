/**
 * remapd(8) never drifts: the committed docs/remapd.8 equals a fresh rendering from the yargs
 * definitions (daemon/man-page.ts), every command and config key is in it, every option has a
 * description, and man(1) formats it without warnings.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { commands } from '../../daemon/cli';
import { CONFIG_SCHEMA } from '../../daemon/config-file';

const ROOT = join(__dirname, '..', '..', '..');
const PAGE = join(ROOT, 'docs', 'remapd.8');

function regenerate(): string {
  const env = { ...process.env };
  delete env.REMAPD_CONTROL;
  delete env.REMAPD_LOG_LEVEL;
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'daemon', 'man-page.js')], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`man-page.js failed: ${r.stderr}`);
  return r.stdout;
}

t.test('the committed page equals a regeneration', async (t) => {
  const fresh = regenerate();
  const committed = readFileSync(PAGE, 'utf8');
  t.ok(fresh === committed, 'docs/remapd.8 is up to date (run `npm run man` and commit it)', {
    firstDifference: [...fresh].findIndex((c, i) => committed[i] !== c),
  });
});

t.test('content', async (t) => {
  const page = readFileSync(PAGE, 'utf8');
  for (const c of commands) t.ok(page.includes(`.SS "remapd ${String(c.command).replace(/-/g, '\\-')}"`), `command ${c.command}`);
  for (const k of Object.keys(CONFIG_SCHEMA)) t.ok(page.includes(`\\fB${k}\\fR`), `config key ${k}`);
  t.notMatch(page, /\(no description\)/, 'every option is described');
  const man = spawnSync('man', ['--warnings', '-l', PAGE], {
    encoding: 'utf8',
    env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat' },
  });
  t.equal(man.status, 0, 'man -l formats it');
  t.equal(man.stderr.trim(), '', 'no groff warnings');
  t.match(man.stdout, /EXIT STATUS/, 'has EXIT STATUS');
});

/**
 * docs/OPERATIONS.md stays in step with the code: every config key of daemon/config-file.ts's
 * CONFIG_SCHEMA has a row in the configuration table, no row names a key that does not exist, and every
 * exit status of daemon/exit-codes.ts is in the exit status table.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONFIG_SCHEMA } from '../../daemon/config-file';
import { EXIT } from '../../daemon/exit-codes';

const doc = readFileSync(join(__dirname, '..', '..', '..', 'docs', 'OPERATIONS.md'), 'utf8');

/** The body of the section whose heading starts with `title`. */
function section(title: string): string {
  const start = doc.indexOf(`\n## ${title}`);
  if (start < 0) return '';
  const next = doc.indexOf('\n## ', start + 4);
  return doc.slice(start, next < 0 ? undefined : next);
}

/** First cells of the table rows of a section, each cell's `backticked` words. */
function firstCells(body: string): string[][] {
  return body
    .split('\n')
    .filter((l) => l.startsWith('| ') && !l.startsWith('|---'))
    .map((l) => l.split('|')[1] ?? '')
    .map((cell) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]));
}

t.test('every config key is documented, and only those', async (t) => {
  const body = section('The configuration file');
  t.ok(body.length > 0, 'the section exists');
  const documented = new Set(firstCells(body).flat());
  const keys = Object.keys(CONFIG_SCHEMA);
  t.ok(keys.length >= 23, `CONFIG_SCHEMA has ${keys.length} keys`);
  const missing = keys.filter((k) => !documented.has(k));
  t.same(missing, [], 'no key of CONFIG_SCHEMA is missing from docs/OPERATIONS.md');
  const stale = [...documented].filter((k) => !(k in CONFIG_SCHEMA));
  t.same(stale, [], 'no documented key is unknown to CONFIG_SCHEMA');
});

t.test('every exit status is documented', async (t) => {
  const body = section('Exit status');
  const documented = new Set(
    body
      .split('\n')
      .map((l) => /^\| (\d+) \|/.exec(l)?.[1])
      .filter((x): x is string => x !== undefined)
      .map(Number),
  );
  for (const [name, code] of Object.entries(EXIT)) t.ok(documented.has(code), `${name} = ${code} is in the table`);
});

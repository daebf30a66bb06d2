/**
 * `remapd serve --config FILE` end to end: errors name the key and the file and exit 2 (the unit's
 * RestartPreventExitStatus); flags given on the command line override the file.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, run, describe, sparseImage, MiB, REMAPD_BIN, startServer, nbdUri, logTail, serverKind } from '../helpers';

t.test('unknown key: exit 2, message names key and file, nothing served', async (t) => {
  const dir = tempDir(t);
  const cfg = join(dir, 'bad.json');
  writeFileSync(cfg, JSON.stringify({ main: join(dir, 'main.img'), exprot: 'x' }));
  const r = await run(process.execPath, [REMAPD_BIN, 'serve', '--config', cfg, '--socket', join(dir, 's.sock')], { timeoutMs: 60_000 });
  t.equal(r.code, 2, 'exit status 2', { out: describe(r) });
  t.match(r.stderr, `${cfg}: unknown key "exprot"`, 'names file and key');
});

t.test('bad value: exit 2, message names key, file and expectation', async (t) => {
  const dir = tempDir(t);
  const cfg = join(dir, 'bad.json');
  writeFileSync(cfg, JSON.stringify({ main: join(dir, 'main.img'), maxConnections: 'many' }));
  const r = await run(process.execPath, [REMAPD_BIN, 'serve', '--config', cfg], { timeoutMs: 60_000 });
  t.equal(r.code, 2, 'exit status 2', { out: describe(r) });
  t.match(r.stderr, `${cfg}: key "maxConnections" must be a positive integer, not "many"`);
});

t.test('no main anywhere: exit 2', async (t) => {
  const dir = tempDir(t);
  const cfg = join(dir, 'c.json');
  writeFileSync(cfg, JSON.stringify({ export: 'x' }));
  const r = await run(process.execPath, [REMAPD_BIN, 'serve', '--config', cfg], { timeoutMs: 60_000 });
  t.equal(r.code, 2, { out: describe(r) });
  t.match(r.stderr, /missing --main/);
});

t.test('flags override the file; the file overrides defaults', { skip: serverKind() !== 'remapd' && 'remapd only' }, async (t) => {
  const dir = tempDir(t);
  const image = sparseImage(join(dir, 'main.img'), 16 * MiB);
  const cfg = join(dir, 'setup.json');
  // main in the file points elsewhere: the helper's --main flag must win. readOnly only in the file.
  writeFileSync(cfg, JSON.stringify({ main: '/nonexistent/disk', export: 'fromfile', readOnly: true, logLevel: 'debug' }));
  const server = await startServer(t, { dir, image, exportName: 'fromflag', extraArgs: ['--config', cfg] });
  const r = await run('nbdinfo', ['--json', nbdUri(server.socket, 'fromflag')], { timeoutMs: 60_000 });
  t.equal(r.code, 0, 'export named by --export, image from --main', { out: describe(r), log: logTail(server) });
  t.match(r.stdout, /"export-name": "fromflag"/);
  t.match(r.stdout, /"is_read_only": true/, 'readOnly from the file');
  t.match(server.log(), /"level":20/, 'logLevel debug from the file');
  const r2 = await run('nbdinfo', ['--json', nbdUri(server.socket, 'fromfile')], { timeoutMs: 60_000 });
  t.not(r2.code, 0, 'the export name from the file is not served');
});

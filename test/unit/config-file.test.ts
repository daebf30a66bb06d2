/** daemon/config-file.ts: schema validation, error messages, path resolution, flag precedence. */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CONFIG_SCHEMA,
  ConfigFileError,
  applyConfigFile,
  explicitKeys,
  flagName,
  keyName,
  loadConfigFile,
  mergeConfig,
  validateConfig,
} from '../../daemon/config-file';

const dir = mkdtempSync(join(tmpdir(), 'remapd-cfg-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(content: unknown): string {
  const f = join(dir, `c${n++}.json`);
  writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content));
  return f;
}

function errorOf(fn: () => unknown): ConfigFileError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigFileError) return err;
    throw err;
  }
  throw new Error('expected a ConfigFileError, nothing was thrown');
}

t.test('a full valid file loads with the values as written', async (t) => {
  const f = file({
    main: '/dev/sdb',
    spare: '/dev/sdc',
    socket: '/run/remapd/a.sock',
    listen: '127.0.0.1:10809',
    export: 'a',
    readOnly: true,
    handshakeTimeout: 2.5,
    maxConnections: 8,
    socketMode: '0660',
    logLevel: 'debug',
    control: '/run/remapd/a.ctl',
    faults: '/etc/remapd/a.faults',
    metrics: '127.0.0.1:9100',
  });
  const c = loadConfigFile(f);
  t.same(c, {
    main: '/dev/sdb',
    spare: '/dev/sdc',
    socket: '/run/remapd/a.sock',
    listen: '127.0.0.1:10809',
    export: 'a',
    readOnly: true,
    handshakeTimeout: 2.5,
    maxConnections: 8,
    socketMode: '0660',
    logLevel: 'debug',
    control: '/run/remapd/a.ctl',
    faults: '/etc/remapd/a.faults',
    metrics: '127.0.0.1:9100',
  });
});

t.test('unknown key: error names the key and the file', async (t) => {
  const f = file({ main: '/dev/sdb', mian: 'x' });
  const e = errorOf(() => loadConfigFile(f));
  t.equal(e.key, 'mian');
  t.equal(e.file, f);
  t.match(e.message, f, 'message names the file');
  t.match(e.message, '"mian"', 'message names the key');
  t.match(e.message, 'unknown key');
});

t.test('a kebab-case key is rejected with a hint at the camelCase name', async (t) => {
  const e = errorOf(() => loadConfigFile(file({ 'read-only': true })));
  t.equal(e.key, 'read-only');
  t.match(e.message, 'did you mean "readOnly"');
});

t.test('bad values: error names the key, the file and what was expected', async (t) => {
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ readOnly: 'yes' }, 'readOnly', /true or false/],
    [{ handshakeTimeout: 0 }, 'handshakeTimeout', /positive number/],
    [{ handshakeTimeout: '30' }, 'handshakeTimeout', /positive number/],
    [{ maxConnections: 1.5 }, 'maxConnections', /positive integer/],
    [{ maxConnections: -1 }, 'maxConnections', /positive integer/],
    [{ socketMode: 600 }, 'socketMode', /octal mode/],
    [{ socketMode: '0999' }, 'socketMode', /octal mode/],
    [{ logLevel: 'verbose' }, 'logLevel', /one of "fatal"/],
    [{ main: '' }, 'main', /non-empty/],
    [{ main: 7 }, 'main', /non-empty/],
    [{ export: null }, 'export', /non-empty string/],
  ];
  for (const [content, key, expect] of cases) {
    const f = file(content);
    const e = errorOf(() => loadConfigFile(f));
    t.equal(e.key, key, `${JSON.stringify(content)}: key`);
    t.match(e.message, f, `${JSON.stringify(content)}: file named`);
    t.match(e.message, `"${key}"`, `${JSON.stringify(content)}: key named`);
    t.match(e.message, expect, `${JSON.stringify(content)}: expectation stated`);
  }
});

t.test('not JSON, not an object, missing file', async (t) => {
  const f1 = file('{"main": "/dev/sdb",}');
  t.match(errorOf(() => loadConfigFile(f1)).message, new RegExp(`^${f1}: not valid JSON`));
  const f2 = file('["/dev/sdb"]');
  t.match(errorOf(() => loadConfigFile(f2)).message, /must contain one JSON object/);
  const f3 = join(dir, 'missing.json');
  t.match(errorOf(() => loadConfigFile(f3)).message, `${f3}: cannot read: ENOENT`);
});

t.test('relative paths resolve against the config file directory; other strings do not', async (t) => {
  const c = validateConfig({ main: 'disk.img', spare: '../spare.img', listen: 'localhost', export: 'x/y' }, '/etc/remapd/a.json');
  t.equal(c.main, '/etc/remapd/disk.img');
  t.equal(c.spare, '/etc/spare.img');
  t.equal(c.listen, 'localhost');
  t.equal(c.export, 'x/y');
});

t.test('flag names and config keys map both ways for every schema key', async (t) => {
  t.equal(flagName('readOnly'), 'read-only');
  t.equal(flagName('handshakeTimeout'), 'handshake-timeout');
  t.equal(keyName('socket-mode'), 'socketMode');
  for (const k of Object.keys(CONFIG_SCHEMA)) t.equal(keyName(flagName(k)), k, k);
});

t.test('explicitKeys finds the flags given on the command line, in every spelling', async (t) => {
  const keys = explicitKeys([
    'serve',
    '--config',
    'x.json',
    '--read-only',
    '--socket-mode=0644',
    '--handshakeTimeout',
    '3',
    '--no-listen',
    '--',
    '--export',
    'not-a-flag',
  ]);
  t.same([...keys].sort(), ['handshakeTimeout', 'listen', 'readOnly', 'socketMode']);
  t.same([...explicitKeys(['serve', '--no-read-only'])], ['readOnly']);
  t.same([...explicitKeys(['serve', '--bogus', '-h'])], []);
});

t.test('mergeConfig: file beats defaults, explicit flags beat the file', async (t) => {
  // What yargs produced for: serve --config f --export cli --no-read-only (others are defaults).
  const argv = {
    _: ['serve'],
    config: 'f',
    export: 'cli',
    'read-only': false,
    readOnly: false,
    'handshake-timeout': 30,
    handshakeTimeout: 30,
    'socket-mode': '0600',
    socketMode: '0600',
  };
  const merged = mergeConfig(argv, { main: '/dev/sdb', export: 'file', readOnly: true, handshakeTimeout: 5, socketMode: '0660' }, [
    'serve',
    '--config',
    'f',
    '--export',
    'cli',
    '--no-read-only',
  ]);
  t.equal(merged.export, 'cli', 'explicit --export wins');
  t.equal(merged['read-only'], false, 'explicit --no-read-only wins over readOnly: true');
  t.equal(merged.readOnly, false);
  t.equal(merged['handshake-timeout'], 5, 'file beats the default');
  t.equal(merged.handshakeTimeout, 5, 'camelCase alias updated too');
  t.equal(merged['socket-mode'], '0660');
  t.equal((merged as Record<string, unknown>).main, '/dev/sdb', 'a key only in the file is added');
  t.equal(argv.export, 'cli', 'input argv not modified');
  t.equal(argv.handshakeTimeout, 30, 'input argv not modified');
});

t.test('applyConfigFile: no --config is a no-op; with one it loads and merges', async (t) => {
  const argv = { _: ['serve'], export: 'disk' };
  t.equal(applyConfigFile(argv, ['serve']), argv);
  const f = file({ export: 'fromfile', main: 'img' });
  const merged = applyConfigFile({ ...argv, config: f }, ['serve', '--config', f]);
  t.equal(merged.export, 'fromfile');
  t.equal((merged as Record<string, unknown>).main, join(dir, 'img'));
  const bad = file({ exprt: 'x' });
  t.throws(() => applyConfigFile({ ...argv, config: bad }, ['serve']), { name: 'ConfigFileError', key: 'exprt' });
});

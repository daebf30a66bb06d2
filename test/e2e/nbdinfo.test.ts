/**
 * nbdinfo (libnbd) against the server: handshake (fixed newstyle, structured replies), export size,
 * every advertised capability, meta contexts, LIST, named + default export, read-only export.
 */
import t from 'tap';
import { withServer, run, describe, runProbes, MiB, serverKind, logTail } from '../helpers';

const SIZE = 64 * MiB;
const kind = serverKind();

interface ExportInfo {
  'export-name': string;
  'export-size': number;
  contexts?: string[];
  is_read_only: boolean;
  [k: string]: unknown;
}
interface Info {
  protocol: string;
  structured: boolean;
  exports: ExportInfo[];
}

/**
 * Capabilities remapd must advertise (it serves a plain file/disk with a shared write path, so all of
 * them are implementable). nbdkit's file plugin is the harness reference and has no fast zero.
 */
const EXPECTED_CAPS: Record<string, boolean> = {
  can_flush: true,
  can_fua: true,
  can_trim: true,
  can_zero: true,
  can_fast_zero: kind === 'remapd',
  can_df: true,
  can_multi_conn: true,
  can_cache: true,
};

async function nbdinfo(args: string[]): Promise<{ info: Info | null; out: string }> {
  const r = await run('nbdinfo', args, { timeoutMs: 30_000 });
  let info: Info | null = null;
  try {
    info = JSON.parse(r.stdout) as Info;
  } catch {
    info = null;
  }
  return { info, out: describe(r) };
}

t.test('named export: size, protocol, capabilities, contexts', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, exportName: 'disk0' });
  for (const [label, uri] of [
    ['named export', server.uri],
    ['default export (empty name)', server.defaultUri],
  ]) {
    const { info, out } = await nbdinfo(['--json', uri]);
    t.ok(info, `${label}: nbdinfo --json parses`, { out, log: logTail(server) });
    if (!info) continue;
    t.equal(info.protocol, 'newstyle-fixed', `${label}: protocol newstyle-fixed`);
    t.equal(info.structured, true, `${label}: structured replies negotiated`);
    t.equal(info.exports.length, 1, `${label}: one export described`);
    const e = info.exports[0]!;
    t.equal(e['export-size'], SIZE, `${label}: export size`);
    t.equal(e.is_read_only, false, `${label}: writable`);
    for (const [cap, want] of Object.entries(EXPECTED_CAPS)) {
      t.equal(e[cap], want, `${label}: ${cap} = ${want}`);
    }
    t.ok(Array.isArray(e.contexts) && e.contexts.includes('base:allocation'), `${label}: contexts include base:allocation`, {
      contexts: e.contexts,
    });
  }
  // nbdinfo --can exits 0 when the feature is present, 2 when absent
  for (const feature of ['flush', 'fua', 'trim', 'zero', 'df', 'multi-conn', 'cache', 'structured-reply']) {
    const r = await run('nbdinfo', ['--can', feature, server.uri], { timeoutMs: 30_000 });
    t.equal(r.code, 0, `nbdinfo --can ${feature}`, { out: describe(r) });
  }
  const sz = await run('nbdinfo', ['--size', server.uri], { timeoutMs: 30_000 });
  t.equal(sz.stdout.trim(), String(SIZE), 'nbdinfo --size', { out: describe(sz) });
  // block status must describe the whole export (base:allocation), total = size
  const map = await run('nbdinfo', ['--map', '--totals', server.uri], { timeoutMs: 30_000 });
  t.equal(map.code, 0, 'nbdinfo --map --totals works', { out: describe(map) });
  const total = map.stdout
    .trim()
    .split('\n')
    .map((l) => Number(l.trim().split(/\s+/)[0]))
    .reduce((a, b) => a + b, 0);
  t.equal(total, SIZE, 'block-status extents cover the export exactly', { out: map.stdout });
  t.ok(server.isRunning(), 'server still running');
});

t.test('nbdinfo --list --json', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, exportName: 'disk0' });
  const { info, out } = await nbdinfo(['--list', '--json', server.defaultUri]);
  t.ok(info, 'nbdinfo --list --json parses', { out, log: logTail(server) });
  if (!info) return;
  t.equal(info.protocol, 'newstyle-fixed', 'protocol newstyle-fixed');
  const names = info.exports.map((e) => e['export-name']);
  // nbdkit's file plugin lists only the default export ""; remapd lists the name it serves
  t.same(names, kind === 'remapd' ? ['disk0'] : [''], 'LIST returns the served export name', { names });
  for (const e of info.exports) t.equal(e['export-size'], SIZE, `listed export '${e['export-name']}' size`);
});

t.test('unknown export name is refused, server keeps serving', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, exportName: 'disk0' });
  if (kind === 'nbdkit') {
    t.pass('nbdkit file plugin accepts any export name (check not applicable)');
    return;
  }
  const bad = await run('nbdinfo', ['--json', server.uri.replace('/disk0?', '/no-such-export?')], { timeoutMs: 30_000 });
  t.not(bad.code, 0, 'connecting to an unknown export name fails', { out: describe(bad) });
  const good = await run('nbdinfo', ['--size', server.uri], { timeoutMs: 30_000 });
  t.equal(good.stdout.trim(), String(SIZE), 'named export still works afterwards', { out: describe(good) });
});

t.test('--read-only export', async (t) => {
  const { server } = await withServer(t, { sizeBytes: SIZE, readOnly: true, fill: 'random' });
  const { info, out } = await nbdinfo(['--json', server.uri]);
  t.ok(info, 'nbdinfo --json parses', { out, log: logTail(server) });
  if (info) {
    const e = info.exports[0]!;
    t.equal(e.is_read_only, true, 'is_read_only');
    t.equal(e['export-size'], SIZE, 'size');
  }
  const can = await run('nbdinfo', ['--is', 'read-only', server.uri], { timeoutMs: 30_000 });
  t.equal(can.code, 0, 'nbdinfo --is read-only', { out: describe(can) });
  const { result, records } = await runProbes(`
h = connect(${JSON.stringify(server.uri)}, strict=False)
probe("write", lambda: h.pwrite(b"x" * 4096, 0), h)
probe("write+fua", lambda: h.pwrite(b"x" * 4096, 0, nbd.CMD_FLAG_FUA), h)
probe("trim", lambda: h.trim(4096, 0), h)
probe("zero", lambda: h.zero(4096, 0), h)
probe("read", lambda: h.pread(4096, 0), h)
emit()
`);
  t.equal(records.length, 5, 'probe script ran', { out: describe(result) });
  for (const r of records) {
    if (r.name === 'read') {
      t.ok(r.ok, 'read works on a read-only export', { r });
      continue;
    }
    t.notOk(r.ok, `${r.name} on read-only export fails`, { r });
    t.equal(r.errname, 'EPERM', `${r.name} on read-only export -> EPERM`, { r });
    t.equal(r.alive, true, `connection usable after refused ${r.name}`, { r });
  }
  // qemu-io through a normal client: the write must fail and the image must stay as it was
  const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 64k', server.uri], { timeoutMs: 30_000 });
  t.ok(w.code !== 0 || /error|denied|not permitted|read-only/i.test(w.stdout + w.stderr), 'qemu-io write refused', {
    out: describe(w),
  });
});

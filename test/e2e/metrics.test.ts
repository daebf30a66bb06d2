/**
 * `serve --metrics 127.0.0.1:0`: the bound port is read from the startup log line (`endpoints`),
 * /metrics is scraped with Node's http client before and after real I/O (nbdcopy), with a live
 * libnbd connection held open, and with write faults on main that remap blocks to the spare.
 */
import t from 'tap';
import { join } from 'node:path';
import { describe, run, randomImage, MiB } from '../helpers';
import { createRemapSetup, startRemapd, statusJson, logRecords } from '../helpers/remap-setup';
import { httpGet, parseProm, sampleValue, holdNbdConnection, until, type Sample } from '../helpers/loopdev';

const B = 4096;

t.test('metrics: requests, bytes, latency, connections, remaps, spare use', async (t) => {
  const faultBytes = 64 * 1024;
  const s = await createRemapSetup(t, {
    mainBytes: 32 * MiB,
    spareBytes: 16 * MiB,
    faults: [{ op: 'write', offset: 4 * MiB, length: faultBytes, error: 'EIO' }],
  });
  const srv = await startRemapd(t, s, ['--metrics', '127.0.0.1:0']);

  const serving = logRecords(srv).find((r) => r.msg === 'remapd serving');
  t.ok(serving, 'startup line logged', { log: srv.log() });
  const endpoints = (serving?.endpoints ?? []) as string[];
  const metricsEndpoint = endpoints.find((e) => e.startsWith('metrics:'));
  const m = metricsEndpoint && /^metrics:(http:\/\/127\.0\.0\.1:(\d+)\/metrics)$/.exec(metricsEndpoint);
  t.ok(m, 'endpoints lists metrics:http://127.0.0.1:PORT/metrics', { endpoints });
  if (!m) return;
  t.not(Number(m[2]), 0, 'the actual port is logged, not 0');
  const url = m[1];

  const scrape = async (): Promise<Sample[]> => {
    const r = await httpGet(url);
    t.equal(r.status, 200, 'GET /metrics: 200');
    t.match(r.contentType, /^text\/plain/, 'Prometheus text content type');
    return parseProm(r.body);
  };

  const before = await scrape();
  const writeOk0 = sampleValue(before, 'remapd_requests_total', { cmd: 'WRITE', result: 'ok' }) ?? 0;
  const writeBytes0 = sampleValue(before, 'remapd_bytes_total', { cmd: 'WRITE' }) ?? 0;
  t.equal(sampleValue(before, 'remapd_connections'), 0, 'no connection yet');
  t.equal(sampleValue(before, 'remapd_remaps_total'), 0, 'no remaps yet');
  t.equal(sampleValue(before, 'remapd_spare_blocks_used'), 0, 'no spare block used yet');
  const free0 = sampleValue(before, 'remapd_spare_blocks_free');
  t.ok(free0 !== undefined && free0 > 0, 'spare blocks free reported', { free0 });
  t.ok(
    before.some((x) => x.name.startsWith('remapd_process_')),
    'process metrics present',
  );

  const nf = await httpGet(url.replace(/\/metrics$/, '/nope'));
  t.equal(nf.status, 404, 'other paths: 404');

  // I/O through the fault range: 8 MiB written from offset 0 covers [4 MiB, 4 MiB + 64 KiB).
  const src = randomImage(join(s.dir, 'src.img'), 8 * MiB);
  const c = await run('nbdcopy', [src, srv.uri], { timeoutMs: 120_000 });
  t.equal(c.code, 0, 'nbdcopy 8 MiB -> export', { out: describe(c) });
  const back = join(s.dir, 'back.img');
  const c2 = await run('nbdcopy', ['--synchronous', srv.uri, back], { timeoutMs: 120_000 });
  t.equal(c2.code, 0, 'nbdcopy export -> file', { out: describe(c2) });

  const held = holdNbdConnection(t, srv.uri);
  t.ok(await held.connected, 'libnbd connection open', { out: held.output() });
  const during = await scrape();
  t.equal(sampleValue(during, 'remapd_connections'), 1, 'remapd_connections = 1 while the connection is open');

  const writeOk1 = sampleValue(during, 'remapd_requests_total', { cmd: 'WRITE', result: 'ok' }) ?? 0;
  t.ok(writeOk1 > writeOk0, `remapd_requests_total{cmd="WRITE",result="ok"} increased (${writeOk0} -> ${writeOk1})`);
  const writeBytes1 = sampleValue(during, 'remapd_bytes_total', { cmd: 'WRITE' }) ?? 0;
  t.ok(writeBytes1 - writeBytes0 >= 8 * MiB, `remapd_bytes_total{cmd="WRITE"} grew by at least 8 MiB (${writeBytes0} -> ${writeBytes1})`);
  // nbdcopy skips the holes (block status), so at least the 8 MiB of data were read.
  t.ok(
    (sampleValue(during, 'remapd_bytes_total', { cmd: 'READ' }) ?? 0) >= 8 * MiB,
    'remapd_bytes_total{cmd="READ"} counts the read-back',
    { read: sampleValue(during, 'remapd_bytes_total', { cmd: 'READ' }) },
  );
  const buckets = during.filter((x) => x.name === 'remapd_request_duration_seconds_bucket' && x.labels.cmd === 'WRITE');
  t.ok(buckets.length > 1, 'remapd_request_duration_seconds_bucket{cmd="WRITE"} present');
  t.equal(
    buckets.find((x) => x.labels.le === '+Inf')?.value,
    sampleValue(during, 'remapd_request_duration_seconds_count', { cmd: 'WRITE' }),
    'le="+Inf" bucket = count',
  );
  t.ok(
    (sampleValue(during, 'remapd_request_duration_seconds_count', { cmd: 'WRITE' }) ?? 0) >= writeOk1 - writeOk0,
    'every write observed in the histogram',
  );

  const expectRemaps = faultBytes / B;
  t.equal(sampleValue(during, 'remapd_remaps_total'), expectRemaps, `remapd_remaps_total = ${expectRemaps} (the failing blocks)`);
  t.equal(sampleValue(during, 'remapd_remaps', { reason: 'write-error' }), expectRemaps, 'remapd_remaps{reason="write-error"}');
  t.equal(sampleValue(during, 'remapd_spare_blocks_used'), expectRemaps, 'remapd_spare_blocks_used moved');
  t.equal(sampleValue(during, 'remapd_spare_blocks_free'), (free0 ?? 0) - expectRemaps, 'remapd_spare_blocks_free went down as much');
  t.equal(sampleValue(during, 'remapd_spare_exhausted'), 0, 'spare not exhausted');

  // The same numbers through the control socket.
  const st = await statusJson(s);
  t.equal(st.remaps.total, expectRemaps, 'status agrees on remaps');
  t.equal(st.spare.used, expectRemaps, 'status agrees on spare use');

  await held.close();
  t.ok(
    await until(async () => sampleValue(parseProm((await httpGet(url)).body), 'remapd_connections') === 0),
    'remapd_connections back to 0 after the client left',
  );
});

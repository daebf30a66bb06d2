/**
 * daemon/evacuate/retire-old-stack.ts on real image files (flock claims, file backends, a metadata store):
 * retire() refuses the old stack's control commands first, drops the scanner's status sections, runs the
 * beforeRetire hooks while the devices are still open, then closes main and spare and releases their
 * claims (another claim succeeds); close() afterwards (the stop path) closes nothing twice; close() first
 * (a stop without a switch) makes a later retire() a no-op. No error-level log line in either order.
 */
import t from 'tap';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import pino from 'pino';
import { openBackend } from '../../storage/file-backend';
import { MetadataStore } from '../../metadata/store';
import { identityFromBackend } from '../../metadata/fingerprint';
import { PassthroughDevice } from '../../remap/passthrough-device';
import { claimSetup } from '../../daemon/owner-lock';
import { ControlError } from '../../daemon/control-server';
import { OldStack, RELEASED_MESSAGE } from '../../daemon/evacuate/retire-old-stack';
import { byteOffset } from '../../units';
import { flockNb } from '../../storage/native';
import { sparseImage, tempDir, MiB } from '../helpers';

function logger(): { log: pino.Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) records.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), records };
}

async function openStack(t: { teardown(fn: () => unknown): void }) {
  const dir = tempDir(t, 'remapd-retire-unit-');
  const mainPath = sparseImage(join(dir, 'main.img'), 4 * MiB);
  const sparePath = sparseImage(join(dir, 'spare.img'), 16 * MiB);
  const claim = await claimSetup({ main: mainPath, spare: sparePath });
  const main = await openBackend(mainPath, {});
  const spare = await openBackend(sparePath, {});
  const store = await MetadataStore.create(spare, identityFromBackend(main));
  const { log, records } = logger();
  const device = new PassthroughDevice(main);
  const stack = new OldStack({ main: mainPath, spare: sparePath, device, remap: undefined, store, backends: [main, spare], claim, log });
  const handlers = new Map<string, (args: Record<string, unknown>) => unknown>([
    ['list', () => 'old list'],
    ['ping', () => 'pong'],
  ]);
  const control = {
    register: (c: string, h: (args: Record<string, unknown>) => unknown) => handlers.set(c, h),
    commands: () => [...handlers.keys()],
  };
  const sections = new Map<string, () => unknown>([
    ['scan', () => 1],
    ['health', () => 2],
    ['io', () => 3],
  ]);
  return { mainPath, sparePath, main, spare, stack, control, handlers, sections, records };
}

t.test('retire: commands refused, hooks first, devices closed, claims free, stop closes nothing twice', async (t) => {
  const s = await openStack(t);
  const order: string[] = [];
  s.stack.beforeRetire.push(async () => {
    // the scanner stops while the devices are still open
    await s.main.read(byteOffset(0), 4096, Buffer.alloc(4096), 0);
    order.push('hook');
  });
  const p = s.stack.retire('/dev/new', s.control, s.sections);
  t.same(s.stack.retired, { to: '/dev/new', main: s.mainPath, spare: s.sparePath, releasedAt: null }, 'retired at once, released later');
  t.throws(() => s.handlers.get('list')!({}), new ControlError(`${RELEASED_MESSAGE} (now serving /dev/new)`), 'list refused at once');
  t.equal(s.handlers.get('ping')!({}), 'pong', 'other commands untouched');
  t.same([...s.sections.keys()], ['io'], 'scan and health sections dropped');
  await p;
  t.same(order, ['hook'], 'the hook ran');
  t.ok(s.stack.retired?.releasedAt, 'releasedAt set');
  await t.rejects(s.main.read(byteOffset(0), 4096, Buffer.alloc(4096), 0), 'main is closed');
  await t.rejects(s.spare.read(byteOffset(0), 4096, Buffer.alloc(4096), 0), 'spare is closed');
  if (flockNb) {
    const again = await claimSetup({ main: s.mainPath, spare: s.sparePath });
    t.pass('main and spare can be claimed again');
    again.release();
  }
  await s.stack.close();
  await s.stack.retire('/dev/other', s.control, s.sections);
  t.equal(s.stack.retired?.to, '/dev/new', 'a second retire changes nothing');
  t.same(
    s.records.filter((r) => (r.level as number) >= 50),
    [],
    'no error-level line',
  );
});

t.test('a stop without a switch: close() then retire() is a no-op', async (t) => {
  const s = await openStack(t);
  let hooked = false;
  s.stack.beforeRetire.push(async () => {
    hooked = true;
  });
  await s.stack.close();
  await s.stack.close();
  await s.stack.retire('/dev/new', s.control, s.sections);
  t.notOk(hooked, 'retire after close runs no hook');
  t.equal(s.stack.retired, undefined, 'not retired');
  t.equal(s.handlers.get('list')!({}), 'old list', 'commands untouched');
  t.same(
    s.records.filter((r) => (r.level as number) >= 50),
    [],
    'no error-level line',
  );
});

/**
 * Crash-safety review of remap/ for re-sent requests (issue 12): a TRIM or WRITE_ZEROES routed to a
 * remapped block's spare location was not tracked as a write in flight (remap/remap-device.ts trim() and
 * zero() call spare.trim / spare.zero / main.trim without locks.trackWrite), so moving the block back to
 * main (moveToMain) does not wait for it. Once the remove is durable the spare block is allocatable
 * again; if another block is remapped into it before the slow TRIM reaches the disk, the TRIM erases
 * that other block's data: an un-acknowledged (or re-sent) request corrupting a neighbouring block.
 * The spare's trim is held back here with a gate to make the timing certain, and the spare is filled
 * so that the freed block is the only one left (the allocator is next-fit; a daemon that has run long
 * enough wraps around to freed blocks the same way).
 * Found on wt-restart against the pre-split remap/; main's remap/ now tracks TRIM/WRITE_ZEROES with the
 * block locks (commit 588c664), so this is the regression test: it fails on the untracked version.
 */
import t from 'tap';
import { join } from 'node:path';
import pino from 'pino';
import { tempDir, MiB, randomImage, sparseImage } from '../helpers';
import { createMetadata } from '../helpers/remap-setup';
import { openBackend } from '../../storage/file-backend';
import { MetadataStore } from '../../metadata/store';
import { identityFromBackend } from '../../metadata/fingerprint';
import { RemapDevice } from '../../remap/remap-device';
import type { Backend } from '../../storage/backend';
import { byteOffset, mainBlock } from '../../units';

function gatedTrim(b: Backend): { backend: Backend; open: () => void; started: Promise<void> } {
  let open!: () => void;
  let started!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const startedP = new Promise<void>((r) => (started = r));
  const trim: Backend['trim'] = async (offset, length) => {
    started();
    await gate;
    return b.trim(offset, length);
  };
  const backend = new Proxy(b, {
    get(target, prop) {
      if (prop === 'trim') return trim;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { backend, open, started: startedP };
}

t.test('a TRIM in flight on a spare block cannot land after the block was freed and reused by another remap', async (t) => {
  const dir = tempDir(t);
  const mainPath = randomImage(join(dir, 'main.img'), 16 * MiB);
  const sparePath = sparseImage(join(dir, 'spare.img'), 16 * MiB);
  await createMetadata(mainPath, sparePath, 4096);
  const main = await openBackend(mainPath, {});
  const rawSpare = await openBackend(sparePath, {});
  const g = gatedTrim(rawSpare);
  const store = await MetadataStore.open(rawSpare, identityFromBackend(main));
  const dev = new RemapDevice(main, g.backend, store, { logger: pino({ level: 'silent' }) });
  t.teardown(async () => {
    g.open();
    await store.close().catch(() => undefined);
    await main.close();
    await rawSpare.close();
  });
  const B = 4096;
  t.equal(await dev.moveToSpare(mainBlock(1), 'manual'), 'migrated', 'block 1 remapped');
  // Fill the spare, so that the next remap can only reuse the block that moveToMain frees (the
  // allocator is next-fit: on a long-running daemon the cursor wraps around the same way).
  let filled = 0;
  for (let b = 3; (await dev.moveToSpare(mainBlock(b), 'manual')) === 'migrated'; b++) filled++;
  t.ok(filled > 0, `spare filled with ${filled} more blocks`);
  const trim = dev.trim(byteOffset(1 * B), B, false); // routed to block 1's spare location; the disk is slow
  await g.started;
  let moved = false;
  const move = dev.moveToMain(mainBlock(1)).then((r) => ((moved = true), r));
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(moved, 'moving block 1 back to main waits for the TRIM in flight on its spare block');
  g.open();
  await trim;
  t.equal(await move, 'unremapped', 'then block 1 moves back to main');
  const before = Buffer.alloc(B);
  await dev.read(byteOffset(2 * B), B, before, 0);
  t.equal(await dev.moveToSpare(mainBlock(2), 'manual'), 'migrated', 'block 2 remapped (into the freed spare block)');
  const after = Buffer.alloc(B);
  await dev.read(byteOffset(2 * B), B, after, 0);
  t.ok(after.equals(before), 'block 2 holds its data: no late TRIM of block 1 reached it');
});

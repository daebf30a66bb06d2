/**
 * Loading the metadata that open(), reload() and inspect() share: refuse what must be refused
 * (NEWER_VERSION, UNSUPPORTED_FEATURES, NO_VALID_COPY, FINGERPRINT_MISMATCH), decode the best copy's
 * checkpoint, replay its journal and rebuild the allocator, falling back to the next copy when the table is
 * unusable. Also the read-only report behind `remapd check` and readOwner(). Reads only: repairs are the
 * store's checkpoints (metadata/store.ts).
 */
import type { Backend } from '../storage/backend';
import { SpareAllocator } from './allocator';
import { chooseBest, loadCheckpoint, loadJournal, needsRepair, scanSpare, type CopyScan, type SpareScan } from './copies';
import { identityFromHeader, pairingMismatches } from './fingerprint';
import { FORMAT_VERSION, uuidToString, type OwnerMarker } from './header';
import { applyOpAt, OP_BYTES, type TableState } from './table';
import { MetadataError, type CheckReport, type MainIdentity } from './types';

export interface Loaded {
  best: CopyScan;
  state: TableState;
  alloc: SpareAllocator;
}

/** Refuse what must be refused, then decode the best copy (falling back when its table is unusable). */
export async function loadBest(scan: SpareScan, spare: Backend, main: MainIdentity | undefined): Promise<Loaded> {
  if (scan.newer) {
    throw new MetadataError(
      scan.newer.features ? 'UNSUPPORTED_FEATURES' : 'NEWER_VERSION',
      scan.newer.features
        ? `spare ${spare.path} uses metadata features this remapd does not know; upgrade remapd`
        : `spare ${spare.path} has metadata format version ${scan.newer.version}, newer than this remapd supports (${FORMAT_VERSION}); upgrade remapd`,
    );
  }
  for (;;) {
    const best = scan.best;
    if (!best || !scan.layout) {
      throw new MetadataError(
        'NO_VALID_COPY',
        scan.anyMagic
          ? `spare ${spare.path} has remapd metadata but no valid copy (${scan.copies.map((c) => `#${c.index}: ${c.failedCheck ?? 'stale'}`).join(', ')}); nothing was changed`
          : `spare ${spare.path} has no remapd metadata; run 'remapd create' first`,
      );
    }
    const h = best.header!;
    if (main) {
      const diff = pairingMismatches(identityFromHeader(h), main);
      if (diff.length) {
        throw new MetadataError(
          'FINGERPRINT_MISMATCH',
          `spare ${spare.path} belongs to another main device (setup ${uuidToString(h.setupUuid)}): ${diff.join('; ')}; nothing was changed`,
        );
      }
    }
    try {
      const l = scan.layout;
      // Stream the checkpoint again (verified and decoded in one pass through a reused 1 MiB buffer), then
      // replay the journal from its bytes, sized up front so the table never grows during the load.
      const state = await loadCheckpoint(spare, l, best, scan.buffers, best.journal!.opCount);
      const j = await loadJournal(spare, l, best, scan.buffers);
      for (const f of j.frames) for (let i = 0; i < f.count; i++) applyOpAt(state, j.buf, f.opsOffset + i * OP_BYTES);
      const alloc = new SpareAllocator(l);
      const mainBlocks = Math.ceil(h.mainSize / h.blockSize);
      const r = state.remaps;
      for (let k = 0, n = r.slotCount; k < n; k++) {
        if (r.reasonAt(k) === 0) continue;
        const m = r.mainAt(k);
        const b = r.spareAt(k);
        if (!alloc.isDataBlock(b)) throw new Error(`remap of main block ${m} points at spare block ${b} outside the data area`);
        if (!alloc.markCommitted(b)) throw new Error(`spare block ${b} is used twice`);
        if (m >= mainBlocks) throw new Error(`main block ${m} beyond the main device`);
      }
      return { best, state, alloc };
    } catch (e) {
      best.valid = false;
      best.failedCheck = 'table';
      chooseBest(scan);
    }
  }
}

/**
 * The CheckReport for `remapd check`. With `repair`, damaged or stale copies are repaired first by
 * `openAndClose` (the store's open(), which writes a checkpoint) and the spare is scanned again.
 */
export async function inspectSpare(
  spare: Backend,
  opts: { repair?: boolean; main?: MainIdentity },
  openAndClose: (spare: Backend, main: MainIdentity | undefined) => Promise<void>,
): Promise<CheckReport> {
  let scan = await scanSpare(spare);
  let repaired = false;
  if (opts.repair && !scan.newer && scan.best && needsRepair(scan) && !spare.readOnly) {
    await openAndClose(spare, opts.main);
    repaired = true;
    scan = await scanSpare(spare);
  }
  const report: CheckReport = {
    copies: scan.copies.map((c) => ({
      index: c.index,
      offset: c.offset,
      length: c.length,
      valid: c.valid,
      ...(c.valid ? {} : { failedCheck: c.failedCheck ?? 'unknown' }),
      ...(c.stale ? { stale: true } : {}),
      sequence: c.sequence,
      timestamp: c.timestamp,
    })),
    chosen: null,
    repaired,
  };
  if (scan.newer) return report;
  try {
    const l = await loadBest(scan, spare, undefined);
    report.copies = scan.copies.map((c, i) => ({
      ...report.copies[i],
      valid: c.valid,
      ...(c.valid ? {} : { failedCheck: c.failedCheck ?? 'unknown' }),
    }));
    const h = l.best.header!;
    report.chosen = l.best.index;
    report.formatVersion = h.version;
    report.setupUuid = uuidToString(h.setupUuid);
    report.blockSize = h.blockSize;
    report.spareDataBlocks = scan.layout!.spareDataBlocks;
    report.main = identityFromHeader(h);
    report.table = { remaps: l.state.remaps.size, pending: l.state.pending.size, freeSpareBlocks: l.alloc.free, scan: l.state.scan };
  } catch (e) {
    if (!(e instanceof MetadataError)) throw e;
  }
  return report;
}

/** The owner marker in the newest valid header of a spare (undefined: none, or no metadata). Reads only. */
export async function readOwner(spare: Backend): Promise<OwnerMarker | undefined> {
  try {
    return (await scanSpare(spare)).reference?.owner;
  } catch {
    return undefined;
  }
}

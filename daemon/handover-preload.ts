/**
 * Prepared successor of a planned restart (daemon/handover-successor.ts): the work it can do while the
 * old process still serves and owns the setup. By the time this runs, Node has started and remapd's
 * modules and configuration are loaded (the largest part: over 10 s on the kernel lab's emulated CPU).
 * Here the metadata is read once, read-only and without claiming anything (no repair, no owner marker):
 * it compiles the loading code and brings the metadata copies into the page cache, so the real open
 * after the hand-over, which must come after the old process closed them, is short.
 * Whatever fails here is only logged: the real open reports it.
 */
import type { Logger } from 'pino';
import { openBackend } from '../storage/file-backend';
import { MetadataStore } from '../metadata/store';

/** Returns ms since the process started (`startedMs` ago) until it is prepared. */
export async function preloadForHandover(spare: string | undefined, log: Logger, startedMs: number): Promise<number> {
  const t0 = Date.now() - startedMs;
  if (spare) {
    const t = Date.now();
    try {
      const b = await openBackend(spare, { readOnly: true });
      try {
        const store = await MetadataStore.open(b);
        await store.close();
      } finally {
        await b.close();
      }
      log.debug({ ms: Date.now() - t }, 'hand-over: metadata read ahead (read-only)');
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'hand-over: reading the metadata ahead failed (the real open will say more)');
    }
  }
  return Date.now() - t0;
}

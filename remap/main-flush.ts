/**
 * Flushing main's volatile write cache (fdatasync), tried again when it fails with a media error.
 *
 * With O_DIRECT on main (the default) nothing sits in a page cache: every write remapd completed on main
 * is in the device or its write cache, and a flush that succeeds later makes every one still cached durable
 * (whether a drive discarded cached data when its flush failed, no host can see: docs/HEALTH.md).
 * So a flush that fails while the disk refuses writes for a moment (a link reset, a disk busy with its
 * own recovery; dm-flakey `error_writes` in the kernel lab's flaky-disk scenario, where FLUSH failed in
 * every 2 s "down" interval and reached ext4 as a journal abort) is tried again after 0.25, 0.5, 1, 2 and
 * 4 s before the client is told EIO.
 *
 * Buffered main (--no-main-direct) is different: after a failed writeback the kernel may mark the dirty
 * pages clean, so a second fdatasync can succeed without the data having reached the disk. There the
 * first failure is final. Device-gone and configuration errors are final too (storage/error-class.ts).
 */
import type { Logger } from 'pino';
import { BackendError, type Backend } from '../storage/backend';
import { classifyCode } from '../storage/error-class';

/** Waits before each further attempt, ms (7.75 s in all). */
export const FLUSH_RETRY_MS: readonly number[] = [250, 500, 1000, 2000, 4000];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** fdatasync main; a media failure on an O_DIRECT main is retried after each of `delaysMs`. */
export async function flushMain(main: Backend, log: Logger, delaysMs: readonly number[] = FLUSH_RETRY_MS): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await main.sync();
      if (attempt > 0) log.warn({ main: main.path, attempts: attempt + 1 }, 'flush of the main device succeeded on a later attempt');
      return;
    } catch (err) {
      const retry = main.direct === true && err instanceof BackendError && classifyCode(err.code) === 'media' && attempt < delaysMs.length;
      if (!retry) throw err;
      log.warn(
        { main: main.path, code: err.code, attempt: attempt + 1, retryInMs: delaysMs[attempt] },
        'flush of the main device failed; trying again (direct I/O: a later flush covers every completed write)',
      );
      await sleep(delaysMs[attempt]);
    }
  }
}

/** The test image: random bytes, created once and reused from the cache dir across runs. */
import { randomFillSync } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { run } from './proc';

/** Path of a random-data image of `bytes` bytes under `cacheDir`, created if missing or the wrong size. */
export function ensureImage(cacheDir: string, bytes: number, log: (m: string) => void): string {
  fs.mkdirSync(cacheDir, { recursive: true });
  const file = path.join(cacheDir, `random-${bytes / (1024 * 1024)}MiB.img`);
  try {
    if (fs.statSync(file).size === bytes) return file;
  } catch {
    /* missing: create */
  }
  log(`creating ${file} (${bytes} bytes of random data)`);
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    const chunk = Buffer.allocUnsafe(4 * 1024 * 1024);
    for (let off = 0; off < bytes; off += chunk.length) {
      const n = Math.min(chunk.length, bytes - off);
      randomFillSync(chunk, 0, n);
      fs.writeSync(fd, chunk, 0, n, off);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  return file;
}

/** Read the whole image once so every server starts with it in the page cache (the policy for all servers). */
export async function warmPageCache(file: string): Promise<void> {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
    let off = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, off);
      if (n <= 0) break;
      off += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Write dirty pages back (outside any timed region) so one server's writes are not flushed during the next run. */
export async function syncDisks(): Promise<void> {
  await run('sync', [], { timeoutMs: 120_000 });
}

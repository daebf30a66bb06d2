/** Temporary directories and disk images for tests. */
import { mkdtempSync, rmSync, openSync, ftruncateSync, writeSync, closeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const MiB = 1024 * 1024;

interface Teardown {
  teardown(fn: () => unknown): void;
}

/**
 * A fresh directory under $TMPDIR (short path: Unix socket paths must stay < 108 bytes).
 * Removed when the test ends unless REMAPD_TEST_KEEP_TMP=1.
 */
export function tempDir(t: Teardown, prefix = 'remapd-e2e-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => {
    if (process.env.REMAPD_TEST_KEEP_TMP === '1') return;
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** An all-zero sparse image (no blocks allocated). */
export function sparseImage(path: string, sizeBytes: number): string {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
  return path;
}

/** An image completely filled with random bytes. */
export function randomImage(path: string, sizeBytes: number): string {
  const fd = openSync(path, 'w');
  try {
    const chunk = Buffer.alloc(Math.min(4 * MiB, sizeBytes));
    for (let offset = 0; offset < sizeBytes; offset += chunk.length) {
      const length = Math.min(chunk.length, sizeBytes - offset);
      randomFillSync(chunk, 0, length);
      writeSync(fd, chunk, 0, length, offset);
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

/**
 * A sparse image with random data in some extents and holes elsewhere: every other `extentBytes`
 * region gets random bytes, so allocated data and holes alternate (exercises zero/hole paths in copies).
 */
export function sparseRandomImage(path: string, sizeBytes: number, extentBytes = MiB): string {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, sizeBytes);
    const chunk = Buffer.alloc(extentBytes);
    for (let offset = 0; offset < sizeBytes; offset += 2 * extentBytes) {
      const length = Math.min(extentBytes, sizeBytes - offset);
      randomFillSync(chunk, 0, length);
      writeSync(fd, chunk, 0, length, offset);
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

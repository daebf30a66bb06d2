/**
 * The evacuation's progress on disk, so it survives a daemon restart: one JSON file per setup in the
 * state directory (/var/lib/remapd/EXPORT.evacuate.json), replaced atomically (write, fsync, rename).
 * A restarted daemon resumes the copy from `cursor` (writes before it were mirrored while it ran), and a
 * daemon restarted after `--switch` serves the new disk.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export type EvacuationPhase = 'copying' | 'retrying' | 'verifying' | 'done' | 'failed' | 'switched';

export interface EvacuationState {
  readonly version: 1;
  target: string;
  size: number;
  /** Block size of the unreadable list (the remap block size, 4096 without a spare). */
  blockSize: number;
  phase: EvacuationPhase;
  /** Bytes [0, cursor) are copied (or listed unreadable). */
  cursor: number;
  /** Unreadable blocks (block numbers of blockSize). */
  unreadable: number[];
  startedAt: number;
  /** Copy rate limit in bytes/s (0 = unlimited), so clients keep most of the disk's time. */
  rate: number;
  finishedAt?: number;
  error?: string;
  /** sha256 of the target's first `size` bytes after verification. */
  sha256?: string;
  mismatches?: number;
  /** ddrescue mapfile of the blocks still unreadable at the end. */
  mapfile?: string;
}

export function statePath(stateDir: string, exportName: string): string {
  return join(stateDir, `${exportName || 'default'}.evacuate.json`);
}

export function loadState(path: string): EvacuationState | undefined {
  if (!existsSync(path)) return undefined;
  const s = JSON.parse(readFileSync(path, 'utf8')) as EvacuationState;
  if (s.version !== 1 || typeof s.target !== 'string' || typeof s.cursor !== 'number')
    throw new Error(`${path}: not an evacuation state file`);
  return s;
}

export function saveState(path: string, s: EvacuationState): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify(s) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export function removeState(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* gone */
  }
}

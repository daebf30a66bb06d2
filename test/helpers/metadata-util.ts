/** Shared helpers of the metadata tests. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createHash } from 'crypto';
import { TestFileBackend } from './metadata-file-spare';
import { MetadataStore, type RemapEntry } from '../../metadata/store';
import { mainBlock } from '../../units';

export function tmpDir(t: { teardown(fn: () => void): void }, name: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `remapd-${name}-`));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

export function sha(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

export const MAIN = { size: 1 << 30, logicalBlockSize: 512, serial: 'TESTSERIAL1', wwn: 'naa.5000c500a1b2c3d4' };

export function snapshot(s: MetadataStore): { remaps: Map<number, RemapEntry>; pending: number[] } {
  return { remaps: new Map([...s.entries()].map((e) => [e.mainBlock, { ...e }])), pending: [...s.pending()].sort((a, b) => a - b) };
}

export async function addRemaps(s: MetadataStore, mains: number[], createdAt = 1_700_000_000_000): Promise<void> {
  const add = mains.map((m) => ({
    mainBlock: mainBlock(m),
    spareBlock: s.allocateSpareBlock()!,
    reason: 'write-error' as const,
    createdAt,
  }));
  await s.commit({ add });
}

export { TestFileBackend };

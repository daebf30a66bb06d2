/**
 * Where a BlockMap comes from: a running daemon (control command `map`, registered here too) or a
 * spare device read offline (read-only; the daemon must not be running on it, as for `remapd dump`).
 */
import type { MetadataStore } from '../../metadata/store';
import { openBackend } from '../../storage/file-backend';
import { MetadataStore as Store } from '../../metadata/store';
import { callControl } from '../control-client';
import type { BlockMap } from './block-map';

interface ControlLike {
  register(cmd: string, handler: (args: Record<string, unknown>) => unknown): void;
}

/** The map held by a store, for an export of `size` bytes. */
export function mapOfStore(store: MetadataStore, size: number): BlockMap {
  return {
    size,
    blockSize: store.blockSize,
    remapped: [...store.entries()].map((e) => e.mainBlock).sort((a, b) => a - b),
    pending: [...store.pending()].sort((a, b) => a - b),
  };
}

/** Control command `map` → BlockMap (every remapped and pending block; `list` caps pending at 1000). */
export function registerMapCommand(control: ControlLike, store: MetadataStore | undefined, size: number): void {
  control.register('map', () => (store ? mapOfStore(store, size) : { size, blockSize: 4096, remapped: [], pending: [] }));
}

export async function mapFromControl(path: string): Promise<BlockMap> {
  return (await callControl(path, 'map')) as BlockMap;
}

export async function mapFromSpare(path: string): Promise<BlockMap> {
  const spare = await openBackend(path, { readOnly: true });
  try {
    const s = await Store.open(spare);
    try {
      return mapOfStore(s, s.mainIdentity.size);
    } finally {
      await s.close();
    }
  } finally {
    await spare.close();
  }
}

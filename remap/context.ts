/**
 * What the parts of the remapping device share: the two backends, the metadata store and its table
 * view, the block locks, the logger, the geometry and the counters. RemapDevice builds one and hands
 * it to routing, read recovery, the write-failure path and the mover, so none of them needs the others'
 * internals.
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { MetadataStore } from '../metadata/store';
import type { Backend } from '../storage/backend';
import type { BlockLocks } from './block-locks';
import type { RemapTable } from './remap-table';
import { blockLength, type ByteLength, type MainBlock } from '../units';

export interface RemapCounters {
  readErrors: number;
  writeErrors: number;
  rescued: number;
  remappedOnWrite: number;
  migrated: number;
}

export interface RemapContext {
  readonly main: Backend;
  readonly spare: Backend;
  readonly store: MetadataStore;
  readonly table: RemapTable;
  readonly locks: BlockLocks;
  readonly log: Logger;
  /** Remap block size in bytes. */
  readonly blockSize: ByteLength;
  /** Export (= main) size in bytes. */
  readonly size: ByteLength;
  /** Extra attempts after a failed read of a piece of main. */
  readonly readRetries: number;
  readonly counters: RemapCounters;
  /** Where 'remap', 'pending', 'unremap' … events go (the RemapDevice). */
  readonly events: EventEmitter;
}

/** Bytes of block b that exist on the device (the last block may be short). */
export function lengthOf(c: RemapContext, b: MainBlock): ByteLength {
  return blockLength(b, c.blockSize, c.size);
}

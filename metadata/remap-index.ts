/**
 * RemapIndex: the in-memory remap table (main block -> spare block, reason, createdAt) without one object
 * per entry (docs/FORMAT.md §9).
 *
 * - Entries live in parallel typed arrays ("slots"), in insertion order. A removed entry leaves a dead slot
 *   (reason 0) until the arrays are compacted; compaction keeps the order. Iteration order is therefore
 *   exactly that of a Map with the same set/delete history, which keeps checkpoint encoding byte-identical
 *   to the earlier Map-based table.
 * - An open-addressing hash table (linear probing, load factor <= 2/3, backward-shift deletion, no
 *   tombstones) on an Int32Array maps a main block to its slot (stored as slot + 1; 0 = empty).
 * - Main blocks are integers < 2^48 (u48 on disk), so they are kept in a Float64Array.
 *
 * Memory: 25 bytes per slot + 4-8 bytes per entry of hash table, i.e. ~35 MB for 1,000,000 remaps
 * (a Map of RemapEntry objects took ~190 MB of heap).
 */
import { mainBlock, spareBlock, type SpareBlock } from '../units';
import { REMAP_REASONS, type RemapEntry, type RemapReason } from './types';

const MIN_SLOTS = 16;
const TWO32 = 4294967296;

/** 32-bit hash of a non-negative integer < 2^53 (murmur3-style finalizer over both halves). */
function hashOf(k: number): number {
  let h = k >>> 0; // low 32 bits (ToUint32 is k mod 2^32)
  if (k >= TWO32) h = (h ^ Math.imul((k / TWO32) >>> 0, 0x27d4eb2d)) | 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

function pow2AtLeast(n: number): number {
  let p = MIN_SLOTS;
  while (p < n) p *= 2;
  return p;
}

/** Hash table size for `cap` slots: a power of two >= 1.5 * cap, so the load factor stays <= 2/3. */
function tableSizeFor(cap: number): number {
  return pow2AtLeast(cap + (cap >>> 1));
}

/** The per-slot arrays of a RemapIndex (see allocateSlots / fromSlots). */
export interface SlotArrays {
  mains: Float64Array;
  spares: Float64Array;
  created: Float64Array;
  reasons: Uint8Array;
}

export class RemapIndex {
  private mains: Float64Array;
  private spares: Float64Array;
  private created: Float64Array;
  /** Reason code 1..8 of the slot; 0 = dead (removed) slot. */
  private reasons: Uint8Array;
  /** Slots in use, live or dead. */
  private slots = 0;
  private live = 0;
  private table: Int32Array;
  private mask: number;
  /** Live entries per reason code (index = code). */
  private readonly perReason = new Float64Array(REMAP_REASONS.length + 1);

  constructor(expected = 0) {
    const cap = Math.max(MIN_SLOTS, expected);
    this.mains = new Float64Array(cap);
    this.spares = new Float64Array(cap);
    this.created = new Float64Array(cap);
    this.reasons = new Uint8Array(cap);
    this.table = new Int32Array(tableSizeFor(cap));
    this.mask = this.table.length - 1;
  }

  get size(): number {
    return this.live;
  }

  /** Empty slot arrays for `capacity` entries, to fill and hand to fromSlots(). */
  static allocateSlots(capacity: number): SlotArrays {
    const cap = Math.max(MIN_SLOTS, capacity);
    return { mains: new Float64Array(cap), spares: new Float64Array(cap), created: new Float64Array(cap), reasons: new Uint8Array(cap) };
  }

  /**
   * An index over the first `n` filled slots (all live: reason 1..8), taking the arrays over; the spare
   * capacity beyond `n` is used by later set() calls. One pass builds the hash table; a main block that
   * appears twice throws.
   */
  static fromSlots(a: SlotArrays, n: number): RemapIndex {
    const ix = new RemapIndex(0);
    ix.mains = a.mains;
    ix.spares = a.spares;
    ix.created = a.created;
    ix.reasons = a.reasons;
    ix.table = new Int32Array(tableSizeFor(a.mains.length));
    ix.mask = ix.table.length - 1;
    ix.slots = n;
    ix.live = n;
    ix.indexSlots();
    for (let s = 0; s < n; s++) ix.perReason[a.reasons[s]]++;
    return ix;
  }

  /** Spare block of `main`, or -1 when it is not remapped. This is the lookup of the I/O path. */
  spareOf(main: number): SpareBlock | -1 {
    if (this.live === 0) return -1;
    const t = this.table;
    const mask = this.mask;
    let i = hashOf(main) & mask;
    for (;;) {
      const s = t[i];
      if (s === 0) return -1;
      if (this.mains[s - 1] === main) return spareBlock(this.spares[s - 1]);
      i = (i + 1) & mask;
    }
  }

  has(main: number): boolean {
    return this.find(main) >= 0;
  }

  /** Reason code (1..8) of `main`'s remap, or 0. */
  reasonCodeOf(main: number): number {
    const s = this.find(main);
    return s < 0 ? 0 : this.reasons[s];
  }

  /** A fresh RemapEntry object for `main`, or undefined. */
  get(main: number): RemapEntry | undefined {
    const s = this.find(main);
    return s < 0 ? undefined : this.entryAt(s);
  }

  /**
   * Insert or replace `main`'s remap (a replaced entry keeps its position, like Map.set).
   * Returns the spare block of the replaced remap, or -1 when there was none.
   */
  set(main: number, spare: number, reasonCode: number, createdAt: number): number {
    // Make room first (compact if at least a quarter of the slots is dead, otherwise grow), so that the
    // probe below stays valid.
    if (this.slots === this.mains.length) this.resize(this.slots - this.live >= this.slots / 4 ? this.mains.length : this.mains.length * 2);
    const t = this.table;
    const mask = this.mask;
    const mains = this.mains;
    let i = hashOf(main) & mask;
    for (;;) {
      const s0 = t[i];
      if (s0 === 0) break;
      const s = s0 - 1;
      if (mains[s] === main) {
        const old = this.spares[s];
        this.perReason[this.reasons[s]]--;
        this.perReason[reasonCode]++;
        this.spares[s] = spare;
        this.reasons[s] = reasonCode;
        this.created[s] = createdAt;
        return old;
      }
      i = (i + 1) & mask;
    }
    const s = this.slots++;
    mains[s] = main;
    this.spares[s] = spare;
    this.reasons[s] = reasonCode;
    this.created[s] = createdAt;
    t[i] = s + 1;
    this.live++;
    this.perReason[reasonCode]++;
    return -1;
  }

  /** Remove `main`'s remap. Returns its spare block, or -1 when there was none. */
  delete(main: number): number {
    let i = this.probe(main);
    const t = this.table;
    if (t[i] === 0) return -1;
    const s = t[i] - 1;
    const old = this.spares[s];
    this.perReason[this.reasons[s]]--;
    this.reasons[s] = 0;
    this.live--;
    // Backward-shift deletion: pull later members of the probe run into the hole.
    const mask = this.mask;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const sj = t[j];
      if (sj === 0) break;
      const home = hashOf(this.mains[sj - 1]) & mask;
      // Move sj into hole i unless its home lies cyclically in (i, j].
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        t[i] = sj;
        i = j;
      }
    }
    t[i] = 0;
    if (this.live === 0) this.slots = 0;
    else if (this.slots > 1024 && this.slots - this.live > this.slots / 2) this.resize(this.mains.length);
    return old;
  }

  // ------------------------------------------------------------ iteration (insertion order)

  /** Number of slots to scan with the *At accessors; slots with reasonAt() === 0 are dead. */
  get slotCount(): number {
    return this.slots;
  }
  mainAt(slot: number): number {
    return this.mains[slot];
  }
  spareAt(slot: number): number {
    return this.spares[slot];
  }
  reasonAt(slot: number): number {
    return this.reasons[slot];
  }
  createdAtOf(slot: number): number {
    return this.created[slot];
  }

  entryAt(slot: number): RemapEntry {
    return {
      mainBlock: mainBlock(this.mains[slot]),
      spareBlock: spareBlock(this.spares[slot]),
      reason: REMAP_REASONS[this.reasons[slot] - 1],
      createdAt: this.created[slot],
    };
  }

  /** Entries as objects, built lazily, in insertion order. Do not modify the index while iterating. */
  *entries(): IterableIterator<RemapEntry> {
    for (let s = 0; s < this.slots; s++) if (this.reasons[s] !== 0) yield this.entryAt(s);
  }

  /** Live remaps per reason name (reasons with no remap are left out). */
  reasonCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (let c = 1; c < this.perReason.length; c++) if (this.perReason[c] > 0) out[REMAP_REASONS[c - 1] as RemapReason] = this.perReason[c];
    return out;
  }

  /** An independent copy (same order). */
  clone(): RemapIndex {
    const c = new RemapIndex(0);
    c.mains = this.mains.slice();
    c.spares = this.spares.slice();
    c.created = this.created.slice();
    c.reasons = this.reasons.slice();
    c.table = this.table.slice();
    c.mask = this.mask;
    c.slots = this.slots;
    c.live = this.live;
    c.perReason.set(this.perReason);
    return c;
  }

  // ------------------------------------------------------------ internals

  /** Slot of `main`, or -1. */
  private find(main: number): number {
    if (this.live === 0) return -1;
    const s = this.table[this.probe(main)];
    return s - 1;
  }

  /** Hash table position holding `main`, or the empty position where it would go. */
  private probe(main: number): number {
    const t = this.table;
    const mask = this.mask;
    let i = hashOf(main) & mask;
    for (;;) {
      const s = t[i];
      if (s === 0 || this.mains[s - 1] === main) return i;
      i = (i + 1) & mask;
    }
  }

  /** Drop dead slots (keeping order) into arrays of `capacity` slots and rebuild the hash table. */
  private resize(capacity: number): void {
    const cap = Math.max(MIN_SLOTS, capacity, this.live);
    const mains = new Float64Array(cap);
    const spares = new Float64Array(cap);
    const created = new Float64Array(cap);
    const reasons = new Uint8Array(cap);
    let n = 0;
    for (let s = 0; s < this.slots; s++) {
      if (this.reasons[s] === 0) continue;
      mains[n] = this.mains[s];
      spares[n] = this.spares[s];
      created[n] = this.created[s];
      reasons[n] = this.reasons[s];
      n++;
    }
    this.mains = mains;
    this.spares = spares;
    this.created = created;
    this.reasons = reasons;
    this.slots = n;
    const size = tableSizeFor(cap);
    if (size !== this.table.length) {
      this.table = new Int32Array(size);
      this.mask = size - 1;
    } else {
      this.table.fill(0);
    }
    this.indexSlots();
  }

  /** Enter slots 0..slots-1 into the empty hash table (throws if a main block appears twice). */
  private indexSlots(): void {
    const t = this.table;
    const mask = this.mask;
    const mains = this.mains;
    for (let s = 0; s < this.slots; s++) {
      const m = mains[s];
      let i = hashOf(m) & mask;
      for (;;) {
        const x = t[i];
        if (x === 0) {
          t[i] = s + 1;
          break;
        }
        if (mains[x - 1] === m) throw new Error(`main block ${m} appears twice`);
        i = (i + 1) & mask;
      }
    }
  }
}

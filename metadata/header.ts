/**
 * Copy header: 512 bytes at the start of a 4 KiB header area (docs/FORMAT.md §3).
 * The first 12 bytes (magic, version, header size) and the CRC in the header's last 4 bytes are stable
 * across format versions, so an old reader can recognise (and refuse) a newer header.
 */
import { crc32 } from './crc';
import { readText, readU64, writeText, writeU64 } from './codec';
import { COPIES } from './layout';

export const MAGIC = Buffer.from('RMPDMETA', 'latin1');
export const FORMAT_VERSION = 1;
export const HEADER_BYTES = 512;
/** Incompatible feature bits this reader understands (none defined yet). */
export const KNOWN_INCOMPAT_FEATURES = 0;

export interface Header {
  version: number;
  incompatFeatures: number;
  compatFeatures: number;
  copyIndex: number;
  sequence: number;
  timestamp: number;
  setupUuid: Buffer; // 16 bytes
  mainSize: number;
  mainLogicalBlockSize: number;
  blockSize: number;
  spareSize: number;
  spareLogicalBlockSize: number;
  activeSlot: number;
  regionBytes: number;
  journalBytes: number;
  checkpointSlotBytes: number;
  tableCapacity: number;
  copyOffsets: number[]; // 5 absolute region offsets
  checkpointEntries: number;
  checkpointChunks: number;
  checkpointCrc: number;
  scanCursor: number;
  scanPasses: number;
  lastFullScanAt: number;
  createdAt: number;
  mainSerial?: string;
  mainWwn?: string;
  /** Who serves this setup (written by `serve` at start; stale once that process is gone). */
  owner?: OwnerMarker;
}

/**
 * The owner marker: names the process that holds the setup's lock, for error messages. The lock itself
 * (flock / O_EXCL, daemon/owner-lock.ts) is the truth; a marker of a dead process means nothing.
 */
export interface OwnerMarker {
  pid: number;
  /** host name, UTF-8, at most 64 bytes */
  host: string;
  /** start time of the owning process, ms since epoch */
  since: number;
}

export const OFF = {
  magic: 0,
  version: 8,
  headerBytes: 10,
  incompat: 12,
  compat: 16,
  copyIndex: 20,
  sequence: 24,
  timestamp: 32,
  uuid: 40,
  mainSize: 56,
  mainLbs: 64,
  blockSize: 68,
  spareSize: 72,
  spareLbs: 80,
  activeSlot: 84,
  regionBytes: 88,
  journalBytes: 96,
  checkpointSlotBytes: 104,
  tableCapacity: 112,
  copyOffsets: 120,
  checkpointEntries: 160,
  checkpointChunks: 168,
  checkpointCrc: 172,
  scanCursor: 176,
  scanPasses: 184,
  lastFullScan: 192,
  createdAt: 200,
  serial: 208,
  wwn: 272,
  ownerPid: 336,
  ownerSince: 344,
  ownerHost: 352,
  crc: 508,
} as const;

export function encodeHeader(h: Header): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(b, OFF.magic);
  b.writeUInt16LE(h.version, OFF.version);
  b.writeUInt16LE(HEADER_BYTES, OFF.headerBytes);
  b.writeUInt32LE(h.incompatFeatures, OFF.incompat);
  b.writeUInt32LE(h.compatFeatures, OFF.compat);
  b.writeUInt32LE(h.copyIndex, OFF.copyIndex);
  writeU64(b, OFF.sequence, h.sequence);
  writeU64(b, OFF.timestamp, h.timestamp);
  h.setupUuid.copy(b, OFF.uuid, 0, 16);
  writeU64(b, OFF.mainSize, h.mainSize);
  b.writeUInt32LE(h.mainLogicalBlockSize, OFF.mainLbs);
  b.writeUInt32LE(h.blockSize, OFF.blockSize);
  writeU64(b, OFF.spareSize, h.spareSize);
  b.writeUInt32LE(h.spareLogicalBlockSize, OFF.spareLbs);
  b.writeUInt32LE(h.activeSlot, OFF.activeSlot);
  writeU64(b, OFF.regionBytes, h.regionBytes);
  writeU64(b, OFF.journalBytes, h.journalBytes);
  writeU64(b, OFF.checkpointSlotBytes, h.checkpointSlotBytes);
  writeU64(b, OFF.tableCapacity, h.tableCapacity);
  for (let i = 0; i < COPIES; i++) writeU64(b, OFF.copyOffsets + 8 * i, h.copyOffsets[i]);
  writeU64(b, OFF.checkpointEntries, h.checkpointEntries);
  b.writeUInt32LE(h.checkpointChunks, OFF.checkpointChunks);
  b.writeUInt32LE(h.checkpointCrc >>> 0, OFF.checkpointCrc);
  writeU64(b, OFF.scanCursor, h.scanCursor);
  writeU64(b, OFF.scanPasses, h.scanPasses);
  writeU64(b, OFF.lastFullScan, h.lastFullScanAt);
  writeU64(b, OFF.createdAt, h.createdAt);
  writeText(b, OFF.serial, 64, h.mainSerial);
  writeText(b, OFF.wwn, 64, h.mainWwn);
  if (h.owner && h.owner.pid > 0) {
    b.writeUInt32LE(h.owner.pid, OFF.ownerPid);
    writeU64(b, OFF.ownerSince, h.owner.since);
    writeText(b, OFF.ownerHost, 64, truncateUtf8(h.owner.host, 64));
  }
  b.writeUInt32LE(crc32(b.subarray(0, OFF.crc)), OFF.crc);
  return b;
}

export type HeaderResult =
  { ok: true; header: Header } | { ok: false; failedCheck: 'magic' | 'header-crc' | 'version' | 'features' | 'layout'; version?: number };

/** Decode and verify a header (magic, CRC, version, feature bits). */
export function decodeHeader(b: Buffer): HeaderResult {
  if (b.length < HEADER_BYTES || !b.subarray(0, 8).equals(MAGIC)) return { ok: false, failedCheck: 'magic' };
  const version = b.readUInt16LE(OFF.version);
  const hb = b.readUInt16LE(OFF.headerBytes);
  if (hb < 256 || hb > b.length || hb % 4 !== 0) return { ok: false, failedCheck: 'header-crc' };
  if (crc32(b.subarray(0, hb - 4)) !== b.readUInt32LE(hb - 4)) return { ok: false, failedCheck: 'header-crc' };
  if (version !== FORMAT_VERSION || hb !== HEADER_BYTES) return { ok: false, failedCheck: 'version', version };
  const incompat = b.readUInt32LE(OFF.incompat);
  if ((incompat & ~KNOWN_INCOMPAT_FEATURES) !== 0) return { ok: false, failedCheck: 'features', version };
  const copyOffsets: number[] = [];
  for (let i = 0; i < COPIES; i++) copyOffsets.push(readU64(b, OFF.copyOffsets + 8 * i));
  const header: Header = {
    version,
    incompatFeatures: incompat,
    compatFeatures: b.readUInt32LE(OFF.compat),
    copyIndex: b.readUInt32LE(OFF.copyIndex),
    sequence: readU64(b, OFF.sequence),
    timestamp: readU64(b, OFF.timestamp),
    setupUuid: Buffer.from(b.subarray(OFF.uuid, OFF.uuid + 16)),
    mainSize: readU64(b, OFF.mainSize),
    mainLogicalBlockSize: b.readUInt32LE(OFF.mainLbs),
    blockSize: b.readUInt32LE(OFF.blockSize),
    spareSize: readU64(b, OFF.spareSize),
    spareLogicalBlockSize: b.readUInt32LE(OFF.spareLbs),
    activeSlot: b.readUInt32LE(OFF.activeSlot),
    regionBytes: readU64(b, OFF.regionBytes),
    journalBytes: readU64(b, OFF.journalBytes),
    checkpointSlotBytes: readU64(b, OFF.checkpointSlotBytes),
    tableCapacity: readU64(b, OFF.tableCapacity),
    copyOffsets,
    checkpointEntries: readU64(b, OFF.checkpointEntries),
    checkpointChunks: b.readUInt32LE(OFF.checkpointChunks),
    checkpointCrc: b.readUInt32LE(OFF.checkpointCrc),
    scanCursor: readU64(b, OFF.scanCursor),
    scanPasses: readU64(b, OFF.scanPasses),
    lastFullScanAt: readU64(b, OFF.lastFullScan),
    createdAt: readU64(b, OFF.createdAt),
    mainSerial: readText(b, OFF.serial, 64),
    mainWwn: readText(b, OFF.wwn, 64),
  };
  const ownerPid = b.readUInt32LE(OFF.ownerPid);
  const ownerSince = readU64(b, OFF.ownerSince);
  if (ownerPid > 0 && Number.isSafeInteger(ownerSince))
    header.owner = { pid: ownerPid, since: ownerSince, host: readText(b, OFF.ownerHost, 64) ?? '' };
  for (const v of [
    header.sequence,
    header.timestamp,
    header.mainSize,
    header.spareSize,
    header.regionBytes,
    header.journalBytes,
    header.checkpointSlotBytes,
    header.tableCapacity,
    header.checkpointEntries,
    ...copyOffsets,
  ]) {
    if (!Number.isSafeInteger(v)) return { ok: false, failedCheck: 'layout', version };
  }
  if (header.activeSlot > 1 || header.copyIndex >= COPIES || header.sequence < 1) return { ok: false, failedCheck: 'layout', version };
  return { ok: true, header };
}

/** The longest prefix of `s` that fits in `max` bytes of UTF-8 without splitting a character. */
export function truncateUtf8(s: string, max: number): string {
  let out = s;
  while (Buffer.byteLength(out, 'utf8') > max) out = out.slice(0, -1);
  return out;
}

export function uuidToString(u: Buffer): string {
  const h = u.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function uuidFromString(s: string): Buffer {
  const b = Buffer.from(s.replace(/-/g, ''), 'hex');
  if (b.length !== 16) throw new Error(`bad UUID ${s}`);
  return b;
}

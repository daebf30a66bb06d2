/**
 * Pairing of a spare with its main device. The spare's headers record the setup UUID (random, 128 bit,
 * made at create), the main device's size and logical block size, and its serial/WWN when it is a block
 * device. open() refuses a main device that differs in any recorded property.
 */
import type { Backend } from '../storage/backend';
import type { Header } from './header';
import type { MainIdentity } from './types';

export function identityFromBackend(b: Backend): MainIdentity {
  const id: MainIdentity = { size: b.size, logicalBlockSize: b.logicalBlockSize };
  if (b.stableIds.serial) id.serial = b.stableIds.serial;
  if (b.stableIds.wwn) id.wwn = b.stableIds.wwn;
  return id;
}

export function identityFromHeader(h: Header): MainIdentity {
  const id: MainIdentity = { size: h.mainSize, logicalBlockSize: h.mainLogicalBlockSize };
  if (h.mainSerial) id.serial = h.mainSerial;
  if (h.mainWwn) id.wwn = h.mainWwn;
  return id;
}

/** Differences between the recorded and the offered main device; empty when they pair. */
export function pairingMismatches(recorded: MainIdentity, offered: MainIdentity): string[] {
  const out: string[] = [];
  if (recorded.size !== offered.size) out.push(`size ${offered.size} != recorded ${recorded.size}`);
  if (recorded.logicalBlockSize !== offered.logicalBlockSize) {
    out.push(`logical block size ${offered.logicalBlockSize} != recorded ${recorded.logicalBlockSize}`);
  }
  // A stable ID recorded at create must be present and equal; one recorded as absent is not checked
  // (a file main device has none).
  if (recorded.serial && recorded.serial !== offered.serial)
    out.push(`serial ${offered.serial ?? '(none)'} != recorded ${recorded.serial}`);
  if (recorded.wwn && recorded.wwn !== offered.wwn) out.push(`WWN ${offered.wwn ?? '(none)'} != recorded ${recorded.wwn}`);
  return out;
}

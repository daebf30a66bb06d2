/**
 * What `remapd attach` may hand to a kernel nbd device, and when it must refuse. The identity of an
 * export is its backend identifier (remapd's setup UUID, from the export description the daemon
 * sends), its size and its transmission flags. After a reconnect, anything different is refused: the
 * kernel keeps the size and flags from the first attach, so a different setup, a resized export, or a
 * read-only export behind a writable device would be silently wrong. The device then keeps waiting (up
 * to its dead-connection timeout) for the right daemon to come back.
 */
import { TxFlag } from '../protocol/constants';

export interface ExportIdentity {
  /** remapd-setup-<uuid>, or remapd-passthrough-<export> for a daemon without a spare. */
  readonly backend: string;
  readonly size: number;
  readonly transmissionFlags: number;
}

/** The backend identifier for an export, from the description remapd serve sends (setup=<uuid>). */
export function backendIdentifier(description: string | undefined, exportName: string): string {
  const m = /(?:^|\s)setup=([0-9a-f-]{36})(?:\s|$)/i.exec(description ?? '');
  return m ? `remapd-setup-${m[1].toLowerCase()}` : `remapd-passthrough-${exportName || 'default'}`;
}

function flagNames(f: number): string {
  const names = Object.entries(TxFlag)
    .filter(([, bit]) => f & bit)
    .map(([n]) => n);
  return `0x${f.toString(16)} (${names.join(' ') || 'none'})`;
}

/** Why the export offered now must not replace the one attached; undefined when it may. */
export function refuseReattach(attached: ExportIdentity, offered: ExportIdentity): string | undefined {
  if (offered.backend !== attached.backend)
    return `the socket serves another setup (${offered.backend}; the device holds ${attached.backend})`;
  if (offered.size !== attached.size) return `the export size changed from ${attached.size} to ${offered.size} bytes`;
  const attachedRo = (attached.transmissionFlags & TxFlag.READ_ONLY) !== 0;
  const offeredRo = (offered.transmissionFlags & TxFlag.READ_ONLY) !== 0;
  if (offeredRo && !attachedRo) return 'the export is now read-only but the device was attached writable';
  if (offered.transmissionFlags !== attached.transmissionFlags) {
    return `the transmission flags changed from ${flagNames(attached.transmissionFlags)} to ${flagNames(offered.transmissionFlags)}`;
  }
  return undefined;
}

/** Why several connections of one attach disagree (each must negotiate the same export). */
export function refuseMultiConnection(first: ExportIdentity, other: ExportIdentity): string | undefined {
  const r = refuseReattach(first, other);
  if (r) return `connections disagree: ${r}`;
  if (!(first.transmissionFlags & TxFlag.CAN_MULTI_CONN)) return 'the export does not allow multiple connections (no CAN_MULTI_CONN)';
  return undefined;
}

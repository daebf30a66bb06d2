/**
 * What a planned restart passes from the old remapd process to the next one besides the descriptors:
 * the names under which descriptors travel, and the state record (listeners, socket paths to remove at
 * the final stop, and per connection its negotiated session). Shared by both sides (daemon/handover*.ts).
 */
import type { HandedOverSession } from '../protocol/handover';

/** Names of handed-over descriptors all start with this (LISTEN_FDNAMES / REMAPD_HANDOVER_FDNAMES). */
export const FD_NAME_PREFIX = 'remapd-';
export const STATE_FD_NAME = 'remapd-state';
/** Environment variable naming the descriptors a re-executed successor inherits at 3, 4, … */
export const HANDOVER_ENV = 'REMAPD_HANDOVER_FDNAMES';
/** Set for a successor started while the old process still serves: it gets the state over IPC when ready. */
export const PREPARED_ENV = 'REMAPD_HANDOVER_PREPARED';

export interface HandoverState {
  readonly version: 1;
  /** When the old process stopped reading its connections (ms since the epoch): the stall starts here. */
  readonly startedAtEpochMs: number;
  /** When the restart was asked for (signal), for the log. */
  readonly signalledAtEpochMs?: number;
  readonly from: number;
  readonly listeners: readonly { readonly name: string }[];
  /** Unix socket paths to remove when the daemon finally stops. */
  readonly socketPaths: readonly string[];
  readonly connections: readonly (
    { readonly name: string; readonly fresh: true } | { readonly name: string; readonly session: HandedOverSession }
  )[];
}

/** The state record, checked; throws on anything else. */
export function checkHandoverState(x: unknown): HandoverState {
  const s = x as HandoverState;
  if (s?.version !== 1 || !Array.isArray(s.connections) || !Array.isArray(s.listeners)) throw new Error('unknown format');
  return s;
}

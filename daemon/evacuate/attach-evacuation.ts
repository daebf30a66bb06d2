/**
 * Wires evacuation into a running daemon: the control commands evacuate.start/status/switch/cancel, the
 * `evacuate` section of `remapd status`, and resuming a copy a previous run left unfinished.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { ControlError } from '../control-server';
import { Evacuation } from './evacuation';
import { loadState, removeState, type EvacuationState } from './evacuation-state';
import type { MirrorDevice } from './mirror-device';
import type { OwnDevices } from './target-claim';

interface ControlLike {
  register(cmd: string, handler: (args: Record<string, unknown>) => unknown): void;
}

export interface EvacuationWiring {
  readonly mirror: MirrorDevice;
  readonly statePath: string;
  /** The setup's main and spare (an evacuation never writes them). */
  readonly own: OwnDevices;
  /** Block size of the unreadable list: the remap block size (4096 without a spare). */
  readonly blockSize: number;
  readonly log: Logger;
  readonly control: ControlLike | undefined;
  readonly sections: Map<string, () => unknown>;
  readonly beforeStop: (() => Promise<void>)[];
  readonly onDone?: (s: EvacuationState) => void;
  readonly onSwitched?: (target: string) => Promise<void> | void;
}

/** The state a previous run left, if any (a `switched` state means: serve the target). */
export function previousEvacuation(statePath: string): EvacuationState | undefined {
  return loadState(statePath);
}

export async function attachEvacuation(w: EvacuationWiring, previous: EvacuationState | undefined): Promise<void> {
  const hooks = { log: w.log, statePath: w.statePath, own: w.own, onDone: w.onDone, onSwitched: w.onSwitched };
  let evac: Evacuation | undefined;
  if (previous && previous.phase !== 'switched') {
    try {
      evac = await Evacuation.resume(w.mirror, previous, hooks);
    } catch (err) {
      w.log.error({ err, target: previous.target }, 'cannot resume the evacuation');
    }
  }
  const status = () =>
    evac ? evac.status() : previous?.phase === 'switched' ? { phase: 'switched', target: previous.target } : { phase: 'none' };
  w.sections.set('evacuate', status);
  const c = w.control;
  if (c) {
    c.register('evacuate.status', status);
    c.register('evacuate.start', async (args) => {
      if (typeof args.to !== 'string' || !args.to) throw new ControlError('missing the target device (to)');
      if (previous?.phase === 'switched' || evac?.phase === 'switched')
        throw new ControlError('this daemon already serves an evacuated disk');
      if (evac && evac.phase !== 'failed')
        throw new ControlError(`an evacuation is already ${evac.phase} (remapd evacuate --cancel first)`);
      mkdirSync(dirname(w.statePath), { recursive: true, mode: 0o700 });
      try {
        const rate = typeof args.rate === 'number' && args.rate >= 0 ? args.rate : 0;
        evac = await Evacuation.start(w.mirror, args.to, w.blockSize, rate, hooks);
      } catch (err) {
        throw new ControlError(`cannot start: ${(err as Error).message}`);
      }
      return evac.status();
    });
    c.register('evacuate.switch', async () => {
      if (!evac) throw new ControlError('no evacuation (remapd evacuate --to DEVICE first)');
      try {
        await evac.switch();
      } catch (err) {
        throw new ControlError((err as Error).message);
      }
      return evac.status();
    });
    c.register('evacuate.cancel', async () => {
      if (!evac) throw new ControlError('no evacuation to cancel');
      try {
        await evac.cancel();
      } catch (err) {
        throw new ControlError((err as Error).message);
      }
      removeState(w.statePath);
      evac = undefined;
      return { phase: 'none' };
    });
  }
  w.beforeStop.push(async () => {
    await evac?.close();
  });
}

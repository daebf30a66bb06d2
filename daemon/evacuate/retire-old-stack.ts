/**
 * The old stack of a setup (remap device, metadata store, main and spare backends, their owner claims)
 * and its retirement after `remapd evacuate --switch`: once the new disk serves every request, the old
 * devices are closed and their claims released at once, so the admin can pull the dying disk or reuse
 * the spare without restarting the daemon (the point of evacuating online).
 *
 * Order: the hooks registered in `beforeRetire` (the health scanner: its worker reads main and migrates
 * through the remap device; SMART checks) → a flush of the old device → the remap device's background
 * probes → the metadata store (waits for commits under way) → main and spare → the claims. The stop path closes the same stack
 * through `close()`, which runs once: a daemon stopped after a switch closes nothing twice.
 *
 * From the moment retirement starts, the control commands that need the old stack refuse with
 * RELEASED_MESSAGE (never EBADF), the scanner's status sections are gone, and `retired` tells `remapd
 * status` (control-commands.ts) that the setup is evacuated.
 */
import type { Logger } from 'pino';
import type { MetadataStore } from '../../metadata/store';
import type { BlockDevice } from '../../protocol/block-device';
import type { RemapDevice } from '../../remap/remap-device';
import type { Backend } from '../../storage/backend';
import { ControlError } from '../control-server';
import type { SetupClaim } from '../owner-lock';

export const RELEASED_MESSAGE = 'evacuated: the old devices are released';

/** Control commands that read or change the old stack (registered by control-commands.ts, maps/, health/). */
export const OLD_STACK_COMMANDS = [
  'list',
  'remap',
  'unremap',
  'map',
  'faults',
  'scan.status',
  'scan.start',
  'scan.pause',
  'scan.resume',
  'scan.set',
  'scan.loopdelay',
  'scan.crash',
  'smart.check',
  'suspect',
] as const;

/** `remapd status` sections that describe the old main (health/attach.ts). */
const OLD_STACK_SECTIONS = ['scan', 'health', 'smart'];

export interface RetiredStack {
  /** The disk served now. */
  readonly to: string;
  readonly main: string;
  readonly spare: string | null;
  /** When the old devices were released (ISO time; null while closing). */
  releasedAt: string | null;
}

interface ControlLike {
  register(cmd: string, handler: (args: Record<string, unknown>) => unknown): void;
  commands(): string[];
}

export interface OldStackParts {
  readonly main: string;
  readonly spare: string | undefined;
  /** The device served before the switch (the remap device, or main passed through). */
  readonly device: BlockDevice;
  readonly remap: RemapDevice | undefined;
  readonly store: MetadataStore | undefined;
  /** Opened backends (raw main, spare), closed in this order. */
  readonly backends: readonly Backend[];
  readonly claim: SetupClaim;
  readonly log: Logger;
}

export class OldStack {
  /** Run when the stack is retired, before the devices close (the scanner adds its stop here). */
  readonly beforeRetire: (() => Promise<void>)[] = [];
  private closing: Promise<void> | undefined;
  private info: RetiredStack | undefined;

  constructor(private readonly p: OldStackParts) {}

  /** Set once retirement has started (the old stack must no longer be used). */
  get retired(): RetiredStack | undefined {
    return this.info;
  }

  /**
   * Retire after a switch to `to`: refuse the old stack's commands, drop its status sections, then stop
   * the scanner and close everything. Resolves when main and spare are closed and their claims released.
   */
  async retire(to: string, control: ControlLike | undefined, sections: Map<string, () => unknown>): Promise<void> {
    if (this.info || this.closing) return this.closing;
    this.info = { to, main: this.p.main, spare: this.p.spare ?? null, releasedAt: null };
    if (control) {
      const have = new Set(control.commands());
      const refuse = () => {
        throw new ControlError(`${RELEASED_MESSAGE} (now serving ${to})`);
      };
      for (const cmd of OLD_STACK_COMMANDS) if (have.has(cmd)) control.register(cmd, refuse);
    }
    for (const s of OLD_STACK_SECTIONS) sections.delete(s);
    for (const f of this.beforeRetire.splice(0)) await f().catch((err) => this.p.log.error({ err }, 'retire hook failed'));
    try {
      await this.p.device.flush(); // what the scanner migrated after the switch's own flush
    } catch (err) {
      this.p.log.warn({ err }, 'flushing the old devices before closing them failed');
    }
    await this.close();
    this.info.releasedAt = new Date().toISOString();
    this.p.log.warn(
      { main: this.p.main, spare: this.p.spare ?? null, serving: to },
      'evacuation: the old main and spare are closed and released (they may be removed or reused)',
    );
  }

  /** Close the stack (at stop, or as the last step of retire()); runs once. */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    const { remap, store, backends, claim, log } = this.p;
    remap?.close(); // background probes (main failed, spare failing)
    await store?.close().catch((err) => log.error({ err }, 'closing the metadata failed'));
    for (const b of backends) await b.close().catch((err) => log.error({ err, path: b.path }, 'close failed'));
    claim.release();
  }
}

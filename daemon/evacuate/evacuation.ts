/**
 * `remapd evacuate`: copy the whole export, as clients see it, onto a new disk while serving, then
 * verify it and (on request) serve the new disk instead. Control commands:
 *
 *   evacuate.start {to}   → status      evacuate.status → status
 *   evacuate.switch       → status      evacuate.cancel → status
 *
 * Phases: copying (1 MiB chunks under the mirror layer's range lock; a chunk that fails is read block by
 * block, failing blocks are listed and zero-filled on the target) → retrying (each listed block, up to
 * RETRIES more times, last) → verifying (each chunk compared under the range lock, sha256 of the
 * target) → done (remaining unreadable blocks written as a ddrescue mapfile) → switched.
 * Progress is saved every few seconds (evacuation-state.ts): a restart resumes the copy.
 * The target is claimed (target-claim.ts: one owner, never the setup's own main or spare) from the start
 * until the evacuation is cancelled, fails, or the daemon stops; after --switch it is the served disk.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { PassthroughDevice } from '../../remap/passthrough-device';
import type { Backend } from '../../storage/backend';
import { openBackend } from '../../storage/file-backend';
import { byteOffset, mainBlock } from '../../units';
import { writeDdrescueMapfile } from '../maps/ddrescue-mapfile';
import type { DeviceClaim } from '../owner-lock';
import type { MirrorDevice } from './mirror-device';
import { saveState, type EvacuationState } from './evacuation-state';
import { claimEvacuationTarget, type OwnDevices } from './target-claim';

const CHUNK = 1024 * 1024;
const RETRIES = 3;
const SAVE_EVERY_MS = 2000;

export interface EvacuationHooks {
  readonly log: Logger;
  readonly statePath: string;
  /** The setup's main and spare: never a target. */
  readonly own: OwnDevices;
  /** Called when the copy is verified (the alert program's EvacuateDone). */
  readonly onDone?: (s: EvacuationState) => void;
  /** Called after --switch, awaited: the old devices are no longer served (retire them: retire-old-stack.ts). */
  readonly onSwitched?: (target: string) => Promise<void> | void;
}

export class Evacuation {
  private target: Backend | undefined;
  private claim: DeviceClaim | undefined;
  private running: Promise<void> | undefined;
  private cancelled = false;
  private lastSave = 0;
  /** Bytes copied in this process, with times, for the rate. */
  private rateStart = { at: Date.now(), cursor: 0 };

  constructor(
    private readonly mirror: MirrorDevice,
    private state: EvacuationState,
    private readonly h: EvacuationHooks,
  ) {}

  static async start(mirror: MirrorDevice, to: string, blockSize: number, rate: number, h: EvacuationHooks): Promise<Evacuation> {
    const state: EvacuationState = {
      version: 1,
      target: to,
      size: mirror.size,
      blockSize,
      phase: 'copying',
      cursor: 0,
      unreadable: [],
      startedAt: Date.now(),
      rate,
    };
    const e = new Evacuation(mirror, state, h);
    await e.openTarget();
    saveState(h.statePath, state);
    e.run();
    return e;
  }

  /** Resume after a restart (state from the file). */
  static async resume(mirror: MirrorDevice, state: EvacuationState, h: EvacuationHooks): Promise<Evacuation> {
    const e = new Evacuation(mirror, state, h);
    if (state.phase === 'copying' || state.phase === 'retrying' || state.phase === 'verifying') {
      await e.openTarget();
      h.log.warn({ target: state.target, cursor: state.cursor, phase: state.phase }, 'evacuation resumed after a restart');
      e.run();
    } else if (state.phase === 'done') {
      await e.openTarget(); // keep mirroring so the verified copy stays exact until --switch
    }
    return e;
  }

  get phase(): EvacuationState['phase'] {
    return this.state.phase;
  }

  private async openTarget(): Promise<void> {
    const claim = await claimEvacuationTarget(this.state.target, this.h.own);
    let t: Backend;
    try {
      t = await openBackend(this.state.target, { readOnly: false });
    } catch (err) {
      claim.release();
      throw err;
    }
    if (t.size < this.mirror.size) {
      await t.close();
      claim.release();
      throw new Error(`${this.state.target} holds ${t.size} bytes, the export ${this.mirror.size}: too small`);
    }
    this.claim = claim;
    this.target = t;
    this.mirror.mirrorTo(t, (err) => this.fail(`writing the target failed: ${err.message}`));
    this.rateStart = { at: Date.now(), cursor: this.state.cursor };
  }

  private fail(message: string): void {
    if (this.state.phase === 'failed') return;
    this.h.log.error({ target: this.state.target, error: message }, 'evacuation failed');
    this.state.phase = 'failed';
    this.state.error = message;
    this.mirror.stopMirroring();
    this.save(true);
    // no longer ours: a new `evacuate --to` (this target or another) may claim it
    this.claim?.release();
    this.claim = undefined;
  }

  private save(force = false): void {
    const now = Date.now();
    if (!force && now - this.lastSave < SAVE_EVERY_MS) return;
    this.lastSave = now;
    try {
      saveState(this.h.statePath, this.state);
    } catch (err) {
      this.h.log.error({ err, path: this.h.statePath }, 'cannot save the evacuation progress');
    }
  }

  private run(): void {
    this.running = this.copy()
      .catch((err) => this.fail((err as Error).message))
      .finally(() => (this.running = undefined));
  }

  private alive(): boolean {
    return !this.cancelled && this.state.phase !== 'failed';
  }

  private async copy(): Promise<void> {
    const s = this.state;
    const t = this.target!;
    const buf = Buffer.allocUnsafe(CHUNK);
    if (s.phase === 'copying') {
      this.h.log.info({ target: s.target, from: s.cursor, size: s.size }, 'evacuation: copying');
      while (s.cursor < s.size && this.alive()) {
        const at = byteOffset(s.cursor);
        const n = Math.min(CHUNK, s.size - at);
        await this.mirror.withRangeLock(at, n, async () => {
          try {
            await this.mirror.served.read(at, n, buf, 0);
            await t.write(at, buf.subarray(0, n));
          } catch {
            await this.copyBlockByBlock(at, n, buf);
          }
        });
        s.cursor = at + n;
        this.save();
        // Let client requests in between chunks; with a rate limit, wait until the copy is back on schedule.
        const ahead = s.rate > 0 ? ((s.cursor - this.rateStart.cursor) / s.rate) * 1000 - (Date.now() - this.rateStart.at) : 0;
        await new Promise((r) => (ahead > 0 ? setTimeout(r, ahead) : setImmediate(r)));
      }
      if (!this.alive()) return;
      s.phase = 'retrying';
      this.save(true);
    }
    if (s.phase === 'retrying') {
      for (let round = 0; round < RETRIES && s.unreadable.length && this.alive(); round++) {
        const still: number[] = [];
        for (const b of s.unreadable) if (!(await this.copyOneBlock(b, buf))) still.push(b);
        this.h.log.info(
          { round: round + 1, before: s.unreadable.length, after: still.length },
          'evacuation: retried the unreadable blocks',
        );
        s.unreadable = still;
        this.save(true);
      }
      if (!this.alive()) return;
      s.phase = 'verifying';
      this.save(true);
    }
    if (s.phase === 'verifying') await this.verify(buf);
  }

  /** Read a failed chunk block by block: readable blocks are copied, the others listed (target gets zeroes). */
  private async copyBlockByBlock(at: number, n: number, buf: Buffer): Promise<void> {
    const B = this.state.blockSize;
    for (let b = Math.floor(at / B); b * B < at + n; b++) {
      if (!(await this.copyOneBlock(b, buf, true))) {
        if (!this.state.unreadable.includes(b)) this.state.unreadable.push(b);
      }
    }
  }

  /** Copy block b; false when it cannot be read. `locked`: the caller holds the range lock. */
  private async copyOneBlock(b: number, buf: Buffer, locked = false): Promise<boolean> {
    const B = this.state.blockSize;
    const at = byteOffset(b * B);
    const n = Math.min(B, this.state.size - at);
    const t = this.target!;
    const go = async () => {
      try {
        await this.mirror.served.read(at, n, buf, 0);
      } catch {
        await t.zero(at, n, true);
        return false;
      }
      await t.write(at, buf.subarray(0, n));
      return true;
    };
    return locked ? go() : this.mirror.withRangeLock(at, n, go);
  }

  private async verify(buf: Buffer): Promise<void> {
    const s = this.state;
    const t = this.target!;
    const other = Buffer.allocUnsafe(CHUNK);
    const hash = createHash('sha256');
    const bad = new Set(s.unreadable);
    const B = s.blockSize;
    let mismatches = 0;
    this.h.log.info({ target: s.target }, 'evacuation: verifying');
    await t.sync();
    for (let at = 0; at < s.size && this.alive(); at += CHUNK) {
      const n = Math.min(CHUNK, s.size - at);
      await this.mirror.withRangeLock(at, n, async () => {
        await t.read(byteOffset(at), n, other, 0);
        hash.update(other.subarray(0, n));
        let ok = true;
        try {
          await this.mirror.served.read(byteOffset(at), n, buf, 0);
          ok = buf.subarray(0, n).equals(other.subarray(0, n));
        } catch {
          // a chunk with unreadable blocks: compare the readable blocks one by one
          for (let b = Math.floor(at / B); b * B < at + n; b++) {
            if (bad.has(b)) continue;
            const l = Math.min(B, s.size - b * B);
            try {
              await this.mirror.served.read(byteOffset(b * B), l, buf, 0);
              if (!buf.subarray(0, l).equals(other.subarray(b * B - at, b * B - at + l))) ok = false;
            } catch {
              bad.add(b);
              s.unreadable.push(b);
            }
          }
        }
        if (!ok) {
          mismatches++;
          this.h.log.error({ offset: at, length: n }, 'evacuation: target differs from the export');
        }
      });
    }
    if (!this.alive()) return;
    s.unreadable.sort((x, y) => x - y);
    s.sha256 = hash.digest('hex');
    s.mismatches = mismatches;
    if (mismatches) return this.fail(`${mismatches} chunk(s) of the target differ from the export`);
    s.mapfile = this.h.statePath.replace(/\.json$/, '.map');
    writeFileSync(
      s.mapfile,
      writeDdrescueMapfile(
        { size: s.size, blockSize: B, remapped: [], pending: s.unreadable.map(mainBlock) },
        { version: 'evacuate', commandLine: `remapd evacuate --to ${s.target}` },
      ),
    );
    s.phase = 'done';
    s.finishedAt = Date.now();
    this.save(true);
    this.h.log.info(
      { target: s.target, sha256: s.sha256, unreadable: s.unreadable.length, mapfile: s.mapfile },
      'evacuation: copy verified',
    );
    this.h.onDone?.(s);
  }

  /** Serve the target instead of the old devices, without dropping connections. */
  async switch(): Promise<void> {
    if (this.state.phase !== 'done') throw new Error(`cannot switch: the evacuation is ${this.state.phase}, not done`);
    const t = this.target!;
    this.mirror.stopMirroring();
    await this.mirror.switchTo(new PassthroughDevice(t, { description: `${t.path} (evacuated)` }));
    this.state.phase = 'switched';
    this.save(true);
    this.h.log.warn({ target: t.path }, 'evacuation: now serving the new disk; update the setup (config "main") to it');
    await this.h.onSwitched?.(t.path);
  }

  async cancel(): Promise<void> {
    if (this.state.phase === 'switched') throw new Error('already switched: nothing to cancel');
    this.cancelled = true;
    await this.running;
    this.mirror.stopMirroring();
    await this.target?.close();
    this.target = undefined;
    this.claim?.release();
    this.claim = undefined;
  }

  status(): Record<string, unknown> {
    const s = this.state;
    const elapsed = (Date.now() - this.rateStart.at) / 1000;
    const rate = s.phase === 'copying' && elapsed > 0 ? Math.round((s.cursor - this.rateStart.cursor) / elapsed) : 0;
    return {
      phase: s.phase,
      target: s.target,
      size: s.size,
      bytesCopied: s.cursor,
      progress: s.size ? +(s.cursor / s.size).toFixed(4) : 1,
      bytesPerSecond: rate,
      etaSeconds: s.phase === 'copying' && rate > 0 ? Math.round((s.size - s.cursor) / rate) : null,
      unreadable: s.unreadable.length,
      unreadableOffsets: s.unreadable.slice(0, 100).map((b) => b * s.blockSize),
      startedAt: new Date(s.startedAt).toISOString(),
      finishedAt: s.finishedAt ? new Date(s.finishedAt).toISOString() : null,
      sha256: s.sha256 ?? null,
      mismatches: s.mismatches ?? null,
      mapfile: s.mapfile ?? null,
      error: s.error ?? null,
    };
  }

  async close(): Promise<void> {
    this.cancelled = true;
    await this.running;
    this.save(true);
    // Called at stop after the server drained: after a switch the target is the served disk, flush it first.
    if (this.state.phase === 'switched')
      await this.target?.sync().catch((err) => this.h.log.error({ err, target: this.state.target }, 'final flush failed'));
    await this.target?.close().catch((err) => this.h.log.error({ err, target: this.state.target }, 'close failed'));
    this.target = undefined;
    this.claim?.release();
  }
}

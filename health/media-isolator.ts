/**
 * Finds exactly which remap blocks of a failed scan read are bad, with a bounded number of reads.
 * Used by the scan worker (scan-worker.ts); pure logic over a Backend, so it is tested in-process.
 *
 * A failed range is bisected down to single remap blocks (only halves that fail are split again), then
 * each failing block down to the device's logical sectors; each failing sector is retried. So 3
 * unreadable sectors on a device cost about 3 × (2·log2(chunk/sector) + retries) reads and yield exactly
 * the 3 blocks that hold them, never their neighbours.
 *
 * Only media errors (storage/error-class.ts) count against a block. A device-gone error, or a known-good
 * sector (the last one the scan read) failing as well, means the whole device failed: the isolation stops
 * at once with a device failure and blames no block. Any other error (EINVAL, EBADF, EACCES ...) is a
 * configuration fault: also stops, also blames no block. When the read budget runs out, the ranges not
 * yet resolved are handed back to be visited again later (never guessed).
 */
import { BackendError, type Backend } from '../storage/backend';
import { classifyCode, type FailureClass } from '../storage/error-class';
import { byteOffset, mainBlock, type ByteOffset, type MainBlock } from '../units';
import type { Finding } from './protocol';

export interface IsolatorOptions {
  /** Remap block size, bytes. */
  readonly blockSize: number;
  /** Extra attempts for a failing sector. */
  readonly readRetries: number;
  /** Most reads one isolate() call may issue. */
  readonly maxReads: number;
}

export interface DeviceFailure {
  /** 'device-gone': ENXIO/ENODEV...; 'all-failing': a known-good sector fails too; 'config': not a media error. */
  readonly reason: 'device-gone' | 'all-failing' | 'config';
  readonly code: string;
  readonly offset: number;
  readonly message: string;
}

export interface IsolateResult {
  readonly findings: Finding[];
  readonly deviceFailure?: DeviceFailure;
  /** Ranges not resolved within the read budget: to be visited again. */
  readonly unresolved: { offset: ByteOffset; length: number }[];
  readonly reads: number;
}

/** The error code of whatever a read threw ('EUNKNOWN' for non-OS errors). */
export function errorCode(err: unknown): string {
  if (err instanceof BackendError) return err.code;
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : 'EUNKNOWN';
}

function classOf(err: unknown): FailureClass {
  return classifyCode(errorCode(err));
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Sectors read across the device when a range fails before any read succeeded. */
const SPREAD_PROBES = 4;

class Abort {
  constructor(readonly failure: DeviceFailure) {}
}

class BudgetSpent {}

export class MediaIsolator {
  private reads = 0;
  private buf: Buffer;

  constructor(
    private readonly dev: Backend,
    private readonly o: IsolatorOptions,
  ) {
    this.buf = Buffer.allocUnsafe(o.blockSize);
  }

  private get sector(): number {
    const s = this.dev.logicalBlockSize || 512;
    return Math.min(s, this.o.blockSize);
  }

  /**
   * One read that counts against the budget. Returns undefined when it succeeded, the error when it
   * failed with a media error; throws Abort for any other class.
   */
  private async tryRead(offset: number, length: number): Promise<unknown> {
    if (this.reads >= this.o.maxReads) throw new BudgetSpent();
    this.reads++;
    if (this.buf.length < length) this.buf = Buffer.allocUnsafe(length);
    try {
      await this.dev.read(byteOffset(offset), length, this.buf, 0);
      return undefined;
    } catch (err) {
      const cls = classOf(err);
      if (cls === 'media') return err ?? new Error('read failed');
      throw new Abort({ reason: cls === 'device-gone' ? 'device-gone' : 'config', code: errorCode(err), offset, message: message(err) });
    }
  }

  /**
   * [offset, offset+length) failed to read with `first`. lastGood: a sector offset the scan read
   * successfully before (or -1): if it fails now too, the device failed as a whole.
   */
  async isolate(offset: ByteOffset, length: number, first: unknown, lastGood: number): Promise<IsolateResult> {
    this.reads = 0;
    const findings: Finding[] = [];
    const unresolved: { offset: ByteOffset; length: number }[] = [];
    const cls = classOf(first);
    if (cls !== 'media') {
      return {
        findings,
        unresolved,
        reads: 0,
        deviceFailure: {
          reason: cls === 'device-gone' ? 'device-gone' : 'config',
          code: errorCode(first),
          offset,
          message: message(first),
        },
      };
    }
    const B = this.o.blockSize;
    const end = Math.min(offset + length, this.dev.size);
    /** block → failed attempts attributed to it. */
    const failures = new Map<number, number>();
    const blame = (b: number): void => void failures.set(b, (failures.get(b) ?? 0) + 1);
    const firstAt = first instanceof BackendError ? first.offset : -1;
    if (firstAt > offset && firstAt < end) blame(Math.floor(firstAt / B));
    const done = new Set<number>();
    /** Phase 2 for block b, at once (depth first: a spent budget leaves a clean tail unresolved). */
    const resolve = async (b: number): Promise<void> => {
      if (done.has(b)) return;
      done.add(b);
      const s = Math.max(offset, b * B);
      const e = Math.min(end, (b + 1) * B);
      try {
        findings.push(await this.sectorsOf(mainBlock(b), byteOffset(s), e, failures.get(b) ?? 0));
      } catch (x) {
        if (!(x instanceof BudgetSpent)) throw x;
        unresolved.push({ offset: byteOffset(s), length: e - s });
      }
    };
    try {
      if (lastGood >= 0 && (lastGood < offset || lastGood >= end)) {
        const e = await this.tryRead(lastGood, this.sector);
        if (e)
          throw new Abort({
            reason: 'all-failing',
            code: errorCode(e),
            offset: lastGood,
            message: `a sector read before fails now too: ${message(e)}`,
          });
      } else if (lastGood < 0) {
        // Nothing read well yet (the scan's first chunk, or a suspect region before it): a disk that fails
        // everywhere would have every block of the range blamed. Sectors spread over the device tell.
        await this.spreadProbe(offset, end);
      }
      // Phase 1: which remap blocks fail (each one found goes through phase 2, sectorsOf, at once). The whole range already failed once: split it straight away.
      const stack: [number, number, unknown][] = [[offset, end, first]];
      while (stack.length) {
        const [s, e, err] = stack.pop() as [number, number, unknown];
        const firstBlock = Math.floor(s / B);
        const lastBlock = Math.floor((e - 1) / B);
        if (firstBlock === lastBlock) {
          await resolve(firstBlock);
          continue;
        }
        const mid = Math.floor((firstBlock + lastBlock + 1) / 2) * B;
        const halves: [number, number][] = [
          [s, mid],
          [mid, e],
        ];
        const failed: [number, number, unknown][] = [];
        for (const [hs, he] of halves) {
          try {
            const he2 = await this.tryRead(hs, he - hs);
            if (he2) failed.push([hs, he, he2]);
          } catch (x) {
            if (x instanceof BudgetSpent) {
              unresolved.push({ offset: byteOffset(hs), length: he - hs });
              for (const [us, ue] of stack.splice(0).map(([a, b]) => [a, b])) unresolved.push({ offset: byteOffset(us), length: ue - us });
              continue;
            }
            throw x;
          }
        }
        if (failed.length === 0) {
          // The range failed, its halves read: a transient error. Blame the block only when the error
          // named an offset inside the range (a plain pread error names the start, which says nothing).
          const at = err instanceof BackendError ? err.offset : -1;
          if (at > s && at < e) {
            const b = Math.floor(at / B);
            blame(b);
            await resolve(b);
          }
          continue;
        }
        // Depth first, lowest offset first (pop order).
        for (let i = failed.length - 1; i >= 0; i--) {
          const f = failed[i];
          const at = f[2] instanceof BackendError ? f[2].offset : -1;
          if (at > f[0] && at < f[1]) blame(Math.floor(at / B));
          stack.push(f);
        }
      }
    } catch (x) {
      if (x instanceof Abort) return { findings: [], unresolved: [], reads: this.reads, deviceFailure: x.failure };
      throw x;
    }
    unresolved.sort((a, b) => a.offset - b.offset);
    return { findings, unresolved, reads: this.reads };
  }

  /**
   * Reads SPREAD_PROBES sectors spread over the device outside [offset, end); if every one fails, the
   * device failed as a whole (throws Abort 'all-failing'). One that reads means: isolate the range.
   */
  private async spreadProbe(offset: number, end: number): Promise<void> {
    const S = this.sector;
    const sectors = Math.floor(this.dev.size / S);
    let last: unknown;
    let tried = 0;
    for (let i = 0; i < SPREAD_PROBES; i++) {
      const at = Math.floor((sectors * (2 * i + 1)) / (2 * SPREAD_PROBES)) * S;
      if (at >= offset && at < end) continue;
      tried++;
      last = await this.tryRead(at, S);
      if (!last) return;
    }
    if (tried > 0)
      throw new Abort({
        reason: 'all-failing',
        code: errorCode(last),
        offset,
        message: `no sector read yet, and ${tried} sectors spread over the device fail too: ${message(last)}`,
      });
  }

  /** Block b ([s, e) of it is in range): read it alone, bisect to sectors, retry failing sectors. */
  private async sectorsOf(b: MainBlock, s: ByteOffset, e: number, prior: number): Promise<Finding> {
    const S = this.sector;
    let failures = prior;
    const failingSectors: ByteOffset[] = [];
    const whole = await this.tryRead(s, e - s);
    if (!whole) {
      // Read now: it failed before (attributed or not), so it is flaky.
      return { kind: 'flaky', block: b, offset: s, failures: Math.max(1, failures) };
    }
    failures++;
    let lastError = message(whole);
    const stack: [number, number][] = [[s, e]];
    while (stack.length) {
      const [rs, re] = stack.pop() as [number, number];
      if (re - rs <= S) {
        failingSectors.push(byteOffset(rs));
        continue;
      }
      const nSect = Math.ceil((re - rs) / S);
      const mid = rs + Math.floor(nSect / 2) * S;
      const failedHalves: [number, number][] = [];
      for (const [hs, he] of [
        [rs, mid],
        [mid, re],
      ] as [number, number][]) {
        const err = await this.tryRead(hs, he - hs);
        if (err) {
          failures++;
          lastError = message(err);
          failedHalves.push([hs, he]);
        }
      }
      for (let i = failedHalves.length - 1; i >= 0; i--) stack.push(failedHalves[i]);
    }
    // A failing range over single sectors: sectors that fail alone are retried.
    const bad: ByteOffset[] = [];
    for (const sec of failingSectors.sort((x, y) => x - y)) {
      const len = Math.min(S, e - sec);
      let ok = false;
      for (let attempt = 0; attempt < this.o.readRetries; attempt++) {
        const err = await this.tryRead(sec, len);
        if (!err) {
          ok = true;
          break;
        }
        failures++;
        lastError = message(err);
      }
      if (!ok) bad.push(sec);
    }
    if (bad.length === 0) return { kind: 'flaky', block: b, offset: s, failures, sectors: failingSectors };
    return { kind: 'unreadable', block: b, offset: s, failures, error: lastError, sectors: bad };
  }
}

/**
 * Bisection of a failed I/O: which units of [offset, offset+length) really fail? The range is cut in two
 * at a unit boundary and each half is tried again; a half that fails is cut again, down to single units,
 * which get `leafRetries` extra attempts. The unit is a remap block when the question is which blocks to
 * blame, main's logical block size when it is the first failing byte. A range of n units with k bad ones
 * costs about 2k·log2(n/k) I/Os, not n. A failure budget bounds the worst case (2n: everything fails),
 * and `onStall` is asked early whether the device is dead when nothing at all has worked yet (single units
 * wait for its answer, and so does the result); what is left when the bisection stops is reported as
 * unresolved, never as bad.
 *
 * Only media errors (storage/error-class.ts) are bisected; any other error aborts the bisection and is
 * thrown to the caller (a device or configuration fault says nothing about the sectors).
 */
import { BackendError } from '../storage/backend';
import { isMediaError } from '../storage/error-class';
import { byteOffset, type ByteLength, type ByteOffset } from '../units';

export interface Piece {
  readonly offset: ByteOffset;
  readonly length: ByteLength;
}

export interface BadPiece extends Piece {
  /** The error of its last attempt; err.offset is the first failing byte the device reported. */
  readonly err: BackendError;
}

export interface Bisection {
  /** Single-unit (or smaller) pieces that failed every attempt, in offset order. */
  readonly bad: BadPiece[];
  /** Pieces that failed once and then completed, every part of them (flaky), in offset order. */
  readonly flaky: Piece[];
  /** Failed pieces left unexplored when the budget ran out (not proven bad), in offset order. */
  readonly unresolved: BadPiece[];
  /** I/Os done (successful or not). */
  ios: number;
  /** Attempts that completed. */
  successes: number;
}

export interface BisectOptions {
  /** Where pieces are cut: a remap block, or main's logical block size. */
  readonly unit: ByteLength;
  /** Extra attempts of a single-unit piece before it counts as bad. */
  readonly leafRetries: number;
  /** Most failed attempts spent (default: every unit failing every attempt, + 16: any real pattern). */
  readonly failureBudget?: number;
  /** Checked before every attempt; returning false stops the bisection (rest unresolved). */
  readonly keepGoing?: () => boolean;
  /** Called once when `stallAfter` (default 16) attempts have failed (a deadline miss counts 8) and none worked. */
  readonly onStall?: () => Promise<void>;
  readonly stallAfter?: number;
}

/** One attempt of the I/O on a piece: resolves, or rejects with the backend's error. */
export type Attempt = (offset: ByteOffset, length: ByteLength) => Promise<void>;

/**
 * Bisect [offset, offset+length), which just failed with `first`. Non-media errors are rethrown.
 * Attempts of the two halves run together.
 */
export async function bisect(
  offset: ByteOffset,
  length: ByteLength,
  first: BackendError,
  attempt: Attempt,
  o: BisectOptions,
): Promise<Bisection> {
  const S = o.unit;
  const out: Bisection = { bad: [], flaky: [], unresolved: [], ios: 0, successes: 0 };
  const units = Math.floor((offset + length - 1) / S) - Math.floor(offset / S) + 1;
  let budget = o.failureBudget ?? 2 * units * (1 + o.leafRetries) + 16;
  let failures = 0;
  let stall: Promise<void> | undefined;
  let stallAsked = false;
  const stopped = (): boolean => budget <= 0 || (o.keepGoing !== undefined && !o.keepGoing());

  const tryOnce = async (off: ByteOffset, len: ByteLength): Promise<BackendError | undefined> => {
    if (stall) await stall;
    if (stopped()) return first; // not attempted: walk() records the piece as unresolved
    out.ios++;
    try {
      await attempt(off, len);
      out.successes++;
      return undefined;
    } catch (err) {
      if (!(err instanceof BackendError) || !isMediaError(err.code)) throw err;
      budget--;
      // A deadline miss (ETIMEDOUT) weighs 8: on a hung device each one costs the whole deadline.
      failures += err.code === 'ETIMEDOUT' ? 8 : 1;
      if (!stallAsked && failures >= (o.stallAfter ?? 16) && out.successes === 0 && o.onStall) {
        stallAsked = true;
        stall = o.onStall();
      }
      return err;
    }
  };

  /**
   * [off, off+len) failed with err: find its bad sectors. Returns whether every part of it then
   * completed (complete) and whether a smaller flaky piece inside it was recorded (blamed); the
   * smallest failed pieces that then completed are recorded as flaky.
   */
  const walk = async (off: ByteOffset, len: ByteLength, err: BackendError): Promise<{ complete: boolean; blamed: boolean }> => {
    const firstSector = Math.floor(off / S);
    const lastSector = Math.floor((off + len - 1) / S);
    if (firstSector === lastSector) {
      if (stall) await stall; // its answer may stop the bisection: a dead device blames no unit
      if (stopped()) {
        out.unresolved.push({ offset: off, length: len, err });
        return { complete: false, blamed: false };
      }
      let tries = 0;
      for (; tries < o.leafRetries && !stopped(); tries++) {
        const e = await tryOnce(off, len);
        if (!e) {
          out.flaky.push({ offset: off, length: len });
          return { complete: true, blamed: true };
        }
        err = e;
      }
      (tries < o.leafRetries ? out.unresolved : out.bad).push({ offset: off, length: len, err });
      return { complete: false, blamed: false };
    }
    if (stopped()) {
      out.unresolved.push({ offset: off, length: len, err });
      return { complete: false, blamed: false };
    }
    const mid = byteOffset((firstSector + Math.ceil((lastSector - firstSector + 1) / 2)) * S);
    const halves: Piece[] = [
      { offset: off, length: mid - off },
      { offset: mid, length: off + len - mid },
    ];
    const done = await Promise.all(
      halves.map(async (h) => {
        const e = await tryOnce(h.offset, h.length);
        return e ? walk(h.offset, h.length, e) : { complete: true, blamed: false };
      }),
    );
    const complete = done[0].complete && done[1].complete;
    const blamed = done[0].blamed || done[1].blamed;
    // Failed as a whole, then every part completed with no smaller failed piece to blame: this piece.
    if (complete && !blamed) out.flaky.push({ offset: off, length: len });
    return { complete, blamed: blamed || complete };
  };

  await walk(offset, length, first);
  // The caller reads the device's state (main failed?) next: the stall's answer must be in by then. Without
  // this wait a 64 KiB write caught by an outage remapped its 16 blocks while the probe reads were still
  // running (test/e2e/outage-hold.test.ts, 3 runs of 5).
  if (stall) await stall;
  const byOffset = (a: Piece, b: Piece): number => a.offset - b.offset;
  out.bad.sort(byOffset);
  out.flaky.sort(byOffset);
  out.unresolved.sort(byOffset);
  return out;
}

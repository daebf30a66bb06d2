/**
 * Fault rules for the main device: byte ranges that fail or are delayed, optionally only for the
 * first N matching operations. Format and semantics: docs/FAULTS.md.
 *
 * Rules are indexed in an implicit interval tree (rules sorted by start, each node of the implied
 * balanced tree annotated with the largest end in its subtree): a lookup costs O(log n + k) for k
 * overlapping rules. The per-rule remaining counts live in a SharedArrayBuffer and are decremented
 * with Atomics, so every FaultRules built from the same SharedFaultRules (main thread, health
 * worker thread) draws from the same budget.
 */
import * as fs from 'fs';
import * as os from 'os';

export type FaultOp = 'read' | 'write' | 'any';

export interface FaultRule {
  readonly op: FaultOp;
  readonly offset: number;
  readonly length: number;
  /** Errno name; absent: the operation succeeds (after the delay). */
  readonly error?: string;
  readonly delayMs: number;
  /** Only the first `count` matching operations are affected; absent: all of them. */
  readonly count?: number;
}

/** Structured-cloneable form (postMessage / workerData). */
export interface SharedFaultRules {
  readonly version: 1;
  readonly source: string;
  readonly rules: readonly FaultRule[];
  /** Int32 per rule: remaining count, or -1 for unlimited. */
  readonly counters: SharedArrayBuffer;
}

export interface FaultMatch {
  /** Errno name when the operation must fail. */
  error?: string;
  /** Delay to apply before the operation (or before failing it). */
  delayMs: number;
  /** First failing byte: the start of the overlap of the failing rule and the operation. */
  failOffset?: number;
  /** Index (in the rule file) of the rule that made it fail. */
  rule?: number;
}

export class FaultRuleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FaultRuleError';
  }
}

const KEYS = new Set(['op', 'offset', 'length', 'error', 'delayMs', 'count']);
const OPS = new Set(['read', 'write', 'any']);
const ERRNO = os.constants.errno as Record<string, number>;
const UNLIMITED = -1;
const MAX_COUNT = 0x7fffffff;

/** Rules of one op kind, sorted by start, with subtree max ends of the implicit tree. */
class IntervalIndex {
  readonly ids: Int32Array;
  readonly starts: Float64Array;
  readonly ends: Float64Array;
  readonly maxEnd: Float64Array;

  constructor(rules: readonly FaultRule[], include: (r: FaultRule) => boolean) {
    const ids: number[] = [];
    for (let i = 0; i < rules.length; i++) if (include(rules[i])) ids.push(i);
    ids.sort((a, b) => rules[a].offset - rules[b].offset || a - b);
    const n = ids.length;
    this.ids = Int32Array.from(ids);
    this.starts = new Float64Array(n);
    this.ends = new Float64Array(n);
    this.maxEnd = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      const r = rules[ids[k]];
      this.starts[k] = r.offset;
      this.ends[k] = r.offset + r.length;
    }
    this.build(0, n);
  }

  private build(lo: number, hi: number): number {
    if (lo >= hi) return -Infinity;
    const mid = (lo + hi) >>> 1;
    const m = Math.max(this.ends[mid], this.build(lo, mid), this.build(mid + 1, hi));
    this.maxEnd[mid] = m;
    return m;
  }

  /** Calls visit(k) for every entry overlapping [start, end), in ascending start order. */
  query(start: number, end: number, visit: (k: number) => void): void {
    this.walk(0, this.ids.length, start, end, visit);
  }

  private walk(lo: number, hi: number, start: number, end: number, visit: (k: number) => void): void {
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.maxEnd[mid] <= start) return; // nothing in this subtree reaches the range
      this.walk(lo, mid, start, end, visit);
      if (this.starts[mid] >= end) return; // mid and everything right of it start after the range
      if (this.ends[mid] > start) visit(mid);
      lo = mid + 1; // tail-iterate into the right subtree
    }
  }
}

function describe(source: string, index: number, key?: string): string {
  return `${source}: rule ${index}${key ? ` key "${key}"` : ''}`;
}

function validate(raw: unknown, index: number, source: string): FaultRule {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new FaultRuleError(`${describe(source, index)}: must be an object`);
  }
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!KEYS.has(key)) {
      throw new FaultRuleError(`${describe(source, index, key)}: unknown key (allowed: ${[...KEYS].join(', ')})`);
    }
  }
  const int = (key: string, required: boolean, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined => {
    const v = obj[key];
    if (v === undefined) {
      if (required) throw new FaultRuleError(`${describe(source, index, key)}: missing`);
      return undefined;
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      throw new FaultRuleError(`${describe(source, index, key)}: must be an integer, got ${JSON.stringify(v)}`);
    }
    if (v < 0) throw new FaultRuleError(`${describe(source, index, key)}: must not be negative, got ${v}`);
    if (v < min) throw new FaultRuleError(`${describe(source, index, key)}: must be at least ${min}, got ${v}`);
    if (v > max) throw new FaultRuleError(`${describe(source, index, key)}: must be at most ${max}, got ${v}`);
    return v;
  };
  const op = obj.op;
  if (op === undefined) throw new FaultRuleError(`${describe(source, index, 'op')}: missing`);
  if (typeof op !== 'string' || !OPS.has(op)) {
    throw new FaultRuleError(`${describe(source, index, 'op')}: unknown op ${JSON.stringify(op)} (expected "read", "write" or "any")`);
  }
  const offset = int('offset', true, 0) as number;
  const length = int('length', true, 1) as number;
  if (offset + length > Number.MAX_SAFE_INTEGER) {
    throw new FaultRuleError(`${describe(source, index, 'length')}: offset + length is too large`);
  }
  const delayMs = int('delayMs', false, 0, 3_600_000) ?? 0;
  const count = int('count', false, 0, MAX_COUNT);
  const error = obj.error;
  if (error !== undefined) {
    if (typeof error !== 'string' || !Object.prototype.hasOwnProperty.call(ERRNO, error)) {
      throw new FaultRuleError(`${describe(source, index, 'error')}: unknown errno name ${JSON.stringify(error)} (e.g. "EIO", "ENOSPC")`);
    }
  }
  const rule: { -readonly [K in keyof FaultRule]: FaultRule[K] } = { op: op as FaultOp, offset, length, delayMs };
  if (error !== undefined) rule.error = error as string;
  if (count !== undefined) rule.count = count;
  return rule;
}

export class FaultRules {
  private readonly readIndex: IntervalIndex;
  private readonly writeIndex: IntervalIndex;
  private readonly remaining: Int32Array;
  private readonly scratch: number[] = [];
  private readonly collect = (k: number): void => {
    this.scratch.push(k);
  };

  private constructor(
    readonly rules: readonly FaultRule[],
    private readonly counters: SharedArrayBuffer,
    readonly source: string,
  ) {
    this.remaining = new Int32Array(counters);
    if (this.remaining.length < rules.length) {
      throw new FaultRuleError(`${source}: shared counters do not match the rules`);
    }
    this.readIndex = new IntervalIndex(rules, (r) => r.op !== 'write');
    this.writeIndex = new IntervalIndex(rules, (r) => r.op !== 'read');
  }

  /** Parses and validates a rule file's text. Throws FaultRuleError naming the rule and key. */
  static parse(jsonText: string, source = 'fault rules'): FaultRules {
    let data: unknown;
    try {
      data = JSON.parse(jsonText);
    } catch (err) {
      throw new FaultRuleError(`${source}: invalid JSON: ${(err as Error).message}`);
    }
    if (!Array.isArray(data)) throw new FaultRuleError(`${source}: must be a JSON array of rules`);
    const rules = data.map((raw, i) => validate(raw, i, source));
    const counters = new SharedArrayBuffer(Math.max(4, rules.length * 4));
    const remaining = new Int32Array(counters);
    for (let i = 0; i < rules.length; i++) remaining[i] = rules[i].count ?? UNLIMITED;
    return new FaultRules(rules, counters, source);
  }

  /** Reads and parses a rule file. */
  static async load(file: string): Promise<FaultRules> {
    return FaultRules.parse(await fs.promises.readFile(file, 'utf8'), file);
  }

  /** No rules: every operation passes. */
  static empty(): FaultRules {
    return FaultRules.parse('[]', 'no fault rules');
  }

  /** Shares the rules and their counters (send through postMessage/workerData). */
  toShared(): SharedFaultRules {
    return { version: 1, source: this.source, rules: this.rules, counters: this.counters };
  }

  /** Rebuilds from toShared(); counters stay shared with every other instance. */
  static fromShared(s: SharedFaultRules): FaultRules {
    if (s.version !== 1) throw new FaultRuleError(`shared fault rules: unsupported version ${String(s.version)}`);
    return new FaultRules(s.rules, s.counters, s.source);
  }

  get size(): number {
    return this.rules.length;
  }

  /** Remaining count of a rule (-1: unlimited). */
  remainingCount(index: number): number {
    return Atomics.load(this.remaining, index);
  }

  /**
   * What happens to an operation on [offset, offset+length). Overlapping rules are considered in
   * the order the operation reaches them (by start of overlap, then rule index). Each rule that
   * still has count left is consumed; the first one with an error ends the walk and decides the
   * error and failOffset. The delay is the largest among the consumed rules.
   */
  match(op: 'read' | 'write', offset: number, length: number): FaultMatch {
    const result: FaultMatch = { delayMs: 0 };
    if (length <= 0 || this.rules.length === 0) return result;
    const index = op === 'read' ? this.readIndex : this.writeIndex;
    const end = offset + length;
    // Collect candidates (usually zero or one).
    const hits = this.scratch; // match() is synchronous: one scratch array per instance is safe
    hits.length = 0;
    index.query(offset, end, this.collect);
    if (hits.length === 0) return result;
    const overlapStart = (k: number): number => Math.max(index.starts[k], offset);
    if (hits.length > 1) {
      hits.sort((a, b) => overlapStart(a) - overlapStart(b) || index.ids[a] - index.ids[b]);
    }
    for (const k of hits) {
      const id = index.ids[k];
      if (!this.consume(id)) continue;
      const rule = this.rules[id];
      if (rule.delayMs > result.delayMs) result.delayMs = rule.delayMs;
      if (rule.error !== undefined) {
        result.error = rule.error;
        result.failOffset = overlapStart(k);
        result.rule = id;
        break;
      }
    }
    return result;
  }

  /** Takes one from a rule's budget; false when it is used up. */
  private consume(id: number): boolean {
    const a = this.remaining;
    for (;;) {
      const cur = Atomics.load(a, id);
      if (cur === UNLIMITED) return true;
      if (cur <= 0) return false;
      if (Atomics.compareExchange(a, id, cur, cur - 1) === cur) return true;
    }
  }
}

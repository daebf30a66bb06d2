/** Summarise a V8 .cpuprofile (from `node --cpu-prof`): self and inclusive time per function. */
import * as fs from 'fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface FunctionTime {
  readonly name: string;
  /** file:line (1-based), shortened. */
  readonly where: string;
  readonly category: string;
  readonly selfMs: number;
  readonly selfPct: number;
  readonly totalMs: number;
  readonly totalPct: number;
}

export interface ProfileSummary {
  readonly file: string;
  readonly durationMs: number;
  readonly samples: number;
  /** true when only samples inside the requested window were used. */
  readonly windowed: boolean;
  /** Percent of wall time the main thread was idle (waiting in the event loop). */
  readonly idlePct: number;
  readonly byCategory: ReadonlyArray<{ category: string; ms: number; pct: number }>;
  readonly top: readonly FunctionTime[];
}

function shortUrl(url: string, repoRoot: string): string {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(repoRoot)) u = u.slice(repoRoot.length + 1);
  u = u.replace(/^.*node_modules\//, 'node_modules/');
  return u;
}

function categorize(cf: CallFrame, repoRoot: string): string {
  const name = cf.functionName;
  if (name === '(idle)') return 'idle';
  if (name === '(garbage collector)') return 'GC';
  if (name === '(program)') return 'V8/native (program)';
  if (name === '(root)') return 'root';
  const url = cf.url.replace(/^file:\/\//, '');
  if (!url) return 'native / builtins';
  if (url.startsWith('node:')) return 'node core';
  if (url.includes('/node_modules/')) return 'dependencies';
  if (url.startsWith(repoRoot)) return 'remapd code';
  return 'other';
}

/**
 * `window` (monotonic microseconds, the clock V8 stamps profiles with) limits the summary to samples taken
 * in that interval, e.g. the measured part of a fio job; ignored if it does not overlap the profile.
 */
export function summarizeCpuProfile(file: string, repoRoot: string, topN = 20, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of prof.nodes) byId.set(n.id, n);
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // self time per node, from the sample stream (timeDeltas[i+1] is the time spent in samples[i])
  const selfUs = new Map<number, number>();
  const samples = prof.samples ?? [];
  const deltas = prof.timeDeltas ?? [];
  const windowed = window !== undefined && window.fromUs < prof.endTime && window.toUs > prof.startTime;
  const from = windowed ? Math.max(window.fromUs, prof.startTime) : prof.startTime;
  const to = windowed ? Math.min(window.toUs, prof.endTime) : prof.endTime;
  const durationUs = to - from;
  const avg = samples.length ? (prof.endTime - prof.startTime) / samples.length : 0;
  let ts = prof.startTime;
  let used = 0;
  for (let i = 0; i < samples.length; i++) {
    ts += deltas[i] ?? 0;
    if (ts < from || ts > to) continue;
    used++;
    const dt = i + 1 < deltas.length ? deltas[i + 1] : avg;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(0, dt));
  }
  const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;

  const keyOf = (cf: CallFrame): string => `${cf.functionName}\u0000${cf.url}\u0000${cf.lineNumber}`;
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const frames = new Map<string, CallFrame>();
  const cats = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const k = keyOf(node.callFrame);
    frames.set(k, node.callFrame);
    self.set(k, (self.get(k) ?? 0) + us);
    const cat = categorize(node.callFrame, repoRoot);
    cats.set(cat, (cats.get(cat) ?? 0) + us);
    // inclusive: every distinct function on the stack gets the sample once
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = (byId.get(cur) as ProfileNode).callFrame;
      const ck = keyOf(cf);
      if (seen.has(ck)) continue;
      seen.add(ck);
      frames.set(ck, cf);
      incl.set(ck, (incl.get(ck) ?? 0) + us);
    }
  }
  const idleUs = cats.get('idle') ?? 0;
  const top = [...self.entries()]
    .filter(([k]) => !['(idle)', '(root)'].includes((frames.get(k) as CallFrame).functionName))
    .sort((a, b) => b[1] - a[1])
    .slice(0, topN)
    .map(([k, us]) => {
      const cf = frames.get(k) as CallFrame;
      const url = shortUrl(cf.url, repoRoot);
      const t = incl.get(k) ?? us;
      return {
        name: cf.functionName || '(anonymous)',
        where: url ? `${url}:${cf.lineNumber + 1}` : '',
        category: categorize(cf, repoRoot),
        selfMs: us / 1000,
        selfPct: (100 * us) / totalUs,
        totalMs: t / 1000,
        totalPct: (100 * t) / totalUs,
      };
    });
  return {
    file,
    durationMs: durationUs / 1000,
    samples: used,
    windowed,
    idlePct: (100 * idleUs) / totalUs,
    byCategory: [...cats.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([category, us]) => ({ category, ms: us / 1000, pct: (100 * us) / totalUs })),
    top,
  };
}

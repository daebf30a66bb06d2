/** Durations for the scanner's CLI and config: "30s", "15m", "12h", "7d", "1w", "500ms", or bare seconds. */

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};

/** Parses a duration into milliseconds. A bare number means seconds. Throws on anything else. */
export function parseDuration(text: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)?\s*$/i.exec(text);
  if (!m) throw new Error(`'${text}' is not a duration (e.g. 30s, 15m, 12h, 7d)`);
  const ms = Number(m[1]) * UNIT_MS[(m[2] ?? 's').toLowerCase()];
  if (!Number.isFinite(ms) || ms > Number.MAX_SAFE_INTEGER) throw new Error(`'${text}' is too long`);
  return Math.round(ms);
}

/** The largest unit (up to days) that divides exactly: 604800000 → "7d", 90000 → "90s". */
export function formatDuration(ms: number): string {
  for (const u of ['d', 'h', 'm', 's'] as const) {
    if (ms >= UNIT_MS[u] && ms % UNIT_MS[u] === 0) return `${ms / UNIT_MS[u]}${u}`;
  }
  return `${ms}ms`;
}

/** The human view of `remapd status`. */
function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
/** The bits of an NVMe critical warning (NVMe base spec, SMART / Health log byte 0), for people. */
const NVME_WARNING_BITS = [
  'spare below threshold',
  'temperature',
  'reliability degraded',
  'read-only',
  'volatile backup failed',
  'PMR read-only',
];
function nvmeWarnings(v: number): string {
  return NVME_WARNING_BITS.filter((_, i) => v & (1 << i)).join(', ') || 'unknown bits';
}

export function formatStatus(s: Record<string, any>): string {
  const lines: string[] = [];
  lines.push(`export      ${s.export} (${bytes(s.size)}) from ${s.main}, pid ${s.pid}, up ${s.uptimeSeconds}s`);
  lines.push(`clients     ${s.connections} connected`);
  if (s.mainState?.state === 'failed')
    lines.push(`main        ** MAIN DEVICE FAILED ** since ${new Date(s.mainState.since).toISOString()}: ${s.mainState.reason}`);
  else if (s.mainState?.failures > 0 && s.mainState.lastFailure) {
    const l = s.mainState.lastFailure;
    const down = l.endedAt === null ? '' : ` for ${Math.max(1, Math.round((l.endedAt - l.since) / 1000))} s`;
    lines.push(
      `main        answers; failed ${s.mainState.failures} time(s) since start, last at ${new Date(l.since).toISOString()}${down}: ${l.reason}`,
    );
  }
  if (s.mainState?.heldTotal > 0 || s.mainState?.held > 0)
    lines.push(
      `main held   ${s.mainState.held} request(s) waiting for main now, ${s.mainState.heldTotal} since start (${s.mainState.heldExpired} waited the whole ${s.mainState.holdSeconds} s hold and failed)`,
    );
  const cfg = Object.entries(s.mainState?.configErrors ?? {}).map(([k, v]) => `${k} ${v}`);
  if (cfg.length) lines.push(`main faults ${cfg.join(', ')} (device/configuration errors, no block blamed)`);
  if (s.health) lines.push(`health      ${s.health.score}/100 (${s.health.label})`);
  if (s.evacuated) {
    const e = s.evacuated;
    lines.push(
      `evacuated   to ${e.to}; old main ${e.main}${e.spare ? ` and spare ${e.spare}` : ''} ${e.released ? `released${e.releasedAt ? ` at ${e.releasedAt}` : ''}` : 'being released'}`,
    );
  } else if (s.spare) {
    const sp = s.spare;
    const flag = sp.failing
      ? `  ** SPARE FAILING: ${sp.cause} (no new remaps) **`
      : sp.exhausted
        ? '  ** SPARE EXHAUSTED **'
        : sp.low
          ? '  ** spare running low **'
          : '';
    lines.push(`spare       ${sp.path}: ${sp.used} of ${sp.dataBlocks} blocks used (${sp.usedPercent}%), ${sp.free} free${flag}`);
    const reasons = Object.entries(s.remaps.byReason ?? {})
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    lines.push(`remaps      ${s.remaps.total}${reasons ? ` (${reasons})` : ''}, block size ${s.blockSize}`);
    lines.push(
      `pending     ${s.pending.count}${s.pending.count ? ` at ${s.pending.offsets.slice(0, 8).join(', ')}${s.pending.count > 8 ? ', …' : ''}` : ''}`,
    );
  } else {
    lines.push('spare       none (passthrough)');
  }
  if (s.scan) {
    const sc = s.scan;
    lines.push(
      `scan        ${sc.state}, ${typeof sc.progress === 'number' ? (sc.progress * (sc.progress <= 1 ? 100 : 1)).toFixed(1) + '%' : ''} passes ${sc.passesCompleted ?? 0}, last full ${sc.lastFullScanAt ? new Date(sc.lastFullScanAt).toISOString() : 'never'}`,
    );
    if (sc.suspects && (sc.suspects.queued || sc.suspects.visited)) {
      lines.push(
        `suspects    ${sc.suspects.queued} regions queued (${bytes(sc.suspects.queuedBytes)}), ${sc.suspects.visited} visited (${bytes(sc.suspects.visitedBytes)})`,
      );
    }
    if (sc.deviceFailure)
      lines.push(`            ** MAIN DEVICE FAILED ** ${sc.deviceFailure.code} at ${sc.deviceFailure.at}: ${sc.deviceFailure.message}`);
  }
  if (s.smart) {
    const sm = s.smart;
    if (sm.state === 'ok') {
      const names: Record<string, string> = {
        reallocated: 'reallocated',
        pending: 'pending',
        offlineUncorrectable: 'offline uncorrectable',
        mediaErrors: 'media errors',
        availableSpare: 'spare %',
        availableSpareThreshold: 'spare threshold %',
        percentageUsed: 'used %',
        criticalWarning: 'critical warning',
        grownDefects: 'grown defects',
        uncorrectedErrors: 'uncorrected errors',
      };
      const counts = Object.entries(sm.counts ?? {})
        .map(([k, v]) => `${names[k] ?? k} ${v}${k === 'criticalWarning' && v ? ` (${nvmeWarnings(Number(v))})` : ''}`)
        .join(', ');
      const verdict = sm.passed === false ? 'FAILED' : sm.passed ? 'passed' : 'no verdict';
      lines.push(
        `smart       ${sm.protocol} ${verdict}${counts ? `, ${counts}` : ''}${sm.hintsQueued ? `, ${sm.hintsQueued} logged LBAs sent to the scan` : ''}`,
      );
    } else if (sm.state === 'unavailable') {
      lines.push(`smart       unavailable: ${sm.reason}`);
    } else {
      lines.push('smart       not checked yet');
    }
  }
  if (s.evacuate && s.evacuate.phase !== 'none') {
    const e = s.evacuate;
    lines.push(
      `evacuate    ${e.phase} to ${e.target}${e.size !== undefined ? `: ${bytes(e.bytesCopied)} of ${bytes(e.size)} (${(e.progress * 100).toFixed(1)}%), ${bytes(e.bytesPerSecond)}/s, ETA ${e.etaSeconds ?? '--'} s, ${e.unreadable} unreadable` : ''}`,
    );
  }
  if (s.io?.rates) {
    const r = s.io.rates;
    const rate = (cmd: string) => r[cmd] ?? { requestsPerSecond: 0, bytesPerSecond: 0 };
    lines.push(
      `io          read ${bytes(rate('READ').bytesPerSecond)}/s (${rate('READ').requestsPerSecond} req/s), ` +
        `write ${bytes(rate('WRITE').bytesPerSecond)}/s (${rate('WRITE').requestsPerSecond} req/s) over ${s.io.windowSeconds}s`,
    );
    const errors = Object.entries(s.io.totals ?? {})
      .filter(([, c]: [string, any]) => c.errors > 0)
      .map(([k, c]: [string, any]) => `${k} ${c.errors}`);
    if (errors.length) lines.push(`io errors   ${errors.join(', ')}`);
  }
  return lines.join('\n') + '\n';
}

/**
 * SMART for main: runs `smartctl -j -a DEV` at start and then periodically (hourly by default), never on
 * the I/O path (a child process with a timeout; the daemon never waits for it), parses it
 * (smart-parse.ts) and hands the result on: counts to the health score, LBAs from the self-test and
 * error logs to the scanner as suspect regions (read first; only what fails there becomes pending).
 *
 * Where SMART is not available (an image file, a loop device, smartctl missing, failing or too slow),
 * status says why ("unavailable: …") and the daemon carries on. ATA disks behind the SCSI layer are read
 * with ATA PASS-THROUGH (SG_IO), which the Linux SCSI layer only allows with CAP_SYS_RAWIO; NVMe SMART
 * log pages need CAP_SYS_ADMIN; running as root has both.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Logger } from 'pino';
import { byteOffset } from '../units';
import { parseSmartctlJson, type SmartCounts, type SmartProtocol, type SmartReport } from './smart-parse';
import type { ByteRange } from './suspects';

export interface SmartOptions {
  readonly devicePath: string;
  /** Size of main in bytes (LBAs past it are ignored). */
  readonly deviceSize: number;
  readonly logger: Logger;
  /** smartctl binary (default: REMAPD_SMARTCTL or "smartctl" on PATH). */
  readonly command?: string;
  /** Time between checks, ms (default 1 h). */
  readonly intervalMs?: number;
  /** Longest a check may take, ms (default 60 s). */
  readonly timeoutMs?: number;
  /** A fresh report (also when SMART is unavailable). */
  readonly onReport?: (r: SmartReport) => void;
  /** Byte ranges of main named by the drive's logs, not handed on before. */
  readonly onHints?: (ranges: ByteRange[], source: string) => void;
}

export interface SmartStatus {
  state: 'ok' | 'unavailable' | 'not-checked';
  reason?: string;
  protocol?: SmartProtocol;
  passed?: boolean | null;
  counts?: SmartCounts;
  /** LBAs the drive's logs named, and how many were handed to the scan as suspect regions. */
  lbasSeen?: number;
  hintsQueued: number;
  checkedAt: string | null;
  model?: string;
}

export const DEFAULT_SMART_INTERVAL_MS = 3_600_000;
const DEFAULT_TIMEOUT_MS = 60_000;

/** Byte offset of a partition inside its disk (SMART LBAs are the disk's), 0 for a whole disk. */
function partitionStart(devicePath: string): number {
  try {
    const name = basename(realpathSync(devicePath));
    const p = `/sys/class/block/${name}/partition`;
    if (!existsSync(p)) return 0;
    return Number(readFileSync(`/sys/class/block/${name}/start`, 'utf8').trim()) * 512;
  } catch {
    return 0;
  }
}

export class SmartMonitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  private report: SmartReport | undefined;
  private checkedAt = 0;
  private readonly seen = new Set<number>();
  private hintsQueued = 0;
  private lastReason = '';

  constructor(private readonly o: SmartOptions) {}

  /** First check now, then every interval. */
  start(): void {
    void this.check();
    this.timer = setInterval(() => void this.check(), this.o.intervalMs ?? DEFAULT_SMART_INTERVAL_MS);
    this.timer.unref();
  }

  close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    return this.running ?? Promise.resolve();
  }

  /** One check (at most one at a time). */
  check(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.running ??= this.run().finally(() => (this.running = undefined));
    return this.running;
  }

  status(): SmartStatus {
    const r = this.report;
    const checkedAt = this.checkedAt ? new Date(this.checkedAt).toISOString() : null;
    if (!r) return { state: 'not-checked', hintsQueued: 0, checkedAt };
    if (!r.available) return { state: 'unavailable', reason: r.reason, hintsQueued: this.hintsQueued, checkedAt };
    return {
      state: 'ok',
      protocol: r.protocol,
      passed: r.passed,
      counts: r.counts,
      lbasSeen: this.seen.size,
      hintsQueued: this.hintsQueued,
      checkedAt,
      ...(r.model ? { model: r.model } : {}),
    };
  }

  /** The latest report, when SMART answered. */
  current(): SmartReport | undefined {
    return this.report;
  }

  private async run(): Promise<void> {
    const r = await this.read();
    if (this.closed) return;
    this.report = r;
    this.checkedAt = Date.now();
    if (!r.available) {
      // Logged once per distinct reason: hourly repeats of "not available" are noise.
      if (r.reason !== this.lastReason)
        this.o.logger.info({ device: this.o.devicePath, reason: r.reason }, 'SMART not available for main; carrying on without it');
      this.lastReason = r.reason;
    } else {
      this.lastReason = '';
      this.o.logger.info(
        { device: this.o.devicePath, protocol: r.protocol, passed: r.passed, counts: r.counts, lbas: r.lbas.length },
        'SMART read',
      );
      this.hints(r);
    }
    this.o.onReport?.(r);
  }

  private hints(r: Extract<SmartReport, { available: true }>): void {
    const start = partitionStart(this.o.devicePath);
    const bySource = new Map<string, ByteRange[]>();
    for (const l of r.lbas) {
      if (this.seen.has(l.lba)) continue;
      this.seen.add(l.lba);
      const offset = l.lba * r.logicalBlockSize - start;
      if (offset < 0 || offset + r.logicalBlockSize > this.o.deviceSize) continue; // another partition's
      const list = bySource.get(l.source) ?? [];
      list.push({ offset: byteOffset(offset), length: r.logicalBlockSize });
      bySource.set(l.source, list);
    }
    for (const [source, ranges] of bySource) {
      this.hintsQueued += ranges.length;
      this.o.logger.warn(
        { device: this.o.devicePath, source, lbas: ranges.length },
        'SMART log names bad LBAs on main: the scan reads them first',
      );
      this.o.onHints?.(ranges, `smart ${source}`);
    }
  }

  private read(): Promise<SmartReport> {
    let isBlock: boolean;
    try {
      isBlock = statSync(this.o.devicePath).isBlockDevice();
    } catch (err) {
      return Promise.resolve({ available: false, reason: `cannot stat ${this.o.devicePath}: ${(err as Error).message}` });
    }
    if (!isBlock) return Promise.resolve({ available: false, reason: 'main is an image file, not a disk' });
    const cmd = this.o.command ?? process.env.REMAPD_SMARTCTL ?? 'smartctl';
    const timeout = this.o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve) => {
      execFile(cmd, ['-j', '-a', this.o.devicePath], { timeout, maxBuffer: 16 << 20, killSignal: 'SIGKILL' }, (err, stdout) => {
        const e = err as (NodeJS.ErrnoException & { killed?: boolean }) | null;
        if (e?.code === 'ENOENT') return resolve({ available: false, reason: `${cmd} not found (install smartmontools ≥ 7)` });
        if (e?.killed) return resolve({ available: false, reason: `${cmd} took longer than ${timeout} ms` });
        // smartctl's exit status is a bit mask; data comes with most non-zero ones: the JSON decides.
        if (!stdout.trim()) return resolve({ available: false, reason: `${cmd} failed: ${e?.message ?? 'no output'}` });
        resolve(parseSmartctlJson(stdout));
      });
    });
  }
}

/**
 * Reads what matters to remapd out of `smartctl -j -a DEV` (smartmontools ≥ 7 JSON): the drive's own
 * count of bad sectors, its overall verdict, and the LBAs its self-test and error logs name. Pure; the
 * running of smartctl is smart.ts.
 *
 * Keys used (as smartctl 7 writes them: src/ataprint.cpp, nvmeprint.cpp, scsiprint.cpp):
 *   all   smartctl.exit_status (bit 0 bad command line, bit 1 device open failed / type unknown: no data),
 *         smartctl.messages[].string, device.protocol, smart_status.passed, logical_block_size
 *   ATA   ata_smart_attributes.table[] {id, raw.value}: 5 reallocated, 197 current pending,
 *         198 offline uncorrectable; ata_smart_self_test_log.{standard,extended}.table[].lba (present
 *         only on a failed test: the text output's LBA_of_first_error);
 *         ata_smart_error_log.{extended,summary}.table[].completion_registers {error, lba, device}
 *   NVMe  nvme_smart_health_information_log {media_errors, available_spare, available_spare_threshold,
 *         percentage_used, critical_warning}; nvme_self_test_log.table[].lba;
 *         nvme_error_information_log.table[].lba.value
 *   SCSI  scsi_grown_defect_list; scsi_error_counter_log.{read,write,verify}.total_uncorrected_errors;
 *         scsi_self_test_N.lba_first_failure.value
 */

export type SmartProtocol = 'ATA' | 'NVMe' | 'SCSI';

export interface SmartCounts {
  /** ATA 5 Reallocated_Sector_Ct (raw). */
  reallocated?: number;
  /** ATA 197 Current_Pending_Sector (raw). */
  pending?: number;
  /** ATA 198 Offline_Uncorrectable (raw). */
  offlineUncorrectable?: number;
  /** NVMe media and data integrity errors. */
  mediaErrors?: number;
  /** NVMe available spare and its threshold, percent. */
  availableSpare?: number;
  availableSpareThreshold?: number;
  percentageUsed?: number;
  criticalWarning?: number;
  /** SCSI grown defect list entries. */
  grownDefects?: number;
  /** SCSI total uncorrected errors (read + write + verify). */
  uncorrectedErrors?: number;
}

/** An LBA a log names, in units of the drive's logical block size. */
export interface SmartLba {
  readonly lba: number;
  readonly source: 'self-test log' | 'error log';
}

export type SmartReport =
  | {
      readonly available: true;
      readonly protocol: SmartProtocol;
      /** smart_status.passed: the drive's own verdict (null when not reported). */
      readonly passed: boolean | null;
      readonly counts: SmartCounts;
      readonly lbas: readonly SmartLba[];
      readonly logicalBlockSize: number;
      readonly model?: string;
      readonly exitStatus: number;
    }
  | { readonly available: false; readonly reason: string };

type J = Record<string, unknown>;

function obj(v: unknown): J | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as J) : undefined;
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

const MAX_LBAS = 1000;

export function parseSmartctlJson(text: string): SmartReport {
  let root: J | undefined;
  try {
    root = obj(JSON.parse(text));
  } catch {
    return { available: false, reason: 'smartctl printed no JSON (smartmontools older than 7?)' };
  }
  if (!root) return { available: false, reason: 'smartctl printed no JSON object' };
  const sc = obj(root.smartctl);
  const exitStatus = num(sc?.exit_status) ?? 0;
  const messages = arr(sc?.messages)
    .map((m) => obj(m)?.string)
    .filter((s): s is string => typeof s === 'string');
  const protocol = obj(root.device)?.protocol;
  if (exitStatus & 0b11 || (protocol !== 'ATA' && protocol !== 'NVMe' && protocol !== 'SCSI')) {
    const why = messages[0] ?? (protocol ? `unsupported protocol ${String(protocol)}` : 'smartctl reported no device');
    return { available: false, reason: why };
  }
  const counts: SmartCounts = {};
  const lbas: SmartLba[] = [];
  const addLba = (v: unknown, source: SmartLba['source']): void => {
    const n = num(v);
    if (n !== undefined && Number.isSafeInteger(n) && lbas.length < MAX_LBAS && !lbas.some((l) => l.lba === n))
      lbas.push({ lba: n, source });
  };
  if (protocol === 'ATA') {
    for (const a of arr(obj(root.ata_smart_attributes)?.table)) {
      const o = obj(a);
      const raw = num(obj(o?.raw)?.value);
      if (raw === undefined) continue;
      if (o?.id === 5) counts.reallocated = raw;
      if (o?.id === 197) counts.pending = raw;
      if (o?.id === 198) counts.offlineUncorrectable = raw;
    }
    const st = obj(root.ata_smart_self_test_log);
    for (const log of [obj(st?.extended), obj(st?.standard)]) for (const e of arr(log?.table)) addLba(obj(e)?.lba, 'self-test log');
    // Error log: only entries whose error register says UNC (0x40, uncorrectable data) name a bad
    // sector; ICRC/ABRT entries are link or command errors. The extended (48-bit) log is preferred; the
    // summary log's "lba" holds only the low 24 bits, the device register holds bits 24-27 (LBA28).
    const el = obj(root.ata_smart_error_log);
    const ext = arr(obj(el?.extended)?.table);
    for (const e of ext.length ? ext : arr(obj(el?.summary)?.table)) {
      const r = obj(obj(e)?.completion_registers);
      const error = num(r?.error) ?? 0;
      const lba = num(r?.lba);
      if (!(error & 0x40) || lba === undefined) continue;
      addLba(ext.length ? lba : lba + (((num(r?.device) ?? 0) & 0x0f) << 24), 'error log');
    }
  } else if (protocol === 'NVMe') {
    const h = obj(root.nvme_smart_health_information_log);
    counts.mediaErrors = num(h?.media_errors);
    counts.availableSpare = num(h?.available_spare);
    counts.availableSpareThreshold = num(h?.available_spare_threshold);
    counts.percentageUsed = num(h?.percentage_used);
    counts.criticalWarning = num(h?.critical_warning);
    for (const e of arr(obj(root.nvme_self_test_log)?.table)) addLba(obj(e)?.lba, 'self-test log');
    for (const e of arr(obj(root.nvme_error_information_log)?.table)) addLba(obj(obj(e)?.lba)?.value, 'error log');
  } else {
    counts.grownDefects = num(root.scsi_grown_defect_list);
    const ecl = obj(root.scsi_error_counter_log);
    if (ecl) {
      let total = 0;
      for (const k of ['read', 'write', 'verify']) total += num(obj(ecl[k])?.total_uncorrected_errors) ?? 0;
      counts.uncorrectedErrors = total;
    }
    for (const [k, v] of Object.entries(root))
      if (/^scsi_self_test_\d+$/.test(k)) addLba(obj(obj(v)?.lba_first_failure)?.value, 'self-test log');
  }
  for (const k of Object.keys(counts) as (keyof SmartCounts)[]) if (counts[k] === undefined) delete counts[k];
  const passed = obj(root.smart_status)?.passed;
  const model = root.model_name ?? root.scsi_model_name;
  return {
    available: true,
    protocol,
    passed: typeof passed === 'boolean' ? passed : null,
    counts,
    lbas,
    logicalBlockSize: num(root.logical_block_size) || 512,
    ...(typeof model === 'string' ? { model } : {}),
    exitStatus,
  };
}

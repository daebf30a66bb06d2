/**
 * Setup for the remap e2e tests: a main image + a spare image with fresh metadata, a fault-rule file,
 * and remapd started with --spare/--faults/--control. Plus small wrappers for the control CLI
 * (status/list/remap/unremap/faults) and qemu-io.
 *
 * Metadata is created in-process with MetadataStore.create (until `remapd create` lands).
 */
import { writeFileSync, readFileSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { MetadataStore } from '../../metadata/store';
import { identityFromBackend } from '../../metadata/fingerprint';
import { openBackend } from '../../storage/file-backend';
import { run, type RunResult } from './exec';
import { REMAPD_BIN, startServer, type Server } from './server';
import { randomImage, sparseImage, tempDir, MiB } from './tmp';

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface FaultRuleSpec {
  op: 'read' | 'write' | 'any';
  offset: number;
  length: number;
  error?: string;
  count?: number;
  delayMs?: number;
}

export interface RemapSetup {
  dir: string;
  main: string;
  spare: string;
  faultsFile: string;
  control: string;
  socket: string;
  blockSize: number;
  size: number;
}

export interface RemapSetupOptions {
  mainBytes?: number;
  spareBytes?: number;
  blockSize?: number;
  fill?: 'zero' | 'random';
  faults?: FaultRuleSpec[];
  /** Reuse this directory instead of a new temp dir. */
  dir?: string;
}

/** Create the images, the metadata on the spare and the initial fault file. */
export async function createRemapSetup(t: Teardown, o: RemapSetupOptions = {}): Promise<RemapSetup> {
  const dir = o.dir ?? tempDir(t, 'remapd-rm-');
  const main = join(dir, 'main.img');
  const spare = join(dir, 'spare.img');
  const size = o.mainBytes ?? 64 * MiB;
  if (o.fill === 'random') randomImage(main, size);
  else sparseImage(main, size);
  sparseImage(spare, o.spareBytes ?? 32 * MiB);
  const blockSize = o.blockSize ?? 4096;
  await createMetadata(main, spare, blockSize);
  const faultsFile = join(dir, 'faults.json');
  writeFaults(faultsFile, o.faults ?? []);
  return { dir, main, spare, faultsFile, control: join(dir, 'ctl.sock'), socket: join(dir, 'nbd.sock'), blockSize, size };
}

export async function createMetadata(main: string, spare: string, blockSize = 4096): Promise<void> {
  const mb = await openBackend(main, { readOnly: true });
  const sb = await openBackend(spare, {});
  try {
    const store = await MetadataStore.create(sb, identityFromBackend(mb), { blockSize });
    await store.close();
  } finally {
    await sb.close();
    await mb.close();
  }
}

export function writeFaults(file: string, rules: FaultRuleSpec[]): void {
  writeFileSync(file, JSON.stringify(rules, null, 1));
}

/** Start remapd serving the setup (--spare, --faults, --control). */
export function startRemapd(t: Teardown | null, s: RemapSetup, extraArgs: string[] = [], opts: { spare?: boolean } = {}): Promise<Server> {
  const args = ['--faults', s.faultsFile, '--control', s.control, ...extraArgs];
  if (opts.spare !== false) args.unshift('--spare', s.spare);
  return startServer(t, { kind: 'remapd', image: s.main, dir: s.dir, socket: s.socket, extraArgs: args });
}

/** Run `remapd <args> --control CTL`. */
export function remapctl(s: RemapSetup, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return run(process.execPath, [REMAPD_BIN, ...args, '--control', s.control], { timeoutMs });
}

export interface StatusJson {
  remaps: { total: number; byReason: Record<string, number> };
  pending: { count: number; offsets: number[] };
  spare: { dataBlocks: number; used: number; free: number; usedPercent: number; low: boolean; exhausted: boolean; path: string };
  counters: { readErrors: number; writeErrors: number; rescued: number; remappedOnWrite: number; migrated: number };
  blockSize: number;
  size: number;
}

export async function statusJson(s: RemapSetup): Promise<StatusJson> {
  const r = await remapctl(s, ['status', '--json']);
  if (r.code !== 0) throw new Error(`remapd status failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as StatusJson;
}

export interface ListJson {
  blockSize: number;
  remaps: { offset: number; mainBlock: number; spareBlock: number; reason: string }[];
  pending: { count: number; offsets: number[] };
}

export async function listJson(s: RemapSetup): Promise<ListJson> {
  const r = await remapctl(s, ['list', '--json']);
  if (r.code !== 0) throw new Error(`remapd list failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as ListJson;
}

/** Replace the running daemon's fault rules (remapd faults FILE). */
export async function loadFaults(s: RemapSetup, rules: FaultRuleSpec[], name = 'faults-reload.json'): Promise<void> {
  const f = join(s.dir, name);
  writeFaults(f, rules);
  const r = await remapctl(s, ['faults', f]);
  if (r.code !== 0) throw new Error(`remapd faults failed: ${r.stderr}`);
}

export function qemuIo(uri: string, cmds: string[], timeoutMs = 120_000): Promise<RunResult> {
  const args = ['-f', 'raw'];
  for (const c of cmds) args.push('-c', c);
  args.push(uri);
  return run('qemu-io', args, { timeoutMs });
}

/** qemu-io prints some errors but exits 0: any error text counts as failure. */
export function qemuIoClean(r: RunResult): boolean {
  return r.code === 0 && !/(error|failed|Pattern verification failed|mismatch)/i.test(r.stdout + r.stderr);
}

/** Parsed pino JSON lines of a server log. */
export function logRecords(server: Server): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of readFileSync(server.logFile, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* partial line */
    }
  }
  return out;
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Read [offset, offset+length) of a file (bypassing nothing: for images the daemon no longer serves). */
export function readFileRange(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

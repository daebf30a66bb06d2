/**
 * Control-socket commands about the device: status, list, remap, unremap, faults.
 * Other parts (the scanner, metrics) add their own commands and status sections.
 */
import type { BlockDevice } from '../protocol/block-device';
import type { NbdServer } from '../protocol/server';
import type { MetadataStore } from '../metadata/store';
import type { RemapDevice } from '../remap/remap-device';
import { parseRange } from '../remap/units';
import { blockSpan, blockStart, type ByteOffset, type MainBlock } from '../units';
import { ControlError, type ControlServer } from './control-server';
import { RELEASED_MESSAGE, type RetiredStack } from './evacuate/retire-old-stack';

export interface DeviceCommandContext {
  readonly device: BlockDevice;
  readonly remap: RemapDevice | undefined;
  readonly server: NbdServer;
  readonly store: MetadataStore | undefined;
  readonly main: string;
  /** Set after `evacuate --switch` retired the old main and spare (daemon/evacuate/retire-old-stack.ts). */
  readonly retired?: () => RetiredStack | undefined;
  readonly exportName: string;
  /** Replace the fault rules; returns the number of rules. */
  readonly setFaults: (text: string, source: string) => number;
}

/** Extra sections of `remapd status`, by name (e.g. "scan", "health"). */
export const statusSections = new Map<string, () => unknown>();

const startedAt = Date.now();

function requireRemap(ctx: DeviceCommandContext): RemapDevice {
  if (ctx.retired?.()) throw new ControlError(RELEASED_MESSAGE);
  if (!ctx.remap) throw new ControlError('this daemon runs without a spare (serve --spare PATH): nothing can be remapped');
  return ctx.remap;
}

function rangeArg(args: Record<string, unknown>): { offset: ByteOffset; length: number } {
  if (typeof args.range !== 'string') throw new ControlError('missing range: OFFSET[+LENGTH]');
  try {
    return parseRange(args.range);
  } catch (err) {
    throw new ControlError((err as Error).message);
  }
}

export function registerDeviceCommands(control: ControlServer, ctx: DeviceCommandContext): void {
  control.register('ping', () => ({ pid: process.pid }));

  control.register('status', () => {
    const base = {
      pid: process.pid,
      uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      export: ctx.exportName,
      main: ctx.main,
      size: ctx.device.size,
      connections: ctx.server.connectionCount,
      spare: null as unknown,
      setupUuid: ctx.store?.setupUuid ?? null,
    };
    const out: Record<string, unknown> = { ...base };
    const retired = ctx.retired?.();
    if (retired) {
      // Serving the evacuated disk; the old main and spare are closed (or closing) and free for the admin.
      out.main = retired.to;
      out.evacuated = {
        to: retired.to,
        main: retired.main,
        spare: retired.spare,
        released: retired.releasedAt !== null,
        releasedAt: retired.releasedAt,
      };
      out.remaps = { total: 0, byReason: {} };
      out.pending = { count: 0, offsets: [] };
    } else if (ctx.remap) {
      const s = ctx.remap.status();
      out.spare = { path: ctx.remap.spare.path, ...s.spare };
      out.blockSize = s.blockSize;
      out.remaps = s.remaps;
      out.pending = s.pending;
      out.counters = s.counters;
      out.mainState = s.main;
    } else {
      out.remaps = { total: 0, byReason: {} };
      out.pending = { count: 0, offsets: [] };
    }
    for (const [name, fn] of statusSections) out[name] = fn();
    return out;
  });

  control.register('list', () => {
    const remap = requireRemap(ctx);
    return { blockSize: remap.remapBlockSize, remaps: remap.entries(), pending: remap.status().pending };
  });

  /** Run `move` on every block of the request's range; results grouped by outcome, as byte offsets. */
  const eachBlock = async (
    args: Record<string, unknown>,
    move: (remap: RemapDevice, block: MainBlock) => Promise<string>,
    stopOn?: string,
  ) => {
    const remap = requireRemap(ctx);
    const { offset, length } = rangeArg(args);
    if (offset + length > remap.size) throw new ControlError(`range ends past the device (${remap.size} bytes)`);
    const [first, last] = blockSpan(offset, length, remap.remapBlockSize);
    const results: Record<string, ByteOffset[]> = {};
    for (let b = first; b <= last; b++) {
      let r: string;
      try {
        r = await move(remap, b);
      } catch (err) {
        throw new ControlError(
          `${(err as Error).message}${Object.keys(results).length ? `; done before: ${JSON.stringify(results)}` : ''}`,
        );
      }
      (results[r] ??= []).push(blockStart(b, remap.remapBlockSize));
      if (r === stopOn) break;
    }
    return { blockSize: remap.remapBlockSize, results };
  };

  control.register('remap', (args) => eachBlock(args, (remap, b) => remap.moveToSpare(b, 'manual'), 'spare-full'));
  control.register('unremap', (args) => eachBlock(args, (remap, b) => remap.moveToMain(b)));

  control.register('faults', (args) => {
    if (typeof args.text !== 'string') throw new ControlError('missing the rules (text)');
    try {
      return { rules: ctx.setFaults(args.text, typeof args.source === 'string' ? args.source : 'control socket') };
    } catch (err) {
      throw new ControlError((err as Error).message);
    }
  });
}

/**
 * The remap layer's own cost per request, without the noise of sockets, fio and the kernel: the
 * BlockDevice that the NBD connection calls (PassthroughDevice vs RemapDevice with 0 and with 10,000
 * remaps) driven in-process at queue depth 32 over a main "device" whose I/O completes at once (like
 * nbdkit's null plugin: what is left is the layer). The remap table and metadata are real (a
 * MetadataStore on a sparse file); only data I/O is null.
 *
 * Slices of SLICE_OPS requests alternate between the three devices for ROUNDS rounds (order rotating);
 * the result is the median ns per request of each device and workload, and the difference to
 * passthrough. Prints JSON. Usage: node dist/bench/remap-layer.js [dir]
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import pino from 'pino';
import type { Backend } from '../storage/backend';
import type { BlockDevice } from '../protocol/block-device';
import { MetadataStore } from '../metadata/store';
import { PassthroughDevice } from '../remap/passthrough-device';
import { RemapDevice } from '../remap/remap-device';
import { openBackend } from '../storage/file-backend';
import { median } from './lib/stats';
import { byteOffset, mainBlock } from '../units';

const SIZE = 2 ** 30;
const B = 4096;
const QD = 32;
const SLICE_OPS = Number(process.env.LAYER_SLICE_OPS ?? 200_000);
const ROUNDS = Number(process.env.LAYER_ROUNDS ?? 15);
const REMAPS = 10_000;

/** Data I/O that completes immediately (the layer's cost is what remains). */
class NullBackend implements Backend {
  readonly kind = 'file' as const;
  readonly logicalBlockSize = 512;
  readonly stableIds = {};
  readonly readOnly = false;
  readonly canPunchHoles = true;
  readonly canReportHoles = false;
  constructor(
    readonly path: string,
    readonly size: number,
  ) {}
  read(): Promise<void> {
    return Promise.resolve();
  }
  write(): Promise<void> {
    return Promise.resolve();
  }
  sync(): Promise<void> {
    return Promise.resolve();
  }
  trim(): Promise<void> {
    return Promise.resolve();
  }
  zero(): Promise<void> {
    return Promise.resolve();
  }
  extents(_o: number, length: number): Promise<{ length: number; hole: boolean }[]> {
    return Promise.resolve([{ length, hole: false }]);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

interface Workload {
  id: string;
  write: boolean;
  random: boolean;
}
const WORKLOADS: Workload[] = [
  { id: 'seq-read-4k', write: false, random: false },
  { id: 'seq-write-4k', write: true, random: false },
  { id: 'rand-read-4k', write: false, random: true },
  { id: 'rand-write-4k', write: true, random: true },
];

/** Offsets of one slice: the same for every device. */
function offsets(w: Workload, seed: number): Float64Array {
  const blocks = SIZE / B;
  const o = new Float64Array(SLICE_OPS);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < SLICE_OPS; i++) {
    if (w.random) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      o[i] = (x % blocks) * B;
    } else {
      o[i] = ((seed * SLICE_OPS + i) % blocks) * B;
    }
  }
  return o;
}

/** Run one slice at QD 32; resolves with ns per request. */
function slice(dev: BlockDevice, w: Workload, offs: Float64Array, bufs: Buffer[]): Promise<number> {
  return new Promise((resolve, reject) => {
    let issued = 0;
    let done = 0;
    const t0 = process.hrtime.bigint();
    const next = (slot: number): void => {
      if (issued === offs.length) return;
      const off = offs[issued++];
      const p = w.write ? dev.write(byteOffset(off), bufs[slot], false) : dev.read(byteOffset(off), B, bufs[slot], 0);
      p.then(() => {
        if (++done === offs.length) resolve(Number(process.hrtime.bigint() - t0) / offs.length);
        else next(slot);
      }, reject);
    };
    for (let s = 0; s < QD; s++) next(s);
  });
}

async function remapDevice(dir: string, name: string, remaps: number): Promise<{ dev: RemapDevice; close: () => Promise<void> }> {
  const file = path.join(dir, `${name}-spare.img`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 256 * 2 ** 20);
  const spareFile = await openBackend(file, {});
  const store = await MetadataStore.create(spareFile, { size: SIZE, logicalBlockSize: 512 }, { blockSize: B, force: true });
  const stride = Math.floor(SIZE / B / Math.max(1, remaps));
  for (let i = 0; i < remaps; i += 1000) {
    const add = [];
    for (let j = i; j < Math.min(remaps, i + 1000); j++)
      add.push({
        mainBlock: mainBlock(j * stride),
        spareBlock: store.allocateSpareBlock()!,
        reason: 'write-error' as const,
        createdAt: Date.now(),
      });
    await store.commit({ add });
  }
  const log = pino({ level: 'silent' });
  // Data I/O on both devices is null; the store keeps its real file for the metadata.
  const dev = new RemapDevice(new NullBackend('null-main', SIZE), new NullBackend('null-spare', 256 * 2 ** 20), store, { logger: log });
  return {
    dev,
    close: async () => {
      await store.close();
      await spareFile.close();
    },
  };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(process.argv[2] ?? os.tmpdir(), 'remapd-layer-'));
  try {
    const r0 = await remapDevice(dir, 'r0', 0);
    const rN = await remapDevice(dir, 'rN', REMAPS);
    const devices: { label: string; dev: BlockDevice }[] = [
      { label: 'passthrough', dev: new PassthroughDevice(new NullBackend('null-main', SIZE)) },
      { label: 'remap-0', dev: r0.dev },
      { label: `remap-${REMAPS}`, dev: rN.dev },
    ];
    const bufs = Array.from({ length: QD }, () => Buffer.alloc(B, 0x5a));
    const ns: Record<string, Record<string, number[]>> = {};
    for (const w of WORKLOADS) {
      ns[w.id] = Object.fromEntries(devices.map((d) => [d.label, [] as number[]]));
      for (const d of devices) await slice(d.dev, w, offsets(w, 0), bufs); // warm-up (JIT)
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (let wi = 0; wi < WORKLOADS.length; wi++) {
        const w = WORKLOADS[wi];
        const offs = offsets(w, r + 1);
        for (let k = 0; k < devices.length; k++) {
          const d = devices[(r + wi + k) % devices.length];
          ns[w.id][d.label].push(await slice(d.dev, w, offs, bufs));
        }
      }
    }
    const out: Record<string, unknown> = { sliceOps: SLICE_OPS, rounds: ROUNDS, queueDepth: QD, remaps: REMAPS };
    for (const w of WORKLOADS) {
      const base = median(ns[w.id].passthrough);
      const row: Record<string, unknown> = {};
      for (const d of devices) {
        const m = median(ns[w.id][d.label]);
        // Per-round differences against the passthrough slice of the same round (adjacent in time).
        const diffs = ns[w.id][d.label].map((v, i) => v - ns[w.id].passthrough[i]);
        row[d.label] = { nsPerReq: +m.toFixed(1), ...(d.label === 'passthrough' ? {} : { extraNs: +median(diffs).toFixed(1) }) };
      }
      row.baseNs = +base.toFixed(1);
      out[w.id] = row;
    }
    await r0.close();
    await rN.close();
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});

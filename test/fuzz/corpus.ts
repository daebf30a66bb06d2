/**
 * Seeded randomness, recorded valid client sessions, and the mutators the fuzzers apply to them.
 * Everything is a pure function of (seed, iteration) so any failing input can be regenerated.
 */
import { Cmd, CmdFlag, Info, MAX_OPTION_LENGTH, MAX_PAYLOAD, Opt } from '../../protocol/constants';
import * as wire from '../helpers/nbd-wire';

export type Rng = () => number;

/** mulberry32: small, fast, good enough for fuzzing. Returns floats in [0, 1). */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seed of iteration i of a run: inputs can be regenerated one at a time. */
export function iterationSeed(seed: number, i: number): number {
  let h = (seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export const int = (r: Rng, n: number): number => Math.floor(r() * n);
export const pick = <T>(r: Rng, xs: readonly T[]): T => xs[int(r, xs.length)];

function randomBytes(r: Rng, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

const EXPORT = 'disk';

function transmission(r: Rng, count: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const cookie = BigInt(i + 1);
    switch (int(r, 7)) {
      case 0:
        out.push(wire.request({ type: Cmd.READ, cookie, offset: int(r, 64) * 4096, length: 4096 }));
        break;
      case 1:
        out.push(
          wire.request({
            type: Cmd.WRITE,
            flags: int(r, 2) ? CmdFlag.FUA : 0,
            cookie,
            offset: int(r, 64) * 512,
            payload: Buffer.alloc(1 + int(r, 600), i),
          }),
        );
        break;
      case 2:
        out.push(wire.request({ type: Cmd.FLUSH, cookie }));
        break;
      case 3:
        out.push(wire.request({ type: Cmd.TRIM, cookie, offset: 4096, length: 8192 }));
        break;
      case 4:
        out.push(wire.request({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.NO_HOLE, cookie, offset: 0, length: 65536 }));
        break;
      case 5:
        out.push(wire.request({ type: Cmd.BLOCK_STATUS, flags: CmdFlag.REQ_ONE, cookie, offset: 0, length: 1 << 20 }));
        break;
      default:
        out.push(wire.request({ type: Cmd.CACHE, cookie, offset: 2 ** 32 + 7, length: 512 }));
    }
  }
  return out;
}

/** Valid client sessions, shaped like what real clients send (see nbd-protocol-notes §5). */
export function validSessions(): Buffer[] {
  const r = rng(1);
  const disc = wire.request({ type: Cmd.DISC, cookie: 99n });
  return [
    // nbdinfo-like: SR, INFO, LIST_META_CONTEXT, GO, reads
    Buffer.concat([
      wire.clientFlags(3),
      wire.option(Opt.STRUCTURED_REPLY),
      wire.option(Opt.INFO, wire.infoPayload(EXPORT, [Info.BLOCK_SIZE, Info.DESCRIPTION])),
      wire.option(Opt.LIST_META_CONTEXT, wire.metaPayload(EXPORT, [])),
      wire.option(Opt.GO, wire.infoPayload(EXPORT, [Info.BLOCK_SIZE])),
      ...transmission(r, 6),
      disc,
    ]),
    // qemu-like: SR, SET_META_CONTEXT, GO, mixed I/O
    Buffer.concat([
      wire.clientFlags(1),
      wire.option(Opt.STRUCTURED_REPLY),
      wire.option(Opt.SET_META_CONTEXT, wire.metaPayload(EXPORT, ['base:allocation'])),
      wire.option(Opt.GO, wire.infoPayload('', [Info.BLOCK_SIZE, Info.NAME])),
      ...transmission(r, 10),
      disc,
    ]),
    // kernel-like: GO only, simple replies
    Buffer.concat([wire.clientFlags(3), wire.option(Opt.GO, wire.infoPayload(EXPORT)), ...transmission(r, 8), disc]),
    // old client: EXPORT_NAME with padding
    Buffer.concat([wire.clientFlags(1), wire.option(Opt.EXPORT_NAME, Buffer.from(EXPORT)), ...transmission(r, 5), disc]),
    // non-fixed newstyle
    Buffer.concat([wire.clientFlags(0), wire.option(Opt.EXPORT_NAME), ...transmission(r, 3), disc]),
    // nbd-client -l: LIST then ABORT
    Buffer.concat([wire.clientFlags(3), wire.option(Opt.LIST), wire.option(Opt.ABORT)]),
    // errors along the way: unknown option, STARTTLS, bad INFO, SR twice, then GO
    Buffer.concat([
      wire.clientFlags(3),
      wire.option(0x1234, Buffer.from('xyz')),
      wire.option(Opt.STARTTLS),
      wire.option(Opt.INFO, Buffer.from([0, 0, 0, 9])),
      wire.option(Opt.SET_META_CONTEXT, wire.metaPayload(EXPORT, ['base:allocation'])),
      wire.option(Opt.STRUCTURED_REPLY),
      wire.option(Opt.STRUCTURED_REPLY),
      wire.option(Opt.GO, wire.infoPayload('nope')),
      wire.option(Opt.GO, wire.infoPayload(EXPORT)),
      ...transmission(r, 4),
      wire.request({ type: 9, cookie: 5n }),
      wire.request({ type: Cmd.READ, flags: 0x8000, cookie: 6n, length: 1 }),
      disc,
    ]),
  ];
}

/** A session with an option just over the buffering limit (large: used with a low weight). */
export function oversizedSession(): Buffer {
  return Buffer.concat([
    wire.clientFlags(3),
    wire.option(Opt.INFO, Buffer.alloc(MAX_OPTION_LENGTH + 1, 0x61)),
    wire.option(Opt.GO, wire.infoPayload(EXPORT)),
    wire.request({ type: Cmd.READ, cookie: 1n, length: 512 }),
  ]);
}

const INTERESTING_U32 = [
  0,
  1,
  2,
  3,
  4,
  0x7f,
  0x80,
  0xff,
  0x100,
  0xffff,
  0x10000,
  0x7fffffff,
  0x80000000,
  0xfffffffe,
  0xffffffff,
  MAX_OPTION_LENGTH - 1,
  MAX_OPTION_LENGTH,
  MAX_OPTION_LENGTH + 1,
  MAX_PAYLOAD,
  MAX_PAYLOAD + 1,
  4096,
  4097,
];

/** Positions of u32 length fields in a session: after IHAVEOPT (+12) and in request headers (+24). */
function lengthFieldPositions(b: Buffer): number[] {
  const pos: number[] = [];
  for (let i = 0; i + 16 <= b.length; i++) {
    if (b[i] === 0x49 && b.readUInt32BE(i) === 0x49484156 && b.readUInt32BE(i + 4) === 0x454f5054) pos.push(i + 12, i + 8);
    else if (b[i] === 0x25 && i + 28 <= b.length && b.readUInt32BE(i) === 0x25609513) pos.push(i + 24, i + 16, i + 20, i + 4);
  }
  return pos;
}

export const MUTATORS = [
  'bitflip',
  'byte',
  'insert',
  'delete',
  'duplicate',
  'lengthField',
  'interesting',
  'splice',
  'truncate',
  'random',
] as const;
export type Mutator = (typeof MUTATORS)[number];

/** Apply 1..stack mutations to a copy of `base`. */
export function mutate(r: Rng, base: Buffer, corpus: readonly Buffer[], maxLen = 1 << 16): { input: Buffer; used: Mutator[] } {
  let b = Buffer.from(base);
  const used: Mutator[] = [];
  const stack = 1 + int(r, r() < 0.7 ? 2 : 8);
  for (let s = 0; s < stack; s++) {
    const m = pick(r, MUTATORS);
    used.push(m);
    switch (m) {
      case 'bitflip': {
        const n = 1 + int(r, 4);
        for (let k = 0; k < n && b.length; k++) b[int(r, b.length)] ^= 1 << int(r, 8);
        break;
      }
      case 'byte':
        if (b.length) b[int(r, b.length)] = int(r, 256);
        break;
      case 'insert': {
        const at = int(r, b.length + 1);
        const ins = randomBytes(r, 1 + int(r, r() < 0.9 ? 8 : 64));
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 'delete': {
        if (!b.length) break;
        const at = int(r, b.length);
        const n = 1 + int(r, r() < 0.8 ? 4 : 64);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + n)]);
        break;
      }
      case 'duplicate': {
        if (!b.length) break;
        const at = int(r, b.length);
        const n = 1 + int(r, Math.min(128, b.length - at));
        b = Buffer.concat([b.subarray(0, at + n), b.subarray(at, at + n), b.subarray(at + n)]);
        break;
      }
      case 'lengthField': {
        const pos = lengthFieldPositions(b);
        if (!pos.length) break;
        const at = pick(r, pos);
        if (at + 4 > b.length) break;
        const old = b.readUInt32BE(at);
        const v = r() < 0.5 ? pick(r, INTERESTING_U32) : (old + int(r, 33) - 16) >>> 0;
        b.writeUInt32BE(v >>> 0, at);
        break;
      }
      case 'interesting': {
        if (b.length < 4) break;
        const at = int(r, b.length - 3);
        b.writeUInt32BE(pick(r, INTERESTING_U32) >>> 0, at);
        break;
      }
      case 'splice': {
        const other = pick(r, corpus);
        const a = int(r, b.length + 1);
        const o = int(r, other.length + 1);
        b = Buffer.concat([b.subarray(0, a), other.subarray(o)]);
        break;
      }
      case 'truncate':
        b = b.subarray(0, int(r, b.length + 1));
        break;
      case 'random':
        b = Buffer.concat([b.subarray(0, int(r, b.length + 1)), randomBytes(r, int(r, 200))]);
        break;
    }
    if (b.length > maxLen) b = b.subarray(0, maxLen);
  }
  return { input: b, used };
}

/** Input number i of a run: a mutated valid session (mostly), a valid one, or pure noise. */
export function generateInput(seed: number, i: number, corpus: readonly Buffer[], big: Buffer): { input: Buffer; how: string; rng: Rng } {
  const r = rng(iterationSeed(seed, i));
  const roll = r();
  if (roll < 0.03) return { input: pick(r, corpus), how: 'valid', rng: r };
  if (roll < 0.06) {
    // noise, optionally behind a valid prefix so the noise lands in a later phase
    const prefix = r() < 0.5 ? pick(r, corpus).subarray(0, int(r, 120)) : Buffer.alloc(0);
    return { input: Buffer.concat([prefix, randomBytes(r, int(r, 256))]), how: 'noise', rng: r };
  }
  const base = roll < 0.062 ? big : pick(r, corpus);
  const { input, used } = mutate(r, base, corpus);
  return { input, how: used.join('+'), rng: r };
}

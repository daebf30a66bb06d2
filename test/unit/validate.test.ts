/**
 * protocol/validate.ts: explicit table rows for the spec's rules, then every command × every flag
 * combination × several sessions against a spec-derived expectation written out independently here.
 */
import t from 'tap';
import { validateRequest, type ValidationContext } from '../../protocol/validate';
import { Cmd, CmdFlag, MAX_PAYLOAD, TxFlag, type NbdErrnoName } from '../../protocol/constants';
import type { RequestMessage } from '../../protocol/messages';

const SIZE = 64 * 1024 * 1024;
const ALL_TX =
  TxFlag.HAS_FLAGS |
  TxFlag.SEND_FLUSH |
  TxFlag.SEND_FUA |
  TxFlag.SEND_TRIM |
  TxFlag.SEND_WRITE_ZEROES |
  TxFlag.SEND_DF |
  TxFlag.CAN_MULTI_CONN |
  TxFlag.SEND_CACHE |
  TxFlag.SEND_FAST_ZERO;

const full: ValidationContext = { size: SIZE, transmissionFlags: ALL_TX, structuredReplies: true, hasMetaContext: true };
const readOnly: ValidationContext = {
  size: SIZE,
  transmissionFlags: TxFlag.HAS_FLAGS | TxFlag.READ_ONLY | TxFlag.SEND_FLUSH | TxFlag.SEND_FUA | TxFlag.SEND_CACHE,
  structuredReplies: true,
  hasMetaContext: true,
};
const simple: ValidationContext = {
  size: SIZE,
  transmissionFlags: ALL_TX & ~TxFlag.SEND_DF,
  structuredReplies: false,
  hasMetaContext: false,
};
const bare: ValidationContext = { size: SIZE, transmissionFlags: TxFlag.HAS_FLAGS, structuredReplies: true, hasMetaContext: false };
const big: ValidationContext = { ...full, size: 2 ** 53 - 4096 };

function r(type: number, offset: number, length: number, flags = 0): RequestMessage {
  return {
    kind: 'request',
    type,
    flags,
    offset,
    length,
    cookieHi: 0,
    cookieLo: 1,
    payload: type === Cmd.WRITE ? Buffer.alloc(0) : undefined,
  } as RequestMessage;
}

type Row = [string, ValidationContext, RequestMessage, NbdErrnoName | undefined];
const MiB = 1024 * 1024;
const rows: Row[] = [
  ['read ok', full, r(Cmd.READ, 0, 4096), undefined],
  ['read up to the end', full, r(Cmd.READ, SIZE - 512, 512), undefined],
  ['read past end', full, r(Cmd.READ, SIZE - 512, 513), 'EINVAL'],
  ['read starting at end', full, r(Cmd.READ, SIZE, 1), 'EINVAL'],
  ['read length 0', full, r(Cmd.READ, 0, 0), 'EINVAL'],
  ['read 32 MiB', { ...full, size: 64 * MiB }, r(Cmd.READ, 0, MAX_PAYLOAD), undefined],
  ['read over 32 MiB', { ...full, size: 128 * MiB }, r(Cmd.READ, 0, MAX_PAYLOAD + 1), 'EINVAL'],
  ['read at 2^64-ish offset', full, r(Cmd.READ, 2 ** 64, 1), 'EINVAL'],
  ['read near 2^53 on a big export', big, r(Cmd.READ, 2 ** 53 - 8192, 4096), undefined],
  ['read crossing end of a big export', big, r(Cmd.READ, 2 ** 53 - 8192, 8192), 'EINVAL'],
  ['read above 2^32', full, r(Cmd.READ, 2 ** 32, 1), 'EINVAL'],
  ['read DF with structured replies', full, r(Cmd.READ, 0, 65536, CmdFlag.DF), undefined],
  ['read DF without structured replies', simple, r(Cmd.READ, 0, 65536, CmdFlag.DF), 'EINVAL'],
  ['read FUA when advertised', full, r(Cmd.READ, 0, 1, CmdFlag.FUA), undefined],
  ['read FUA not advertised', bare, r(Cmd.READ, 0, 1, CmdFlag.FUA), 'EINVAL'],
  ['read unknown flag 0x8000', full, r(Cmd.READ, 0, 1, 0x8000), 'EINVAL'],
  ['read NO_HOLE', full, r(Cmd.READ, 0, 1, CmdFlag.NO_HOLE), 'EINVAL'],
  ['read PAYLOAD_LEN (extended headers only)', full, r(Cmd.READ, 0, 1, CmdFlag.PAYLOAD_LEN), 'EINVAL'],
  ['read on read-only', readOnly, r(Cmd.READ, 0, 1), undefined],
  ['write ok', full, r(Cmd.WRITE, 4096, 4096), undefined],
  ['write FUA', full, r(Cmd.WRITE, 0, 1, CmdFlag.FUA), undefined],
  ['write NO_HOLE', full, r(Cmd.WRITE, 0, 1, CmdFlag.NO_HOLE), 'EINVAL'],
  ['write read-only', readOnly, r(Cmd.WRITE, 0, 1), 'EPERM'],
  ['write read-only past end', readOnly, r(Cmd.WRITE, SIZE, 1), 'EPERM'],
  ['write past end', full, r(Cmd.WRITE, SIZE - 1, 2), 'ENOSPC'],
  ['write at 2^63', full, r(Cmd.WRITE, 2 ** 63, 1), 'ENOSPC'],
  ['write length 0', full, r(Cmd.WRITE, 0, 0), 'EINVAL'],
  ['flush ok', full, r(Cmd.FLUSH, 0, 0), undefined],
  ['flush FUA', full, r(Cmd.FLUSH, 0, 0, CmdFlag.FUA), undefined],
  ['flush with offset', full, r(Cmd.FLUSH, 512, 0), 'EINVAL'],
  ['flush with length', full, r(Cmd.FLUSH, 0, 1), 'EINVAL'],
  ['flush not advertised', bare, r(Cmd.FLUSH, 0, 0), 'EINVAL'],
  ['flush on read-only', readOnly, r(Cmd.FLUSH, 0, 0), undefined],
  ['trim ok', full, r(Cmd.TRIM, 0, SIZE), undefined],
  ['trim 4 GiB - 1 on a big export', big, r(Cmd.TRIM, 0, 0xffffffff), undefined],
  ['trim past end', full, r(Cmd.TRIM, SIZE - 1, 2), 'EINVAL'],
  ['trim length 0', full, r(Cmd.TRIM, 0, 0), 'EINVAL'],
  ['trim read-only', readOnly, r(Cmd.TRIM, 0, 1), 'EPERM'],
  ['trim not advertised', bare, r(Cmd.TRIM, 0, 1), 'EINVAL'],
  ['trim DF', full, r(Cmd.TRIM, 0, 1, CmdFlag.DF), 'EINVAL'],
  ['zero ok', full, r(Cmd.WRITE_ZEROES, 0, SIZE), undefined],
  ['zero NO_HOLE|FAST_ZERO|FUA', full, r(Cmd.WRITE_ZEROES, 0, 1, CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO | CmdFlag.FUA), undefined],
  [
    'zero FAST_ZERO not advertised',
    { ...full, transmissionFlags: ALL_TX & ~TxFlag.SEND_FAST_ZERO },
    r(Cmd.WRITE_ZEROES, 0, 1, CmdFlag.FAST_ZERO),
    'EINVAL',
  ],
  ['zero past end', full, r(Cmd.WRITE_ZEROES, SIZE, 1), 'ENOSPC'],
  ['zero length 0', full, r(Cmd.WRITE_ZEROES, 0, 0), 'EINVAL'],
  ['zero read-only', readOnly, r(Cmd.WRITE_ZEROES, 0, 1), 'EPERM'],
  ['zero not advertised', bare, r(Cmd.WRITE_ZEROES, 0, 1), 'EINVAL'],
  ['zero REQ_ONE', full, r(Cmd.WRITE_ZEROES, 0, 1, CmdFlag.REQ_ONE), 'EINVAL'],
  ['cache ok', full, r(Cmd.CACHE, 0, 1), undefined],
  ['cache read-only', readOnly, r(Cmd.CACHE, 0, 1), undefined],
  ['cache past end', full, r(Cmd.CACHE, SIZE, 1), 'EINVAL'],
  ['cache length 0', full, r(Cmd.CACHE, 0, 0), 'EINVAL'],
  ['cache not advertised', bare, r(Cmd.CACHE, 0, 1), 'EINVAL'],
  ['cache unknown flag', full, r(Cmd.CACHE, 0, 1, 0x40), 'EINVAL'],
  ['block status longer than the export', full, r(Cmd.BLOCK_STATUS, 0, 0xfffff000), 'EINVAL'],
  ['block status whole export', full, r(Cmd.BLOCK_STATUS, 0, SIZE), undefined],
  ['block status REQ_ONE', full, r(Cmd.BLOCK_STATUS, 4096, 4096, CmdFlag.REQ_ONE), undefined],
  ['block status without meta context', bare, r(Cmd.BLOCK_STATUS, 0, 1), 'EINVAL'],
  ['block status without structured replies', simple, r(Cmd.BLOCK_STATUS, 0, 1), 'EINVAL'],
  ['block status length 0', full, r(Cmd.BLOCK_STATUS, 0, 0), 'EINVAL'],
  ['block status past end', full, r(Cmd.BLOCK_STATUS, SIZE, 1), 'EINVAL'],
  ['disc', full, r(Cmd.DISC, 0, 0), undefined],
  ['resize (8) unknown', full, r(8, 0, 0), 'EINVAL'],
  ['type 0xffff unknown', full, r(0xffff, 0, 0), 'EINVAL'],
];

t.test('table', async (t) => {
  for (const [name, ctx, req, want] of rows) t.equal(validateRequest(req, ctx), want, name);
});

/** The spec's rules, written independently of protocol/validate.ts, for the exhaustive sweep. */
function expected(req: RequestMessage, ctx: ValidationContext): NbdErrnoName | undefined {
  const tx = ctx.transmissionFlags;
  const has = (f: number): boolean => (tx & f) !== 0;
  const ro = has(TxFlag.READ_ONLY);
  const known = [Cmd.READ, Cmd.WRITE, Cmd.DISC, Cmd.FLUSH, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS];
  if (!known.includes(req.type as never)) return 'EINVAL';
  const perFlag: Record<number, boolean> = {
    [CmdFlag.FUA]: has(TxFlag.SEND_FUA),
    [CmdFlag.NO_HOLE]: req.type === Cmd.WRITE_ZEROES,
    [CmdFlag.DF]: req.type === Cmd.READ && ctx.structuredReplies,
    [CmdFlag.REQ_ONE]: req.type === Cmd.BLOCK_STATUS,
    [CmdFlag.FAST_ZERO]: req.type === Cmd.WRITE_ZEROES && has(TxFlag.SEND_FAST_ZERO),
  };
  for (let bit = 1; bit <= 0x8000; bit <<= 1) {
    if (req.flags & bit && !perFlag[bit]) return 'EINVAL';
  }
  const end = req.offset + req.length;
  const pastEnd = end > ctx.size;
  switch (req.type) {
    case Cmd.DISC:
      return undefined;
    case Cmd.FLUSH:
      return has(TxFlag.SEND_FLUSH) && req.offset === 0 && req.length === 0 ? undefined : 'EINVAL';
    case Cmd.READ:
      return req.length === 0 || req.length > MAX_PAYLOAD || pastEnd ? 'EINVAL' : undefined;
    case Cmd.WRITE:
      if (ro) return 'EPERM';
      if (req.length === 0) return 'EINVAL';
      return pastEnd ? 'ENOSPC' : undefined;
    case Cmd.TRIM:
    case Cmd.WRITE_ZEROES: {
      const adv = has(req.type === Cmd.TRIM ? TxFlag.SEND_TRIM : TxFlag.SEND_WRITE_ZEROES);
      if (!adv) return ro ? 'EPERM' : 'EINVAL';
      if (req.length === 0) return 'EINVAL';
      if (pastEnd) return req.type === Cmd.TRIM ? 'EINVAL' : 'ENOSPC';
      return undefined;
    }
    case Cmd.CACHE:
      return has(TxFlag.SEND_CACHE) && req.length > 0 && !pastEnd ? undefined : 'EINVAL';
    case Cmd.BLOCK_STATUS:
      return ctx.structuredReplies && ctx.hasMetaContext && req.length > 0 && !pastEnd ? undefined : 'EINVAL';
  }
  return 'EINVAL';
}

t.test('every command × every flag combination × session × range', async (t) => {
  const contexts: [string, ValidationContext][] = [
    ['full', full],
    ['readOnly', readOnly],
    ['simple', simple],
    ['bare', bare],
    ['big', big],
    ['noFastZero', { ...full, transmissionFlags: ALL_TX & ~TxFlag.SEND_FAST_ZERO }],
  ];
  const types = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x7fff, 0xffff];
  const flagSets = [...Array(64).keys(), 0x40, 0x80, 0x100, 0x8000, 0xffff, 0x8001];
  const ranges: [number, number][] = [
    [0, 0],
    [0, 1],
    [0, 512],
    [SIZE - 1, 1],
    [SIZE - 1, 2],
    [SIZE, 0],
    [SIZE, 1],
    [2 ** 32, 4096],
    [0, MAX_PAYLOAD],
    [0, MAX_PAYLOAD + 1],
    [0, 0xffffffff],
    [2 ** 53 - 4096, 4096],
    [2 ** 64, 1],
    [512, 0],
  ];
  let checked = 0;
  const mismatches: string[] = [];
  for (const [cname, ctx] of contexts) {
    for (const type of types) {
      for (const flags of flagSets) {
        for (const [offset, length] of ranges) {
          const req = r(type, offset, length, flags);
          const got = validateRequest(req, ctx);
          const want = expected(req, ctx);
          checked++;
          if (got !== want && mismatches.length < 20) {
            mismatches.push(`${cname} type=${type} flags=0x${flags.toString(16)} off=${offset} len=${length}: got ${got} want ${want}`);
          }
        }
      }
    }
  }
  t.same(mismatches, [], `${checked} combinations`);
  t.ok(checked > 60000);
});

t.test('the sweep model is not vacuous', async (t) => {
  // Both outcomes appear for every known command in the full context.
  for (const type of [Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS]) {
    t.equal(expected(r(type, 0, type === Cmd.FLUSH ? 0 : 1), full), undefined);
    t.equal(expected(r(type, 0, 1, 0x8000), full), 'EINVAL');
  }
});

/**
 * daemon/maps: the ddrescue mapfile and badblocks list writers and their strict parsers (errors name
 * the line), range merging, and a write → parse round trip.
 */
import t from 'tap';
import { mergeRanges, regionsOf, MapFileError, type BlockMap } from '../../daemon/maps/block-map';
import { parseDdrescueMapfile, writeDdrescueMapfile } from '../../daemon/maps/ddrescue-mapfile';
import { badblocksNumbers, parseBadblocksList, writeBadblocksList } from '../../daemon/maps/badblocks-list';
import { byteOffset, mainBlock } from '../../units';

const map: BlockMap = {
  size: 10 * 4096 + 1000,
  blockSize: 4096,
  remapped: [mainBlock(1), mainBlock(2)],
  pending: [mainBlock(3), mainBlock(4), mainBlock(7), mainBlock(10)],
};

function errOf(fn: () => unknown): MapFileError {
  try {
    fn();
  } catch (err) {
    if (err instanceof MapFileError) return err;
    throw err;
  }
  throw new Error('no error');
}

t.test('regions: pending runs are bad, the last block is short', async (t) => {
  t.same(regionsOf(map), [
    { offset: 0, length: 3 * 4096, status: '+' },
    { offset: 3 * 4096, length: 2 * 4096, status: '-' },
    { offset: 5 * 4096, length: 2 * 4096, status: '+' },
    { offset: 7 * 4096, length: 4096, status: '-' },
    { offset: 8 * 4096, length: 2 * 4096, status: '+' },
    { offset: 10 * 4096, length: 1000, status: '-' },
  ]);
  t.same(regionsOf({ ...map, pending: [] }), [{ offset: 0, length: map.size, status: '+' }], 'nothing pending: one good region');
});

t.test('ddrescue: write then parse gives the pending ranges back', async (t) => {
  const text = writeDdrescueMapfile(map, { version: 'test', commandLine: 'remapd export-map', now: new Date(0) });
  const p = parseDdrescueMapfile(text, 'x.map');
  t.same(mergeRanges(p.suspect), [
    { offset: 3 * 4096, length: 2 * 4096 },
    { offset: 7 * 4096, length: 4096 },
    { offset: 10 * 4096, length: 1000 },
  ]);
  t.equal(p.end, map.size, 'covers the whole export');
  t.equal(p.bytesByStatus['-'], 3 * 4096 + 1000);
});

t.test('ddrescue: what ddrescue writes (octal/decimal numbers, passes, trimming states)', async (t) => {
  const text = [
    '# Mapfile. Created by GNU ddrescue version 1.27',
    '# current_pos  current_status  current_pass',
    '0x00020000     ?               1',
    '#      pos        size  status',
    '0x00000000  0x00010000  +',
    '0x00010000  0x00000200  -',
    '0x00010200  0x00000E00  *',
    '69632  4096  /',
    '0x00012000  0x0000E000  ?',
    '',
  ].join('\n');
  const p = parseDdrescueMapfile(text, 'r.map');
  t.same(mergeRanges(p.suspect), [{ offset: 0x10000, length: 0x2000 }], "'-', '*' and '/' are suspect, '?' is not");
  t.equal(p.bytesByStatus['?'], 0xe000);
});

t.test('ddrescue: strict, with line numbers', async (t) => {
  const head = '# c\n0 +\n';
  const cases: [string, RegExp][] = [
    ['', /no current status line/],
    ['# only comments\n', /no current status line/],
    ['0 +\n', /lists no regions/],
    ['0x0 Q\n', /^f:1: current_status "Q"/],
    [`${head}0x0 0x100 +\n0x100 0x100 x\n`, /^f:4: status "x"/],
    [`${head}0x0 0x100 +\n0x200 0x100 -\n`, /^f:4: gap: previous region ends at 256, this one starts at 512/],
    [`${head}0x0 0x200 +\n0x100 0x100 -\n`, /^f:4: region at 256 overlaps or is out of order/],
    [`${head}0x0 0x0 +\n`, /^f:3: size is zero/],
    [`${head}0x0 12ab +\n`, /^f:3: size "12ab" is not a number/],
    [`${head}0x0 0x100\n`, /^f:3: expected "pos size status"/],
    [`${head}-5 0x100 +\n`, /^f:3: pos "-5" is not a number/],
    ['0 + 1 extra\n', /^f:1: expected the current status line/],
  ];
  for (const [text, re] of cases) t.match(errOf(() => parseDdrescueMapfile(text, 'f')).message, re, JSON.stringify(text));
});

t.test('badblocks: numbers in the list block size, write and parse', async (t) => {
  t.same(badblocksNumbers({ size: 8192 * 4, blockSize: 8192, remapped: [], pending: [mainBlock(1), mainBlock(2)] }, 4096), [2, 3, 4, 5]);
  t.same(
    badblocksNumbers({ size: 4096 * 4, blockSize: 4096, remapped: [], pending: [mainBlock(1), mainBlock(2)] }, 8192),
    [0, 1],
    'bigger list blocks: each touched once',
  );
  const text = writeBadblocksList(map, 1024);
  t.equal(text.split('\n')[0], '12', 'block 3 of 4 KiB = 1 KiB block 12');
  const p = parseBadblocksList(text, 'b.txt', 1024);
  t.same(mergeRanges(p.suspect), [
    { offset: 3 * 4096, length: 2 * 4096 },
    { offset: 7 * 4096, length: 4096 },
    { offset: 10 * 4096, length: 1024 },
  ]);
  t.same(
    parseBadblocksList('  7\n\n9\n', 'b', 4096).suspect,
    [
      { offset: 7 * 4096, length: 4096 },
      { offset: 9 * 4096, length: 4096 },
    ],
    'spaces and blank lines',
  );
  t.match(errOf(() => parseBadblocksList('1\n2\nthree\n', 'b.txt', 1024)).message, /^b\.txt:3: expected one block number per line/);
  t.match(errOf(() => parseBadblocksList('1\n-2\n', 'b.txt', 1024)).message, /^b\.txt:2: /);
  t.match(errOf(() => parseBadblocksList('99999999999999999999\n', 'b.txt', 1024)).message, /^b\.txt:1: block .* too large/);
});

t.test('mergeRanges: overlap and adjacency', async (t) => {
  t.same(
    mergeRanges([
      { offset: byteOffset(10), length: 5 },
      { offset: byteOffset(0), length: 10 },
      { offset: byteOffset(12), length: 10 },
      { offset: byteOffset(30), length: 0 },
      { offset: byteOffset(40), length: 1 },
    ]),
    [
      { offset: 0, length: 22 },
      { offset: 40, length: 1 },
    ],
  );
});

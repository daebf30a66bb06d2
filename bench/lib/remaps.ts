/**
 * Making remaps for benchmarks, the way a failing disk makes them: a daemon started with a fault file
 * that fails writes on the chosen blocks, a python3-libnbd client that rewrites each block once (QD 64,
 * so commits are grouped), then empty rules. Shared by the remap and direct-io suites.
 */
import * as path from 'path';
import { spawnSync } from 'child_process';
import type { SuiteContext } from './suite';

export const WRITE_BLOCKS_PY = String.raw`
import nbd, sys, json
uri, blocks = sys.argv[1], json.load(open(sys.argv[2]))
h = nbd.NBD(); h.connect_uri(uri)
B = 4096
size = h.get_size()
wanted = set(blocks)
bufs = {}
pending = set()
i = 0
while i < len(blocks) or pending:
    while i < len(blocks) and len(pending) < 62:
        b = blocks[i]; i += 1
        # b fails on main and gets remapped; b+1 is a healthy neighbour, written too, as a real workload
        # writes mostly healthy blocks (writes that only ever fail, spread over the whole disk, would rightly
        # make remapd declare main failed). Contents are kept: only the location changes.
        for x in (b, b + 1):
            if x != b and (x in wanted or (x + 1) * B > size):
                continue
            buf = nbd.Buffer.from_bytearray(h.pread(B, x * B))
            c = h.aio_pwrite(buf, x * B)
            bufs[c] = buf
            pending.add(c)
    h.poll(-1)
    for c in [c for c in pending if h.aio_command_completed(c)]:
        pending.discard(c); bufs.pop(c, None)
h.flush()
print("ok")
`;

export async function createMetadata(main: string, spare: string, blockSize = 4096): Promise<void> {
  // compiled to dist/bench/lib/: the product modules are two levels up
  const { MetadataStore } = await import('../../metadata/store');
  const { identityFromBackend } = await import('../../metadata/fingerprint');
  const { openBackend } = await import('../../storage/file-backend');
  const mb = await openBackend(main, { readOnly: true });
  const sb = await openBackend(spare, {});
  try {
    const store = await MetadataStore.create(sb, identityFromBackend(mb), { blockSize, force: true });
    await store.close();
  } finally {
    await sb.close();
    await mb.close();
  }
}

export function remapctl(ctx: SuiteContext, control: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ctx.config.repoRoot, 'bin', 'remapd'), ...args, '--control', control], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

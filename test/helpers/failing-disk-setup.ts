/**
 * remapd serving a 32 MiB loop device over the failing FUSE file (failing-disk.ts) as main, with a
 * 16 MiB sparse spare, a control socket and 4 KiB blocks: the setup of the real-disk e2e tests that
 * switch the disk's failures while the daemon runs (remap-failing-disk, outage-hold).
 */
import { join } from 'node:path';
import { failingDisk, type FailingDisk } from './failing-disk';
import { createMetadata, type RemapSetup } from './remap-setup';
import { startServer, sparseImage, tempDir, MiB, type Server } from './index';

const B = 4096;

export async function remapdOnFailingDisk(
  t: { teardown(fn: () => unknown): void },
  o: { fill: 'random' | 'zero'; dirPrefix: string; args: string[] },
): Promise<{ s: RemapSetup; srv: Server; d: FailingDisk }> {
  const d = await failingDisk(t, { sizeBytes: 32 * MiB, fill: o.fill });
  const dir = tempDir(t, o.dirPrefix);
  const spare = join(dir, 'spare.img');
  sparseImage(spare, 16 * MiB);
  await createMetadata(d.device, spare, B);
  const s: RemapSetup = {
    dir,
    main: d.device,
    spare,
    faultsFile: '',
    control: join(dir, 'ctl.sock'),
    socket: join(dir, 'nbd.sock'),
    blockSize: B,
    size: 32 * MiB,
  };
  const srv = await startServer(t, {
    kind: 'remapd',
    image: d.device,
    dir,
    socket: s.socket,
    extraArgs: ['--spare', spare, '--control', s.control, ...o.args],
  });
  return { s, srv, d };
}

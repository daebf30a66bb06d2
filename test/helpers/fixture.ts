/** One-call setup for e2e tests: temp dir + image + running server, all cleaned up at teardown. */
import { join } from 'node:path';
import { tempDir, sparseImage, randomImage, sparseRandomImage, MiB } from './tmp';
import { startServer, type Server, type ServerOptions } from './server';

export interface Fixture {
  dir: string;
  image: string;
  server: Server;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function withServer(
  t: Teardown,
  o: Partial<Omit<ServerOptions, 'dir' | 'image'>> & { sizeBytes?: number; fill?: 'zero' | 'random' | 'sparse-random' } = {},
): Promise<Fixture> {
  const dir = tempDir(t);
  const image = join(dir, 'main.img');
  const size = o.sizeBytes ?? 64 * MiB;
  if (o.fill === 'random') randomImage(image, size);
  else if (o.fill === 'sparse-random') sparseRandomImage(image, size);
  else sparseImage(image, size);
  const server = await startServer(t, { ...o, dir, image });
  return { dir, image, server };
}

/** Server log tail for assertion diagnostics. */
export function logTail(server: Server, chars = 4000): string {
  const l = server.log();
  return l.length > chars ? '…' + l.slice(-chars) : l;
}

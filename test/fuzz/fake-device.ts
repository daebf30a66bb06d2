/** In-memory BlockDevice / ExportCatalog fakes for handshake tests and the codec fuzzer (no I/O). */
import type {
  BlockDevice,
  BlockSizeConstraints,
  DeviceCapabilities,
  ExportCatalog,
  ExportEntry,
  Extent,
} from '../../protocol/block-device';

export const FULL_CAPS: DeviceCapabilities = {
  writable: true,
  flush: true,
  fua: 'native',
  trim: true,
  zero: true,
  fastZero: true,
  cache: true,
  extents: true,
  multiConn: true,
  rotational: false,
};

export function fakeDevice(
  size: number,
  caps: Partial<DeviceCapabilities> = {},
  blockSize: BlockSizeConstraints = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 },
): BlockDevice {
  const capabilities = { ...FULL_CAPS, ...caps };
  return {
    size,
    capabilities,
    blockSize,
    async read(_o: number, length: number, target: Buffer, at: number) {
      target.fill(0, at, at + length);
    },
    async write() {},
    async flush() {},
    async trim() {},
    async zero() {},
    async cache() {},
    async extents(_o: number, length: number): Promise<Extent[]> {
      return [{ length, flags: 0 }];
    },
  };
}

export function fakeCatalog(entries: ExportEntry[], defaultName = entries[0]?.name): ExportCatalog {
  return {
    lookup(name: string) {
      if (name === '') name = defaultName ?? '';
      return entries.find((e) => e.name === name);
    },
    list() {
      return entries.slice();
    },
  };
}

/** Two exports: 'disk' (64 MiB, writable, description) and 'ro' (1 GiB + 4 KiB, read-only, no description). */
export function standardCatalog(): { catalog: ExportCatalog; disk: ExportEntry; ro: ExportEntry } {
  const disk: ExportEntry = {
    name: 'disk',
    description: 'test disk',
    device: fakeDevice(64 * 1024 * 1024),
    readOnly: false,
  };
  const ro: ExportEntry = {
    name: 'ro',
    description: '',
    device: fakeDevice(2 ** 30 + 4096, {}, { minimum: 512, preferred: 4096, maximum: 0xffffffff }),
    readOnly: true,
  };
  return { catalog: fakeCatalog([disk, ro]), disk, ro };
}

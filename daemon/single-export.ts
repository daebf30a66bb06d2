/** The catalog of a daemon that serves one device: reachable by its name and as the default export. */
import type { BlockDevice, ExportCatalog, ExportEntry } from '../protocol/block-device';

export class SingleExportCatalog implements ExportCatalog {
  readonly entry: ExportEntry;

  constructor(name: string, device: BlockDevice, readOnly: boolean) {
    this.entry = { name, description: device.description ?? name, device, readOnly };
  }

  lookup(name: string): ExportEntry | undefined {
    return name === '' || name === this.entry.name ? this.entry : undefined;
  }

  list(): ExportEntry[] {
    return [this.entry];
  }
}

/**
 * Test-only Backend over a real file (used by the metadata tests until storage/file-backend.ts lands).
 * Plain positional I/O with fdatasync; trim/zero write zeroes; extents reports no holes.
 */
import * as fs from 'fs';
import type { Backend } from '../../storage/backend';

export class TestFileBackend implements Backend {
  readonly kind = 'file' as const;
  readonly stableIds: { serial?: string; wwn?: string };
  readonly canPunchHoles = false;
  readonly canReportHoles = false;
  writes = 0;
  syncs = 0;

  private constructor(
    readonly path: string,
    private readonly fh: fs.promises.FileHandle,
    readonly size: number,
    readonly logicalBlockSize: number,
    readonly readOnly: boolean,
    ids: { serial?: string; wwn?: string },
  ) {
    this.stableIds = ids;
  }

  /** Open (creating and sizing when `size` is given) a file as a backend. */
  static async open(
    path: string,
    o: { size?: number; logicalBlockSize?: number; readOnly?: boolean; serial?: string; wwn?: string } = {},
  ): Promise<TestFileBackend> {
    if (o.size !== undefined) {
      const f = await fs.promises.open(path, 'a');
      await f.truncate(o.size);
      await f.close();
    }
    const fh = await fs.promises.open(path, o.readOnly ? 'r' : 'r+');
    const st = await fh.stat();
    const ids: { serial?: string; wwn?: string } = {};
    if (o.serial) ids.serial = o.serial;
    if (o.wwn) ids.wwn = o.wwn;
    return new TestFileBackend(path, fh, st.size, o.logicalBlockSize ?? 512, !!o.readOnly, ids);
  }

  async read(offset: number, length: number, target: Buffer, targetOffset: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(target, targetOffset + done, length - done, offset + done);
      if (bytesRead === 0) {
        target.fill(0, targetOffset + done, targetOffset + length);
        return;
      }
      done += bytesRead;
    }
  }

  async write(offset: number, source: Buffer, sourceOffset = 0, length = source.length - sourceOffset): Promise<void> {
    if (this.readOnly) throw new Error('read-only');
    if (offset + length > this.size) throw new Error(`write beyond end: ${offset}+${length} > ${this.size}`);
    this.writes++;
    let done = 0;
    while (done < length) {
      const { bytesWritten } = await this.fh.write(source, sourceOffset + done, length - done, offset + done);
      done += bytesWritten;
    }
  }

  async sync(): Promise<void> {
    this.syncs++;
    await this.fh.datasync();
  }
  async trim(offset: number, length: number): Promise<void> {
    await this.zero(offset, length, false);
  }
  async zero(offset: number, length: number, _noHole = false): Promise<void> {
    const z = Buffer.alloc(Math.min(length, 1 << 20));
    for (let o = 0; o < length; o += z.length) await this.write(offset + o, z, 0, Math.min(z.length, length - o));
  }
  async extents(_offset: number, length: number): Promise<{ length: number; hole: boolean }[]> {
    return [{ length, hole: false }];
  }
  async close(): Promise<void> {
    await this.fh.close();
  }
}

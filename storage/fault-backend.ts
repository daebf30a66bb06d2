/**
 * A Backend wrapper that injects the failures and delays described by FaultRules (docs/FAULTS.md).
 * Reads match "read" rules; write, trim and zero match "write" rules; sync, extents and close pass
 * through. Rules can be swapped at runtime with setRules(); operations already past their lookup
 * keep the rules they saw.
 */
import type { ByteOffset } from '../units';
import { Backend, BackendError, BackendKind } from './backend';
import { FaultRules } from './faults';
import type { LaneStats } from './io-lane';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class FaultInjectingBackend implements Backend {
  private rules: FaultRules;

  constructor(
    readonly inner: Backend,
    rules: FaultRules,
  ) {
    this.rules = rules;
  }

  setRules(rules: FaultRules): void {
    this.rules = rules;
  }

  getRules(): FaultRules {
    return this.rules;
  }

  get path(): string {
    return this.inner.path;
  }
  get kind(): BackendKind {
    return this.inner.kind;
  }
  get size(): number {
    return this.inner.size;
  }
  get logicalBlockSize(): number {
    return this.inner.logicalBlockSize;
  }
  get stableIds(): { readonly serial?: string; readonly wwn?: string } {
    return this.inner.stableIds;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get canPunchHoles(): boolean {
    return this.inner.canPunchHoles;
  }
  get canReportHoles(): boolean {
    return this.inner.canReportHoles;
  }
  get direct(): boolean | undefined {
    return this.inner.direct;
  }
  ioStats(): LaneStats | undefined {
    return this.inner.ioStats?.();
  }

  /** Resolves when the operation may proceed; rejects with the injected error. */
  private gate(op: 'read' | 'write', what: string, offset: number, length: number): Promise<void> | undefined {
    const m = this.rules.match(op, offset, length);
    if (m.error === undefined && m.delayMs === 0) return undefined; // fast path: no promise
    const fail = (): never => {
      const at = m.failOffset ?? offset;
      throw new BackendError(
        m.error as string,
        `${what} ${this.inner.path} at offset ${at}: injected ${m.error} (fault rule ${m.rule} of ${this.rules.source})`,
        at,
      );
    };
    if (m.delayMs === 0) return Promise.resolve().then(fail);
    return sleep(m.delayMs).then(() => {
      if (m.error !== undefined) fail();
    });
  }

  read(offset: ByteOffset, length: number, target: Buffer, targetOffset: number): Promise<void> {
    const g = this.gate('read', 'read', offset, length);
    if (!g) return this.inner.read(offset, length, target, targetOffset);
    return g.then(() => this.inner.read(offset, length, target, targetOffset));
  }

  write(offset: ByteOffset, source: Buffer, sourceOffset = 0, length?: number): Promise<void> {
    const len = length ?? source.length - sourceOffset;
    const g = this.gate('write', 'write', offset, len);
    if (!g) return this.inner.write(offset, source, sourceOffset, len);
    return g.then(() => this.inner.write(offset, source, sourceOffset, len));
  }

  sync(): Promise<void> {
    return this.inner.sync();
  }

  trim(offset: ByteOffset, length: number): Promise<void> {
    const g = this.gate('write', 'trim', offset, length);
    if (!g) return this.inner.trim(offset, length);
    return g.then(() => this.inner.trim(offset, length));
  }

  zero(offset: ByteOffset, length: number, noHole: boolean): Promise<void> {
    const g = this.gate('write', 'zero', offset, length);
    if (!g) return this.inner.zero(offset, length, noHole);
    return g.then(() => this.inner.zero(offset, length, noHole));
  }

  extents(offset: ByteOffset, length: number): Promise<{ length: number; hole: boolean }[]> {
    return this.inner.extents(offset, length);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

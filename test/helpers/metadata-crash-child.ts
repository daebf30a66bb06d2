/**
 * Child process of the metadata crash test: opens the spare and commits in a loop (8 concurrent
 * writers, so commits are batched), logging each commit to argv[3] only after it resolved. The parent
 * SIGKILLs it at a random moment. Log lines: "A main spare" (add durable), "r main" (remove issued),
 * "R main" (remove durable).
 */
import * as fs from 'fs';
import { MetadataStore } from '../../metadata/store';
import { TestFileBackend } from './metadata-file-spare';
import { byteOffset, mainBlock } from '../../units';

async function main(): Promise<void> {
  const [spareFile, logFile] = process.argv.slice(2);
  const log = fs.openSync(logFile, 'a');
  const spare = await TestFileBackend.open(spareFile);
  const s = await MetadataStore.open(spare);
  const busy = new Set<number>();
  const mains = () => s.mainBlocks;
  const worker = async (): Promise<void> => {
    for (;;) {
      const r = Math.random();
      if (r < 0.25 && s.remapCount > 50) {
        const it = s.entries();
        let e = it.next().value;
        for (let i = Math.floor(Math.random() * 20); i > 0 && e; i--) e = it.next().value;
        if (!e || busy.has(e.mainBlock)) continue;
        busy.add(e.mainBlock);
        fs.writeSync(log, `r ${e.mainBlock}\n`);
        await s.commit({ remove: [e.mainBlock] });
        fs.writeSync(log, `R ${e.mainBlock}\n`);
        busy.delete(e.mainBlock);
      } else if (r < 0.3) {
        await s.commit({ pendingAdd: [mainBlock(Math.floor(Math.random() * mains()))] });
        await s.saveScanState({
          cursorOffset: byteOffset(Math.floor(Math.random() * 1e9)),
          passesCompleted: 1,
          lastFullScanAt: Date.now(),
        });
      } else {
        const m = Math.floor(Math.random() * mains());
        if (busy.has(m) || s.lookup(mainBlock(m))) continue;
        const b = s.allocateSpareBlock();
        if (b === undefined) continue;
        busy.add(m);
        await s.commit({ add: [{ mainBlock: mainBlock(m), spareBlock: b, reason: 'write-error', createdAt: Date.now() }] });
        fs.writeSync(log, `A ${m} ${b}\n`);
        busy.delete(m);
      }
    }
  };
  process.stdout.write('ready\n');
  await Promise.all(Array.from({ length: 8 }, worker));
}

main().catch((e) => {
  process.stderr.write(`child: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});

/** Worker entry for runCodecFuzzInWorker. */
import { parentPort, workerData } from 'node:worker_threads';
import { runCodecFuzz, type CodecFuzzOptions } from './codec-fuzz';

const result = runCodecFuzz(workerData as CodecFuzzOptions);
parentPort!.postMessage(result);

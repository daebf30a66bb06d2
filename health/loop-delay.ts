/** Event-loop delay of the daemon's main thread (perf_hooks), for the scanner benchmark and status. */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

export interface LoopDelay {
  /** Milliseconds. */
  p50: number;
  p99: number;
  max: number;
  mean: number;
  samples: number;
}

export class LoopDelayMonitor {
  private readonly h: IntervalHistogram;

  constructor(resolutionMs = 10) {
    this.h = monitorEventLoopDelay({ resolution: resolutionMs });
    this.h.enable();
  }

  read(reset = false): LoopDelay {
    const ms = (ns: number): number => +(ns / 1e6).toFixed(3);
    const out = {
      p50: ms(this.h.percentile(50)),
      p99: ms(this.h.percentile(99)),
      max: ms(this.h.max),
      mean: ms(Number.isNaN(this.h.mean) ? 0 : this.h.mean),
      samples: this.h.count,
    };
    if (reset) this.h.reset();
    return out;
  }

  close(): void {
    this.h.disable();
  }
}

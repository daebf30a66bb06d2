/**
 * Token bucket in bytes: refills at `rate` bytes/s up to `capacity`. take(n) spends n bytes and
 * returns how long (ms) the caller must wait before doing the I/O so that the long-run rate stays
 * at `rate`. The bucket may go into debt (a chunk larger than the capacity is allowed; the wait
 * covers the debt). The clock is injectable for tests.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private rate: number,
    private capacity: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(rate > 0) || !(capacity > 0)) throw new RangeError('rate and capacity must be positive');
    this.tokens = capacity;
    this.last = now();
  }

  get bytesPerSecond(): number {
    return this.rate;
  }

  setRate(rate: number, capacity = this.capacity): void {
    if (!(rate > 0) || !(capacity > 0)) throw new RangeError('rate and capacity must be positive');
    this.refill();
    this.rate = rate;
    this.capacity = capacity;
    if (this.tokens > capacity) this.tokens = capacity;
  }

  private refill(): void {
    const t = this.now();
    const dt = Math.max(0, t - this.last);
    this.last = t;
    this.tokens = Math.min(this.capacity, this.tokens + (dt * this.rate) / 1000);
  }

  /** Spends n bytes; returns the wait in ms (0 when the bucket had them). */
  take(n: number): number {
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}

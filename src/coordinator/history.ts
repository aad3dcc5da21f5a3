export interface HistoryPoint {
  step: number;
  dLoss: number;
  gLoss: number;
  dReal: number;
  dFake: number;
}

/**
 * Per-step training curves for the status page, in bounded memory: when
 * full, every other point is dropped and only every 2nd (4th, …) step is
 * kept from then on, so a run of any length keeps at most `capacity` points
 * spread over its whole length.
 */
export class History {
  private points: HistoryPoint[] = [];
  private stride = 1;

  constructor(private readonly capacity = 2000) {}

  add(p: HistoryPoint): void {
    if (p.step % this.stride !== 0) return;
    this.points.push(p);
    if (this.points.length > this.capacity) {
      this.stride *= 2;
      this.points = this.points.filter((q) => q.step % this.stride === 0);
    }
  }

  toJSON(): { stride: number; points: HistoryPoint[] } {
    return { stride: this.stride, points: this.points };
  }
}

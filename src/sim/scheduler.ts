/**
 * The simulated module's event loop: timers and posted jobs that all die
 * together when the module resets (a reset must not leave old callbacks running).
 */
export class Scheduler {
  private timers = new Set<NodeJS.Timeout>();
  private immediates = new Set<NodeJS.Immediate>();
  private stopped = false;

  /** Run `fn` soon (next macrotask), unless the scheduler is stopped first. */
  post(fn: () => void): void {
    if (this.stopped) return;
    const h = setImmediate(() => {
      this.immediates.delete(h);
      if (!this.stopped) fn();
    });
    this.immediates.add(h);
  }

  /** Run `fn` after `ms` milliseconds; returns a cancel function. */
  after(ms: number, fn: () => void): () => void {
    if (this.stopped) return () => {};
    const h = setTimeout(() => {
      this.timers.delete(h);
      if (!this.stopped) fn();
    }, Math.max(0, ms));
    this.timers.add(h);
    return () => {
      clearTimeout(h);
      this.timers.delete(h);
    };
  }

  /** Cancel everything; later post/after calls do nothing. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    for (const i of this.immediates) clearImmediate(i);
    this.timers.clear();
    this.immediates.clear();
  }

  get isStopped(): boolean {
    return this.stopped;
  }
}

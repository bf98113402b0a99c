/**
 * The simulated module's event loop: timers and posted jobs that all die
 * together when the module resets (a reset must not leave old callbacks running).
 *
 * A busy VM: {@link Scheduler.busyUntil} (a `performance.now()` time) models firmware whose
 * Lua VM is held by a blocking call (NodeMCU's `uart.write` spinning on the TX FIFO): a job or
 * timer that comes due before that time waits, in order, until the VM is free. Node's own
 * event loop is never blocked.
 */
import { performance } from 'node:perf_hooks';

export class Scheduler {
  private timers = new Set<NodeJS.Timeout>();
  private immediates = new Set<NodeJS.Immediate>();
  private stopped = false;
  /** Until this `performance.now()` time the VM is busy: due jobs wait (in order). @default 0 */
  busyUntil = 0;
  private deferred: Array<() => void> = [];
  private flushTimer?: NodeJS.Timeout;
  private flushing = false;

  /** Longest single hold of the VM by a blocking call ({@link hold}) in this boot (ms). */
  longestHoldMs = 0;

  /**
   * A blocking call (a UART write waiting for room in the TX FIFO or cache) holds the VM until
   * `until` (a `performance.now()` time); recorded in {@link longestHoldMs} as the time from
   * `since`, when the call began (the module's VM is held from its call on: a stall of Node
   * between the call and this record, on a busy machine, is not the module's and does not shorten
   * the hold recorded). @default since now
   */
  hold(until: number, since = performance.now()): void {
    const ms = until - since;
    if (ms > this.longestHoldMs) this.longestHoldMs = ms;
    if (until > this.busyUntil) this.busyUntil = until;
  }

  /** True while the VM is held by a blocking call. */
  get busy(): boolean {
    return performance.now() < this.busyUntil;
  }

  /** True when a call into the VM must wait (busy, or earlier calls are still waiting). */
  get mustWait(): boolean {
    return this.busy || (this.deferred.length > 0 && !this.flushing);
  }

  /** Run `fn` now if the VM is free, else when it is (after the jobs already waiting). */
  whenFree(fn: () => void): void {
    if (this.stopped) return;
    if (!this.busy && (this.deferred.length === 0 || this.flushing)) fn();
    else {
      this.deferred.push(fn);
      this.armFlush();
    }
  }

  private armFlush(): void {
    if (this.flushTimer || this.stopped) return;
    const wait = Math.max(1, Math.ceil(this.busyUntil - performance.now()));
    const h = setTimeout(() => {
      this.timers.delete(h);
      this.flushTimer = undefined;
      while (this.deferred.length > 0 && !this.stopped) {
        if (this.busy) break;
        this.flushing = true;
        try {
          this.deferred.shift()!();
        } finally {
          this.flushing = false;
        }
      }
      if (this.deferred.length > 0) this.armFlush();
    }, wait);
    this.flushTimer = h;
    this.timers.add(h);
  }

  /** Run `fn` soon (next macrotask), unless the scheduler is stopped first. */
  post(fn: () => void): void {
    if (this.stopped) return;
    const h = setImmediate(() => {
      this.immediates.delete(h);
      if (!this.stopped) this.whenFree(fn);
    });
    this.immediates.add(h);
  }

  /** Run `fn` after `ms` milliseconds; returns a cancel function. */
  after(ms: number, fn: () => void): () => void {
    if (this.stopped) return () => {};
    let cancelled = false;
    const h = setTimeout(() => {
      this.timers.delete(h);
      if (!this.stopped && !cancelled) this.whenFree(() => !cancelled && fn());
    }, Math.max(0, ms));
    this.timers.add(h);
    return () => {
      cancelled = true;
      clearTimeout(h);
      this.timers.delete(h);
    };
  }

  /**
   * A timer Lua code arms (`tmr:alarm`, `rtos.timer_start`): `ms` counts from when the VM is free.
   * On the chip, Lua code after a blocking call (NodeMCU's `uart.write` spinning on the TX FIFO)
   * runs only once that call let go, so its timers start then; here that code runs at once, with
   * {@link busyUntil} ahead. Returns a cancel function.
   */
  afterFromVm(ms: number, fn: () => void): () => void {
    return this.after(Math.max(0, this.busyUntil - performance.now()) + ms, fn);
  }

  /** Cancel everything; later post/after calls do nothing. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    for (const i of this.immediates) clearImmediate(i);
    this.timers.clear();
    this.immediates.clear();
    this.deferred = [];
    this.flushTimer = undefined;
  }

  get isStopped(): boolean {
    return this.stopped;
  }
}

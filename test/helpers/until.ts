/**
 * Waiting for asynchronous conditions in tests without fixed sleeps.
 *
 * A test that sleeps a fixed time and then asserts breaks when the machine is busy (the
 * event loop, the child process or the kernel is simply late). Poll for the condition
 * instead, with a deadline generous enough that only a real failure reaches it: on a quiet
 * machine the wait ends as soon as the condition holds, so the test is also faster.
 *
 * Fixed sleeps stay right only where the test asserts that something does NOT happen within
 * a while (a busy machine can then only make the check weaker, never fail it wrongly) or
 * where the sleep is a lower bound the firmware guarantees.
 */

/** Default deadline of {@link until}, in ms: generous, so a loaded machine does not fail a test. */
export const UNTIL_TIMEOUT_MS = 20000;

/** Options of {@link until}. */
export interface UntilOptions {
  /** Give up after this many ms (default {@link UNTIL_TIMEOUT_MS}, 20000). */
  timeoutMs?: number;
  /** Poll every this many ms (default 5). */
  stepMs?: number;
  /** Extra state for the failure message, computed only when the deadline passes. */
  detail?: () => string;
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `pred` (sync or async) until it returns true.
 * @param pred the condition; an exception thrown by it fails the wait at once
 * @param what what is awaited, for the failure message
 * @throws Error `timeout after N ms waiting for <what>` (plus `detail()`) once the deadline passed
 */
export async function until(pred: () => boolean | Promise<boolean>, what: string, opts: UntilOptions = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? UNTIL_TIMEOUT_MS;
  const stepMs = opts.stepMs ?? 5;
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`timeout after ${timeoutMs} ms waiting for ${what}${opts.detail ? `; ${opts.detail()}` : ''}`);
    await sleep(stepMs);
  }
}

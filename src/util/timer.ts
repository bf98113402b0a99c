/**
 * The one rule for a delay given to a Node timer, shared by every layer that checks a
 * timeout before it starts one (the RPC client, the facades' per-call options, the stream
 * layer, the CLI, bench files).
 */

/**
 * Longest delay a Node timer honours (ms): 2^31-1. A longer one, `Infinity` included, fires
 * after 1 ms with a TimeoutOverflowWarning (Node's lib/internal/timers.js), so it is refused.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** True for a delay a Node timer honours: a finite number of milliseconds, > 0 and at most {@link MAX_TIMER_MS}. */
export function isTimerMs(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= MAX_TIMER_MS;
}

/**
 * Pseudo-terminals for tests on a busy machine.
 *
 * `createPty` gives its python3 relay 5000 ms (PTY_START_TIMEOUT_MS) to report the pty; with
 * the cores busy (or several relays starting at once) python3 can take longer, and the error
 * then wrongly suggests python3 is missing. Tests pass {@link TEST_PTY_START_MS} instead.
 */
import { createPty, type CreatePtyOptions, type PtyEndpoint } from '../../src/transport/pty.js';
import type { SimulatedModule } from '../../src/sim/module.js';

/** How long a test lets the pty relay start, ms: 30000 (a missing python3 still fails at once). */
export const TEST_PTY_START_MS = 30000;

/** `createPty(opts)` with a start timeout of {@link TEST_PTY_START_MS} unless `opts` sets one. */
export function testPty(opts: CreatePtyOptions = {}): Promise<PtyEndpoint> {
  return createPty({ startTimeoutMs: TEST_PTY_START_MS, ...opts });
}

/**
 * What `sim.servePty(link)` does (the simulated UART on a new pty) with the patient start
 * timeout. `path` is `link` when given, else the pty's path; call `close()` after `sim.stop()`
 * (the simulator does not know this pty).
 */
export async function servePty(sim: SimulatedModule, link?: string): Promise<{ path: string; close: () => Promise<void> }> {
  const pty = await testPty(link ? { link } : {});
  sim.wire.attach(pty);
  return { path: link ?? pty.path, close: () => pty.close() };
}

/**
 * Clean module sessions, every family: what the agent released for a session
 * (hello `released`), releasing every object the agent made (`agent.release_all`,
 * `tether reset-sockets`) and rebooting the module (`tether reboot`).
 *
 * Ownership (docs/protocol.md section 3, "Session ownership"): each socket, ctrl, server or
 * timer the agent makes for a host belongs to that host's session. When a new session opens
 * (another host, or the same host after a crash) the agent releases what the previous one
 * left, with the family's own calls (LuatOS `socket.close` + `socket.release`; Luat
 * `sock_close`, then `sock_destroy` on CLOSE_CNF; NodeMCU `close` and the last reference
 * dropped), and says how many in hello's `released`.
 */
import { filter, type Subscription } from 'rxjs';
import type { RpcClient } from '../rpc/client.js';
import { toNumber } from '../codec/values.js';
import { InvalidArgumentError, TetherError, TimeoutError, isTetherError } from '../errors.js';
import { isTimerMs } from '../util/timer.js';

/** The agent function that reboots the module, by family (all off unless `TETHER_ALLOW_RESTART = true`). */
export const REBOOT_FUNCTIONS: Readonly<Record<string, string>> = Object.freeze({
  /** LuatOS `rtos.reboot()` (falls back to `pm.reboot()`). */
  luatos: 'rtos.reboot',
  /** Luat LuaTask `sys.restart(reason)` (falls back to `rtos.restart()`). */
  luat: 'sys.restart',
  /** NodeMCU `node.restart()`. */
  nodemcu: 'node.restart',
});

/** Default of {@link RebootOptions.timeoutMs}: time for the module to reboot and the new handshake (ms). */
export const DEFAULT_REBOOT_TIMEOUT_MS = 30000;

/** Options of {@link rebootModule}. */
export interface RebootOptions {
  /** Time allowed from the call until the new boot's handshake is done (ms, > 0). @default 30000 */
  timeoutMs?: number;
}

/** What {@link rebootModule} saw. */
export interface RebootResult {
  /** The agent function called (`rtos.reboot`, `sys.restart` or `node.restart`). */
  fn: string;
  /** Boot epoch before the reboot. */
  previousEpoch: number;
  /** Boot epoch of the new boot. */
  epoch: number;
  /** Time from the call until the new boot answered (ms). */
  ms: number;
}

/**
 * The number of module objects the agent released when this session opened: what an earlier
 * session (a crashed host, another host) left behind. 0 for agents without session ownership.
 */
export function releasedAtOpen(rpc: RpcClient): number {
  return toNumber(rpc.hello.raw.get('released')) ?? 0;
}

/**
 * Release every object the agent made for any host session (sockets, ctrls, servers), with
 * the family's own calls, and return how many (`agent.release_all`). Handles the host holds
 * become stale (calls on them fail with `REMOTE` BADHANDLE).
 * @param opts.timeoutMs per-call timeout (ms). @default the client's
 * @throws TetherError `UNSUPPORTED` (an agent without session ownership), `TIMEOUT`, `RESET`,
 *   `DISCONNECTED`, `CLOSED`.
 */
export async function releaseAll(rpc: RpcClient, opts: { timeoutMs?: number } = {}): Promise<number> {
  const [n] = await rpc.call('agent.release_all', [], opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
  return toNumber(n) ?? 0;
}

/**
 * Reboot the module with its family's restart call ({@link REBOOT_FUNCTIONS}) and wait for the
 * new boot: resolves once the RPC client saw the new boot epoch and the new handshake answered.
 * The agent refuses unless its settings say `TETHER_ALLOW_RESTART = true` (default off): the
 * refusal is a `REMOTE` error whose message names the setting.
 * @throws InvalidArgumentError (bad `timeoutMs`, unknown family), TetherError `UNSUPPORTED` (the
 *   agent lacks the function), `REMOTE` (refused), `TIMEOUT` (no new boot within `timeoutMs`),
 *   `DISCONNECTED`, `CLOSED`.
 */
export async function rebootModule(rpc: RpcClient, opts: RebootOptions = {}): Promise<RebootResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_REBOOT_TIMEOUT_MS;
  if (!isTimerMs(timeoutMs)) {
    throw new InvalidArgumentError(`timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`);
  }
  const family = rpc.hello.family;
  const fn = Object.hasOwn(REBOOT_FUNCTIONS, family) ? REBOOT_FUNCTIONS[family] : undefined;
  if (fn === undefined) throw new InvalidArgumentError(`no reboot call known for family "${family}"`);
  if (!rpc.hello.caps.includes(fn)) {
    throw new TetherError('UNSUPPORTED', `${fn} is not exposed by this agent (update it: tether flash / tether agent)`, { context: { fn } });
  }
  const previousEpoch = rpc.currentEpoch;
  const t0 = performance.now();
  const left = () => Math.max(1, timeoutMs - (performance.now() - t0));
  // watch for the new boot before the call: the B frame may come before the reply
  let sub: Subscription | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const booted = new Promise<number>((resolve, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${fn}: the module did not boot again within ${timeoutMs} ms`, { fn, ms: timeoutMs })), timeoutMs);
    sub = rpc.resets.pipe(filter((r) => r.epoch !== previousEpoch)).subscribe({
      next: (r) => resolve(r.epoch),
      error: (e: unknown) => reject(e),
      complete: () => reject(new TetherError('DISCONNECTED', `${fn}: the session ended before the module booted again`, { context: { fn } })),
    });
  });
  booted.catch(() => undefined); // settled below; never an unhandled rejection
  let epoch: number;
  try {
    try {
      await rpc.call(fn, [], { timeoutMs: left() });
    } catch (e) {
      // the reset can overtake the reply: the call then fails with RESET, which is the success
      if (!isTetherError(e, 'RESET')) throw e;
    }
    epoch = await booted;
  } finally {
    sub?.unsubscribe();
    clearTimeout(timer);
  }
  await rpc.call('agent.ping', [], { timeoutMs: left() }); // waits for the new handshake
  return { fn, previousEpoch, epoch, ms: Math.round(performance.now() - t0) };
}

/**
 * Errors of the stream layer. Every error a {@link SocketStream}, server or UDP socket emits is a
 * {@link TetherError} with a stable `code`:
 * - `RESET`: the module restarted; its sockets are gone.
 * - `REMOTE`: the agent or firmware raised an error for a call (a NodeMCU `NetError` is one).
 * - `TIMEOUT`: no connect outcome (or no free socket, with the queue option) in time.
 * - `SOCKET`: the firmware reported a socket failure; {@link SocketError.reason} names it the way
 *   `net.Socket` errors do (`ECONNREFUSED`, `ECONNRESET`, ...), see {@link SocketErrorReason}.
 * - `UNSUPPORTED`: the family's firmware cannot do it (Luat has no listening socket, NodeMCU `net` no TLS).
 * - `INVALID_ARGUMENT`: a wrong argument, thrown synchronously before anything is sent.
 * - `DISCONNECTED`: the link to the module closed.
 */
import { TetherError } from '../errors.js';

/**
 * The Node-style name of a socket failure, mapped per firmware:
 * - `ECONNREFUSED`: the connect failed. LuatOS `ON_LINE` with param -1 (refused, unreachable or a
 *   DNS failure: the firmware does not tell them apart); Luat `CONN_CNF` with a result other than 0;
 *   NodeMCU "reconnection"/"disconnection" err -9 (`ERR_RST`: refused or reset) while connecting.
 * - `ECONNABORTED`: NodeMCU err -8 (`ERR_ABRT`: aborted, the SYN timed out) while connecting.
 * - `ENOTFOUND`: Luat `sock_conn_ext` returned -2 (DNS failed). Other families report a DNS
 *   failure as `ECONNREFUSED` (LuatOS) or a `TIMEOUT` (NodeMCU: no callback at all).
 * - `ECONNRESET`: an established connection ended with an error: NodeMCU "reconnection" /
 *   "disconnection" with a non-zero err; LuatOS `TX_OK` -1.
 * - `EMFILE`: the module has no free socket: LuatOS `socket.create` returned nil (8 sockets by
 *   default), Luat `sock_conn_ext` < 0 / `sock_conn` nil (10 slots), NodeMCU "out of memory" from
 *   `net.createConnection` / `connect` (its limit is the heap). See the `queue` option.
 * - `EPIPE`: a write after the connection ended.
 * - `ESOCKET`: any other firmware-reported failure (send refused, SEND_CNF failure...).
 */
export type SocketErrorReason = 'ECONNREFUSED' | 'ECONNABORTED' | 'ENOTFOUND' | 'ECONNRESET' | 'EMFILE' | 'EPIPE' | 'ESOCKET';

const REASONS: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNABORTED', 'ENOTFOUND', 'ECONNRESET', 'EMFILE', 'EPIPE', 'ESOCKET']);

/** A socket failure the firmware reported (code `SOCKET`); `reason` is its Node-style name. */
export class SocketError extends TetherError {
  /** Node-style name of the failure, see {@link SocketErrorReason}. */
  readonly reason: SocketErrorReason;
  /** Same as {@link reason}, under the name Node's `net` errors use for it. */
  readonly errno: SocketErrorReason;
  constructor(reason: SocketErrorReason, message: string, options?: { cause?: unknown; context?: Record<string, unknown> }) {
    super('SOCKET', message, { cause: options?.cause, context: { ...options?.context, reason } });
    this.name = 'SocketError';
    this.reason = reason;
    this.errno = reason;
  }
}

/**
 * Normalise an error of a connection helper or facade: a `SOCKET` TetherError whose context names
 * a reason becomes a {@link SocketError} with it (the helpers in src/streams/drivers/<family>-conn.ts
 * put `context.reason` on the failures they recognise); other TetherErrors pass unchanged; anything
 * else becomes a `SocketError` `ESOCKET`.
 */
export function toStreamError(e: unknown, fallback: SocketErrorReason = 'ESOCKET'): TetherError {
  if (e instanceof SocketError) return e;
  if (e instanceof TetherError) {
    if (e.code !== 'SOCKET') return e;
    const r = e.context?.reason;
    return new SocketError(typeof r === 'string' && REASONS.has(r) ? (r as SocketErrorReason) : fallback, e.message, { cause: e, context: e.context });
  }
  return new SocketError(fallback, e instanceof Error ? e.message : String(e), { cause: e });
}

/** True when `e` is a {@link SocketError}, with `reason` when given. */
export function isSocketError(e: unknown, reason?: SocketErrorReason): e is SocketError {
  return e instanceof SocketError && (reason === undefined || e.reason === reason);
}

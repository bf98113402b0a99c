/**
 * Typed errors shared by every layer. Each error carries a stable string `code`
 * so scripts (and `--json` output) can branch on it without parsing messages.
 *
 * Codes:
 * - `INVALID_ARGUMENT`: a caller passed a wrong argument; raised before anything is sent.
 * - `TIMEOUT`: a call got no reply within its timeout (ms in `context.ms`).
 * - `ABORTED`: the caller's AbortSignal fired before the reply arrived.
 * - `RESET`: the module restarted (new boot epoch) while the call was in flight.
 * - `DISCONNECTED`: the transport closed; pending calls fail with this.
 * - `REMOTE`: the agent answered with an error frame (`remoteCode`, Lua message).
 * - `PROTOCOL`: the peer spoke the protocol wrongly (bad hello, unexpected frame).
 * - `VERSION_MISMATCH`: the agent speaks another protocol major version.
 * - `HANDSHAKE`: no usable hello answer within the handshake timeout.
 * - `UNSUPPORTED`: the agent does not expose the function (not in hello capabilities).
 * - `TOO_LARGE`: a request exceeds the agent's advertised message limit.
 * - `TRANSPORT`: opening or writing the transport failed (no such port, refused...).
 * - `CLOSED`: the object (client, socket helper) was already closed.
 * - `SOCKET`: a socket helper saw the firmware report failure (connect refused, tx failed...).
 */
export type TetherErrorCode =
  | 'INVALID_ARGUMENT'
  | 'TIMEOUT'
  | 'ABORTED'
  | 'RESET'
  | 'DISCONNECTED'
  | 'REMOTE'
  | 'PROTOCOL'
  | 'VERSION_MISMATCH'
  | 'HANDSHAKE'
  | 'UNSUPPORTED'
  | 'TOO_LARGE'
  | 'TRANSPORT'
  | 'CLOSED'
  | 'SOCKET';

/** Base class of every error tether raises. */
export class TetherError extends Error {
  /** Stable machine-readable code; see {@link TetherErrorCode}. */
  readonly code: TetherErrorCode;
  /** Extra structured facts (method name, call id, timeout in ms, ...). */
  readonly context?: Record<string, unknown>;

  constructor(code: TetherErrorCode, message: string, options?: { cause?: unknown; context?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TetherError';
    this.code = code;
    this.context = options?.context;
  }

  /** Plain object for `--json` output. */
  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, ...(this.context ? { context: this.context } : {}) };
  }
}

/** A wrong argument from the caller, raised synchronously before anything is sent. */
export class InvalidArgumentError extends TetherError {
  constructor(message: string, context?: Record<string, unknown>) {
    super('INVALID_ARGUMENT', message, { context });
    this.name = 'InvalidArgumentError';
  }
}

/** The call got no reply in time. `context.ms` is the timeout in milliseconds. */
export class TimeoutError extends TetherError {
  constructor(message: string, context?: Record<string, unknown>) {
    super('TIMEOUT', message, { context });
    this.name = 'TimeoutError';
  }
}

/** The module restarted (its boot epoch changed) while the call was in flight. */
export class ResetError extends TetherError {
  constructor(message: string, context?: Record<string, unknown>) {
    super('RESET', message, { context });
    this.name = 'ResetError';
  }
}

/**
 * The agent answered the call with an error frame.
 * `remoteCode` is the agent's short code (`ERR`, `NOFN`, `BADHANDLE`, `BADARG`, `TOOBIG`, `NOMEM`:
 * docs/protocol.md section 8),
 * `remoteMessage` the Lua error message as the module produced it.
 */
export class RemoteError extends TetherError {
  readonly remoteCode: string;
  readonly remoteMessage: string;
  constructor(remoteCode: string, remoteMessage: string, context?: Record<string, unknown>) {
    super('REMOTE', `agent error ${remoteCode}: ${remoteMessage}`, { context: { ...context, remoteCode, remoteMessage } });
    this.name = 'RemoteError';
    this.remoteCode = remoteCode;
    this.remoteMessage = remoteMessage;
  }
}

/**
 * True for a call the agent refused with `NOMEM` (docs/protocol.md section 8): the module's Lua
 * heap had no room to load or decode it ("not enough memory" before its function ran), so the
 * call did not run. Sending it again, as a new call, is safe once the module's heap has room
 * (e.g. after the events it holds for the host went out); a call behind it on the same object
 * may have run meanwhile, so only a caller with nothing else in flight there can retry in order.
 */
export function isNoMemory(e: unknown): e is RemoteError {
  return e instanceof RemoteError && e.remoteCode === 'NOMEM';
}

/** Type guard; with `code`, also checks the error's code. */
export function isTetherError(e: unknown, code?: TetherErrorCode): e is TetherError {
  return e instanceof TetherError && (code === undefined || e.code === code);
}

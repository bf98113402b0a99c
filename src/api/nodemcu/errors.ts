/**
 * Typed errors of the NodeMCU `net` facade. The firmware raises Lua errors with
 * fixed strings (lwIP codes through `lwip_lua_checkerr`, plus net.c's own checks);
 * the facade turns each into a {@link NetError} whose `reason` names it, so
 * callers branch on `e.reason === 'OUT_OF_MEMORY'` instead of parsing messages.
 * A NetError is a {@link RemoteError} (code `REMOTE`), so generic handling still works.
 */
import { RemoteError, isTetherError } from '../../errors.js';

/** lwIP err_t values and the message the firmware raises for each. */
export const LWIP_ERR = {
  OUT_OF_MEMORY: { code: -1, message: 'out of memory' },
  BUFFER: { code: -2, message: 'buffer error' },
  TIMEOUT: { code: -3, message: 'timeout' },
  ROUTING: { code: -4, message: 'routing problem' },
  IN_PROGRESS: { code: -5, message: 'in progress' },
  ILLEGAL_VALUE: { code: -6, message: 'illegal value' },
  WOULD_BLOCK: { code: -7, message: 'would block' },
  ABORTED: { code: -8, message: 'connection aborted' },
  RESET: { code: -9, message: 'connection reset' },
  CLOSED: { code: -10, message: 'connection closed' },
  NOT_CONNECTED: { code: -11, message: 'not connected' },
  ILLEGAL_ARGUMENT: { code: -12, message: 'illegal argument' },
  ADDRESS_IN_USE: { code: -13, message: 'address in use' },
  NETIF: { code: -14, message: 'netif error' },
  ALREADY_CONNECTED: { code: -15, message: 'already connected' },
} as const;

/** net.c's own error strings. */
const NET_C_ERRORS: Record<string, NetErrorReason> = {
  'already listening': 'ALREADY_LISTENING',
  'invalid IP address': 'INVALID_IP',
  'need callback': 'NEED_CALLBACK',
  'cannot allocate PCB': 'NO_PCB',
  'specify port': 'SPECIFY_PORT',
  'need port': 'NEED_PORT',
  'no data to send': 'NO_DATA',
  'cannot allocate message buffer': 'NO_BUFFER',
  'invalid callback name': 'INVALID_CALLBACK_NAME',
  'invalid callback function': 'INVALID_CALLBACK_FUNCTION',
  'no callback specified': 'NO_CALLBACK',
  'socket is not open/bound yet': 'NOT_OPEN',
  'invalid user data': 'INVALID_USER_DATA',
  'server index out of range [0-1]': 'DNS_INDEX',
  'invalid dns server ip': 'INVALID_DNS_SERVER',
  'wrong arg type': 'WRONG_ARG_TYPE',
  'invalid if ip': 'INVALID_IF_IP',
  'invalid multicast ip': 'INVALID_MULTICAST_IP',
  'unknown error': 'UNKNOWN_LWIP',
};

/** Why the firmware refused a call. lwIP errors use their LWIP_ERR key. */
export type NetErrorReason =
  | keyof typeof LWIP_ERR
  | 'ALREADY_LISTENING'
  | 'INVALID_IP'
  | 'NEED_CALLBACK'
  | 'NO_PCB'
  | 'SPECIFY_PORT'
  | 'NEED_PORT'
  | 'NO_DATA'
  | 'NO_BUFFER'
  | 'INVALID_CALLBACK_NAME'
  | 'INVALID_CALLBACK_FUNCTION'
  | 'NO_CALLBACK'
  | 'NOT_OPEN'
  | 'INVALID_USER_DATA'
  | 'DNS_INDEX'
  | 'INVALID_DNS_SERVER'
  | 'WRONG_ARG_TYPE'
  | 'INVALID_IF_IP'
  | 'INVALID_MULTICAST_IP'
  | 'UNKNOWN_LWIP'
  /** `bad argument #n to 'fn' (...)`: a type check in the firmware. */
  | 'BAD_ARGUMENT'
  /** Anything else the firmware or the agent raised. */
  | 'OTHER';

/** A Lua error the module's `net` module raised, with the firmware's exact message in `remoteMessage`. */
export class NetError extends RemoteError {
  /** What went wrong, from the firmware's message. */
  readonly reason: NetErrorReason;
  /** The lwIP err_t (-1 .. -15) when the message is an lwIP error. */
  readonly lwipCode?: number;
  constructor(remoteCode: string, remoteMessage: string, context?: Record<string, unknown>) {
    super(remoteCode, remoteMessage, context);
    this.name = 'NetError';
    const { reason, lwip } = classify(remoteMessage);
    this.reason = reason;
    this.lwipCode = lwip;
  }
}

function classify(message: string): { reason: NetErrorReason; lwip?: number } {
  const m = message.replace(/^[^:]*:\d+: /, ''); // a position prefix, if any
  for (const [k, v] of Object.entries(LWIP_ERR)) if (v.message === m) return { reason: k as keyof typeof LWIP_ERR, lwip: v.code };
  const own = NET_C_ERRORS[m];
  if (own) return { reason: own };
  if (/^bad argument #\d+/.test(m)) return { reason: 'BAD_ARGUMENT' };
  return { reason: 'OTHER' };
}

/** Turn a RemoteError of a `net` call into a {@link NetError}; anything else passes unchanged. */
export function toNetError(e: unknown): unknown {
  if (e instanceof NetError) return e;
  if (e instanceof RemoteError && e.remoteCode === 'ERR') return new NetError(e.remoteCode, e.remoteMessage, e.context);
  return e;
}

/** True for a {@link NetError}, optionally of one reason. */
export function isNetError(e: unknown, reason?: NetErrorReason): e is NetError {
  return e instanceof NetError && (reason === undefined || e.reason === reason) && isTetherError(e, 'REMOTE');
}

/**
 * Constants of the Luat core's `socketcore` library and its rtos messages, as the
 * 8910 core source defines them (docs/firmware/luat-socketcore.md, rtos messages and slots).
 * `LuatSocketcore.consts()` reads the values from the module itself; these are what the
 * CSDK build has (the tests check that the simulated module agrees).
 */

/** `sock_conn` socket types. 3 is NOT RAW (the C enum has 3 = SMS, 4 = RAW): don't use it. */
export const SocketType = {
  TCP: 0,
  UDP: 1,
  SSL: 2,
} as const;
export type SocketTypeName = keyof typeof SocketType;

/** `sock_setopt` levels and options (lwIP values, am_openat_socket.h). Times are seconds. */
export const SOL_SOCKET = 0xfff;
export const IPPROTO_TCP = 6;
export const SO_REUSEADDR = 0x04;
export const SO_KEEPALIVE = 0x08;
export const TCP_KEEPIDLE = 3;
export const TCP_KEEPINTVL = 4;
export const TCP_KEEPCNT = 5;

/** The `sock_setopt` constants as one object. */
export const SockOpt = { SOL_SOCKET, IPPROTO_TCP, SO_REUSEADDR, SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT } as const;

/** `socketcore.ERR_*`: the second value of `sock_send`. The core does not export EINVAL (6). */
export const SockErr = {
  ERR_UNKOWN: -1,
  ERR_OK: 0,
  ERR_ENOMEM: 1,
  ERR_ENOBUFS: 2,
  ERR_ETIMEOUT: 3,
  ERR_ERTE: 4,
  ERR_EINPROGRESS: 5,
  ERR_EWOULDBLOCK: 7,
  ERR_EADDRINUSE: 8,
  ERR_EALREADY: 9,
  ERR_EISCONN: 10,
  ERR_ENOTCONN: 11,
  ERR_EIF: 12,
  ERR_EABORT: 13,
  ERR_ERST: 14,
  ERR_ECLSD: 15,
  ERR_EARG: 16,
  ERR_EIO: 17,
  ERR_SSL_EHANDESHAK: 18,
  ERR_SSL_EINIT: 19,
  ERR_SSL_EINVALID: 20,
} as const;
export type SockErrName = keyof typeof SockErr;

/** Name of an `ERR_*` code (`ERR_ENOTCONN`), or `ERR_<n>` for a code the table lacks. */
export function errName(code: number): string {
  for (const [k, v] of Object.entries(SockErr)) if (v === code) return k;
  return `ERR_${code}`;
}

/** The five socket messages the agent forwards (`rtos.MSG_SOCK_<name>`). */
export const SOCKET_MESSAGES = ['CONN_CNF', 'SEND_CNF', 'RECV_IND', 'CLOSE_CNF', 'CLOSE_IND'] as const;
export type SocketMessageName = (typeof SOCKET_MESSAGES)[number];

/** `rtos.MSG_*` values of the CSDK build of the 8910 core; other builds differ (the hello `msg` table has the real ones). */
export const CSDK_MSG_IDS = {
  MSG_TIMER: 5,
  MSG_UART_RXDATA: 6,
  MSG_SOCK_RECV_IND: 31,
  MSG_SOCK_SEND_CNF: 32,
  MSG_SOCK_CLOSE_CNF: 33,
  MSG_SOCK_CONN_CNF: 34,
  MSG_SOCK_CLOSE_IND: 36,
} as const;

/** Socket slots of the core (`LUA_MAX_SOCKET_SUPPORT`). */
export const MAX_SOCKETS = 10;
/** Largest `recv_len` of one RECV_IND (`LUA_MAX_RECV_IND_LEN`). */
export const MAX_RECV_IND = 2048;
/** `sock_send` takes the length as a uint16. */
export const MAX_SEND_BYTES = 65535;
/** Chunk the lib sends per `sock_send` on TCP/SSL (socket.lua). */
export const LIB_TCP_CHUNK = 11200;
/** Chunk the V2.4 lib uses for UDP. */
export const LIB_UDP_CHUNK = 1472;
/** Longest address `sock_conn` accepts (characters). */
export const MAX_ADDR_LEN = 100;
/** `sock_conn_ext` results below 0. */
export const CONN_EXT_NO_SLOT = -1;
export const CONN_EXT_DNS_FAILED = -2;

/** Readiness topics the agent forwards as `P` frames. */
export const READINESS_TOPICS = ['IP_READY_IND', 'IP_ERROR_IND', 'NET_STATE_REGISTERED', 'NET_STATE_UNREGISTER'] as const;
export type ReadinessTopic = (typeof READINESS_TOPICS)[number];

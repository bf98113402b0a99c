/**
 * What the emulated LuatOS `socket` library (socket-lib.ts) needs from the simulated
 * module, and the network options a simulation can set.
 */
import type { LuaIn } from '../lua-vm.js';
import type { SimNet } from '../network.js';

/** Network behaviour of the simulated Air780E. Every field is optional. */
export interface SimNetworkOptions {
  /** Address `socket.localIP()` reports. @default "127.0.0.1" */
  localIp?: string;
  /** Netmask `socket.localIP()` reports. @default "255.0.0.0" */
  netmask?: string;
  /** Gateway `socket.localIP()` reports. @default "0.0.0.0" */
  gateway?: string;
  /**
   * Milliseconds from boot until the cellular adapter (`socket.LWIP_GP`) is ready
   * (IP_READY). 0 = ready at boot. Until then `linkup` returns (true,false) and
   * `connect`/`listen` wait (state 0), then proceed. @default 0
   */
  adapterReadyDelayMs?: number;
  /**
   * What the simulated module may reach (src/sim/network.ts): `'loopback'` resolves only `hosts`,
   * `localhost` and IP literals and connects only to 127.0.0.0/8; `'host'` uses the host's
   * resolver and network (`tether sim --net host`). @default 'loopback'
   */
  net?: SimNet;
  /** Static DNS overrides, name (case-insensitive) -> IPv4 address. Checked before any resolver. */
  hosts?: Record<string, string>;
  /**
   * DNS servers (IPv4 strings) queried with node:dns for names not in `hosts` (with `net:
   * 'loopback'` only loopback servers, e.g. a test's own). Empty/absent = none (`'loopback'`) or
   * the host's resolver (`'host'`). `socket.setDNS` changes them at run time.
   */
  dnsServers?: string[];
  /**
   * Send buffer per socket, bytes. A `socket.tx` is refused with (true,true,true)
   * ("full", nothing accepted) when bytes are still unconfirmed (not yet handed to the
   * kernel) and the new data would take the total over this size. A tx with nothing
   * pending is always accepted whatever its size. @default 8192
   */
  txBufferBytes?: number;
  /**
   * TCP receive window per socket, bytes: at most this many unread bytes wait on a socket
   * (`socket.rx` without a buffer never reports more); then the window is closed and the peer
   * stops sending until the app reads a whole received block. @default 42880 (TCP_WND of the
   * Air780E build, 32 * TCP_MSS 1340; see DEFAULT_RX_WINDOW in socket-lib.ts)
   */
  rxWindowBytes?: number;
  /**
   * What `socket.rx_cache()` reports: the lwIP receive-cache block count of the build (issue 8
   * part C7: 32 by default, 6 on EC718/716 builds; not found in the stored LuatOS sources).
   * @default 32
   */
  rxCacheBlocks?: number;
  /**
   * Emulate firmware built before 2023-01-31 (commit 9b7841332): the first boolean of
   * linkup/connect/discon/tx/rx/wait/listen/accept is `result < 0`, i.e. inverted. @default false
   */
  invertedBool?: boolean;
  /** Sockets (network ctrls) available on the adapter: `create` returns nil beyond. @default 8 (LWIP_NUM_SOCKETS) */
  maxSockets?: number;
  /** Per-server SNTP timeout, milliseconds (firmware: NTP_TIMEOUT_MS = 2000). @default 2000 */
  sntpTimeoutMs?: number;
  /**
   * With `net: 'loopback'` the simulated network has an SNTP server (src/sim/sntp-server.ts,
   * RFC 4330, serving the host's clock; started on the first query, stopped with the module):
   * the firmware's default server names (ntp.aliyun.com, ntp.ntsc.ac.cn,
   * time1.cloud.tencent.com) resolve to it, and an SNTP query to UDP port 123 of a loopback
   * address reaches it (a process without privileges cannot bind port 123, so the simulated
   * network carries the datagram to the server's own port). false: no server; the default names
   * then fail to resolve and NTP_ERROR follows. Not used with `net: 'host'` (real servers
   * answer). @default true
   */
  sntpServer?: boolean;
  /**
   * How `socket.accept` behaves (the firmware decides per adapter, `no_accept`; which one the
   * Air780E's lwIP port uses is not confirmed). 'multi': every accept returns a new ctrl
   * (true, new_ctrl, ip, port); 'single': the listening ctrl itself becomes the connection and
   * accept returns (true, nil, ip, port). @default 'multi'
   */
  acceptMode?: 'multi' | 'single';
  /** TCP graceful-close timeout after `discon`, milliseconds (firmware tcp_timeout_ms). @default 10000 */
  closeTimeoutMs?: number;
}

/** Services the module gives the `socket` library. */
export interface SimEnv {
  /**
   * Run `fn` later on the module's event loop (setImmediate). Every event into Lua goes
   * through this, never synchronously inside a Lua->JS call.
   */
  post(fn: () => void): void;
  /** Network options for this boot. */
  network: SimNetworkOptions;
  /** Module debug log (not the RPC UART). */
  log(line: string): void;
  /** `sys.publish(topic, ...)` in the VM (the firmware's `sys_pub`). */
  publish(topic: string, ...args: LuaIn[]): void;
  /** Milliseconds since boot (`mcu.ticks()`); used by `socket.ntptm`. @default time since installSocketLib */
  ticks?(): number;
}

/** What installSocketLib returns to the module. */
export interface SocketLib {
  /** Destroy every Node socket, server and timer of this boot (module reset). Idempotent. */
  shutdown(): void;
  /** Node sockets, servers and UDP sockets currently open (for leak checks). */
  openSockets(): number;
  /** Whether the cellular adapter (LWIP_GP) is ready. */
  adapterReady(): boolean;
  /**
   * Bring the adapter up or down at run time (emulates IP_READY / IP_LOSE). Going down
   * fails every live socket with its pending event, param -1. Does not publish IP_READY:
   * the mobile emulation does (see {@link onAdapterReady}).
   */
  setAdapterReady(ready: boolean): void;
  /** Call `fn` every time the adapter becomes ready (including the delayed boot-time one). */
  onAdapterReady(fn: () => void): void;
}

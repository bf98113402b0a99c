/**
 * Emulated LuatOS `socket` library of the simulated Air780E, backed by real Node
 * sockets (node:net, node:dgram, node:tls, node:dns), so the module really talks to
 * servers (in the tests: on 127.0.0.1).
 *
 * The emulation ports the firmware's logic, not just its documentation:
 * - LS:<line>  = components/network/adapter/luat_lib_socket.c (the Lua binding: argument
 *   checks, return values and arities, how events reach Lua);
 * - NA:<line>  = components/network/adapter/luat_network_adapter.c at openLuat/LuatOS commit
 *   00286331 (002863319db3f4d415a1fef2ceafe7451c345103), the per-socket state machine
 *   `network_default_statemachine` (NA:1045-1100) and the `network_*` calls behind each binding;
 *   each citation names the line range and the C function;
 * - SN:<func>  = components/network/libsntp/luat_sntp.c + luat_lib_sntp.c (the Lua bindings
 *   l_sntp_get / l_sntp_tm / l_sntp_port also by line: luat_lib_sntp.c:N at commit bba8964).
 * Semantics summary: docs/firmware/luatos.md. Known differences from the
 * real module: docs/fidelity-luatos-socket.md.
 *
 * Model: one {@link SocketCtrl} per `network_ctrl_t`. The Lua full userdata returned by
 * `socket.create` holds a small handle pointing at it; callbacks receive a light userdata
 * of the ctrl itself (not `==` to the full userdata, like the C pointer). A ctrl "has a
 * socket" (C: `socket_id >= 0`) while it owns a {@link Conn}, which wraps the Node
 * socket/server. Node events are fed to the ported state machine, whose results are
 * posted (env.post) to Lua as `(event, param)` with param 0 or -1.
 */
import net from 'node:net';
import dgram from 'node:dgram';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import fengari from 'fengari';
import { LightUserdata, type LuaArgs, type LuaIn, type LuaLibFn, type LuaRef, type LuaVm } from '../lua-vm.js';
import { DEFAULT_SIM_NET, isLoopbackAddress, mayReach, simResolve, unreachableText } from '../network.js';
import { startSntpServer, type SntpServer } from '../sntp-server.js';
import { checkZbuff, zbuffAppend, zbuffUsedBytes } from './zbuff.js';
import type { SimEnv, SocketLib } from './sim-env.js';
import { fillFromHeld } from '../rx-window.js';

export type { SimEnv, SimNetworkOptions, SocketLib } from './sim-env.js';

const { lua, lauxlib, to_luastring } = fengari as unknown as {
  lua: any;
  lauxlib: any;
  to_luastring: (s: string) => Uint8Array;
};

/**
 * TCP_WND of the Air780E (EC618) build, bytes: luatos-soc-2022
 * PLAT/middleware/thirdparty/lwip/src/include/lwip_config_ec6180h00.h (commit 1850c1e2, the
 * TCP_WND and TCP_MSS definitions): `32 * TCP_MSS` when `__USER_CODE__` is defined (the SDK's
 * xmake builds define it), TCP_MSS 1340. The other branch (6 * 1024) is the SDK's own build.
 */
export const DEFAULT_RX_WINDOW = 32 * 1340;

/** Metatable name of socket ctrl userdata, also the `sys_pub` topic of ctrls without callback (LS: LUAT_NW_CTRL_TYPE). */
export const NW_CTRL_TYPE = 'NWCTRL*';

/** Event ids pushed to Lua: `EV_NW_RESULT_x & 0x0fffffff` (NA.h). */
export const SOCKET_EVENTS = {
  LINK: 0x2000010,
  ON_LINE: 0x2000011,
  TX_OK: 0x2000012,
  CLOSED: 0x2000013,
  EVENT: 0x2000014,
} as const;

/** `EV_NW_RESULT_BASE & 0x0fffffff`: result event = base + wait target (NA:1077-1085, network_default_statemachine). */
const EV_RESULT_BASE = 0x200000f;
/**
 * Raw adapter events (`EV_NW_x & 0x0fffffff`) a ctrl not yet in "auto mode" receives
 * unprocessed (NA:1128-1143, network_default_socket_callback: only an `auto_mode` ctrl goes through
 * the state machine, any other gets the raw event): only accepted ctrls before any call.
 */
const RAW_EVENT_BASE = 0x2000000;

/** Adapter indexes (NA.h, LuatOS 26.04). `USB` is the LWIP USB adapter (16). */
export const ADAPTERS = {
  LWIP_GP: 1,
  LWIP_STA: 2,
  LWIP_AP: 3,
  LWIP_ETH: 4,
  LWIP_SPI: 5,
  LWIP_USER0: 7,
  LWIP_USER1: 8,
  LWIP_USER2: 9,
  LWIP_USER3: 10,
  LWIP_USER4: 11,
  LWIP_USER5: 12,
  LWIP_USER6: 13,
  LWIP_USER7: 14,
  LWIP_GP_GW: 15,
  LWIP_USB: 16,
  ETH0: 17,
  USB: 16,
} as const;

/** NW_ADAPTER_QTY: valid adapter indexes are 0..18. */
const ADAPTER_QTY = 19;

/** `socket.state` strings (NA:71-82, prv_network_ctrl_state_string); index 8 for anything else (NA:113-120). */
export const STATE_STRINGS = ['硬件离线', '离线', '等待DNS', '正在连接', '正在TLS握手', '在线', '在监听', '正在离线', '未知'];

/** NW_STATE_x. */
const S = { LINK_OFF: 0, OFF_LINE: 1, WAIT_DNS: 2, CONNECTING: 3, SHAKEHAND: 4, ONLINE: 5, LISTEN: 6, DISCONNECTING: 7 } as const;
/** NW_WAIT_x. */
const W = { NONE: 0, LINK_UP: 1, ON_LINE: 2, TX_OK: 3, OFF_LINE: 4, EVENT: 5 } as const;

/** Default SNTP servers (SN: sntp_servers). */
const DEFAULT_SNTP_SERVERS = ['ntp.aliyun.com', 'ntp.ntsc.ac.cn', 'time1.cloud.tencent.com'];
/** NTP era offset 1900 -> 1970, seconds. */
const NTP_UNIX_OFFSET = 0x83aa7e80;

/** Adapter-side events fed to the state machine (EV_NW_x). `code` is the raw event offset. */
type NetEv =
  | { t: 'state'; up: boolean }
  | { t: 'dns'; ips: string[] | null }
  | { t: 'connect_ok' }
  | { t: 'listen' }
  | { t: 'new_connect' }
  | { t: 'error'; msg: string }
  | { t: 'remote_close' }
  | { t: 'close_ok' }
  | { t: 'tx_ok'; n: number }
  | { t: 'rx_new' }
  | { t: 'tls_ok' }
  | { t: 'tls_fail'; msg: string };

const RAW_CODE: Partial<Record<NetEv['t'], number>> = {
  state: 1,
  tx_ok: 4,
  rx_new: 5,
  close_ok: 7,
  remote_close: 8,
  connect_ok: 9,
  error: 10,
  listen: 11,
  new_connect: 12,
};

/** Largest plaintext of one TLS record (2^14 bytes, RFC 8446 section 5.1 / RFC 5246 section 6.2.1). */
const TLS_RECORD_MAX = 16384;

/** One lwIP socket equivalent: a Node TCP/TLS socket, UDP socket or TCP server, plus its receive cache. */
class Conn {
  raw?: net.Socket;
  /** Where application data is read/written: the raw socket, or the TLS socket over it. */
  stream?: net.Socket | tls.TLSSocket;
  udp?: dgram.Socket;
  server?: net.Server;
  /** Accepted-but-not-yet-`accept`ed connections of a server. */
  pending: net.Socket[] = [];
  rx: Buffer[] = [];
  rxLen = 0;
  /**
   * Bytes already taken from the head node of `rx` (the firmware grants window back only for a
   * fully read node, net_lwip2.c:1178-1196 `net_lwip2_socket_read_data` at 05e31472): they still
   * count against the window.
   */
  rxHeadRead = 0;
  /**
   * Bytes Node delivered beyond the receive window: lwIP would not have accepted them yet (the
   * peer keeps them while the window is closed). Invisible to `rx`; moved in as the window opens.
   */
  rxHeld: Buffer[] = [];
  /** The peer's FIN/close came while `rxHeld` was not empty: reported once it is drained. */
  rxEndHeld = false;
  dgrams: Array<{ data: Buffer; ip: string; port: number }> = [];
  /** No more adapter events from this socket (error/peer close seen, or handles killed). */
  failed = false;
  /** A graceful close (`discon`) is in progress. */
  closing = false;
  /** Handles destroyed (by us). */
  dead = false;
  closeTimer?: NodeJS.Timeout;
  constructor(
    readonly id: number,
    readonly kind: 'tcp' | 'udp' | 'server',
  ) {}
}

/** The emulated `network_ctrl_t` + `luat_socket_ctrl_t` of one Lua socket. */
class SocketCtrl {
  cb?: LuaRef;
  task?: Uint8Array;
  released = false;
  debug = false;
  isTcp = true;
  tls = false;
  ca?: string;
  cert?: string;
  key?: string;
  pwd?: string;
  localPort = 0;
  keepIdle = 0;
  state: number = S.LINK_OFF;
  wait: number = W.NONE;
  needClose = false;
  newRx = false;
  autoMode = false;
  conn?: Conn;
  domain = '';
  /** Valid remote IP of the last connect (an IP literal or integer), C `remote_ip`. */
  remoteIp?: string;
  remotePort = 0;
  dnsIps: string[] = [];
  dnsIdx = 0;
  dnsToken = 0;
  onlineIp?: string;
  txSize = 0;
  ackSize = 0;
  serverMode = false;
  maxWaitAccept = 0;
  constructor(readonly adapter: number) {}
}

/** What the Lua full userdata holds: only Lua references it, so its collection means `__gc`. */
class CtrlHandle {
  constructor(readonly ctrl: SocketCtrl) {}
}

/** lwIP `ipaddr_aton`: dotted IPv4 in inet_aton forms (a.b.c.d, a.b.c, a.b, a; hex/octal parts) or an IPv6 literal. */
export function ipaddrAton(s: string): string | undefined {
  if (net.isIPv6(s)) return s;
  const parts = s.split('.');
  if (parts.length < 1 || parts.length > 4) return undefined;
  const vals: number[] = [];
  for (const p of parts) {
    let v: number;
    if (/^0[xX][0-9a-fA-F]+$/.test(p)) v = parseInt(p.slice(2), 16);
    else if (/^0[0-7]*$/.test(p)) v = parseInt(p, 8);
    else if (/^[1-9][0-9]*$/.test(p)) v = parseInt(p, 10);
    else return undefined;
    vals.push(v);
  }
  const max = [0xffffffff, 0xffffff, 0xffff, 0xff];
  let addr = 0;
  for (let i = 0; i < vals.length - 1; i++) {
    if (vals[i] > 0xff) return undefined;
    addr = addr * 256 + vals[i];
  }
  const last = vals[vals.length - 1];
  if (last > max[vals.length - 1]) return undefined;
  addr = addr * 2 ** (8 * (5 - vals.length)) + last;
  return [addr >>> 24, (addr >>> 16) & 255, (addr >>> 8) & 255, addr & 255].join('.');
}

/** An IPv4 given as a Lua integer ("big-endian format int": first octet in the low byte). */
export function intToIp(v: number): string {
  const u = v >>> 0;
  return [u & 255, (u >>> 8) & 255, (u >>> 16) & 255, u >>> 24].join('.');
}

/** UDP peer address as `socket.rx` pushes it (LS:808): "\0"+4 bytes for IPv4, "\1"+16 bytes for IPv6. */
export function ipToLuatBytes(ip: string): Uint8Array {
  if (net.isIPv4(ip)) return Uint8Array.from([0, ...ip.split('.').map(Number)]);
  const out = new Uint8Array(17);
  out[0] = 1;
  const full = expandIpv6(ip);
  for (let i = 0; i < 8; i++) {
    out[1 + i * 2] = full[i] >> 8;
    out[2 + i * 2] = full[i] & 255;
  }
  return out;
}

function expandIpv6(ip: string): number[] {
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const h = head ? head.split(':').filter(Boolean) : [];
  const t = tail ? tail.split(':').filter(Boolean) : [];
  const v4 = (arr: string[]) => {
    const last = arr[arr.length - 1];
    if (last && last.includes('.')) {
      const b = last.split('.').map(Number);
      arr.splice(arr.length - 1, 1, ((b[0] << 8) | b[1]).toString(16), ((b[2] << 8) | b[3]).toString(16));
    }
  };
  v4(t.length ? t : h);
  const fill = tail === undefined ? [] : new Array(8 - h.length - t.length).fill('0');
  return [...h, ...fill, ...t].map((x) => parseInt(x, 16) || 0);
}

/** C: lua_pushinteger of a wider unsigned value with a 32-bit lua_Integer keeps the low 32 bits. */
const toInt32 = (n: number) => Number(BigInt.asIntN(32, BigInt(Math.trunc(n))));

/**
 * Install the `socket` library into `vm` (also creates the `NWCTRL*` metatable).
 * Every function has the firmware's arguments checks and return arities; see the
 * module docstring for the source references.
 */
export function installSocketLib(vm: LuaVm, env: SimEnv): SocketLib {
  const lib = new SocketLibImpl(vm, env);
  lib.install();
  return lib;
}

interface SntpCtx {
  servers: string[];
  port: number;
  running: boolean;
  nextIdx: number;
  diffSec: number;
  diffMs: number;
  delayMs: number;
  ndelayC: number;
  ndelay: number[];
  sock?: dgram.Socket;
  timer?: NodeJS.Timeout;
  token: number;
  slot: number;
}

class SocketLibImpl implements SocketLib {
  private readonly ctrls = new Set<SocketCtrl>();
  private readonly slots = new Set<number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly readyListeners: Array<() => void> = [];
  private readonly bootAt = Date.now();
  private readonly net;
  private readonly maxSockets: number;
  private readonly txBufferBytes: number;
  /** Receive window per TCP socket, bytes (sim-env.ts `rxWindowBytes`). */
  private readonly rxWindow: number;
  private ready: boolean;
  private defaultAdapter: number = ADAPTERS.LWIP_GP;
  private dnsServers: string[];
  private rxCacheBlocks = 32;
  private down = false;
  /** A Lua error escaped a callback: the module is rebooting, nothing more goes into this VM. */
  private dead = false;
  private readonly finalizer = new FinalizationRegistry<SocketCtrl>((ctrl) => {
    if (!ctrl.released && !this.down) this.releaseCtrl(ctrl);
  });
  /** The simulated network's SNTP server (sim-env.ts `sntpServer`), started on first use. */
  private ntpServer?: Promise<SntpServer>;
  private readonly sntp: SntpCtx = {
    servers: [...DEFAULT_SNTP_SERVERS],
    port: 0,
    running: false,
    nextIdx: 0,
    diffSec: 0,
    diffMs: 0,
    delayMs: 0,
    ndelayC: 0,
    ndelay: new Array(8).fill(0),
    token: 0,
    slot: -1,
  };

  constructor(
    private readonly vm: LuaVm,
    private readonly env: SimEnv,
  ) {
    this.net = env.network;
    this.maxSockets = this.net.maxSockets ?? 8;
    this.txBufferBytes = this.net.txBufferBytes ?? 8192;
    this.rxWindow = Math.max(1, Math.floor(this.net.rxWindowBytes ?? DEFAULT_RX_WINDOW));
    this.rxCacheBlocks = this.net.rxCacheBlocks ?? 32;
    this.dnsServers = [...(this.net.dnsServers ?? [])];
    const delay = this.net.adapterReadyDelayMs ?? 0;
    this.ready = delay <= 0;
    if (!this.ready) this.after(delay, () => this.setAdapterReady(true));
  }

  // ---------------------------------------------------------------- SocketLib

  shutdown(): void {
    if (this.down) return;
    this.down = true;
    for (const c of this.ctrls) {
      if (c.conn) this.freeConn(c.conn);
      c.conn = undefined;
    }
    this.sntpStop();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    void this.ntpServer?.then((srv) => srv.close(), () => undefined);
  }

  /** True when SNTP queries on loopback go to the simulated network's own server. */
  private get localNtp(): boolean {
    return (this.net.net ?? DEFAULT_SIM_NET) === 'loopback' && this.net.sntpServer !== false;
  }

  openSockets(): number {
    let n = 0;
    for (const c of this.ctrls) {
      const k = c.conn;
      if (!k || k.dead) continue;
      n += (k.raw || k.udp || k.server ? 1 : 0) + k.pending.length;
    }
    if (this.sntp.sock) n++;
    return n;
  }

  adapterReady(): boolean {
    return this.ready;
  }

  setAdapterReady(up: boolean): void {
    if (this.down || this.ready === up) return;
    this.ready = up;
    this.env.log(`socket: adapter ${ADAPTERS.LWIP_GP} ${up ? 'ready' : 'down'}`);
    for (const c of [...this.ctrls]) {
      if (!c.autoMode || c.adapter !== ADAPTERS.LWIP_GP) continue;
      if (up) {
        if (c.state === S.LINK_OFF) this.statemachine(c, { t: 'state', up: true });
      } else {
        if (c.conn) this.killHandles(c.conn);
        this.statemachine(c, { t: 'state', up: false });
      }
    }
    if (up) for (const fn of this.readyListeners) fn();
  }

  onAdapterReady(fn: () => void): void {
    this.readyListeners.push(fn);
  }

  // ---------------------------------------------------------------- plumbing

  private after(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.down) fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  private cancel(t: NodeJS.Timeout | undefined): void {
    if (!t) return;
    clearTimeout(t);
    this.timers.delete(t);
  }

  private ticks(): number {
    return this.env.ticks ? this.env.ticks() : Date.now() - this.bootAt;
  }

  private registered(ad: number): boolean {
    return ad === ADAPTERS.LWIP_GP;
  }

  private isReady(ad: number): boolean {
    return this.registered(ad) && this.ready;
  }

  private globalIsFunction(name: string): boolean {
    const L = this.vm.L;
    lua.lua_getglobal(L, to_luastring(name));
    const t = lua.lua_type(L, -1);
    lua.lua_pop(L, 1);
    return t === lua.LUA_TFUNCTION;
  }

  private b1(ok: boolean): boolean {
    return this.net.invertedBool ? !ok : ok;
  }

  private allocSlot(): number {
    for (let i = 0; i < this.maxSockets; i++) {
      if (!this.slots.has(i)) {
        this.slots.add(i);
        return i;
      }
    }
    return -1;
  }

  /** Number of network ctrls in use (Lua sockets + the SNTP client's). */
  private ctrlsInUse(): number {
    return this.ctrls.size + (this.sntp.running ? 1 : 0);
  }

  /** `l_get_ctrl` + `L_CTRL_CHECK` (LS:40): the live ctrl at argument 1, or undefined (the call then returns nothing). */
  private ctrlArg(a: LuaArgs): SocketCtrl | undefined {
    const o = a.userdata<object>(1);
    const c = o instanceof CtrlHandle ? o.ctrl : o instanceof SocketCtrl ? o : undefined;
    return c && !c.released ? c : undefined;
  }

  private dbg(c: SocketCtrl, msg: string): void {
    if (c.debug) this.env.log(`socket ${c.conn?.id ?? -1}: ${msg}`);
  }

  // ---------------------------------------------------------------- events into Lua

  /** LS: luat_lib_socket_callback + l_socket_callback: queue the event, deliver on the module loop. */
  private emit(c: SocketCtrl, id: number, param: number): void {
    if (this.down) return;
    this.dbg(c, `event 0x${id.toString(16)} param ${param}`);
    this.env.post(() => this.deliver(c, id, param));
  }

  private deliver(c: SocketCtrl, id: number, param: number): void {
    if (this.down || this.dead || c.released || this.vm.closed) return;
    let r: { error?: string } | undefined;
    if (c.cb) {
      r = this.vm.callRef(c.cb, new LightUserdata(c), id, param);
    } else if (c.task) {
      if (!this.globalIsFunction('sys_send')) return;
      r = this.vm.callGlobal('sys_send', c.task, id, param);
    } else {
      if (!this.globalIsFunction('sys_pub')) return;
      this.env.publish(NW_CTRL_TYPE, c.adapter, c.conn ? c.conn.id : -1, id, param);
      return;
    }
    if (r.error !== undefined) this.fatal(r.error);
  }

  private fatal(message: string): void {
    if (this.dead) return;
    this.dead = true;
    this.env.log(`socket: error in callback, Lua VM exit!! reboot: ${message}`);
    this.vm.uncaught(message);
  }

  private publish(topic: string): void {
    this.env.post(() => {
      if (this.down || this.dead || this.vm.closed) return;
      if (!this.globalIsFunction('sys_pub')) return;
      this.env.publish(topic);
    });
  }

  // ---------------------------------------------------------------- adapter events

  /**
   * A socket event from Node (NA:1103-1187, network_default_socket_callback): stale sockets are
   * ignored (the tag check, NA:1121; a mismatch is only logged, NA:1145-1152).
   */
  private netEvent(c: SocketCtrl, conn: Conn, ev: NetEv): void {
    if (this.down || c.released || c.conn !== conn || conn.dead) return;
    // After a failure the Node handle yields nothing the module would see, except during a TLS
    // handshake: NA network_default_statemachine keeps feeding every adapter event to the
    // SHAKEHAND state (NA:1065), whose handler returns -1 once need_close is set (NA:789,
    // network_state_shakehand),
    // so the module reports EVENT -1 for each further event (issue 8 part C9). Here the further
    // event is the TCP close that follows the failed handshake.
    if (conn.failed && ev.t !== 'close_ok' && c.state !== S.SHAKEHAND) return;
    if (ev.t === 'error' || ev.t === 'remote_close' || ev.t === 'tls_fail') conn.failed = true;
    if (ev.t === 'error') this.dbg(c, `socket error: ${ev.msg}`);
    if (!c.autoMode) {
      const code = RAW_CODE[ev.t];
      if (code !== undefined) this.emit(c, RAW_EVENT_BASE + code, conn.id);
      return;
    }
    this.statemachine(c, ev);
  }

  /**
   * NA:1045-1100, network_default_statemachine: a handler result > 0 gives no result event, only
   * EVENT 0 while unread data is flagged (NA:1066-1075); otherwise CLOSED after a close, else
   * base + wait target (NA:1077-1085); the wait is cleared unless listening (NA:1087-1090).
   */
  private statemachine(c: SocketCtrl, ev: NetEv): void {
    const closeFlag = c.state === S.DISCONNECTING && c.wait === W.OFF_LINE;
    this.dbg(c, `event ${ev.t} state ${c.state} wait ${c.wait}`);
    let r: number;
    switch (c.state) {
      case S.LINK_OFF:
        r = this.stLinkOff(c, ev);
        break;
      case S.OFF_LINE:
        r = 1;
        break;
      case S.WAIT_DNS:
        r = this.stWaitDns(c, ev);
        break;
      case S.CONNECTING:
        r = this.stConnecting(c, ev);
        break;
      case S.SHAKEHAND:
        r = this.stShakehand(c, ev);
        break;
      case S.ONLINE:
        r = this.stOnline(c, ev);
        break;
      case S.LISTEN:
        r = this.stListen(c, ev);
        break;
      default:
        r = this.stDisconnecting(c, ev);
    }
    if (r > 0) {
      if (c.newRx) this.emit(c, SOCKET_EVENTS.EVENT, 0);
      return;
    }
    const id = closeFlag && c.wait === W.NONE ? SOCKET_EVENTS.CLOSED : EV_RESULT_BASE + (c.wait || W.EVENT);
    if (c.state !== S.LISTEN || r < 0) c.wait = W.NONE;
    this.emit(c, id, r < 0 ? -1 : 0);
  }

  /** NA:576-610, network_state_link_off. (NW_STATE_OFF_LINE always gives 1: NA:612-615.) */
  private stLinkOff(c: SocketCtrl, ev: NetEv): number {
    if (ev.t !== 'state' || !ev.up) return 1;
    c.state = S.OFF_LINE;
    if (c.wait === W.LINK_UP) return 0;
    if (c.wait === W.ON_LINE) {
      if (c.serverMode) {
        if (this.baseConnect(c, undefined)) return -1;
        c.state = S.CONNECTING;
      } else if (this.prepareConnect(c)) return -1;
      return 1;
    }
    return 1;
  }

  /** NA:617-675, network_state_wait_dns. */
  private stWaitDns(c: SocketCtrl, ev: NetEv): number {
    if (c.needClose || c.wait !== W.ON_LINE) return -1;
    switch (ev.t) {
      case 'error':
        return -1;
      case 'state':
        return -1;
      case 'dns':
        if (!ev.ips || !ev.ips.length) {
          c.dnsIps = [];
          return -1;
        }
        c.dnsIps = ev.ips.slice(0, 4);
        if (!c.remotePort) {
          c.state = S.OFF_LINE;
          return 0;
        }
        c.dnsIdx = 0;
        if (this.baseConnect(c, c.dnsIps[0])) {
          this.socketForceClose(c);
          return -1;
        }
        c.state = S.CONNECTING;
        return 1;
      default:
        return 1;
    }
  }

  /** NA:677-785, network_state_connecting: on failure the next DNS address is tried (NA:684-707). */
  private stConnecting(c: SocketCtrl, ev: NetEv): number {
    if (c.needClose || c.wait !== W.ON_LINE) return -1;
    switch (ev.t) {
      case 'error':
      case 'remote_close':
      case 'close_ok':
        if (c.remoteIp) return -1;
        c.dnsIdx++;
        if (c.dnsIdx >= c.dnsIps.length) return -1;
        if (this.baseConnect(c, c.dnsIps[c.dnsIdx])) {
          this.socketForceClose(c);
          return -1;
        }
        c.state = S.CONNECTING;
        return 1;
      case 'state':
        return -1;
      case 'listen':
        if (c.serverMode) {
          c.state = S.LISTEN;
          return 1;
        }
        return -1;
      case 'connect_ok':
        if (c.tls) {
          c.state = S.SHAKEHAND;
          this.startTls(c, c.conn!);
          return 1;
        }
        c.state = S.ONLINE;
        return 0;
      default:
        return 1;
    }
  }

  /** NA:787-863, network_state_shakehand. */
  private stShakehand(c: SocketCtrl, ev: NetEv): number {
    if (c.needClose || (c.wait !== W.ON_LINE && c.wait !== W.TX_OK)) return -1;
    switch (ev.t) {
      case 'error':
      case 'remote_close':
      case 'close_ok':
      case 'tls_fail':
        c.needClose = true;
        return -1;
      case 'state':
        if (!ev.up) {
          c.needClose = true;
          return -1;
        }
        return 1;
      case 'tx_ok':
        c.ackSize += ev.n;
        return 1;
      case 'tls_ok':
        c.state = S.ONLINE;
        return 0;
      default:
        return 1;
    }
  }

  /**
   * NA:865-962, network_state_on_line: TX_OK 0 once ack_size == tx_size (NA:887-917); new data
   * flags new_rx_flag and gives EVENT 0 unless a tx waits (NA:952-957).
   */
  private stOnline(c: SocketCtrl, ev: NetEv): number {
    if (c.needClose || c.wait === W.OFF_LINE) return -1;
    switch (ev.t) {
      case 'error':
      case 'remote_close':
      case 'close_ok':
        c.needClose = true;
        return -1;
      case 'state':
        if (!ev.up) {
          c.needClose = true;
          return -1;
        }
        return 1;
      case 'tx_ok':
        c.ackSize += ev.n;
        if (c.wait === W.TX_OK && c.ackSize === c.txSize) return 0;
        return 1;
      case 'rx_new':
        c.newRx = true;
        if (c.wait !== W.TX_OK) return 0;
        return 1;
      default:
        return 1;
    }
  }

  /** NA:964-996, network_state_listen (`max_wait_accept` keeps it listening: NA:987-989). */
  private stListen(c: SocketCtrl, ev: NetEv): number {
    if (c.needClose || c.wait === W.OFF_LINE) return -1;
    switch (ev.t) {
      case 'error':
      case 'remote_close':
      case 'close_ok':
        c.needClose = true;
        return -1;
      case 'state':
        if (!ev.up) {
          c.needClose = true;
          return -1;
        }
        return 1;
      case 'new_connect':
      case 'connect_ok':
        if (c.serverMode && c.maxWaitAccept > 0) return 0;
        c.state = S.ONLINE;
        return 0;
      default:
        return 1;
    }
  }

  /** NA:998-1030, network_state_disconnecting. */
  private stDisconnecting(c: SocketCtrl, ev: NetEv): number {
    if (c.wait !== W.OFF_LINE) return -1;
    switch (ev.t) {
      case 'error':
      case 'remote_close':
      case 'close_ok':
        this.forceCloseSocket(c);
        c.state = S.OFF_LINE;
        return 0;
      case 'state':
        if (ev.up) {
          this.forceCloseSocket(c);
          c.state = S.OFF_LINE;
        }
        return -1;
      default:
        return 1;
    }
  }

  // ---------------------------------------------------------------- sockets

  /** NA:541-574, network_prepare_connect. 0 = started, -1 = failed. */
  private prepareConnect(c: SocketCtrl): number {
    if (!c.remoteIp) {
      // NA network_connect copies the host into a zalloc(len + 1) buffer (NA:2200-2202), so
      // domain_name is never NULL after socket.connect, even for "": network_prepare_connect then
      // starts the DNS (NA:548-558; network_dns NA:1750-1761 -> the adapter's dns op queues the
      // lookup and returns 0), and the lookup of an
      // empty name fails later (ON_LINE -1).
      const lit = c.domain ? ipaddrAton(c.domain) : undefined;
      if (lit) c.remoteIp = lit;
      else {
        if (this.startDns(c)) {
          this.socketForceClose(c);
          return -1;
        }
        c.state = S.WAIT_DNS;
        return 0;
      }
    }
    if (this.baseConnect(c, c.remoteIp)) {
      this.socketForceClose(c);
      return -1;
    }
    c.state = S.CONNECTING;
    return 0;
  }

  /** Resolve `c.domain` (hosts override, then the DNS servers or the host resolver). 0 = started. */
  private startDns(c: SocketCtrl): number {
    const name = c.domain;
    if (name.length > 255) return -1;
    const token = ++c.dnsToken;
    if (!name) {
      // the empty name is looked up and fails asynchronously (see prepareConnect)
      setImmediate(() => this.dnsResult(c, token, null));
      return 0;
    }
    this.resolve(name).then(
      (ips) => this.dnsResult(c, token, ips),
      () => this.dnsResult(c, token, null),
    );
    return 0;
  }

  /** Hermetic by default: see src/sim/network.ts (a deliberate difference, docs/fidelity.md). */
  private async resolve(name: string): Promise<string[]> {
    return simResolve(this.net, name, this.dnsServers);
  }

  private dnsResult(c: SocketCtrl, token: number, ips: string[] | null): void {
    if (this.down || c.released || c.dnsToken !== token) return;
    // NA:1123-1127 (network_default_socket_callback) drops DNS results unless the ctrl waits for ON_LINE.
    if (c.wait !== W.ON_LINE) return;
    this.dbg(c, `dns ${c.domain} -> ${ips ? ips.join(',') : 'fail'}`);
    this.statemachine(c, { t: 'dns', ips });
  }

  /** NA:427-490 (the LUAT_USE_LWIP branch), network_base_connect: (re)create the socket, connect to `ip` or listen when undefined. 0 / -1. */
  private baseConnect(c: SocketCtrl, ip: string | undefined): number {
    if (c.conn) {
      this.freeConn(c.conn);
      c.conn = undefined;
      c.needClose = false;
    }
    const id = this.allocSlot();
    if (id < 0) return -1;
    if (ip !== undefined) {
      c.serverMode = false;
      c.onlineIp = ip;
      const conn = new Conn(id, c.isTcp ? 'tcp' : 'udp');
      c.conn = conn;
      if (c.isTcp) this.openTcp(c, conn, ip);
      else this.openUdp(c, conn, ip);
    } else {
      c.serverMode = true;
      const conn = new Conn(id, c.isTcp ? 'server' : 'udp');
      c.conn = conn;
      if (c.isTcp) this.openServer(c, conn);
      else this.openUdp(c, conn, undefined);
    }
    return 0;
  }

  private openTcp(c: SocketCtrl, conn: Conn, ip: string): void {
    const sock = new net.Socket({ allowHalfOpen: true });
    conn.raw = sock;
    sock.on('error', (e) => this.netEvent(c, conn, { t: 'error', msg: e.message }));
    sock.once('connect', () => {
      sock.setNoDelay(true);
      if (c.keepIdle > 0) sock.setKeepAlive(true, c.keepIdle * 1000);
      this.netEvent(c, conn, { t: 'connect_ok' });
    });
    if (!c.tls) this.attachStream(c, conn, sock);
    const opts: net.TcpSocketConnectOpts = { host: ip, port: c.remotePort, family: net.isIPv6(ip) ? 6 : 4 };
    if (c.localPort) opts.localPort = c.localPort;
    if (!mayReach(this.net, ip)) {
      // hermetic (src/sim/network.ts): lwIP reports an unreachable network as a socket error
      this.after(0, () => this.netEvent(c, conn, { t: 'error', msg: unreachableText(ip) }));
      return;
    }
    try {
      sock.connect(opts);
    } catch (e) {
      // e.g. remote port 0: Node refuses synchronously; lwIP reports a socket error
      this.after(0, () => this.netEvent(c, conn, { t: 'error', msg: (e as Error).message }));
    }
  }

  /** Read side of a connected TCP/TLS stream: data, peer close, and close after `discon`. */
  private attachStream(c: SocketCtrl, conn: Conn, s: net.Socket | tls.TLSSocket): void {
    conn.stream = s;
    s.on('data', (d: Buffer) => {
      if (conn.dead) return;
      conn.rxHeld.push(d);
      this.rxWindowFill(c, conn);
    });
    const peerClosed = () => {
      // the FIN is in sequence after the data: lwIP sees it only once the held bytes went in
      if (conn.rxHeld.length) conn.rxEndHeld = true;
      else this.netEvent(c, conn, { t: 'remote_close' });
    };
    s.on('end', peerClosed);
    s.on('close', () => {
      if (!conn.closing) peerClosed();
    });
  }

  /**
   * TCP receive window (issue #8). LuatOS's lwIP adapter queues each received pbuf on the
   * socket's rx list (components/network/adapter_lwip2/net_lwip2.c, commit 05e31472:
   * net_lwip2_tcp_recv_cb, net_lwip2.c:272-305, leaves `tcp_recved` commented out at :280) and
   * gives the window back only when the app has read a whole node (net_lwip2_socket_read_data,
   * :1178-1196, posts EV_LWIP_SOCKET_RX_DONE with the node's length at :1188; the lwIP task calls
   * `tcp_recved(pcb, len)` on it, :707-715). The EC618's own adapter is
   * not in the stored sources: we take it to work the same way (unverified). So at most TCP_WND unread bytes wait on a socket; then the window is
   * closed and the peer stops. TCP_WND of the Air780E build: {@link DEFAULT_RX_WINDOW}.
   *
   * Node delivers chunks of any size: bytes beyond the window wait in `rxHeld` (as in the
   * peer's send buffer) and the Node socket is paused (the host kernel's receive buffer then
   * fills and the peer sees a zero window).
   */
  private rxWindowFill(c: SocketCtrl, conn: Conn): void {
    const took = fillFromHeld(conn.rxHeld, conn.rx, this.rxWindow - (conn.rxLen + conn.rxHeadRead));
    conn.rxLen += took;
    const moved = took > 0;
    const s = conn.stream;
    if (s && !s.destroyed) {
      if (conn.rxHeld.length) s.pause();
      else if (s.isPaused()) s.resume();
    }
    if (moved) this.netEvent(c, conn, { t: 'rx_new' });
    if (!conn.rxHeld.length && conn.rxEndHeld) {
      conn.rxEndHeld = false;
      this.netEvent(c, conn, { t: 'remote_close' });
    }
  }

  private startTls(c: SocketCtrl, conn: Conn): void {
    const raw = conn.raw!;
    const host = c.domain;
    const verify = !!(c.ca || c.cert);
    const opts: tls.ConnectionOptions = {
      socket: raw,
      rejectUnauthorized: false,
      host: host || c.onlineIp,
      ca: c.ca,
      cert: c.cert,
      key: c.key,
      passphrase: c.pwd,
    };
    if (host && !net.isIP(host)) opts.servername = host;
    let t: tls.TLSSocket;
    try {
      t = tls.connect(opts);
    } catch (e) {
      this.after(0, () => this.netEvent(c, conn, { t: 'tls_fail', msg: (e as Error).message }));
      return;
    }
    conn.stream = t;
    t.on('error', (e) => this.netEvent(c, conn, { t: 'error', msg: e.message }));
    t.once('secureConnect', () => {
      if (verify) {
        // mbedTLS with MBEDTLS_SSL_VERIFY_REQUIRED: an empty CA chain fails, and the hostname
        // is checked only when the connect target was a name or IP string.
        let err: string | undefined;
        if (!c.ca) err = 'no CA certificate to verify the server against';
        else if (!t.authorized) {
          const why = String(t.authorizationError ?? 'not authorized');
          if (!(host === '' && /Hostname|IP/.test(why))) err = why;
        }
        if (err) {
          this.dbg(c, `TLS verify failed: ${err}`);
          t.destroy();
          this.netEvent(c, conn, { t: 'tls_fail', msg: err });
          return;
        }
      }
      this.netEvent(c, conn, { t: 'tls_ok' });
    });
    this.attachStream(c, conn, t);
  }

  private openUdp(c: SocketCtrl, conn: Conn, ip: string | undefined): void {
    if (c.tls) {
      // DTLS (UDP + TLS with PSK) is not emulated.
      this.env.log('socket: DTLS is not emulated by the simulator');
      this.after(0, () => this.netEvent(c, conn, { t: 'error', msg: 'DTLS not emulated' }));
      return;
    }
    const u = dgram.createSocket(ip && net.isIPv6(ip) ? 'udp6' : 'udp4');
    conn.udp = u;
    u.on('error', (e) => this.netEvent(c, conn, { t: 'error', msg: e.message }));
    u.on('message', (m, r) => {
      if (conn.dead) return;
      conn.dgrams.push({ data: m, ip: r.address, port: r.port });
      this.netEvent(c, conn, { t: 'rx_new' });
    });
    // loopback only: the simulated network never opens a port on the host's other interfaces
    u.bind({ port: c.localPort || 0, address: '127.0.0.1' }, () => this.netEvent(c, conn, { t: ip === undefined ? 'listen' : 'connect_ok' }));
  }

  private openServer(c: SocketCtrl, conn: Conn): void {
    const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    conn.server = srv;
    srv.on('connection', (s) => {
      if (conn.dead) {
        s.destroy();
        return;
      }
      s.on('error', () => {});
      conn.pending.push(s);
      this.netEvent(c, conn, { t: 'new_connect' });
    });
    srv.on('error', (e) => this.netEvent(c, conn, { t: 'error', msg: e.message }));
    srv.listen({ port: c.localPort, host: '127.0.0.1' }, () => this.netEvent(c, conn, { t: 'listen' }));
  }

  /** Destroy the Node handles of a socket; no more events from it. The slot stays taken. */
  private killHandles(conn: Conn): void {
    if (conn.dead) return;
    conn.dead = true;
    conn.failed = true;
    this.cancel(conn.closeTimer);
    conn.stream?.destroy();
    conn.raw?.destroy();
    if (conn.udp) {
      try {
        conn.udp.close();
      } catch {
        /* already closed */
      }
    }
    if (conn.server) conn.server.close();
    for (const s of conn.pending) s.destroy();
    conn.pending = [];
    conn.rx = [];
    conn.rxLen = 0;
    conn.rxHeadRead = 0;
    conn.rxHeld = [];
    conn.rxEndHeld = false;
    conn.dgrams = [];
  }

  private freeConn(conn: Conn): void {
    this.killHandles(conn);
    this.slots.delete(conn.id);
  }

  /** NA:1707-1716, network_socket_force_close: drop the socket only. */
  private socketForceClose(c: SocketCtrl): void {
    if (c.conn) this.freeConn(c.conn);
    c.conn = undefined;
  }

  /** NA:1795-1824, network_force_close_socket (`socket.close`): drop the socket and the pending operation; state unchanged. */
  private forceCloseSocket(c: SocketCtrl): void {
    this.socketForceClose(c);
    c.needClose = false;
    c.newRx = false;
    c.dnsIps = [];
    c.dnsIdx = 0;
    c.dnsToken++;
    c.domain = '';
    c.wait = W.NONE;
  }

  private releaseCtrl(c: SocketCtrl): void {
    this.forceCloseSocket(c);
    c.released = true;
    c.cb?.release();
    c.cb = undefined;
    c.task = undefined;
    this.ctrls.delete(c);
  }

  /** Start a graceful TCP close (NA:1685-1693, network_socket_disconnect). 0 = started, -1 = failed. */
  private socketDisconnect(c: SocketCtrl): number {
    const conn = c.conn!;
    if (conn.kind === 'server') {
      conn.closing = true;
      conn.server?.close();
      this.after(0, () => this.netEvent(c, conn, { t: 'close_ok' }));
      return 0;
    }
    const s = conn.stream;
    if (!s || s.destroyed || conn.dead) return -1;
    conn.closing = true;
    s.end(() => this.netEvent(c, conn, { t: 'close_ok' }));
    conn.closeTimer = this.after(this.net.closeTimeoutMs ?? 10000, () => this.netEvent(c, conn, { t: 'close_ok' }));
    return 0;
  }

  /** NA:2347-2402, network_close (non-blocking part). 0 = closed now, 1 = CLOSED event follows. */
  private networkClose(c: SocketCtrl): number {
    const old = c.state;
    c.autoMode = true;
    c.needClose = false;
    c.newRx = false;
    if (!c.conn) {
      c.state = S.OFF_LINE;
      c.wait = W.NONE;
      return 0;
    }
    c.state = S.DISCONNECTING;
    c.wait = W.OFF_LINE;
    if (old === S.ONLINE && c.isTcp && !this.socketDisconnect(c)) return 1;
    this.forceCloseSocket(c);
    c.state = S.OFF_LINE;
    c.wait = W.NONE;
    return 0;
  }

  /** NA:2437-2531 (network_tx, non-blocking part; network_base_tx NA:220-247). result -1/0/1 and bytes accepted. */
  private networkTx(c: SocketCtrl, data: Uint8Array, ip: string | undefined, port: number): { result: number; txLen: number } {
    const conn = c.conn;
    if (c.needClose || !conn || c.state !== S.ONLINE) return { result: -1, txLen: -1 };
    c.autoMode = true;
    const fail = () => {
      c.needClose = true;
      return { result: -1, txLen: -1 };
    };
    const len = data.length;
    if (conn.kind === 'server' || conn.dead) return fail();
    if (conn.kind === 'tcp') {
      const s = conn.stream;
      if (!s || s.destroyed || s.writableEnded) return fail();
      const pending = c.txSize - c.ackSize;
      if (len && pending > 0 && pending + len > this.txBufferBytes) return { result: 0, txLen: 0 };
      if (len) {
        c.txSize += len;
        s.write(Buffer.from(data), (err) => {
          if (err) this.netEvent(c, conn, { t: 'error', msg: err.message });
          else this.netEvent(c, conn, { t: 'tx_ok', n: len });
        });
      }
    } else {
      const u = conn.udp;
      const dest = ip ?? c.onlineIp;
      const dport = ip ? port : c.remotePort;
      if (!u || !dest || len > 65507) return fail();
      try {
        // hermetic (src/sim/network.ts): a datagram outside loopback is dropped, as a lost one would be
        if (!mayReach(this.net, dest)) {
          this.dbg(c, `udp to ${unreachableText(dest)}: dropped`);
          this.after(0, () => this.netEvent(c, conn, { t: 'tx_ok', n: len }));
        } else {
          u.send(data, dport, dest, (err) => {
            if (err) this.netEvent(c, conn, { t: 'error', msg: err.message });
            else this.netEvent(c, conn, { t: 'tx_ok', n: len });
          });
        }
      } catch {
        return fail(); // e.g. destination port 0
      }
      c.txSize += len;
    }
    c.wait = W.TX_OK;
    return { result: 1, txLen: len };
  }

  /**
   * NA:2565-2684, network_rx with no buffer (NA:2624-2671): bytes waiting (TCP) or the next
   * datagram's length (UDP) (NA:1717-1718); -1 on failure (NA:2568-2571).
   *
   * TLS: NOT the total. With no buffer, network_rx's tls_mode branch calls `mbedtls_ssl_read(ssl, NULL, 0)`
   * and answers `ssl->in_msglen`: what is left of the ONE record being read (openLuat/LuatOS
   * components/network/adapter/luat_network_adapter.c, network_rx, the `else` branch of `if (data)`,
   * NA:2626-2665; commit 00286331). l_socket_rx (LS:723, components/network/adapter/luat_lib_socket.c)
   * sizes its read
   * to that answer, so one `socket.rx` takes at most one record (plaintext at most 2^14 bytes,
   * RFC 8446 section 5.1). Records are modelled by the TLS socket's 'data' chunks, capped at 2^14.
   */
  private rxTotal(c: SocketCtrl): number {
    const conn = c.conn;
    if ((c.needClose && !c.newRx) || !conn || c.state !== S.ONLINE) return -1;
    c.autoMode = true;
    if (conn.kind === 'tcp' && c.tls) return Math.min(conn.rx[0]?.length ?? 0, TLS_RECORD_MAX);
    if (conn.kind === 'tcp') return conn.rxLen;
    if (conn.kind === 'udp') return conn.dgrams.length ? conn.dgrams[0].data.length : 0;
    return 0;
  }

  /**
   * NA:2565-2684, network_rx with a buffer of `len` bytes (NA:2579-2623). TCP keeps the rest; UDP
   * returns one datagram per read (NA:1717-1718) and discards the rest of it.
   */
  private rxRead(c: SocketCtrl, len: number): { data: Buffer; ip?: string; port?: number } | undefined {
    const conn = c.conn;
    if ((c.needClose && !c.newRx) || !conn || c.state !== S.ONLINE) return undefined;
    c.newRx = false;
    if (conn.kind === 'tcp') {
      const parts: Buffer[] = [];
      let got = 0;
      while (got < len && conn.rx.length) {
        const head = conn.rx[0];
        const take = Math.min(head.length, len - got);
        parts.push(head.subarray(0, take));
        got += take;
        if (take === head.length) {
          // whole node read: RX_DONE gives its bytes back to the window (net_lwip2.c:1184-1189 at 05e31472)
          conn.rx.shift();
          conn.rxHeadRead = 0;
        } else {
          conn.rx[0] = head.subarray(take);
          conn.rxHeadRead += take;
        }
      }
      conn.rxLen -= got;
      // the window opened: the peer's next segments arrive as new data (a later turn, like lwIP)
      if (conn.rxHeld.length && conn.rxLen + conn.rxHeadRead < this.rxWindow) this.after(0, () => this.rxWindowFill(c, conn));
      return { data: Buffer.concat(parts) };
    }
    if (conn.kind === 'udp') {
      const d = conn.dgrams.shift();
      if (!d) return { data: Buffer.alloc(0) };
      return { data: d.data.subarray(0, Math.min(len, d.data.length)), ip: d.ip, port: d.port };
    }
    return { data: Buffer.alloc(0) };
  }

  // ---------------------------------------------------------------- SNTP

  private sntpStop(): void {
    const s = this.sntp;
    s.token++;
    this.cancel(s.timer);
    s.timer = undefined;
    if (s.sock) {
      try {
        s.sock.close();
      } catch {
        /* closed */
      }
      s.sock = undefined;
    }
    if (s.slot >= 0) this.slots.delete(s.slot);
    s.slot = -1;
  }

  /** SN: ntp_get + luat_sntp_connect: query the next server; when none is left, NTP_ERROR. */
  private sntpNext(): void {
    const s = this.sntp;
    this.cancel(s.timer);
    if (s.sock) {
      try {
        s.sock.close();
      } catch {
        /* closed */
      }
      s.sock = undefined;
    }
    if (s.nextIdx >= s.servers.length) {
      this.sntpFinish(false);
      return;
    }
    const host = s.servers[s.nextIdx++];
    const token = ++s.token;
    const port = s.port || 123;
    this.env.log(`sntp: query ${host}`);
    s.timer = this.after(this.net.sntpTimeoutMs ?? 2000, () => {
      if (s.token !== token) return;
      this.env.log(`sntp: timeout ${host}`);
      this.sntpNext();
    });
    if (!this.ready) return; // waits for the link; the timer moves on
    const lit = ipaddrAton(host);
    const go = (ip: string) => {
      if (s.token !== token || this.down) return;
      const u = dgram.createSocket(net.isIPv6(ip) ? 'udp6' : 'udp4');
      s.sock = u;
      u.on('error', () => {
        /* lwIP reports no ICMP errors on UDP: wait for the timeout */
      });
      u.on('message', (m) => {
        if (s.token !== token) return;
        if (m.length < 44) return; // "The response packet is invalid": wait for the timeout
        this.sntpResponse(m);
      });
      u.bind(0, '127.0.0.1', () => {
        if (s.token !== token) return;
        if (!mayReach(this.net, ip)) return; // no answer, the timeout moves on
        if (!(this.localNtp && port === 123 && isLoopbackAddress(ip))) {
          u.send(this.sntpRequest(), port, ip);
          return;
        }
        // loopback port 123 is the simulated network's SNTP server (sim-env.ts sntpServer)
        this.ntpServer ??= startSntpServer();
        this.ntpServer.then(
          (srv) => s.token === token && !this.down && u.send(this.sntpRequest(), srv.port, '127.0.0.1'),
          (e: Error) => this.env.log(`sntp: the simulated network's SNTP server did not start: ${e.message}`),
        );
      });
    };
    if (lit) go(lit);
    else if (this.localNtp && DEFAULT_SNTP_SERVERS.includes(host.toLowerCase())) go('127.0.0.1');
    else
      this.resolve(host).then(
        (ips) => (ips.length ? go(ips[0]) : s.token === token && this.sntpNext()),
        () => s.token === token && this.sntpNext(),
      );
  }

  /** The 48-byte SNTP request; the transmit timestamp is filled once synced (SN: luat_sntp_callback, CONNECT). */
  private sntpRequest(): Buffer {
    const s = this.sntp;
    const b = Buffer.alloc(48);
    b[0] = 0x1b;
    if (s.diffSec > 0) {
      const t = this.ticks();
      const llSec = Math.floor(t / 1000);
      const llMs = t % 1000;
      const rtMs = (s.diffSec + llSec) * 1000 + s.diffMs + llMs + s.delayMs;
      const rtSec = (Math.floor(rtMs / 1000) + NTP_UNIX_OFFSET) >>> 0;
      const rtUsh = Number(BigInt.asUintN(32, BigInt((rtMs % 1000) * 1000) * 4295n));
      b.writeUInt32BE(rtSec, 40);
      b.writeUInt32BE(rtUsh, 44);
    }
    return b;
  }

  /** SN: luat_sntp_callback, EVENT: set the clock offset and the network delay estimate. */
  private sntpResponse(m: Buffer): void {
    const s = this.sntp;
    const p = Buffer.alloc(48);
    m.copy(p, 0, 0, Math.min(48, m.length));
    const t = this.ticks();
    const llSec = Math.floor(t / 1000);
    const llMs = t % 1000;
    const u32 = (off: number, plus: number): number => {
      const v = p.readUInt32BE(off);
      if (plus && v === 0) return 0;
      if (plus === 0) return Math.floor(v / 4295);
      return v > NTP_UNIX_OFFSET ? v - NTP_UNIX_OFFSET : (v + 0x7c558180) >>> 0;
    };
    const otSec = u32(24, 1);
    const otTt = otSec * 1000 + Math.floor(u32(28, 0) / 1000);
    const rtTt = u32(32, 1) * 1000 + Math.floor(u32(36, 0) / 1000);
    const ttSec = u32(40, 1);
    const ttMs = Math.floor(u32(44, 0) / 1000);
    const ttTt = ttSec * 1000 + ttMs;
    const mtTt = ((s.diffSec % 2 ** 32) + llSec) * 1000 + s.diffMs + llMs;
    const total = Math.trunc((((rtTt - otTt + (mtTt - ttTt)) | 0) as number) / 2);
    s.diffSec = (ttSec - llSec) >>> 0;
    if (ttMs < llMs) {
      s.diffSec = Math.max(0, s.diffSec - 1);
      s.diffMs = llMs - ttMs; // sic: the firmware's arithmetic
    } else s.diffMs = ttMs - llMs;
    if (otSec !== 0) {
      if (s.ndelayC === 0) s.ndelayC = 8;
      if (s.delayMs === 0) s.ndelay.fill(total);
      else {
        s.ndelay.copyWithin(0, 1);
        s.ndelay[7] = total;
      }
      let sum = 0;
      for (let i = 0; i < s.ndelayC; i++) sum = (sum + s.ndelay[i]) | 0;
      if (sum < 0) sum = 0;
      s.delayMs = Math.trunc(sum / s.ndelayC);
    }
    this.env.log(`sntp: unix time ${ttSec}`);
    this.sntpFinish(true);
  }

  private sntpFinish(ok: boolean): void {
    this.sntpStop();
    this.sntp.running = false;
    this.sntp.nextIdx = 0;
    this.publish(ok ? 'NTP_UPDATE' : 'NTP_ERROR');
  }

  // ---------------------------------------------------------------- Lua functions

  install(): void {
    const L = this.vm.L;
    lauxlib.luaL_newmetatable(L, to_luastring(NW_CTRL_TYPE));
    lua.lua_pop(L, 1);
    const fns: Record<string, LuaLibFn> = {
      create: (a) => this.lCreate(a),
      debug: (a) => this.lDebug(a),
      config: (a) => this.lConfig(a),
      linkup: (a) => this.lLinkup(a),
      connect: (a) => this.lConnect(a),
      discon: (a) => this.lDiscon(a),
      close: (a) => this.lClose(a),
      tx: (a) => this.lTx(a),
      rx: (a) => this.lRx(a),
      read: (a) => this.lRead(a),
      wait: (a) => this.lWait(a),
      listen: (a) => this.lListen(a),
      accept: (a) => this.lAccept(a),
      state: (a) => this.lState(a),
      release: (a) => this.lRelease(a),
      setDNS: (a) => this.lSetDns(a),
      sslLog: (a) => {
        a.optInt(1, 1);
        return [];
      },
      localIP: (a) => this.lLocalIp(a),
      remoteIP: (a) => this.lRemoteIp(a),
      adapter: (a) => this.lAdapter(a),
      dft: (a) => this.lDft(a),
      close_all: (a) => this.lCloseAll(a),
      rx_cache: (a) => this.lRxCache(a),
      sntp: (a) => this.lSntp(a),
      ntptm: () => this.lNtptm(),
      sntp_port: (a) => this.lSntpPort(a),
    };
    const consts: Record<string, LuaIn> = { ...ADAPTERS, ...SOCKET_EVENTS };
    this.vm.registerLib('socket', fns, consts);
  }

  /** `socket.create(adapter?, cb|taskName?)` LS:229: userdata, or nil (bad/unregistered adapter, no free ctrl). */
  private lCreate(a: LuaArgs): LuaIn[] {
    const ad = a.optInt(1, this.defaultAdapter);
    if (ad < 0 || ad >= ADAPTER_QTY) return [null];
    if (!this.registered(ad) || this.ctrlsInUse() >= this.maxSockets) return [null];
    const c = new SocketCtrl(ad);
    if (a.isFunction(2)) c.cb = a.fnRef(2);
    else if (a.isString(2) || a.isNumber(2)) c.task = a.bytes(2);
    this.ctrls.add(c);
    const handle = new CtrlHandle(c);
    this.finalizer.register(handle, c);
    return [this.vm.newUserdata(handle, NW_CTRL_TYPE)];
  }

  /** `socket.debug(c, onoff)`: nothing. When on, state-machine steps go to the module log. */
  private lDebug(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    if (a.isBoolean(2)) c.debug = a.truthy(2);
    return [];
  }

  /** `socket.config(c, lport?, is_udp?, is_tls?, idle?, intvl?, cnt?, ca?, cert?, key?, pwd?)` LS:316: true, or false when a certificate fails to load. */
  private lConfig(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    const lport = a.optInt(2, 0) & 0xffff;
    const udp = a.isBoolean(3) ? a.truthy(3) : false;
    const useTls = a.isBoolean(4) ? a.truthy(4) : false;
    const idle = a.optInt(5, 0);
    a.optInt(6, 0);
    a.optInt(7, 0);
    const str = (i: number) => (a.isString(i) || a.isNumber(i) ? Buffer.from(a.bytes(i)).toString('latin1') : undefined);
    const ca = str(8);
    const cert = str(9);
    const key = str(10);
    const pwd = str(11);
    c.isTcp = !udp;
    c.keepIdle = idle;
    c.localPort = lport;
    c.tls = useTls;
    c.ca = c.cert = c.key = c.pwd = undefined;
    if (!useTls) return [true];
    if (udp) return [true]; // DTLS PSK: accepted, connect fails (not emulated)
    c.ca = ca;
    c.cert = cert;
    c.key = key;
    c.pwd = pwd;
    try {
      if (ca) {
        const pems = ca.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
        if (pems) for (const p of pems) new X509Certificate(p);
        else new X509Certificate(Buffer.from(ca, 'latin1'));
      }
      if (cert) tls.createSecureContext({ cert, key, passphrase: pwd });
    } catch (e) {
      this.env.log(`socket: config: certificate failed to load: ${(e as Error).message}`);
      return [false];
    }
    return [true];
  }

  /** `socket.linkup(c)` LS:451: (true,true) adapter ready; (true,false) and LINK 0 later. */
  private lLinkup(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    c.autoMode = true;
    if (this.isReady(c.adapter)) {
      c.state = S.OFF_LINE;
      c.wait = W.NONE;
      return [this.b1(true), true];
    }
    c.state = S.LINK_OFF;
    c.wait = W.LINK_UP;
    return [this.b1(true), false];
  }

  /** `socket.connect(c, host|ipv4int, port, v6dns?)` LS:486: (true,false) and ON_LINE later; (false,false) when a socket is still open or it fails at once. */
  private lConnect(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    let intIp: string | undefined;
    let host = '';
    if (a.isInteger(2)) intIp = intToIp(a.int(2));
    else host = Buffer.from(a.bytes(2)).toString('latin1');
    const port = a.int(3) & 0xffff;
    // LS:486 l_socket_connect leaves `ip` NULL for an integer host and logs it with "%s"
    // (LLOGD "connect to %s,%d", luat_lib_socket.c:507): newlib prints "(null)" (another libc may
    // crash; the agent passes integer hosts as dotted text for that reason, issue 8 C10)
    this.dbg(c, `connect to ${intIp !== undefined ? '(null)' : host},${port}`);
    // NA:2173-2234, network_connect (a socket still open: -1, NA:2176-2179)
    if (c.conn) return [this.b1(false), false];
    c.serverMode = false;
    c.txSize = 0;
    c.ackSize = 0;
    c.dnsIps = [];
    c.needClose = false;
    c.domain = host;
    c.remoteIp = intIp;
    c.autoMode = true;
    c.remotePort = port;
    c.wait = W.ON_LINE;
    c.dnsToken++;
    if (!this.isReady(c.adapter)) {
      c.state = S.LINK_OFF;
      return [this.b1(true), false];
    }
    if (this.prepareConnect(c)) {
      c.state = S.OFF_LINE;
      c.wait = W.NONE;
      return [this.b1(false), false];
    }
    return [this.b1(true), false];
  }

  /** `socket.discon(c)` LS:560: (true,false) + CLOSED 0 for an online TCP socket; (true,true) otherwise. */
  private lDiscon(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    const r = this.networkClose(c);
    return [this.b1(r >= 0), r === 0];
  }

  /** `socket.close(c)`: force close, no event, state unchanged; nothing. */
  private lClose(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (c) this.forceCloseSocket(c);
    return [];
  }

  /**
   * `socket.tx(c, str|zbuff, ip?, port?, flag?)` LS:599: (true,false,false) queued, TX_OK later;
   * (true,true,true) buffer full, nothing accepted; failure (false,true,false): the middle value
   * is uninitialised on the module (tx_len), the emulation returns true.
   */
  private lTx(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    const data = a.isString(2) || a.isNumber(2) ? a.bytes(2) : zbuffUsedBytes(checkZbuff(a, 2));
    let ip: string | undefined;
    if (a.isInteger(3)) ip = intToIp(a.int(3));
    else if (a.isString(3) || a.isNumber(3)) ip = ipaddrAton(Buffer.from(a.bytes(3)).toString('latin1'));
    a.optInt(5, 0);
    const port = a.optInt(4, 0) & 0xffff;
    const r = this.networkTx(c, data, ip, port);
    if (r.result < 0) return [this.b1(false), true, false];
    return [this.b1(true), r.txLen !== data.length, r.result === 0];
  }

  /**
   * `socket.rx(c, zbuff?, flag?, limit?)` LS:723: (false,0) failed/not online; (true,0) nothing;
   * no zbuff: (true, pending); TCP (true,n,nil,nil); UDP (true,n,ip5,port). Appends at used.
   */
  private lRx(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    const total = this.rxTotal(c);
    if (total < 0) return [this.b1(false), 0];
    if (total === 0) return [this.b1(true), 0];
    if (a.type(2) !== 'userdata') return [this.b1(true), total];
    const z = checkZbuff(a, 2);
    let want = total;
    if (a.count >= 4 && a.isInteger(4)) {
      const limit = a.int(4) >>> 0;
      if (want > limit) want = limit;
    }
    if (z.len - z.used < want) z.resize(want + z.used);
    const got = this.rxRead(c, want);
    if (!got) return [this.b1(false), 0];
    if (!got.data.length) return [this.b1(true), 0];
    zbuffAppend(z, got.data);
    if (c.isTcp) return [this.b1(true), got.data.length, null, null];
    return [this.b1(true), got.data.length, ipToLuatBytes(got.ip!), got.port!];
  }

  /** `socket.read(c, limit?)` LS:867: (false); (true,""); TCP (true,data); UDP (true,data,ip5,port). */
  private lRead(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    const total = this.rxTotal(c);
    if (total < 0) return [false];
    if (total === 0) return [true, ''];
    let want = total;
    if (a.count >= 2 && a.isInteger(2)) {
      const limit = a.int(2) >>> 0;
      if (limit > 0 && want > limit) want = limit;
    }
    const got = this.rxRead(c, want);
    if (!got) return [false];
    if (!got.data.length) return [true, ''];
    if (c.isTcp) return [true, new Uint8Array(got.data)];
    return [true, new Uint8Array(got.data), ipToLuatBytes(got.ip!), got.port!];
  }

  /** `socket.wait(c)` LS:969: (true,true) data pending; (true,false) EVENT later; (false,false) not online (NA:2686-2705, network_wait_event). */
  private lWait(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    if (c.newRx) {
      c.wait = W.EVENT;
      return [this.b1(true), true];
    }
    if (c.needClose || !c.conn || c.state !== S.ONLINE) return [this.b1(false), false];
    c.autoMode = true;
    c.wait = W.EVENT;
    return [this.b1(true), false];
  }

  /**
   * `socket.listen(c, n?)` LS:993: (true,false), ON_LINE 0 when a client connects (listens on
   * 127.0.0.1 at the config'd local port); (false,false) when a socket is already open. With
   * n > 0 the server stays in state 6 and reports every client; without, it goes to state 5 at
   * the first client. NA:2266-2302, network_listen.
   */
  private lListen(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    if (c.state === S.LISTEN) return [this.b1(true), this.net.acceptMode === 'single'];
    if (c.conn) return [this.b1(false), false];
    c.serverMode = true;
    c.autoMode = true;
    c.needClose = false;
    c.maxWaitAccept = a.isInteger(2) ? Math.max(0, a.int(2)) : 0;
    c.wait = W.ON_LINE;
    if (!this.isReady(c.adapter)) {
      c.state = S.LINK_OFF;
      return [this.b1(true), false];
    }
    if (this.baseConnect(c, undefined)) {
      this.socketForceClose(c);
      c.state = S.OFF_LINE;
      c.wait = W.NONE;
      return [this.b1(false), false];
    }
    c.state = S.CONNECTING;
    return [this.b1(true), false];
  }

  /**
   * `socket.accept(c, cb|name?)` LS:1036: (true, new_ctrl, ip, port) or (false, nil). The new ctrl
   * copies the listener's settings and is ONLINE, without `auto_mode` (NA:1645-1682,
   * network_socket_accept; the multi-client branch NA:1663-1681).
   */
  private lAccept(a: LuaArgs): LuaIn[] {
    const old = this.ctrlArg(a);
    if (!old) return [];
    const conn = old.conn;
    if (this.net.acceptMode === 'single') return this.acceptSingle(old);
    if (this.ctrlsInUse() >= this.maxSockets || !conn || conn.kind !== 'server') return [this.b1(false), null];
    let s = conn.pending.shift();
    while (s && s.destroyed) s = conn.pending.shift();
    if (!s) return [this.b1(false), null];
    const id = this.allocSlot();
    if (id < 0) {
      s.destroy();
      return [this.b1(false), null];
    }
    const c = new SocketCtrl(old.adapter);
    if (a.isFunction(2)) c.cb = a.fnRef(2);
    else if (a.isString(2) || a.isNumber(2)) c.task = a.bytes(2);
    c.isTcp = old.isTcp;
    c.keepIdle = old.keepIdle;
    c.localPort = old.localPort;
    c.state = S.ONLINE;
    const nc = new Conn(id, 'tcp');
    nc.raw = s;
    c.conn = nc;
    c.onlineIp = s.remoteAddress?.replace(/^::ffff:/, '');
    c.remotePort = s.remotePort ?? 0;
    s.removeAllListeners('error');
    s.on('error', (e) => this.netEvent(c, nc, { t: 'error', msg: e.message }));
    s.setNoDelay(true);
    this.attachStream(c, nc, s);
    s.resume();
    this.ctrls.add(c);
    const handle = new CtrlHandle(c);
    this.finalizer.register(handle, c);
    return [this.b1(true), this.vm.newUserdata(handle, NW_CTRL_TYPE), c.onlineIp ?? null, c.remotePort];
  }

  /**
   * Single-client accept (adapters with `no_accept`): the listening ctrl itself becomes the
   * connection; (true, nil, ip, port). The C call reports success even with no client waiting
   * (NA:1652-1657, network_socket_accept ignores the adapter's answer and returns 0).
   */
  private acceptSingle(c: SocketCtrl): LuaIn[] {
    const conn = c.conn;
    let s = conn && conn.kind === 'server' ? conn.pending.shift() : undefined;
    while (s && s.destroyed) s = conn!.pending.shift();
    if (!conn || !s) return [this.b1(true), null, null, 0];
    this.killHandles(conn);
    const nc = new Conn(conn.id, 'tcp');
    nc.raw = s;
    c.conn = nc;
    c.serverMode = false;
    c.state = S.ONLINE;
    c.onlineIp = s.remoteAddress?.replace(/^::ffff:/, '');
    c.remotePort = s.remotePort ?? 0;
    s.removeAllListeners('error');
    s.on('error', (e) => this.netEvent(c, nc, { t: 'error', msg: e.message }));
    s.setNoDelay(true);
    this.attachStream(c, nc, s);
    s.resume();
    return [this.b1(true), null, c.onlineIp ?? null, c.remotePort];
  }

  /** `socket.state(c)`: (state, Chinese description). */
  private lState(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (!c) return [];
    return [c.state, STATE_STRINGS[Math.min(c.state, 8)]];
  }

  /** `socket.release(c)`: force close and free the ctrl; nothing. Later calls on it return nothing. */
  private lRelease(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    if (c) this.releaseCtrl(c);
    return [];
  }

  /** `socket.setDNS(adapter?, index?, ip)`: true (false for an adapter index out of range). */
  private lSetDns(a: LuaArgs): LuaIn[] {
    const ad = a.optInt(1, this.defaultAdapter);
    if (ad < 0 || ad >= ADAPTER_QTY) return [false];
    const idx = a.optInt(2, 1) - 1;
    const ip = a.isInteger(3) ? intToIp(a.int(3)) : ipaddrAton(Buffer.from(a.bytes(3)).toString('latin1'));
    if (this.registered(ad) && idx >= 0 && idx < 2) {
      if (ip) this.dnsServers[idx] = ip;
      else this.dnsServers.splice(idx, 1);
      this.dnsServers = this.dnsServers.filter(Boolean);
    }
    return [true];
  }

  /** `socket.localIP(adapter?)`: (ip, mask, gw, nil) when ready, else nothing. */
  private lLocalIp(a: LuaArgs): LuaIn[] {
    const ad = a.optInt(1, this.defaultAdapter);
    if (ad < 0 || ad >= ADAPTER_QTY || !this.isReady(ad)) return [];
    return [this.net.localIp ?? '127.0.0.1', this.net.netmask ?? '255.0.0.0', this.net.gateway ?? '0.0.0.0', null];
  }

  /** `socket.remoteIP(c)`: 4 values, the resolved IPs of the last connect by name, or nils. */
  private lRemoteIp(a: LuaArgs): LuaIn[] {
    const c = this.ctrlArg(a);
    const ips: LuaIn[] = c ? c.dnsIps.slice(0, 4) : [];
    while (ips.length < 4) ips.push(null);
    return ips;
  }

  /** `socket.adapter(i?)`: (ready, i); no argument: first ready adapter in 1..18, or (false, 18). */
  private lAdapter(a: LuaArgs): LuaIn[] {
    const idx = a.optInt(1, -1);
    if (idx > 0 && idx < ADAPTER_QTY) return [this.isReady(idx), idx];
    for (let i = 1; i < ADAPTER_QTY; i++) if (this.isReady(i)) return [true, i];
    return [false, ADAPTER_QTY - 1];
  }

  /** `socket.dft(id?)`: set the default adapter; returns (default, last registered = LWIP_GP). */
  private lDft(a: LuaArgs): LuaIn[] {
    if (a.isInteger(1)) {
      const id = a.int(1);
      if (id >= 0 && id < ADAPTER_QTY) this.defaultAdapter = id;
    }
    return [this.defaultAdapter, ADAPTERS.LWIP_GP];
  }

  /** `socket.close_all(adapter)`: `discon` every socket of the adapter; true (false for a bad index). */
  private lCloseAll(a: LuaArgs): LuaIn[] {
    const ad = a.optInt(1, this.defaultAdapter);
    if (ad < 0 || ad >= ADAPTER_QTY) return [false];
    for (const c of [...this.ctrls]) if (c.adapter === ad && c.conn) this.networkClose(c);
    return [true];
  }

  /**
   * `socket.rx_cache(n?)`: the lwIP receive-cache block count of the build (not bytes, not a
   * per-socket limit): `rxCacheBlocks`, 32 by default (6 on EC718/716 builds). Issue 8 part C7
   * and docs/firmware/luatos.md; the stored LuatOS sources (luat_lib_socket.c at c8458c1 and
   * 02a7691) have no `rx_cache`, so the function body is unverified: an argument is accepted
   * and does not change the count.
   */
  private lRxCache(_a: LuaArgs): LuaIn[] {
    return [this.rxCacheBlocks];
  }

  /** `socket.sntp(server|{servers}?, adapter?)` SN:l_sntp_get (luat_lib_sntp.c:97-145): nothing; NTP_UPDATE or NTP_ERROR published later. */
  private lSntp(a: LuaArgs): LuaIn[] {
    const s = this.sntp;
    const L = a.L;
    if (a.isString(1) || a.isNumber(1)) {
      const name = Buffer.from(a.bytes(1)).toString('latin1');
      if (name.length < 31) s.servers[0] = name;
      else this.env.log(`sntp: server_addr too long ${name}`);
    } else if (a.isTable(1)) {
      const count = Math.min(lua.lua_rawlen(L, 1), 3);
      for (let i = 1; i <= count; i++) {
        lua.lua_geti(L, 1, i);
        const b = lauxlib.luaL_checklstring(L, -1) as Uint8Array;
        lua.lua_pop(L, 1);
        const name = Buffer.from(b).toString('latin1');
        if (name.length < 31) s.servers[i - 1] = name;
        else this.env.log(`sntp: server_addr too long ${name}`);
      }
    }
    if (s.running) {
      this.env.log('sntp: sntp is running');
      return [];
    }
    let ad = a.optInt(2, this.defaultAdapter);
    if (ad === -1) ad = this.defaultAdapter;
    if (ad < 0 || ad >= ADAPTER_QTY || !this.registered(ad) || this.ctrlsInUse() >= this.maxSockets) {
      this.publish('NTP_ERROR');
      return [];
    }
    s.running = true;
    s.nextIdx = 0;
    s.slot = this.allocSlot();
    // Start on the module loop, never inside the Lua call.
    this.env.post(() => {
      if (!this.down && s.running) this.sntpNext();
    });
    return [];
  }

  /**
   * `socket.ntptm()` SN:l_sntp_tm (luat_lib_sntp.c:175-211): {tsec, tms, vaild, ndeley, ssec, sms, lsec, lms}. `tsec` is
   * Unix seconds (the code converts the NTP era, whatever the doc says) and every value is pushed
   * with lua_pushinteger, so with the module's 32-bit integers it wraps (from 2038 for tsec).
   * The delay field is spelled `ndeley`: openLuat/LuatOS commit bba8964,
   * components/network/libsntp/luat_lib_sntp.c:179 (`lua_setfield(L, -2, "ndeley")`); only the doc
   * comment above it (:166) says `ndelay`. No stored LuatOS source sets an `ndelay` key, so the
   * simulator follows bba8964 and sets `ndeley` only.
   */
  private lNtptm(): LuaIn[] {
    const s = this.sntp;
    const t = this.ticks();
    const llSec = Math.floor(t / 1000);
    const llMs = t % 1000;
    const tmp = (llSec + s.diffSec) * 1000 + llMs + s.diffMs;
    const tm: { [k: string]: LuaIn } = {
      ndeley: toInt32(s.delayMs),
      ssec: toInt32(s.diffSec),
      sms: s.diffMs,
      tsec: toInt32(Math.floor(tmp / 1000)),
      tms: (tmp % 1000) & 0xffff,
      lsec: toInt32(llSec),
      lms: llMs,
    };
    if (s.diffSec > 0) tm.vaild = true;
    return [tm];
  }

  /** `socket.sntp_port(p?)` SN:l_sntp_port (luat_lib_sntp.c:222-231): sets the port when p is a number > 0; returns the port (default 123). */
  private lSntpPort(a: LuaArgs): LuaIn[] {
    if (a.isNumber(1)) {
      const p = a.int(1) & 0xffff;
      if (p > 0) this.sntp.port = p;
    }
    return [this.sntp.port || 123];
  }
}

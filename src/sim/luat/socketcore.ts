/**
 * Emulated `socketcore` of the simulated Air724UG (RDA8910 core), backed by real Node
 * sockets (node:net, node:dgram, node:tls; names: src/sim/network.ts), so the module really talks to
 * servers (in the tests: on 127.0.0.1).
 *
 * Model (docs/firmware/luat-socketcore.md, socketcore functions, from the CSDK's
 * tcpipsock.c / platform_socket.c; `tcpipsock.c:N` and `platform_socket.c:N` are lines of
 * openLuat/Luat_CSDK_Air724U at commit 9fa34023, app/elua/modules/src/ and
 * app/elua/platform/openat/src/): 10 slots (LUA_MAX_SOCKET_SUPPORT, platform_socket.c:25);
 * results arrive as rtos messages, tables
 * `{id, socket_index, result[, send_len | recv_len]}` posted to the core queue.
 * - `sock_conn` / `sock_conn_ext`: index at once, MSG_SOCK_CONN_CNF later (0 ok, 1 fail);
 *   UDP gets its success CNF at once (no handshake); `_ext` returns -1 (no slot, address over
 *   100 characters, bad type) or -2 (synchronous DNS failure).
 * - `sock_send`: two integers (ok 1/0, ERR_*). Not connected / invalid: 0 and NO CNF. TCP:
 *   SEND_CNF when the acknowledged bytes equal `readySendLen` exactly; `readySendLen` is
 *   overwritten by the next send, so two overlapping sends leave no SEND_CNF ever again on that
 *   socket (platform_socket.c:428-447 `platform_socket_sendAckCnf`; `readySendLen = length` at
 *   platform_socket.c:719 in `platform_socket_send`). SSL: when every byte of the send is written (one CNF
 *   for overlapping sends, with the second length). UDP: CNF after sendto.
 *   Length is a uint16 (data over 65535 bytes is cut to `len & 0xffff`).
 * - RECV_IND announces at most 2048 bytes (LUA_MAX_RECV_IND_LEN, platform_socket.c:35;
 *   `platform_socket_recvInd` posts only when nothing is announced, :281-323); the next one is
 *   posted only after that amount was read with `sock_recv` (:876-904). UDP: one datagram per
 *   RECV_IND (a shorter read drops the rest; `reqLen = 0` after any UDP read, :879-880).
 * - Remote close: CLOSE_IND 500 ms after FIN/RST even with data unread; a completed read restarts the 500 ms.
 * - `sock_close` closes at once and posts CLOSE_CNF (its result is uninitialised on the module:
 *   here an arbitrary number), and returns 1 with a CLOSE_CNF even for a free slot; the slot is
 *   reusable only after `sock_destroy`, which returns 1 only in the CLOSE state (after
 *   `sock_close`, CLOSE_IND or a failed CONN_CNF).
 * - `sock_recv(i, 0)` asserts in the core: the module reboots (platform_socket.c:827).
 * - `sock_setopt`: 0 / -1, only the lwIP option pairs, a non-number value gives -1; a non-integer
 *   idx, level or opt raises "bad argument" (luaL_checkinteger).
 * - `sock_getremainbuf`: free bytes of the send buffer (later cores only: feature flag).
 * Differences from the module: docs/fidelity-luat.md.
 */
import net from 'node:net';
import dgram from 'node:dgram';
import tls from 'node:tls';
import { mayReach, simResolve, unreachableText, type SimNet } from '../network.js';
import { LuaRaise, type LuaArgs, type LuaIn, type LuaVm } from '../lua-vm.js';
import type { RtosLoop, LuatMsgIds } from './loop.js';
import { fillFromHeld } from '../rx-window.js';

/** `socketcore.*` option constants (lwIP values, am_openat_socket.h). */
export const SOCKETCORE_OPTS = {
  SOL_SOCKET: 0xfff,
  IPPROTO_TCP: 6,
  SO_REUSEADDR: 0x04,
  SO_KEEPALIVE: 0x08,
  TCP_KEEPIDLE: 3,
  TCP_KEEPINTVL: 4,
  TCP_KEEPCNT: 5,
} as const;

/** `socketcore.ERR_*` (EINVAL 6 is not exported by the core). */
export const SOCKETCORE_ERRS = {
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

/** `LUA_MAX_RECV_IND_LEN`. */
export const MAX_RECV_IND = 2048;
/** `LUA_MAX_SOCKET_SUPPORT`. */
export const MAX_SOCKETS = 10;

/** Network behaviour of the simulated module. Every field is optional. */
export interface LuatNetworkOptions {
  /**
   * What the simulated module may reach (src/sim/network.ts): `'loopback'` resolves only `hosts`,
   * `localhost` and IP literals and connects only to 127.0.0.0/8; `'host'` uses the host's
   * resolver and network (`tether sim --net host`). @default 'loopback'
   */
  net?: SimNet;
  /** Static DNS, name (case-insensitive) -> IPv4. Checked before any resolver. */
  hosts?: Record<string, string>;
  /** Names whose DNS fails synchronously: `sock_conn_ext` returns -2 (`sock_conn`: index, then CONN_CNF 1). */
  dnsFailSync?: string[];
  /** TCP connect / TLS handshake timeout, ms (then CONN_CNF 1). @default 30000 */
  connectTimeoutMs?: number;
  /** TCP receive buffer, bytes: the peer is throttled while this much is unread (`recvBufferLen` argument overrides). @default 16384 */
  recvBufferBytes?: number;
  /** Send buffer per socket, bytes (`sock_getremainbuf`; a send past it fails with ERR_ENOBUFS). @default 65536 */
  sendBufferBytes?: number;
  /** Delay of CLOSE_IND after the peer's FIN/RST, ms. @default 500 */
  closeIndDelayMs?: number;
  /** Datagrams queued per UDP socket before new ones are dropped. @default 32 */
  udpQueue?: number;
}

/** Core features that differ between builds. */
export interface SocketcoreFeatures {
  /** `sock_conn_ext` exists. @default true */
  connExt?: boolean;
  /** `sock_getremainbuf` exists (absent from the CSDK 2021-05 core). @default true */
  getremainbuf?: boolean;
  /** `sock_setopt` exists (8910 core V0022 and later). @default true */
  setopt?: boolean;
}

/** What the library needs from the module. */
export interface SocketcoreHost {
  vm: LuaVm;
  loop: RtosLoop;
  msgIds: LuatMsgIds;
  network: LuatNetworkOptions;
  features: SocketcoreFeatures;
  /** Whether the data link is up (`link.isReady()`). */
  linkReady(): boolean;
  log(line: string): void;
  /**
   * The core asserted (e.g. `sock_recv(i, 0)`): the whole module reboots, the way the simulator
   * models a fatal error (src/sim/module.ts). Optional for hosts that cannot reboot: then a Lua
   * error is raised instead.
   */
  fatal?(message: string): void;
}

/** What tests can observe. */
export interface Socketcore {
  /** Slots allocated (not yet destroyed). */
  slotsInUse(): number;
  /** State of a slot, or undefined when free. */
  slotState(idx: number): SlotState | undefined;
  /** Node sockets still open. */
  openHandles(): number;
  /**
   * TCP bytes the core holds for slot `idx` and the app has not read yet (bytes), at most the
   * slot's receive buffer (the rest waits with the peer: closed window). 0 for a free slot.
   */
  rxUnread(idx: number): number;
  /** The data link went down: every connection breaks (CLOSE_IND), connects fail. */
  linkDown(): void;
  shutdown(): void;
}

export type SlotState = 'connecting' | 'connected' | 'closed' | 'peerclosed';

type MsgName = 'CONN_CNF' | 'SEND_CNF' | 'RECV_IND' | 'CLOSE_CNF' | 'CLOSE_IND';

interface CertTable {
  hostName?: string;
  caCert?: string;
  clientCert?: string;
  clientKey?: string;
}

class Slot {
  state: SlotState = 'connecting';
  ip = '';
  stream?: net.Socket | tls.TLSSocket;
  udp?: dgram.Socket;
  rx: Buffer[] = [];
  rxLen = 0;
  /**
   * TCP bytes Node delivered beyond the receive buffer: the core's lwIP would not have taken them
   * yet (its window is closed; the peer keeps them). Invisible to RECV_IND; moved into `rx` as the
   * app reads. See {@link SocketcoreImpl.rxFill}.
   */
  rxHeld: Buffer[] = [];
  /** The peer's FIN/close came while `rxHeld` was not empty: it counts once they went in. */
  finHeld = false;
  /** Bytes announced by the pending RECV_IND and not yet read. */
  reqLen = 0;
  indPending = false;
  dgrams: Buffer[] = [];
  /** Bytes written and not yet confirmed. */
  pending = 0;
  readySendLen = 0;
  /** TCP bytes acknowledged since the last SEND_CNF (platform_socket.c `alreadySendLen`, :435 at 9fa34023). */
  alreadySendLen = 0;
  /** Overlapping sends pushed alreadySendLen past readySendLen: SEND_CNF is gone for good. */
  cnfLost = false;
  peerGone = false;
  /** Lua took the CLOSE_IND message: the core closed the slot (conn_status CLOSE). */
  closeIndDelivered = false;
  /** The pending remote-close (CLOSE_IND) timer after the peer's FIN. */
  closeIndTimer?: NodeJS.Timeout;
  paused = false;
  timers = new Set<NodeJS.Timeout>();
  keepAlive = false;
  keepIdle = 0;
  opts = new Map<string, number>();
  constructor(
    readonly idx: number,
    readonly type: number,
    readonly addr: string,
    readonly port: number,
    readonly recvBuf: number,
    readonly localPort: number | undefined,
    readonly cert: CertTable | undefined,
    readonly insist: number,
  ) {}
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

export function installSocketcore(h: SocketcoreHost): Socketcore {
  const impl = new SocketcoreImpl(h);
  impl.install();
  return impl;
}

class SocketcoreImpl implements Socketcore {
  private readonly slots: Array<Slot | undefined> = new Array(MAX_SOCKETS).fill(undefined);
  private down = false;
  private junk = 0x2f3a;
  private readonly net: LuatNetworkOptions;

  constructor(private readonly h: SocketcoreHost) {
    this.net = h.network;
  }

  install(): void {
    const f = this.h.features;
    const fns: Record<string, (a: LuaArgs) => LuaIn[]> = {
      sock_conn: (a) => this.conn(a, false),
      sock_send: (a) => this.send(a),
      sock_close: (a) => this.close(a),
      sock_recv: (a) => this.recv(a),
      sock_destroy: (a) => this.destroy(a),
    };
    if (f.connExt ?? true) fns.sock_conn_ext = (a) => this.conn(a, true);
    if (f.setopt ?? true) fns.sock_setopt = (a) => this.setopt(a);
    if (f.getremainbuf ?? true) fns.sock_getremainbuf = (a) => this.remainbuf(a);
    this.h.vm.registerLib('socketcore', fns, { ...SOCKETCORE_OPTS, ...SOCKETCORE_ERRS });
  }

  // ---------------------------------------------------------------- Socketcore

  slotsInUse(): number {
    return this.slots.filter(Boolean).length;
  }

  slotState(idx: number): SlotState | undefined {
    return this.slots[idx]?.state;
  }

  rxUnread(idx: number): number {
    return this.slots[idx]?.rxLen ?? 0;
  }

  openHandles(): number {
    let n = 0;
    for (const s of this.slots) if (s && (s.stream || s.udp)) n++;
    return n;
  }

  linkDown(): void {
    for (const s of this.slots) {
      if (!s) continue;
      if (s.state === 'connecting') this.connFail(s, 'the data link went down');
      else if (s.state === 'connected') {
        this.kill(s);
        this.peerGone(s);
      }
    }
  }

  shutdown(): void {
    if (this.down) return;
    this.down = true;
    for (const s of this.slots) if (s) this.kill(s, true);
  }

  // ---------------------------------------------------------------- plumbing

  private post(s: Slot, name: MsgName, fields: { [k: string]: LuaIn }, onDeliver?: () => void): void {
    if (this.down || this.slots[s.idx] !== s) return;
    const id = (this.h.msgIds as unknown as Record<string, number>)[`MSG_SOCK_${name}`];
    this.h.loop.post({ table: { id, socket_index: s.idx, ...fields }, onDeliver });
  }

  private after(s: Slot, ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      s.timers.delete(t);
      if (!this.down && this.slots[s.idx] === s) fn();
    }, ms);
    s.timers.add(t);
  }

  /** Destroy the Node handles of a slot (and, with `all`, its timers). */
  private kill(s: Slot, all = true): void {
    if (all) {
      for (const t of s.timers) clearTimeout(t);
      s.timers.clear();
    }
    const st = s.stream;
    s.stream = undefined;
    if (st) {
      st.removeAllListeners('data');
      st.on('error', () => {});
      st.destroy();
    }
    const u = s.udp;
    s.udp = undefined;
    if (u) {
      u.removeAllListeners('message');
      try {
        u.close();
      } catch {
        /* already closed */
      }
    }
  }

  private slotArg(a: LuaArgs): Slot | undefined {
    const idx = a.int(1);
    return idx >= 0 && idx < MAX_SOCKETS ? this.slots[idx] : undefined;
  }

  /** Hermetic by default: see src/sim/network.ts (a deliberate difference, docs/fidelity.md). */
  private resolve(name: string, cb: (ip: string | undefined) => void): void {
    if (net.isIPv4(name)) return cb(name);
    const hosts = this.net.hosts ?? {};
    const key = Object.keys(hosts).find((k) => k.toLowerCase() === name.toLowerCase());
    if (key) return cb(hosts[key]);
    if (!HOSTNAME.test(name) || (this.net.dnsFailSync ?? []).some((n) => n.toLowerCase() === name.toLowerCase())) return cb(undefined);
    simResolve(this.net, name).then(
      (ips) => cb(ips[0]),
      () => cb(undefined),
    );
  }

  // ---------------------------------------------------------------- calls

  /** `sock_conn(type, addr, port[, cert][, recvBufferLen][, insist][, local_port][, hostNameFlag])`. */
  private conn(a: LuaArgs, ext: boolean): LuaIn[] {
    const type = a.int(1);
    const addr = a.str(2);
    const port = a.int(3) & 0xffff;
    let cert: CertTable | undefined;
    if (type === 2 && a.isTable(4)) {
      const m = a.value(4) as Map<unknown, unknown>;
      const get = (k: string) => {
        const v = m.get(k);
        return v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : undefined;
      };
      cert = { hostName: get('hostName'), caCert: get('caCert'), clientCert: get('clientCert'), clientKey: get('clientKey') };
    }
    const recvLen = a.isNumber(5) ? a.int(5) : undefined;
    const insist = a.isNumber(6) ? a.int(6) : 1;
    const localPort = type !== 2 && a.isNumber(7) ? a.int(7) & 0xffff : undefined;
    const fail = (code: number): LuaIn[] => (ext ? [code] : [null]);
    if (type !== 0 && type !== 1 && type !== 2) return fail(-1);
    if (addr.length > 100) return fail(-1);
    const idx = this.slots.findIndex((x) => x === undefined);
    if (idx < 0) return fail(-1);
    const syncFail = !net.isIPv4(addr) && (!HOSTNAME.test(addr) || (this.net.dnsFailSync ?? []).some((n) => n.toLowerCase() === addr.toLowerCase()));
    if (ext && syncFail) return [-2];
    const s = new Slot(idx, type, addr, port, recvLen && recvLen > 0 ? recvLen : (this.net.recvBufferBytes ?? 16384), localPort || undefined, cert, insist);
    this.slots[idx] = s;
    this.h.log(`socketcore: slot ${idx} ${['TCP', 'UDP', 'SSL'][type]} ${addr}:${port}`);
    if (!this.h.linkReady()) {
      this.connFail(s, 'no data link (PDP not active)');
      return [idx];
    }
    this.after(s, this.net.connectTimeoutMs ?? 30000, () => {
      if (s.state === 'connecting') this.connFail(s, 'connect timeout');
    });
    this.resolve(addr, (ip) => {
      if (this.down || this.slots[idx] !== s || s.state !== 'connecting') return;
      if (!ip) return this.connFail(s, `DNS failed for ${addr}`);
      // hermetic (src/sim/network.ts): TCP/SSL outside loopback fails as unreachable; UDP "connects" (no handshake) and its datagrams are dropped
      if (type !== 1 && !mayReach(this.net, ip)) return this.connFail(s, unreachableText(ip));
      s.ip = ip;
      if (type === 1) this.startUdp(s);
      else this.startTcp(s);
    });
    return [idx];
  }

  private connFail(s: Slot, why: string): void {
    this.h.log(`socketcore: slot ${s.idx} connect failed: ${why}`);
    this.kill(s);
    s.state = 'closed';
    this.post(s, 'CONN_CNF', { result: 1 });
  }

  private connected(s: Slot): void {
    for (const t of s.timers) clearTimeout(t);
    s.timers.clear();
    s.state = 'connected';
    this.applyOpts(s);
    this.post(s, 'CONN_CNF', { result: 0 });
  }

  private startUdp(s: Slot): void {
    const u = dgram.createSocket('udp4');
    s.udp = u;
    u.on('error', (e) => this.h.log(`socketcore: slot ${s.idx} udp error ${e.message}`));
    u.on('message', (msg, rinfo) => {
      if (this.slots[s.idx] !== s || s.state !== 'connected') return;
      if (rinfo.address !== s.ip || rinfo.port !== s.port) return; // a connected pcb filters by peer
      if (s.dgrams.length >= (this.net.udpQueue ?? 32)) return;
      s.dgrams.push(msg);
      this.maybeInd(s);
    });
    u.bind(s.localPort ?? 0, '127.0.0.1'); // loopback only, like every simulated socket
    // no handshake: success at once
    this.connected(s);
  }

  private startTcp(s: Slot): void {
    let st: net.Socket | tls.TLSSocket;
    if (s.type === 2) {
      const c = s.cert ?? {};
      const sni = c.hostName && !net.isIP(c.hostName) ? c.hostName : undefined;
      const t = tls.connect({
        host: s.ip,
        port: s.port,
        servername: sni,
        ca: c.caCert,
        cert: c.clientCert,
        key: c.clientKey,
        rejectUnauthorized: false,
      });
      t.once('secureConnect', () => {
        if (this.slots[s.idx] !== s || s.state !== 'connecting') return;
        if (c.caCert) {
          const problem = !t.authorized ? String(t.authorizationError) : tls.checkServerIdentity(c.hostName ?? s.addr, t.getPeerCertificate())?.message;
          if (problem) {
            if (s.insist === 0) return this.connFail(s, `server certificate: ${problem}`);
            this.h.log(`socketcore: slot ${s.idx} server certificate not verified (${problem}); insist=1 keeps connecting`);
          }
        }
        this.connected(s);
      });
      st = t;
    } else {
      const sock = new net.Socket();
      sock.connect({ host: s.ip, port: s.port, localPort: s.localPort, family: 4 });
      sock.once('connect', () => {
        if (this.slots[s.idx] !== s || s.state !== 'connecting') return;
        sock.setNoDelay(true);
        this.connected(s);
      });
      st = sock;
    }
    s.stream = st;
    st.on('data', (d: Buffer) => {
      if (this.slots[s.idx] !== s || s.state !== 'connected') return;
      s.rxHeld.push(d);
      this.rxFill(s);
    });
    // the FIN is in sequence after the data: the core sees it only once the held bytes went in
    const fin = () => {
      if (s.rxHeld.length) s.finHeld = true;
      else this.peerGone(s);
    };
    st.on('end', fin);
    st.on('close', fin);
    st.on('error', (e) => {
      if (this.slots[s.idx] !== s) return;
      if (s.state === 'connecting') this.connFail(s, e.message);
      else this.peerGone(s);
    });
  }

  /**
   * FIN/RST from the peer (or an error on a live connection): CLOSE_IND 500 ms later **whether or
   * not data is still unread**, as the core does. SOC_EVT_CLOSE_IND starts a one-shot timer
   * (CSDK app/elua/platform/openat/src/platform_socket.c:525-548, platform_socket_cb:
   * start_timer(..., 500)); its callback posts CLOSE_IND with no look at the receive buffer
   * (:462-482, platform_socket_remote_close_delay_timer_cb). Only a read that completes an announced
   * RECV_IND restarts it (:906-913, platform_socket_recv: stop_timer + start_timer(DELAY_CLOSE_IND_TIME)),
   * see {@link recv}. Delivering CLOSE_IND closes the socket: bytes not read by then are gone.
   */
  private peerGone(s: Slot): void {
    if (this.slots[s.idx] !== s || s.state !== 'connected' || s.peerGone) return;
    s.peerGone = true;
    this.armCloseInd(s);
  }

  /** (Re)start the remote-close timer (DELAY_CLOSE_IND_TIME = 500 ms by default). */
  private armCloseInd(s: Slot): void {
    if (s.closeIndTimer) {
      clearTimeout(s.closeIndTimer);
      s.timers.delete(s.closeIndTimer);
    }
    const t = setTimeout(() => {
      s.timers.delete(t);
      s.closeIndTimer = undefined;
      if (this.down || this.slots[s.idx] !== s || s.state !== 'connected') return;
      const lost = s.rxLen + s.dgrams.reduce((n, d) => n + d.length, 0);
      if (lost > 0) this.h.log(`socketcore: slot ${s.idx} CLOSE_IND with ${lost} unread bytes: they are gone`);
      this.kill(s);
      s.state = 'peerclosed';
      s.rx = [];
      s.rxHeld = [];
      s.finHeld = false;
      s.rxLen = 0;
      s.dgrams = [];
      s.indPending = false;
      s.reqLen = 0;
      // CSDK 9fa34023 platform_on_sock_close_ind: the CLOSE status that sock_destroy needs is set
      // when Lua takes the message (platform_socket_close_without_cnf), not when it is posted
      this.post(s, 'CLOSE_IND', { result: 0 }, () => {
        s.closeIndDelivered = true;
      });
    }, this.net.closeIndDelayMs ?? 500);
    s.closeIndTimer = t;
    s.timers.add(t);
  }

  /**
   * TCP receive window (issue #8). The core reads with the lwIP socket API (OPENAT_socket_recv in
   * platform_socket_recv, CSDK app/elua/platform/openat/src/platform_socket.c:823-923 at 9fa34023,
   * the call at :852, at most the announced `reqLen` bytes, :845-848), and lwIP gives
   * window back only for bytes the app has taken from the socket, so a module whose app does not
   * `sock_recv` closes its window: the core posts no further RECV_IND until the announced bytes
   * were read, and the peer stops once the buffer is full. The size is the slot's receive buffer
   * (`recvBufferBytes` / the `recvBufferLen` argument; the 8910 core's lwIP options are not in
   * the published CSDK: unverified). Node delivers chunks of any size: what does not fit waits in
   * `rxHeld` and the Node socket is paused (the peer then sees the kernel's window close).
   */
  private rxFill(s: Slot): void {
    s.rxLen += fillFromHeld(s.rxHeld, s.rx, s.recvBuf - s.rxLen);
    const st = s.stream;
    if (st && !st.destroyed) {
      if (s.rxHeld.length && !s.paused) {
        s.paused = true;
        st.pause();
      } else if (!s.rxHeld.length && s.paused) {
        s.paused = false;
        st.resume();
      }
    }
    this.maybeInd(s);
    if (!s.rxHeld.length && s.finHeld) {
      s.finHeld = false;
      this.peerGone(s);
    }
  }

  private maybeInd(s: Slot): void {
    if (s.indPending || s.state !== 'connected') return;
    if (s.type === 1) {
      if (s.dgrams.length === 0) return;
      s.reqLen = Math.min(s.dgrams[0].length, MAX_RECV_IND);
    } else {
      if (s.rxLen === 0) return;
      s.reqLen = Math.min(s.rxLen, MAX_RECV_IND);
    }
    s.indPending = true;
    this.post(s, 'RECV_IND', { result: 0, recv_len: s.reqLen });
  }

  private applyOpts(s: Slot): void {
    const st = s.stream;
    if (st && 'setKeepAlive' in st && s.keepAlive) st.setKeepAlive(true, Math.max(1, s.keepIdle) * 1000);
  }

  /**
   * `sock_send(idx, data)` -> ok (1/0), err (ERR_*): CSDK commit 9fa34023, tcpipsock.c:166-185
   * (`l_sock_send`: the string's length goes to `platform_socket_send`; the second value is
   * ERR_OK on success, else `platform_socket_error(idx)`, tcpipsock.c:180-183).
   */
  private send(a: LuaArgs): LuaIn[] {
    const s = this.slotArg(a);
    const raw = a.bytes(2);
    const E = SOCKETCORE_ERRS;
    if (!s) return [0, E.ERR_EARG];
    if (s.state !== 'connected') return [0, E.ERR_ENOTCONN];
    const failWithCnf = (err: number): LuaIn[] => {
      this.post(s, 'SEND_CNF', { result: 1, send_len: 0 });
      return [0, err];
    };
    if (s.peerGone) return failWithCnf(E.ERR_ECLSD);
    const len = raw.length & 0xffff; // the core takes the length as a uint16
    if (len === 0) return failWithCnf(E.ERR_EARG);
    if (s.pending + len > (this.net.sendBufferBytes ?? 65536)) return failWithCnf(E.ERR_ENOBUFS);
    const data = Buffer.from(raw.subarray(0, len));
    s.readySendLen = len; // overwritten by the next send: keep one in flight
    s.pending += len;
    if (s.type === 1 && !mayReach(this.net, s.ip)) {
      this.h.log(`socketcore: slot ${s.idx} udp to ${unreachableText(s.ip)}: dropped`);
      setImmediate(() => {
        if (this.slots[s.idx] !== s) return;
        s.pending -= len;
        this.post(s, 'SEND_CNF', { result: 0, send_len: len });
      });
      return [1, E.ERR_OK];
    }
    if (s.type === 1) {
      s.udp!.send(data, s.port, s.ip, (err) => {
        if (this.slots[s.idx] !== s) return;
        s.pending -= len;
        this.post(s, 'SEND_CNF', { result: err ? 1 : 0, send_len: len });
      });
      return [1, E.ERR_OK];
    }
    s.stream!.write(data, (err) => {
      if (this.slots[s.idx] !== s || s.state !== 'connected') return;
      s.pending -= len;
      if (err) this.post(s, 'SEND_CNF', { result: 1, send_len: len });
      else if (s.type === 2) {
        if (s.pending === 0) this.post(s, 'SEND_CNF', { result: 0, send_len: s.readySendLen });
      } else {
        // TCP: CSDK platform_socket.c:428-449 platform_socket_sendAckCnf: alreadySendLen grows by every
        // acknowledged length and SEND_CNF comes only when it equals readySendLen exactly (then
        // both reset). readySendLen is overwritten by every send (platform_socket_send), so a send
        // that overlaps another pushes alreadySendLen past it: no SEND_CNF ever again.
        s.alreadySendLen += len;
        if (s.alreadySendLen === s.readySendLen) {
          this.post(s, 'SEND_CNF', { result: 0, send_len: s.readySendLen });
          s.alreadySendLen = 0;
          s.readySendLen = 0;
        } else if (s.alreadySendLen > s.readySendLen && !s.cnfLost) {
          s.cnfLost = true;
          this.h.log(`socketcore: slot ${s.idx} overlapping sends: alreadySendLen ${s.alreadySendLen} > readySendLen ${s.readySendLen}: no SEND_CNF will come again`);
        }
      }
    });
    return [1, E.ERR_OK];
  }

  /**
   * `sock_recv(idx, len)` -> string: at most min(len, announced) bytes; "" when nothing was announced.
   *
   * CSDK commit 9fa34023 (the core with `sock_setopt` and two-value `sock_send` this simulator
   * models): app/elua/modules/src/tcpipsock.c `l_sock_recv` (tcpipsock.c:197-273) mallocs `len`
   * bytes (tcpipsock.c:212; a negative `len` is a huge size_t: the malloc fails and "" comes back,
   * tcpipsock.c:213-216) and passes `len` to `platform_socket_recv` (tcpipsock.c:218) as a
   * `kal_uint16`, which starts with
   * `ASSERT(data != NULL && length > 0)` (app/elua/platform/openat/src/platform_socket.c:827),
   * before it looks at the slot. So `len` 0 (or any multiple of 65536) asserts: the core halts and
   * the module reboots, whatever the slot. Modelled as a fatal error (reboot); the agent must
   * refuse `len < 1` (and `len > 65535`, which is cut to `len & 0xffff`).
   */
  private recv(a: LuaArgs): LuaIn[] {
    const want = a.int(2);
    if (want >= 0 && (want & 0xffff) === 0) {
      const why = `socketcore.sock_recv(${a.int(1)}, ${want}): ASSERT(data != NULL && length > 0) in platform_socket_recv (platform_socket.c:827): the core halts`;
      this.h.log(why);
      if (this.h.fatal) {
        this.shutdown();
        this.h.fatal(why);
      }
      throw new LuaRaise(why);
    }
    const s = this.slotArg(a);
    if (want < 0) return ['']; // tcpipsock.c:212-216 (9fa34023) l_sock_recv: platform_malloc((size_t)len) fails -> ""
    if (!s || !s.indPending) return [''];
    const n = Math.min(want & 0xffff, s.reqLen);
    let out: Buffer;
    if (s.type === 1) {
      out = Buffer.from(s.dgrams.shift()!.subarray(0, n));
      s.reqLen = 0;
    } else {
      out = this.take(s, n);
      s.reqLen -= out.length;
    }
    if (s.reqLen === 0) {
      s.indPending = false;
      // the read gave window back: bytes the peer held come in (may post the next RECV_IND)
      this.rxFill(s);
      // platform_socket.c:906-913 (platform_socket_recv): a completed read restarts a pending remote-close timer
      if (s.closeIndTimer) this.armCloseInd(s);
    }
    return [Uint8Array.from(out)];
  }

  private take(s: Slot, n: number): Buffer {
    const all = s.rx.length === 1 ? s.rx[0] : Buffer.concat(s.rx);
    const out = all.subarray(0, n);
    const rest = all.subarray(out.length);
    s.rx = rest.length ? [rest] : [];
    s.rxLen = rest.length;
    return Buffer.from(out);
  }

  /**
   * `sock_close(idx)` -> 1; closes now, CLOSE_CNF follows.
   *
   * CSDK commit 9fa34023, app/elua/platform/openat/src/platform_socket.c:990-999
   * (`platform_socket_close`): `platform_socket_close_without_cnf` (which does nothing for a slot
   * without a socket), then `platform_socket_closeCnf` and `return KAL_TRUE` unconditionally. So a
   * free slot (never used, destroyed, or already closed by CLOSE_IND) also returns 1 and gets a
   * CLOSE_CNF. Its `result` is an arbitrary number here (see docs/fidelity.md).
   */
  private close(a: LuaArgs): LuaIn[] {
    const idx = a.int(1);
    const s = this.slotArg(a);
    this.junk = (this.junk * 1103515245 + 12345) & 0x7fffffff;
    const result = this.junk & 0xffff;
    if (s && s.state === 'peerclosed') s.state = 'closed'; // close_without_cnf sets CLOSE even before CLOSE_IND is taken
    if (!s || s.state === 'closed') {
      // nothing to close; the CNF is posted all the same (index 0..9 only: the C array has 10 entries)
      if (idx >= 0 && idx < MAX_SOCKETS && !this.down) {
        const id = (this.h.msgIds as unknown as Record<string, number>).MSG_SOCK_CLOSE_CNF;
        this.h.loop.post({ table: { id, socket_index: idx, result } });
      }
      return [1];
    }
    this.kill(s);
    s.state = 'closed';
    s.rx = [];
    s.rxHeld = [];
    s.finHeld = false;
    s.rxLen = 0;
    s.dgrams = [];
    s.indPending = false;
    s.reqLen = 0;
    s.pending = 0;
    // the C code never sets `result` for this message: whatever was on the stack
    this.post(s, 'CLOSE_CNF', { result });
    return [1];
  }

  /**
   * `sock_destroy(idx)` -> 1 when the slot was closed (now free), else 0.
   *
   * CSDK commit 9fa34023, platform_socket.c:1002-1024 (`platform_socket_destroy`): returns
   * KAL_FALSE unless `conn_status == PLATFORM_CONN_CLOSE`, then resets it to INIT. That status is
   * set by `platform_socket_close_without_cnf`, which runs for `sock_close` AND when CLOSE_IND is
   * delivered (`platform_on_sock_close_ind`). So `sock_destroy` right after CLOSE_IND returns 1,
   * and a second `sock_destroy` returns 0.
   */
  private destroy(a: LuaArgs): LuaIn[] {
    const s = this.slotArg(a);
    if (!s || !(s.state === 'closed' || (s.state === 'peerclosed' && s.closeIndDelivered))) return [0];
    this.kill(s);
    this.slots[s.idx] = undefined;
    return [1];
  }

  /**
   * `sock_setopt(idx, level, opt, value)` -> 0 / -1: CSDK commit 9fa34023, tcpipsock.c:285-320
   * (`l_sock_setopt`: a non-number value, a negative index, a level other than SOL_SOCKET /
   * IPPROTO_TCP or an option other than the five it lists gives -1 without calling the core,
   * tcpipsock.c:295-311). The simulator also requires each option's own level (SO_* with
   * SOL_SOCKET, TCP_* with IPPROTO_TCP); what the core does with a mismatched pair is unverified.
   */
  private setopt(a: LuaArgs): LuaIn[] {
    // idx, level and opt go through luaL_checkinteger (tcpipsock.c:304-306 at 9fa34023): anything
    // else raises "bad argument"; only the value is type-tested and gives -1 (tcpipsock.c:307-314)
    const s = this.slotArg(a);
    const level = a.int(2);
    const opt = a.int(3);
    if (!s || !a.isNumber(4)) return [-1];
    const v = a.int(4);
    const O = SOCKETCORE_OPTS;
    const ok =
      (level === O.SOL_SOCKET && (opt === O.SO_KEEPALIVE || opt === O.SO_REUSEADDR)) ||
      (level === O.IPPROTO_TCP && (opt === O.TCP_KEEPIDLE || opt === O.TCP_KEEPINTVL || opt === O.TCP_KEEPCNT));
    if (!ok) return [-1];
    s.opts.set(`${level}:${opt}`, v);
    if (level === O.SOL_SOCKET && opt === O.SO_KEEPALIVE) s.keepAlive = v !== 0;
    if (level === O.IPPROTO_TCP && opt === O.TCP_KEEPIDLE) s.keepIdle = v;
    if (s.state === 'connected') this.applyOpts(s);
    return [0];
  }

  /** `sock_getremainbuf(idx)` -> free bytes of the send buffer (0 for a free slot). */
  private remainbuf(a: LuaArgs): LuaIn[] {
    const s = this.slotArg(a);
    if (!s) return [0];
    return [Math.max(0, (this.net.sendBufferBytes ?? 65536) - s.pending)];
  }
}

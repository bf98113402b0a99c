/**
 * Emulated NodeMCU `net` module (ESP8266, app/modules/net.c on lwIP 1.4) over real
 * Node sockets: `net.tcpserver`, `net.tcpsocket`, `net.udpsocket`, `net.dns`,
 * `net.ifinfo`, `net.multicastJoin/Leave`, `net.ping`.
 *
 * Kept from the firmware (docs/firmware/nodemcu.md):
 * lwIP error strings raised synchronously; callback argument orders (UDP receive
 * `(sock, data, port, ip)`, getpeer/getaddr `port, ip`); "receive" once per
 * <= 1460-byte segment, never coalesced; "sent" when the bytes were taken by the
 * peer's kernel (the ACK); the 2920-byte / 8-segment send buffer raising
 * "out of memory"; no callback at all after a local close; server connections with
 * keepalive (a live peer is never dropped); `createServer(net.TCP, 30)` -> 1 s;
 * `createConnection(net.UDP)` -> TCP; no DNS cache (only IP literals answer at once, their
 * "dns" callback inside connect()); "" or >= 256-character names raise "illegal argument";
 * a failed DNS lookup in connect ends in reconnection/disconnection -8 (the SYN to
 * 255.255.255.255); 4 DNS table slots; UDP "sent" inside send(); callbacks
 * called unprotected (an error PANICs and reboots the chip).
 * Differences: docs/fidelity.md (NodeMCU section).
 */
import { createServer, Socket, type Server } from 'node:net';
import { createSocket, type Socket as UdpNodeSocket } from 'node:dgram';
import { mayReach, simResolve } from '../network.js';
import { LuaRaise, type Finalizable, type LuaArgs, type LuaIn, type LuaRef } from '../lua-vm.js';
import type { Esp } from './firmware.js';
import { badArg, callNow, checkBytes, checkInt, isDottedQuad, isNumberLike, isStringLike, latin1, newUserdataRef, toInt, typeName } from './lua-util.js';

/** TCP_MSS of the firmware's lwIP. */
export const TCP_MSS = 1460;
/** TCP_SND_BUF = 2 * TCP_MSS. */
export const TCP_SND_BUF = 2920;
/** TCP_SND_QUEUELEN. */
export const TCP_SND_QUEUELEN = 8;
/**
 * TCP_WND, the receive window (bytes). nodemcu-firmware app/include/lwipopts.h (commit 06c8a47,
 * `#define TCP_WND (*(volatile uint32*)0x600011F0)`) is no constant: it reads a word the SDK's
 * closed libraries initialise, and espconn_tcp_set_wnd(num) (app/lwip/app/espconn.c, commit
 * 0f09d23) stores `num * TCP_MSS` there. No caller of espconn_tcp_set_wnd turned up in the tree's
 * modules, so the value is the SDK's start-up default, which no open source shows: the simulation assumes
 * 4 * TCP_MSS (5840 bytes; unverified on hardware, docs/fidelity.md "net: receive window and
 * hold"). lwIP's tcp_recved (app/lwip/core/tcp.c, commit 587cdab) re-opens the window by `len`,
 * never beyond TCP_WND; the agent's backlog limit (TETHER_BACKLOG) must cover one window after hold().
 */
export const TCP_WND = 4 * TCP_MSS;
/** DNS_TABLE_SIZE: concurrent lookups. */
export const DNS_TABLE_SIZE = 4;
/** MEMP_NUM_TCP_PCB_LISTEN. */
export const MAX_LISTENERS = 2;

/** lwIP err_t -> Lua error message (lwip_lua_checkerr). */
export const LWIP_ERRORS: Record<number, string> = {
  [-1]: 'out of memory',
  [-2]: 'buffer error',
  [-3]: 'timeout',
  [-4]: 'routing problem',
  [-5]: 'in progress',
  [-6]: 'illegal value',
  [-7]: 'would block',
  [-8]: 'connection aborted',
  [-9]: 'connection reset',
  [-10]: 'connection closed',
  [-11]: 'not connected',
  [-12]: 'illegal argument',
  [-13]: 'address in use',
  [-14]: 'netif error',
  [-15]: 'already connected',
};
const ERR_ABRT = -8;
const ERR_RST = -9;

/** Ports the simulated modules of this process hold (a second bind fails synchronously). */
const heldTcpPorts = new Set<number>();
const heldUdpPorts = new Set<number>();

const TCP_EVENTS = new Set(['connection', 'reconnection', 'disconnection', 'receive', 'sent', 'dns']);
const UDP_EVENTS = new Set(['receive', 'sent', 'dns']);

abstract class NetObj {
  ud?: LuaRef;
  readonly cbs = new Map<string, LuaRef>();
  ttl = 255;
  setCb(ev: string, ref: LuaRef | undefined): void {
    this.cbs.get(ev)?.release();
    if (ref) this.cbs.set(ev, ref);
    else this.cbs.delete(ev);
  }
  releaseAll(): void {
    for (const r of this.cbs.values()) r.release();
    this.cbs.clear();
  }
}

class TcpSock extends NetObj {
  /** none = no pcb; dns = waiting for the name; syn = connecting; est = connected. */
  pcb: 'none' | 'dns' | 'syn' | 'est' = 'none';
  sock?: Socket;
  remote?: { ip: string; port: number };
  local?: { ip: string; port: number };
  unacked = 0;
  unackedSegs = 0;
  queued: Buffer[] = [];
  sentPosted = false;
  /** After a local close() the firmware has released self_ref: nothing is called any more. */
  silenced = false;
  /** socket:hold() was called: the window is not re-opened after a "receive" (see pump). */
  held = false;
  /** What the peer may still send before lwIP's receive window is closed (bytes). */
  wnd = TCP_WND;
  /** Bytes the peer sent that lwIP has not handed to "receive" yet (the window gates them). */
  rx: Buffer[] = [];
  /** The peer's FIN came after the bytes in rx: disconnection once they are delivered. */
  fin = false;
  /** A pump run waits for the VM (Scheduler.whenFree): no second one is queued. */
  pumpWaiting = false;
}

class TcpServerObj extends NetObj {
  timeout = 30;
  server?: Server;
  listening = false;
  port?: number;
  ip = '0.0.0.0';
  accept?: LuaRef;
  /** While closed: its registry refs keep nothing alive (lua-vm.ts Finalizable). */
  fin?: Finalizable;
}

class UdpSock extends NetObj {
  sock?: UdpNodeSocket;
  bound = false;
  port?: number;
  ip = '0.0.0.0';
}

/** What installNet returns to the family. */
export interface NetLib {
  shutdown(): void;
  /** Node sockets, servers and UDP sockets open (leak checks). */
  openCount(): number;
}

export function installNet(esp: Esp): NetLib {
  const { vm, sched } = esp;
  const net = esp.opts.network ?? {};
  const bindHost = net.bindHost ?? '127.0.0.1';
  const stationIp = net.ip ?? '127.0.0.1';
  const hosts = new Map(Object.entries(net.hosts ?? { localhost: '127.0.0.1' }).map(([k, v]) => [k.toLowerCase(), v]));
  const dnsServers: Array<string | undefined> = [net.dnsServers?.[0] ?? '208.67.222.222', net.dnsServers?.[1]];
  let dnsBusy = 0;
  const tcpSocks = new Set<TcpSock>();
  const servers = new Set<TcpServerObj>();
  const udps = new Set<UdpSock>();
  const timers = new Set<() => void>();
  const nodeSocks = new Set<Socket>();
  const ports = { tcp: new Set<number>(), udp: new Set<number>() };
  let pingSeq = 0;

  // ------------------------------------------------------------------ helpers
  const alive = () => !esp.dead;

  /** Fire a socket callback (unprotected, as net.c does: lua_call, never lua_pcall, e.g. net.c:143, 218, 251 at 06c8a47). */
  const fire = (o: NetObj, ev: string, ...args: LuaIn[]): boolean => {
    if (!alive() || (o instanceof TcpSock && o.silenced)) return true;
    const cb = o.cbs.get(ev);
    if (!cb) return true;
    return esp.unprotectedCall(cb, o.ud, ...args);
  };

  /**
   * The synchronous answers of lwIP's dns_gethostbyname (nodemcu-firmware app/lwip/core/dns.c,
   * commit 02294955): an IP literal only. The table lookup is commented out (dns.c:985-989), so
   * NodeMCU has no DNS cache: every name, even one resolved a moment ago, is a new asynchronous
   * query. `localhost` is not special either: the module is built without LWIP_HAVE_LOOPIF.
   */
  const literal = (name: string): string | undefined => (isDottedQuad(name) ? name : undefined);

  /**
   * Start an lwIP DNS lookup (one of 4 table slots). dns.c:971-975: an empty name or one of 256
   * characters or more (DNS_MAX_NAME_LENGTH) is ERR_ARG, which the callers raise synchronously as
   * "illegal argument" (lwip_lua_checkerr); a full table raises "out of memory".
   */
  const startLookup = (name: string, done: (ip: string | null) => void): void => {
    if (name.length === 0 || name.length >= 256) throw new LuaRaise(LWIP_ERRORS[-12]);
    if (dnsBusy >= DNS_TABLE_SIZE) throw new LuaRaise(LWIP_ERRORS[-1]);
    dnsBusy++;
    const finish = (ip: string | null) => {
      dnsBusy--;
      if (alive()) sched.post(() => done(ip));
    };
    const fixed = hosts.get(name.toLowerCase());
    if (fixed) {
      setImmediate(() => finish(fixed));
      return;
    }
    // hermetic by default (src/sim/network.ts; a deliberate difference, docs/fidelity.md)
    simResolve(net, name).then(
      (ips) => finish(ips[0] ?? null),
      () => finish(null),
    );
  };

  /** The object a method was called on (every object carries its own userdata ref from birth). */
  const selfOf = <T extends NetObj>(a: LuaArgs, cls: new () => T): T => {
    const o = a.userdata<T>(1);
    if (!(o instanceof cls)) throw new LuaRaise('invalid user data');
    return o;
  };

  const onMethod = (valid: Set<string>) => (a: LuaArgs, o: NetObj) => {
    const ev = latin1(checkBytes(a, 2, 'on'));
    if (!valid.has(ev)) throw new LuaRaise('invalid callback name');
    if (a.isFunction(3)) o.setCb(ev, a.fnRef(3));
    else if (a.isNil(3)) o.setCb(ev, undefined);
    else throw new LuaRaise('invalid callback function');
  };
  const onTcp = onMethod(TCP_EVENTS);
  const onUdp = onMethod(UDP_EVENTS);

  /** socket:dns(domain, [cb]) for TCP and UDP sockets: cb(sock, ip|nil), also the "dns" handler. */
  const dnsMethod = (a: LuaArgs, o: NetObj) => {
    const domain = latin1(checkBytes(a, 2, 'dns'));
    if (a.isFunction(3)) o.setCb('dns', a.fnRef(3));
    else if (!o.cbs.has('dns')) throw new LuaRaise('no callback specified');
    const hit = literal(domain);
    if (hit) {
      const cb = o.cbs.get('dns')!;
      callNow(vm, a, cb, o.ud, hit);
      return;
    }
    startLookup(domain, (ip) => fire(o, 'dns', ip));
  };

  const ttlMethod = (a: LuaArgs, o: NetObj, open: boolean) => {
    if (!open) throw new LuaRaise('socket is not open/bound yet');
    if (isNumberLike(a, 2)) o.ttl = toInt(a, 2) & 255;
    return [o.ttl];
  };

  // ------------------------------------------------------------------ TCP sockets
  const attach = (s: TcpSock, sock: Socket) => {
    s.sock = sock;
    nodeSocks.add(sock);
    sock.on('close', () => nodeSocks.delete(sock));
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      if (!alive() || s.pcb !== 'est') return;
      s.rx.push(d);
      pump(s);
    });
    sock.on('end', () => {
      if (s.pcb !== 'est') return;
      // remote FIN: it follows the data in sequence space, so it is processed once every byte
      // before it went through "receive" (net.c closes the pcb and reports disconnection(0):
      // net_tcp_recv_cb with p == NULL, net.c:235-238, calls net_err_cb, net.c:130-151, at 06c8a47)
      s.fin = true;
      pump(s);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => ended(s, e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' || e.code === 'EPIPE' ? ERR_RST : ERR_ABRT));
    sock.on('close', () => {
      if (!s.fin) ended(s, ERR_RST);
    });
  };

  /**
   * lwIP's receive side of an established pcb: hand the peer's bytes to "receive", one call per
   * segment (<= TCP_MSS, never coalesced), while the receive window is open.
   * nodemcu-firmware app/modules/net.c (commit 06c8a47) net_tcp_recv_cb, net.c:231-242: the Lua
   * "receive" callback runs first, then tcp_recved(tpcb, hold ? 0 : TCP_WND): an un-held pcb re-opens
   * the whole window after every segment, a held one (net_hold, net.c:581-589, only sets the flag)
   * does not, so the window shrinks by every segment that still arrives and the peer stops once it
   * is 0: after hold() at most one window (TCP_WND) of bytes already in flight is still delivered.
   * net_unhold (net.c:592-602) sets TF_ACK_NOW and tcp_recved(TCP_WND): the window opens again and
   * the peer resumes. The simulation closes the window by pausing the Node socket (the kernel's
   * buffers fill and the real peer's TCP window closes).
   *
   * One segment is one step: "receive", then its tcp_recved, both done before lwIP looks at the
   * next segment. The ESP8266 runs lwIP and Lua in one task (nothing preempts a callback), and a
   * "receive" callback whose uart.write spins on the TX FIFO (firmware.ts uartTx) holds lwIP with
   * it, so while the VM is busy the next segment waits (Scheduler.whenFree, in order with the other
   * jobs that wait, the UART RX drain among them). Before, a busy VM deferred only the Lua callback
   * while this loop went on re-opening the window as if it had run: its hold() came too late and the
   * whole Node chunk (64 KiB) went to the agent, overflowing its backlog (issue #10, paced UART).
   */
  const pump = (s: TcpSock): void => {
    if (s.pumpWaiting) return; // a run already waits for the VM: it sees the new bytes too
    const sock = s.sock;
    const later = () => {
      s.pumpWaiting = true;
      if (sock && !sock.destroyed && s.rx.length > 0) sock.pause();
      sched.whenFree(() => {
        s.pumpWaiting = false;
        pump(s);
      });
    };
    if (sched.mustWait) return later();
    while (s.rx.length > 0 && s.wnd > 0 && alive() && s.pcb === 'est') {
      // the last "receive" made the VM busy: the next segment when it is free
      if (sched.mustWait) return later();
      const head = s.rx[0];
      const n = Math.min(TCP_MSS, s.wnd, head.length);
      const seg = head.subarray(0, n);
      if (n === head.length) s.rx.shift();
      else s.rx[0] = head.subarray(n);
      s.wnd -= n;
      if (!fire(s, 'receive', Uint8Array.from(seg))) return;
      if (!s.held) s.wnd = TCP_WND; // tcp_recved(tpcb, TCP_WND) (net.c:240)
    }
    if (sock && !sock.destroyed) {
      if (s.rx.length > 0 || s.wnd <= 0) sock.pause();
      else sock.resume();
    }
    if (s.fin && s.rx.length === 0 && s.pcb === 'est') {
      s.pcb = 'none';
      sock?.end();
      tcpSocks.delete(s);
      sched.post(() => fire(s, 'disconnection', 0));
    }
  };

  /** The pcb died (RST, abort): reconnection(err) if registered, else disconnection(err). */
  const ended = (s: TcpSock, err: number) => {
    if (s.pcb === 'none') return;
    s.pcb = 'none';
    tcpSocks.delete(s);
    s.sock?.destroy();
    sched.post(() => fire(s, s.cbs.has('reconnection') ? 'reconnection' : 'disconnection', err));
  };

  const writeOut = (s: TcpSock, data: Buffer) => {
    // net.c never calls tcp_output() (net_send only tcp_write()s, net.c:575 at 06c8a47): the data
    // leaves at the next lwIP opportunity
    sched.post(() => {
      const sock = s.sock;
      if (!sock || sock.destroyed) return;
      for (let off = 0; off < data.length; off += TCP_MSS) {
        const seg = data.subarray(off, off + TCP_MSS);
        sock.write(seg, (err) => {
          if (err) return;
          s.unacked = Math.max(0, s.unacked - seg.length);
          s.unackedSegs = Math.max(0, s.unackedSegs - 1);
          if (s.sentPosted) return;
          s.sentPosted = true;
          const cancel = sched.after(net.ackDelayMs ?? 0, () => {
            timers.delete(cancel);
            s.sentPosted = false;
            fire(s, 'sent');
          });
          timers.add(cancel);
        });
      }
    });
  };

  const startConnect = (s: TcpSock, ip: string, port: number) => {
    s.remote = { ip, port };
    // After a failed lookup net_dns_cb (net.c:169-198 at 06c8a47) still calls tcp_connect, to
    // 255.255.255.255 (net.c:172, 190-191): the SYN
    // is never answered, so the socket ends with reconnection/disconnection ERR_ABRT (-8) once lwIP
    // gives up (issue 8 part C4), like any unreachable address below.
    s.pcb = 'syn';
    if (!mayReach(net, ip)) {
      // hermetic (src/sim/network.ts): the SYN goes nowhere; lwIP would give up with ERR_ABRT after
      // TCP_SYNMAXRTX, the simulation does at once
      sched.post(() => s.pcb === 'syn' && ended(s, ERR_ABRT));
      return;
    }
    const sock = new Socket({ allowHalfOpen: true });
    attach(s, sock);
    const giveUp = sched.after(net.connectTimeoutMs ?? 20000, () => {
      timers.delete(giveUp);
      if (s.pcb === 'syn') ended(s, ERR_ABRT);
    });
    timers.add(giveUp);
    sock.connect({ host: ip, port }, () => {
      giveUp();
      timers.delete(giveUp);
      if (s.pcb !== 'syn' || !alive()) return;
      s.pcb = 'est';
      s.local = { ip: sock.localAddress ?? stationIp, port: sock.localPort ?? 0 };
      const q = s.queued;
      s.queued = [];
      for (const b of q) writeOut(s, b);
      fire(s, 'connection');
    });
  };

  vm.defineClass('net.tcpsocket', {
    connect: (a) => {
      const s = selfOf(a, TcpSock);
      // nodemcu-firmware app/modules/net.c (commit 06c8a47) net_connect: "already connected" is
      // checked before the port (net.c:428-432), so a connected socket never reports "specify port"
      if (s.pcb !== 'none') throw new LuaRaise('already connected');
      const port = checkInt(a, 2, 'connect', 1) & 0xffff; // uint16: 65536 wraps to 0
      if (port === 0) throw new LuaRaise('specify port');
      const host = isStringLike(a, 3) ? latin1(a.bytes(3)) : a.isNil(3) ? '127.0.0.1' : latin1(checkBytes(a, 3, 'connect', 2));
      if (a.count > 3) {
        if (!a.isFunction(4)) throw badArg(3, 'connect', 'not a function');
        s.setCb('connection', a.fnRef(4));
      }
      s.silenced = false;
      tcpSocks.add(s);
      const hit = literal(host);
      if (hit) {
        // dns_gethostbyname answers an IP literal with ERR_OK and net_connect calls net_dns_cb at
        // once (net.c:460-462): the "dns" callback runs inside connect(), unprotected (an error in
        // it leaves the pcb allocated), then tcp_connect if the callback did not close the socket.
        s.pcb = 'dns';
        const cb = s.cbs.get('dns');
        if (cb) callNow(vm, a, cb, s.ud, hit);
        if (s.pcb === 'dns') startConnect(s, hit, port);
        return;
      }
      s.pcb = 'dns';
      try {
        startLookup(host, (ip) => {
          if (s.pcb !== 'dns') return;
          if (!fire(s, 'dns', ip)) return;
          if (s.pcb !== 'dns') return;
          startConnect(s, ip ?? '255.255.255.255', port);
        });
      } catch (e) {
        s.pcb = 'none';
        tcpSocks.delete(s);
        throw e;
      }
    },
    close: (a) => {
      const s = selfOf(a, TcpSock);
      if (s.pcb === 'none') throw new LuaRaise(LWIP_ERRORS[-11]);
      // tcp_close (FIN, pending data still goes out); self_ref released: no callback any more
      s.silenced = true;
      s.pcb = 'none';
      tcpSocks.delete(s);
      const sock = s.sock;
      if (sock && !sock.destroyed) sock.end(() => sock.destroy());
    },
    on: (a) => void onTcp(a, selfOf(a, TcpSock)),
    send: (a) => {
      const s = selfOf(a, TcpSock);
      const data = Buffer.from(checkBytes(a, 2, 'send', 1));
      // net.c net_send (commit 06c8a47, net.c:535-541): "no data to send" is raised before the
      // sent callback of the call is registered, so send("", fn) keeps the old callback
      if (data.length === 0) throw new LuaRaise('no data to send');
      if (a.isFunction(3)) s.setCb('sent', a.fnRef(3));
      if (s.pcb === 'none' || s.pcb === 'dns') throw new LuaRaise(LWIP_ERRORS[-11]);
      const segs = Math.ceil(data.length / TCP_MSS);
      if (data.length > TCP_SND_BUF - s.unacked || s.unackedSegs + segs > TCP_SND_QUEUELEN) throw new LuaRaise(LWIP_ERRORS[-1]);
      s.unacked += data.length;
      s.unackedSegs += segs;
      if (s.pcb === 'est') writeOut(s, data);
      else s.queued.push(data); // SYN_SENT: queued until the connection is up
    },
    // net_hold (net.c:581-589): only a flag, set when the socket has a pcb; lwIP keeps calling
    // "receive" for what arrives inside the window that is still open (see pump)
    hold: (a) => {
      const s = selfOf(a, TcpSock);
      if (!s.held && s.pcb !== 'none') s.held = true;
    },
    // net_unhold (net.c:592-602): tcp_recved(TCP_WND) re-opens the window; the peer's next segments
    // arrive later, from lwIP, never inside this call
    unhold: (a) => {
      const s = selfOf(a, TcpSock);
      if (s.held && s.pcb !== 'none') {
        s.held = false;
        s.wnd = TCP_WND;
        sched.post(() => pump(s));
      }
    },
    dns: (a) => void dnsMethod(a, selfOf(a, TcpSock)),
    getpeer: (a) => {
      const s = selfOf(a, TcpSock);
      if (s.pcb === 'none' || !s.remote) return [null, null];
      return [s.remote.port, s.remote.ip];
    },
    getaddr: (a) => {
      const s = selfOf(a, TcpSock);
      if (s.pcb === 'none' || !s.local) return [null, null];
      return [s.local.port, s.local.ip];
    },
    ttl: (a) => {
      const s = selfOf(a, TcpSock);
      return ttlMethod(a, s, s.pcb !== 'none');
    },
  });

  const newTcp = (L: any): TcpSock => {
    const s = new TcpSock();
    s.ud = newUserdataRef(vm, L, s, 'net.tcpsocket');
    return s;
  };

  // ------------------------------------------------------------------ TCP servers
  vm.defineClass('net.tcpserver', {
    listen: (a) => {
      const srv = selfOf(a, TcpServerObj);
      if (srv.listening) throw new LuaRaise('already listening');
      let stack = 2;
      let port = 0;
      let ip = '0.0.0.0';
      if (isNumberLike(a, stack)) port = toInt(a, stack++) & 0xffff;
      if (isStringLike(a, stack)) ip = latin1(a.bytes(stack++));
      if (!isDottedQuad(ip)) throw new LuaRaise('invalid IP address');
      if (!a.isFunction(stack)) throw new LuaRaise('need callback');
      const listeners = [...servers].filter((x) => x.listening).length;
      if (listeners >= MAX_LISTENERS) throw new LuaRaise('cannot allocate PCB');
      if (port !== 0 && heldTcpPorts.has(port)) throw new LuaRaise(LWIP_ERRORS[-13]);
      srv.accept?.release();
      srv.accept = a.fnRef(stack);
      if (srv.fin) vm.finalizables.delete(srv.fin); // listening again: its self reference holds it
      srv.ip = ip;
      srv.port = port || undefined;
      srv.listening = true;
      servers.add(srv);
      const server = createServer({ allowHalfOpen: true }, (sock) => onAccept(srv, sock));
      srv.server = server;
      server.on('error', (e: NodeJS.ErrnoException) => {
        esp.log(`net: tcpserver cannot listen on ${bindHost}:${port}: ${e.code ?? e.message} (the firmware would have raised "address in use")`);
        srv.listening = false;
        srv.port = undefined;
      });
      server.listen(port, bindHost, () => {
        const addr = server.address();
        if (addr && typeof addr === 'object') {
          srv.port = addr.port;
          heldTcpPorts.add(addr.port);
          ports.tcp.add(addr.port);
        }
      });
    },
    close: (a) => {
      const srv = selfOf(a, TcpServerObj);
      if (!srv.listening) throw new LuaRaise(LWIP_ERRORS[-11]);
      stopServer(srv);
      // closed: net.c net_close drops the server's self reference; its accept callback stays
      // registered until the userdata is collected (net_delete, its __gc): emulated by the heap walk
      unheld(srv);
    },
    getaddr: (a) => {
      const srv = selfOf(a, TcpServerObj);
      if (!srv.listening || srv.port === undefined) return [null, null];
      return [srv.port, srv.ip];
    },
  });

  // a server not listening (new, or closed) has no self reference (net.c sets self_ref at listen
  // and drops it at close): once Lua drops its userdata it is garbage, and its __gc (net.c
  // net_delete) unrefs the accept callback. The heap walk finds that out (lua-vm.ts Finalizable).
  const unheld = (srv: TcpServerObj) => {
    const ud = srv.ud;
    if (!ud) return;
    srv.fin = {
      udRef: ud.ref,
      refs: () => [...srv.cbs.values()].map((r) => r.ref).concat(srv.accept ? [srv.accept.ref] : []),
      finalize: () => {
        srv.releaseAll();
        srv.accept?.release();
        srv.accept = undefined;
        if (srv.ud === ud) {
          ud.release();
          srv.ud = undefined;
        }
      },
    };
    vm.finalizables.add(srv.fin);
  };
  const stopServer = (srv: TcpServerObj) => {
    srv.listening = false;
    if (srv.port !== undefined) {
      heldTcpPorts.delete(srv.port);
      ports.tcp.delete(srv.port);
    }
    srv.port = undefined;
    srv.server?.close(); // accepted connections live on
    srv.server = undefined;
  };

  const onAccept = (srv: TcpServerObj, sock: Socket) => {
    if (!alive() || !srv.listening || !srv.accept) {
      sock.destroy();
      return;
    }
    const s = newTcp(vm.L);
    s.pcb = 'est';
    s.remote = { ip: sock.remoteAddress?.replace(/^::ffff:/, '') ?? '0.0.0.0', port: sock.remotePort ?? 0 };
    s.local = { ip: sock.localAddress?.replace(/^::ffff:/, '') ?? stationIp, port: sock.localPort ?? 0 };
    tcpSocks.add(s);
    attach(s, sock);
    // accepted sockets get SOF_KEEPALIVE with keep_idle = timeout: dead-peer detection, not an idle timeout
    sock.setKeepAlive(true, Math.max(1, srv.timeout) * 1000);
    // lwIP's accept callback: the Lua listen callback first, then "connection" if it registered one
    if (!esp.unprotectedCall(srv.accept, s.ud)) return;
    fire(s, 'connection');
  };

  // ------------------------------------------------------------------ UDP sockets
  const bindUdp = (u: UdpSock, port: number) => {
    const sock = createSocket({ type: 'udp4' });
    u.sock = sock;
    u.bound = true;
    udps.add(u);
    if (port) {
      u.port = port;
      heldUdpPorts.add(port);
      ports.udp.add(port);
    }
    sock.on('message', (msg, rinfo) => {
      if (!alive() || !u.bound) return;
      fire(u, 'receive', Uint8Array.from(msg), rinfo.port, rinfo.address);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      esp.log(`net: udpsocket error on port ${port}: ${e.code ?? e.message}`);
    });
    sock.bind(port, bindHost, () => {
      const p = sock.address().port;
      u.port = p;
      heldUdpPorts.add(p);
      ports.udp.add(p);
    });
  };

  const closeUdp = (u: UdpSock) => {
    u.bound = false;
    udps.delete(u);
    if (u.port !== undefined) {
      heldUdpPorts.delete(u.port);
      ports.udp.delete(u.port);
    }
    u.port = undefined;
    try {
      u.sock?.close();
    } catch {
      /* closed already */
    }
    u.sock = undefined;
  };

  vm.defineClass('net.udpsocket', {
    listen: (a) => {
      const u = selfOf(a, UdpSock);
      if (u.bound) throw new LuaRaise('already listening');
      let stack = 2;
      let port = 0;
      let ip = '0.0.0.0';
      if (isNumberLike(a, stack)) port = toInt(a, stack++) & 0xffff;
      if (isStringLike(a, stack)) ip = latin1(a.bytes(stack++));
      if (!isDottedQuad(ip)) throw new LuaRaise('invalid IP address');
      if (port !== 0 && heldUdpPorts.has(port)) throw new LuaRaise(LWIP_ERRORS[-13]);
      u.ip = ip;
      bindUdp(u, port);
    },
    on: (a) => void onUdp(a, selfOf(a, UdpSock)),
    send: (a) => {
      const u = selfOf(a, UdpSock);
      const port = checkInt(a, 2, 'send', 1) & 0xffff;
      if (port === 0) throw new LuaRaise('need port');
      const ip = latin1(checkBytes(a, 3, 'send', 2));
      if (!isDottedQuad(ip)) throw new LuaRaise('invalid IP address');
      const data = Buffer.from(checkBytes(a, 4, 'send', 3));
      // net.c:535-541 (commit 06c8a47): "no data to send" before the sent callback is registered
      if (data.length === 0) throw new LuaRaise('no data to send');
      if (a.isFunction(5)) u.setCb('sent', a.fnRef(5));
      if (!u.bound) bindUdp(u, 0); // auto-bind to 0.0.0.0:random: a later listen() says "already listening"
      // "sent" fires synchronously inside send(), before any lwIP error is raised (net.c:567-577 at 06c8a47)
      const sent = u.cbs.get('sent');
      if (sent) callNow(vm, a, sent, u.ud);
      if (mayReach(net, ip)) u.sock?.send(data, port, ip); // else dropped (hermetic: src/sim/network.ts)
    },
    close: (a) => {
      const u = selfOf(a, UdpSock);
      if (!u.bound) throw new LuaRaise(LWIP_ERRORS[-11]);
      closeUdp(u);
    },
    dns: (a) => void dnsMethod(a, selfOf(a, UdpSock)),
    getaddr: (a) => {
      const u = selfOf(a, UdpSock);
      if (!u.bound || u.port === undefined) return [null, null];
      return [u.port, u.ip];
    },
    ttl: (a) => {
      const u = selfOf(a, UdpSock);
      const r = ttlMethod(a, u, u.bound);
      try {
        u.sock?.setTTL(u.ttl || 1);
      } catch {
        /* not bound yet */
      }
      return r;
    },
  });

  // ------------------------------------------------------------------ module functions
  const mcast = (fn: string) => (a: LuaArgs) => {
    if (!a.isString(1) || !a.isString(2)) throw new LuaRaise('wrong arg type');
    const ifIp = a.str(1);
    const mc = a.str(2);
    if (!(ifIp === '' || ifIp === 'any') && (ifIp.length < 7 || ifIp.length > 15)) throw new LuaRaise('invalid if ip');
    if (mc.length < 7 || mc.length > 15) throw new LuaRaise('invalid multicast ip');
    esp.log(`net.${fn}(${ifIp}, ${mc})`);
  };

  const ipTable = (ip: string | undefined) => (ip && ip !== '0.0.0.0' ? ip : undefined);
  const macBytes = (mac: string) => Uint8Array.from(mac.split(':').map((h) => parseInt(h, 16) & 255));

  vm.registerLib(
    'net',
    {
      createConnection: (a) => [newTcp(a.L).ud],
      createServer: (a) => {
        let timeout = 30;
        if (!a.isNil(1)) {
          if (!isNumberLike(a, 1)) throw badArg(1, 'createServer', `number expected, got ${typeName(a, 1)}`);
          timeout = toInt(a, 1); // legacy createServer(net.TCP, 30): arg 1 is net.TCP = 1 -> 1 s
        }
        const srv = new TcpServerObj();
        srv.timeout = timeout;
        srv.ud = newUserdataRef(vm, a.L, srv, 'net.tcpserver');
        unheld(srv);
        return [srv.ud];
      },
      createUDPSocket: (a) => {
        const u = new UdpSock();
        u.ud = newUserdataRef(vm, a.L, u, 'net.udpsocket');
        return [u.ud];
      },
      ifinfo: (a) => {
        const idx = a.isNil(1) ? 0 : a.int(1);
        if (idx === 0) {
          const up = (net.wifiStatus ?? 5) === 5;
          const gw = net.gateway ?? '127.0.0.1';
          return [
            {
              hwaddr: macBytes(net.mac ?? '5c:cf:7f:00:00:01'),
              ip: up ? ipTable(stationIp) : undefined,
              netmask: up ? ipTable(net.netmask ?? '255.0.0.0') : undefined,
              gateway: up ? ipTable(gw) : undefined,
              dhcp: up ? { server_ip: gw, client_ip: stationIp } : undefined,
            },
          ];
        }
        if (idx === 1) return [{ hwaddr: macBytes((net.mac ?? '5c:cf:7f:00:00:01').replace(/^5c/, '5e')) }];
        return [];
      },
      multicastJoin: mcast('multicastJoin'),
      multicastLeave: mcast('multicastLeave'),
      ping: (a) => ping(a),
    },
    { TCP: 1, UDP: 2 },
  );

  vm.registerLib('__nm_dns', {
    resolve: (a) => {
      const host = latin1(checkBytes(a, 1, 'resolve'));
      if (!a.isFunction(2)) throw badArg(2, 'resolve', `function expected, got ${typeName(a, 2)}`);
      const cb = a.fnRef(2);
      const hit = literal(host);
      if (hit) {
        // an IP literal (the only synchronous answer: no DNS cache): the callback runs before resolve() returns
        try {
          callNow(vm, a, cb, null, hit);
        } finally {
          cb.release();
        }
        return;
      }
      try {
        startLookup(host, (ip) => {
          if (alive()) esp.unprotectedCall(cb, null, ip);
          cb.release();
        });
      } catch (e) {
        cb.release();
        throw e;
      }
    },
    getdnsserver: (a) => {
      const i = a.isNil(1) ? 0 : a.int(1);
      if (i < 0 || i >= 2) throw new LuaRaise('server index out of range [0-1]');
      return [dnsServers[i] ?? null];
    },
    setdnsserver: (a) => {
      const ip = latin1(checkBytes(a, 1, 'setdnsserver'));
      const i = a.isNil(2) ? 0 : a.int(2);
      if (ip.length > 16 || !isDottedQuad(ip) || ip === '0.0.0.0') throw new LuaRaise('invalid dns server ip');
      if (i < 0 || i >= 2) throw new LuaRaise('server index out of range [0-1]');
      dnsServers[i] = ip;
    },
  });
  vm.runString('net.dns = __nm_dns __nm_dns = nil', '=net.dns');

  // net.ping(host, [count], cb_recv, [cb_sent]): callbacks under luaL_pcallx
  const ping = (a: LuaArgs) => {
    const host = latin1(checkBytes(a, 1, 'ping'));
    let stack = 2;
    let count = 4;
    if (a.isNumber(stack)) count = a.int(stack++);
    if (!a.isFunction(stack)) throw badArg(stack, 'ping', 'no received callback specified');
    const recv = a.fnRef(stack++);
    let sent: LuaRef | undefined;
    if (!a.isNil(stack)) {
      if (!a.isFunction(stack)) {
        recv.release();
        throw badArg(stack, 'ping', 'invalid sent callback, function expected');
      }
      sent = a.fnRef(stack);
    }
    const interval = net.pingIntervalMs ?? 1000;
    const reply = net.pingReply ?? ((ip: string) => (ip.startsWith('127.') || ip === stationIp || ip === (net.gateway ?? '127.0.0.1') ? 1 : null));
    const run = (ip: string | null) => {
      if (!ip) {
        esp.protectedCall(recv, 0); // DNS failed: cb_recv(0) with nothing else
        recv.release();
        sent?.release();
        return;
      }
      let n = 0;
      let lost = 0;
      let bytes = 0;
      const t0 = Date.now();
      const one = () => {
        if (n >= count) {
          if (sent) esp.protectedCall(sent, ip, count, lost, bytes, Date.now() - t0);
          recv.release();
          sent?.release();
          return;
        }
        n++;
        const seq = ++pingSeq;
        const rtt = reply(ip);
        const wait = rtt === null ? interval : Math.min(rtt, interval);
        const cancel = sched.after(wait, () => {
          timers.delete(cancel);
          if (rtt === null) {
            lost++;
            esp.protectedCall(recv, 0, ip, seq, -1);
          } else {
            bytes += 32;
            esp.protectedCall(recv, 32, ip, seq, rtt);
          }
          const next = sched.after(Math.max(0, interval - wait), () => {
            timers.delete(next);
            one();
          });
          timers.add(next);
        });
        timers.add(cancel);
      };
      one();
    };
    const hit = literal(host);
    if (hit) sched.post(() => run(hit));
    else if (host.length === 0 || host.length >= 256) sched.post(() => run(null)); // as before: net_ping's own handling of ERR_ARG was not checked
    else startLookup(host, run);
  };

  return {
    shutdown: () => {
      for (const c of timers) c();
      timers.clear();
      for (const sock of nodeSocks) sock.destroy();
      nodeSocks.clear();
      tcpSocks.clear();
      for (const srv of servers) {
        srv.server?.close();
        srv.listening = false;
      }
      servers.clear();
      for (const u of udps) {
        try {
          u.sock?.close();
        } catch {
          /* closed */
        }
      }
      udps.clear();
      for (const p of ports.tcp) heldTcpPorts.delete(p);
      for (const p of ports.udp) heldUdpPorts.delete(p);
    },
    openCount: () => tcpSocks.size + [...servers].filter((s) => s.listening).length + udps.size,
  };
}

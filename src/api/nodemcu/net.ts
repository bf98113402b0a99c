/**
 * The NodeMCU `net` module (docs/firmware/nodemcu.md, API at a glance) of an ESP8266,
 * proxied call by call through the tether agent (names on the wire: docs/nodemcu.md).
 *
 * - Every function and method returns a COLD observable: one remote call per
 *   subscription, emitting the firmware's result once and completing. Arguments are
 *   checked before anything is sent (InvalidArgumentError); the firmware's own Lua
 *   errors arrive as {@link NetError} with a `reason`.
 * - Callbacks are HOT streams per object (`receive$`, `sent$`, `connection$`,
 *   `reconnection$`, `disconnection$`, `dns$`; `accept$` on a server). A stream only
 *   carries events the firmware fires, i.e. after `on(event)` registered it.
 * - Firmware quirks are kept, not hidden (docs/firmware/nodemcu.md):
 *   `createServer(net.TCP, 30)` gets a 1 s timeout, `createConnection(net.UDP)` is
 *   still TCP, "sent" fires on ACK, a send over the free 2920-byte buffer raises
 *   "out of memory", a local close fires no "disconnection", getpeer/getaddr and UDP
 *   receive put the port before the ip, `net.dns.resolve`'s callback gets nil first.
 */
import { Observable, filter, map, share, type Subscription } from 'rxjs';
import type { CallOptions, RpcClient } from '../../rpc/client.js';
import { Handle, field, tableToArray, toNumber, toText, type WireValue } from '../../codec/values.js';
import { InvalidArgumentError, ResetError, TetherError } from '../../errors.js';
import { toNetError } from './errors.js';
import { endOnReset, resetAsError } from '../reset.js';
import { checkCallOptions, checkOptionsObject, checkTimeoutMs, isIPv4, show } from '../args.js';

/** `net.TCP` / `net.UDP`. */
export const NET_TCP = 1;
export const NET_UDP = 2;

/** Events a TCP socket can register (`socket:on`). */
export const TCP_EVENTS = ['connection', 'reconnection', 'disconnection', 'receive', 'sent', 'dns'] as const;
export type TcpEventName = (typeof TCP_EVENTS)[number];
/** Events a UDP socket can register. */
export const UDP_EVENTS = ['receive', 'sent', 'dns'] as const;
export type UdpEventName = (typeof UDP_EVENTS)[number];

/** The free send buffer of an ESP8266 TCP connection (TCP_SND_BUF = 2 * TCP_MSS). */
export const TCP_SEND_BUFFER = 2920;
/** One TCP segment (TCP_MSS); "receive" delivers at most this many bytes per event. */
export const TCP_MSS = 1460;
/** Largest UDP payload without IP fragmentation (the firmware has IP_FRAG = 0). */
export const UDP_MAX_PAYLOAD = 1472;

/** One callback from the module: `E<handle> '<name> <values>`. */
export interface NetEvent {
  handle: number;
  /** Callback name: receive, sent, connection, reconnection, disconnection, dns, accept; recv/sent for ping. */
  name: string;
  /** The callback's arguments after the object itself. */
  values: WireValue[];
  epoch: number;
}

/** `net.ifinfo()` result. */
export interface IfInfo {
  /** MAC address as `aa:bb:cc:dd:ee:ff`. */
  hwaddr?: string;
  ip?: string;
  netmask?: string;
  gateway?: string;
  /** Present when DHCP configured the interface. */
  dhcp?: { server_ip?: string; client_ip?: string; ntp_server?: string };
}

/** A datagram from a UDP socket's "receive" callback `(sock, data, port, ip)`. */
export interface Datagram {
  data: Uint8Array;
  port: number;
  ip: string;
}

/** One `net.ping` callback. */
export type PingEvent =
  /** cb_recv(bytes, ip, seqno, rtt): bytes 0 = no answer; rtt -1 on error. `ip` undefined when DNS failed. */
  | { type: 'reply'; bytes: number; ip?: string; seq?: number; rtt?: number }
  /** cb_sent(ip, total_count, timeout_count, total_bytes, total_time). */
  | { type: 'summary'; ip: string; total: number; timeouts: number; bytes: number; ms: number };

/** Options of one call. */
export type NetCallOptions = CallOptions;

const isInt = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n);
const str = (v: WireValue | undefined): string | null => (v === null || v === undefined ? null : (toText(v) ?? null));
const num = (v: WireValue | undefined): number | null => (v === null || v === undefined ? null : (toNumber(v) ?? null));
const bytesOf = (v: WireValue | undefined): Uint8Array => (v instanceof Uint8Array ? v : typeof v === 'string' ? Buffer.from(v) : new Uint8Array(0));
const toBytes = (d: Uint8Array | string): Uint8Array => (typeof d === 'string' ? Buffer.from(d) : d);

function checkPort(p: unknown, what: string, min = 0): void {
  if (!isInt(p) || p < min || p > 65535) throw new InvalidArgumentError(`${what}: port must be an integer ${min}..65535, got ${show(p)}`);
}
function checkText(s: unknown, what: string): void {
  if (typeof s !== 'string') throw new InvalidArgumentError(`${what} must be a string, got ${show(s)}`);
}
/** A non-empty name or address (an empty or missing one would be sent as a lookup of "" or "undefined"). */
function checkName(s: unknown, what: string): void {
  if (typeof s !== 'string' || s.length === 0) throw new InvalidArgumentError(`${what} must be a non-empty host name or IP string, got ${show(s)}`);
}
/** A dotted-quad IPv4 string: net.c parses it with ipaddr_aton and raises "invalid IP address" otherwise. */
function checkIp(s: unknown, what: string): void {
  if (!isIPv4(s)) throw new InvalidArgumentError(`${what} must be a dotted-quad IPv4 address such as 127.0.0.1 (the firmware does no DNS here), got ${show(s)}`);
}
/** Data to send; returns its length in bytes. net.c net_send raises "no data to send" for an empty string. */
function checkData(d: unknown, what: string): number {
  let n: number;
  if (typeof d === 'string') n = Buffer.byteLength(d);
  else if (d instanceof Uint8Array) n = d.length;
  else throw new InvalidArgumentError(`${what}: data must be a string or bytes, got ${show(d)}`);
  if (n === 0) throw new InvalidArgumentError(`${what}: data is empty (the firmware raises "no data to send")`);
  return n;
}
function checkEnable(v: unknown, what: string): void {
  if (typeof v !== 'boolean') throw new InvalidArgumentError(`${what}: enable must be true or false, got ${show(v)}`);
}
/**
 * `net.dns` server slots: net.c net_setdnsserver / net_getdnsserver raise "server index out of
 * range [0-1]" for an index >= DNS_MAX_SERVERS (2).
 */
const DNS_MAX_SERVERS = 2;
/** The range the firmware docs give for `net.createServer([timeout])` (seconds); net.c reads it with luaL_optlong unchecked. */
export const SERVER_TIMEOUT_MAX = 28800;

/**
 * `net.multicastJoin/Leave(if_ip, multicast_ip)`: net.c net_multicastJoinLeave takes "" or "any"
 * for every interface, else addresses of 7..15 characters ("invalid if ip" / "invalid multicast ip").
 */
function checkMulticast(ifIp: unknown, multicastIp: unknown, what: string): void {
  if (!(ifIp === '' || (typeof ifIp === 'string' && ifIp.toLowerCase() === 'any') || isIPv4(ifIp))) throw new InvalidArgumentError(`${what}: if_ip must be "", "any" or a dotted-quad IPv4 address, got ${show(ifIp)}`);
  if (!isIPv4(multicastIp)) throw new InvalidArgumentError(`${what}: multicast_ip must be a dotted-quad IPv4 address, got ${show(multicastIp)}`);
}

/**
 * The arguments of `connectTcp(net, host, port, o)` (src/streams/drivers/nodemcu-conn.ts), checked
 * without sending anything: host a non-empty string, port 1..65535, `o` an object or omitted,
 * `o.timeoutMs` > 0 ms. `connectTcp` calls it first.
 * @throws InvalidArgumentError
 */
export function checkConnectTcpArgs(host: unknown, port: unknown, o: unknown): void {
  checkName(host, 'connectTcp host');
  checkPort(port, 'connectTcp', 1);
  checkOptionsObject(o, 'connectTcp');
  checkTimeoutMs((o as { timeoutMs?: unknown } | undefined)?.timeoutMs, 'connectTcp');
}

/** Base of the module-side objects: an integer handle valid for one boot of the module. */
export abstract class NetObject {
  abstract readonly kind: 'tcpsocket' | 'tcpserver' | 'udpsocket';
  /** @internal */
  constructor(
    readonly net: NodeMcuNet,
    readonly id: number,
    readonly epoch: number,
  ) {}
  toString(): string {
    return `${this.kind}#${this.id}`;
  }
  toJSON(): string {
    return `h${this.id}`;
  }
  /**
   * Every event of this object (hot). Errors with `RESET` ({@link ResetError}) when the module
   * resets (the object is gone with its boot), at once for an object of a previous boot.
   */
  get events(): Observable<NetEvent> {
    return this.net.eventsOf(this.id, this.epoch);
  }
  /** Events of one callback name (hot); errors with `RESET` like {@link events}. */
  protected named(name: string): Observable<WireValue[]> {
    return this.events.pipe(
      filter((e) => e.name === name),
      map((e) => e.values),
    );
  }
  /** @internal a call with this object's handle first */
  protected invoke<T>(method: string, args: WireValue[], convert: (v: WireValue[]) => T, opts?: NetCallOptions): Observable<T> {
    return this.net.invoke(`${this.kind}.${method}`, [new Handle(this.id), ...args], convert, opts, this);
  }
  /**
   * `agent.release`: the host is done with the object: the agent unregisters its callbacks,
   * closes it (errors ignored) and forgets the handle. Later calls with it fail with BADHANDLE.
   */
  release(opts?: NetCallOptions): Observable<void> {
    return this.net.invoke('agent.release', [new Handle(this.id)], () => undefined, opts, this);
  }
}

/** `net.socket` (a TCP client, or a connection a server accepted). */
export class TcpSocket extends NetObject {
  readonly kind = 'tcpsocket' as const;

  /** `socket:connect(port, ip|domain)`; host defaults to 127.0.0.1 on the firmware. "connection" (or reconnection/disconnection) follows. */
  connect(port: number, host?: string, opts?: NetCallOptions): Observable<void> {
    checkPort(port, 'socket:connect', 1);
    if (host !== undefined) checkName(host, 'socket:connect host');
    return this.invoke('connect', host === undefined ? [port] : [port, host], () => undefined, opts);
  }
  /** `socket:close()`: FIN; the firmware fires NO "disconnection" after a local close. Raises "not connected" without a connection. */
  close(opts?: NetCallOptions): Observable<void> {
    return this.invoke('close', [], () => undefined, opts);
  }
  /**
   * `socket:dns(domain, cb)`: emits the ip (or null) from the callback, then completes.
   * The callback also becomes the socket's "dns" handler, as on the firmware.
   */
  dns(domain: string, opts?: NetCallOptions): Observable<string | null> {
    checkName(domain, 'socket:dns domain');
    return this.net.callThenEvent(`${this.kind}.dns`, [new Handle(this.id), domain, true], this.id, 'dns', (v) => str(v[0]), opts, this);
  }
  /** `socket:getpeer()`: `[port, ip]` (port first), `[null, null]` when not connected. */
  getpeer(opts?: NetCallOptions): Observable<[number | null, string | null]> {
    return this.invoke('getpeer', [], (v) => [num(v[0]), str(v[1])] as [number | null, string | null], opts);
  }
  /** `socket:getaddr()`: local `[port, ip]`, `[null, null]` when not connected. */
  getaddr(opts?: NetCallOptions): Observable<[number | null, string | null]> {
    return this.invoke('getaddr', [], (v) => [num(v[0]), str(v[1])] as [number | null, string | null], opts);
  }
  /** `socket:hold()`: stop re-opening the TCP receive window (data in flight still arrives). */
  hold(opts?: NetCallOptions): Observable<void> {
    return this.invoke('hold', [], () => undefined, opts);
  }
  /** `socket:unhold()`. */
  unhold(opts?: NetCallOptions): Observable<void> {
    return this.invoke('unhold', [], () => undefined, opts);
  }
  /**
   * `socket:on(event, fn)`: with `enable` (default) the agent registers a callback that forwards
   * the event to the matching stream; `false` unregisters (`on(event, nil)`). Registering
   * "reconnection" changes the firmware's rules: error endings then go there, not to "disconnection".
   */
  on(event: TcpEventName, enable = true, opts?: NetCallOptions): Observable<void> {
    if (!(TCP_EVENTS as readonly string[]).includes(event)) throw new InvalidArgumentError(`socket:on: event must be one of ${TCP_EVENTS.join(', ')}, got ${show(event)}`);
    checkEnable(enable, 'socket:on');
    return this.invoke('on', [event, enable], () => undefined, opts);
  }
  /**
   * `socket:send(data, fn)`: queue bytes. At most the free send buffer (2920 bytes minus what is
   * not yet ACKed) fits, else "out of memory" (NetError reason OUT_OF_MEMORY). With
   * `sentCallback` (default true) the agent passes its "sent" forwarder as `fn`, which replaces
   * the socket's "sent" callback. For large payloads write through a stream (`mod.createConnection`), which chunks within the buffer.
   */
  send(data: Uint8Array | string, o: { sentCallback?: boolean } = {}, opts?: NetCallOptions): Observable<void> {
    checkData(data, 'socket:send');
    checkOptionsObject(o, 'socket:send');
    o ??= {};
    if (o.sentCallback !== undefined && typeof o.sentCallback !== 'boolean') throw new InvalidArgumentError(`socket:send: sentCallback must be true or false, got ${show(o.sentCallback)}`);
    return this.invoke('send', [toBytes(data), o.sentCallback ?? true], () => undefined, opts);
  }
  /** `socket:ttl([n])`: the current (or new) TTL. Raises "socket is not open/bound yet" without a connection. */
  ttl(value?: number, opts?: NetCallOptions): Observable<number> {
    if (value !== undefined && (!isInt(value) || value < 0 || value > 255)) throw new InvalidArgumentError('socket:ttl: ttl must be an integer 0..255');
    return this.invoke('ttl', value === undefined ? [] : [value], (v) => num(v[0]) ?? 0, opts);
  }
  /** "connection": the TCP connection is up. */
  get connection$(): Observable<void> {
    return this.named('connection').pipe(map(() => undefined));
  }
  /** "reconnection": an error ended the connection (err: -8 aborted/timeout, -9 reset/refused); nothing reconnects. */
  get reconnection$(): Observable<number> {
    return this.named('reconnection').pipe(map((v) => num(v[0]) ?? 0));
  }
  /** "disconnection": remote close (0), or an error ending when no "reconnection" handler is registered. */
  get disconnection$(): Observable<number> {
    return this.named('disconnection').pipe(map((v) => num(v[0]) ?? 0));
  }
  /** "receive": one event per TCP segment (<= 1460 bytes), never coalesced: frame your own data. */
  get receive$(): Observable<Uint8Array> {
    return this.named('receive').pipe(map((v) => bytesOf(v[0])));
  }
  /** "sent": the peer ACKed data (maybe once for several sends, or several times for one). */
  get sent$(): Observable<void> {
    return this.named('sent').pipe(map(() => undefined));
  }
  /** "dns": a lookup of `connect(port, name)` or `dns()` finished: the ip, or null. */
  get dns$(): Observable<string | null> {
    return this.named('dns').pipe(map((v) => str(v[0])));
  }
}

/** `net.server` (a TCP listener). */
export class TcpServer extends NetObject {
  readonly kind = 'tcpserver' as const;

  /**
   * `server:listen([port], [ip], cb)`. Port 0 / omitted = random, ip defaults to 0.0.0.0.
   * The agent's `cb` hands every accepted socket to {@link accept$} after registering
   * `events` on it (default connection, receive, sent, disconnection), so no early data is lost.
   */
  listen(port?: number, ip?: string, o: { events?: TcpEventName[] } = {}, opts?: NetCallOptions): Observable<void> {
    if (port !== undefined) checkPort(port, 'server:listen');
    if (ip !== undefined) checkIp(ip, 'server:listen ip');
    checkOptionsObject(o, 'server:listen');
    o ??= {};
    if (o.events !== undefined && (!Array.isArray(o.events) || !o.events.every((e) => (TCP_EVENTS as readonly string[]).includes(e)))) {
      throw new InvalidArgumentError(`server:listen: events must be an array of ${TCP_EVENTS.join(', ')}, got ${show(o.events)}`);
    }
    const evs = o.events ?? ['connection', 'receive', 'sent', 'disconnection'];
    return this.invoke('listen', [port ?? null, ip ?? null, evs], () => undefined, opts);
  }
  /** `server:close()`: stops listening; accepted connections stay up. Raises "not connected" when not listening. */
  close(opts?: NetCallOptions): Observable<void> {
    return this.invoke('close', [], () => undefined, opts);
  }
  /** `server:getaddr()`: `[port, ip]`, `[null, null]` when not listening. */
  getaddr(opts?: NetCallOptions): Observable<[number | null, string | null]> {
    return this.invoke('getaddr', [], (v) => [num(v[0]), str(v[1])] as [number | null, string | null], opts);
  }
  /** Connections the server accepted (hot). Their events are already registered (see {@link listen}). */
  get accept$(): Observable<TcpSocket> {
    return this.named('accept').pipe(
      filter((v) => v[0] instanceof Handle),
      map((v) => new TcpSocket(this.net, (v[0] as Handle).id, this.epoch)),
    );
  }
}

/** `net.udpsocket`. */
export class UdpSocket extends NetObject {
  readonly kind = 'udpsocket' as const;

  /** `udpsocket:listen([port], [ip])`; no callback. Raises "already listening" once bound (send() binds too). */
  listen(port?: number, ip?: string, opts?: NetCallOptions): Observable<void> {
    if (port !== undefined) checkPort(port, 'udpsocket:listen');
    if (ip !== undefined) checkIp(ip, 'udpsocket:listen ip');
    // omitted arguments are left out, not sent as nil: the firmware parses them by type
    const args: WireValue[] = [];
    if (port !== undefined) args.push(port);
    if (ip !== undefined) args.push(ip);
    return this.invoke('listen', args, () => undefined, opts);
  }
  /** `udpsocket:on(event, fn)`: receive, sent, dns. */
  on(event: UdpEventName, enable = true, opts?: NetCallOptions): Observable<void> {
    if (!(UDP_EVENTS as readonly string[]).includes(event)) throw new InvalidArgumentError(`udpsocket:on: event must be one of ${UDP_EVENTS.join(', ')}, got ${show(event)}`);
    checkEnable(enable, 'udpsocket:on');
    return this.invoke('on', [event, enable], () => undefined, opts);
  }
  /**
   * `udpsocket:send(port, ip, data, fn)`: `ip` must be a dotted quad (no DNS). Binds to a random
   * port first if needed. "sent" fires inside send(), before the reply.
   * @throws InvalidArgumentError for port 0, an ip that is not a dotted quad, empty data, or data
   *   over {@link UDP_MAX_PAYLOAD} (1472) bytes.
   */
  send(port: number, ip: string, data: Uint8Array | string, o: { sentCallback?: boolean } = {}, opts?: NetCallOptions): Observable<void> {
    // net.c net_send raises "need port" for port 0 and "invalid IP address" when ipaddr_aton fails
    checkPort(port, 'udpsocket:send', 1);
    checkIp(ip, 'udpsocket:send ip');
    const n = checkData(data, 'udpsocket:send');
    // net.c net_send hands the whole payload to udp_sendto in one pbuf; lwipopts.h has IP_FRAG 0
    // (firmware notes, nodemcu.md "u:send"), so a datagram must fit one 1500-byte IP packet:
    // 1500 - 20 (IP) - 8 (UDP) = 1472 bytes
    if (n > UDP_MAX_PAYLOAD) throw new InvalidArgumentError(`udpsocket:send: ${n} bytes; a datagram carries at most ${UDP_MAX_PAYLOAD} (the firmware does not fragment IP)`, { bytes: n, max: UDP_MAX_PAYLOAD });
    checkOptionsObject(o, 'udpsocket:send');
    o ??= {};
    if (o.sentCallback !== undefined && typeof o.sentCallback !== 'boolean') throw new InvalidArgumentError(`udpsocket:send: sentCallback must be true or false, got ${show(o.sentCallback)}`);
    return this.invoke('send', [port, ip, toBytes(data), o.sentCallback ?? false], () => undefined, opts);
  }
  /** `udpsocket:close()`. Raises "not connected" when not bound. */
  close(opts?: NetCallOptions): Observable<void> {
    return this.invoke('close', [], () => undefined, opts);
  }
  /** `udpsocket:dns(domain, cb)`: emits the ip or null. */
  dns(domain: string, opts?: NetCallOptions): Observable<string | null> {
    checkName(domain, 'udpsocket:dns domain');
    return this.net.callThenEvent(`${this.kind}.dns`, [new Handle(this.id), domain, true], this.id, 'dns', (v) => str(v[0]), opts, this);
  }
  /** `udpsocket:getaddr()`: local `[port, ip]`, `[null, null]` when not bound. */
  getaddr(opts?: NetCallOptions): Observable<[number | null, string | null]> {
    return this.invoke('getaddr', [], (v) => [num(v[0]), str(v[1])] as [number | null, string | null], opts);
  }
  /** `udpsocket:ttl([n])`. */
  ttl(value?: number, opts?: NetCallOptions): Observable<number> {
    if (value !== undefined && (!isInt(value) || value < 0 || value > 255)) throw new InvalidArgumentError('udpsocket:ttl: ttl must be an integer 0..255');
    return this.invoke('ttl', value === undefined ? [] : [value], (v) => num(v[0]) ?? 0, opts);
  }
  /** "receive" `(sock, data, port, ip)`: one per datagram. */
  get receive$(): Observable<Datagram> {
    return this.named('receive').pipe(map((v) => ({ data: bytesOf(v[0]), port: num(v[1]) ?? 0, ip: str(v[2]) ?? '' })));
  }
  /** "sent". */
  get sent$(): Observable<void> {
    return this.named('sent').pipe(map(() => undefined));
  }
  /** "dns". */
  get dns$(): Observable<string | null> {
    return this.named('dns').pipe(map((v) => str(v[0])));
  }
}

/** `net.dns`. */
export class NodeMcuDns {
  /** @internal */
  constructor(private readonly net: NodeMcuNet) {}

  /**
   * `net.dns.resolve(host, cb)`: emits the callback's arguments `[sk, ip]` (sk is always null,
   * ip null when the lookup failed) and completes. IP literals and cached names answer at once.
   * Raises "out of memory" when 4 lookups are already running.
   */
  resolveRaw(host: string, opts?: NetCallOptions): Observable<[null, string | null]> {
    checkName(host, 'net.dns.resolve host');
    checkCallOptions(opts, 'net.dns.resolve');
    return this.net.callThenEvent('net.dns.resolve', [host], undefined, 'dns', (v) => [null, str(v[1])] as [null, string | null], opts);
  }
  /** `net.dns.resolve`: the address, or null when the name did not resolve. */
  resolve(host: string, opts?: NetCallOptions): Observable<string | null> {
    return this.resolveRaw(host, opts).pipe(map((v) => v[1]));
  }
  /** `net.dns.getdnsserver([i])` (0 or 1): the server, or null when unset. */
  getdnsserver(index = 0, opts?: NetCallOptions): Observable<string | null> {
    if (!isInt(index) || index < 0 || index >= DNS_MAX_SERVERS) throw new InvalidArgumentError(`net.dns.getdnsserver: index must be 0 or 1, got ${show(index)}`);
    return this.net.invoke('net.dns.getdnsserver', [index], (v) => str(v[0]), opts);
  }
  /** `net.dns.setdnsserver(ip, [i])`. */
  setdnsserver(ip: string, index = 0, opts?: NetCallOptions): Observable<void> {
    // net.c net_setdnsserver: "invalid dns server ip" for a non-address or 0.0.0.0
    checkIp(ip, 'net.dns.setdnsserver ip');
    if (ip === '0.0.0.0') throw new InvalidArgumentError('net.dns.setdnsserver ip must not be 0.0.0.0 (the firmware raises "invalid dns server ip")');
    if (!isInt(index) || index < 0 || index >= DNS_MAX_SERVERS) throw new InvalidArgumentError(`net.dns.setdnsserver: index must be 0 or 1, got ${show(index)}`);
    return this.net.invoke('net.dns.setdnsserver', [ip, index], () => undefined, opts);
  }
}

/** Station status of the module (`wifi.sta.*`, `wifi.getmode`). */
export class NodeMcuWifi {
  static readonly STATUS = ['idle', 'connecting', 'wrong password', 'AP not found', 'failed', 'got IP'];
  /** @internal */
  constructor(private readonly net: NodeMcuNet) {}
  /** `wifi.sta.status()`: 0 idle .. 5 got IP. */
  status(opts?: NetCallOptions): Observable<number> {
    return this.net.invoke('wifi.sta.status', [], (v) => num(v[0]) ?? -1, opts);
  }
  /** `wifi.sta.getip()`: `{ ip, netmask, gateway }`, or null without an address. */
  getip(opts?: NetCallOptions): Observable<{ ip: string; netmask: string; gateway: string } | null> {
    return this.net.invoke('wifi.sta.getip', [], (v) => (v[0] === null || v[0] === undefined ? null : { ip: str(v[0]) ?? '', netmask: str(v[1]) ?? '', gateway: str(v[2]) ?? '' }), opts);
  }
  /** `wifi.getmode()`: 1 station, 2 AP, 3 both. */
  getmode(opts?: NetCallOptions): Observable<number> {
    return this.net.invoke('wifi.getmode', [], (v) => num(v[0]) ?? 0, opts);
  }
}

/** `node.*` the agent exposes. */
export class NodeMcuNode {
  /** @internal */
  constructor(private readonly net: NodeMcuNet) {}
  /** `node.heap()`: free system heap in bytes. */
  heap(opts?: NetCallOptions): Observable<number> {
    return this.net.invoke('node.heap', [], (v) => num(v[0]) ?? 0, opts);
  }
  /** `node.chipid()`. */
  chipid(opts?: NetCallOptions): Observable<number> {
    return this.net.invoke('node.chipid', [], (v) => num(v[0]) ?? 0, opts);
  }
  /** `node.restart()` 50 ms after the reply: the module resets (the RPC client sees a new boot epoch). */
  restart(opts?: NetCallOptions): Observable<void> {
    return this.net.invoke('node.restart', [], () => undefined, opts);
  }
  /** `agent.repl`: stop the agent and give the Lua prompt back on the UART (the RPC session ends). */
  repl(opts?: NetCallOptions): Observable<void> {
    return this.net.invoke('agent.repl', [], () => undefined, opts);
  }
}

/**
 * The `net` module of one NodeMCU module. Get it from `TetherModule.net` or `new NodeMcuNet(rpc)`.
 */
export class NodeMcuNet {
  /** `net.TCP`. */
  readonly TCP = NET_TCP;
  /** `net.UDP`. */
  readonly UDP = NET_UDP;
  /** Every callback of this module's net objects and requests (hot; nothing is replayed). */
  readonly allEvents: Observable<NetEvent>;
  /** `net.dns`. */
  readonly dns: NodeMcuDns;
  /** WiFi station status (not part of `net`, but what its connectivity depends on). */
  readonly wifi: NodeMcuWifi;
  /** `node.heap`, `node.chipid`, `node.restart`, and `agent.repl`. */
  readonly node: NodeMcuNode;

  constructor(readonly rpc: RpcClient) {
    this.allEvents = rpc.events.pipe(
      filter((e) => e.epoch === rpc.currentEpoch),
      map((e) => ({ handle: e.handle, name: str(e.values[0]) ?? '', values: e.values.slice(1), epoch: e.epoch })),
      share(),
    );
    this.dns = new NodeMcuDns(this);
    this.wifi = new NodeMcuWifi(this);
    this.node = new NodeMcuNode(this);
  }

  /**
   * Events of one handle (hot). With `epoch` (the boot the handle belongs to) the stream errors
   * with `RESET` ({@link ResetError}) when the module resets, at once when that boot is gone.
   */
  eventsOf(handle: number, epoch?: number): Observable<NetEvent> {
    const evs = this.allEvents.pipe(filter((e) => e.handle === handle));
    return epoch === undefined ? evs : evs.pipe(endOnReset(this.rpc, `events of handle ${handle}`, epoch));
  }

  /** @internal one remote call, converted; firmware errors become NetError; stale handles ResetError. */
  invoke<T>(fn: string, args: WireValue[], convert: (v: WireValue[]) => T, opts?: NetCallOptions, obj?: NetObject): Observable<T> {
    checkCallOptions(opts, fn);
    if (obj && obj.net !== this) throw new InvalidArgumentError(`${fn}: ${obj} belongs to another module`);
    return new Observable<T>((sub) => {
      if (obj && obj.epoch !== this.rpc.currentEpoch) {
        sub.error(new ResetError(`${fn}: ${obj} belongs to a previous boot of the module (it reset); create a new one`, { fn }));
        return;
      }
      return this.rpc.call$(fn, args, opts).subscribe({
        next: (v) => {
          let out: T;
          try {
            out = convert(v);
          } catch (e) {
            sub.error(e);
            return;
          }
          sub.next(out);
        },
        error: (e) => sub.error(toNetError(e)),
        complete: () => sub.complete(),
      });
    });
  }

  /**
   * @internal A call whose result arrives as an event: subscribe to events first (the firmware may
   * call back before the reply), then call. `handle` is known (socket dns) or comes back from the
   * call (a request id). Emits the converted first matching event and completes; errors with
   * `RESET` when the module resets first (the callback will never come).
   */
  callThenEvent<T>(fn: string, args: WireValue[], handle: number | undefined, name: string, convert: (v: WireValue[]) => T, opts?: NetCallOptions, obj?: NetObject): Observable<T> {
    checkCallOptions(opts, fn);
    if (obj && obj.net !== this) throw new InvalidArgumentError(`${fn}: ${obj} belongs to another module`);
    return new Observable<T>((sub) => {
      const early: NetEvent[] = [];
      let id = handle;
      let done = false;
      const reset = resetAsError(this.rpc, `${fn}: waiting for its "${name}" callback`, obj?.epoch ?? this.rpc.currentEpoch).subscribe({ error: (e) => sub.error(e) });
      if (sub.closed) return;
      const deliver = (e: NetEvent) => {
        if (done || e.name !== name) return;
        done = true;
        sub.next(convert(e.values));
        sub.complete();
      };
      const evs: Subscription = this.allEvents.subscribe({
        next: (e) => {
          if (id === undefined) early.push(e);
          else if (e.handle === id) deliver(e);
        },
        complete: () => {
          if (!done) sub.error(new TetherError('DISCONNECTED', `${fn}: the link closed before the callback`));
        },
      });
      const call = this.invoke(fn, args, (v) => v, opts, obj).subscribe({
        next: (v) => {
          if (id === undefined) {
            id = num(v[0]) ?? -1;
            for (const e of early.splice(0)) if (e.handle === id) deliver(e);
          }
        },
        error: (e) => sub.error(e),
      });
      return () => {
        reset.unsubscribe();
        evs.unsubscribe();
        call.unsubscribe();
      };
    });
  }

  private wrap<T extends NetObject>(v: WireValue | undefined, make: (id: number) => T): T {
    if (!(v instanceof Handle)) throw new TetherError('PROTOCOL', `expected a handle from the agent, got ${String(v)}`);
    return make(v.id);
  }

  /**
   * `net.createConnection()`: a TCP socket. The firmware ignores every argument: passing the legacy
   * `(net.UDP)` or `(net.TCP, secure)` still gives a plain TCP socket.
   */
  createConnection(...legacy: Array<number | null>): Observable<TcpSocket> {
    for (const a of legacy) if (a !== null && !isInt(a)) throw new InvalidArgumentError(`net.createConnection: the (ignored) legacy arguments must be integers such as net.TCP, got ${show(a)}`);
    return this.invoke('net.createConnection', legacy, (v) => this.wrap(v[0], (id) => new TcpSocket(this, id, this.rpc.currentEpoch)));
  }

  /**
   * `net.createServer([timeout])`: a TCP server; `timeout` (s, default 30) is the keepalive idle
   * time of accepted connections (a dead-peer check: a live peer is never dropped). Legacy
   * `createServer(net.TCP, 30)`: pass both and get what the firmware does, a 1 s timeout.
   * @throws InvalidArgumentError for a timeout outside 1..28800 s (the range of the firmware docs).
   */
  createServer(timeout?: number, legacySecond?: number): Observable<TcpServer> {
    const args: WireValue[] = [];
    if (timeout !== undefined) {
      // docs/modules/net.md: timeout 1..28800 s; net.c reads it with luaL_optlong and checks nothing
      if (!isInt(timeout) || timeout < 1 || timeout > SERVER_TIMEOUT_MAX) throw new InvalidArgumentError(`net.createServer: timeout must be an integer 1..${SERVER_TIMEOUT_MAX} (seconds), got ${show(timeout)}`);
      args.push(timeout);
      if (legacySecond !== undefined) {
        if (!isInt(legacySecond)) throw new InvalidArgumentError(`net.createServer: the legacy second argument must be an integer (seconds), got ${show(legacySecond)}`);
        args.push(legacySecond);
      }
    }
    return this.invoke('net.createServer', args, (v) => this.wrap(v[0], (id) => new TcpServer(this, id, this.rpc.currentEpoch)));
  }

  /** `net.createUDPSocket()`. */
  createUDPSocket(): Observable<UdpSocket> {
    return this.invoke('net.createUDPSocket', [], (v) => this.wrap(v[0], (id) => new UdpSocket(this, id, this.rpc.currentEpoch)));
  }

  /** `net.ifinfo([index])`: 0 station, 1 AP; null for any other index. */
  ifinfo(index = 0, opts?: NetCallOptions): Observable<IfInfo | null> {
    if (!isInt(index) || index < 0) throw new InvalidArgumentError(`net.ifinfo: index must be a non-negative integer (0 station, 1 AP), got ${show(index)}`);
    return this.invoke(
      'net.ifinfo',
      [index],
      (v) => {
        const t = v[0];
        if (!(t instanceof Map)) return null;
        const hw = field(t, 'hwaddr');
        const d = field(t, 'dhcp');
        const info: IfInfo = {};
        if (hw instanceof Uint8Array) info.hwaddr = Array.from(hw, (b) => b.toString(16).padStart(2, '0')).join(':');
        for (const k of ['ip', 'netmask', 'gateway'] as const) {
          const s = str(field(t, k));
          if (s) info[k] = s;
        }
        if (d instanceof Map) info.dhcp = { server_ip: str(field(d, 'server_ip')) ?? undefined, client_ip: str(field(d, 'client_ip')) ?? undefined, ntp_server: str(field(d, 'ntp_server')) ?? undefined };
        return info;
      },
      opts,
    );
  }

  /** `net.multicastJoin(if_ip, multicast_ip)`; `if_ip` "" or "any" = every interface. */
  multicastJoin(ifIp: string, multicastIp: string, opts?: NetCallOptions): Observable<void> {
    checkMulticast(ifIp, multicastIp, 'net.multicastJoin');
    return this.invoke('net.multicastJoin', [ifIp, multicastIp], () => undefined, opts);
  }

  /** `net.multicastLeave(if_ip, multicast_ip)`. */
  multicastLeave(ifIp: string, multicastIp: string, opts?: NetCallOptions): Observable<void> {
    checkMulticast(ifIp, multicastIp, 'net.multicastLeave');
    return this.invoke('net.multicastLeave', [ifIp, multicastIp], () => undefined, opts);
  }

  /**
   * `net.ping(host, [count], cb_recv, cb_sent)`: a stream of replies (one per ping; bytes 0 for a
   * lost one), then the summary, then complete. When the name does not resolve: one reply with
   * bytes 0 and no ip, then complete. Errors with `RESET` when the module resets meanwhile.
   */
  ping(host: string, count?: number, opts?: NetCallOptions): Observable<PingEvent> {
    checkName(host, 'net.ping host');
    if (count !== undefined && (!isInt(count) || count < 1)) throw new InvalidArgumentError(`net.ping: count must be a positive integer, got ${show(count)}`);
    checkCallOptions(opts, 'net.ping');
    return new Observable<PingEvent>((sub) => {
      const early: NetEvent[] = [];
      let id: number | undefined;
      const reset = resetAsError(this.rpc, `net.ping(${host})`, this.rpc.currentEpoch).subscribe({ error: (e) => sub.error(e) });
      if (sub.closed) return;
      const on = (e: NetEvent) => {
        if (e.name === 'recv') {
          const ip = str(e.values[1]);
          sub.next({ type: 'reply', bytes: num(e.values[0]) ?? 0, ip: ip ?? undefined, seq: num(e.values[2]) ?? undefined, rtt: num(e.values[3]) ?? undefined });
          if (ip === null) sub.complete();
        } else if (e.name === 'sent') {
          sub.next({ type: 'summary', ip: str(e.values[0]) ?? '', total: num(e.values[1]) ?? 0, timeouts: num(e.values[2]) ?? 0, bytes: num(e.values[3]) ?? 0, ms: num(e.values[4]) ?? 0 });
          sub.complete();
        }
      };
      const evs = this.allEvents.subscribe({
        next: (e) => {
          if (id === undefined) early.push(e);
          else if (e.handle === id) on(e);
        },
        complete: () => sub.error(new TetherError('DISCONNECTED', 'net.ping: the link closed before the ping finished')),
      });
      const call = this.invoke('net.ping', count === undefined ? [host] : [host, count], (v) => num(v[0]) ?? -1, opts).subscribe({
        next: (rid) => {
          id = rid;
          for (const e of early.splice(0)) if (e.handle === id) on(e);
        },
        error: (e) => sub.error(e),
      });
      return () => {
        reset.unsubscribe();
        evs.unsubscribe();
        call.unsubscribe();
      };
    });
  }
}

/** Convenience: decode a `caps`-style table of strings (tests, tools). */
export function textList(v: WireValue | undefined): string[] {
  return tableToArray(v).map((x) => str(x) ?? '');
}

/**
 * The LuatOS `socket` library (docs/firmware/luatos.md), proxied
 * call by call to the module's own network stack. Every method returns a COLD
 * observable that makes exactly one remote call per subscription and emits the
 * firmware's return values as a tuple: same order, same count (trailing nils
 * included, as `null`), as docs/firmware/luatos.md says the C code
 * pushes them. Unsubscribing before the reply abandons the call.
 *
 * Tuples whose first value is the firmware's success boolean also carry `ok`:
 * the success flag normalised for firmware built before 2023-01-31, which
 * returns that boolean inverted (hello `boolinv`).
 */
import { Observable, filter, map, share } from 'rxjs';
import type { RpcClient, CallOptions } from '../../rpc/client.js';
import { Handle, toText, field, toNumber, type WireValue } from '../../codec/values.js';
import { InvalidArgumentError, ResetError, TetherError } from '../../errors.js';
import { eventName, MAX_ADAPTER, SocketEvent, type SocketEventName } from './constants.js';
import { endOnReset } from '../reset.js';
import { checkBoolean, checkCallOptions, checkOptionsObject, show } from '../args.js';

/** A module-side socket (`socket.create`'s ctrl), as an integer handle valid for one boot of the module. */
export class SocketCtrl {
  /** @internal */
  constructor(
    readonly id: number,
    readonly epoch: number,
    /** @internal */ readonly owner: LuatosSocket,
  ) {}
  toString(): string {
    return `socket#${this.id}`;
  }
  toJSON(): string {
    return `h${this.id}`;
  }
}

/** A firmware return tuple with the normalised success flag. */
export type Result<T extends unknown[]> = T & { readonly ok: boolean };

/** One socket callback event: `fn(ctrl, event, param)` on the module. */
export interface SocketEventInfo {
  ctrl: SocketCtrl;
  /** Event id (`SocketEvent.ON_LINE` ...). */
  event: number;
  /** Event name, or `UNKNOWN`. */
  name: SocketEventName | 'UNKNOWN';
  /** 0 = success, -1 = failure. */
  param: number;
}

/** Options of `socket.config` (LS:316); every field maps to one positional argument. */
export interface ConfigOptions {
  /** Local port (< 60000). @default firmware picks one */
  localPort?: number;
  /** UDP instead of TCP. @default false */
  udp?: boolean;
  /** TLS (DTLS for UDP). @default false */
  tls?: boolean;
  /** TCP keepalive idle time (seconds). @default off */
  keepIdle?: number;
  /** TCP keepalive probe interval (seconds). */
  keepInterval?: number;
  /** TCP keepalive probe count. */
  keepCount?: number;
  /** Server CA certificate (PEM) to verify the server; UDP: PSK. */
  serverCert?: string;
  /** Client certificate (PEM); UDP: PSK identity. */
  clientCert?: string;
  /** Client private key (PEM). */
  clientKey?: string;
  /** Client private key password. */
  clientPassword?: string;
}

/** `socket.ntptm()` table. */
export interface NtpTime {
  /** Seconds since 1900-01-01 UTC (wraps on 32-bit firmware, see docs/fidelity.md). */
  tsec: number;
  /** Milliseconds part. */
  tms: number;
  /** The firmware's spelling: true once NTP time is valid. */
  vaild: boolean;
  /**
   * Average network delay (ms). The firmware's key is `ndeley` (luat_lib_sntp.c l_sntp_tm at
   * bba8964; its doc comment says `ndelay`): either spelling is read into this field.
   */
  ndelay?: number;
  ssec?: number;
  sms?: number;
  lsec?: number;
  lms?: number;
}

/** A host-side stand-in for a `zbuff` passed to `socket.rx`: bytes are appended at `used`. */
export class ZBuff {
  private buf: Buffer;
  used = 0;
  constructor(size = 1024) {
    this.buf = Buffer.alloc(size);
  }
  /** Append bytes at `used`, growing like the firmware's zbuff. */
  append(data: Uint8Array): void {
    if (this.used + data.length > this.buf.length) {
      const n = Buffer.alloc(Math.max(this.buf.length * 2, this.used + data.length));
      this.buf.copy(n, 0, 0, this.used);
      this.buf = n;
    }
    this.buf.set(data, this.used);
    this.used += data.length;
  }
  /** The used bytes. */
  toBuffer(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.used));
  }
  /** Forget the content (`used` = 0). */
  clear(): void {
    this.used = 0;
  }
}

const isInt = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n);
const str = (v: WireValue | undefined): string | null => (v === null || v === undefined ? null : (toText(v) ?? null));
const bytes = (v: WireValue | undefined): Uint8Array | null => (v instanceof Uint8Array ? v : typeof v === 'string' ? Buffer.from(v) : null);
const num = (v: WireValue | undefined): number | null => (v === null || v === undefined ? null : (toNumber(v) ?? null));

/** Options for a call through the facade. */
export type FacadeCallOptions = CallOptions;

/**
 * A host as the firmware takes it (LS:486 `socket.connect`): a name or dotted IP of 1..255
 * characters, or an IPv4 address as a big-endian integer 0..0xFFFFFFFF (the firmware stores it
 * in a uint32: -1 would become 255.255.255.255).
 * @throws InvalidArgumentError
 */
export function checkIPv4Host(host: unknown, what: string): void {
  if (typeof host === 'string') {
    if (host.length === 0 || host.length > 255) throw new InvalidArgumentError(`${what}: host must be 1..255 characters, got ${show(host)}`);
    return;
  }
  if (!isInt(host) || host < 0 || host > 0xffffffff) throw new InvalidArgumentError(`${what}: host must be a name, an IP string or an IPv4 integer 0..4294967295, got ${show(host)}`);
}

/**
 * The arguments of `openSocket` (src/streams/drivers/luatos-conn.ts), checked without sending
 * anything: host as {@link checkIPv4Host} (a string there), port 1..65535, options object,
 * `udp`/`tls` booleans, `timeoutMs` > 0, `adapter` 0..18, `localPort` 1..65535, `ca` a string.
 * @throws InvalidArgumentError
 */
export function checkOpenSocketArgs(host: unknown, port: unknown, o: unknown): void {
  if (typeof host !== 'string') throw new InvalidArgumentError(`openSocket: host must be a name or an IP string, got ${show(host)}`);
  checkIPv4Host(host, 'openSocket');
  if (!isInt(port) || port < 1 || port > 65535) throw new InvalidArgumentError(`openSocket: port must be an integer 1..65535, got ${show(port)}`);
  checkOptionsObject(o, 'openSocket');
  const x = (o ?? {}) as Record<string, unknown>;
  checkBoolean(x.udp, 'openSocket: udp');
  checkBoolean(x.tls, 'openSocket: tls');
  checkCallOptions({ timeoutMs: x.timeoutMs }, 'openSocket');
  if (x.adapter !== undefined && (!isInt(x.adapter) || x.adapter < 0 || x.adapter > MAX_ADAPTER)) throw new InvalidArgumentError(`openSocket: adapter must be an integer 0..${MAX_ADAPTER}, got ${show(x.adapter)}`);
  if (x.localPort !== undefined && (!isInt(x.localPort) || x.localPort < 1 || x.localPort > 65535)) throw new InvalidArgumentError(`openSocket: localPort must be an integer 1..65535, got ${show(x.localPort)}`);
  if (x.ca !== undefined && typeof x.ca !== 'string') throw new InvalidArgumentError(`openSocket: ca must be a PEM string, got ${show(x.ca)}`);
}

/**
 * The `socket` library of one LuatOS module. Get it from `TetherModule.socket`
 * or `new LuatosSocket(rpc)`.
 *
 * Every method checks its arguments when it is called and throws {@link InvalidArgumentError}
 * (code `INVALID_ARGUMENT`) before anything is sent: a ctrl of another module, an adapter outside
 * 0..18, a port outside 1..65535 (the firmware keeps a uint16, LS:486), an IPv4 integer outside
 * 0..0xFFFFFFFF, a non-boolean `udp`/`tls` (LS:316 reads them with lua_isboolean), a `buff` that is
 * not a {@link ZBuff}, options that are not an object, and call options whose `timeoutMs` is not a
 * positive number of milliseconds or whose `signal` is not an AbortSignal.
 */
export class LuatosSocket {
  /** Every socket event of this module (hot: events arriving while subscribed; nothing is replayed). */
  readonly allEvents: Observable<SocketEventInfo>;
  /** Topics the agent forwards: `NTP_UPDATE`, `NTP_ERROR`, `IP_READY`, `IP_LOSE` (hot). */
  readonly topics: Observable<{ topic: string; values: WireValue[] }>;

  constructor(readonly rpc: RpcClient) {
    this.allEvents = rpc.events.pipe(
      filter((e) => e.epoch === rpc.currentEpoch),
      map((e) => {
        const event = num(e.values[0]) ?? 0;
        return { ctrl: new SocketCtrl(e.handle, e.epoch, this), event, name: eventName(event) ?? 'UNKNOWN', param: num(e.values[1]) ?? 0 } as SocketEventInfo;
      }),
      share(),
    );
    this.topics = rpc.publishes;
  }

  /**
   * Events of one socket (hot). Errors with `RESET` ({@link ResetError}) when the module resets
   * (the socket is gone with its boot), at once for a socket of a previous boot.
   */
  events(ctrl: SocketCtrl): Observable<SocketEventInfo> {
    this.check(ctrl);
    return this.allEvents.pipe(
      filter((e) => e.ctrl.id === ctrl.id),
      endOnReset(this.rpc, () => `events of ${ctrl}`, ctrl.epoch),
    );
  }

  /** True when the firmware returns the first boolean inverted (pre-2023-01-31 builds). */
  get invertedBool(): boolean {
    return this.rpc.hello.boolinv === true;
  }

  private ok<T extends unknown[]>(values: T): Result<T> {
    const first = values[0];
    const ok = typeof first === 'boolean' ? (this.invertedBool ? !first : first) : false;
    return Object.assign(values, { ok });
  }

  private check(ctrl: SocketCtrl): Handle {
    if (!(ctrl instanceof SocketCtrl) || ctrl.owner !== this) {
      throw new InvalidArgumentError('expected a socket ctrl returned by socket.create/accept of this module', { got: String(ctrl) });
    }
    return new Handle(ctrl.id);
  }

  private checkAdapter(ad: number | null | undefined, name: string): void {
    if (ad === null || ad === undefined) return;
    if (!isInt(ad) || ad < 0 || ad > MAX_ADAPTER) throw new InvalidArgumentError(`${name}: adapter must be an integer 0..${MAX_ADAPTER} (socket.LWIP_GP = 1), got ${show(ad)}`);
  }

  private checkPort(p: unknown, name: string, min = 0): void {
    if (!isInt(p) || p < min || p > 65535) throw new InvalidArgumentError(`${name}: port must be an integer ${min}..65535, got ${show(p)}`);
  }

  /** One remote call; `ctrl` (if any) is checked against the current boot. */
  private call<T>(fn: string, args: WireValue[], convert: (v: WireValue[]) => T, opts?: FacadeCallOptions, ctrl?: SocketCtrl): Observable<T> {
    checkCallOptions(opts, `socket.${fn}`);
    return new Observable<T>((sub) => {
      if (ctrl && ctrl.epoch !== this.rpc.currentEpoch) {
        sub.error(new ResetError(`${fn}: ${ctrl} belongs to a previous boot of the module (it reset); create a new socket`, { fn }));
        return;
      }
      return this.rpc.call$(`socket.${fn}`, args, opts).pipe(map(convert)).subscribe(sub);
    });
  }

  private ctrlOf(v: WireValue | undefined): SocketCtrl | null {
    return v instanceof Handle ? new SocketCtrl(v.id, this.rpc.currentEpoch, this) : null;
  }

  /** `socket.create(adapter?, cb)` (LS:229): a new socket, or null (bad adapter, out of sockets). The agent owns the callback and forwards its events. */
  create(adapter?: number | null, opts?: FacadeCallOptions): Observable<SocketCtrl | null> {
    this.checkAdapter(adapter, 'socket.create');
    return this.call('create', [adapter ?? null], (v) => this.ctrlOf(v[0]), opts);
  }

  /** `socket.debug(ctrl, on)`: returns nothing. */
  debug(ctrl: SocketCtrl, on: boolean, opts?: FacadeCallOptions): Observable<[]> {
    const h = this.check(ctrl);
    if (typeof on !== 'boolean') throw new InvalidArgumentError(`socket.debug: on must be a boolean, got ${show(on)}`);
    return this.call('debug', [h, on], (v) => v as [], opts, ctrl);
  }

  /** `socket.config(ctrl, ...)` (LS:316): `[true]`, or `[false]` when TLS is missing or a certificate fails to load. */
  config(ctrl: SocketCtrl, o: ConfigOptions = {}, opts?: FacadeCallOptions): Observable<[boolean]> {
    const h = this.check(ctrl);
    checkOptionsObject(o, 'socket.config');
    o ??= {};
    if (o.localPort !== undefined) this.checkPort(o.localPort, 'socket.config localPort', 1);
    // LS:316: is_udp / is_tls are read with lua_isboolean; anything else (1, "yes") is silently taken as false
    checkBoolean(o.udp, 'socket.config: udp');
    checkBoolean(o.tls, 'socket.config: tls');
    for (const k of ['keepIdle', 'keepInterval', 'keepCount'] as const) {
      if (o[k] !== undefined && (!isInt(o[k]) || o[k]! < 0)) throw new InvalidArgumentError(`socket.config: ${k} must be a non-negative integer (seconds / count)`);
    }
    for (const k of ['serverCert', 'clientCert', 'clientKey', 'clientPassword'] as const) {
      if (o[k] !== undefined && typeof o[k] !== 'string') throw new InvalidArgumentError(`socket.config: ${k} must be a PEM string`);
    }
    const args: WireValue[] = [h, o.localPort ?? null, o.udp ?? false, o.tls ?? false, o.keepIdle ?? null, o.keepInterval ?? null, o.keepCount ?? null, o.serverCert ?? null, o.clientCert ?? null, o.clientKey ?? null, o.clientPassword ?? null];
    while (args.length > 4 && args[args.length - 1] === null) args.pop();
    return this.call('config', args, (v) => v as [boolean], opts, ctrl);
  }

  /** `socket.linkup(ctrl)` (LS:451): `(true,true)` ready now; `(true,false)` LINK follows. */
  linkup(ctrl: SocketCtrl, opts?: FacadeCallOptions): Observable<Result<[boolean, boolean]>> {
    return this.call('linkup', [this.check(ctrl)], (v) => this.ok(v as [boolean, boolean]), opts, ctrl);
  }

  /**
   * `socket.connect(ctrl, host, port, ipv6dns?)` (LS:486): `(true,false)` started, ON_LINE follows
   * (never `(true,true)`); `(false,false)` when the socket is still open or fails at once.
   * `host`: name, dotted IPv4, or an IPv4 as the module's raw address word (little-endian on the
   * Air780E: 0x0100007F is 127.0.0.1); the agent passes an integer host to the firmware as dotted
   * text (the firmware logs the host with `%s`, luat_lib_socket.c:507).
   */
  connect(ctrl: SocketCtrl, host: string | number, port: number, o: { ipv6Dns?: boolean } = {}, opts?: FacadeCallOptions): Observable<Result<[boolean, boolean]>> {
    const h = this.check(ctrl);
    checkIPv4Host(host, 'socket.connect');
    // LS:486: the port is read into a uint16_t (70000 would silently become 4464); port 0 is no server
    this.checkPort(port, 'socket.connect', 1);
    checkOptionsObject(o, 'socket.connect');
    o ??= {};
    checkBoolean(o.ipv6Dns, 'socket.connect: ipv6Dns');
    const args: WireValue[] = [h, host, port];
    if (o.ipv6Dns !== undefined) args.push(o.ipv6Dns);
    return this.call('connect', args, (v) => this.ok(v as [boolean, boolean]), opts, ctrl);
  }

  /** `socket.discon(ctrl)` (LS:560): `(true,false)` graceful close started, CLOSED follows; `(true,true)` closed at once. */
  discon(ctrl: SocketCtrl, opts?: FacadeCallOptions): Observable<Result<[boolean, boolean]>> {
    return this.call('discon', [this.check(ctrl)], (v) => this.ok(v as [boolean, boolean]), opts, ctrl);
  }

  /** `socket.close(ctrl)`: force close, no event; returns nothing. */
  close(ctrl: SocketCtrl, opts?: FacadeCallOptions): Observable<[]> {
    return this.call('close', [this.check(ctrl)], (v) => v as [], opts, ctrl);
  }

  /**
   * `socket.tx(ctrl, data, ip?, port?, flag?)` (LS:599): `(true,false,false)` queued, TX_OK follows;
   * `(true,true,true)` buffer full, nothing accepted; failure `(false, ?, false)` (the middle value is
   * uninitialised in the firmware). UDP: keep a datagram ≤ 1460 bytes.
   *
   * `resume` (agent extension, an extra 6th argument the agent never passes to the firmware) is
   * for pipelined sends: once a tx on a socket was refused as full, the agent HOLDS the socket.
   * - `false`: a pipelined tx: refused as full `(true,true,true)` without reaching the firmware while
   *   the hold is set, so a chunk queued behind a refused one can never overtake it;
   * - `true`: clears the hold, then calls the firmware (resend the first refused chunk with it);
   * - omitted (default): nothing extra on the wire; clears the hold and calls the firmware, as before.
   * An agent without the extension ignores the argument (no hold): see `LuatosConnection.send` (src/streams/drivers/luatos-conn.ts).
   */
  tx(ctrl: SocketCtrl, data: Uint8Array | string, o: { ip?: string | number; port?: number; flag?: number; resume?: boolean } = {}, opts?: FacadeCallOptions): Observable<Result<[boolean, unknown, boolean]>> {
    const h = this.check(ctrl);
    if (typeof data !== 'string' && !(data instanceof Uint8Array)) throw new InvalidArgumentError(`socket.tx: data must be a string or bytes, got ${show(data)}`);
    checkOptionsObject(o, 'socket.tx');
    o ??= {};
    if (o.ip !== undefined) checkIPv4Host(o.ip, 'socket.tx ip');
    if (o.port !== undefined) this.checkPort(o.port, 'socket.tx', 1);
    if (o.flag !== undefined && (!isInt(o.flag) || o.flag < 0)) throw new InvalidArgumentError(`socket.tx: flag must be a non-negative integer, got ${show(o.flag)}`);
    if (o.resume !== undefined && typeof o.resume !== 'boolean') throw new InvalidArgumentError('socket.tx: resume must be a boolean');
    const args: WireValue[] = [h, typeof data === 'string' ? Buffer.from(data) : data];
    if (o.resume !== undefined) args.push(o.ip ?? null, o.port ?? null, o.flag ?? null, o.resume);
    else {
      if (o.ip !== undefined || o.port !== undefined || o.flag !== undefined) args.push(o.ip ?? null, o.port ?? null);
      if (o.flag !== undefined) args.push(o.flag);
    }
    return this.call('tx', args, (v) => this.ok(v as [boolean, unknown, boolean]), opts, ctrl);
  }

  /**
   * `socket.rx(ctrl, zbuff?, flag?, limit?)` (LS:723).
   * Without `buff`: `(true, pending_len)` or `(false, 0)`.
   * With `buff`: bytes are appended to `buff` at `used`; returns `(true, n, nil, nil)` for TCP,
   * `(true, n, ip, port)` for UDP with `ip` as the firmware's 5-byte string (`\0` + 4 address bytes).
   * `limit` (bytes) is the firmware's 4th argument.
   */
  rx(ctrl: SocketCtrl, buff?: ZBuff, o: { flag?: number; limit?: number } = {}, opts?: FacadeCallOptions): Observable<Result<[boolean, number, Uint8Array | null, number | null]> | Result<[boolean, number]>> {
    const h = this.check(ctrl);
    // checked before the call: the reply's bytes are appended to buff, and once read on the module they are gone
    if (buff !== undefined && buff !== null && !(buff instanceof ZBuff)) throw new InvalidArgumentError(`socket.rx: buff must be a ZBuff (or omitted), got ${show(buff)}`);
    checkOptionsObject(o, 'socket.rx');
    o ??= {};
    if (o.limit !== undefined && (!isInt(o.limit) || o.limit < 1)) throw new InvalidArgumentError(`socket.rx: limit must be a positive integer (bytes), got ${show(o.limit)}`);
    if (o.flag !== undefined && (!isInt(o.flag) || o.flag < 0)) throw new InvalidArgumentError(`socket.rx: flag must be a non-negative integer, got ${show(o.flag)}`);
    if (!buff) return this.call('rx', [h], (v) => this.ok([v[0] as boolean, num(v[1]) ?? 0] as [boolean, number]), opts, ctrl);
    return this.call(
      'rx',
      [h, true, o.flag ?? null, o.limit ?? this.readLimit()],
      (v) => {
        const data = bytes(v[v.length - 1]);
        if (data) buff.append(data);
        const vals = v.slice(0, -1);
        return this.ok([vals[0] as boolean, num(vals[1]) ?? 0, vals.length > 2 ? bytes(vals[2]) : null, vals.length > 3 ? num(vals[3]) : null] as [boolean, number, Uint8Array | null, number | null]);
      },
      opts,
      ctrl,
    );
  }

  /** Largest read that fits one reply comfortably (bytes): v2 carries bytes raw (`b<n>:`), so the message limit less the reply's head. */
  readLimit(): number {
    const m = this.rpc.hello.maxmsg;
    return Math.max(128, Math.min(4096, m - 64));
  }

  /** `socket.read(ctrl, limit?)` (LS:867): `(false)`; `(true, "")`; TCP `(true, data)`; UDP `(true, data, ip, port)`. */
  read(ctrl: SocketCtrl, limit?: number, opts?: FacadeCallOptions): Observable<Result<[boolean, Uint8Array?, Uint8Array?, number?]>> {
    const h = this.check(ctrl);
    if (limit !== undefined && (!isInt(limit) || limit < 1)) throw new InvalidArgumentError('socket.read: limit must be a positive integer (bytes)');
    return this.call('read', limit === undefined ? [h] : [h, limit], (v) => this.ok(v.map((x, i) => (i === 0 ? x : i === 3 ? num(x) : bytes(x))) as [boolean, Uint8Array?, Uint8Array?, number?]), opts, ctrl);
  }

  /** `socket.wait(ctrl)` (LS:969): `(true,true)` data pending; `(true,false)` EVENT follows; `(false,false)` not online. */
  wait(ctrl: SocketCtrl, opts?: FacadeCallOptions): Observable<Result<[boolean, boolean]>> {
    return this.call('wait', [this.check(ctrl)], (v) => this.ok(v as [boolean, boolean]), opts, ctrl);
  }

  /** `socket.listen(ctrl, n?)` (LS:993): `(true,false)` then ON_LINE 0 when a client connects. */
  listen(ctrl: SocketCtrl, backlog?: number, opts?: FacadeCallOptions): Observable<Result<[boolean, boolean]>> {
    const h = this.check(ctrl);
    if (backlog !== undefined && (!isInt(backlog) || backlog < 0)) throw new InvalidArgumentError('socket.listen: backlog must be a non-negative integer');
    return this.call('listen', backlog === undefined ? [h] : [h, backlog], (v) => this.ok(v as [boolean, boolean]), opts, ctrl);
  }

  /** `socket.accept(ctrl, cb)` (LS:1036): multi-client `(true, new_ctrl, ip, port)` or `(false, nil)`. The new socket's events are forwarded. */
  accept(ctrl: SocketCtrl, opts?: FacadeCallOptions): Observable<Result<[boolean, SocketCtrl | null, string?, number?]>> {
    return this.call('accept', [this.check(ctrl)], (v) => this.ok(v.map((x, i) => (i === 1 ? this.ctrlOf(x) : i === 2 ? str(x) : i === 3 ? num(x) : x)) as [boolean, SocketCtrl | null, string?, number?]), opts, ctrl);
  }

  /** `socket.state(ctrl)`: `(state, description)`; description in Chinese as the firmware returns it. */
  state(ctrl: SocketCtrl, opts?: FacadeCallOptions): Observable<[number, string] | []> {
    return this.call('state', [this.check(ctrl)], (v) => (v.length ? ([num(v[0]) ?? -1, str(v[1]) ?? ''] as [number, string]) : []), opts, ctrl);
  }

  /** `socket.release(ctrl)`: returns nothing; afterwards the agent refuses the handle (`REMOTE` / BADHANDLE). */
  release(ctrl: SocketCtrl, opts?: FacadeCallOptions): Observable<[]> {
    return this.call('release', [this.check(ctrl)], (v) => v as [], opts, ctrl);
  }

  /** `socket.setDNS(adapter?, index, ip)`: `[true]` / `[false]`. `index` starts at 1. */
  setDNS(adapter: number | null, index: number, ip: string | number, opts?: FacadeCallOptions): Observable<[boolean]> {
    this.checkAdapter(adapter, 'socket.setDNS');
    if (!isInt(index) || index < 1) throw new InvalidArgumentError('socket.setDNS: index must be an integer >= 1');
    checkIPv4Host(ip, 'socket.setDNS ip');
    return this.call('setDNS', [adapter, index, ip], (v) => v as [boolean], opts);
  }

  /** `socket.sslLog(level)`: mbedtls log level; returns nothing. */
  sslLog(level: number, opts?: FacadeCallOptions): Observable<[]> {
    if (!isInt(level) || level < 0) throw new InvalidArgumentError('socket.sslLog: level must be a non-negative integer');
    return this.call('sslLog', [level], (v) => v as [], opts);
  }

  /** `socket.localIP(adapter?)`: `(ip, mask, gateway, ipv6|nil)`, or nothing when the adapter has no IP. */
  localIP(adapter?: number, opts?: FacadeCallOptions): Observable<[string, string, string, string | null] | []> {
    this.checkAdapter(adapter, 'socket.localIP');
    return this.call('localIP', adapter === undefined ? [] : [adapter], (v) => (v.length ? ([str(v[0]) ?? '', str(v[1]) ?? '', str(v[2]) ?? '', str(v[3])] as [string, string, string, string | null]) : []), opts);
  }

  /** `socket.adapter(index?)`: `(ready, index)`; without index scans 1..18, `(false, 18)` if none ready. */
  adapter(index?: number, opts?: FacadeCallOptions): Observable<[boolean, number]> {
    this.checkAdapter(index, 'socket.adapter');
    return this.call('adapter', index === undefined ? [] : [index], (v) => [v[0] === true, num(v[1]) ?? -1] as [boolean, number], opts);
  }

  /** `socket.remoteIP(ctrl)`: 4 values, IP strings or null; filled after DNS. */
  remoteIP(ctrl: SocketCtrl, opts?: FacadeCallOptions): Observable<[string | null, string | null, string | null, string | null] | []> {
    return this.call('remoteIP', [this.check(ctrl)], (v) => v.map(str) as [string | null, string | null, string | null, string | null], opts, ctrl);
  }

  /** `socket.sntp(server|servers?, adapter?)`: returns nothing; NTP_UPDATE or NTP_ERROR arrives on {@link topics}. */
  sntp(servers?: string | string[], adapter?: number, opts?: FacadeCallOptions): Observable<[]> {
    if (servers !== undefined && typeof servers !== 'string' && !(Array.isArray(servers) && servers.every((s) => typeof s === 'string'))) {
      throw new InvalidArgumentError('socket.sntp: servers must be a string or an array of strings');
    }
    this.checkAdapter(adapter, 'socket.sntp');
    const args: WireValue[] = servers === undefined ? [] : [servers];
    if (adapter !== undefined) {
      if (args.length === 0) args.push(null);
      args.push(adapter);
    }
    return this.call('sntp', args, (v) => v as [], opts);
  }

  /** `socket.ntptm()`: the NTP time table. */
  ntptm(opts?: FacadeCallOptions): Observable<[NtpTime]> {
    return this.call(
      'ntptm',
      [],
      (v) => {
        const t = v[0];
        const n = (k: string) => num(field(t, k)) ?? undefined;
        return [{ tsec: n('tsec') ?? 0, tms: n('tms') ?? 0, vaild: field(t, 'vaild') === true, ndelay: n('ndeley') ?? n('ndelay'), ssec: n('ssec'), sms: n('sms'), lsec: n('lsec'), lms: n('lms') }] as [NtpTime];
      },
      opts,
    );
  }

  /**
   * `socket.dft(id?)`: the default network adapter, set to `id` when given (docs/firmware/luatos.md,
   * return values): `(default, last_registered)` adapter numbers.
   */
  dft(id?: number, opts?: FacadeCallOptions): Observable<[number, number]> {
    this.checkAdapter(id, 'socket.dft');
    return this.call('dft', id === undefined ? [] : [id], (v) => [num(v[0]) ?? -1, num(v[1]) ?? -1] as [number, number], opts);
  }

  /**
   * `socket.close_all(adapter)`: closes every socket of the adapter on the firmware's side; a
   * boolean. Handles the agent gave out stay allocated until released (see `tether reset-sockets`).
   */
  close_all(adapter: number, opts?: FacadeCallOptions): Observable<[boolean]> {
    if (adapter === undefined) throw new InvalidArgumentError('socket.close_all: the adapter number is required (e.g. socket.LWIP_GP = 1)');
    this.checkAdapter(adapter, 'socket.close_all');
    return this.call('close_all', [adapter], (v) => [v[0] === true] as [boolean], opts);
  }

  /**
   * `socket.rx_cache(n?)`: the lwIP receive cache as a number of blocks (32 by default, 6 on
   * EC718/716), not bytes (docs/firmware/luatos.md).
   */
  rx_cache(n?: number, opts?: FacadeCallOptions): Observable<[number]> {
    if (n !== undefined && (!Number.isInteger(n) || n < 0 || n > 0x7fffffff)) throw new InvalidArgumentError(`socket.rx_cache: n must be a non-negative integer, got ${show(n)}`);
    return this.call('rx_cache', n === undefined ? [] : [n], (v) => [num(v[0]) ?? 0] as [number], opts);
  }

  /** `socket.sntp_port(port?)`: the current SNTP port (default 123). */
  sntp_port(port?: number, opts?: FacadeCallOptions): Observable<[number]> {
    if (port !== undefined) this.checkPort(port, 'socket.sntp_port', 1);
    return this.call('sntp_port', port === undefined ? [] : [port], (v) => [num(v[0]) ?? 0] as [number], opts);
  }
}

/** @internal used by helpers */
export function notOk(what: string, values: unknown[]): TetherError {
  return new TetherError('SOCKET', `${what} failed: firmware returned (${values.map((v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : String(v))).join(', ')})`, { context: { values: values.map(String) } });
}

/**
 * The Luat core's `socketcore` library (docs/firmware/luat-socketcore.md),
 * proxied call by call to the module. Every method returns a COLD observable that
 * makes exactly one remote call per subscription and emits the core's return values
 * as a tuple, unchanged: `sock_send` gives `[ok, err]` as two NUMBERS (compare
 * `ok === 1`: in Lua `0` is truthy), `sock_conn` gives `[index]` or `[null]`,
 * `sock_conn_ext` `[index | -1 | -2]`. Unsubscribing before the reply abandons the call.
 *
 * The core's results arrive as rtos messages; the agent forwards them
 * (docs/luat.md) and {@link LuatSocketcore.messages} streams them. The rules the core
 * imposes (docs/firmware/luat-socketcore.md, consequences for tether) are followed by the
 * helpers in src/streams/drivers/luat-conn.ts, not here: this layer is the raw API.
 */
import { Observable, filter, map, share } from 'rxjs';
import type { AgentPublish, CallOptions, RpcClient } from '../../rpc/client.js';
import { field, toNumber, toText, type WireValue } from '../../codec/values.js';
import { InvalidArgumentError, ResetError, TetherError } from '../../errors.js';
import { MAX_ADDR_LEN, MAX_RECV_IND, MAX_SEND_BYTES, MAX_SOCKETS, SocketType, READINESS_TOPICS, SOCKET_MESSAGES, type ReadinessTopic, type SocketMessageName } from './constants.js';
import { endOnReset } from '../reset.js';
import { checkCallOptions, checkOptionsObject, checkTimeoutMs, show } from '../args.js';

/** One socket message (`rtos.MSG_SOCK_*`) as the core posted it. */
export interface SocketMessage {
  name: SocketMessageName;
  /** `msg.id`: the numeric `rtos.MSG_SOCK_*` value of this core build. */
  id: number | null;
  /** `msg.socket_index` (0..9). */
  socket_index: number;
  /** `msg.result`: 0 = ok, 1 = failure. CLOSE_CNF: uninitialised on the module, ignore it. */
  result: number | null;
  /** SEND_CNF: bytes of the confirmed send. */
  send_len?: number | null;
  /** RECV_IND: bytes to read now with `sock_recv(socket_index, recv_len)` (1..2048). */
  recv_len?: number | null;
  /** Boot epoch of the module the message belongs to. */
  epoch: number;
}

/** The SSL certificate table: PEM TEXT (not file paths). */
export interface CertTable {
  /** Server name (the lib sets it to the address). */
  hostName?: string;
  /** CA certificate(s) to verify the server. Without it the server is not verified. */
  caCert?: string;
  /** Client certificate. */
  clientCert?: string;
  /** Client private key (unencrypted: the core takes no password). */
  clientKey?: string;
}

/** Optional `sock_conn` arguments 4..8 (later cores; the 2021 core reads only `cert`, for SSL). */
export interface ConnArgs {
  /** SSL only. */
  cert?: CertTable;
  /** Receive buffer, bytes (TCP and UDP only). */
  recvBufferLen?: number;
  /** Keep connecting when the server certificate check fails (1, the core's default) or not (0). */
  insist?: 0 | 1;
  /** Local port (not SSL). */
  localPort?: number;
  /** Report the server name (1) or not (0, default). */
  hostNameFlag?: 0 | 1;
}

/** A forwarded readiness topic (`IP_READY_IND`, `IP_ERROR_IND`, `NET_STATE_REGISTERED`, `NET_STATE_UNREGISTER`). */
export interface ReadinessEvent {
  topic: ReadinessTopic;
  values: WireValue[];
}

export type FacadeCallOptions = CallOptions;

/**
 * The arguments of `openConnection(sc, host, port, o)` (src/streams/drivers/luat-conn.ts), checked
 * without sending anything: host 1..100 characters (the core's `sock_conn` limit, MAX_ADDR_LEN),
 * port 1..65535, `o` an object with `type` tcp/udp/ssl, `timeoutMs` > 0 ms, booleans where booleans
 * are expected, `localPort` 0..65535, `recvBufferLen` >= 0 bytes.
 * @throws InvalidArgumentError
 */
export function checkOpenConnectionArgs(host: unknown, port: unknown, o: unknown): void {
  if (typeof host !== 'string' || host.length === 0 || host.length > MAX_ADDR_LEN) throw new InvalidArgumentError(`openConnection: host must be a name or IP of 1..${MAX_ADDR_LEN} characters, got ${show(host)}`);
  if (!isInt(port) || port < 1 || port > 65535) throw new InvalidArgumentError(`openConnection: port must be an integer 1..65535, got ${show(port)}`);
  checkOptionsObject(o, 'openConnection');
  const x = (o ?? {}) as Record<string, unknown>;
  if (x.type !== undefined && x.type !== 'tcp' && x.type !== 'udp' && x.type !== 'ssl') throw new InvalidArgumentError(`openConnection: type must be tcp, udp or ssl, got ${show(x.type)}`);
  checkTimeoutMs(x.timeoutMs, 'openConnection');
  for (const k of ['strictCert', 'waitReady', 'plainConn']) {
    if (x[k] !== undefined && typeof x[k] !== 'boolean') throw new InvalidArgumentError(`openConnection: ${k} must be true or false, got ${show(x[k])}`);
  }
  if (x.localPort !== undefined && (!isInt(x.localPort) || x.localPort < 0 || x.localPort > 65535)) throw new InvalidArgumentError(`openConnection: localPort must be an integer 0..65535, got ${show(x.localPort)}`);
  if (x.recvBufferLen !== undefined && (!isInt(x.recvBufferLen) || x.recvBufferLen < 0)) throw new InvalidArgumentError(`openConnection: recvBufferLen must be a non-negative integer (bytes), got ${show(x.recvBufferLen)}`);
}

const isInt = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n);
const num = (v: WireValue | undefined): number | null => (v === null || v === undefined ? null : (toNumber(v) ?? null));
const text = (v: WireValue | undefined): string | null => (v === null || v === undefined ? null : (toText(v) ?? null));

/**
 * `socketcore` of one Luat module. Get it from `TetherModule.socketcore` or `new LuatSocketcore(rpc)`.
 * Socket indexes are the core's plain integers 0..9, valid for one boot of the module.
 */
export class LuatSocketcore {
  /** Every socket message of the current boot (hot; nothing is replayed). */
  readonly messages: Observable<SocketMessage>;
  /** Readiness topics (hot). */
  readonly readiness: Observable<ReadinessEvent>;
  /** Every forwarded topic, raw (hot). */
  readonly topics: Observable<AgentPublish>;

  constructor(readonly rpc: RpcClient) {
    this.messages = rpc.events.pipe(
      filter((e) => e.epoch === rpc.currentEpoch),
      map((e): SocketMessage | undefined => {
        const name = text(e.values[0]) as SocketMessageName | null;
        if (!name || !(SOCKET_MESSAGES as readonly string[]).includes(name)) return undefined;
        const m: SocketMessage = { name, id: num(e.values[1]), socket_index: e.handle, result: num(e.values[2]), epoch: e.epoch };
        if (name === 'SEND_CNF') m.send_len = num(e.values[3]);
        if (name === 'RECV_IND') m.recv_len = num(e.values[3]);
        return m;
      }),
      filter((m): m is SocketMessage => m !== undefined),
      share(),
    );
    this.topics = rpc.publishes;
    this.readiness = rpc.publishes.pipe(
      filter((p) => (READINESS_TOPICS as readonly string[]).includes(p.topic)),
      map((p) => ({ topic: p.topic as ReadinessTopic, values: p.values })),
    );
  }

  /** Messages of one kind (hot). */
  messagesNamed(name: SocketMessageName): Observable<SocketMessage> {
    return this.messages.pipe(filter((m) => m.name === name));
  }

  /**
   * Messages of one socket index (hot). An index is valid for one boot: the stream errors with
   * `RESET` ({@link ResetError}) when the module resets, at once when `epoch` is not the current boot.
   * @param epoch boot the index belongs to. @default the current boot
   */
  messagesOf(index: number, epoch: number = this.rpc.currentEpoch): Observable<SocketMessage> {
    return this.messages.pipe(
      filter((m) => m.socket_index === index),
      endOnReset(this.rpc, `messages of socket ${index}`, epoch),
    );
  }

  /** MSG_SOCK_CONN_CNF (hot). */
  get connCnf(): Observable<SocketMessage> {
    return this.messagesNamed('CONN_CNF');
  }
  /** MSG_SOCK_SEND_CNF (hot). */
  get sendCnf(): Observable<SocketMessage> {
    return this.messagesNamed('SEND_CNF');
  }
  /** MSG_SOCK_RECV_IND (hot). Every one must be answered with `sock_recv(index, recv_len)`. */
  get recvInd(): Observable<SocketMessage> {
    return this.messagesNamed('RECV_IND');
  }
  /** MSG_SOCK_CLOSE_CNF (hot). */
  get closeCnf(): Observable<SocketMessage> {
    return this.messagesNamed('CLOSE_CNF');
  }
  /** MSG_SOCK_CLOSE_IND (hot). */
  get closeInd(): Observable<SocketMessage> {
    return this.messagesNamed('CLOSE_IND');
  }

  /** The `rtos.MSG_*` values of this core build, from hello. */
  get msgIds(): Record<string, number> {
    const m = field(this.rpc.hello.raw, 'msg');
    const out: Record<string, number> = {};
    if (m instanceof Map) for (const [k, v] of m) if (typeof k === 'string' && typeof v === 'number') out[k] = v;
    return out;
  }

  /** True on a double-number (`_FLOAT`) core, false on an integer-only core (from hello). */
  get floatCore(): boolean {
    return field(this.rpc.hello.raw, 'float') === true;
  }

  /** Whether this core has `sock_getremainbuf` (later cores only). */
  get hasRemainBuf(): boolean {
    return this.rpc.hello.caps.includes('socketcore.sock_getremainbuf');
  }

  /** Whether this core has `sock_setopt` (8910 core V0022 and later). */
  get hasSetopt(): boolean {
    return this.rpc.hello.caps.includes('socketcore.sock_setopt');
  }

  private call<T>(fn: string, args: WireValue[], convert: (v: WireValue[]) => T, opts?: FacadeCallOptions): Observable<T> {
    checkCallOptions(opts, fn);
    const epoch = this.rpc.currentEpoch;
    return new Observable<T>((sub) => {
      if (this.rpc.currentEpoch !== epoch) {
        sub.error(new ResetError(`${fn}: the module reset since this call was prepared; socket indexes of the old boot are gone`, { fn }));
        return;
      }
      return this.rpc.call$(fn, args, opts).pipe(map(convert)).subscribe(sub);
    });
  }

  private checkIndex(idx: unknown, fn: string): number {
    // LUA_MAX_SOCKET_SUPPORT slots: indexes 0..9 (constants.ts MAX_SOCKETS)
    if (!isInt(idx) || idx < 0 || idx >= MAX_SOCKETS) throw new InvalidArgumentError(`${fn}: the socket index must be an integer 0..${MAX_SOCKETS - 1} (from sock_conn), got ${show(idx)}`);
    return idx;
  }

  private connArgs(fn: string, type: number, addr: string, port: number, o: ConnArgs): WireValue[] {
    // openSocketType (am_openat_socket.h): 0 TCP, 1 UDP, 2 SSL; 3 is SMS and 4 RAW, not sockets the lib opens
    if (type !== SocketType.TCP && type !== SocketType.UDP && type !== SocketType.SSL) throw new InvalidArgumentError(`${fn}: type must be 0 (TCP), 1 (UDP) or 2 (SSL), got ${show(type)}`);
    if (typeof addr !== 'string' || addr.length === 0) throw new InvalidArgumentError(`${fn}: addr must be a non-empty host name or IP, got ${show(addr)}`);
    if (addr.length > MAX_ADDR_LEN) throw new InvalidArgumentError(`${fn}: addr is ${addr.length} characters, the core takes at most ${MAX_ADDR_LEN}`);
    if (!isInt(port) || port < 1 || port > 65535) throw new InvalidArgumentError(`${fn}: port must be an integer 1..65535, got ${show(port)}`);
    checkOptionsObject(o, fn);
    o ??= {};
    if (o.cert !== undefined && (o.cert === null || typeof o.cert !== 'object')) throw new InvalidArgumentError(`${fn}: cert must be an object { hostName?, caCert?, clientCert?, clientKey? }, got ${show(o.cert)}`);
    let cert: WireValue = null;
    if (o.cert !== undefined) {
      const m = new Map<WireValue, WireValue>();
      for (const k of ['hostName', 'caCert', 'clientCert', 'clientKey'] as const) {
        const v = o.cert[k];
        if (v === undefined) continue;
        if (typeof v !== 'string') throw new InvalidArgumentError(`${fn}: cert.${k} must be PEM text (a string), not a path or buffer`);
        m.set(k, v);
      }
      cert = m;
    }
    if (o.recvBufferLen !== undefined && (!isInt(o.recvBufferLen) || o.recvBufferLen < 0)) throw new InvalidArgumentError(`${fn}: recvBufferLen must be a non-negative integer (bytes), got ${show(o.recvBufferLen)}`);
    if (o.localPort !== undefined && (!isInt(o.localPort) || o.localPort < 0 || o.localPort > 65535)) throw new InvalidArgumentError(`${fn}: localPort must be an integer 0..65535, got ${show(o.localPort)}`);
    for (const k of ['insist', 'hostNameFlag'] as const) {
      if (o[k] !== undefined && o[k] !== 0 && o[k] !== 1) throw new InvalidArgumentError(`${fn}: ${k} must be 0 or 1`);
    }
    const args: WireValue[] = [type, addr, port, cert, o.recvBufferLen ?? null, o.insist ?? null, o.localPort ?? null, o.hostNameFlag ?? null];
    while (args.length > 3 && args[args.length - 1] === null) args.pop();
    return args;
  }

  /**
   * `sock_conn(type, addr, port[, cert][, recvBufferLen][, insist][, local_port][, hostNameFlag])`:
   * `[index]` (0..9) at once, or `[null]`; the outcome comes as CONN_CNF (result 0 ok, 1 failed).
   * UDP gets its success CONN_CNF at once.
   */
  sock_conn(type: number, addr: string, port: number, o: ConnArgs = {}, opts?: FacadeCallOptions): Observable<[number | null]> {
    const args = this.connArgs('sock_conn', type, addr, port, o);
    return this.call('socketcore.sock_conn', args, (v) => [num(v[0])] as [number | null], opts);
  }

  /**
   * `sock_conn_ext(...)` (same arguments): `[index]`, `[-1]` (no free slot, address over 100
   * characters, creation failed) or `[-2]` (synchronous DNS failure).
   */
  sock_conn_ext(type: number, addr: string, port: number, o: ConnArgs = {}, opts?: FacadeCallOptions): Observable<[number]> {
    const args = this.connArgs('sock_conn_ext', type, addr, port, o);
    return this.call('socketcore.sock_conn_ext', args, (v) => [num(v[0]) ?? -1] as [number], opts);
  }

  /**
   * `sock_send(index, data)`: `[ok, err]`, two numbers. `ok === 1`: accepted, SEND_CNF follows
   * (TCP/SSL: when every byte of THIS send is acknowledged; keep one send in flight per socket).
   * `ok === 0`: refused with `err` (ERR_*); if the socket is not connected there is NO SEND_CNF.
   * @throws InvalidArgumentError for data over 65535 bytes (the core would cut the length to 16 bits).
   */
  sock_send(index: number, data: Uint8Array | string, opts?: FacadeCallOptions): Observable<[number, number]> {
    const idx = this.checkIndex(index, 'sock_send');
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError(`sock_send: data must be a string or bytes, got ${show(data)}`);
    if (bytes.length > MAX_SEND_BYTES) throw new InvalidArgumentError(`sock_send: ${bytes.length} bytes; the core takes the length as a uint16 (at most ${MAX_SEND_BYTES}): send in chunks`);
    return this.call('socketcore.sock_send', [idx, bytes], (v) => [num(v[0]) ?? 0, num(v[1]) ?? -1] as [number, number], opts);
  }

  /**
   * `sock_getremainbuf(index)`: `[free bytes of the send buffer]`.
   * @throws TetherError `UNSUPPORTED` (on subscribe) on cores without it.
   */
  sock_getremainbuf(index: number, opts?: FacadeCallOptions): Observable<[number]> {
    const idx = this.checkIndex(index, 'sock_getremainbuf');
    if (!this.hasRemainBuf) {
      return new Observable((sub) => sub.error(new TetherError('UNSUPPORTED', 'sock_getremainbuf: this core has no socketcore.sock_getremainbuf (older cores lack it)')));
    }
    return this.call('socketcore.sock_getremainbuf', [idx], (v) => [num(v[0]) ?? 0] as [number], opts);
  }

  /** `sock_close(index)`: `[1]`; closes now and CLOSE_CNF follows. The slot stays taken until `sock_destroy`. */
  sock_close(index: number, opts?: FacadeCallOptions): Observable<[number]> {
    const idx = this.checkIndex(index, 'sock_close');
    return this.call('socketcore.sock_close', [idx], (v) => [num(v[0]) ?? 0] as [number], opts);
  }

  /**
   * `sock_recv(index, len)`: `[bytes]` (may be empty): at most min(len, the pending RECV_IND's recv_len).
   * @throws InvalidArgumentError for an index outside 0..9 or len outside 1..2048 (bytes).
   */
  sock_recv(index: number, len: number, opts?: FacadeCallOptions): Observable<[Uint8Array]> {
    const idx = this.checkIndex(index, 'sock_recv');
    // a read never returns more than the pending RECV_IND announced, at most LUA_MAX_RECV_IND_LEN = 2048
    // (constants.ts MAX_RECV_IND); the core sizes its buffer from len, so a larger len is refused here
    if (!isInt(len) || len < 1 || len > MAX_RECV_IND) throw new InvalidArgumentError(`sock_recv: len must be an integer 1..${MAX_RECV_IND} (bytes; one RECV_IND announces at most ${MAX_RECV_IND}), got ${show(len)}`);
    return this.call('socketcore.sock_recv', [idx, len], (v) => [v[0] instanceof Uint8Array ? v[0] : new Uint8Array(0)] as [Uint8Array], opts);
  }

  /** `sock_destroy(index)`: `[1]` when the slot was closed (it is free now), `[0]` otherwise. */
  sock_destroy(index: number, opts?: FacadeCallOptions): Observable<[number]> {
    const idx = this.checkIndex(index, 'sock_destroy');
    return this.call('socketcore.sock_destroy', [idx], (v) => [num(v[0]) ?? 0] as [number], opts);
  }

  /**
   * `sock_setopt(index, level, optname, value)`: `[0]` ok, `[-1]` refused. Only
   * SOL_SOCKET/{SO_KEEPALIVE, SO_REUSEADDR} and IPPROTO_TCP/{TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT}.
   */
  sock_setopt(index: number, level: number, optname: number, value: number, opts?: FacadeCallOptions): Observable<[number]> {
    const idx = this.checkIndex(index, 'sock_setopt');
    for (const [k, v] of [['level', level], ['optname', optname], ['value', value]] as const) {
      if (!isInt(v)) throw new InvalidArgumentError(`sock_setopt: ${k} must be an integer, got ${show(v)}`);
    }
    return this.call('socketcore.sock_setopt', [idx, level, optname, value], (v) => [num(v[0]) ?? -1] as [number], opts);
  }

  /** The `socketcore.*` constants as this core defines them (name -> value). */
  consts(opts?: FacadeCallOptions): Observable<Record<string, number>> {
    return this.call(
      'socketcore.consts',
      [],
      (v) => {
        const out: Record<string, number> = {};
        if (v[0] instanceof Map) for (const [k, x] of v[0]) if (typeof k === 'string' && typeof x === 'number') out[k] = x;
        return out;
      },
      opts,
    );
  }

  // ---------------------------------------------------------------- status

  /** `net.getState()`: `["INIT" | "REGISTERED" | "UNREGISTER"]`. */
  getState(opts?: FacadeCallOptions): Observable<[string]> {
    return this.call('net.getState', [], (v) => [text(v[0]) ?? ''] as [string], opts);
  }

  /** `net.getRssi()`: `[0..31]`, CACHED (refreshed by `net.csqQueryPoll`; the agent starts `net.startQueryAll`). */
  getRssi(opts?: FacadeCallOptions): Observable<[number]> {
    return this.call('net.getRssi', [], (v) => [num(v[0]) ?? 0] as [number], opts);
  }

  /** `net.getRsrp()`: `[-140..-40]` dBm, cached like RSSI. */
  getRsrp(opts?: FacadeCallOptions): Observable<[number]> {
    return this.call('net.getRsrp', [], (v) => [num(v[0]) ?? 0] as [number], opts);
  }

  /** `net.csqQueryPoll(period?)`: start a CSQ query (every `period` ms if given); RSSI updates afterwards. */
  csqQueryPoll(periodMs?: number, opts?: FacadeCallOptions): Observable<WireValue[]> {
    if (periodMs !== undefined && (!isInt(periodMs) || periodMs < 0)) throw new InvalidArgumentError('csqQueryPoll: period must be a non-negative integer (ms)');
    return this.call('net.csqQueryPoll', periodMs === undefined ? [] : [periodMs], (v) => v, opts);
  }

  /** `misc.getImei()`: `[imei]`, `""` until the module has read it. */
  getImei(opts?: FacadeCallOptions): Observable<[string]> {
    return this.call('misc.getImei', [], (v) => [text(v[0]) ?? ''] as [string], opts);
  }

  /** `rtos.get_version()`: `[core name]`, e.g. "Luat_V0026_RDA8910_TTS_FLOAT". */
  getVersion(opts?: FacadeCallOptions): Observable<[string]> {
    return this.call('rtos.get_version', [], (v) => [text(v[0]) ?? ''] as [string], opts);
  }

  /** `link.isReady()`: `[true]` once IP_READY_IND was published (the data link is up). */
  isReady(opts?: FacadeCallOptions): Observable<[boolean]> {
    return this.call('link.isReady', [], (v) => [v[0] === true] as [boolean], opts);
  }
}

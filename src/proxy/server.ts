/**
 * A SOCKS5 server (RFC 1928: CONNECT and UDP ASSOCIATE; RFC 1929 username/password) over
 * `net.createServer` that opens every outbound connection through a {@link Dialer}: the
 * module's stack for `tether proxy` (module-dialer.ts), node:net in tests.
 *
 * Each client connection goes: greeting → (username/password) → request → dial → reply →
 * relay. CONNECT pipes both ways with backpressure (a side whose peer's write buffer is full
 * is paused until 'drain'), passes a FIN on (`end()`), and destroys the other side when one
 * side errors or closes abruptly. UDP ASSOCIATE binds a UDP relay on the address the client
 * reached the server on; the association lives as long as its TCP connection.
 *
 * Dialer errors map to REP codes by their `code` ({@link replyForError}):
 * | error `code`                                         | REP |
 * | ---------------------------------------------------- | --- |
 * | `ECONNREFUSED`                                       | 5 Connection refused |
 * | `ENETUNREACH`, `ENETDOWN`                            | 3 Network unreachable |
 * | `EHOSTUNREACH`, `EHOSTDOWN`, `ENOTFOUND`, `EAI_AGAIN`, `EAI_NONAME`, `EAI_FAIL` | 4 Host unreachable |
 * | `ETIMEDOUT`, `TIMEOUT` (tether)                      | 4 Host unreachable |
 * | `EACCES`, `EPERM`                                    | 2 connection not allowed by ruleset |
 * | `ECONNRESET`, `EPIPE`, `RESET`, `DISCONNECTED`, `SOCKET` (tether), anything else | 1 general SOCKS server failure |
 * The module helpers of today report a failed connect as `SOCKET` (the firmwares do not say
 * whether it was refused, unreachable or a DNS failure), so it maps to 1.
 */
import { EventEmitter } from 'node:events';
import { createSocket as createUdpSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIP, type AddressInfo, type Server, type Socket } from 'node:net';
import { timingSafeEqual, createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { InvalidArgumentError, TetherError } from '../errors.js';
import {
  AuthMethod,
  Command,
  Reply,
  SocksProtocolError,
  encodeMethodSelection,
  encodeReply,
  encodeUdpDatagram,
  encodeUserPassReply,
  parseGreeting,
  parseRequest,
  parseUdpDatagram,
  parseUserPassRequest,
  type Credentials,
  type Parsed,
  type ReplyCode,
  type SocksRequest,
} from './socks5.js';

/** Where a datagram came from (the `rinfo` of a `dgram` 'message' event). */
export interface RemoteInfo {
  address: string;
  port: number;
}

/**
 * A UDP socket like `dgram.Socket` (the subset the relay uses): `send(msg, port, address,
 * callback)` to any destination, 'message' (msg, rinfo) for every datagram received,
 * 'error', and `close()`.
 */
export interface DatagramSocket {
  send(msg: Uint8Array, port: number, address: string, callback?: (error: Error | null, bytes?: number) => void): void;
  on(event: 'message', listener: (msg: Buffer, rinfo: RemoteInfo) => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
  close(callback?: () => void): void;
}

/**
 * How the server reaches the network. `connect` resolves with a connected `stream.Duplex`
 * that behaves like `net.Socket` ('data', 'end' on the peer's FIN, 'close', 'error' with a
 * `code`, `end()` sends FIN, `destroy()` aborts) or rejects with an error carrying `code`
 * (mapped by {@link replyForError}). `udp`, when present, makes an unbound UDP socket for one
 * UDP ASSOCIATE; without it UDP ASSOCIATE answers REP 7 (Command not supported).
 */
export interface Dialer {
  connect(host: string, port: number): Promise<Duplex>;
  udp?: () => Promise<DatagramSocket>;
}

/** RFC 1929 credentials the server accepts. */
export interface SocksAuth {
  username: string;
  password: string;
}

/** Options of {@link SocksServer}. */
export interface SocksServerOptions {
  /** Opens every outbound connection. */
  dialer: Dialer;
  /** Address to listen on. @default '127.0.0.1' */
  host?: string;
  /** TCP port to listen on (0 = any free port). @default 1080 */
  port?: number;
  /** Allow a non-loopback `host` (then `auth` is required). @default false */
  allowRemote?: boolean;
  /** Require RFC 1929 username/password with these credentials. @default none (method 0, no authentication) */
  auth?: SocksAuth;
  /** Time a client has from connecting to sending a complete request (ms). @default 10000 */
  handshakeTimeoutMs?: number;
}

/** One proxied connection as reported in 'open' and 'close' events and {@link SocksServer.connections}. */
export interface ConnectionRecord {
  /** Sequence number of the connection, from 1. */
  id: number;
  /** `client address:port` (the SOCKS client). */
  client: string;
  /** `connect` or `udp` (UDP ASSOCIATE). */
  command: 'connect' | 'udp';
  /** Destination as the client asked for it (`host:port`; for UDP the client's declared source). */
  target: string;
  /** Start of the request (ms since the epoch). */
  startedAt: number;
  /** Bytes from the client to the target (UDP: DATA bytes of the datagrams sent). */
  bytesUp: number;
  /** Bytes from the target to the client (UDP: DATA bytes received). */
  bytesDown: number;
  /** REP sent to the client (undefined while dialling). */
  reply?: number;
  /** Set on close: how long it lived (ms). */
  durationMs?: number;
  /** Set on close when it ended by an error: the error's `code` (e.g. `ECONNREFUSED`, `RESET`). */
  errorCode?: string;
  /** Set on close when it ended by an error: its message. */
  errorMessage?: string;
}

/** Totals of a {@link SocksServer}. */
export interface SocksStats {
  /** Connections being dialled or relayed now. */
  live: number;
  /** Requests dialled since the start (succeeded or not). */
  total: number;
  /** Requests that failed (REP other than 0). */
  failed: number;
  /** Bytes relayed client → target, over all connections. */
  bytesUp: number;
  /** Bytes relayed target → client, over all connections. */
  bytesDown: number;
}

/** Loopback addresses: 127.0.0.0/8, ::1, ::ffff:127.x, and the name localhost. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  return /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * The REP for a dialer error, by its `code` (see the table in the file header); a `SOCKET`
 * error of the stream layer (src/streams) is mapped by its Node-style `reason` (`ECONNREFUSED`,
 * `ENOTFOUND`, ...).
 */
export function replyForError(e: unknown): ReplyCode {
  const reason = (e as { reason?: unknown })?.reason;
  const raw = typeof (e as { code?: unknown })?.code === 'string' ? (e as { code: string }).code : '';
  const code = raw === 'SOCKET' && typeof reason === 'string' ? reason : raw;
  switch (code) {
    case 'ECONNREFUSED':
      return Reply.CONNECTION_REFUSED;
    case 'ENETUNREACH':
    case 'ENETDOWN':
      return Reply.NETWORK_UNREACHABLE;
    case 'EHOSTUNREACH':
    case 'EHOSTDOWN':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
    case 'EAI_FAIL':
    case 'ETIMEDOUT':
    case 'TIMEOUT':
      return Reply.HOST_UNREACHABLE;
    case 'EACCES':
    case 'EPERM':
      return Reply.CONNECTION_NOT_ALLOWED;
    default:
      return Reply.GENERAL_FAILURE;
  }
}

function errorCode(e: unknown): string {
  const c = (e as { code?: unknown })?.code;
  return typeof c === 'string' ? c : 'ERROR';
}

/** Same length and constant time regardless of where the bytes differ. */
function sameSecret(a: Buffer, b: Buffer): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/**
 * The SOCKS5 server. Construct, then `listen()`. Events:
 * - `'connectionOpen'` (ConnectionRecord): a request was accepted (REP 0 sent);
 * - `'connectionClose'` (ConnectionRecord): a request ended (failed dial, or the relay ended); it has
 *   `durationMs`, the final byte counts and, when it ended by an error, `errorCode`;
 * - `'clientError'` (Error, client): a client broke the protocol or timed out before its request.
 * @throws InvalidArgumentError from the constructor: a bad port, a non-loopback `host`
 *   without `allowRemote`, or with `allowRemote` but without `auth`.
 */
export class SocksServer extends EventEmitter {
  readonly host: string;
  readonly port: number;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly live = new Map<number, ConnectionRecord>();
  private seq = 0;
  private readonly totals = { total: 0, failed: 0, bytesUp: 0, bytesDown: 0 };
  private readonly handshakeTimeoutMs: number;

  constructor(private readonly o: SocksServerOptions) {
    super();
    this.host = o.host ?? '127.0.0.1';
    this.port = o.port ?? 1080;
    if (!o || typeof o.dialer?.connect !== 'function') throw new InvalidArgumentError('SocksServer: options.dialer with a connect(host, port) function is required');
    if (!Number.isInteger(this.port) || this.port < 0 || this.port > 65535) throw new InvalidArgumentError(`SocksServer: port must be an integer 0..65535, got ${String(o.port)}`);
    if (!isLoopback(this.host)) {
      if (!o.allowRemote) throw new InvalidArgumentError(`listening on ${this.host} (not loopback) lets other machines use the module's network: pass --allow-remote (allowRemote: true) together with --user/--password-env`, { host: this.host });
      if (!o.auth) throw new InvalidArgumentError(`listening on ${this.host} (not loopback) requires authentication: give --user and --password-env (options.auth)`, { host: this.host });
    }
    if (o.auth !== undefined) {
      const u = Buffer.byteLength(o.auth.username ?? '', 'utf8');
      const p = Buffer.byteLength(o.auth.password ?? '', 'utf8');
      if (typeof o.auth.username !== 'string' || u < 1 || u > 255) throw new InvalidArgumentError('SocksServer: auth.username must be 1..255 bytes (RFC 1929)');
      if (typeof o.auth.password !== 'string' || p < 1 || p > 255) throw new InvalidArgumentError('SocksServer: auth.password must be 1..255 bytes (RFC 1929)');
    }
    this.handshakeTimeoutMs = o.handshakeTimeoutMs ?? 10000;
    this.server = createServer({ allowHalfOpen: true, pauseOnConnect: false }, (s) => this.accept(s));
  }

  /**
   * Start listening. Resolves with the bound address (the port is the real one when 0 was asked).
   * @throws the listen error (`EADDRINUSE`, `EACCES`, ...), as Node gives it.
   */
  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      this.server.once('error', onError);
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', onError);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** The bound address, once listening. */
  address(): AddressInfo | undefined {
    return (this.server.address() as AddressInfo | null) ?? undefined;
  }

  /** Totals since the start. */
  get stats(): SocksStats {
    let up = this.totals.bytesUp;
    let down = this.totals.bytesDown;
    for (const c of this.live.values()) {
      up += c.bytesUp;
      down += c.bytesDown;
    }
    return { live: this.live.size, total: this.totals.total, failed: this.totals.failed, bytesUp: up, bytesDown: down };
  }

  /** The connections being dialled or relayed now (snapshots). */
  connections(): ConnectionRecord[] {
    return [...this.live.values()].map((c) => ({ ...c }));
  }

  /** Stop listening and destroy every client connection (which destroys their outbound sides). Resolves once closed. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  private accept(client: Socket): void {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => undefined); // reported through 'close' of the relay; never unhandled
    const peer = `${client.remoteAddress}:${client.remotePort}`;
    let buf: Buffer = Buffer.alloc(0);
    let stage: 'greeting' | 'auth' | 'request' | 'done' = 'greeting';
    const timer = setTimeout(() => fail(new TetherError('TIMEOUT', `no complete SOCKS request within ${this.handshakeTimeoutMs} ms`)), this.handshakeTimeoutMs);
    const fail = (e: Error, reply?: number) => {
      if (stage === 'done') return;
      stage = 'done';
      clearTimeout(timer);
      client.off('data', onData);
      this.emit('clientError', e, peer);
      if (reply !== undefined) client.end(encodeReply(reply));
      else client.end();
      client.destroySoon?.();
    };
    const take = <T>(parse: (b: Uint8Array) => Parsed<T> | undefined): T | undefined => {
      const r = parse(buf);
      if (!r) return undefined;
      buf = buf.subarray(r.length);
      return r.value;
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      try {
        for (;;) {
          if (stage === 'greeting') {
            const g = take(parseGreeting);
            if (!g) return;
            const want = this.o.auth ? AuthMethod.USERNAME_PASSWORD : AuthMethod.NO_AUTHENTICATION_REQUIRED;
            if (!g.methods.includes(want)) {
              client.write(encodeMethodSelection(AuthMethod.NO_ACCEPTABLE_METHODS));
              fail(new TetherError('PROTOCOL', this.o.auth ? 'client offers no username/password authentication' : 'client offers no method without authentication'));
              return;
            }
            client.write(encodeMethodSelection(want));
            stage = this.o.auth ? 'auth' : 'request';
          } else if (stage === 'auth') {
            const c = take(parseUserPassRequest);
            if (!c) return;
            if (!this.check(c)) {
              client.write(encodeUserPassReply(false));
              fail(new TetherError('PROTOCOL', `authentication failed for user ${JSON.stringify(c.username)}`));
              return;
            }
            client.write(encodeUserPassReply(true));
            stage = 'request';
          } else if (stage === 'request') {
            const r = take(parseRequest);
            if (!r) return;
            stage = 'done';
            clearTimeout(timer);
            client.off('data', onData);
            client.pause();
            const rest = buf;
            buf = Buffer.alloc(0);
            this.handle(client, peer, r, rest);
            return;
          } else return;
        }
      } catch (e) {
        fail(e as Error, e instanceof SocksProtocolError ? e.reply : undefined);
      }
    };
    client.on('data', onData);
    client.on('end', () => {
      if (stage !== 'done') fail(new TetherError('PROTOCOL', 'client closed before its request was complete'));
    });
  }

  private check(c: Credentials): boolean {
    const a = this.o.auth!;
    // evaluate both comparisons always (no early exit that tells which one was wrong)
    const u = sameSecret(c.usernameBytes, Buffer.from(a.username, 'utf8'));
    const p = sameSecret(c.passwordBytes, Buffer.from(a.password, 'utf8'));
    return u && p;
  }

  private begin(peer: string, command: 'connect' | 'udp', target: string): ConnectionRecord {
    const rec: ConnectionRecord = { id: ++this.seq, client: peer, command, target, startedAt: Date.now(), bytesUp: 0, bytesDown: 0 };
    this.totals.total++;
    this.live.set(rec.id, rec);
    return rec;
  }

  private finish(rec: ConnectionRecord, err?: unknown): void {
    if (!this.live.delete(rec.id)) return;
    rec.durationMs = Date.now() - rec.startedAt;
    if (err !== undefined) {
      rec.errorCode = errorCode(err);
      rec.errorMessage = err instanceof Error ? err.message : String(err);
    }
    if (rec.reply !== Reply.SUCCEEDED) this.totals.failed++;
    this.totals.bytesUp += rec.bytesUp;
    this.totals.bytesDown += rec.bytesDown;
    this.emit('connectionClose', { ...rec });
  }

  private handle(client: Socket, peer: string, req: SocksRequest, early: Buffer): void {
    const a = req.address;
    const target = a.type === 'ipv6' ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
    if (req.command === Command.CONNECT) return void this.connect(client, peer, a.host, a.port, target, early);
    if (req.command === Command.UDP_ASSOCIATE && this.o.dialer.udp) return void this.associate(client, peer, target);
    // BIND (the module cannot accept a connection on behalf of the client), or no UDP
    client.end(encodeReply(Reply.COMMAND_NOT_SUPPORTED));
    this.emit('clientError', new TetherError('UNSUPPORTED', `command ${req.command === Command.BIND ? 'BIND' : 'UDP ASSOCIATE'} not supported`), peer);
  }

  private async connect(client: Socket, peer: string, host: string, port: number, target: string, early: Buffer): Promise<void> {
    const rec = this.begin(peer, 'connect', target);
    let clientGone = false;
    const onGone = () => {
      clientGone = true;
    };
    client.once('close', onGone);
    let remote: Duplex;
    try {
      remote = await this.o.dialer.connect(host, port);
    } catch (e) {
      client.off('close', onGone);
      rec.reply = replyForError(e);
      if (!clientGone) client.end(encodeReply(rec.reply));
      this.finish(rec, e);
      return;
    }
    client.off('close', onGone);
    if (clientGone || client.destroyed) {
      remote.on('error', () => undefined);
      remote.destroy();
      rec.reply = Reply.SUCCEEDED;
      this.finish(rec, new TetherError('ABORTED', 'the client closed while the connection was being opened'));
      return;
    }
    rec.reply = Reply.SUCCEEDED;
    client.write(encodeReply(Reply.SUCCEEDED));
    this.emit('connectionOpen', { ...rec });
    this.relay(client, remote, rec, early);
  }

  /** Pipe both ways with backpressure, pass FINs on, count bytes, settle `rec` once both sides are closed. */
  private relay(client: Socket, remote: Duplex, rec: ConnectionRecord, early: Buffer): void {
    let firstError: unknown;
    let closed = 0;
    const onClose = () => {
      if (++closed === 2) this.finish(rec, firstError);
    };
    const pipe = (from: Duplex, to: Duplex, count: (n: number) => void) => {
      from.on('data', (d: Buffer) => {
        count(d.length);
        if (!to.write(d)) from.pause();
      });
      to.on('drain', () => from.resume());
      from.on('end', () => {
        if (!to.destroyed && !to.writableEnded) to.end();
      });
    };
    const up = (n: number) => {
      rec.bytesUp += n;
    };
    const down = (n: number) => {
      rec.bytesDown += n;
    };
    if (early.length) {
      up(early.length);
      remote.write(early);
    }
    pipe(client, remote, up);
    pipe(remote, client, down);
    remote.on('error', (e) => {
      firstError ??= e;
      client.destroy();
    });
    client.on('error', (e) => {
      firstError ??= e;
      remote.destroy();
    });
    // one side gone before the other finished cleanly: abort the other
    const abortOther = (self: Duplex, other: Duplex) => () => {
      if (!(self.readableEnded && self.writableFinished) && !other.destroyed) other.destroy();
      onClose();
    };
    remote.on('close', abortOther(remote, client));
    client.on('close', abortOther(client, remote));
    client.resume();
  }

  private async associate(client: Socket, peer: string, target: string): Promise<void> {
    const rec = this.begin(peer, 'udp', target);
    const clientIp = client.remoteAddress ?? '';
    const localIp = client.localAddress ?? '127.0.0.1';
    let relay: UdpSocket | undefined;
    let outbound: DatagramSocket | undefined;
    let firstError: unknown;
    let done = false;
    const end = (e?: unknown) => {
      if (done) return;
      done = true;
      firstError ??= e;
      try {
        relay?.close();
      } catch {
        /* already closed */
      }
      try {
        outbound?.close();
      } catch {
        /* already closed */
      }
      if (!client.destroyed) client.destroy();
      this.finish(rec, firstError);
    };
    client.on('end', () => end()); // the client's FIN ends the association (RFC 1928 section 7)
    client.on('close', () => end());
    client.on('error', (e) => end(e));
    try {
      outbound = await this.o.dialer.udp!();
      relay = createUdpSocket(isIP(localIp) === 6 ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        relay!.once('error', reject);
        relay!.bind(0, localIp, () => {
          relay!.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      rec.reply = replyForError(e);
      if (!client.destroyed) client.end(encodeReply(rec.reply));
      end(e);
      return;
    }
    if (done) return;
    const bound = relay.address();
    let clientAddr: RemoteInfo | undefined; // where the client sends from: replies go there
    relay.on('error', (e) => end(e));
    outbound.on('error', (e) => end(e));
    relay.on('message', (msg, rinfo) => {
      if (rinfo.address !== clientIp) return; // RFC 1928 section 7: only from the client's address
      let d;
      try {
        d = parseUdpDatagram(msg);
      } catch {
        return; // malformed: dropped
      }
      if (d.frag !== 0) return; // no reassembly: fragments are dropped (RFC 1928 section 7 allows it)
      clientAddr = { address: rinfo.address, port: rinfo.port };
      rec.bytesUp += d.data.length;
      outbound!.send(d.data, d.address.port, d.address.host, () => undefined);
    });
    outbound.on('message', (msg, rinfo) => {
      if (!clientAddr || done) return;
      rec.bytesDown += msg.length;
      relay!.send(encodeUdpDatagram(rinfo.address, rinfo.port, msg), clientAddr.port, clientAddr.address);
    });
    rec.reply = Reply.SUCCEEDED;
    client.write(encodeReply(Reply.SUCCEEDED, bound.address, bound.port));
    this.emit('connectionOpen', { ...rec });
    client.resume(); // anything the client sends on the control connection is ignored
  }
}

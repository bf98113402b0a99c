/**
 * {@link UdpSocket}: a module UDP socket as a `dgram.Socket`-like EventEmitter.
 * NodeMCU's `net.createUDPSocket()` is unconnected (any peer per datagram). LuatOS and Luat UDP
 * sockets are connected on the firmware (one peer, set by `socket.connect` / `sock_conn`): call
 * {@link UdpSocket.connect} first, or the first `send(msg, port, address)` connects to that peer;
 * a later send to another peer errors with `UNSUPPORTED`.
 */
import { EventEmitter } from 'node:events';
import { InvalidArgumentError, TetherError } from '../errors.js';
import type { DriverUdp, StreamDriver } from './driver.js';
import { toStreamError } from './errors.js';

/** Largest datagram sent (bytes): 1472, the payload of one unfragmented IPv4 packet on a 1500-byte link. */
export const MAX_DATAGRAM = 1472;

/** `rinfo` of a `'message'`, as in `dgram`. */
export interface RemoteInfo {
  address: string;
  family: 'IPv4';
  port: number;
  size: number;
}

function checkPort(p: unknown, what: string, min = 0): asserts p is number {
  if (typeof p !== 'number' || !Number.isInteger(p) || p < min || p > 65535) throw new InvalidArgumentError(`${what}: port must be an integer ${min}..65535, got ${String(p)}`);
}

/**
 * Events: `'listening'` (bound), `'connect'`, `'message'` `(msg: Buffer, rinfo)`, `'error'`
 * (TetherError: `RESET` when the module resets, `SOCKET`, `UNSUPPORTED`), `'close'`.
 */
export class UdpSocket extends EventEmitter {
  private udp?: Promise<DriverUdp>;
  private bound?: DriverUdp;
  private localPort = 0;
  private remote?: { port: number; address: string };
  private closed = false;

  /** @internal use {@link createSocket}. */
  constructor(private readonly driver: StreamDriver) {
    super();
  }

  private open(): Promise<DriverUdp> {
    this.udp ??= this.driver
      .udp(
        { localPort: this.localPort, remote: this.remote },
        {
          message: (d) => {
            if (!this.closed) this.emit('message', Buffer.from(d.data), { address: d.address, family: 'IPv4', port: d.port, size: d.data.length } satisfies RemoteInfo);
          },
          error: (e) => this.fail(toStreamError(e)),
        },
      )
      .then((u) => {
        this.bound = u;
        if (this.closed) void u.close();
        else {
          this.emit('listening');
          if (this.remote) this.emit('connect');
        }
        return u;
      });
    return this.udp;
  }

  private fail(e: Error): void {
    if (this.closed) return;
    this.emit('error', e);
    this.close();
  }

  /** Bind the local port (0 or omitted: any). Optional on NodeMCU (sending binds); LuatOS/Luat bind on connect. */
  bind(port = 0, callback?: () => void): this {
    checkPort(port, 'bind');
    this.localPort = port;
    if (callback) this.once('listening', callback);
    if (!this.driver.udpConnectedOnly) this.open().catch((e) => this.fail(toStreamError(e)));
    return this;
  }

  /** Set the one peer (`dgram.Socket#connect`); on LuatOS and Luat this opens the firmware's connected UDP socket. */
  connect(port: number, address = '127.0.0.1', callback?: () => void): this {
    checkPort(port, 'connect', 1);
    if (typeof address !== 'string' || address === '') throw new InvalidArgumentError('connect: address must be a non-empty string');
    if (this.remote) throw new InvalidArgumentError('connect: the socket is already connected');
    this.remote = { port, address };
    if (callback) this.once('connect', callback);
    if (this.driver.udpConnectedOnly || !this.udp) this.open().catch((e) => this.fail(toStreamError(e)));
    else process.nextTick(() => this.emit('connect'));
    return this;
  }

  /**
   * Send one datagram (at most {@link MAX_DATAGRAM} bytes) to `port`/`address`, or to the connected
   * peer when they are omitted. The callback gets the error, if any, else the byte count.
   * @throws InvalidArgumentError (size, port, address) before anything is sent.
   */
  send(msg: Uint8Array | string, port?: number, address?: string, callback?: (err: Error | null, bytes?: number) => void): void {
    const data = typeof msg === 'string' ? Buffer.from(msg) : msg;
    if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('send: msg must be a string or bytes');
    if (data.length > MAX_DATAGRAM) throw new InvalidArgumentError(`send: a ${data.length}-byte datagram is over ${MAX_DATAGRAM} bytes`);
    let to = this.remote;
    if (port !== undefined) {
      checkPort(port, 'send', 1);
      to = { port, address: address ?? '127.0.0.1' };
    }
    if (!to) throw new InvalidArgumentError('send: give port and address, or connect() first');
    if (this.closed) throw new TetherError('CLOSED', 'send: the socket is closed');
    if (this.driver.udpConnectedOnly) {
      if (!this.remote) this.remote = to;
      else if (this.remote.port !== to.port || this.remote.address !== to.address) {
        throw new TetherError('UNSUPPORTED', `send: this family's UDP sockets are connected to ${this.remote.address}:${this.remote.port}; they cannot send to ${to.address}:${to.port}`);
      }
    }
    const dest = to;
    this.open()
      .then((u) => u.send(data, dest.port, dest.address))
      .then(
        () => callback?.(null, data.length),
        (e) => {
          const err = toStreamError(e);
          if (callback) callback(err);
          else this.emit('error', err);
        },
      );
  }

  /** `{ address, family, port }` of the local end (port 0 when the firmware does not tell). */
  address(): { address: string; family: string; port: number } {
    return { address: '0.0.0.0', family: 'IPv4', port: this.bound?.localPort ?? this.localPort };
  }

  /** Release the module socket; `'close'` follows. */
  close(callback?: () => void): this {
    if (this.closed) return this;
    this.closed = true;
    if (callback) this.once('close', callback);
    const u = this.udp;
    void (u ? u.then((x) => x.close(), () => undefined) : Promise.resolve()).then(() => this.emit('close'));
    return this;
  }

  /** No effect; for `dgram.Socket` compatibility. */
  ref(): this {
    return this;
  }
  /** No effect; for `dgram.Socket` compatibility. */
  unref(): this {
    return this;
  }
}

/**
 * The one place that turns a connected module into a SOCKS {@link Dialer}. Every CONNECT opens
 * a {@link SocketStream} on the module's own stack (src/streams: `createConnection`, the same
 * net.Socket-like Duplex for every family, with the firmware's send accounting and read flow
 * control); errors keep that layer's `code`s (`SOCKET` with a Node-style `reason`, `TIMEOUT`,
 * `RESET`, ...). Every UDP ASSOCIATE gets module UDP sockets from the same layer (`createSocket`).
 */
import { EventEmitter } from 'node:events';
import { isIPv4 } from 'node:net';
import { Duplex } from 'node:stream';
import type { TetherModule } from '../api/connect.js';
import { TetherError } from '../errors.js';
import type { DatagramSocket, Dialer } from './server.js';
import { createConnection, createSocket, driverOf, type SocketStream, type UdpSocket } from '../streams/index.js';

/** Options of {@link moduleDialer}. */
export interface ModuleDialerOptions {
  /** Time for the module to report a CONNECT's outcome (ms): `connectTimeoutMs` of `createConnection`. @default 15000 */
  connectTimeoutMs?: number;
}

/**
 * A {@link Dialer} that opens every connection on `mod`'s stack: TCP for `connect`, and a
 * dgram-like UDP socket for `udp` (LuatOS and Luat: one connected module UDP socket per
 * destination, opened on the first datagram to it; NodeMCU: one `net.createUDPSocket`, IPv4
 * destinations only, as `udpsocket:send` takes no names).
 * @throws TetherError `UNSUPPORTED` (on connect / send) for a family without a stream driver.
 */
export function moduleDialer(mod: TetherModule, o: ModuleDialerOptions = {}): Dialer {
  const timeoutMs = o.connectTimeoutMs;
  // TCP: the shared socket stream layer (src/streams), net.Socket-like with the firmware's own
  // send accounting and read flow control; UDP below.
  const connect = (host: string, port: number): Promise<Duplex> =>
    new Promise((resolve, reject) => {
      let sock: SocketStream;
      try {
        sock = createConnection(mod, { host, port, ...(timeoutMs !== undefined ? { connectTimeoutMs: timeoutMs } : {}) });
      } catch (e) {
        reject(e);
        return;
      }
      const fail = (e: Error) => reject(e);
      sock.once('error', fail);
      sock.once('connect', () => {
        sock.off('error', fail);
        resolve(sock);
      });
    });
  return { connect, udp: async () => new ModuleUdp(mod) };
}

/**
 * The module's UDP as a `dgram.Socket`-like {@link DatagramSocket}: `send(msg, port, address)`
 * to any destination, 'message' (msg, rinfo) for datagrams received, 'error' (a socket that was
 * open failed: module reset, ...), `close()` releases every module socket it opened. Built on the
 * stream layer's {@link UdpSocket} (`createSocket(mod, 'udp4')`): LuatOS and Luat UDP sockets are
 * connected on the firmware (one peer each), so there is one per destination, connected on the
 * first datagram to it; NodeMCU's `net.createUDPSocket()` sends anywhere, so one serves all.
 */
class ModuleUdp extends EventEmitter implements DatagramSocket {
  /** LuatOS / Luat: one connected socket per `address:port`. */
  private readonly perPeer = new Map<string, UdpSocket>();
  /** NodeMCU: the one unconnected socket. */
  private shared?: UdpSocket;
  private closed = false;

  constructor(private readonly mod: TetherModule) {
    super();
  }

  send(msg: Uint8Array, port: number, address: string, callback?: (error: Error | null, bytes?: number) => void): void {
    // like dgram: a send error goes to the callback when there is one, else to 'error'
    const done = (e: Error | null) => {
      if (callback) callback(e, e ? undefined : msg.length);
      else if (e && !this.closed) this.emit('error', e);
    };
    try {
      if (this.closed) throw new TetherError('CLOSED', 'the UDP socket is closed');
      const connected = driverOf(this.mod).driver.udpConnectedOnly;
      if (!connected && !isIPv4(address)) throw new TetherError('UNSUPPORTED', `NodeMCU udpsocket:send takes a dotted IPv4 address, not ${address}`);
      const s = this.socketFor(connected, address, port);
      if (connected) s.send(msg, undefined, undefined, (e) => done(e));
      else s.send(msg, port, address, (e) => done(e));
    } catch (e) {
      done(e as Error);
    }
  }

  private socketFor(connected: boolean, address: string, port: number): UdpSocket {
    if (!connected) {
      if (!this.shared) {
        this.shared = this.open(() => (this.shared = undefined));
        this.shared.bind(0);
      }
      return this.shared;
    }
    const key = `${address}:${port}`;
    let s = this.perPeer.get(key);
    if (!s) {
      s = this.open(() => this.perPeer.delete(key));
      this.perPeer.set(key, s);
      s.connect(port, address);
    }
    return s;
  }

  /** A module UDP socket whose datagrams become this socket's; `forget` runs when it closes. */
  private open(forget: () => void): UdpSocket {
    let opened = false;
    const s = createSocket(this.mod, 'udp4', (msg, rinfo) => {
      if (!this.closed) this.emit('message', msg, { address: rinfo.address, port: rinfo.port });
    });
    s.once('listening', () => (opened = true));
    s.once('close', forget);
    // a socket that never opened reports through the send callback; one that was open reports here
    s.on('error', (e) => {
      if (opened && !this.closed) this.emit('error', e);
    });
    return s;
  }

  close(callback?: () => void): void {
    if (this.closed) return void callback?.();
    this.closed = true;
    const all = [...this.perPeer.values(), ...(this.shared ? [this.shared] : [])];
    this.perPeer.clear();
    this.shared = undefined;
    void Promise.all(all.map((s) => new Promise<void>((r) => s.close(() => r())))).then(() => callback?.());
  }
}

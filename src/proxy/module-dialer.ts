/**
 * The one place that turns a connected module into a SOCKS {@link Dialer}. Every CONNECT opens
 * a {@link SocketStream} on the module's own stack (src/streams: `createConnection`, the same
 * net.Socket-like Duplex for every family, with the firmware's send accounting and read flow
 * control); errors keep that layer's `code`s (`SOCKET` with a Node-style `reason`, `TIMEOUT`,
 * `RESET`, ...). UDP ASSOCIATE goes through the families' UDP helpers (below).
 */
import { EventEmitter } from 'node:events';
import { isIPv4 } from 'node:net';
import { Duplex } from 'node:stream';
import { firstValueFrom, lastValueFrom, map, type Observable, type Subscription } from 'rxjs';
import type { TetherModule } from '../api/connect.js';
import { openSocket } from '../api/luatos/connection.js';
import { openConnection } from '../api/luat/connection.js';
import { TetherError } from '../errors.js';
import type { DatagramSocket, Dialer, RemoteInfo } from './server.js';
import { createConnection, type SocketStream } from '../streams/index.js';

/** Options of {@link moduleDialer}. */
export interface ModuleDialerOptions {
  /** Time to open one connection on the module (ms). @default the helper's: 15000 (LuatOS, NodeMCU), 30000 (Luat) */
  connectTimeoutMs?: number;
}

/**
 * A {@link Dialer} that opens every connection on `mod`'s stack: TCP for `connect`, and a
 * dgram-like UDP socket for `udp` (LuatOS and Luat: one connected module UDP socket per
 * destination, opened on the first datagram to it; NodeMCU: one `net.createUDPSocket`, IPv4
 * destinations only, as `udpsocket:send` takes no names).
 * @throws TetherError `UNSUPPORTED` for a family without a connection helper.
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
  return { connect, udp: async () => new ModuleUdp(mod, timeoutMs) };
}

/** One destination's module UDP socket (LuatOS / Luat). */
interface UdpPath {
  send(data: Uint8Array): Promise<unknown>;
  messages: Observable<{ data: Uint8Array; rinfo: RemoteInfo }>;
  close(): Promise<void>;
}

/**
 * The module's UDP as a `dgram.Socket`-like {@link DatagramSocket}: `send(msg, port, address)`
 * to any destination, 'message' (msg, rinfo) for datagrams received, 'error' (then nothing
 * more), `close()` releases every module socket it opened.
 */
class ModuleUdp extends EventEmitter implements DatagramSocket {
  private readonly paths = new Map<string, Promise<UdpPath>>();
  private readonly subs: Subscription[] = [];
  private closed = false;
  private nodemcu?: Promise<import('../api/nodemcu/net.js').UdpSocket>;

  constructor(
    private readonly mod: TetherModule,
    private readonly timeoutMs: number | undefined,
  ) {
    super();
  }

  send(msg: Uint8Array, port: number, address: string, callback?: (error: Error | null, bytes?: number) => void): void {
    // like dgram: a send error goes to the callback when there is one, else to 'error'
    const done = (e: unknown) => {
      if (callback) callback(e ? (e as Error) : null, e ? undefined : msg.length);
      else if (e && !this.closed) this.emit('error', e);
    };
    this.sendAsync(Buffer.from(msg), port, address).then(() => done(null), done);
  }

  private async sendAsync(msg: Buffer, port: number, address: string): Promise<void> {
    if (this.closed) throw new TetherError('CLOSED', 'the UDP socket is closed');
    if (this.mod.family === 'nodemcu') {
      if (!isIPv4(address)) throw new TetherError('UNSUPPORTED', `NodeMCU udpsocket:send takes a dotted IPv4 address, not ${address}`);
      const u = await (this.nodemcu ??= this.openNodemcu());
      await lastValueFrom(u.send(port, address, msg), { defaultValue: undefined });
      return;
    }
    const key = `${address}:${port}`;
    let p = this.paths.get(key);
    if (!p) {
      p = this.openPath(address, port);
      this.paths.set(key, p);
      p.then(
        (path) => this.subs.push(path.messages.subscribe({ next: (d) => this.emit('message', Buffer.from(d.data), d.rinfo), error: (e) => this.emit('error', e) })),
        () => this.paths.delete(key),
      );
    }
    await (await p).send(msg);
  }

  private async openPath(host: string, port: number): Promise<UdpPath> {
    if (this.mod.family === 'luatos') {
      const c = await firstValueFrom(openSocket(this.mod.socket, host, port, { udp: true, timeoutMs: this.timeoutMs }));
      return { send: (d) => lastValueFrom(c.send(d), { defaultValue: 0 }), messages: c.datagrams().pipe(map((d) => ({ data: d.data, rinfo: { address: d.ip || host, port: d.port || port } }))), close: () => c.close() };
    }
    if (this.mod.family === 'luat') {
      const c = await firstValueFrom(openConnection(this.mod.socketcore, host, port, { type: 'udp', timeoutMs: this.timeoutMs }));
      // a connected socketcore UDP socket: its datagrams come from the destination
      return { send: (d) => lastValueFrom(c.send(d), { defaultValue: 0 }), messages: c.datagrams().pipe(map((data) => ({ data, rinfo: { address: host, port } }))), close: () => c.close() };
    }
    throw new TetherError('UNSUPPORTED', `no UDP helper for family ${this.mod.family}`);
  }

  private async openNodemcu() {
    const u = await firstValueFrom(this.mod.net.createUDPSocket());
    this.subs.push(u.receive$.subscribe({ next: (d) => this.emit('message', Buffer.from(d.data), { address: d.ip, port: d.port }), error: (e) => this.emit('error', e) }));
    await lastValueFrom(u.on('receive'), { defaultValue: undefined });
    await lastValueFrom(u.listen(0), { defaultValue: undefined });
    return u;
  }

  close(callback?: () => void): void {
    if (this.closed) return void callback?.();
    this.closed = true;
    for (const s of this.subs.splice(0)) s.unsubscribe();
    const all: Array<Promise<unknown>> = [...this.paths.values()].map((p) => p.then((x) => x.close()).catch(() => undefined));
    if (this.nodemcu) all.push(this.nodemcu.then((u) => lastValueFrom(u.release(), { defaultValue: undefined })).catch(() => undefined));
    this.paths.clear();
    void Promise.all(all).then(() => callback?.());
  }
}

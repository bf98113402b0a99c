/**
 * The one place that turns a connected module into a SOCKS {@link Dialer}: every CONNECT
 * opens a TCP connection on the module's own stack through the family's connection helper
 * (LuatOS src/api/luatos/connection.ts openSocket, Luat src/api/luat/connection.ts
 * openConnection, NodeMCU src/api/nodemcu/connection.ts connectTcp), wrapped into a
 * `stream.Duplex`. Interim: when the shared Duplex socket layer (src/streams) lands, this
 * file becomes `{ connect: (host, port) => connected(createConnection(mod, { port, host })) }`
 * and keeps its interface.
 *
 * Limits of the wrapper (those of the helpers): reading cannot be paused (the helpers emit as
 * the module delivers, so a slow SOCKS client buffers on the host); `end()` does not half-close
 * the module socket (the helpers have no shutdown): the module socket is closed when both
 * directions are done or the stream is destroyed. Errors keep the helpers' `code`s
 * (`SOCKET`, `TIMEOUT`, `RESET`, `DISCONNECTED`).
 */
import { EventEmitter } from 'node:events';
import { isIPv4 } from 'node:net';
import { Duplex } from 'node:stream';
import { firstValueFrom, lastValueFrom, map, type Observable, type Subscription } from 'rxjs';
import type { TetherModule } from '../api/connect.js';
import { openSocket } from '../api/luatos/connection.js';
import { openConnection } from '../api/luat/connection.js';
import { connectTcp } from '../api/nodemcu/connection.js';
import { TetherError } from '../errors.js';
import type { DatagramSocket, Dialer, RemoteInfo } from './server.js';

/** What every family's connection helper offers. */
interface ByteConnection {
  data(): Observable<Uint8Array>;
  send(data: Uint8Array): Observable<number>;
  close(): Promise<void>;
}

/** A connected helper as a Duplex: 'data' / 'end' on the peer's close / 'error' with the helper's `code`; destroy() closes the module socket. */
function toDuplex(conn: ByteConnection): Duplex {
  let sub: Subscription | undefined;
  const d: Duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      sub ??= conn.data().subscribe({ next: (b) => d.push(Buffer.from(b)), complete: () => d.push(null), error: (e) => d.destroy(e) });
    },
    write(chunk: Buffer, _enc, cb) {
      lastValueFrom(conn.send(chunk), { defaultValue: 0 }).then(() => cb(), cb);
    },
    final(cb) {
      cb(); // no half-close on the helpers: the socket closes when the peer has closed too (autoDestroy)
    },
    destroy(err, cb) {
      sub?.unsubscribe();
      conn.close().then(
        () => cb(err),
        () => cb(err),
      );
    },
  });
  return d;
}

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
  const open = (host: string, port: number): Promise<ByteConnection> => {
    switch (mod.family) {
      case 'luatos':
        return firstValueFrom(openSocket(mod.socket, host, port, { timeoutMs }));
      case 'luat':
        return firstValueFrom(openConnection(mod.socketcore, host, port, { timeoutMs }));
      case 'nodemcu':
        return firstValueFrom(connectTcp(mod.net, host, port, { timeoutMs }));
      default:
        return Promise.reject(new TetherError('UNSUPPORTED', `no connection helper for family ${mod.family}`));
    }
  };
  return { connect: async (host, port) => toDuplex(await open(host, port)), udp: async () => new ModuleUdp(mod, timeoutMs) };
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

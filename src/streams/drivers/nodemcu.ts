/**
 * NodeMCU driver (ESP8266 `net` module), on {@link NodeMcuNet} and the helpers of
 * src/streams/drivers/nodemcu-conn.ts ({@link connectTcp}, {@link NodeMcuConnection}, `sendAll`: chunks
 * within the 2920-byte send buffer, "sent" (ACK) accounting). Firmware facts it relies on
 * (app/modules/net.c of nodemcu/nodemcu-firmware, as cited in src/sim/nodemcu/net-lib.ts):
 * - connect: "connection" = up; "reconnection"/"disconnection" err -9 (ERR_RST) = refused
 *   (`ECONNREFUSED`), -8 (ERR_ABRT) = aborted / SYN timeout (`ECONNABORTED`); a failed DNS lookup
 *   calls nothing back: a host-side timeout (`TIMEOUT`);
 * - the peer's FIN: "disconnection" with err 0: the stream's `'end'`; any other err after
 *   the connection was up: `ECONNRESET`;
 * - a local `close()` fires no callback at all;
 * - the socket limit is the heap: "out of memory" from `createConnection`/`connect`, and "cannot
 *   allocate PCB" (lwIP's pools, 2 listeners at most) are `EMFILE`. lwIP may also kill the oldest
 *   connection to make room (err -8 on it: `ECONNRESET`), docs/firmware/nodemcu.md 1.5;
 * - `net.createServer():listen(port, cb)` accepts; "cannot allocate PCB" past 2 listeners;
 * - `net.createUDPSocket()` is unconnected: `send(port, ip, data)` to any peer, "receive" with
 *   the sender's port and ip.
 * The `net` module has no TLS (that is the separate `tls` module): `tls: true` is `UNSUPPORTED`;
 * run TLS on the host over the stream instead (`tls.connect({ socket })`).
 */
import { firstValueFrom, lastValueFrom, type Subscription } from 'rxjs';
import type { TetherModule } from '../../api/connect.js';
import { NodeMcuConnection, connectTcp } from './nodemcu-conn.js';
import { isNetError } from '../../api/nodemcu/errors.js';
import { TCP_MSS, TCP_SEND_BUFFER, type NodeMcuNet, type TcpSocket } from '../../api/nodemcu/net.js';
import { TetherError } from '../../errors.js';
import type { ConnectionSink, DriverConnection, DriverConnectOptions, DriverDatagram, DriverListener, DriverUdp, ListenSink, StreamDriver } from '../driver.js';
import { SocketError, toStreamError } from '../errors.js';

function mapNetError(e: unknown, fallback: 'ECONNREFUSED' | 'ESOCKET' = 'ESOCKET'): Error {
  if (isNetError(e, 'OUT_OF_MEMORY')) return new SocketError('EMFILE', `the module is out of memory for another socket (NodeMCU's socket limit is its heap): ${(e as Error).message}`, { cause: e });
  // "cannot allocate PCB": lwIP's PCB pools are full (MEMP_NUM_TCP_PCB_LISTEN = 2 listeners, app/include/lwipopts.h)
  if (isNetError(e, 'NO_PCB')) return new SocketError('EMFILE', `the module has no free lwIP PCB: ${(e as Error).message}`, { cause: e });
  if (isNetError(e, 'NOT_CONNECTED') || isNetError(e, 'CLOSED')) return new SocketError('EPIPE', (e as Error).message, { cause: e });
  return toStreamError(e, fallback);
}

async function addr(f: () => Promise<[number | null, string | null]>): Promise<[number | undefined, string | undefined]> {
  try {
    const [p, ip] = await f();
    return [p ?? undefined, ip ?? undefined];
  } catch {
    return [undefined, undefined];
  }
}

class NodeMcuDriverConnection implements DriverConnection {
  readonly sendBuffer = TCP_SEND_BUFFER;
  private sub?: Subscription;
  private closing?: Promise<void>;
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
  constructor(readonly conn: NodeMcuConnection) {}
  /** Ask the firmware for both ends (`getpeer` / `getaddr`: port first). */
  async addresses(): Promise<void> {
    const s = this.conn.socket;
    [this.remotePort, this.remoteAddress] = await addr(() => firstValueFrom(s.getpeer()));
    [this.localPort, this.localAddress] = await addr(() => firstValueFrom(s.getaddr()));
  }
  start(sink: ConnectionSink): void {
    this.sub = this.conn.data().subscribe({
      next: (b) => sink.data(b),
      complete: () => {
        const err = this.conn.endedWith;
        if (err === undefined || err === 0) sink.end();
        else sink.error(new SocketError('ECONNRESET', `the connection ended with err ${err} (${err === -9 ? 'ERR_RST: reset by the peer' : err === -8 ? 'ERR_ABRT: aborted' : 'lwIP error'})`, { context: { err } }));
      },
      error: (e) => sink.error(toStreamError(e)),
    });
  }
  // no pause/resume (read backpressure) from the host: the agent itself holds the socket
  // (`sock:hold()`) while its backlog for the host is high and unholds it when that drains, so
  // a fast peer waits in TCP on the module; bytes are taken here as they come
  async write(bytes: Uint8Array): Promise<void> {
    try {
      await lastValueFrom(this.conn.send(bytes, { chunkSize: TCP_MSS }), { defaultValue: 0 });
    } catch (e) {
      throw mapNetError(e);
    }
  }
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.sub?.unsubscribe();
      await this.conn.close().catch(() => undefined);
    })();
    return this.closing;
  }
}

/** The NodeMCU {@link StreamDriver}. */
export class NodeMcuDriver implements StreamDriver {
  readonly family = 'nodemcu';
  readonly udpConnectedOnly = false;
  constructor(readonly module: TetherModule) {}

  private get net(): NodeMcuNet {
    return this.module.net;
  }

  async connect(o: DriverConnectOptions): Promise<DriverConnection> {
    if (o.tls) throw new TetherError('UNSUPPORTED', "NodeMCU's net module has no TLS: connect in plain TCP and run tls.connect({ socket }) on the host");
    let conn: NodeMcuConnection;
    try {
      conn = await firstValueFrom(connectTcp(this.net, o.host, o.port, { timeoutMs: o.timeoutMs }));
    } catch (e) {
      throw mapNetError(e, 'ECONNREFUSED');
    }
    const c = new NodeMcuDriverConnection(conn);
    await c.addresses();
    return c;
  }

  async listen(o: { port: number }, sink: ListenSink): Promise<DriverListener> {
    const net = this.net;
    let srv;
    try {
      srv = await firstValueFrom(net.createServer());
    } catch (e) {
      throw mapNetError(e);
    }
    const server = srv;
    const accepted = server.accept$.subscribe({
      next: (sock: TcpSocket) => {
        const c = new NodeMcuDriverConnection(new NodeMcuConnection(sock));
        void c.addresses().then(() => sink.connection(c));
      },
      error: (e) => sink.error(toStreamError(e)),
    });
    let port: number | undefined;
    let address: string | undefined;
    try {
      await lastValueFrom(server.listen(o.port || undefined), { defaultValue: undefined });
      // the port is known once lwIP bound it: ask until it is (a random port for 0)
      for (let i = 0; i < 20 && port === undefined; i++) {
        [port, address] = await addr(() => firstValueFrom(server.getaddr()));
        if (port === undefined) await new Promise((r) => setTimeout(r, 25));
      }
      if (port === undefined) throw new SocketError('ESOCKET', `server:listen(${o.port}) did not bind (address in use?)`, { context: { port: o.port } });
    } catch (e) {
      accepted.unsubscribe();
      await lastValueFrom(server.release(), { defaultValue: undefined }).catch(() => undefined);
      throw e instanceof SocketError ? e : mapNetError(e);
    }
    let closed = false;
    return {
      port,
      address: address ?? '0.0.0.0',
      close: async () => {
        if (closed) return;
        closed = true;
        accepted.unsubscribe();
        if (server.epoch !== net.rpc.currentEpoch || net.rpc.isClosed) return;
        await lastValueFrom(server.close(), { defaultValue: undefined }).catch(() => undefined);
        await lastValueFrom(server.release(), { defaultValue: undefined }).catch(() => undefined);
      },
    };
  }

  async udp(o: { localPort: number; remote?: { port: number; address: string } }, sink: { message(d: DriverDatagram): void; error(e: Error): void }): Promise<DriverUdp> {
    const net = this.net;
    const u = await firstValueFrom(net.createUDPSocket()).catch((e) => {
      throw mapNetError(e);
    });
    const sub = u.receive$.subscribe({
      next: (d) => sink.message({ data: d.data, address: d.ip, port: d.port }),
      error: (e) => sink.error(toStreamError(e)),
    });
    try {
      await lastValueFrom(u.on('receive'), { defaultValue: undefined });
      await lastValueFrom(u.listen(o.localPort), { defaultValue: undefined });
    } catch (e) {
      sub.unsubscribe();
      await lastValueFrom(u.release(), { defaultValue: undefined }).catch(() => undefined);
      throw mapNetError(e);
    }
    const [localPort] = await addr(() => firstValueFrom(u.getaddr()));
    let closed = false;
    return {
      localPort,
      send: async (data, port, address) => {
        await lastValueFrom(u.send(port, address, data), { defaultValue: undefined }).catch((e) => {
          throw mapNetError(e);
        });
      },
      close: async () => {
        if (closed) return;
        closed = true;
        sub.unsubscribe();
        if (u.epoch !== net.rpc.currentEpoch || net.rpc.isClosed) return;
        await lastValueFrom(u.close(), { defaultValue: undefined }).catch(() => undefined);
        await lastValueFrom(u.release(), { defaultValue: undefined }).catch(() => undefined);
      },
    };
  }
}

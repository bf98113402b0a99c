/**
 * LuatOS driver (Air780E `socket` library), on {@link LuatosSocket} and {@link LuatosConnection}
 * (src/streams/drivers/luatos-conn.ts: the send loop with the agent's tx hold and TX_OK, the event-driven
 * reader). Firmware facts it relies on (LS = luat/modules/luat_lib_socket.c of openLuat/LuatOS, as
 * cited in src/sim/luatos/socket-lib.ts):
 * - connect: `ON_LINE` 0 = online, -1 = refused / unreachable / DNS failure (one code: `ECONNREFUSED`);
 * - the peer's FIN: `EVENT` -1 (then `rx` answers `(false, 0)` once drained): the stream's `'end'`;
 * - `socket.create` returns nil when every socket is taken (8 by default): `EMFILE`;
 * - `socket.listen(ctrl, n)` (LS:993) with n > 0 keeps listening and reports each client with
 *   `ON_LINE` 0; `socket.accept(ctrl)` (LS:1036) gives `(true, new_ctrl, ip, port)`.
 * - UDP is connected: `socket.connect` sets the one peer; `rx` pushes the sender's address.
 */
import { isIPv4 } from 'node:net';
import { firstValueFrom, lastValueFrom, type Subscription } from 'rxjs';
import type { TetherModule } from '../../api/connect.js';
import { LuatosConnection, openSocket } from './luatos-conn.js';
import { SocketEvent } from '../../api/luatos/constants.js';
import { notOk, type LuatosSocket, type SocketCtrl } from '../../api/luatos/socket.js';
import { TetherError } from '../../errors.js';
import type { ConnectionSink, DriverConnection, DriverConnectOptions, DriverDatagram, DriverListener, DriverUdp, ListenSink, StreamDriver } from '../driver.js';
import { SocketError, toStreamError } from '../errors.js';

/** The simulator's and firmware's default send buffer a `tx` fills before it answers "full" (bytes). */
const SEND_BUFFER = 8192;

class LuatosDriverConnection implements DriverConnection {
  readonly sendBuffer = SEND_BUFFER;
  private sub?: Subscription;
  private closing?: Promise<void>;
  constructor(
    readonly conn: LuatosConnection,
    readonly remoteAddress: string | undefined,
    readonly remotePort: number | undefined,
    readonly localAddress: string | undefined,
    readonly localPort: number | undefined,
  ) {}
  start(sink: ConnectionSink): void {
    this.sub = this.conn.data().subscribe({
      next: (b) => sink.data(b),
      complete: () => sink.end(),
      error: (e) => sink.error(toStreamError(e)),
    });
  }
  // read backpressure: after the peer's FIN the firmware allows one more rx only (see
  // src/streams/drivers/luatos-conn.ts data()). An agent with hello rxdrain takes everything the
  // socket holds in that read, so the stream may leave bytes on the module while paused; with an
  // older agent that would lose them, so then bytes are taken as they come and wait in the
  // stream's buffer instead
  pause(): void {
    if (this.drains) this.conn.pauseReading();
  }
  resume(): void {
    this.conn.resumeReading();
  }
  private get drains(): boolean {
    return this.conn.socket.rpc.hello.raw.get('rxdrain') === true;
  }
  async write(bytes: Uint8Array): Promise<void> {
    try {
      await lastValueFrom(this.conn.send(bytes), { defaultValue: 0 });
    } catch (e) {
      const err = toStreamError(e);
      // TX_OK -1: the connection broke under the send
      if (err instanceof SocketError && /TX_OK reported failure/.test(err.message)) throw new SocketError('ECONNRESET', err.message, { cause: e });
      throw err;
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

async function localIp(socket: LuatosSocket): Promise<string | undefined> {
  try {
    const r = await firstValueFrom(socket.localIP());
    return r[0] || undefined;
  } catch {
    return undefined;
  }
}

/**
 * The peer's address: `host` when it is an IPv4 literal, else the first address the module's DNS
 * gave for it (`socket.remoteIP(ctrl)`, LS: l_socket_remote_ip, filled only after a DNS lookup),
 * or `host` when the firmware does not tell.
 */
async function remoteIp(socket: LuatosSocket, ctrl: SocketCtrl, host: string): Promise<string> {
  if (isIPv4(host)) return host;
  try {
    const ips = await firstValueFrom(socket.remoteIP(ctrl));
    return ips.find((x) => typeof x === 'string' && x !== '') ?? host;
  } catch {
    return host;
  }
}

async function releaseQuietly(socket: LuatosSocket, ctrl: SocketCtrl): Promise<void> {
  if (ctrl.epoch !== socket.rpc.currentEpoch || socket.rpc.isClosed) return;
  await lastValueFrom(socket.close(ctrl), { defaultValue: undefined }).catch(() => undefined);
  await lastValueFrom(socket.release(ctrl), { defaultValue: undefined }).catch(() => undefined);
}

/** The LuatOS {@link StreamDriver}. */
export class LuatosDriver implements StreamDriver {
  readonly family = 'luatos';
  readonly udpConnectedOnly = true;
  constructor(readonly module: TetherModule) {}

  private get socket(): LuatosSocket {
    return this.module.socket;
  }

  async connect(o: DriverConnectOptions): Promise<DriverConnection> {
    let conn: LuatosConnection;
    try {
      conn = await firstValueFrom(openSocket(this.socket, o.host, o.port, { tls: o.tls, ca: o.ca, timeoutMs: o.timeoutMs, localPort: o.localPort }));
    } catch (e) {
      throw toStreamError(e, 'ECONNREFUSED');
    }
    return new LuatosDriverConnection(conn, await remoteIp(this.socket, conn.ctrl, o.host), o.port, await localIp(this.socket), o.localPort);
  }

  async listen(o: { port: number; backlog?: number }, sink: ListenSink): Promise<DriverListener> {
    const socket = this.socket;
    if (o.port === 0) throw new TetherError('UNSUPPORTED', 'LuatOS listens on the port given to socket.config (localPort): pass a port 1..59999');
    const ctrl = await firstValueFrom(socket.create(null));
    if (!ctrl) throw new SocketError('EMFILE', 'socket.create returned nil: every socket of the module is taken');
    let evs: Subscription | undefined;
    try {
      const cfg = await firstValueFrom(socket.config(ctrl, { localPort: o.port }));
      if (cfg[0] !== true) throw notOk('socket.config', cfg);
      const link = await firstValueFrom(socket.linkup(ctrl));
      if (!link.ok) throw notOk('socket.linkup', link);
      let accepting = Promise.resolve();
      const acceptAll = async () => {
        // one ON_LINE may stand for several clients: accept until the firmware has none
        for (;;) {
          const r = await firstValueFrom(socket.accept(ctrl));
          if (!r.ok || !r[1]) return;
          const c = new LuatosConnection(socket, r[1], false);
          sink.connection(new LuatosDriverConnection(c, r[2] ?? undefined, r[3] ?? undefined, undefined, o.port));
        }
      };
      evs = socket.events(ctrl).subscribe({
        next: (e) => {
          if (e.event === SocketEvent.ON_LINE && e.param === 0) accepting = accepting.then(acceptAll).catch((err) => sink.error(toStreamError(err)));
        },
        error: (e) => sink.error(toStreamError(e)),
      });
      const r = await firstValueFrom(socket.listen(ctrl, Math.max(1, o.backlog ?? 4)));
      if (!r.ok) throw new SocketError('ESOCKET', `socket.listen on port ${o.port} failed (address in use, or the adapter is down)`, { context: { port: o.port } });
    } catch (e) {
      evs?.unsubscribe();
      await releaseQuietly(socket, ctrl);
      throw toStreamError(e);
    }
    let closed = false;
    return {
      port: o.port,
      address: (await localIp(socket)) ?? '0.0.0.0',
      close: async () => {
        if (closed) return;
        closed = true;
        evs?.unsubscribe();
        await releaseQuietly(socket, ctrl);
      },
    };
  }

  async udp(o: { localPort: number; remote?: { port: number; address: string } }, sink: { message(d: DriverDatagram): void; error(e: Error): void }): Promise<DriverUdp> {
    if (!o.remote) throw new TetherError('UNSUPPORTED', 'LuatOS UDP sockets are connected: call connect(port, address) (or send to one peer) first');
    let conn: LuatosConnection;
    try {
      conn = await firstValueFrom(openSocket(this.socket, o.remote.address, o.remote.port, { udp: true, localPort: o.localPort || undefined }));
    } catch (e) {
      throw toStreamError(e, 'ECONNREFUSED');
    }
    const sub = conn.datagrams().subscribe({
      next: (d) => sink.message({ data: d.data, address: d.ip || o.remote!.address, port: d.port || o.remote!.port }),
      error: (e) => sink.error(toStreamError(e)),
    });
    return {
      localPort: o.localPort || undefined,
      send: async (data) => {
        await lastValueFrom(conn.send(data), { defaultValue: 0 }).catch((e) => {
          throw toStreamError(e);
        });
      },
      close: async () => {
        sub.unsubscribe();
        await conn.close().catch(() => undefined);
      },
    };
  }
}

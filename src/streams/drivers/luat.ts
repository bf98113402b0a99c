/**
 * Luat legacy driver (Air724UG `socketcore`), on {@link LuatSocketcore} and {@link LuatConnection}
 * (src/streams/drivers/luat-conn.ts: one `sock_send` in flight confirmed by SEND_CNF, every RECV_IND
 * drained, teardown close / CLOSE_CNF / destroy). Firmware facts it relies on
 * (docs/firmware/luat-socketcore.md, as cited in src/sim/luat/socketcore.ts):
 * - connect: `CONN_CNF` result 0 = connected, anything else = failed (`ECONNREFUSED`);
 *   `sock_conn_ext` -2 = DNS failed (`ENOTFOUND`), another negative value = no free slot of the
 *   core's 10 (`EMFILE`);
 * - the peer's FIN: `CLOSE_IND` (posted once everything before it was read): the stream's `'end'`;
 * - there is no listening socket in `socketcore`: {@link listen} throws `UNSUPPORTED`;
 * - UDP is connected (`sock_conn` with the UDP type): one peer per socket.
 */
import { firstValueFrom, lastValueFrom, type Subscription } from 'rxjs';
import type { TetherModule } from '../../api/connect.js';
import { openConnection, type LuatConnection } from './luat-conn.js';
import { IPPROTO_TCP, LIB_TCP_CHUNK, SO_KEEPALIVE, SOL_SOCKET, TCP_KEEPIDLE } from '../../api/luat/constants.js';
import type { LuatSocketcore } from '../../api/luat/socketcore.js';
import { TetherError } from '../../errors.js';
import type { ConnectionSink, DriverConnection, DriverConnectOptions, DriverDatagram, DriverListener, DriverUdp, ListenSink, StreamDriver } from '../driver.js';
import { toStreamError } from '../errors.js';

class LuatDriverConnection implements DriverConnection {
  readonly sendBuffer: number;
  private sub?: Subscription;
  private closing?: Promise<void>;
  constructor(
    readonly conn: LuatConnection,
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly localPort: number | undefined,
  ) {
    // one sock_send per SEND_CNF, each at most the lib's chunk (capped by the agent's message limit)
    this.sendBuffer = Math.min(LIB_TCP_CHUNK, conn.sc.rpc.hello.maxmsg - 96);
  }
  readonly localAddress = undefined;
  get stats(): Readonly<Record<string, number>> {
    return { ...this.conn.stats };
  }
  start(sink: ConnectionSink): void {
    this.sub = this.conn.data().subscribe({
      next: (b) => sink.data(b),
      complete: () => sink.end(),
      error: (e) => sink.error(toStreamError(e)),
    });
  }
  pause(): void {
    this.conn.pauseReading();
  }
  resume(): void {
    this.conn.resumeReading();
  }
  async write(bytes: Uint8Array): Promise<void> {
    try {
      await lastValueFrom(this.conn.send(bytes), { defaultValue: 0 });
    } catch (e) {
      throw toStreamError(e, /peer closed/.test((e as Error).message) ? 'EPIPE' : 'ESOCKET');
    }
  }
  async setKeepAlive(enable: boolean, initialDelaySeconds: number): Promise<void> {
    const sc = this.conn.sc;
    if (!sc.hasSetopt) return;
    await firstValueFrom(sc.sock_setopt(this.conn.index, SOL_SOCKET, SO_KEEPALIVE, enable ? 1 : 0));
    if (enable && initialDelaySeconds > 0) await firstValueFrom(sc.sock_setopt(this.conn.index, IPPROTO_TCP, TCP_KEEPIDLE, initialDelaySeconds));
  }
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.conn.close().catch(() => undefined);
      this.sub?.unsubscribe();
    })();
    return this.closing;
  }
}

/** The Luat {@link StreamDriver}. */
export class LuatDriver implements StreamDriver {
  readonly family = 'luat';
  readonly udpConnectedOnly = true;
  constructor(readonly module: TetherModule) {}

  private get sc(): LuatSocketcore {
    return this.module.socketcore;
  }

  async connect(o: DriverConnectOptions): Promise<DriverConnection> {
    let conn: LuatConnection;
    try {
      conn = await firstValueFrom(openConnection(this.sc, o.host, o.port, { type: o.tls ? 'ssl' : 'tcp', cert: o.ca ? { caCert: o.ca } : undefined, strictCert: o.ca !== undefined, timeoutMs: o.timeoutMs, localPort: o.localPort }));
    } catch (e) {
      throw toStreamError(e, 'ECONNREFUSED');
    }
    return new LuatDriverConnection(conn, o.host, o.port, o.localPort);
  }

  listen(_o: { port: number }, _sink: ListenSink): Promise<DriverListener> {
    return Promise.reject(new TetherError('UNSUPPORTED', 'the Luat socketcore library has no listening socket (sock_conn only connects out)'));
  }

  async udp(o: { localPort: number; remote?: { port: number; address: string } }, sink: { message(d: DriverDatagram): void; error(e: Error): void }): Promise<DriverUdp> {
    if (!o.remote) throw new TetherError('UNSUPPORTED', 'Luat UDP sockets are connected (sock_conn): call connect(port, address) (or send to one peer) first');
    const remote = o.remote;
    let conn: LuatConnection;
    try {
      conn = await firstValueFrom(openConnection(this.sc, remote.address, remote.port, { type: 'udp', localPort: o.localPort || undefined }));
    } catch (e) {
      throw toStreamError(e, 'ECONNREFUSED');
    }
    // each RECV_IND of a UDP slot is one datagram, from the connected peer
    const sub = conn.datagrams().subscribe({
      next: (d) => sink.message({ data: d, address: remote.address, port: remote.port }),
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
        await conn.close().catch(() => undefined);
        sub.unsubscribe();
      },
    };
  }
}

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
import { Duplex } from 'node:stream';
import { firstValueFrom, lastValueFrom, type Observable, type Subscription } from 'rxjs';
import type { TetherModule } from '../api/connect.js';
import { openSocket } from '../api/luatos/connection.js';
import { openConnection } from '../api/luat/connection.js';
import { connectTcp } from '../api/nodemcu/connection.js';
import { TetherError } from '../errors.js';
import type { Dialer } from './server.js';

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
 * A {@link Dialer} that opens every connection on `mod`'s stack (TCP; no UDP yet).
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
  return { connect: async (host, port) => toDuplex(await open(host, port)) };
}

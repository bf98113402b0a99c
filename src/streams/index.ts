/**
 * The stream layer: a module's sockets as Node streams, the same for every family.
 * - {@link createConnection}: a TCP (or module-side TLS) connection as a `net.Socket`-like Duplex;
 * - {@link createServer}: a listening socket as a `net.Server`-like object (LuatOS, NodeMCU);
 * - {@link createSocket}: a UDP socket as a `dgram.Socket`-like object.
 *
 * Layering: this layer sits above the api facades (it imports src/api/**, never the reverse).
 * The module methods (`mod.createConnection(...)`, `mod.createServer(...)`, `mod.createSocket(...)`)
 * are added to `TetherModule.prototype` by {@link installModuleMethods}, which this file runs when
 * it is loaded (the package entry src/index.ts loads it). That keeps src/api/connect.ts free of
 * any import of this layer, while code that imports tether gets the methods on every module
 * (TypeScript sees them through the interface merge below).
 */
import { TetherModule } from '../api/connect.js';
import { InvalidArgumentError, TetherError } from '../errors.js';
import { isTimerMs, MAX_TIMER_MS } from '../util/timer.js';
import type { StreamDriver } from './driver.js';
import { LuatDriver } from './drivers/luat.js';
import { LuatosDriver } from './drivers/luatos.js';
import { NodeMcuDriver } from './drivers/nodemcu.js';
import { UdpSocket } from './dgram.js';
import { ModuleSockets } from './limits.js';
import { Server } from './server.js';
import { SocketStream, openWithQueue, type ConnectionOptions } from './socket.js';

export { SocketStream, type ConnectionOptions } from './socket.js';
export { Server } from './server.js';
export { UdpSocket, MAX_DATAGRAM, type RemoteInfo } from './dgram.js';
export { SocketError, isSocketError, type SocketErrorReason } from './errors.js';
export type { StreamDriver, DriverConnection, ConnectionSink, DriverListener, DriverUdp } from './driver.js';

const drivers = new WeakMap<TetherModule, { driver: StreamDriver; sockets: ModuleSockets }>();

/**
 * The module's stream driver (one per module object, by its family).
 * @throws InvalidArgumentError when `mod` is not a TetherModule; TetherError `UNSUPPORTED` for a family without a driver.
 */
export function driverOf(mod: TetherModule): { driver: StreamDriver; sockets: ModuleSockets } {
  if (!(mod instanceof TetherModule)) throw new InvalidArgumentError('expected a module returned by connect()');
  let d = drivers.get(mod);
  if (!d) {
    const f = mod.family;
    const driver = f === 'luatos' ? new LuatosDriver(mod) : f === 'luat' ? new LuatDriver(mod) : f === 'nodemcu' ? new NodeMcuDriver(mod) : undefined;
    if (!driver) throw new TetherError('UNSUPPORTED', `no stream driver for the ${f} family`);
    d = { driver, sockets: new ModuleSockets() };
    drivers.set(mod, d);
  }
  return d;
}

/**
 * Open a TCP connection from the module (`net.createConnection` on the module's stack):
 * `createConnection(mod, port, host?)` or `createConnection(mod, { port, host, tls, ca, ... })`
 * (see {@link ConnectionOptions} for every option and its default). Returns at once; the stream
 * emits `'connect'` when the module reports the connection up, or `'error'` (ECONNREFUSED-like
 * {@link SocketError}, `TIMEOUT`, `RESET`, `UNSUPPORTED`) then `'close'`.
 * `connectListener` is added as a `'connect'` listener.
 * @throws InvalidArgumentError (port not 1..65535, host not a non-empty string, tls/ca/timeouts of the wrong type), before anything is sent.
 */
export function createConnection(mod: TetherModule, options: ConnectionOptions | number, host?: string | (() => void), connectListener?: () => void): SocketStream {
  const o: ConnectionOptions = typeof options === 'number' ? { port: options, host: typeof host === 'string' ? host : undefined } : { ...options };
  const listener = typeof host === 'function' ? host : connectListener;
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('createConnection: give a port or an options object { port, host }');
  if (typeof o.port !== 'number' || !Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new InvalidArgumentError(`createConnection: port must be an integer 1..65535, got ${String(o.port)}`);
  const h = o.host ?? '127.0.0.1';
  if (typeof h !== 'string' || h === '') throw new InvalidArgumentError('createConnection: host must be a non-empty string');
  if (o.tls !== undefined && typeof o.tls !== 'boolean') throw new InvalidArgumentError('createConnection: tls must be a boolean');
  if (o.ca !== undefined && typeof o.ca !== 'string') throw new InvalidArgumentError('createConnection: ca must be PEM text');
  const ms = o.connectTimeoutMs ?? 15000;
  if (!isTimerMs(ms)) throw new InvalidArgumentError(`createConnection: connectTimeoutMs must be a positive number of milliseconds (at most ${MAX_TIMER_MS})`);
  // 0 turns the idle timeout off, as net.Socket#setTimeout(0)
  if (o.timeout !== undefined && o.timeout !== 0 && !isTimerMs(o.timeout)) throw new InvalidArgumentError(`createConnection: timeout must be 0 (off) or a positive number of milliseconds (at most ${MAX_TIMER_MS})`);
  if (o.localPort !== undefined && (!Number.isInteger(o.localPort) || o.localPort < 0 || o.localPort > 65535)) throw new InvalidArgumentError('createConnection: localPort must be an integer 0..65535');
  if (o.queue !== undefined && typeof o.queue !== 'boolean' && (typeof o.queue !== 'object' || o.queue === null)) throw new InvalidArgumentError('createConnection: queue must be a boolean or { timeoutMs, retryMs }');
  if (typeof o.queue === 'object' && o.queue !== null) {
    for (const k of ['timeoutMs', 'retryMs'] as const) {
      const v = o.queue[k];
      if (v !== undefined && !isTimerMs(v)) throw new InvalidArgumentError(`createConnection: queue.${k} must be a positive number of milliseconds (at most ${MAX_TIMER_MS}), got ${String(v)}`);
    }
  }
  if (listener !== undefined && typeof listener !== 'function') throw new InvalidArgumentError('createConnection: the connect listener must be a function');
  const { driver, sockets } = driverOf(mod);
  const sendBuffer = driver.family === 'nodemcu' ? 2920 : driver.family === 'luat' ? Math.min(11200, mod.hello.maxmsg - 96) : 8192;
  const full = { ...o, host: h, tls: o.tls ?? false, connectTimeoutMs: ms };
  const s = new SocketStream(driver, () => openWithQueue(driver, sockets, full), { tls: full.tls, sendBuffer, timeout: o.timeout });
  if (listener) s.once('connect', listener);
  return s;
}

/**
 * A module-side TCP server (`net.createServer`): `createServer(mod, (socket) => ...).listen(port)`.
 * LuatOS (`socket.listen`/`socket.accept`) and NodeMCU (`net.createServer`) can listen; on Luat
 * `listen()` emits `'error'` with code `UNSUPPORTED`.
 * @throws InvalidArgumentError when the listener is not a function.
 */
export function createServer(mod: TetherModule, connectionListener?: (socket: SocketStream) => void): Server {
  const { driver, sockets } = driverOf(mod);
  return new Server(driver, sockets, connectionListener);
}

/**
 * A module UDP socket (`dgram.createSocket('udp4')`). Every family has UDP; LuatOS and Luat
 * sockets are connected (one peer): see {@link UdpSocket}.
 * @throws InvalidArgumentError for a type other than `'udp4'` (the firmwares' UDP is IPv4).
 */
export function createSocket(mod: TetherModule, type: 'udp4' | { type: 'udp4' }, messageListener?: (msg: Buffer, rinfo: import('./dgram.js').RemoteInfo) => void): UdpSocket {
  const t = typeof type === 'object' && type !== null ? type.type : type;
  if (t !== 'udp4') throw new InvalidArgumentError(`createSocket: type must be 'udp4', got ${String(t)}`);
  const s = new UdpSocket(driverOf(mod).driver);
  if (messageListener !== undefined) {
    if (typeof messageListener !== 'function') throw new InvalidArgumentError('createSocket: the message listener must be a function');
    s.on('message', messageListener);
  }
  return s;
}

declare module '../api/connect.js' {
  interface TetherModule {
    /** {@link createConnection} on this module (added by src/streams/index.ts). */
    createConnection(options: ConnectionOptions | number, host?: string | (() => void), connectListener?: () => void): SocketStream;
    /** {@link createServer} on this module (added by src/streams/index.ts). */
    createServer(connectionListener?: (socket: SocketStream) => void): Server;
    /** {@link createSocket} on this module (added by src/streams/index.ts). */
    createSocket(type: 'udp4' | { type: 'udp4' }, messageListener?: (msg: Buffer, rinfo: import('./dgram.js').RemoteInfo) => void): UdpSocket;
  }
}

/** Add `createConnection` / `createServer` / `createSocket` to every {@link TetherModule} (idempotent; runs when this file loads). */
export function installModuleMethods(): void {
  const p = TetherModule.prototype as unknown as Record<string, unknown>;
  if (typeof p.createConnection === 'function') return;
  Object.defineProperties(p, {
    createConnection: {
      configurable: true,
      writable: true,
      value: function (this: TetherModule, options: ConnectionOptions | number, host?: string | (() => void), cl?: () => void) {
        return createConnection(this, options, host, cl);
      },
    },
    createServer: {
      configurable: true,
      writable: true,
      value: function (this: TetherModule, l?: (socket: SocketStream) => void) {
        return createServer(this, l);
      },
    },
    createSocket: {
      configurable: true,
      writable: true,
      value: function (this: TetherModule, type: 'udp4' | { type: 'udp4' }, l?: (msg: Buffer, rinfo: import('./dgram.js').RemoteInfo) => void) {
        return createSocket(this, type, l);
      },
    },
  });
}

installModuleMethods();

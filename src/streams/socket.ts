/**
 * {@link SocketStream}: a module's TCP (or TLS) connection as a `stream.Duplex` that behaves like
 * `net.Socket` to the code that uses it, the same for every family (the differences are in the
 * drivers, src/streams/drivers/). Plug it into `http.request({ createConnection })`, an
 * `http.Agent`, `tls.connect({ socket })`, mqtt.js's stream builder, or anything that takes a socket.
 */
import { Duplex } from 'node:stream';
import { InvalidArgumentError, TimeoutError } from '../errors.js';
import { isTimerMs, MAX_TIMER_MS } from '../util/timer.js';
import type { DriverConnection, StreamDriver } from './driver.js';
import { SocketError, isSocketError, toStreamError } from './errors.js';
import type { ModuleSockets } from './limits.js';

/** Options of {@link createConnection}. */
export interface ConnectionOptions {
  /** Remote port, 1..65535. Required. */
  port: number;
  /** Remote host: a name (the module resolves it) or an IPv4 address. @default '127.0.0.1' (like `net.connect`) */
  host?: string;
  /**
   * TLS on the module's own stack (LuatOS `socket.config` tls, Luat `SSL` sockets); `'secureConnect'`
   * follows `'connect'`. NodeMCU's `net` has none: the stream errors with `UNSUPPORTED`.
   * For TLS on the host, leave this off and use `tls.connect({ socket })`. @default false
   */
  tls?: boolean;
  /** CA certificate (PEM) the module verifies the server against (TLS). @default no verification (the firmwares' default) */
  ca?: string;
  /** Time for the module to report the connect outcome (ms). @default 15000 */
  connectTimeoutMs?: number;
  /** Idle timeout (ms) as `socket.setTimeout(ms)`: `'timeout'` after that long without traffic. @default 0 (none) */
  timeout?: number;
  /** Local port to bind (LuatOS, Luat). @default the firmware picks one */
  localPort?: number;
  /**
   * When the module has no free socket (`EMFILE`): `false` errors at once; `true` or `{ timeoutMs }`
   * waits for a socket of this module to be released (or retries every `retryMs`) and errors with
   * `TIMEOUT` after `timeoutMs`. @default false; `timeoutMs` default 30000, `retryMs` default 500
   */
  queue?: boolean | { timeoutMs?: number; retryMs?: number };
}

let nextId = 1;

/**
 * A module socket as a `net.Socket`-like Duplex.
 *
 * Events: `'connect'` and `'ready'` once the module reports the connection up (`'secureConnect'`
 * too with `tls`), `'data'`, `'end'` when the peer closed its side (LuatOS `EVENT` -1, Luat
 * `CLOSE_IND`, NodeMCU "disconnection" 0), `'timeout'` (see {@link setTimeout}), `'error'` with a
 * {@link TetherError} (`RESET` when the module resets, `SOCKET` with a {@link SocketError.reason}
 * such as `ECONNREFUSED`, `TIMEOUT`, `UNSUPPORTED`), then `'close'`.
 *
 * Writes: each write goes to the module through the family's send accounting (LuatOS: `tx`,
 * TX_OK when the buffer was full; Luat: one `sock_send` per SEND_CNF; NodeMCU: chunks within the
 * 2920-byte buffer, "sent" per ACK); the write callback runs once the firmware accepted the bytes.
 * The writable high-water mark is the module's send buffer for the socket, so `write()` returns
 * false (and `'drain'` follows) as the module's buffer fills. Writes before `'connect'` wait.
 *
 * Reads: bytes are pushed as the module delivers them; when the readable buffer is over its
 * high-water mark (16 KiB) the driver stops taking bytes from the module until the consumer reads
 * (Luat: no `sock_recv`; LuatOS: no `socket.rx`), so a slow consumer pushes back on the module's
 * receive buffer and, through TCP, on the peer. LuatOS pauses only with an agent that says hello
 * `rxdrain` (after the peer's FIN the firmware allows one more read only, which such an agent
 * makes take everything; an older agent would lose bytes left on the module, so the stream keeps
 * reading then). NodeMCU keeps reading: its `unhold` re-opens a whole window at once, a burst the
 * agent's event backlog drops. The firmwares do not allow half-closed
 * sockets: `end()` sends the FIN and closes both directions once every write was accepted, and
 * after the peer's FIN the stream ends its writable side too (`allowHalfOpen` false, like a
 * default `net.Socket`). `destroy()` releases the module socket at once.
 */
export class SocketStream extends Duplex {
  /** True until the connection is up (or failed). */
  connecting = true;
  /** Bytes received from the peer. */
  bytesRead = 0;
  /** Bytes the module accepted for sending (firmware accounting, see the class doc). */
  bytesWritten = 0;
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
  /** `'IPv4'` (the firmwares' sockets are IPv4). */
  remoteFamily = 'IPv4';
  /** True for a module-side TLS connection. */
  readonly encrypted: boolean;
  /** Which family's driver carries it. */
  readonly family: string;
  /** A number identifying this stream in logs. */
  readonly id = nextId++;
  private conn?: DriverConnection;
  private readonly ready$: Promise<DriverConnection | undefined>;
  private timeoutMs = 0;
  private timer?: NodeJS.Timeout;
  private closedConn = false;

  /** @internal use {@link createConnection} or a server's `'connection'` event. */
  constructor(driver: StreamDriver, open: () => Promise<DriverConnection>, o: { tls?: boolean; sendBuffer?: number; timeout?: number } = {}) {
    super({ allowHalfOpen: false, writableHighWaterMark: o.sendBuffer ?? 8192, decodeStrings: true });
    this.family = driver.family;
    this.encrypted = o.tls ?? false;
    if (o.timeout) this.setTimeout(o.timeout);
    this.ready$ = open().then(
      (c) => {
        if (this.destroyed) {
          void c.close();
          return undefined;
        }
        this.attach(c);
        return c;
      },
      (e) => {
        this.connecting = false;
        if (!this.destroyed) this.destroy(toStreamError(e));
        return undefined;
      },
    );
  }

  private attach(c: DriverConnection): void {
    this.conn = c;
    this.connecting = false;
    this.remoteAddress = c.remoteAddress;
    this.remotePort = c.remotePort;
    this.localAddress = c.localAddress;
    this.localPort = c.localPort;
    this.touch();
    c.start({
      data: (b) => {
        if (this.destroyed) return;
        this.bytesRead += b.length;
        this.touch();
        // read backpressure: the module stops taking bytes until _read asks for more
        if (!this.push(Buffer.from(b.buffer, b.byteOffset, b.length))) c.pause?.();
      },
      end: () => {
        if (this.destroyed) return;
        this.push(null);
      },
      error: (e) => {
        if (!this.destroyed) this.destroy(e);
      },
    });
    this.emit('connect');
    this.emit('ready');
    if (this.encrypted) this.emit('secureConnect');
  }

  /**
   * The driver's counters of the firmware exchanges behind this connection (Luat: `sock_send`
   * calls, SEND_CNFs, most sends in flight, RECV_INDs, ...; see {@link DriverConnection.stats}),
   * for diagnostics; undefined before `'connect'` and for families whose driver keeps none.
   */
  get driverStats(): Readonly<Record<string, number>> | undefined {
    return this.conn?.stats;
  }

  /** `'opening'` while connecting, `'open'`, `'readOnly'` / `'writeOnly'` when one side ended, `'closed'`. */
  get readyState(): 'opening' | 'open' | 'readOnly' | 'writeOnly' | 'closed' {
    if (this.connecting) return 'opening';
    if (this.destroyed) return 'closed';
    if (this.readable && this.writable) return 'open';
    if (this.readable) return 'readOnly';
    if (this.writable) return 'writeOnly';
    return 'closed';
  }

  /** True before `'connect'` (like `net.Socket#pending`). */
  get pending(): boolean {
    return this.connecting;
  }

  /** The local end, as `net.Socket#address()`: `{ address, family, port }` (empty values when the firmware does not tell). */
  address(): { address: string; family: string; port: number } {
    return { address: this.localAddress ?? '', family: 'IPv4', port: this.localPort ?? 0 };
  }

  /**
   * Emit `'timeout'` after `ms` milliseconds without bytes in or out (0 disables), like
   * `net.Socket#setTimeout`: the socket stays open; the listener decides.
   */
  setTimeout(ms: number, callback?: () => void): this {
    if (ms !== 0 && !isTimerMs(ms)) throw new InvalidArgumentError(`setTimeout: ms must be 0 (off) or a positive number of milliseconds (at most ${MAX_TIMER_MS}), got ${String(ms)}`);
    this.timeoutMs = ms;
    if (callback) {
      if (ms === 0) this.off('timeout', callback);
      else this.once('timeout', callback);
    }
    this.touch();
    return this;
  }

  private touch(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.timeoutMs > 0 && !this.destroyed) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.emit('timeout');
      }, this.timeoutMs);
      this.timer.unref?.();
    }
  }

  /** Accepted for `net.Socket` compatibility; the firmwares send without Nagle delay control from Lua. No effect. */
  setNoDelay(_noDelay = true): this {
    return this;
  }

  /**
   * Accepted for `net.Socket` compatibility. Luat: sets SO_KEEPALIVE / TCP_KEEPIDLE with
   * `sock_setopt` where the core has it; other families: no effect (LuatOS sets keepalive only in
   * `socket.config` before connecting, NodeMCU only per server).
   */
  setKeepAlive(enable = false, initialDelayMs = 0): this {
    void this.ready$.then((c) => c?.setKeepAlive?.(enable, Math.round(initialDelayMs / 1000))).catch(() => undefined);
    return this;
  }

  /** No effect (the module's socket keeps no event loop alive); for `net.Socket` compatibility. */
  ref(): this {
    return this;
  }

  /** No effect; for `net.Socket` compatibility. */
  unref(): this {
    return this;
  }

  override _read(): void {
    // bytes are pushed as the module delivers them; after a push past the high-water mark the
    // driver paused taking them from the module: the consumer wants more now
    this.conn?.resume?.();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    void this.send(chunk).then(() => cb(), cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (e?: Error | null) => void): void {
    void this.send(Buffer.concat(chunks.map((c) => c.chunk))).then(() => cb(), cb);
  }

  private async send(b: Buffer): Promise<void> {
    const c = this.conn ?? (await this.ready$);
    if (!c) throw new SocketError('EPIPE', 'write: the connection failed or was destroyed');
    if (this.closedConn) throw new SocketError('EPIPE', 'write after the connection was closed');
    if (b.length === 0) return;
    await c.write(b);
    this.bytesWritten += b.length;
    this.touch();
  }

  override _final(cb: (e?: Error | null) => void): void {
    void (async () => {
      const c = this.conn ?? (await this.ready$);
      this.closedConn = true;
      await c?.close();
      // the firmwares close both directions: nothing more will be read
      if (!this.readableEnded) this.push(null);
    })().then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    clearTimeout(this.timer);
    this.connecting = false;
    this.closedConn = true;
    const c = this.conn;
    if (!c) {
      cb(err);
      return;
    }
    void c.close().then(
      () => cb(err),
      () => cb(err),
    );
  }
}

/**
 * Open a connection for `stream`, waiting for a free module socket when `queue` says so.
 * @internal
 */
export async function openWithQueue(driver: StreamDriver, sockets: ModuleSockets, o: Required<Pick<ConnectionOptions, 'port' | 'host' | 'tls' | 'connectTimeoutMs'>> & ConnectionOptions): Promise<DriverConnection> {
  const q = o.queue === true ? {} : o.queue || undefined;
  const deadline = q ? Date.now() + (q.timeoutMs ?? 30000) : 0;
  for (;;) {
    const gen = sockets.generation;
    try {
      const c = await driver.connect({ host: o.host, port: o.port, tls: o.tls, ca: o.ca, timeoutMs: o.connectTimeoutMs, localPort: o.localPort });
      return sockets.track(c);
    } catch (e) {
      if (!q || !isSocketError(e, 'EMFILE')) throw e;
      const left = deadline - Date.now();
      if (left <= 0) throw new TimeoutError(`no free socket on the module within ${q.timeoutMs ?? 30000} ms (queue timeout)`, { ms: q.timeoutMs ?? 30000, cause: (e as Error).message });
      await sockets.waitRelease(gen, Math.min(left, q.retryMs ?? 500));
    }
  }
}

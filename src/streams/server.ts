/**
 * {@link Server}: a listening socket of the module as a `net.Server`-like EventEmitter, where the
 * firmware can listen (LuatOS `socket.listen` / `socket.accept`, NodeMCU `net.createServer`).
 * Luat's `socketcore` cannot: `listen()` emits an `'error'` with code `UNSUPPORTED`.
 */
import { EventEmitter } from 'node:events';
import { InvalidArgumentError, TetherError } from '../errors.js';
import type { DriverListener, StreamDriver } from './driver.js';
import { toStreamError } from './errors.js';
import type { ModuleSockets } from './limits.js';
import { SocketStream } from './socket.js';

/**
 * A module-side TCP server. Events: `'listening'`, `'connection'` (a {@link SocketStream}, already
 * connected), `'error'` (a TetherError: `UNSUPPORTED` on Luat, `SOCKET` `EMFILE` when no socket is
 * free, `RESET` when the module resets: the listener is gone), `'close'`.
 */
export class Server extends EventEmitter {
  private listener?: DriverListener;
  private closing = false;
  private started = false;
  private readonly open = new Set<SocketStream>();

  /** @internal use {@link createServer}. */
  constructor(
    private readonly driver: StreamDriver,
    private readonly sockets: ModuleSockets,
    connectionListener?: (socket: SocketStream) => void,
  ) {
    super();
    if (connectionListener !== undefined) {
      if (typeof connectionListener !== 'function') throw new InvalidArgumentError('createServer: the connection listener must be a function');
      this.on('connection', connectionListener);
    }
  }

  /** True while listening. */
  get listening(): boolean {
    return this.listener !== undefined && !this.closing;
  }

  /**
   * Listen on `port` of the module (`net.Server#listen(port, [host], [backlog], [callback])`; the
   * host is the module's own address and is ignored). Port 0: NodeMCU picks one (see
   * {@link address}); LuatOS needs a port (it listens on `socket.config`'s local port).
   * @throws InvalidArgumentError for a port outside 0..65535.
   */
  listen(port: number, ...rest: Array<string | number | (() => void) | undefined>): this {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`listen: port must be an integer 0..65535, got ${String(port)}`);
    const cb = rest.find((x): x is () => void => typeof x === 'function');
    const backlog = rest.find((x): x is number => typeof x === 'number');
    if (this.started) throw new InvalidArgumentError('listen: the server is already listening');
    this.started = true;
    if (cb) this.once('listening', cb);
    this.driver
      .listen(
        { port, backlog },
        {
          connection: (c) => {
            const s = new SocketStream(this.driver, () => Promise.resolve(this.sockets.track(c)), { sendBuffer: c.sendBuffer });
            this.open.add(s);
            s.once('close', () => {
              this.open.delete(s);
              this.maybeClosed();
            });
            // 'connection' once the stream is wired (its 'connect' fired on the same tick)
            s.once('connect', () => this.emit('connection', s));
          },
          error: (e) => {
            const l = this.listener;
            this.listener = undefined;
            void l?.close();
            this.emit('error', toStreamError(e));
            this.maybeClosed();
          },
        },
      )
      .then(
        (l) => {
          if (this.closing) {
            void l.close();
            return;
          }
          this.listener = l;
          this.emit('listening');
        },
        (e) => this.emit('error', toStreamError(e)),
      );
    return this;
  }

  /** `{ port, family, address }` while listening (like `net.Server#address()`), else null. */
  address(): { port: number; family: string; address: string } | null {
    return this.listener ? { port: this.listener.port, family: 'IPv4', address: this.listener.address } : null;
  }

  /**
   * Stop accepting; `'close'` follows once every accepted connection closed too (like
   * `net.Server#close`). The callback gets an error when the server was not listening.
   */
  close(callback?: (err?: Error) => void): this {
    if (this.closing || !this.listener) {
      if (callback) process.nextTick(() => callback(new TetherError('CLOSED', 'the server is not running')));
      return this;
    }
    this.closing = true;
    if (callback) this.once('close', () => callback());
    const l = this.listener;
    void l.close().then(() => {
      this.listener = undefined;
      this.maybeClosed();
    });
    return this;
  }

  private maybeClosed(): void {
    if (this.listener === undefined && this.open.size === 0 && (this.closing || this.listenerCount('close') > 0)) {
      if (this.closing) {
        this.closing = false;
        this.emit('close');
      }
    }
  }

  /** No effect; for `net.Server` compatibility. */
  ref(): this {
    return this;
  }
  /** No effect; for `net.Server` compatibility. */
  unref(): this {
    return this;
  }
}

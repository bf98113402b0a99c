import { connect, isIP, type Socket } from 'node:net';
import { InvalidArgumentError, TetherError } from '../errors.js';
import { BaseTransport } from './transport.js';

/** Default connect timeout of {@link TcpTransport.open}: 5000 ms. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

/** Idle time before the first TCP keepalive probe: 10 000 ms. */
const KEEPALIVE_DELAY_MS = 10_000;

/** How long {@link TcpTransport.close} waits for our FIN to be sent before destroying the socket: 1000 ms. */
const CLOSE_GRACE_MS = 1000;

/** Options of {@link TcpTransport.open}. */
export interface TcpOpenOptions {
  /** Give up connecting after this many ms (a positive integer, at most 600 000). Default 5000. */
  connectTimeoutMs?: number;
}

/**
 * A raw TCP byte pipe to a module's UART: ser2net in raw mode (`accepter: tcp,7000`,
 * no telnet/RFC 2217 negotiation), or the port `tether sim` serves.
 *
 * Nagle is off (`setNoDelay(true)`) so small RPC frames leave at once, and TCP
 * keepalive is on (first probe after 10 s idle) so a dead exporter is noticed.
 * When the peer closes the connection, `onClose` receives a `DISCONNECTED` TetherError.
 *
 * Create with {@link TcpTransport.open}; the constructor is internal.
 */
export class TcpTransport extends BaseTransport {
  /** E.g. `tcp://127.0.0.1:7000` (IPv6 hosts in brackets). */
  readonly description: string;
  /** Host as given to {@link TcpTransport.open}. */
  readonly host: string;
  /** TCP port 1..65535. */
  readonly port: number;
  private readonly socket: Socket;
  private lastError?: Error;
  private closing?: Promise<void>;

  private constructor(socket: Socket, host: string, port: number) {
    super();
    this.socket = socket;
    this.host = host;
    this.port = port;
    this.description = tcpDescription(host, port);
    socket.on('data', (chunk: Buffer) => this.emitData(chunk));
    socket.on('error', (err) => {
      this.lastError = err;
    });
    socket.on('close', () => {
      if (this.closing !== undefined) return;
      const why = this.lastError ? `connection lost (${this.lastError.message})` : 'the peer closed the connection';
      this.emitClose(
        new TetherError('DISCONNECTED', `${this.description}: ${why}`, {
          cause: this.lastError,
          context: { host, port },
        }),
      );
    });
  }

  /**
   * Connect to `host:port`.
   *
   * @param host Hostname, IPv4 or IPv6 address (IPv6 without brackets, e.g. `::1`).
   * @param port TCP port, an integer 1..65535.
   * @param opts `connectTimeoutMs`, default 5000 ms.
   * @returns The connected transport; incoming bytes are buffered until `onData` is set.
   * @throws InvalidArgumentError for an empty host, a port outside 1..65535 or a bad timeout.
   * @throws TetherError `TRANSPORT` when the connection is refused, the host is unknown or
   *   unreachable, or no connection was made within `connectTimeoutMs`.
   */
  static async open(host: string, port: number, opts?: TcpOpenOptions): Promise<TcpTransport> {
    if (typeof host !== 'string' || host.trim() === '' || /[\s\0]/.test(host)) {
      throw new InvalidArgumentError(`TCP host must be a non-empty hostname or IP address, got ${JSON.stringify(host)}`);
    }
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InvalidArgumentError(`TCP port must be an integer 1..65535, got ${String(port)}`, { port });
    }
    const timeoutMs = opts?.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) {
      throw new InvalidArgumentError(`connectTimeoutMs must be an integer 1..600000 (ms), got ${String(timeoutMs)}`, { connectTimeoutMs: timeoutMs });
    }
    const where = tcpDescription(host, port);
    const socket = await connectTcpSocket(host, port, timeoutMs, where, 'is ser2net (raw mode) or `tether sim` listening on that port?');
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    return new TcpTransport(socket, host, port);
  }

  /**
   * Write bytes; resolves once they were handed to the kernel. Writes are sent in call order.
   *
   * @throws TetherError `DISCONNECTED` if the transport is closed or the connection broke,
   *   `TRANSPORT` for any other write failure.
   */
  async write(data: Uint8Array): Promise<void> {
    if (!this.isOpen || this.socket.destroyed) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('write() expects a Uint8Array');
    if (data.byteLength === 0) return;
    await writeSocket(this.socket, Buffer.from(data), this.description, () => this.isOpen);
  }

  /**
   * Close the connection: send FIN, then release the socket (after at most 1000 ms).
   * Idempotent; never rejects. `onClose` is called without an error.
   */
  async close(): Promise<void> {
    if (this.closing) return this.closing;
    this.emitClose();
    const s = this.socket;
    this.closing = new Promise<void>((resolve) => {
      if (s.destroyed) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        s.destroy();
        resolve();
      };
      const timer = setTimeout(done, CLOSE_GRACE_MS);
      s.once('close', done);
      s.end(done);
    });
    return this.closing;
  }
}

function tcpDescription(host: string, port: number): string {
  return `tcp://${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}

function connectError(where: string, host: string, port: number, err: NodeJS.ErrnoException, whoListens: string): TetherError {
  let advice: string;
  switch (err.code) {
    case 'ECONNREFUSED':
      advice = `connection refused; ${whoListens}`;
      break;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      advice = `host ${host} not found; check the name or use an IP address`;
      break;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      advice = 'host unreachable; check the network and the address';
      break;
    case 'ETIMEDOUT':
      advice = 'connection timed out; check the host, the port and any firewall';
      break;
    default:
      advice = 'check the host and port';
  }
  return new TetherError('TRANSPORT', `cannot connect to ${where}: ${advice} (${err.code ?? err.message})`, {
    cause: err,
    context: { host, port, reason: err.code },
  });
}

/**
 * Write `buf` to a TCP socket and wait until it was handed to the OS. Shared by the network
 * transports (raw TCP here, RFC 2217 in ./rfc2217.ts).
 * @throws TetherError `DISCONNECTED` when the socket is gone (closed by us, EPIPE, ECONNRESET),
 *   `TRANSPORT` for any other write failure.
 */
export function writeSocket(socket: Socket, buf: Buffer, description: string, isOpen: () => boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.write(buf, (err?: Error | null) => {
      if (!err) return resolve();
      const code = (err as NodeJS.ErrnoException).code;
      const gone = !isOpen() || socket.destroyed || code === 'EPIPE' || code === 'ECONNRESET' || code === 'ERR_STREAM_DESTROYED';
      reject(new TetherError(gone ? 'DISCONNECTED' : 'TRANSPORT', `${description}: write failed: ${err.message}`, { cause: err }));
    });
  });
}

/**
 * Connect a TCP socket to `host:port` within `timeoutMs` (ms). Shared by the network transports
 * (raw TCP here, RFC 2217 in ./rfc2217.ts). `whoListens` is the advice for a refused connection
 * (which server should be listening there).
 * @throws TetherError `TRANSPORT` (refused, unknown host, unreachable, no answer in time), with
 *   `context.reason` the Node error code or `TIMEOUT`.
 */
export function connectTcpSocket(host: string, port: number, timeoutMs: number, where: string, whoListens: string): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => {
      cleanup();
      s.destroy();
      reject(
        new TetherError('TRANSPORT', `cannot connect to ${where}: no answer within ${timeoutMs} ms; check the host, the port and any firewall`, {
          context: { host, port, timeoutMs, reason: 'TIMEOUT' },
        }),
      );
    }, timeoutMs);
    const onError = (err: NodeJS.ErrnoException): void => {
      cleanup();
      s.destroy();
      reject(connectError(where, host, port, err, whoListens));
    };
    const onConnect = (): void => {
      cleanup();
      resolve(s);
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      s.off('error', onError);
      s.off('connect', onConnect);
    };
    s.once('error', onError);
    s.once('connect', onConnect);
  });
}

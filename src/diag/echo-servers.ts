/**
 * Loopback echo services for `tether diag` and the tests: the module connects out
 * through its own network stack (or the simulator's) and must get every byte back.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIP, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { InvalidArgumentError, TetherError } from '../errors.js';

/** Where a service listens. `host` is the bound address (e.g. `127.0.0.1`), `port` 1..65535. */
export interface Endpoint {
  host: string;
  port: number;
}

/** Traffic counters of {@link EchoServers}. */
export interface EchoStats {
  /** Bytes received (and echoed) over plain TCP. */
  tcpBytes: number;
  /** Datagrams received (and echoed) over UDP. */
  udpDatagrams: number;
  /** Plaintext bytes received (and echoed) over TLS. */
  tlsBytes: number;
}

/** Running echo services; see {@link startEchoServers}. */
export interface EchoServers {
  /** TCP echo: every byte is sent back on the same connection; a half-close is answered with a close after the echo. */
  tcp: Endpoint;
  /** UDP echo: each datagram is sent back to its sender unchanged. */
  udp: Endpoint;
  /** TLS echo (only when `tls` options were given): like `tcp`, inside TLS. */
  tls?: Endpoint;
  /** Counters since start. */
  stats(): EchoStats;
  /** Stop all services and destroy open connections so the process can exit. Idempotent; never rejects. */
  close(): Promise<void>;
}

/** Options of {@link startEchoServers}. */
export interface EchoServerOptions {
  /** Address to bind all services to. Default `127.0.0.1`. IPv6 literals (`::1`) are allowed. */
  host?: string;
  /** Also start a TLS echo with this PEM key and certificate (e.g. `fixtures/tls/server.{key,crt}`). */
  tls?: { key: string | Buffer; cert: string | Buffer };
}

function isPem(v: unknown): v is string | Buffer {
  return (typeof v === 'string' && v.length > 0) || (Buffer.isBuffer(v) && v.length > 0);
}

/**
 * Start TCP, UDP and (optionally) TLS echo services on ephemeral ports (listen on 0).
 *
 * @param opts `host` (default `127.0.0.1`), `tls` `{ key, cert }` in PEM.
 * @returns The endpoints, counters and `close()`.
 * @throws InvalidArgumentError for an empty host or a missing/empty TLS key or cert.
 * @throws TetherError `TRANSPORT` when a service cannot listen (address not available,
 *   unusable key/cert); anything already started is stopped first.
 */
export async function startEchoServers(opts?: EchoServerOptions): Promise<EchoServers> {
  const host = opts?.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host.trim() === '') throw new InvalidArgumentError(`echo servers: host must be a non-empty address, got ${JSON.stringify(host)}`);
  if (opts?.tls !== undefined && (opts.tls === null || typeof opts.tls !== 'object' || !isPem(opts.tls.key) || !isPem(opts.tls.cert))) {
    throw new InvalidArgumentError('echo servers: tls needs a non-empty PEM key and cert (string or Buffer)');
  }

  const stats: EchoStats = { tcpBytes: 0, udpDatagrams: 0, tlsBytes: 0 };
  const sockets = new Set<Socket>();
  let stopped = false;
  const track = (s: Socket): void => {
    if (stopped) {
      s.destroy(); // accepted while closing
      return;
    }
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const echo = (s: Socket, count: (n: number) => void): void => {
    track(s);
    if (s.destroyed) return;
    s.on('data', (chunk: Buffer) => {
      count(chunk.length);
      s.write(chunk);
    });
    s.on('end', () => s.end());
  };

  const tcpServer = createServer({ allowHalfOpen: true }, (s) => echo(s, (n) => (stats.tcpBytes += n)));
  let tlsServer: TlsServer | undefined;
  let udp: UdpSocket | undefined;
  let closing: Promise<void> | undefined;

  const closeAll = (): Promise<void> => {
    closing ??= (async () => {
      stopped = true;
      for (const s of sockets) s.destroy();
      await Promise.all([closeServer(tcpServer), tlsServer ? closeServer(tlsServer) : undefined, udp ? closeUdp(udp) : undefined]);
    })();
    return closing;
  };

  try {
    const tcp = await listen(tcpServer, host, 'TCP');
    let tls: Endpoint | undefined;
    if (opts?.tls) {
      try {
        tlsServer = createTlsServer({ key: opts.tls.key, cert: opts.tls.cert, allowHalfOpen: true }, (s) => echo(s, (n) => (stats.tlsBytes += n)));
      } catch (e) {
        throw new TetherError('TRANSPORT', `echo servers: unusable TLS key/cert: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      // Failed handshakes come with a raw socket we must not leak.
      tlsServer.on('tlsClientError', (_err, s) => s.destroy());
      tlsServer.on('connection', (s: Socket) => track(s));
      tls = await listen(tlsServer, host, 'TLS');
    }
    udp = createSocket({ type: isIP(host) === 6 ? 'udp6' : 'udp4' });
    const u = udp;
    u.on('message', (msg, rinfo) => {
      stats.udpDatagrams += 1;
      u.send(msg, rinfo.port, rinfo.address);
    });
    const udpEp = await bindUdp(u, host);
    return {
      tcp,
      udp: udpEp,
      ...(tls ? { tls } : {}),
      stats: () => ({ ...stats }),
      close: closeAll,
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

function listen(server: Server, host: string, what: string): Promise<Endpoint> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new TetherError('TRANSPORT', `echo servers: ${what} cannot listen on ${host}: ${err.code ?? err.message}`, { cause: err, context: { host } }));
    };
    server.once('error', onError);
    server.listen(0, host, () => {
      server.off('error', onError);
      server.on('error', () => undefined);
      const a = server.address() as AddressInfo;
      resolve({ host: a.address, port: a.port });
    });
  });
}

function bindUdp(sock: UdpSocket, host: string): Promise<Endpoint> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new TetherError('TRANSPORT', `echo servers: UDP cannot bind ${host}: ${err.code ?? err.message}`, { cause: err, context: { host } }));
    };
    sock.once('error', onError);
    sock.bind(0, host, () => {
      sock.off('error', onError);
      sock.on('error', () => undefined); // e.g. ICMP unreachable from a vanished sender
      const a = sock.address();
      resolve({ host: a.address, port: a.port });
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}

function closeUdp(sock: UdpSocket): Promise<void> {
  return new Promise((resolve) => {
    try {
      sock.close(() => resolve());
    } catch {
      resolve(); // not bound or already closed
    }
  });
}

/**
 * The one interface behind every family's sockets. A driver (src/streams/drivers/<family>.ts)
 * turns one firmware's socket API (through its RxJS facade and the helpers next to it) into
 * connections that deliver bytes, accept writes, and end in one of three ways: the peer's FIN
 * (`end`), a typed error (`error`), or a local close. {@link SocketStream} and {@link Server}
 * build the `net`-like objects on top of it, the same way for every family.
 */
import type { TetherModule } from '../api/connect.js';

/** What a driver connection reports, each at most once for `end`/`error` (never both). */
export interface ConnectionSink {
  /** Bytes received, in order. */
  data(bytes: Uint8Array): void;
  /** The peer closed its side (TCP FIN): nothing more will arrive. */
  end(): void;
  /** The connection failed (a TetherError with a stable code: `RESET`, `SOCKET`, ...). */
  error(e: Error): void;
}

/** Address facts of a connection (undefined when the firmware does not tell). */
export interface AddressInfo {
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
}

/** One open TCP (or TLS) connection of the module. */
export interface DriverConnection extends AddressInfo {
  /**
   * The module's send buffer for this connection (bytes): the stream's writable high-water mark,
   * so `write()` returns false once this much is waiting for the module's accounting.
   */
  readonly sendBuffer: number;
  /** Start delivering to `sink` (called once, right after connect/accept). */
  start(sink: ConnectionSink): void;
  /**
   * Send `bytes`; resolves once the firmware accepted them by its own accounting (LuatOS: `tx`
   * accepted and TX_OK when the buffer was full; Luat: SEND_CNF; NodeMCU: "sent"), rejects with a
   * TetherError. Called one at a time.
   */
  write(bytes: Uint8Array): Promise<void>;
  /** Close gracefully (FIN) and release the module socket. Idempotent; never rejects. */
  close(): Promise<void>;
  /**
   * Read backpressure: stop taking bytes from the module (Luat: no more `sock_recv`; LuatOS: no
   * more `socket.rx`, with an agent that says hello `rxdrain`) until {@link resume}. Bytes already
   * on their way are still delivered. Idempotent. Drivers whose firmware cannot pause safely leave
   * it out or make it a no-op (NodeMCU; LuatOS with an older agent: see their files).
   */
  pause?(): void;
  /** Take bytes again after {@link pause}. Idempotent. */
  resume?(): void;
  /**
   * Counters of the firmware exchanges behind this connection, for diagnostics (Luat: `sends`,
   * `sendCnfs`, `maxSendsInFlight`, `recvInds`, `recvCalls`, `maxRecvLen`, `shortReads`, `bytesOut`,
   * `bytesIn`, see ConnectionStats in src/streams/drivers/luat-conn.ts). Undefined where a driver keeps none.
   */
  readonly stats?: Readonly<Record<string, number>>;
  /** Keepalive where the firmware has a per-socket switch (Luat `sock_setopt`); otherwise nothing. */
  setKeepAlive?(enable: boolean, initialDelaySeconds: number): Promise<void>;
}

/** Options a driver's connect gets (already checked). */
export interface DriverConnectOptions {
  host: string;
  port: number;
  /** TLS on the module's own stack. */
  tls: boolean;
  /** CA certificate (PEM) the module verifies the server with (TLS). */
  ca?: string;
  /** Time for the module to report the connect outcome (ms). */
  timeoutMs: number;
  /** Local port to bind, when the firmware can (LuatOS, Luat). */
  localPort?: number;
}

/** A listening socket of the module. */
export interface DriverListener {
  /** The port it listens on. */
  readonly port: number;
  /** The address it listens on, as the firmware reports it. */
  readonly address: string;
  /** Stop listening (connections already accepted stay open). Idempotent; never rejects. */
  close(): Promise<void>;
}

/** What a driver's listen reports. */
export interface ListenSink {
  connection(c: DriverConnection): void;
  /** The listener failed (module reset: `RESET`); it is gone. */
  error(e: Error): void;
}

/** A datagram received. */
export interface DriverDatagram {
  data: Uint8Array;
  address: string;
  port: number;
}

/** A UDP socket of the module. */
export interface DriverUdp {
  /** Local port (undefined when the firmware does not tell). */
  readonly localPort?: number;
  /** Send one datagram to `port`/`address` (families with connected UDP only reach the connected peer). */
  send(data: Uint8Array, port: number, address: string): Promise<void>;
  /** Stop and release. Idempotent; never rejects. */
  close(): Promise<void>;
}

/** Per-family socket driver. */
export interface StreamDriver {
  /** `luatos`, `luat` or `nodemcu`. */
  readonly family: string;
  readonly module: TetherModule;
  /** Open a TCP (or TLS) connection from the module. Errors are TetherErrors (see src/streams/errors.ts). */
  connect(o: DriverConnectOptions): Promise<DriverConnection>;
  /** Listen on `port` (0: the firmware picks one). Throws TetherError `UNSUPPORTED` where the firmware cannot. */
  listen(o: { port: number; backlog?: number }, sink: ListenSink): Promise<DriverListener>;
  /**
   * A UDP socket bound to `localPort` (0: any). Families whose UDP is connected (LuatOS, Luat)
   * need `remote` (the one peer they talk to).
   */
  udp(o: { localPort: number; remote?: { port: number; address: string } }, sink: { message(d: DriverDatagram): void; error(e: Error): void }): Promise<DriverUdp>;
  /** True when {@link udp} needs `remote`. */
  readonly udpConnectedOnly: boolean;
}

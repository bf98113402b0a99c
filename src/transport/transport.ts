/**
 * Transport layer: moves bytes, nothing else. No framing, no RxJS.
 *
 * A transport is a full-duplex byte pipe to one module's UART: a serial device
 * (serialport), a raw TCP socket (ser2net "raw" mode / `tether sim`), an RFC 2217
 * telnet serial port (ser2net `telnet(rfc2217)`, src/transport/rfc2217.ts), or an
 * in-memory pair (tests, the in-process simulator). Network ports may be wrapped in a
 * reconnecting transport (src/transport/reconnect.ts).
 */
export interface Transport {
  /** Human-readable description of where the bytes go, e.g. `serial:/dev/ttyUSB0@115200`. */
  readonly description: string;
  /** Write bytes. Resolves once the bytes were handed to the OS / peer. Rejects with a TetherError `TRANSPORT` or `DISCONNECTED`. */
  write(data: Uint8Array): Promise<void>;
  /** Register the single receiver of incoming bytes (chunks arrive in order, of any size). */
  onData(listener: (chunk: Uint8Array) => void): void;
  /** Register the single listener told once when the transport closes; `error` is set if it closed because of a failure. */
  onClose(listener: (error?: Error) => void): void;
  /** Close the transport. Idempotent. */
  close(): Promise<void>;
  /** True until the transport closed. */
  readonly isOpen: boolean;
  /**
   * Optional: transports that reconnect by themselves (`tcp://`, `rfc2217://` through
   * {@link ReconnectingTransport}) register here the single listener told when the connection
   * dropped (`lost`; the transport stays open and retries) and when it is back (`restored`).
   */
  onReconnect?(listener: (event: ReconnectEvent) => void): void;
  /**
   * Optional: change the line speed of the far end (baud), for transports that can
   * (`rfc2217://`: SET-BAUDRATE). Resolves with the speed the port now runs at.
   */
  setBaudRate?(baud: number): Promise<number>;
  /**
   * Optional: the line's rate in baud (8N1, 10 bits a byte) when the bytes cross a UART at a
   * known speed: a serial port (the rate it is set to), an RFC 2217 port (the rate the server
   * confirmed), the simulator's UART (its host-side rate; absent while the agent is on the
   * module's USB port, which has no baud). Absent for raw TCP, where the far end's rate is not
   * known. The link reads it whenever it estimates line time ({@link LinkOptions.baud} in
   * src/link/link.ts), so a `setBaudRate` takes effect at once.
   */
  readonly lineBaud?: number;
}

/** A reconnecting transport's connection went down (`lost`) or came back (`restored`). */
export type ReconnectEvent =
  | { type: 'lost'; /** Why it dropped (a `DISCONNECTED` TetherError). */ error: Error }
  | { type: 'restored'; /** Attempts it took (1 = the first). */ attempts: number; /** Time it was down (ms). */ downMs: number };

/**
 * Base class that does the listener bookkeeping; subclasses call `emitData` / `emitClose`.
 * Data arriving before a listener is set is buffered so nothing is lost.
 */
export abstract class BaseTransport implements Transport {
  abstract readonly description: string;
  private dataListener?: (chunk: Uint8Array) => void;
  private closeListener?: (error?: Error) => void;
  private early: Uint8Array[] = [];
  private closed = false;
  private closeError?: Error;

  get isOpen(): boolean {
    return !this.closed;
  }

  abstract write(data: Uint8Array): Promise<void>;
  abstract close(): Promise<void>;

  onData(listener: (chunk: Uint8Array) => void): void {
    this.dataListener = listener;
    const early = this.early;
    this.early = [];
    for (const c of early) listener(c);
  }

  onClose(listener: (error?: Error) => void): void {
    this.closeListener = listener;
    if (this.closed) listener(this.closeError);
  }

  protected emitData(chunk: Uint8Array): void {
    if (this.closed) return;
    if (this.dataListener) this.dataListener(chunk);
    else this.early.push(chunk);
  }

  protected emitClose(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = error;
    this.closeListener?.(error);
  }
}

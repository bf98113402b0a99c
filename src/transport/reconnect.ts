/**
 * A transport that reopens its connection when it drops: used for network ports
 * (`tcp://`, `rfc2217://`) whose exporter (ser2net, a terminal server) may restart or whose
 * network may blink while the module itself keeps running.
 */
import { InvalidArgumentError, TetherError } from '../errors.js';
import { BaseTransport, type ReconnectEvent, type Transport } from './transport.js';

/** What the factory of a {@link ReconnectingTransport} is told when it reopens the connection. */
export interface ReconnectHint {
  /** Line speed (baud) set through `setBaudRate` since the first open, if any. */
  baudRate?: number;
}

/** Reconnect policy. Every field is optional; the defaults are in {@link DEFAULT_RECONNECT}. */
export interface ReconnectOptions {
  /** Wait before the first attempt after a drop (ms). Default 100. */
  initialDelayMs?: number;
  /** Longest wait between attempts (ms); the wait doubles from `initialDelayMs` up to this. Default 2000. */
  maxDelayMs?: number;
  /** Give up after this many failed attempts in a row. Default 30. */
  maxAttempts?: number;
  /** Give up when the connection has been down this long (ms). Default 30 000. */
  maxDownMs?: number;
}

/** Defaults of {@link ReconnectOptions}: 100 ms first wait, doubling to 2000 ms, at most 30 attempts or 30 000 ms down. */
export const DEFAULT_RECONNECT: Required<ReconnectOptions> = { initialDelayMs: 100, maxDelayMs: 2000, maxAttempts: 30, maxDownMs: 30_000 };

/** Check a reconnect policy; throws InvalidArgumentError naming the bad field. */
export function checkReconnectOptions(o: ReconnectOptions): Required<ReconnectOptions> {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError(`reconnect options must be an object, got ${String(o)}`);
  const out = { ...DEFAULT_RECONNECT };
  for (const k of Object.keys(DEFAULT_RECONNECT) as Array<keyof ReconnectOptions>) {
    const v = o[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < (k === 'maxAttempts' ? 1 : 0) || v > 3_600_000) {
      throw new InvalidArgumentError(`reconnect.${k} must be an integer ${k === 'maxAttempts' ? 1 : 0}..3600000, got ${String(v)}`, { [k]: v });
    }
    out[k] = v;
  }
  if (out.maxDelayMs < out.initialDelayMs) throw new InvalidArgumentError(`reconnect.maxDelayMs (${out.maxDelayMs}) is below initialDelayMs (${out.initialDelayMs})`);
  return out;
}

/**
 * Wraps a connection factory: it opens the first connection (a failure there is thrown at
 * once, never retried), and when that connection drops it reconnects with backoff:
 * waits `initialDelayMs`, doubling up to `maxDelayMs`, each wait jittered by ±25%.
 *
 * While it is down the wrapper stays open (`isOpen` true) and `write()` rejects with
 * `DISCONNECTED`; the {@link onReconnect} listener hears `lost` at the drop and `restored`
 * once a new connection is up. The bytes of the new connection go to the same `onData`
 * listener. Bytes in flight when the connection dropped are lost: the layers above treat
 * a reconnect as a possible module reset (see `RpcClient`).
 *
 * When `maxAttempts` attempts in a row failed or the port was down for `maxDownMs`, it
 * closes with a TetherError `DISCONNECTED` whose `context.reason` is `RECONNECT_FAILED`
 * (with `attempts` and `downMs`), and its `cause` is the last attempt's error.
 */
export class ReconnectingTransport<T extends Transport = Transport> extends BaseTransport {
  readonly description: string;
  private inner?: T;
  private reconnectListener?: (event: ReconnectEvent) => void;
  private readonly policy: Required<ReconnectOptions>;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private reconnects_ = 0;
  /** Line speed set through {@link setBaudRate}; handed to the factory for every reconnect. */
  private baud?: number;

  private constructor(
    private readonly factory: (hint: ReconnectHint) => Promise<T>,
    first: T,
    policy: Required<ReconnectOptions>,
  ) {
    super();
    this.description = first.description;
    this.policy = policy;
    this.adopt(first);
  }

  /**
   * Open the first connection with `factory` and return the wrapper.
   * @param factory opens one connection (called again for every reconnect attempt, with the
   *   baud last set through {@link setBaudRate} so a reopened port runs at the same speed).
   * @param opts the policy, defaults in {@link DEFAULT_RECONNECT}.
   * @throws InvalidArgumentError for a bad policy; whatever `factory` throws for the first connection.
   */
  static async open<T extends Transport>(factory: (hint: ReconnectHint) => Promise<T>, opts: ReconnectOptions = {}): Promise<ReconnectingTransport<T>> {
    const policy = checkReconnectOptions(opts);
    const first = await factory({});
    return new ReconnectingTransport(factory, first, policy);
  }

  /** The connection in use, or undefined while reconnecting. */
  get current(): T | undefined {
    return this.inner;
  }

  /**
   * {@link Transport.lineBaud} of the connection in use; while reconnecting (nothing goes out
   * then), the rate last set through {@link setBaudRate}, if any.
   */
  get lineBaud(): number | undefined {
    return this.inner?.lineBaud ?? this.baud;
  }

  /** True while a connection is up. */
  get connected(): boolean {
    return this.inner !== undefined;
  }

  /** How many times the connection was restored. */
  get reconnects(): number {
    return this.reconnects_;
  }

  /** Register the single listener of `lost` / `restored` events. */
  onReconnect(listener: (event: ReconnectEvent) => void): void {
    this.reconnectListener = listener;
  }

  private adopt(t: T): void {
    this.inner = t;
    t.onData((c) => {
      if (this.inner === t) this.emitData(c);
    });
    t.onClose((err) => {
      if (this.inner !== t || this.stopped) return;
      this.inner = undefined;
      const error = err ?? new TetherError('DISCONNECTED', `${this.description}: connection closed`);
      this.reconnectListener?.({ type: 'lost', error });
      this.retry(Date.now(), 0, this.policy.initialDelayMs, error);
    });
  }

  private retry(downSince: number, attempts: number, delay: number, lastError: Error): void {
    if (this.stopped) return;
    const downMs = Date.now() - downSince;
    if (attempts >= this.policy.maxAttempts || downMs >= this.policy.maxDownMs) {
      void this.giveUp(attempts, downMs, lastError);
      return;
    }
    const wait = Math.min(delay * (0.75 + Math.random() * 0.5), Math.max(0, this.policy.maxDownMs - downMs));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      this.factory(this.baud === undefined ? {} : { baudRate: this.baud }).then(
        (t) => {
          if (this.stopped) {
            void t.close();
            return;
          }
          this.reconnects_++;
          this.adopt(t);
          this.reconnectListener?.({ type: 'restored', attempts: attempts + 1, downMs: Date.now() - downSince });
        },
        (e: unknown) => this.retry(downSince, attempts + 1, Math.min(this.policy.maxDelayMs, Math.max(1, delay) * 2), e instanceof Error ? e : new Error(String(e))),
      );
    }, wait);
  }

  private async giveUp(attempts: number, downMs: number, lastError: Error): Promise<void> {
    const err = new TetherError('DISCONNECTED', `${this.description}: connection lost and not restored after ${attempts} attempts in ${Math.round(downMs)} ms (${lastError.message})`, {
      cause: lastError,
      context: { reason: 'RECONNECT_FAILED', attempts, downMs: Math.round(downMs) },
    });
    this.stopped = true;
    this.emitClose(err);
  }

  /**
   * Change the far end's line speed (when the connection supports it, e.g. `rfc2217://`) and
   * keep it for later reconnects.
   * @returns the baud the port now runs at.
   * @throws TetherError `UNSUPPORTED` if the connection cannot set its speed (raw `tcp://`:
   *   set it on the exporter instead), `DISCONNECTED` while reconnecting, and what the
   *   connection's own `setBaudRate` throws (InvalidArgumentError for a bad baud).
   */
  async setBaudRate(baud: number): Promise<number> {
    const t = this.inner;
    if (this.stopped) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    if (!t) throw new TetherError('DISCONNECTED', `${this.description}: reconnecting`);
    if (!t.setBaudRate) throw new TetherError('UNSUPPORTED', `${this.description} cannot set the remote baud rate (raw TCP: configure it on the exporter, or use rfc2217://)`);
    const v = await t.setBaudRate(baud);
    this.baud = baud;
    return v;
  }

  /**
   * Write to the current connection.
   * @throws TetherError `DISCONNECTED` while reconnecting or after close; as the inner transport otherwise.
   */
  async write(data: Uint8Array): Promise<void> {
    if (this.stopped) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    const t = this.inner;
    if (!t) throw new TetherError('DISCONNECTED', `${this.description}: reconnecting`);
    return t.write(data);
  }

  /** Stop reconnecting and close the current connection. Idempotent; never rejects. `onClose` gets no error. */
  async close(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      this.emitClose();
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const t = this.inner;
    this.inner = undefined;
    await t?.close();
  }
}

/**
 * A byte pipe that runs at a UART's speed: bytes reach the peer no faster than
 * `baud / bitsPerByte` bytes per second (8N1: 10 bits per byte, so 115200 baud
 * carries 11 520 bytes/s), in both directions independently (full duplex).
 *
 * Each direction is a "line" with a bounded transmit buffer in front of it,
 * like a real UART driver: `write()` resolves once all its bytes are in that
 * buffer (handed to the line), so a writer that awaits its writes is held back
 * to the line rate; delivery to the peer is spaced by bytes × bitsPerByte / baud
 * seconds. Node timers fire with about 1 ms granularity, so each timer tick
 * delivers, in one chunk, every byte whose last bit would have arrived by then:
 * the schedule is computed from the start of the current busy period, so the
 * average rate is exact however late individual ticks fire, and a byte is
 * never delivered before its line time.
 *
 * Composes with the fault pipe (src/transport/faulty.ts): e.g.
 * `const [h, d, pace] = createPacedPair({ baud: 115200 }); sim.wire.attach(faults.wrapDeviceSide(d));`
 * puts faults on top of pacing while keeping the host's backpressure.
 */
import { TetherError } from '../errors.js';
import { BaseTransport, type Transport } from './transport.js';

/** Options of a paced pipe. */
export interface PaceOptions {
  /** Line speed in baud (bits per second), > 0. */
  baud: number;
  /** Bits on the line per byte: 10 for 8N1 (start + 8 data + stop). @default 10 */
  bitsPerByte?: number;
  /**
   * Transmit buffer per direction (bytes): a `write()` resolves once everything written before
   * it and itself fits in this many bytes not yet delivered. @default 4096 (a Linux tty's buffer)
   */
  txBuffer?: number;
  /** Name used in the transports' descriptions. @default 'paced' */
  name?: string;
}

/** Counters of one direction. */
export interface PacedLineStats {
  /** Bytes delivered to the peer. */
  bytes: number;
  /** Bytes accepted by `write` (delivered or still queued). */
  accepted: number;
  /** Largest number of bytes queued at once (bytes). */
  maxQueued: number;
  /** Timer ticks that delivered bytes. */
  ticks: number;
  /** Time the line was busy sending (ms, sum of busy periods). */
  busyMs: number;
}

/** One direction of a paced pipe. */
export class PacedLine {
  readonly stats: PacedLineStats = { bytes: 0, accepted: 0, maxQueued: 0, ticks: 0, busyMs: 0 };
  /** Bytes per millisecond. */
  private readonly rate: number;
  private readonly txBuffer: number;
  private queue: Uint8Array[] = [];
  private headOff = 0;
  private queued = 0;
  private busyStart = 0; // performance.now() at the start of the current busy period
  private sentInBusy = 0; // bytes delivered in the current busy period
  private timer?: NodeJS.Timeout;
  private enqueuedTotal = 0;
  private deliveredTotal = 0;
  private waiters: Array<{ mark: number; resolve(): void; reject(e: Error): void }> = [];
  private closed = false;

  constructor(
    opts: PaceOptions,
    private readonly deliver: (chunk: Uint8Array) => void,
  ) {
    const bits = opts.bitsPerByte ?? 10;
    if (!(opts.baud > 0) || !Number.isFinite(opts.baud)) throw new RangeError(`baud must be a positive number, got ${String(opts.baud)}`);
    if (!(bits > 0)) throw new RangeError(`bitsPerByte must be positive, got ${String(bits)}`);
    this.rate = opts.baud / bits / 1000;
    this.txBuffer = Math.max(1, opts.txBuffer ?? 4096);
  }

  /** Bytes per second this line carries. */
  get bytesPerSecond(): number {
    return this.rate * 1000;
  }

  /** Bytes accepted and not yet delivered. */
  get pending(): number {
    return this.queued;
  }

  /** Line time of `bytes` bytes (ms). */
  lineTimeMs(bytes: number): number {
    return bytes / this.rate;
  }

  /** Queue `data` for the line. Resolves when it is in the transmit buffer (see {@link PaceOptions.txBuffer}). */
  send(data: Uint8Array): Promise<void> {
    if (this.closed) return Promise.reject(new TetherError('DISCONNECTED', 'paced line closed'));
    if (data.length === 0) return Promise.resolve();
    this.queue.push(Uint8Array.from(data));
    this.queued += data.length;
    this.enqueuedTotal += data.length;
    this.stats.accepted += data.length;
    if (this.queued > this.stats.maxQueued) this.stats.maxQueued = this.queued;
    if (!this.timer) {
      this.busyStart = performance.now();
      this.sentInBusy = 0;
      this.schedule();
    }
    const mark = this.enqueuedTotal;
    if (mark - this.deliveredTotal <= this.txBuffer) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ mark, resolve, reject }));
  }

  private schedule(): void {
    const nextAt = this.busyStart + (this.sentInBusy + 1) / this.rate;
    this.timer = setTimeout(() => this.tick(), Math.max(0, nextAt - performance.now()));
  }

  private tick(): void {
    this.timer = undefined;
    if (this.closed) return;
    const now = performance.now();
    const due = Math.floor((now - this.busyStart) * this.rate) - this.sentInBusy;
    const n = Math.min(due, this.queued);
    if (n > 0) {
      const chunk = this.take(n);
      this.sentInBusy += n;
      this.deliveredTotal += n;
      this.stats.bytes += n;
      this.stats.ticks++;
      while (this.waiters.length && this.waiters[0].mark - this.deliveredTotal <= this.txBuffer) this.waiters.shift()!.resolve();
      this.deliver(chunk);
    }
    if (this.closed) return;
    if (this.queued > 0) this.schedule();
    else this.stats.busyMs += this.sentInBusy / this.rate;
  }

  private take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      const head = this.queue[0];
      const avail = head.length - this.headOff;
      const k = Math.min(avail, n - o);
      out.set(head.subarray(this.headOff, this.headOff + k), o);
      o += k;
      this.headOff += k;
      if (this.headOff === head.length) {
        this.queue.shift();
        this.headOff = 0;
      }
    }
    this.queued -= n;
    return out;
  }

  /** Stop: bytes still queued are lost, waiting writers fail with `DISCONNECTED`. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.queued = 0;
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) x.reject(new TetherError('DISCONNECTED', 'paced line closed'));
  }
}

/** Both directions of a paced pipe. */
export class PacedLink {
  readonly baud: number;
  readonly toDevice: PacedLine;
  readonly toHost: PacedLine;
  constructor(opts: PaceOptions, toDevice: (c: Uint8Array) => void, toHost: (c: Uint8Array) => void) {
    this.baud = opts.baud;
    this.toDevice = new PacedLine(opts, toDevice);
    this.toHost = new PacedLine(opts, toHost);
  }

  /** Counters of both directions. */
  get stats(): { toDevice: PacedLineStats; toHost: PacedLineStats } {
    return { toDevice: this.toDevice.stats, toHost: this.toHost.stats };
  }

  /** Line time of `bytes` bytes at this speed (ms). */
  lineTimeMs(bytes: number): number {
    return this.toDevice.lineTimeMs(bytes);
  }

  /** Stop both lines. */
  close(): void {
    this.toDevice.close();
    this.toHost.close();
  }
}

/** One end of a {@link createPacedPair} pair. */
class PacedEnd extends BaseTransport {
  /** @internal */ peer?: PacedEnd;
  /** @internal */ line!: PacedLine;
  /** @internal */ link!: PacedLink;
  constructor(readonly description: string) {
    super();
  }

  write(data: Uint8Array): Promise<void> {
    if (!this.isOpen) return Promise.reject(new TetherError('DISCONNECTED', `${this.description} is closed`));
    return this.line.send(data);
  }

  /** @internal */ deliver(chunk: Uint8Array): void {
    this.emitData(chunk);
  }

  async close(): Promise<void> {
    if (!this.isOpen) return;
    this.emitClose();
    this.link.close();
    const peer = this.peer;
    setImmediate(() => peer?.emitClose(new TetherError('DISCONNECTED', `${peer.description}: peer closed`)));
  }
}

/**
 * An in-memory pair running at `opts.baud`: `[hostEnd, deviceEnd, link]`.
 * Attach `deviceEnd` to a simulated module (`sim.wire.attach(deviceEnd)`, optionally through
 * a fault wrapper); give `hostEnd` to the host.
 */
export function createPacedPair(opts: PaceOptions): [Transport, Transport, PacedLink] {
  const name = opts.name ?? 'paced';
  const h = new PacedEnd(`${name}:host@${opts.baud}`);
  const d = new PacedEnd(`${name}:device@${opts.baud}`);
  const link = new PacedLink(
    opts,
    (c) => d.deliver(c),
    (c) => h.deliver(c),
  );
  h.peer = d;
  d.peer = h;
  h.line = link.toDevice;
  d.line = link.toHost;
  h.link = link;
  d.link = link;
  return [h, d, link];
}

/**
 * Relay between two existing transports at `opts.baud`: bytes arriving on `hostSide` are paced
 * and written to `deviceSide`, and the reverse. When one closes, the other is closed.
 * (No backpressure through the relay: prefer {@link createPacedPair} where a writer should wait.)
 */
export function insertPacing(hostSide: Transport, deviceSide: Transport, opts: PaceOptions): PacedLink {
  const link = new PacedLink(
    opts,
    (c) => {
      if (deviceSide.isOpen) deviceSide.write(c).catch(() => {});
    },
    (c) => {
      if (hostSide.isOpen) hostSide.write(c).catch(() => {});
    },
  );
  hostSide.onData((c) => void link.toDevice.send(c).catch(() => {}));
  deviceSide.onData((c) => void link.toHost.send(c).catch(() => {}));
  hostSide.onClose(() => {
    link.close();
    void deviceSide.close();
  });
  deviceSide.onClose(() => {
    link.close();
    void hostSide.close();
  });
  return link;
}

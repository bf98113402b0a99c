/**
 * The simulated module's RPC UART as seen from outside: every endpoint
 * (in-process pair, TCP, pty) attached to it shares the one wire.
 * Bytes from the host go into the module's RX buffer, which has a fixed size
 * and drops what overflows, like the real UART driver. Bytes the module writes
 * go to every attached endpoint.
 *
 * Pacing: the wire is a serial line. A byte costs (1 start + data + parity + stop) bits at
 * the sender's baud (`hostLine` for host → module, `moduleLine` for module → host), and it
 * reaches the other side only when its last bit has, never earlier. Bytes travel in slices
 * of about {@link SLICE_MS} ms of line time (a timer per slice), so a long write reaches the
 * module's RX buffer piece by piece as on a real line. When the two sides' settings differ
 * (baud by more than {@link BAUD_TOLERANCE}, data bits or parity), every byte arrives
 * garbled (see {@link garble}). `paced = false` turns pacing off (a USB CDC port has no baud).
 */
import type { Transport } from '../transport/transport.js';
import { performance } from 'node:perf_hooks';

/** Statistics of the wire (bytes). */
export interface UartStats {
  rxBytes: number;
  txBytes: number;
  /** Bytes dropped because the RX buffer was full (or the UART was not set up). */
  rxDropped: number;
  /** Bytes that arrived garbled because the two sides' line settings differ (both directions). */
  garbled: number;
  /** Module bytes lost in its TX FIFO when its driver reset the FIFO ({@link UartWire.resetTxFifo}). */
  txDropped: number;
}

/** Line settings of one side of a UART (what `uart.setup` sets). */
export interface UartLine {
  /** Bits per second. */
  baud: number;
  /** Data bits per character (5..9). @default 8 */
  dataBits: number;
  /** A parity bit is sent. @default false */
  parity: boolean;
  /** Stop bits (1, 1.5, 2). @default 1 */
  stopBits: number;
}

/** The line every family's firmware sets up at boot: 115200 8N1. */
export const DEFAULT_BAUD = 115200;

/** A fresh 8N1 line at `baud` (bits per second). @param baud @default 115200 */
export function line8N1(baud = DEFAULT_BAUD): UartLine {
  return { baud, dataBits: 8, parity: false, stopBits: 1 };
}

/** Bits one character costs on the line: 1 start + data + parity + stop. */
export function lineCharBits(l: UartLine): number {
  return 1 + l.dataBits + (l.parity ? 1 : 0) + l.stopBits;
}

/** Milliseconds one character occupies the line. */
export function lineCharMs(l: UartLine): number {
  return (lineCharBits(l) * 1000) / (l.baud > 0 ? l.baud : DEFAULT_BAUD);
}

/**
 * Relative baud difference a UART receiver still samples correctly (±3 %: the middle-of-bit
 * sampling of a 10-bit character drifts half a bit at 5 %, and both ends have a tolerance).
 */
export const BAUD_TOLERANCE = 0.03;

/** True when a receiver at `rx` reads what a sender at `tx` sends. */
export function linesAgree(tx: UartLine, rx: UartLine): boolean {
  return Math.abs(tx.baud - rx.baud) <= BAUD_TOLERANCE * rx.baud && tx.dataBits === rx.dataBits && tx.parity === rx.parity;
}

/**
 * What a receiver at the wrong baud makes of a byte: a deterministic other byte value (never the
 * byte sent). A real line also loses or adds characters (framing errors, a start bit found in the
 * middle of a character); the simulator keeps the count and only changes every value.
 */
export function garble(b: number): number {
  return (b ^ 0xa5) & 0xff;
}

/** Line time carried per timer (ms): at 115200 8N1 about 23 bytes, at 2000000 about 400. */
export const SLICE_MS = 2;

interface Slice {
  data: Buffer;
  /** Queue time at which its first bit goes on the line (`due` less its bytes' line time). */
  start: number;
  /** performance.now() at which its last byte is through (before `lag`). */
  due: number;
  /** Bytes one delivery may carry at this slice's rate (about SLICE_MS of line time). */
  per: number;
  /**
   * The sender's line settings these bytes go out with: its settings when it wrote them, or the
   * new ones when it changed them before the slice was due (bytes still in its TX FIFO go out at
   * the new rate, as a UART does when its divisor changes).
   */
  line: UartLine;
  /**
   * performance.now() at which its last byte is through as planned when it was written (`due` with
   * the lag of that moment): a stall of the simulator after that delays its delivery, but the
   * module's timers stall with it, so a change of settings is judged against this time.
   */
  at: number;
}

/** Lateness (ms) of a timer that is jitter, not the simulator falling behind the line. */
const LAG_TOLERANCE_MS = 4;

/** One direction of the line: slices in flight and the time the line is free again. */
class Direction {
  queue: Slice[] = [];
  /** When the line is free again, in queue time (add `lag` for performance.now()). */
  private end = 0;
  /**
   * Milliseconds the line has fallen behind real time because the simulator lagged (a slow
   * callback, a busy host): every later byte moves by it, so the line never carries bytes faster
   * than its baud, even after a stall.
   */
  private lag = 0;
  /**
   * performance.now() at which the last byte would be through had the simulator never lagged:
   * the firmware's own timeline (its UART keeps sending while Node is busy elsewhere).
   */
  idealEnd = 0;
  private timer?: NodeJS.Timeout;
  private immediate?: NodeJS.Immediate;
  constructor(private readonly deliver: (data: Buffer, line: UartLine) => void) {}

  send(data: Buffer, l: UartLine): void {
    const now = performance.now();
    const cm = lineCharMs(l);
    const per = Math.max(1, Math.floor(SLICE_MS / cm));
    let t = Math.max(now - this.lag, this.end);
    for (let off = 0; off < data.length; off += per) {
      const part = data.subarray(off, off + per);
      const start = t;
      t += part.length * cm;
      this.queue.push({ data: part, start, due: t, per, line: l, at: t + this.lag });
      this.inFlight += part.length;
    }
    this.end = t;
    this.idealEnd = Math.max(now, this.idealEnd) + data.length * cm;
    if (this.timer === undefined && this.immediate === undefined) this.pump();
  }

  /**
   * Deliver the slice that is due, one per turn of Node's event loop: when the simulator lags
   * behind the line (a slow callback, a busy host), the due slices still arrive one by one with
   * the receiver's tasks in between, as they would on the line, not as one lump that overflows
   * a buffer the real module would have drained. Later than due is allowed, earlier never.
   */
  private pump = (): void => {
    this.timer = undefined;
    this.immediate = undefined;
    const now = performance.now();
    if (this.queue.length > 0 && this.queue[0].due + this.lag <= now) {
      const late = now - (this.queue[0].due + this.lag);
      if (late > LAG_TOLERANCE_MS) this.lag += late;
      // small writes (a byte of echo each) that are all due go as one delivery, up to a slice
      const first = this.queue.shift()!;
      const parts = [first.data];
      let n = first.data.length;
      let due = first.due;
      while (this.queue.length > 0 && this.queue[0].due + this.lag <= now && n + this.queue[0].data.length <= first.per && this.queue[0].line === first.line) {
        const next = this.queue.shift()!;
        parts.push(next.data);
        n += next.data.length;
        due = next.due;
      }
      this.inFlight -= n;
      this.prevDue = this.lastDue;
      this.lastStart = first.start;
      this.lastDue = due;
      this.deliver(parts.length === 1 ? first.data : Buffer.concat(parts, n), first.line);
    }
    if (this.queue.length === 0 || this.timer !== undefined || this.immediate !== undefined) return;
    const wait = this.queue[0].due + this.lag - performance.now();
    if (wait <= 0) this.immediate = setImmediate(this.pump);
    else this.timer = setTimeout(this.pump, Math.max(1, Math.ceil(wait)));
  };

  /** Bytes still on the line. */
  inFlight = 0;
  /** Queue time the bytes of the latest delivery started on the line, and their last bit ended it. */
  private lastStart = -Infinity;
  private lastDue = -Infinity;
  /** {@link lastDue} of the delivery before the latest. */
  private prevDue = -Infinity;

  /**
   * True when the line was quiet for at least `ms` (line time) before the bytes delivered last
   * began: they start a new burst (or are the first).
   */
  quietBefore(ms: number): boolean {
    return this.lastStart - this.prevDue >= ms - 1e-9;
  }

  /**
   * True when the line stays quiet for at least `ms` (line time) after the bytes delivered last:
   * nothing is queued, or what is queued starts that much later (a gap the sender left).
   */
  quietAfter(ms: number): boolean {
    return this.queue.length === 0 || this.queue[0].start - this.lastDue >= ms - 1e-9;
  }

  /**
   * The sender changed its line settings: the slices not through yet as planned when they were
   * written go out with `l` (a stall of the simulator that made their delivery late does not make
   * bytes that were through before the change take the new settings).
   */
  retag(l: UartLine): void {
    const now = performance.now();
    for (const sl of this.queue) if (sl.at > now) sl.line = l;
  }

  /**
   * Drop the slices not through as planned by `after` (performance.now() time): a TX FIFO reset.
   * A slice partly through at `after` goes too (its bytes would leave cut). @returns bytes dropped
   */
  dropAfter(after: number): number {
    let n = 0;
    while (this.queue.length > 0 && this.queue[this.queue.length - 1].at > after) {
      const sl = this.queue.pop()!;
      n += sl.data.length;
    }
    this.inFlight -= n;
    if (n > 0) {
      this.end = this.queue.length > 0 ? this.queue[this.queue.length - 1].due : Math.min(this.end, after - this.lag);
      this.idealEnd = Math.min(this.idealEnd, after);
    }
    return n;
  }

  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    this.queue = [];
    this.inFlight = 0;
    this.end = 0;
    this.lag = 0;
    this.idealEnd = 0;
    this.lastStart = this.lastDue = this.prevDue = -Infinity;
  }

  /** performance.now() at which the last queued byte is through. */
  get freeAt(): number {
    return this.end + this.lag;
  }
}

export class UartWire {
  private endpoints = new Set<Transport>();
  private rx: Buffer[] = [];
  private rxLen = 0;
  /** RX buffer size in bytes (set by the emulated `uart.setup`). 0 = the UART is not set up: bytes are discarded. */
  rxBufferSize = 0;
  /** Called when bytes entered the RX buffer (the emulated driver schedules its receive event). */
  onReceive?: (overflowed: boolean) => void;
  readonly stats: UartStats = { rxBytes: 0, txBytes: 0, rxDropped: 0, garbled: 0, txDropped: 0 };
  /** While false (module booting / resetting), incoming bytes are discarded. */
  listening = false;
  private hostLine_: UartLine = line8N1();
  private moduleLine_: UartLine = line8N1();
  /**
   * The host's serial port settings (the sender of host → module bytes). A change applies to the
   * host's bytes not through yet. @default 115200 8N1
   */
  get hostLine(): UartLine {
    return this.hostLine_;
  }
  set hostLine(l: UartLine) {
    this.hostLine_ = l;
    this.rxLine.retag(l);
  }
  /**
   * The module's UART settings (set by the emulated `uart.setup`; the firmware's boot default at
   * power-on). A change applies to the module's bytes not through yet (its TX FIFO). @default 115200 8N1
   */
  get moduleLine(): UartLine {
    return this.moduleLine_;
  }
  set moduleLine(l: UartLine) {
    this.moduleLine_ = l;
    this.txLine.retag(l);
  }
  /** Pace bytes at the baud (false: a USB port, bytes move as fast as the transport carries them). @default true */
  paced = true;
  private readonly rxLine = new Direction((d, l) => this.arrive(d, l));
  private readonly txLine = new Direction((d, l) => this.emit(d, l));

  /** Attach an endpoint (its device side): its incoming bytes are the host's TX. */
  attach(t: Transport): void {
    this.endpoints.add(t);
    t.onData((chunk) => this.fromHost(chunk));
    t.onClose(() => this.endpoints.delete(t));
  }

  /** Detach every endpoint and drop what is on the line (power off). */
  detachAll(): void {
    this.endpoints.clear();
    this.rxLine.clear();
    this.txLine.clear();
  }

  /** Bytes arriving from the host side: on the line for their time at `hostLine`, then into the RX buffer. */
  fromHost(chunk: Uint8Array): void {
    this.stats.rxBytes += chunk.length;
    const data = Buffer.from(chunk);
    if (!this.paced) this.arrive(data);
    else this.rxLine.send(data, this.hostLine);
  }

  /** Bytes whose last bit reached the module's UART. */
  private arrive(chunk: Buffer, sent: UartLine = this.hostLine): void {
    if (!this.listening || this.rxBufferSize <= 0) {
      this.stats.rxDropped += chunk.length;
      return;
    }
    let data = chunk;
    if (this.paced && !linesAgree(sent, this.moduleLine)) {
      data = Buffer.from(chunk.map(garble));
      this.stats.garbled += data.length;
    }
    let overflow = false;
    const room = this.rxBufferSize - this.rxLen;
    if (data.length > room) {
      this.stats.rxDropped += data.length - room;
      data = data.subarray(0, Math.max(0, room));
      overflow = true;
    }
    if (data.length > 0) {
      this.rx.push(data);
      this.rxLen += data.length;
    }
    this.onReceive?.(overflow);
  }

  /** Host bytes still on the line towards the module (written, not through yet). */
  get rxInFlight(): number {
    return this.rxLine.inFlight;
  }

  /**
   * True when the line towards the module was quiet for at least `ms` (line time) before the host
   * bytes that arrived last: they began a new burst. An unpaced line has no gaps to measure (true).
   */
  rxQuietBefore(ms: number): boolean {
    return !this.paced || this.rxLine.quietBefore(ms);
  }

  /**
   * True when the line towards the module stays quiet for at least `ms` (line time) after the
   * host bytes that arrived last: the burst they end is over, even if the host has already written
   * the next one (it starts after a gap). An RX idle timeout of `ms` fires for them.
   */
  rxQuietAfter(ms: number): boolean {
    return !this.paced || this.rxLine.quietAfter(ms);
  }

  /** Module bytes still on the line towards the host (0: everything it wrote was delivered). */
  get txInFlight(): number {
    return this.txLine.inFlight;
  }

  /** performance.now() at which the module's TX line is free (its last written byte is out). */
  get txFreeAt(): number {
    return this.paced ? this.txLine.freeAt : 0;
  }

  /**
   * {@link txFreeAt} on the firmware's own timeline: the time the module's UART would have its
   * last written byte out had the simulator never fallen behind (a busy host delays the delivery
   * of the bytes, {@link txFreeAt}, but a real UART goes on sending meanwhile). A blocking
   * `uart.write` holds the VM by this time, so that the simulator's own stalls are not charged to
   * the agent as holds the module would not have.
   */
  get txIdealFreeAt(): number {
    return this.paced ? this.txLine.idealEnd : 0;
  }

  /** Bytes waiting in the RX buffer. */
  get buffered(): number {
    return this.rxLen;
  }

  /** Take up to `max` bytes from the RX buffer (the emulated `uart.read`). */
  read(max: number): Buffer {
    if (this.rxLen === 0 || max <= 0) return Buffer.alloc(0);
    const all = this.rx.length === 1 ? this.rx[0] : Buffer.concat(this.rx);
    const out = all.subarray(0, max);
    const rest = all.subarray(out.length);
    this.rx = rest.length ? [rest] : [];
    this.rxLen = rest.length;
    return Buffer.from(out);
  }

  /**
   * Drop what the module has not received yet: the RX buffer and the bytes on the line towards it
   * (the module resets or closes its UART). What the module already wrote keeps going out (a
   * crashing firmware's last words reach the host); {@link clearTx} drops that too.
   */
  clear(): void {
    this.rx = [];
    this.rxLen = 0;
    this.rxLine.clear();
  }

  /** Drop the module's bytes still on the line (RESET pulled: the TX FIFO is cleared). */
  clearTx(): void {
    this.txLine.clear();
  }

  /**
   * The module's UART driver resets its TX FIFO at `at` (performance.now() time; default now):
   * the module's bytes not through the line by then are lost (NodeMCU's `uart.setup`, which
   * resets both FIFOs). Counted in `stats.txDropped`. @returns bytes dropped
   */
  resetTxFifo(at = performance.now()): number {
    const n = this.txLine.dropAfter(at);
    this.stats.txDropped += n;
    return n;
  }

  /** Bytes the module writes: on the line for their time at `moduleLine`, then to every endpoint. */
  toHost(data: Uint8Array): void {
    this.stats.txBytes += data.length;
    if (!this.paced) this.emit(Buffer.from(data));
    else this.txLine.send(Buffer.from(data), this.moduleLine);
  }

  private emit(chunk: Buffer, sent: UartLine = this.moduleLine): void {
    let data = chunk;
    if (this.paced && !linesAgree(sent, this.hostLine)) {
      data = Buffer.from(chunk.map(garble));
      this.stats.garbled += data.length;
    }
    for (const t of this.endpoints) {
      if (t.isOpen) t.write(data).catch(() => {});
    }
  }
}

/**
 * The simulated module's RPC UART as seen from outside: every endpoint
 * (in-process pair, TCP, pty) attached to it shares the one wire.
 * Bytes from the host go into the module's RX buffer, which has a fixed size
 * and drops what overflows, like the real UART driver. Bytes the module writes
 * go to every attached endpoint.
 */
import type { Transport } from '../transport/transport.js';

/** Statistics of the wire (bytes). */
export interface UartStats {
  rxBytes: number;
  txBytes: number;
  /** Bytes dropped because the RX buffer was full. */
  rxDropped: number;
}

export class UartWire {
  private endpoints = new Set<Transport>();
  private rx: Buffer[] = [];
  private rxLen = 0;
  /** RX buffer size in bytes (set by the emulated `uart.setup`). 0 = the UART is not set up: bytes are discarded. */
  rxBufferSize = 0;
  /** Called when bytes entered the RX buffer (the emulated driver schedules its receive event). */
  onReceive?: (overflowed: boolean) => void;
  readonly stats: UartStats = { rxBytes: 0, txBytes: 0, rxDropped: 0 };
  /** While false (module booting / resetting), incoming bytes are discarded. */
  listening = false;

  /** Attach an endpoint (its device side): its incoming bytes are the host's TX. */
  attach(t: Transport): void {
    this.endpoints.add(t);
    t.onData((chunk) => this.fromHost(chunk));
    t.onClose(() => this.endpoints.delete(t));
  }

  detachAll(): void {
    this.endpoints.clear();
  }

  /** Bytes arriving from the host side. */
  fromHost(chunk: Uint8Array): void {
    this.stats.rxBytes += chunk.length;
    if (!this.listening || this.rxBufferSize <= 0) {
      this.stats.rxDropped += chunk.length;
      return;
    }
    let data = Buffer.from(chunk);
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

  /** Drop everything buffered (module reset). */
  clear(): void {
    this.rx = [];
    this.rxLen = 0;
  }

  /** Bytes the module writes. */
  toHost(data: Uint8Array): void {
    this.stats.txBytes += data.length;
    for (const t of this.endpoints) {
      if (t.isOpen) t.write(data).catch(() => {});
    }
  }
}

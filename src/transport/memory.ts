import { TetherError } from '../errors.js';
import { BaseTransport } from './transport.js';

/**
 * One end of an in-memory byte pipe. Bytes written on one end arrive on the
 * other end asynchronously (next macrotask), in order, like a UART would deliver them.
 * Writes made before that macrotask runs arrive together, as one chunk (a UART's
 * receiver sees one burst too): one delivery per burst keeps the per-chunk cost of
 * the receiver (line splitting, a simulated module's receive event) per burst, not per write.
 */
export class MemoryTransport extends BaseTransport {
  readonly description: string;
  /** @internal */ peer?: MemoryTransport;
  /** Bytes written and not yet delivered (copies), in order; a delivery is scheduled while non-empty. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(description: string) {
    super();
    this.description = description;
  }

  async write(data: Uint8Array): Promise<void> {
    if (!this.isOpen) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    // a copy (the caller may reuse its buffer); small ones come from Node's buffer pool
    const copy = Buffer.allocUnsafe(data.length);
    copy.set(data);
    if (this.pending.length === 0) setImmediate(() => this.deliverPending());
    this.pending.push(copy);
    this.pendingBytes += copy.length;
  }

  /** Hand everything written since the last delivery to the peer, as one chunk. */
  private deliverPending(): void {
    const parts = this.pending;
    const chunk = parts.length === 1 ? parts[0] : Buffer.concat(parts, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    this.peer?.deliver(chunk);
  }

  /** @internal */ deliver(chunk: Uint8Array): void {
    this.emitData(chunk);
  }

  async close(): Promise<void> {
    if (!this.isOpen) return;
    this.emitClose();
    const peer = this.peer;
    // scheduled after any pending delivery: the peer gets the bytes first, then the close
    setImmediate(() => peer?.remoteClosed());
  }

  /** @internal */ remoteClosed(): void {
    this.emitClose(new TetherError('DISCONNECTED', `${this.description}: peer closed`));
  }
}

/** Create a connected pair: `[hostEnd, deviceEnd]`. */
export function createMemoryPair(name = 'memory'): [MemoryTransport, MemoryTransport] {
  const a = new MemoryTransport(`${name}:host`);
  const b = new MemoryTransport(`${name}:device`);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

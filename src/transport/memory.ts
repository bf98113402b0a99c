import { TetherError } from '../errors.js';
import { BaseTransport } from './transport.js';

/**
 * One end of an in-memory byte pipe. Bytes written on one end arrive on the
 * other end asynchronously (next macrotask), in order, like a UART would deliver them.
 */
export class MemoryTransport extends BaseTransport {
  readonly description: string;
  /** @internal */ peer?: MemoryTransport;

  constructor(description: string) {
    super();
    this.description = description;
  }

  async write(data: Uint8Array): Promise<void> {
    if (!this.isOpen) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    const peer = this.peer;
    // a copy (the caller may reuse its buffer); small ones come from Node's buffer pool
    const copy = Buffer.allocUnsafe(data.length);
    copy.set(data);
    setImmediate(() => peer?.deliver(copy));
  }

  /** @internal */ deliver(chunk: Uint8Array): void {
    this.emitData(chunk);
  }

  async close(): Promise<void> {
    if (!this.isOpen) return;
    this.emitClose();
    const peer = this.peer;
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

/**
 * Module socket limits: the firmwares have a fixed number of sockets (LuatOS 8 by default,
 * `socket.create` returns nil past it; Luat 10 `socketcore` slots; NodeMCU as many as its heap
 * holds, "out of memory" past it). Running out is a {@link SocketError} `EMFILE`; with the
 * `queue` option a connect waits here for a socket of the same module to be released.
 */
import type { DriverConnection } from './driver.js';

/** Release bookkeeping of one module's sockets (one per module, shared by its streams). */
export class ModuleSockets {
  /** Bumped every time a socket of this module is released through the stream layer. */
  generation = 0;
  private readonly waiters = new Set<() => void>();

  /** Wrap `c` so that closing it counts as a release (and wakes queued connects). */
  track<T extends DriverConnection>(c: T): T {
    const close = c.close.bind(c);
    let counted = false;
    c.close = async () => {
      await close();
      if (!counted) {
        counted = true;
        this.released();
      }
    };
    return c;
  }

  /** A socket was released: wake every queued connect. */
  released(): void {
    this.generation++;
    for (const w of [...this.waiters]) w();
  }

  /** Resolve when a release happens after `generation` `gen` was seen, or after `ms` (a socket freed elsewhere is found by retrying). */
  waitRelease(gen: number, ms: number): Promise<void> {
    if (this.generation !== gen) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }
}

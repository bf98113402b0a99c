/**
 * Test/bench helper: open a TCP connection through a module with its family's
 * connection helper, and echo a large payload through it, checked by sha256.
 * No side effects on import (node --test also loads this file).
 */
import { createHash } from 'node:crypto';
import { firstValueFrom, lastValueFrom, type Observable } from 'rxjs';
import type { TetherModule } from '../../src/api/connect.js';
import { openSocket } from '../../src/streams/drivers/luatos-conn.js';
import { openConnection } from '../../src/streams/drivers/luat-conn.js';
import { connectTcp } from '../../src/streams/drivers/nodemcu-conn.js';
import type { Endpoint } from '../../src/diag/echo-servers.js';
import { mulberry32 } from '../../src/transport/faulty.js';

/** What every family's connection offers. */
export interface EchoConn {
  data(): Observable<Uint8Array>;
  send(data: Uint8Array): Observable<unknown>;
  close(): Promise<void>;
}

/**
 * Open a TCP connection from the module to `to` with the stream driver's socket I/O of its family
 * (src/streams/drivers/*-conn.ts, internal): LuatOS `openSocket`, Luat `openConnection`,
 * NodeMCU `connectTcp`; these tests measure the link under the stream layer.
 */
export async function openTcp(mod: TetherModule, to: Endpoint, timeoutMs = 30000): Promise<EchoConn> {
  switch (mod.family) {
    case 'luatos':
      return firstValueFrom(openSocket(mod.socket, to.host, to.port, { timeoutMs }));
    case 'luat':
      return firstValueFrom(openConnection(mod.socketcore, to.host, to.port, { timeoutMs }));
    case 'nodemcu':
      return firstValueFrom(connectTcp(mod.net, to.host, to.port, { timeoutMs }));
    default:
      throw new Error(`no TCP helper for family ${mod.family}`);
  }
}

/** A reproducible pseudo-random payload of `n` bytes. */
export function seededPayload(n: number, seed: number): Buffer {
  const r = mulberry32(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) {
    const x = Math.floor(r() * 4294967296);
    b[i] = x & 0xff;
    if (i + 1 < n) b[i + 1] = (x >>> 8) & 0xff;
    if (i + 2 < n) b[i + 2] = (x >>> 16) & 0xff;
    if (i + 3 < n) b[i + 3] = x >>> 24;
  }
  return b;
}

/** Outcome of {@link echoSha256}. Times are ms from the start of the send (performance.now()). */
export interface EchoResult {
  bytesSent: number;
  bytesBack: number;
  sentSha256: string;
  backSha256: string;
  /** When `send` completed (every chunk accepted by the module). */
  sendDoneMs: number;
  /** When the first echoed bytes arrived. */
  firstByteMs: number;
  /** How many bytes that first chunk had. */
  firstChunkBytes: number;
  /** When the last echoed byte arrived. */
  lastByteMs: number;
}

/**
 * Send `payload` through `conn` and read until as many bytes came back; hashes both sides.
 * Rejects when the connection ends early, errors, or more bytes than sent come back.
 * `timeoutMs` bounds the whole echo (a hang fails instead of stalling the test run).
 */
export async function echoSha256(conn: EchoConn, payload: Uint8Array, timeoutMs: number): Promise<EchoResult> {
  const size = payload.length;
  const back = createHash('sha256');
  let n = 0;
  let firstByteMs = -1;
  let firstChunkBytes = 0;
  let lastByteMs = -1;
  const t0 = performance.now();
  let sub: { unsubscribe(): void } | undefined;
  let timer: NodeJS.Timeout | undefined;
  const done = new Promise<void>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`echo: ${n} of ${size} bytes came back within ${timeoutMs} ms`)), timeoutMs);
    sub = conn.data().subscribe({
      next: (b) => {
        if (firstByteMs < 0) {
          firstByteMs = performance.now() - t0;
          firstChunkBytes = b.length;
        }
        back.update(b);
        n += b.length;
        if (n > size) reject(new Error(`echo: ${n} bytes came back, more than the ${size} sent`));
        else if (n === size) {
          lastByteMs = performance.now() - t0;
          resolve();
        }
      },
      error: reject,
      complete: () => reject(new Error(`echo: the connection ended after ${n} of ${size} bytes`)),
    });
  });
  done.catch(() => {});
  try {
    let sendDoneMs = -1;
    const sent = lastValueFrom(conn.send(payload)).then(() => {
      sendDoneMs = performance.now() - t0;
    });
    await Promise.all([sent, done]);
    return {
      bytesSent: size,
      bytesBack: n,
      sentSha256: createHash('sha256').update(payload).digest('hex'),
      backSha256: back.digest('hex'),
      sendDoneMs,
      firstByteMs,
      firstChunkBytes,
      lastByteMs,
    };
  } finally {
    clearTimeout(timer);
    sub?.unsubscribe();
  }
}

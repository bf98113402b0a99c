/** The echo check every family's diag runs. */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { TetherModule } from '../api/connect.js';
import { createConnection, createSocket, type ConnectionOptions, type SocketStream } from '../streams/index.js';

/**
 * Open a connection on the module's stack (`createConnection`, src/streams) and resolve once the
 * module reports it up (`'connect'`); rejects with the stream's error (`SOCKET` with a `reason`
 * such as `ECONNREFUSED`, `TIMEOUT`, `RESET`, `UNSUPPORTED`), the stream then destroyed. Errors
 * after `'connect'` go to the listeners of {@link echoBytes} / {@link closeStream} (or nowhere).
 */
export function openStream(mod: TetherModule, o: ConnectionOptions): Promise<SocketStream> {
  return new Promise((resolve, reject) => {
    const s = createConnection(mod, o);
    const fail = (e: Error) => reject(e);
    s.once('error', fail);
    s.once('connect', () => {
      s.off('error', fail);
      // later errors reach echoBytes / closeStream, which listen; a stream a check abandoned
      // (interrupted, timed out) must not throw an unhandled 'error' when the module closes
      s.on('error', () => undefined);
      resolve(s);
    });
  });
}

/**
 * Close `s` gracefully (`end()`: FIN once every write was accepted, then the module socket is
 * released) and resolve on `'close'`; never rejects (a stream that errors meanwhile is closed too).
 */
export function closeStream(s: Duplex): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve();
    s.once('close', () => resolve());
    s.on('error', () => undefined);
    s.resume(); // bytes still arriving must not hold the stream open
    s.end();
  });
}

/**
 * Send `size` random bytes through `s` (a connected stream) and wait until as many came back;
 * they must be byte-exact. Resolves with a detail line; leaves the stream open.
 * @throws Error when the stream ends or fails early, or the bytes differ.
 */
export async function echoBytes(s: Duplex, size: number): Promise<string> {
  const payload = randomBytes(size);
  const got: Buffer[] = [];
  let n = 0;
  let cleanup = () => {};
  const done = new Promise<void>((resolve, reject) => {
    const onData = (b: Buffer) => {
      got.push(b);
      n += b.length;
      if (n >= size) {
        cleanup();
        resolve();
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`the connection closed after ${n} of ${size} echoed bytes`));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    cleanup = () => {
      s.off('data', onData);
      s.off('end', onEnd);
      s.off('error', onError);
      s.pause();
    };
    s.on('data', onData);
    s.once('end', onEnd);
    s.once('error', onError);
  });
  // a failed write leaves `done` unawaited: it must not become an unhandled rejection later
  done.catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    s.write(payload, (e) => (e ? reject(e) : resolve()));
  }).catch((e) => {
    cleanup();
    throw e;
  });
  await done;
  if (!Buffer.concat(got).subarray(0, size).equals(payload)) throw new Error('echoed bytes differ from what was sent');
  return `${size} bytes echoed byte-exact`;
}

/**
 * One datagram of `size` random bytes to `port`/`host` through a module UDP socket
 * (`createSocket(mod, 'udp4')`, connected to that peer), and the reply within `timeoutMs`;
 * it must be byte-exact. Resolves with where the reply came from; the socket is closed after.
 * @throws Error (no reply in time, a different reply), or the socket's TetherError.
 */
export async function udpEcho(mod: TetherModule, host: string, port: number, size: number, timeoutMs: number): Promise<{ address: string; port: number }> {
  const payload = randomBytes(size);
  const u = createSocket(mod, 'udp4');
  try {
    return await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no datagram back within ${timeoutMs} ms`)), timeoutMs);
      const settle = (f: () => void) => {
        clearTimeout(t);
        f();
      };
      u.on('error', (e) => settle(() => reject(e)));
      u.once('message', (msg, rinfo) => settle(() => (msg.equals(payload) ? resolve({ address: rinfo.address, port: rinfo.port }) : reject(new Error('the datagram came back different')))));
      u.connect(port, host, () => u.send(payload, undefined, undefined, (e) => e && settle(() => reject(e))));
    });
  } finally {
    await new Promise<void>((r) => u.close(() => r()));
  }
}

/** Most bytes the TLS/SSL echo checks send, by family (the modules' TLS buffers are small). */
export const TLS_ECHO_MAX = { luatos: 1024, luat: 4096 } as const;

/** The bytes an echo check sends: `wanted` capped at `cap`, with a note for the detail line when capped. */
export function cappedEcho(wanted: number, cap: number, what: string): { size: number; note: string } {
  return wanted > cap ? { size: cap, note: ` (--echo-bytes ${wanted} capped at ${cap} for ${what})` } : { size: wanted, note: '' };
}

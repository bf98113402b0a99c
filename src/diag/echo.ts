/** The echo check every family's diag runs. */
import { randomBytes } from 'node:crypto';
import { lastValueFrom, type Observable } from 'rxjs';

/** Anything that streams received bytes and sends bytes: every family's connection helper. */
export interface EchoConnection {
  data(): Observable<Uint8Array>;
  send(data: Uint8Array): Observable<unknown>;
}

/**
 * Send `size` random bytes through `conn` and wait until as many came back; they must be
 * byte-exact. Resolves with a detail line.
 * @throws Error when the connection closes early or the bytes differ.
 */
export async function echoBytes(conn: EchoConnection, size: number): Promise<string> {
  const payload = randomBytes(size);
  const got: Buffer[] = [];
  let n = 0;
  let s: { unsubscribe(): void } | undefined;
  const done = new Promise<void>((resolve, reject) => {
    s = conn.data().subscribe({
      next: (b) => {
        got.push(Buffer.from(b));
        n += b.length;
        if (n >= size) {
          s?.unsubscribe();
          resolve();
        }
      },
      error: reject,
      complete: () => reject(new Error(`the connection closed after ${n} of ${size} echoed bytes`)),
    });
  });
  // a failed send leaves `done` unawaited: it must not become an unhandled rejection when the connection closes later
  done.catch(() => undefined);
  try {
    await lastValueFrom(conn.send(payload));
  } catch (e) {
    s?.unsubscribe();
    throw e;
  }
  await done;
  if (!Buffer.concat(got).subarray(0, size).equals(payload)) throw new Error('echoed bytes differ from what was sent');
  return `${size} bytes echoed byte-exact`;
}

/** Most bytes the TLS/SSL echo checks send, by family (the modules' TLS buffers are small). */
export const TLS_ECHO_MAX = { luatos: 1024, luat: 4096 } as const;

/** The bytes an echo check sends: `wanted` capped at `cap`, with a note for the detail line when capped. */
export function cappedEcho(wanted: number, cap: number, what: string): { size: number; note: string } {
  return wanted > cap ? { size: cap, note: ` (--echo-bytes ${wanted} capped at ${cap} for ${what})` } : { size: wanted, note: '' };
}

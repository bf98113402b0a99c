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
  const done = new Promise<void>((resolve, reject) => {
    const s = conn.data().subscribe({
      next: (b) => {
        got.push(Buffer.from(b));
        n += b.length;
        if (n >= size) {
          s.unsubscribe();
          resolve();
        }
      },
      error: reject,
      complete: () => reject(new Error(`the connection closed after ${n} of ${size} echoed bytes`)),
    });
  });
  await lastValueFrom(conn.send(payload));
  await done;
  if (!Buffer.concat(got).subarray(0, size).equals(payload)) throw new Error('echoed bytes differ from what was sent');
  return `${size} bytes echoed byte-exact`;
}

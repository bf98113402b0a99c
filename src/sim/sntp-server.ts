/**
 * The simulated network's SNTP server: a small RFC 4330 (SNTPv4) server on a loopback UDP
 * port, so a simulated module's `socket.sntp()` gets a time without leaving the machine.
 *
 * Reply (RFC 4330 section 5, "SNTP Server Operations"): 48 bytes; LI 0, VN copied from the
 * request (3 or 4), Mode 4 (server); Stratum 1, Poll copied, Precision -20 (about 1 µs);
 * Root Delay and Root Dispersion 0; Reference Identifier "LOCL"; Reference Timestamp = now;
 * Originate Timestamp = the request's Transmit Timestamp; Receive and Transmit Timestamps =
 * now (the host's clock). A request that is not a client request (Mode 3) of at least 48 bytes
 * is ignored, as servers do (section 5: "the server ... discards" it).
 */
import dgram from 'node:dgram';

/** Seconds from the NTP era (1900-01-01) to the Unix epoch. */
export const NTP_UNIX_OFFSET = 2208988800;

/** A running responder. */
export interface SntpServer {
  /** The UDP port it listens on (127.0.0.1). */
  readonly port: number;
  /** Requests answered so far. */
  readonly served: number;
  /** Stop listening. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link startSntpServer}. */
export interface SntpServerOptions {
  /** Port to bind, 0 = any free one. @default 0 */
  port?: number;
  /** Address to bind. @default '127.0.0.1' */
  host?: string;
  /** The clock it serves, milliseconds since the Unix epoch. @default Date.now */
  now?: () => number;
}

/** Write `ms` (Unix milliseconds) as a 64-bit NTP timestamp at `off`. */
function writeNtpTime(b: Buffer, off: number, ms: number): void {
  const sec = Math.floor(ms / 1000);
  b.writeUInt32BE((sec + NTP_UNIX_OFFSET) >>> 0, off);
  b.writeUInt32BE(Math.floor(((ms - sec * 1000) / 1000) * 2 ** 32) >>> 0, off + 4);
}

/**
 * The reply to one request, or undefined when `req` is not an SNTP client request.
 * @param req the datagram received (bytes).
 * @param nowMs the server's clock (Unix milliseconds).
 */
export function sntpReply(req: Uint8Array, nowMs: number): Buffer | undefined {
  if (req.length < 48 || (req[0] & 7) !== 3) return undefined;
  const vn = (req[0] >> 3) & 7;
  const r = Buffer.alloc(48);
  r[0] = (0 << 6) | ((vn >= 1 && vn <= 4 ? vn : 4) << 3) | 4;
  r[1] = 1; // stratum 1: a primary reference (the host's clock)
  r[2] = req[2]; // poll
  r[3] = 0xec; // precision -20
  r.write('LOCL', 12, 'latin1');
  writeNtpTime(r, 16, nowMs);
  Buffer.from(req.buffer, req.byteOffset + 40, 8).copy(r, 24); // originate = the client's transmit
  writeNtpTime(r, 32, nowMs);
  writeNtpTime(r, 40, nowMs);
  return r;
}

/**
 * Start an SNTP server on 127.0.0.1 (or `host`).
 * @throws the bind error (EADDRINUSE, EACCES for port 123 without privileges).
 */
export async function startSntpServer(o: SntpServerOptions = {}): Promise<SntpServer> {
  const sock = dgram.createSocket('udp4');
  const now = o.now ?? Date.now;
  let served = 0;
  let closed = false;
  sock.on('message', (m, rinfo) => {
    const r = sntpReply(m, now());
    if (!r) return;
    served++;
    sock.send(r, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(o.port ?? 0, o.host ?? '127.0.0.1', () => {
      sock.off('error', reject);
      sock.on('error', () => {});
      resolve();
    });
  });
  sock.unref();
  const port = sock.address().port;
  return {
    port,
    get served() {
      return served;
    },
    close: () =>
      new Promise<void>((resolve) => {
        if (closed) return resolve();
        closed = true;
        sock.close(() => resolve());
      }),
  };
}

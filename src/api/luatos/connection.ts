/**
 * Helpers on top of the raw `socket` calls, following the firmware's rules
 * (../shared/firmware-notes/luatos.md, "Canonical usage"): connect and wait
 * for ON_LINE, read on every EVENT until the peer closes, send in chunks that
 * respect a full buffer and TX_OK, close gracefully and release.
 */
import { Observable, Subscription, firstValueFrom, lastValueFrom } from 'rxjs';
import { InvalidArgumentError, TetherError, TimeoutError } from '../../errors.js';
import { SocketEvent } from './constants.js';
import { LuatosSocket, SocketCtrl, ZBuff, notOk, type SocketEventInfo } from './socket.js';

/** Options of {@link openSocket}. */
export interface OpenOptions {
  /** Network adapter. @default firmware default (LWIP_GP = 1 on Air780E) */
  adapter?: number;
  /** UDP instead of TCP. @default false */
  udp?: boolean;
  /** TLS. @default false */
  tls?: boolean;
  /** CA certificate (PEM) the module verifies the server against (TLS). @default no verification, like the firmware */
  ca?: string;
  /** Time to wait for the adapter to link up and the connection to come ON_LINE (ms). @default 15000 */
  timeoutMs?: number;
  /** Local port. @default firmware picks one */
  localPort?: number;
}

/** A datagram received on a UDP socket. */
export interface Datagram {
  data: Uint8Array;
  /** Sender IPv4 as dotted text (decoded from the firmware's 5-byte form). */
  ip: string;
  port: number;
}

/** Decode the firmware's UDP address string: `\0` + 4 bytes (IPv4) or `\1` + 16 bytes (IPv6). */
export function decodeRemoteIp(raw: Uint8Array | null | undefined): string {
  if (!raw || raw.length === 0) return '';
  if (raw[0] === 0 && raw.length >= 5) return `${raw[1]}.${raw[2]}.${raw[3]}.${raw[4]}`;
  if (raw[0] === 1 && raw.length >= 17) {
    const parts: string[] = [];
    for (let i = 1; i < 17; i += 2) parts.push(((raw[i] << 8) | raw[i + 1]).toString(16));
    return parts.join(':');
  }
  return Buffer.from(raw).toString('latin1');
}

/**
 * An open socket on the module. `data()` / `datagrams()` read, `send()` writes,
 * `close()` disconnects and releases the module's socket.
 */
export class LuatosConnection {
  private txOkSeq = 0;
  private txOkParam = 0;
  private closedByPeer = false;
  private released = false;
  private readonly sub: Subscription;
  private readonly txWaiters = new Set<() => void>();

  /** @internal */
  constructor(
    readonly socket: LuatosSocket,
    readonly ctrl: SocketCtrl,
    readonly udp: boolean,
  ) {
    this.sub = socket.events(ctrl).subscribe((e) => {
      if (e.event === SocketEvent.TX_OK) {
        this.txOkSeq++;
        this.txOkParam = e.param;
        for (const w of [...this.txWaiters]) w();
      }
      if (e.event === SocketEvent.EVENT && e.param === -1) this.closedByPeer = true;
    });
  }

  /** Events of this socket (hot). */
  get events(): Observable<SocketEventInfo> {
    return this.socket.events(this.ctrl);
  }

  /**
   * Bytes as they arrive (TCP). Cold: on subscribe it reads what is pending, then
   * reads again on every EVENT 0 until nothing is left; completes after the peer
   * closed (EVENT -1) or CLOSED, once everything received before the close was read
   * (`rx` then answers `(false, 0)`).
   */
  data(): Observable<Uint8Array> {
    return this.reader<Uint8Array>(
      async () => {
        const buf = new ZBuff(0);
        const r = await firstValueFrom(this.socket.rx(this.ctrl, buf));
        if (!r.ok) return 'end';
        return buf.used === 0 ? 'empty' : buf.toBuffer();
      },
      (e) => (e.event === SocketEvent.EVENT && e.param === -1) || e.event === SocketEvent.CLOSED,
      this.closedByPeer,
    );
  }

  /** Datagrams as they arrive (UDP). Cold; one `rx` per datagram. Never completes by itself. */
  datagrams(): Observable<Datagram> {
    return this.reader<Datagram>(
      async () => {
        const buf = new ZBuff(0);
        const r = (await firstValueFrom(this.socket.rx(this.ctrl, buf))) as unknown as [boolean, number, Uint8Array | null, number | null] & { ok: boolean };
        if (!r.ok || r[1] === 0) return 'empty';
        return { data: buf.toBuffer(), ip: decodeRemoteIp(r[2]), port: r[3] ?? 0 };
      },
      () => false,
      false,
    );
  }

  /**
   * An event-driven reader: runs `readOne` until it has nothing more, now and after
   * every EVENT or CLOSED, never two drains at once. `endsOn(e)` marks the stream as
   * ending; it completes when ending and a drain found nothing more ('empty' or 'end').
   */
  private reader<T>(readOne: () => Promise<T | 'empty' | 'end'>, endsOn: (e: SocketEventInfo) => boolean, endingAlready: boolean): Observable<T> {
    return new Observable<T>((sub) => {
      let running = false;
      let again = false;
      let ending = endingAlready;
      let stopped = false;
      const drain = async () => {
        if (running) {
          again = true;
          return;
        }
        running = true;
        try {
          do {
            again = false;
            for (;;) {
              const r = await readOne();
              if (stopped) return;
              if (r === 'end') ending = true;
              if (r === 'empty' || r === 'end') break;
              sub.next(r);
            }
          } while (again && !stopped);
          if (ending && !stopped) sub.complete();
        } catch (e) {
          if (!stopped) sub.error(e);
        } finally {
          running = false;
        }
      };
      const evs = this.socket.events(this.ctrl).subscribe((e) => {
        if (endsOn(e)) ending = true;
        if (e.event === SocketEvent.EVENT || e.event === SocketEvent.CLOSED) void drain();
      });
      void drain();
      return () => {
        stopped = true;
        evs.unsubscribe();
      };
    });
  }

  /**
   * Send `data` in chunks of at most `chunkSize` bytes, one `socket.tx` in flight at a time
   * (so a refused chunk is never overtaken). When the firmware says the buffer is full it waits
   * for TX_OK (or `retryMs`) and sends the same chunk again. Emits the number of bytes accepted
   * so far after each chunk; completes when all were accepted.
   * @throws TetherError `SOCKET` when tx fails or TX_OK reports -1; `TIMEOUT` after `timeoutMs` without progress.
   */
  send(data: Uint8Array | string, o: { chunkSize?: number; timeoutMs?: number; retryMs?: number } = {}): Observable<number> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    const chunkSize = o.chunkSize ?? (this.udp ? 1460 : Math.min(4096, Math.floor(((this.socket.rpc.hello.maxmsg - 80) * 3) / 4)));
    if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new InvalidArgumentError('send: chunkSize must be a positive integer (bytes)');
    if (this.udp && bytes.length > 1460) throw new InvalidArgumentError(`send: a UDP datagram of ${bytes.length} bytes is over the firmware's 1460-byte advice; use smaller datagrams`);
    const timeoutMs = o.timeoutMs ?? 30000;
    const retryMs = o.retryMs ?? 1000;
    return new Observable<number>((sub) => {
      let stopped = false;
      (async () => {
        let off = 0;
        let lastProgress = Date.now();
        while (off < bytes.length && !stopped) {
          const chunk = bytes.subarray(off, off + chunkSize);
          const seq = this.txOkSeq;
          const r = await firstValueFrom(this.socket.tx(this.ctrl, chunk));
          if (stopped) return;
          if (!r.ok) throw notOk('socket.tx', r);
          if (r[1] === true) {
            // buffer full: nothing accepted. Wait for a TX_OK newer than this tx, then retry.
            if (Date.now() - lastProgress > timeoutMs) throw new TimeoutError(`send: the module's send buffer stayed full for ${timeoutMs} ms`, { ms: timeoutMs });
            if (this.txOkSeq === seq) await this.waitTxOk(retryMs);
            if (this.txOkParam === -1) throw new TetherError('SOCKET', 'send: TX_OK reported failure (-1): the connection broke');
            continue;
          }
          off += chunk.length;
          lastProgress = Date.now();
          sub.next(off);
        }
        if (!stopped) sub.complete();
      })().catch((e) => {
        if (!stopped) sub.error(e);
      });
      return () => {
        stopped = true;
      };
    });
  }

  private waitTxOk(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.txWaiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.txWaiters.add(done);
    });
  }

  /**
   * Close: `discon` and wait for CLOSED (up to `timeoutMs`), then `close` and `release`.
   * Safe to call twice; after a module reset it only forgets the socket.
   */
  async close(o: { timeoutMs?: number } = {}): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.sub.unsubscribe();
    if (this.ctrl.epoch !== this.socket.rpc.currentEpoch || this.socket.rpc.isClosed) return;
    const closed = new Promise<void>((resolve) => {
      const s = this.socket.events(this.ctrl).subscribe((e) => {
        if (e.event === SocketEvent.CLOSED) {
          s.unsubscribe();
          resolve();
        }
      });
      setTimeout(() => {
        s.unsubscribe();
        resolve();
      }, o.timeoutMs ?? 5000).unref?.();
    });
    try {
      const r = await firstValueFrom(this.socket.discon(this.ctrl));
      if (r.ok && r[1] === false) await closed;
    } finally {
      await lastValueFrom(this.socket.close(this.ctrl)).catch(() => {});
      await lastValueFrom(this.socket.release(this.ctrl)).catch(() => {});
    }
  }
}

/**
 * Open a TCP, TLS or UDP connection from the module to `host:port`:
 * create, config, wait for the adapter (LINK), connect, wait for ON_LINE.
 * Emits the connection once it is online; unsubscribing before that cancels and releases the socket.
 * @throws TetherError `SOCKET` (create returned nil, config false, connect refused: ON_LINE -1),
 *   `TIMEOUT` (no ON_LINE within `timeoutMs`).
 */
export function openSocket(socket: LuatosSocket, host: string, port: number, o: OpenOptions = {}): Observable<LuatosConnection> {
  return new Observable<LuatosConnection>((sub) => {
    let ctrl: SocketCtrl | null = null;
    let done = false;
    const timeoutMs = o.timeoutMs ?? 15000;
    (async () => {
      ctrl = await firstValueFrom(socket.create(o.adapter ?? null));
      if (!ctrl) throw new TetherError('SOCKET', 'socket.create returned nil: bad adapter or out of sockets');
      const c = ctrl;
      const online = waitEvent(socket, c, [SocketEvent.ON_LINE], timeoutMs);
      const cfg = await firstValueFrom(socket.config(c, { udp: o.udp ?? false, tls: o.tls ?? false, serverCert: o.ca, localPort: o.localPort }));
      if (cfg[0] !== true) throw notOk('socket.config', cfg);
      const link = await firstValueFrom(socket.linkup(c));
      if (!link.ok) throw notOk('socket.linkup', link);
      if (link[1] !== true) {
        const ev = await waitEvent(socket, c, [SocketEvent.LINK], timeoutMs);
        if (ev.param !== 0) throw new TetherError('SOCKET', 'network adapter did not link up (LINK -1)');
      }
      const r = await firstValueFrom(socket.connect(c, host, port));
      if (!r.ok) throw notOk(`socket.connect(${host}, ${port})`, r);
      const ev = await online;
      if (ev.param !== 0) throw new TetherError('SOCKET', `connect to ${host}:${port} failed (ON_LINE -1: refused, unreachable or DNS failure)`, { context: { host, port } });
      done = true;
      sub.next(new LuatosConnection(socket, c, o.udp ?? false));
      sub.complete();
    })().catch(async (e) => {
      if (ctrl) await releaseQuietly(socket, ctrl);
      sub.error(e);
    });
    return () => {
      if (!done && ctrl) void releaseQuietly(socket, ctrl);
    };
  });
}

async function releaseQuietly(socket: LuatosSocket, ctrl: SocketCtrl): Promise<void> {
  if (ctrl.epoch !== socket.rpc.currentEpoch || socket.rpc.isClosed) return;
  await lastValueFrom(socket.close(ctrl)).catch(() => {});
  await lastValueFrom(socket.release(ctrl)).catch(() => {});
}

/** Wait for the first of `events` on `ctrl`. Subscribe before the call that triggers it. */
export function waitEvent(socket: LuatosSocket, ctrl: SocketCtrl, events: number[], timeoutMs: number): Promise<SocketEventInfo> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      s.unsubscribe();
      reject(new TimeoutError(`no ${events.map(String).join('/')} event on ${ctrl} within ${timeoutMs} ms`, { ms: timeoutMs }));
    }, timeoutMs);
    const s = socket.events(ctrl).subscribe({
      next: (e) => {
        if (events.includes(e.event)) {
          clearTimeout(t);
          s.unsubscribe();
          resolve(e);
        }
      },
      complete: () => {
        clearTimeout(t);
        reject(new TetherError('DISCONNECTED', 'link closed while waiting for a socket event'));
      },
    });
  });
}

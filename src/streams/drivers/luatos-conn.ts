/**
 * The LuatOS driver's socket I/O (src/streams/drivers/luatos.ts builds the stream layer on it),
 * on top of the raw `socket` facade calls, following the firmware's rules
 * (docs/firmware/luatos.md, usual structure with libnet): connect and wait
 * for ON_LINE, read on every EVENT until the peer closes, send in chunks that
 * respect a full buffer and TX_OK, close gracefully and release.
 */
import { Observable, Subscription, firstValueFrom, lastValueFrom } from 'rxjs';
import { InvalidArgumentError, TetherError, TimeoutError } from '../../errors.js';
import { SocketEvent, eventName } from '../../api/luatos/constants.js';
import { LuatosSocket, SocketCtrl, ZBuff, notOk, type Result, type SocketEventInfo, checkOpenSocketArgs } from '../../api/luatos/socket.js';

/** Options of {@link openSocket}. */
/**
 * Reads go ahead of the writes queued on the link (CallOptions.ahead): the order of a read and a
 * write does not matter to either, and a read behind three 4 KB `socket.tx` would wait about a
 * second at 115200 baud while the module's bytes sit unread (docs/protocol-performance.md).
 */
const READ = { ahead: true } as const;

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

/** Reads (`socket.rx`) {@link LuatosConnection.data} keeps outstanding while more data is known to be pending. */
const READ_DEPTH = 2;

/**
 * An open socket on the module. `data()` / `datagrams()` read, `send()` writes,
 * `close()` disconnects and releases the module's socket.
 * A module reset ends every stream of the connection with `RESET` ({@link ResetError}).
 */
export class LuatosConnection {
  private txOkSeq = 0;
  private txOkParam = 0;
  private closedByPeer = false;
  private released = false;
  /** Why the socket's events ended (module reset: `RESET`), if they did. */
  private failure?: Error;
  private readonly sub: Subscription;
  private readonly txWaiters = new Set<() => void>();
  private readPaused = false;
  private readonly resumeWaiters = new Set<() => void>();

  /** @internal */
  constructor(
    readonly socket: LuatosSocket,
    readonly ctrl: SocketCtrl,
    readonly udp: boolean,
  ) {
    this.sub = socket.events(ctrl).subscribe({
      next: (e) => {
        if (e.event === SocketEvent.TX_OK) {
          this.txOkSeq++;
          this.txOkParam = e.param;
          this.wakeTx();
        }
        if (e.event === SocketEvent.EVENT && e.param === -1) this.closedByPeer = true;
      },
      error: (e) => {
        this.failure = e;
        this.wakeTx();
      },
    });
  }

  private wakeTx(): void {
    for (const w of [...this.txWaiters]) w();
  }

  /** Events of this socket (hot); errors with `RESET` when the module resets. */
  get events(): Observable<SocketEventInfo> {
    return this.socket.events(this.ctrl);
  }

  /**
   * Bytes as they arrive (TCP). Cold: on subscribe it reads what is pending, then
   * reads again on every EVENT 0 until nothing is left; completes after the peer
   * closed (EVENT -1) or CLOSED, once everything received before the close was read
   * (`rx` then answers `(false, 0)`). Errors with `RESET` ({@link ResetError}) when the
   * module resets (at once for a socket of a previous boot).
   *
   * After the peer's FIN the firmware allows ONE more read with a buffer (network_rx in
   * components/network/adapter/luat_network_adapter.c of openLuat/LuatOS returns -1 once
   * `need_close` is set and `new_rx_flag` was cleared by a read). The agent (hello `rxdrain`,
   * firmware-shim/luatos/agent.lua `socket.rx`) makes every firmware read take all the socket
   * holds and hands it out `limit` bytes per call, so the whole tail arrives and the stream then
   * completes. With an older agent (no `rxdrain`) the last read asks for everything pending, up to
   * what one reply carries, and the stream errors with TetherError `SOCKET` (`context.reason`
   * `ECONNRESET`) instead of completing short when more was pending.
   */
  data(): Observable<Uint8Array> {
    const limit = this.socket.readLimit();
    const drains = this.socket.rpc.hello.raw.get('rxdrain') === true;
    if (drains) {
      return this.reader<Uint8Array>(
        async () => {
          const buf = new ZBuff(0);
          const r = await firstValueFrom(this.socket.rx(this.ctrl, buf, { limit }, READ));
          if (!r.ok) return 'end';
          return buf.used === 0 ? 'empty' : buf.toBuffer();
        },
        (e) => (e.event === SocketEvent.EVENT && e.param === -1) || e.event === SocketEvent.CLOSED,
        this.closedByPeer,
        { depth: READ_DEPTH, full: (b) => b.length >= limit, pausable: true },
      );
    }
    // an agent without rxdrain: the last read after the FIN asks for everything pending
    const lastLimit = Math.max(limit, this.socket.rpc.hello.maxmsg - 64);
    let lastFull = false;
    const truncated = () =>
      new TetherError('SOCKET', `the peer closed while more than ${limit} bytes were pending on the module; the firmware allows one read after the FIN and the rest was lost (this agent's rx reads at most ${limit} bytes per call: update it for hello rxdrain)`, {
        context: { readable: limit, reason: 'ECONNRESET' },
      });
    return this.reader<Uint8Array>(
      async () => {
        if (this.closedByPeer) {
          const p = await firstValueFrom(this.socket.rx(this.ctrl, undefined, {}, READ));
          if (!p.ok) {
            if (lastFull) throw truncated();
            return 'end';
          }
          const pending = p[1];
          if (pending > lastLimit) {
            throw new TetherError('SOCKET', `the peer closed with ${pending} bytes unread on the module; the firmware allows one more read only and this agent's reply carries at most ${lastLimit}: ${pending - lastLimit} bytes would be lost (update the agent for hello rxdrain)`, {
              context: { pending, readable: lastLimit, reason: 'ECONNRESET' },
            });
          }
          const buf = new ZBuff(0);
          const r = await firstValueFrom(this.socket.rx(this.ctrl, buf, { limit: Math.max(1, pending) }, READ));
          if (!r.ok) {
            if (lastFull) throw truncated();
            return 'end';
          }
          lastFull = false;
          return buf.used === 0 ? 'empty' : buf.toBuffer();
        }
        const buf = new ZBuff(0);
        const r = await firstValueFrom(this.socket.rx(this.ctrl, buf, { limit }, READ));
        if (!r.ok) {
          if (lastFull) throw truncated();
          return 'end';
        }
        lastFull = buf.used >= limit;
        return buf.used === 0 ? 'empty' : buf.toBuffer();
      },
      (e) => (e.event === SocketEvent.EVENT && e.param === -1) || e.event === SocketEvent.CLOSED,
      this.closedByPeer,
      { depth: READ_DEPTH, full: (b) => b.length >= limit },
    );
  }

  /**
   * Read backpressure for {@link data}: stop issuing `socket.rx` (reads in flight still deliver)
   * until {@link resumeReading}; the bytes wait on the module (TCP flow control holds the peer).
   * Only safe with an agent that says hello `rxdrain` (see {@link data}: otherwise bytes left on
   * the module at the peer's FIN would be lost). Idempotent.
   */
  pauseReading(): void {
    this.readPaused = true;
  }

  /** Read again after {@link pauseReading}. Idempotent. */
  resumeReading(): void {
    if (!this.readPaused) return;
    this.readPaused = false;
    for (const w of [...this.resumeWaiters]) w();
  }

  /** Datagrams as they arrive (UDP). Cold; one `rx` per datagram. Never completes by itself; errors with `RESET` when the module resets. */
  datagrams(): Observable<Datagram> {
    return this.reader<Datagram>(
      async () => {
        const buf = new ZBuff(0);
        const r = (await firstValueFrom(this.socket.rx(this.ctrl, buf, {}, READ))) as unknown as [boolean, number, Uint8Array | null, number | null] & { ok: boolean };
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
   * It errors as soon as the socket's events do (module reset).
   *
   * Pipelining (`o.depth` > 1 with `o.full`): a drain starts with one read; while reads come
   * back `full` (as many bytes as asked: more is known to be pending) it keeps `depth` reads
   * outstanding, so the line does not idle for a round trip between two reads. A short read
   * (all that was pending was taken; bytes arriving later raise an EVENT, which drains again)
   * stops issuing reads, except:
   * - while the stream is ending: it reads on until 'empty' / 'end', to complete;
   * - after an EVENT came while reading was paused: the drain that was held saw none of it, and
   *   with hello rxdrain a short read may be the tail of what the agent kept from an earlier
   *   firmware read while the new bytes wait behind it;
   * - while reads issued after it are still outstanding: with hello rxdrain a short read is often
   *   just the tail of the agent's last firmware read, and the read behind it starts a new one
   *   (stopping there left the module with nothing to answer for a round trip, six times in a
   *   256 KiB download at 921,600 baud; docs/protocol-performance.md, "Reads behind a short one").
   *
   * 'empty' or 'end' stops issuing too (a full read that an outstanding read brings after it
   * starts again). Results are emitted strictly in call order whatever order they settle in.
   * Unsubscribing drops what outstanding reads return.
   */
  private reader<T>(
    readOne: () => Promise<T | 'empty' | 'end'>,
    endsOn: (e: SocketEventInfo) => boolean,
    endingAlready: boolean,
    o: { depth?: number; full?: (v: T) => boolean; pausable?: boolean } = {},
  ): Observable<T> {
    const depth = o.depth ?? 1;
    const paused = () => o.pausable === true && this.readPaused;
    return new Observable<T>((sub) => {
      let running = false;
      let again = false;
      let ending = endingAlready;
      let stopped = false;
      let held = false; // the last drain stopped early because reading is paused
      // an EVENT came while paused: its bytes may sit behind what the agent still hands out of its
      // last firmware read (hello rxdrain: that stash comes first, and its last piece is short), so
      // the next drain reads until the module says 'empty' instead of stopping at a short read
      let missed = false;
      const drain = async () => {
        if (running) {
          again = true;
          return;
        }
        running = true;
        try {
          do {
            again = false;
            held = false;
            const thorough = missed;
            missed = false;
            const q: Promise<T | 'empty' | 'end'>[] = [];
            let exhausted = false; // a read found nothing, or a short one took all that was pending
            let want = 1; // reads to keep outstanding: `depth` once more is known to be pending
            for (;;) {
              while (!exhausted && q.length < want && !paused()) {
                const p = readOne();
                p.catch(() => {}); // awaited below in order; never unhandled when the reader stops
                q.push(p);
              }
              if (q.length === 0) break;
              const r = await q.shift()!;
              if (stopped) return;
              if (r === 'end') ending = true;
              if (r === 'empty' || r === 'end') {
                exhausted = true;
                continue; // the reads behind it settle (and may still bring bytes that came meanwhile)
              }
              // a full read behind a short one: a pipelined read found new bytes (with hello rxdrain
              // the agent's firmware read takes at most the module's TCP window and keeps the rest
              // for the next rx calls; their EVENT may already have been seen), so read on
              if (o.full?.(r)) {
                want = depth;
                exhausted = false;
              } else if (o.full && !ending && !thorough && q.length === 0) exhausted = true;
              sub.next(r);
            }
            // paused with more possibly pending: stop here; resumeReading drains again
            if (!exhausted && paused()) {
              held = true;
              if (thorough) missed = true; // not read through yet
            }
          } while (again && !stopped && !held);
          if (ending && !stopped && !held) sub.complete();
        } catch (e) {
          if (!stopped) sub.error(e);
        } finally {
          running = false;
        }
      };
      const evs = this.socket.events(this.ctrl).subscribe({
        next: (e) => {
          if (endsOn(e)) ending = true;
          if (e.event === SocketEvent.EVENT && paused()) missed = true;
          if (e.event === SocketEvent.EVENT || e.event === SocketEvent.CLOSED) void drain();
        },
        // module reset: the socket is gone, end at once (an rx in flight fails with RESET too)
        error: (e) => {
          if (stopped) return;
          stopped = true;
          sub.error(e);
        },
      });
      if (stopped) return () => evs.unsubscribe();
      const wake = () => void drain();
      if (o.pausable) this.resumeWaiters.add(wake);
      void drain();
      return () => {
        stopped = true;
        this.resumeWaiters.delete(wake);
        evs.unsubscribe();
      };
    });
  }

  /**
   * Send `data` in chunks of at most `chunkSize` bytes, keeping up to `inFlight` (default 3: at 115200 two leave the line idle a little, 3 measured 0.92 of baud/10)
   * `socket.tx` calls outstanding so the line does not idle for a round trip per chunk.
   * Order is kept with the agent's tx HOLD (firmware-shim/luatos/agent.lua, {@link LuatosSocket.tx}
   * `resume`): pipelined chunks go with `resume: false`; when the firmware says the buffer is full
   * (nothing accepted) the agent refuses every later pipelined tx on the socket the same way, so
   * no chunk overtakes a refused one. The helper then stops issuing, lets the outstanding tx settle,
   * waits for TX_OK (or `retryMs`) and resends from the first refused chunk with `resume: true`.
   * The first chunk of every call also goes with `resume: true` (clears a hold left by an abandoned call).
   * Emits the number of bytes accepted so far after each chunk; completes when all were accepted.
   * With `inFlight: 1` it behaves as before (one tx at a time).
   * @throws TetherError `SOCKET` when tx fails, TX_OK reports -1, or a chunk behind a refused one was
   *   accepted (an agent without the hold: the stream may be reordered); `TIMEOUT` after `timeoutMs`
   *   without progress; `RESET` when the module resets.
   */
  send(data: Uint8Array | string, o: { chunkSize?: number; timeoutMs?: number; retryMs?: number; inFlight?: number } = {}): Observable<number> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    const chunkSize = o.chunkSize ?? (this.udp ? 1460 : Math.min(4096, this.socket.rpc.hello.maxmsg - 80));
    if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new InvalidArgumentError('send: chunkSize must be a positive integer (bytes)');
    if (this.udp && bytes.length > 1460) throw new InvalidArgumentError(`send: a UDP datagram of ${bytes.length} bytes is over the firmware's 1460-byte advice; use smaller datagrams`);
    const inFlight = o.inFlight ?? 3;
    if (!Number.isInteger(inFlight) || inFlight < 1) throw new InvalidArgumentError('send: inFlight must be a positive integer (tx calls outstanding)');
    const timeoutMs = o.timeoutMs ?? 30000;
    const retryMs = o.retryMs ?? 1000;
    type Tx = { off: number; len: number; seq: number; reply: Promise<Result<[boolean, unknown, boolean]>> };
    return new Observable<number>((sub) => {
      let stopped = false;
      (async () => {
        let acked = 0; // bytes accepted, in order
        let next = 0; // offset of the next chunk to issue
        let resume = true; // the next tx clears the agent's hold
        const q: Tx[] = []; // outstanding tx, in call order
        let lastProgress = Date.now();
        const issue = () => {
          const len = Math.min(chunkSize, bytes.length - next);
          const seq = this.txOkSeq;
          const reply = firstValueFrom(this.socket.tx(this.ctrl, bytes.subarray(next, next + len), { resume }));
          reply.catch(() => {}); // awaited below in order; never unhandled when the call is abandoned
          q.push({ off: next, len, seq, reply });
          next += len;
          resume = false;
        };
        while (acked < bytes.length && !stopped) {
          if (this.failure) throw this.failure;
          while (q.length < inFlight && next < bytes.length) issue();
          const t = q.shift()!;
          const r = await t.reply;
          if (stopped) return;
          if (!r.ok) throw notOk('socket.tx', r);
          if (r[1] !== true) {
            if (t.off !== acked) throw new TetherError('SOCKET', `send: bytes ${t.off}.. were accepted after a refused chunk at ${acked}: the agent lacks the tx hold (update firmware-shim/luatos/main.lua) and the stream may be reordered`, { context: { at: acked, off: t.off } });
            acked += t.len;
            lastProgress = Date.now();
            sub.next(acked);
            continue;
          }
          // buffer full: nothing of this chunk was accepted, and the agent now refuses every tx
          // behind it. Let those settle, wait for a TX_OK newer than the refused tx, resend from it.
          for (const later of q.splice(0)) {
            const lr = await later.reply;
            if (stopped) return;
            if (!lr.ok) throw notOk('socket.tx', lr);
            if (lr[1] !== true) throw new TetherError('SOCKET', `send: bytes ${later.off}.. were accepted after the refused chunk at ${t.off}: the agent lacks the tx hold (update firmware-shim/luatos/main.lua) and the stream may be reordered`, { context: { at: t.off, off: later.off } });
          }
          if (Date.now() - lastProgress > timeoutMs) throw new TimeoutError(`send: the module's send buffer stayed full for ${timeoutMs} ms`, { ms: timeoutMs });
          if (this.txOkSeq === t.seq && !this.failure) await this.waitTxOk(retryMs);
          if (stopped) return;
          if (this.failure) throw this.failure;
          if (this.txOkParam === -1) throw new TetherError('SOCKET', 'send: TX_OK reported failure (-1): the connection broke');
          next = t.off;
          resume = true;
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
    // listen for CLOSED before discon; it settles either way (timeout, reset) and is ended in finally
    const ac = new AbortController();
    const closed = waitEvent(this.socket, this.ctrl, [SocketEvent.CLOSED], o.timeoutMs ?? 5000, { signal: ac.signal }).then(
      () => undefined,
      () => undefined,
    );
    try {
      const r = await firstValueFrom(this.socket.discon(this.ctrl));
      if (r.ok && r[1] === false) await closed;
    } finally {
      ac.abort();
      await lastValueFrom(this.socket.close(this.ctrl)).catch(() => {});
      await lastValueFrom(this.socket.release(this.ctrl)).catch(() => {});
    }
  }
}

/**
 * Open a TCP, TLS or UDP connection from the module to `host:port`:
 * create, config, wait for the adapter (LINK), connect, wait for ON_LINE.
 * Emits the connection once it is online; unsubscribing before that cancels and releases the socket.
 * Every failure (config refused, linkup failed, a timeout, a reset) errors the observable and
 * releases the socket; no wait is left behind (nothing rejects unobserved later).
 * @throws TetherError `SOCKET` (create returned nil, config false, linkup failed, connect refused: ON_LINE -1),
 *   `TIMEOUT` (no LINK or ON_LINE within `timeoutMs`), `RESET` (the module reset meanwhile).
 */
export function openSocket(socket: LuatosSocket, host: string, port: number, o: OpenOptions = {}): Observable<LuatosConnection> {
  checkOpenSocketArgs(host, port, o); // INVALID_ARGUMENT before a byte is sent
  return new Observable<LuatosConnection>((sub) => {
    let ctrl: SocketCtrl | null = null;
    let done = false;
    let cancelled = false;
    // ends the event waits of this attempt, whichever way it ends
    const ac = new AbortController();
    const timeoutMs = o.timeoutMs ?? 15000;
    const checkCancelled = () => {
      if (cancelled) throw new TetherError('ABORTED', `openSocket(${host}, ${port}): unsubscribed`);
    };
    /**
     * A wait subscribed now (before the call that triggers its event, which can arrive in the
     * same chunk as that call's reply) and awaited later, or never when an earlier step fails:
     * mark it handled so that its rejection is never unhandled; `ac` ends it.
     */
    const early = (events: number[], c: SocketCtrl): Promise<SocketEventInfo> => {
      const p = waitEvent(socket, c, events, timeoutMs, { signal: ac.signal });
      p.catch(() => {});
      return p;
    };
    (async () => {
      ctrl = await firstValueFrom(socket.create(o.adapter ?? null));
      checkCancelled();
      if (!ctrl) throw new TetherError('SOCKET', 'socket.create returned nil: bad adapter or out of sockets', { context: { adapter: o.adapter ?? null, reason: 'EMFILE' } });
      const c = ctrl;
      const cfg = await firstValueFrom(socket.config(c, { udp: o.udp ?? false, tls: o.tls ?? false, serverCert: o.ca, localPort: o.localPort }));
      checkCancelled();
      if (cfg[0] !== true) throw notOk('socket.config', cfg);
      const linked = early([SocketEvent.LINK], c);
      const link = await firstValueFrom(socket.linkup(c));
      checkCancelled();
      if (!link.ok) throw notOk('socket.linkup', link);
      if (link[1] !== true) {
        const ev = await linked;
        if (ev.param !== 0) throw new TetherError('SOCKET', 'network adapter did not link up (LINK -1)');
      }
      const online = early([SocketEvent.ON_LINE], c);
      const r = await firstValueFrom(socket.connect(c, host, port));
      checkCancelled();
      if (!r.ok) throw notOk(`socket.connect(${host}, ${port})`, r);
      const ev = await online;
      checkCancelled();
      if (ev.param !== 0) throw new TetherError('SOCKET', `connect to ${host}:${port} failed (ON_LINE -1: refused, unreachable or DNS failure)`, { context: { host, port, reason: 'ECONNREFUSED' } });
      done = true;
      sub.next(new LuatosConnection(socket, c, o.udp ?? false));
      sub.complete();
    })()
      .catch(async (e) => {
        if (ctrl) await releaseQuietly(socket, ctrl);
        sub.error(e);
      })
      .finally(() => ac.abort());
    return () => {
      if (done) return;
      cancelled = true;
      ac.abort(); // the attempt stops at its next step and releases the socket
    };
  });
}

async function releaseQuietly(socket: LuatosSocket, ctrl: SocketCtrl): Promise<void> {
  if (ctrl.epoch !== socket.rpc.currentEpoch || socket.rpc.isClosed) return;
  await lastValueFrom(socket.close(ctrl)).catch(() => {});
  await lastValueFrom(socket.release(ctrl)).catch(() => {});
}

/**
 * Wait for the first of `events` on `ctrl`. Subscribe (call this) before the call that triggers it.
 * Rejects with TetherError `TIMEOUT` after `timeoutMs`, `RESET` when the module resets (at once for a
 * socket of a previous boot), `DISCONNECTED` when the link closes, `ABORTED` when `o.signal` fires.
 * A wait that may end up not awaited must get a rejection handler (or be aborted).
 */
export function waitEvent(socket: LuatosSocket, ctrl: SocketCtrl, events: number[], timeoutMs: number, o: { signal?: AbortSignal } = {}): Promise<SocketEventInfo> {
  let stream: Observable<SocketEventInfo>;
  try {
    stream = socket.events(ctrl);
  } catch (e) {
    return Promise.reject(e);
  }
  return new Promise((resolve, reject) => {
    const what = `${events.map((e) => eventName(e) ?? String(e)).join('/')} on ${ctrl}`;
    if (o.signal?.aborted) {
      reject(new TetherError('ABORTED', `wait for ${what}: aborted`));
      return;
    }
    let settled = false;
    let s: Subscription | undefined;
    const finish = (settle: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      o.signal?.removeEventListener('abort', onAbort);
      s?.unsubscribe();
      settle();
    };
    const onAbort = () => finish(() => reject(new TetherError('ABORTED', `wait for ${what}: aborted`)));
    const t = setTimeout(() => finish(() => reject(new TimeoutError(`no ${what} within ${timeoutMs} ms`, { ms: timeoutMs }))), timeoutMs);
    o.signal?.addEventListener('abort', onAbort, { once: true });
    s = stream.subscribe({
      next: (e) => {
        if (events.includes(e.event)) finish(() => resolve(e));
      },
      error: (e) => finish(() => reject(e)),
      complete: () => finish(() => reject(new TetherError('DISCONNECTED', `link closed while waiting for ${what}`))),
    });
    if (settled) s.unsubscribe();
  });
}

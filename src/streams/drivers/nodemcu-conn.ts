/**
 * Helpers on top of the raw `net` calls, following the firmware's rules
 * (docs/firmware/nodemcu.md, TCP send and the sent event): chunks within the 2920-byte send buffer,
 * at most two sends unACKed and only together within it (one send call awaiting its reply), a host-side connect timeout (a failed
 * DNS lookup or a missing route leaves the socket with no callback at all), and
 * no waiting for "disconnection" after a local close (the firmware sends none).
 */
import { Observable, Subscription, firstValueFrom, lastValueFrom, merge, take, timer } from 'rxjs';
import { map } from 'rxjs';
import { InvalidArgumentError, TetherError, TimeoutError, isNoMemory } from '../../errors.js';
import { isNetError } from '../../api/nodemcu/errors.js';
import { NodeMcuNet, TCP_MSS, TCP_SEND_BUFFER, TcpSocket, type TcpEventName, checkConnectTcpArgs } from '../../api/nodemcu/net.js';

/** Options of {@link sendAll}. */
export interface SendAllOptions {
  /** Bytes per `send` (1..2920). @default 1460 (one segment) */
  chunkSize?: number;
  /** Give up when one chunk gets no "sent" (ACK) for this long (ms). @default 15000 */
  sentTimeoutMs?: number;
  /**
   * How often a chunk is retried before failing when it was refused for memory: the firmware's
   * "out of memory" (lwIP ERR_MEM, the send buffer is full) or the agent's `NOMEM` (the Lua heap
   * had no room to decode the call: it did not run). @default 50
   */
  memoryRetries?: number;
  /**
   * Sends not yet ACKed ("sent") allowed at once (1 or 2). Two only when both fit the 2920-byte
   * send buffer together (chunks ≤ 1460 bytes). @default 2
   */
  inFlight?: number;
}

/**
 * Send `data` safely over a connected TCP socket: chunks of at most `chunkSize` bytes
 * (never over the 2920-byte send buffer), up to `inFlight` (default 2) sends not yet ACKed
 * ("sent") when they fit the buffer together (chunks ≤ 1460 = TCP_SND_BUF / 2), so the next
 * chunk crosses the line while the previous one waits for its ACK.
 *
 * Why only ONE send is ever awaiting its REPLY (the next send call goes out once the previous
 * call returned): "out of memory" refuses a send atomically, but an ACK can free the buffer
 * between two queued calls, so with two calls outstanding chunk k could be refused and chunk
 * k+1 accepted: the stream would be reordered (the NodeMCU agent has no tx hold). With one call
 * outstanding a refused chunk has nothing behind it and is retried after the next "sent" (or
 * 100 ms). So is a chunk the agent refused with `NOMEM` (its Lua heap had no room to decode the
 * call, which did not run: {@link isNoMemory}). The reply comes back in a few ms; the ACK ("sent") takes a TCP round trip, and that is
 * the wait that overlaps.
 *
 * "sent" carries no byte count and may cover several sends (one ACK) or fire several times for
 * one; the helper counts each "sent" as ACKing the oldest send not yet counted, which can lag
 * (then it just keeps fewer sends unACKed, never more than fit).
 * Emits the number of bytes handed over (accepted by the module) so far after each chunk;
 * completes when the last chunk was ACKed (counted to zero, or a "sent" came after the last
 * chunk was sent: with two unACKed that "sent" may be the previous chunk's, see the count above). Errors: NetError (the firmware refused), TetherError `SOCKET` (the
 * connection ended meanwhile), `TIMEOUT` (no ACK in time), `RESET` (the module reset: the socket is gone).
 */
export function sendAll(sock: TcpSocket, data: Uint8Array | string, o: SendAllOptions = {}): Observable<number> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  const chunkSize = o.chunkSize ?? TCP_MSS;
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > TCP_SEND_BUFFER) {
    throw new InvalidArgumentError(`sendAll: chunkSize must be an integer 1..${TCP_SEND_BUFFER} (the module's send buffer), got ${String(chunkSize)}`);
  }
  const inFlight = o.inFlight ?? 2;
  if (inFlight !== 1 && inFlight !== 2) throw new InvalidArgumentError(`sendAll: inFlight must be 1 or 2, got ${String(inFlight)}`);
  const sentTimeoutMs = o.sentTimeoutMs ?? 15000;
  const retries = o.memoryRetries ?? 50;
  return new Observable<number>((sub) => {
    let stopped = false;
    let sentSeq = 0;
    let ended: number | undefined;
    /** The socket's events ended: `RESET` (module reset) or `DISCONNECTED` (link closed). */
    let failure: Error | undefined;
    /** Sizes of the accepted sends not yet counted as ACKed, oldest first. */
    const unacked: number[] = [];
    const waiters = new Set<() => void>();
    const wake = () => {
      for (const w of [...waiters]) w();
    };
    const evs = merge(
      sock.sent$.pipe(map(() => 'sent' as const)),
      sock.disconnection$.pipe(map((e) => ['end', e] as const)),
      sock.reconnection$.pipe(map((e) => ['end', e] as const)),
    ).subscribe({
      next: (e) => {
        if (e === 'sent') {
          sentSeq++;
          unacked.shift();
        } else ended = e[1];
        wake();
      },
      error: (e) => {
        failure = e;
        wake();
      },
      complete: () => {
        failure ??= new TetherError('DISCONNECTED', 'sendAll: the link to the module closed');
        wake();
      },
    });
    const waitSent = (seq: number, ms: number): Promise<boolean> =>
      new Promise((resolve) => {
        if (sentSeq !== seq || ended !== undefined || failure) return resolve(true);
        const done = () => {
          clearTimeout(t);
          waiters.delete(done);
          resolve(sentSeq !== seq || ended !== undefined || failure !== undefined);
        };
        const t = setTimeout(done, ms);
        waiters.add(done);
      });
    const unackedBytes = () => unacked.reduce((a, b) => a + b, 0);
    /** Room for `len` more bytes next to the sends not yet ACKed (as far as the host can tell). */
    const fits = (len: number) => unacked.length === 0 || (unacked.length < inFlight && unackedBytes() + len <= TCP_SEND_BUFFER);
    const check = (off: number) => {
      if (failure) throw failure;
      if (ended !== undefined) throw new TetherError('SOCKET', `sendAll: the connection ended (err ${ended}) after ${off} of ${bytes.length} bytes`, { context: { err: ended, sent: off, reason: 'EPIPE' } });
    };
    (async () => {
      let off = 0;
      let lastSeq = sentSeq; // sentSeq just before the last chunk was sent
      while (off < bytes.length && !stopped) {
        const chunk = bytes.subarray(off, off + chunkSize);
        // wait until the chunk fits next to the sends not yet ACKed
        while (!fits(chunk.length)) {
          check(off);
          const seq = sentSeq;
          if (!(await waitSent(seq, sentTimeoutMs))) {
            throw new TimeoutError(`sendAll: no "sent" (ACK) within ${sentTimeoutMs} ms after ${off} of ${bytes.length} bytes`, { ms: sentTimeoutMs });
          }
          if (stopped) return;
        }
        let tries = 0;
        for (;;) {
          check(off);
          const seq = sentSeq;
          lastSeq = seq;
          try {
            await lastValueFrom(sock.send(chunk), { defaultValue: undefined });
          } catch (e) {
            if ((isNetError(e, 'OUT_OF_MEMORY') || isNoMemory(e)) && tries++ < retries) {
              // the send buffer frees on the next ACK; the Lua heap as the agent's events for the
              // host go out (nothing ran: with one send call outstanding, none behind it either)
              await waitSent(seq, 100);
              if (stopped) return;
              continue;
            }
            throw e;
          }
          break;
        }
        if (stopped) return;
        unacked.push(chunk.length);
        off += chunk.length;
        sub.next(off);
      }
      // the last chunk: wait for its ACK (counted down to zero, or any "sent" after it was sent)
      while (!stopped && unacked.length > 0 && sentSeq === lastSeq) {
        // every byte was handed to lwIP; a graceful close (err 0) now, before the last ACK was
        // reported, ends the wait like a write Node's net had handed to the kernel
        if (ended === 0 && !failure) break;
        check(off);
        if (!(await waitSent(lastSeq, sentTimeoutMs))) {
          throw new TimeoutError(`sendAll: no "sent" (ACK) within ${sentTimeoutMs} ms after ${off} of ${bytes.length} bytes`, { ms: sentTimeoutMs });
        }
      }
      if (!stopped) sub.complete();
    })()
      .catch((e) => {
        if (!stopped) sub.error(e);
      })
      .finally(() => evs.unsubscribe());
    return () => {
      stopped = true;
      evs.unsubscribe();
      wake();
    };
  });
}

/** Options of {@link connectTcp}. */
export interface ConnectTcpOptions {
  /** Host-side connect timeout (ms): the firmware may never call back (DNS failure, no route). @default 15000 */
  timeoutMs?: number;
}

/**
 * A TCP connection made by {@link connectTcp} or accepted by a server: received bytes are
 * buffered from the start, so nothing is lost before {@link data} is subscribed.
 * A module reset ends it with `RESET` ({@link ResetError}).
 */
export class NodeMcuConnection {
  private readonly buffered: Uint8Array[] = [];
  private consumer?: { next(b: Uint8Array): void; complete(): void; error(e: unknown): void };
  private endErr?: number;
  /** Why the socket's events ended: `RESET` (module reset) or `DISCONNECTED` (link closed). */
  private failure?: Error;
  private readonly sub: Subscription;
  private closed = false;

  /** Wrap a connected (or connecting) socket whose receive/disconnection/reconnection callbacks are registered. */
  constructor(readonly socket: TcpSocket) {
    this.sub = merge(
      socket.receive$.pipe(map((b) => ({ data: b }))),
      socket.disconnection$.pipe(map((e) => ({ end: e }))),
      socket.reconnection$.pipe(map((e) => ({ end: e }))),
    ).subscribe({
      next: (x) => {
        if ('data' in x) {
          if (this.consumer) this.consumer.next(x.data);
          else this.buffered.push(x.data);
        } else {
          this.endErr = x.end;
          this.consumer?.complete();
        }
      },
      // a module reset (the socket's events end with RESET: src/api/reset.ts) or the link closing
      error: (e) => this.fail(e),
      complete: () => this.fail(new TetherError('DISCONNECTED', 'the link to the module closed')),
    });
  }

  private fail(e: Error): void {
    if (this.endErr !== undefined) return; // already ended normally
    this.failure ??= e;
    this.consumer?.error(e);
  }

  /** The error code the connection ended with (0 = remote close), undefined while open. */
  get endedWith(): number | undefined {
    return this.endErr;
  }

  /**
   * Received bytes (one chunk per "receive" event), including what arrived before subscribing;
   * completes when the peer closed or an error ended the connection. Errors with `RESET`
   * ({@link ResetError}) when the module resets, `DISCONNECTED` when the link closes.
   * One subscriber at a time.
   */
  data(): Observable<Uint8Array> {
    return new Observable<Uint8Array>((sub) => {
      this.consumer = sub;
      for (const b of this.buffered.splice(0)) sub.next(b);
      if (this.endErr !== undefined) sub.complete();
      else if (this.failure) sub.error(this.failure);
      return () => {
        if (this.consumer === sub) this.consumer = undefined;
      };
    });
  }

  /** {@link sendAll} on this connection. */
  send(data: Uint8Array | string, o?: SendAllOptions): Observable<number> {
    return sendAll(this.socket, data, o);
  }

  /** Close (FIN; the firmware fires no "disconnection" for a local close) and release the handle. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.sub.unsubscribe();
    const rpc = this.socket.net.rpc;
    if (rpc.isClosed || this.socket.epoch !== rpc.currentEpoch) return;
    if (this.endErr === undefined) await lastValueFrom(this.socket.close(), { defaultValue: undefined }).catch(() => undefined);
    await lastValueFrom(this.socket.release(), { defaultValue: undefined }).catch(() => undefined);
  }
}

const CLIENT_EVENTS: TcpEventName[] = ['connection', 'reconnection', 'disconnection', 'receive', 'sent'];

/**
 * Connect from the module to `host:port`: createConnection, register the callbacks, connect,
 * wait for "connection". Emits the connection and completes. Every failure releases the socket
 * and leaves no wait or timer behind.
 * @throws TetherError `SOCKET` (refused / reset / aborted: the err code is in context),
 *   `TIMEOUT` (no callback within `timeoutMs`; the socket is closed and released),
 *   `RESET` (the module reset meanwhile), NetError.
 */
export function connectTcp(net: NodeMcuNet, host: string, port: number, o: ConnectTcpOptions = {}): Observable<NodeMcuConnection> {
  checkConnectTcpArgs(host, port, o); // INVALID_ARGUMENT before a byte is sent
  const timeoutMs = o.timeoutMs ?? 15000;
  return new Observable<NodeMcuConnection>((sub) => {
    type Outcome = { ok: true } | { ok: false; err?: number } | { error: unknown };
    let sock: TcpSocket | undefined;
    let done = false;
    let cancelled = false;
    let outcomeSub: Subscription | undefined;
    let settle: ((r: Outcome) => void) | undefined;
    const checkCancelled = () => {
      if (cancelled) throw new TetherError('ABORTED', `connectTcp(${host}, ${port}): unsubscribed`);
    };
    (async () => {
      sock = await firstValueFrom(net.createConnection());
      checkCancelled();
      const s = sock;
      for (const ev of CLIENT_EVENTS) await lastValueFrom(s.on(ev), { defaultValue: undefined });
      checkCancelled();
      const conn = new NodeMcuConnection(s);
      // listen for the outcome before connecting; it is settled or unsubscribed on every path
      const outcome = new Promise<Outcome>((resolve) => (settle = resolve));
      outcomeSub = merge(
        s.connection$.pipe(map(() => ({ ok: true as const }))),
        s.reconnection$.pipe(map((e) => ({ ok: false as const, err: e }))),
        s.disconnection$.pipe(map((e) => ({ ok: false as const, err: e }))),
        timer(timeoutMs).pipe(map(() => ({ ok: false as const, err: undefined }))),
      )
        .pipe(take(1))
        .subscribe({
          next: (r) => settle?.(r),
          error: (e) => settle?.({ error: e }), // module reset (RESET) or link closed
          complete: () => settle?.({ error: new TetherError('DISCONNECTED', `connect to ${host}:${port}: the link to the module closed`) }),
        });
      try {
        await lastValueFrom(s.connect(port, host), { defaultValue: undefined });
      } catch (e) {
        await conn.close();
        throw e;
      }
      const r = await outcome;
      if ('error' in r) {
        await conn.close();
        throw r.error;
      }
      if (!r.ok) {
        await conn.close();
        if (r.err === undefined) throw new TimeoutError(`connect to ${host}:${port}: no callback within ${timeoutMs} ms (DNS failure or no route leaves the firmware silent)`, { ms: timeoutMs, host, port });
        throw new TetherError('SOCKET', `connect to ${host}:${port} failed (err ${r.err}: ${r.err === -9 ? 'refused or reset' : r.err === -8 ? 'aborted / timed out' : 'error'})`, { context: { host, port, err: r.err, reason: r.err === -8 ? 'ECONNABORTED' : 'ECONNREFUSED' } });
      }
      done = true;
      sub.next(conn);
      sub.complete();
    })()
      .catch(async (e) => {
        if (sock && !done) await lastValueFrom(sock.release(), { defaultValue: undefined }).catch(() => undefined);
        sub.error(e);
      })
      .finally(() => outcomeSub?.unsubscribe());
    return () => {
      if (done) return;
      // the attempt stops at its next step and releases the socket
      cancelled = true;
      outcomeSub?.unsubscribe();
      settle?.({ error: new TetherError('ABORTED', `connectTcp(${host}, ${port}): unsubscribed`) });
    };
  });
}

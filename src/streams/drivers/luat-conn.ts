/**
 * Helpers on top of the raw `socketcore` calls, following the core's rules
 * (docs/firmware/luat-socketcore.md, consequences for tether):
 * 1. one `sock_send` in flight per socket, each waiting for its SEND_CNF with a timeout
 *    (an unconnected socket never confirms), success tested as `ok === 1`;
 * 2. every RECV_IND drained with `sock_recv(index, recv_len)` (the core posts no further
 *    RECV_IND until that amount was read, so the stream stalls otherwise);
 * 3. teardown always `sock_close`, then CLOSE_CNF, then `sock_destroy` (after CLOSE_IND too);
 *    a failed CONN_CNF needs `sock_destroy` only. Otherwise the 10 slots leak;
 * 4. SSL with the `{hostName, caCert, clientCert, clientKey}` table of PEM text.
 */
import { checkOpenConnectionArgs } from '../../api/luat/socketcore.js';
import { Observable, Subscription, firstValueFrom, type Subscriber } from 'rxjs';
import { InvalidArgumentError, TetherError, TimeoutError } from '../../errors.js';
import { endOnReset, resetAsError, resetError } from '../../api/reset.js';
import { CONN_EXT_DNS_FAILED, IPPROTO_TCP, LIB_TCP_CHUNK, LIB_UDP_CHUNK, MAX_RECV_IND, MAX_SOCKETS, SO_KEEPALIVE, SOL_SOCKET, SocketType, TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, errName } from '../../api/luat/constants.js';
import type { CertTable, LuatSocketcore, SocketMessage } from '../../api/luat/socketcore.js';

/** Options of {@link openConnection}. */
export interface OpenOptions {
  /** @default 'tcp' */
  type?: 'tcp' | 'udp' | 'ssl';
  /** SSL: certificates as PEM text. `hostName` defaults to the host. Without `caCert` the server is not verified (the core's default). */
  cert?: CertTable;
  /** SSL: fail when the server certificate does not verify (`insist` = 0). @default false (the core keeps connecting) */
  strictCert?: boolean;
  /** Wait for CONN_CNF (and for the data link first) this long, ms. @default 30000 */
  timeoutMs?: number;
  /** Wait for `link.isReady()` / IP_READY_IND before connecting. @default true */
  waitReady?: boolean;
  /** TCP keepalive through `sock_setopt` (seconds / count), where the core has it. */
  keepAlive?: { idle: number; interval?: number; count?: number };
  /** `recvBufferLen` (TCP/UDP). */
  recvBufferLen?: number;
  /** Local port (TCP/UDP). */
  localPort?: number;
  /** Use `sock_conn` instead of `sock_conn_ext` (which the lib prefers when present). @default false */
  plainConn?: boolean;
}

/** Counters that make the core's rules observable (tests, diag). */
export interface ConnectionStats {
  /** `sock_send` calls made. */
  sends: number;
  /** SEND_CNF received for them. */
  sendCnfs: number;
  /** Most `sock_send` calls ever outstanding at once (the rule: 1). */
  maxSendsInFlight: number;
  /** RECV_IND received. */
  recvInds: number;
  /** `sock_recv` calls made (the rule: one per RECV_IND, with its recv_len). */
  recvCalls: number;
  /** Largest recv_len seen (the core caps it at 2048). */
  maxRecvLen: number;
  /** RECV_IND whose `sock_recv` returned fewer bytes than announced. */
  shortReads: number;
  bytesOut: number;
  bytesIn: number;
}

/**
 * Wait until `link.isReady()` or IP_READY_IND, at most `timeoutMs`. Returns at once when the
 * agent has no `link` lib (readiness is then unknown: the CONN_CNF will tell).
 * @throws TetherError `TIMEOUT` (no IP_READY_IND in time), `RESET` (the module reset meanwhile).
 */
export async function waitReady(sc: LuatSocketcore, timeoutMs: number): Promise<void> {
  if (!sc.rpc.hello.caps.includes('link.isReady')) return;
  const epoch = sc.rpc.currentEpoch;
  let up = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  // listen before asking (the topic can come right after the answer), and end on a reset
  const subs = new Subscription();
  subs.add(
    sc.readiness.subscribe((r) => {
      if (r.topic !== 'IP_READY_IND') return;
      up = true;
      wake?.();
    }),
  );
  subs.add(
    resetAsError(sc.rpc, 'waiting for the data link (IP_READY_IND)', epoch).subscribe({
      error: (e) => {
        failure = e;
        wake?.();
      },
    }),
  );
  try {
    const [ready] = await firstValueFrom(sc.isReady());
    if (ready || up) return;
    if (!failure) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, timeoutMs);
      });
    }
    if (failure) throw failure;
    if (!up) throw new TimeoutError(`the data link did not come up (no IP_READY_IND) within ${timeoutMs} ms`, { ms: timeoutMs });
  } finally {
    clearTimeout(timer);
    subs.unsubscribe();
  }
}

interface TapWaiter {
  pred: (m: SocketMessage) => boolean;
  resolve: (m: SocketMessage) => void;
  reject: (e: Error) => void;
}

/**
 * Collects the messages of the socket layer from now on, so none is missed between a call and its
 * reply. When the message stream errors (a module reset: `RESET`) or the link closes, every wait
 * rejects with that error at once instead of running into its timeout.
 */
class MessageTap {
  private readonly seen: SocketMessage[] = [];
  private waiters: TapWaiter[] = [];
  private failure?: Error;
  private readonly sub: Subscription;
  /** `keep`: which unclaimed messages to remember for a later `next` (the others are dropped). */
  constructor(messages: Observable<SocketMessage>, keep: ReadonlyArray<SocketMessage['name']>) {
    this.sub = messages.subscribe({
      next: (m) => {
        const w = this.waiters.find((x) => x.pred(m));
        if (w) {
          this.waiters = this.waiters.filter((x) => x !== w);
          w.resolve(m);
        } else if (keep.includes(m.name)) this.seen.push(m);
      },
      error: (e) => this.fail(e),
      complete: () => this.fail(new TetherError('DISCONNECTED', 'the link to the module closed')),
    });
  }
  private fail(e: Error): void {
    this.failure ??= e;
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w.reject(e);
  }
  /**
   * The first message (already seen or to come) matching `pred`.
   * Rejects with `TIMEOUT` after `timeoutMs`, `RESET` / `DISCONNECTED` when the messages end, `CLOSED` on {@link close}.
   */
  next(pred: (m: SocketMessage) => boolean, timeoutMs: number, what: string): Promise<SocketMessage> {
    const i = this.seen.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.seen.splice(i, 1)[0]);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<SocketMessage>((resolve, reject) => {
      const w: TapWaiter = {
        pred,
        resolve: (m) => {
          clearTimeout(t);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new TimeoutError(`no ${what} within ${timeoutMs} ms`, { ms: timeoutMs }));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }
  /** Keep `ms` as if they had come now (messages seen before this tap listened). */
  remember(ms: readonly SocketMessage[]): void {
    this.seen.push(...ms);
  }
  /** Stop listening; waits still pending reject with `CLOSED`. */
  close(): void {
    this.sub.unsubscribe();
    this.fail(new TetherError('CLOSED', 'no longer waiting for socket messages'));
  }
}

/**
 * An open socket slot of the module: `send()` writes (one `sock_send` in flight), `data()` /
 * `datagrams()` read (every RECV_IND is drained), `close()` tears down (close, CLOSE_CNF, destroy).
 * A module reset ends its streams with `RESET` ({@link ResetError}) and fails its sends.
 */
export class LuatConnection {
  readonly stats: ConnectionStats = { sends: 0, sendCnfs: 0, maxSendsInFlight: 0, recvInds: 0, recvCalls: 0, maxRecvLen: 0, shortReads: 0, bytesOut: 0, bytesIn: 0 };
  private readonly sub: Subscription;
  private readonly tap: MessageTap;
  private inFlight = 0;
  private sendChain: Promise<void> = Promise.resolve();
  private recvChain: Promise<void> = Promise.resolve();
  private readonly buffered: Uint8Array[] = [];
  private bufferedBytes = 0;
  private readonly readers = new Set<Subscriber<Uint8Array>>();
  private held: SocketMessage[] = [];
  private ended = false;
  private failure?: Error;
  private peerClosed = false;
  private closing?: Promise<void>;
  private readonly epoch: number;

  /** @internal use {@link openConnection}. */
  constructor(
    readonly sc: LuatSocketcore,
    /** The core's socket index (0..9). */
    readonly index: number,
    readonly type: 'tcp' | 'udp' | 'ssl',
    /** Bytes kept for a reader before draining stops (the core then holds back: flow control). @default 1 MiB */
    private readonly highWater = 1 << 20,
    /** Boot the slot belongs to. @default the current boot */
    epoch: number = sc.rpc.currentEpoch,
    /**
     * Messages of this slot that came after its CONN_CNF and before this constructor ran (they are
     * handled first, in order). The core posts no further RECV_IND until the announced bytes are
     * read, so a RECV_IND missed here would stall the socket for good. @default none
     */
    early: readonly SocketMessage[] = [],
  ) {
    this.epoch = epoch;
    this.tap = new MessageTap(sc.messagesOf(index, epoch), ['SEND_CNF', 'CLOSE_IND']);
    this.tap.remember(early.filter((m) => m.name === 'SEND_CNF' || m.name === 'CLOSE_IND'));
    for (const m of early) this.onMessage(m);
    // the slot's messages end with RESET when the module resets (src/api/reset.ts): so does the connection
    this.sub = sc.messagesOf(index, epoch).subscribe({
      next: (m) => this.onMessage(m),
      error: (e) => this.end(e),
      complete: () => this.end(new TetherError('DISCONNECTED', 'the link to the module closed')),
    });
  }

  private onMessage(m: SocketMessage): void {
    if (m.name === 'RECV_IND') this.onRecvInd(m);
    else if (m.name === 'CLOSE_IND') {
      this.peerClosed = true;
      // everything before CLOSE_IND was announced earlier: end once those reads are done
      this.recvChain = this.recvChain.then(() => this.end());
    }
  }

  /** True once the peer closed (CLOSE_IND). */
  get closedByPeer(): boolean {
    return this.peerClosed;
  }

  /** Messages of this socket (hot); errors with `RESET` when the module resets. */
  get messages(): Observable<SocketMessage> {
    return this.sc.messagesOf(this.index, this.epoch);
  }

  private onRecvInd(m: SocketMessage): void {
    this.stats.recvInds++;
    this.stats.maxRecvLen = Math.max(this.stats.maxRecvLen, m.recv_len ?? 0);
    if (this.readers.size === 0 && this.bufferedBytes >= this.highWater) {
      this.held.push(m); // nobody reads: stop draining, the core stops indicating, TCP pushes back
      return;
    }
    this.recvChain = this.recvChain.then(() => this.drain(m));
  }

  private readGate?: Promise<void>;
  private openGate?: () => void;

  /**
   * Stop draining RECV_IND (`sock_recv`) for {@link data} until {@link resumeReading}: the core
   * then indicates nothing more and TCP pushes back on the peer (read backpressure). Idempotent.
   */
  pauseReading(): void {
    this.readGate ??= new Promise<void>((r) => (this.openGate = r));
  }

  /** Drain again after {@link pauseReading}. Idempotent. */
  resumeReading(): void {
    const open = this.openGate;
    this.readGate = undefined;
    this.openGate = undefined;
    open?.();
  }

  private async drain(m: SocketMessage): Promise<void> {
    if (this.readGate) await this.readGate; // opened by resumeReading, a failure or close()
    if (this.closing || this.ended) return;
    const len = m.recv_len ?? MAX_RECV_IND;
    this.stats.recvCalls++;
    try {
      const [data] = await firstValueFrom(this.sc.sock_recv(this.index, Math.max(1, len)));
      if (data.length < len) this.stats.shortReads++;
      if (data.length > 0) this.deliver(data);
    } catch (e) {
      this.end(e as Error);
    }
  }

  private deliver(data: Uint8Array): void {
    this.stats.bytesIn += data.length;
    if (this.readers.size > 0) for (const r of this.readers) r.next(data);
    else {
      this.buffered.push(data);
      this.bufferedBytes += data.length;
    }
  }

  private end(err?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = err;
    this.resumeReading(); // a drain waiting at the gate returns (nothing more is read)
    for (const r of [...this.readers]) {
      if (err && !this.closing) r.error(err);
      else r.complete();
    }
    this.readers.clear();
  }

  /**
   * The bytes received (TCP/SSL) or datagrams (UDP), in order. Bytes that arrived before
   * anyone subscribed are emitted first (to the first subscriber). Completes after the peer
   * closed (CLOSE_IND, which the core posts only once everything was read) or on `close()`.
   * Errors with `RESET` ({@link ResetError}) when the module resets, `DISCONNECTED` when the link closes.
   */
  data(): Observable<Uint8Array> {
    return new Observable<Uint8Array>((sub) => {
      while (this.buffered.length) sub.next(this.buffered.shift()!);
      this.bufferedBytes = 0;
      if (this.ended) {
        if (this.failure && !this.closing) sub.error(this.failure);
        else sub.complete();
        return;
      }
      this.readers.add(sub);
      const held = this.held;
      this.held = [];
      for (const m of held) this.recvChain = this.recvChain.then(() => this.drain(m));
      return () => this.readers.delete(sub);
    });
  }

  /** UDP: each emission is one datagram (one RECV_IND). Ends like {@link data}. */
  datagrams(): Observable<Uint8Array> {
    return this.data();
  }

  /**
   * Send `data`: chunks of at most `chunkSize` bytes (TCP/SSL default: the lib's 11200, capped by
   * the agent's message limit; UDP: one datagram of at most 1472 bytes), one `sock_send` at a time,
   * each confirmed by its SEND_CNF within `timeoutMs`. Emits the bytes confirmed so far.
   * Concurrent `send` calls on one connection are queued, never interleaved.
   * @throws TetherError `SOCKET` (`ok` 0, SEND_CNF result 1, peer closed), `TIMEOUT` (no SEND_CNF),
   *   `RESET` (the module reset), `CLOSED` (closed meanwhile).
   */
  send(data: Uint8Array | string, o: { chunkSize?: number; timeoutMs?: number } = {}): Observable<number> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    const maxmsg = this.sc.rpc.hello.maxmsg;
    const fits = maxmsg - 96; // bytes travel raw in protocol v2 (b<n>: tokens)
    const chunkSize = o.chunkSize ?? (this.type === 'udp' ? LIB_UDP_CHUNK : Math.min(LIB_TCP_CHUNK, fits));
    if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > 65535) throw new InvalidArgumentError('send: chunkSize must be an integer 1..65535 (bytes)');
    if (this.type === 'udp' && bytes.length > chunkSize) throw new InvalidArgumentError(`send: a ${bytes.length}-byte datagram is over ${chunkSize} bytes; send smaller datagrams`);
    const timeoutMs = o.timeoutMs ?? 30000;
    return new Observable<number>((sub) => {
      let stopped = false;
      const run = async () => {
        let off = 0;
        while (off < bytes.length && !stopped) {
          const chunk = bytes.subarray(off, off + chunkSize);
          await this.sendOne(chunk, timeoutMs);
          off += chunk.length;
          sub.next(off);
        }
      };
      const p = this.sendChain.then(run);
      this.sendChain = p.catch(() => {});
      p.then(
        () => {
          if (!stopped) sub.complete();
        },
        (e) => {
          if (!stopped) sub.error(e);
        },
      );
      return () => {
        stopped = true;
      };
    });
  }

  private async sendOne(chunk: Uint8Array, timeoutMs: number): Promise<void> {
    // after a reset the index may be another socket of the new boot: never send there
    if (this.sc.rpc.currentEpoch !== this.epoch) throw resetError(`send on socket ${this.index}`, undefined, this.epoch);
    if (this.closing) throw new TetherError('CLOSED', `socket ${this.index} is closing`);
    if (this.peerClosed) throw new TetherError('SOCKET', `socket ${this.index}: the peer closed the connection (CLOSE_IND)`);
    this.inFlight++;
    this.stats.maxSendsInFlight = Math.max(this.stats.maxSendsInFlight, this.inFlight);
    try {
      this.stats.sends++;
      const cnf = this.tap.next((m) => m.name === 'SEND_CNF' || m.name === 'CLOSE_IND', timeoutMs, `SEND_CNF for socket ${this.index}`);
      cnf.catch(() => {});
      const [ok, err] = await firstValueFrom(this.sc.sock_send(this.index, chunk));
      if (ok !== 1) throw new TetherError('SOCKET', `sock_send(${this.index}) refused: ok=${ok}, ${errName(err)}`, { context: { ok, err, errName: errName(err) } });
      const m = await cnf;
      if (m.name === 'CLOSE_IND') throw new TetherError('SOCKET', `socket ${this.index}: the peer closed the connection while a send was in flight`);
      this.stats.sendCnfs++;
      if (m.result !== 0) throw new TetherError('SOCKET', `socket ${this.index}: SEND_CNF result ${m.result} (the send failed)`, { context: { result: m.result } });
      this.stats.bytesOut += chunk.length;
    } finally {
      this.inFlight--;
    }
  }

  /**
   * Tear down: `sock_close`, wait for CLOSE_CNF (`timeoutMs`), `sock_destroy`. Idempotent; after a
   * module reset it only forgets the socket.
   * @throws TetherError `SOCKET` when `sock_destroy` does not free the slot.
   */
  close(o: { timeoutMs?: number } = {}): Promise<void> {
    this.resumeReading(); // a drain waiting at the gate sees `closing` and returns
    this.closing ??= (async () => {
      try {
        if (this.sc.rpc.isClosed || this.sc.rpc.currentEpoch !== this.epoch) return;
        await teardown(this.sc, this.index, o.timeoutMs ?? 5000, this.epoch);
      } finally {
        this.sub.unsubscribe();
        this.tap.close();
        this.end();
      }
    })();
    return this.closing;
  }
}

/** `sock_close`, CLOSE_CNF, `sock_destroy` (checked). Nothing when the slot's boot (`epoch`) is gone: the index may be another socket now. */
async function teardown(sc: LuatSocketcore, index: number, timeoutMs: number, epoch: number): Promise<void> {
  if (sc.rpc.isClosed || sc.rpc.currentEpoch !== epoch) return;
  const tap = new MessageTap(sc.messagesOf(index, epoch), ['CLOSE_CNF']);
  try {
    const cnf = tap.next((m) => m.name === 'CLOSE_CNF', timeoutMs, `CLOSE_CNF for socket ${index}`);
    cnf.catch(() => {});
    const [r] = await firstValueFrom(sc.sock_close(index));
    if (r === 1) await cnf.catch(() => undefined); // destroy is tried even if the CNF got lost
    const [d] = await firstValueFrom(sc.sock_destroy(index));
    if (d !== 1) throw new TetherError('SOCKET', `sock_destroy(${index}) returned ${d}: the slot was not freed`, { context: { index, close: r, destroy: d } });
  } finally {
    tap.close();
  }
}

/**
 * Open a TCP, UDP or SSL connection from the module to `host:port`: wait for the data link,
 * `sock_conn_ext` (or `sock_conn`), wait for CONN_CNF. Emits the connection once connected.
 * A failed CONN_CNF frees the slot with `sock_destroy`; a timeout tears it down fully.
 * Unsubscribing before the connection is emitted tears the slot down too.
 * @throws TetherError `SOCKET` (no free slot: all 10 in use; DNS failure; CONN_CNF failure),
 *   `TIMEOUT` (no data link or no CONN_CNF within `timeoutMs`), `RESET` (the module reset meanwhile).
 */
export function openConnection(sc: LuatSocketcore, host: string, port: number, o: OpenOptions = {}): Observable<LuatConnection> {
  checkOpenConnectionArgs(host, port, o); // INVALID_ARGUMENT before a byte is sent
  const kind = o.type ?? 'tcp';
  if (kind !== 'tcp' && kind !== 'udp' && kind !== 'ssl') throw new InvalidArgumentError(`openConnection: type must be tcp, udp or ssl, got ${String(kind)}`);
  const type = kind === 'tcp' ? SocketType.TCP : kind === 'udp' ? SocketType.UDP : SocketType.SSL;
  const timeoutMs = o.timeoutMs ?? 30000;
  return new Observable<LuatConnection>((sub) => {
    let index: number | undefined;
    let conn: LuatConnection | undefined;
    let done = false;
    let cancelled = false;
    const epoch = sc.rpc.currentEpoch;
    const tap = new MessageTap(sc.messages.pipe(endOnReset(sc.rpc, `openConnection(${host}, ${port})`, epoch)), ['CONN_CNF']);
    // Every socket message from now until the connection listens itself, in order: a RECV_IND (or
    // CLOSE_IND) can be decoded in the same read of the UART as its CONN_CNF, before the await on
    // CONN_CNF resumes. Lost, it would never be repeated: the core posts the next RECV_IND only after
    // the announced bytes were read (CSDK platform_socket.c, see src/sim/luat/socketcore.ts maybeInd).
    const log: SocketMessage[] = [];
    const logSub = sc.messages.subscribe({ next: (m) => (index === undefined || m.socket_index === index) && log.push(m), error: () => {} });
    (async () => {
      if (o.waitReady ?? true) await waitReady(sc, timeoutMs);
      const args = {
        cert: kind === 'ssl' ? { hostName: host, ...o.cert } : undefined,
        insist: kind === 'ssl' && o.strictCert ? (0 as const) : undefined,
        recvBufferLen: o.recvBufferLen,
        localPort: o.localPort,
      };
      const useExt = !o.plainConn && sc.rpc.hello.caps.includes('socketcore.sock_conn_ext');
      if (useExt) {
        const [r] = await firstValueFrom(sc.sock_conn_ext(type, host, port, args));
        if (r === CONN_EXT_DNS_FAILED) throw new TetherError('SOCKET', `sock_conn_ext(${host}): DNS failed (-2)`, { context: { host, port, result: r, reason: 'ENOTFOUND' } });
        if (r < 0) throw new TetherError('SOCKET', `sock_conn_ext(${host}, ${port}) returned ${r}: no free socket slot (the core has ${MAX_SOCKETS}), or the address is too long`, { context: { host, port, result: r, reason: 'EMFILE' } });
        index = r;
      } else {
        const [r] = await firstValueFrom(sc.sock_conn(type, host, port, args));
        if (r === null || r < 0) throw new TetherError('SOCKET', `sock_conn(${host}, ${port}) returned nil: no free socket slot (the core has ${MAX_SOCKETS})`, { context: { host, port, reason: 'EMFILE' } });
        index = r;
      }
      const idx = index;
      let cnf: SocketMessage;
      try {
        cnf = await tap.next((m) => m.name === 'CONN_CNF' && m.socket_index === idx, timeoutMs, `CONN_CNF for socket ${idx} (${host}:${port})`);
      } catch (e) {
        await teardown(sc, idx, 5000, epoch).catch(() => {});
        index = undefined;
        throw e;
      }
      if (cnf.result !== 0) {
        // a failed connect leaves the slot in the CLOSE state: destroy frees it
        const [d] = await firstValueFrom(sc.sock_destroy(idx));
        index = undefined;
        throw new TetherError('SOCKET', `connect to ${host}:${port} failed (CONN_CNF result ${cnf.result}: refused, unreachable, DNS or TLS failure); slot ${idx} ${d === 1 ? 'freed' : 'NOT freed'}`, {
          context: { host, port, index: idx, result: cnf.result, destroyed: d, reason: 'ECONNREFUSED' },
        });
      }
      // synchronously after the CONN_CNF resumed us: nothing can come between the log and the connection's own subscription
      const early = log.slice(log.indexOf(cnf) + 1).filter((m) => m.socket_index === idx);
      logSub.unsubscribe();
      log.length = 0;
      conn = new LuatConnection(sc, idx, kind, undefined, epoch, early);
      if (o.keepAlive && kind !== 'udp' && sc.hasSetopt) {
        const k = o.keepAlive;
        await firstValueFrom(sc.sock_setopt(idx, SOL_SOCKET, SO_KEEPALIVE, 1));
        await firstValueFrom(sc.sock_setopt(idx, IPPROTO_TCP, TCP_KEEPIDLE, k.idle));
        if (k.interval !== undefined) await firstValueFrom(sc.sock_setopt(idx, IPPROTO_TCP, TCP_KEEPINTVL, k.interval));
        if (k.count !== undefined) await firstValueFrom(sc.sock_setopt(idx, IPPROTO_TCP, TCP_KEEPCNT, k.count));
      }
      tap.close();
      done = true;
      if (cancelled) {
        await conn.close().catch(() => {});
        return;
      }
      sub.next(conn);
      sub.complete();
    })().catch(async (e) => {
      tap.close();
      logSub.unsubscribe();
      if (conn) await conn.close().catch(() => {});
      else if (index !== undefined) await teardown(sc, index, 5000, epoch).catch(() => {});
      if (!cancelled) sub.error(e);
    });
    return () => {
      cancelled = true;
      if (!done) {
        tap.close();
        logSub.unsubscribe();
      }
    };
  });
}


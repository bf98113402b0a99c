/**
 * RPC client of protocol v2 (docs/protocol.md sections 7-9): calls with ids,
 * timeouts and AbortSignal over the reliable {@link Link}; the hello handshake
 * (session, hello, capabilities by pages); reset handling (every call in flight
 * fails with `RESET`, then a new handshake by itself). A reconnecting transport's dropped
 * connection counts as a possible reset: calls in flight fail with `RESET`, `resets` emits
 * (reason `reconnect`), and once the transport is back the new handshake's boot epoch tells
 * whether the module really reset.
 */
import { Subject, Observable } from 'rxjs';
import type { Transport } from '../transport/transport.js';
import { BASE_MAX_FRAME, CAPS_PAGE, HELLO_CLAMP, HOST_FEATURES, HOST_MAX_FRAME, PROTOCOL_VERSION } from '../codec/constants.js';
import { callMessage, decodeMessage, FrameSyntaxError, type Message } from '../codec/frame.js';
import { field, toNumber, toText, type WireValue } from '../codec/values.js';
import { Link, type LinkCounters, type LinkReset, type QueuedMessage } from '../link/link.js';
import { InvalidArgumentError, RemoteError, ResetError, TetherError, TimeoutError } from '../errors.js';
import { isTimerMs, MAX_TIMER_MS } from '../util/timer.js';

/** What the agent said about itself in hello (docs/protocol.md section 9), clamped. */
export interface HelloInfo {
  proto: number;
  agent: string;
  family: string;
  fw?: string;
  bsp?: string;
  lua?: string;
  /** Integer width of the module's Lua (bits): 32, 64, or 53 for a double-number Lua 5.1. */
  intbits?: number;
  /** Longest line the agent accepts (bytes incl. `\n`), clamped to [255, 4096]. */
  maxframe: number;
  /** Longest frame the agent sends (bytes incl. `\n`), clamped to [255, 4096]. */
  outmax: number;
  /** The agent's receive window (bytes), clamped to [96, 65536]. */
  window: number;
  /** The agent's retransmit queue limit (bytes). */
  txwin: number;
  /** Longest message the agent accepts (bytes), clamped to [256, 1 MiB]. */
  maxmsg: number;
  /** The agent's Lua heap (KB). */
  heap?: number;
  epoch: number;
  /**
   * The agent reads `M` frames (several whole messages in one frame, protocol section 2) and,
   * once the host's hello said it reads them too, sends them. @default false (field absent)
   */
  bundle: boolean;
  /**
   * The agent reads sequenced frames with short heads (protocol section 1) and, once the host's
   * hello said it reads them too (feature 4), sends them. @default false (field absent: the
   * NodeMCU agent)
   */
  short: boolean;
  /**
   * The agent reads short acknowledgements (`~a`, protocol section 4; hello `short` 2) and, once
   * the host's hello said it reads them too (feature 8), sends them. @default false (field absent
   * or 1)
   */
  shortAcks: boolean;
  /**
   * Bytes of host frames kept ahead of a gap the agent adds to its window for a host with feature
   * 2 (protocol section 4), clamped to [0, 65536]. @default 0 (field absent: the NodeMCU agent)
   */
  hold: number;
  /** LuatOS: firmware returns the first boolean inverted (pre-2023-01-31). Undefined when unknown. */
  boolinv?: boolean;
  /** Functions the agent exposes, in index order (read with `agent.caps`). */
  caps: string[];
  /** The whole decoded hello table, for family-specific fields. */
  raw: Map<WireValue, WireValue>;
}

/** A line on the UART that is not a frame (boot log, print output), or an agent `L` notice. */
export interface LogLine {
  source: 'uart' | 'agent';
  /** 1 error, 2 warning, 3 info (agent notices); 3 for UART lines. */
  level: number;
  text: string;
}

/** A socket event from the agent (`E` message). */
export interface AgentEvent {
  handle: number;
  values: WireValue[];
  /** Boot epoch the event belongs to. */
  epoch: number;
}

/** A forwarded `sys.publish` topic (`P` message). */
export interface AgentPublish {
  topic: string;
  values: WireValue[];
}

/** Emitted when the module reset (its boot epoch changed) or the link session was lost. */
export interface ResetEvent {
  previousEpoch: number;
  /** The new epoch; equal to `previousEpoch` when only the session was lost. */
  epoch: number;
  /** Calls that failed with `RESET`. */
  failedCalls: number;
  /**
   * What showed it: a `B` frame (`boot`), an `A` with another epoch (`epoch`), an `A` with
   * another session (`session`), or a dropped connection of a reconnecting transport
   * (`reconnect`: `epoch` equals `previousEpoch`; if the handshake after the reconnect finds
   * another boot epoch, a second event with reason `epoch` follows).
   */
  reason: LinkReset['reason'];
}

/** Link and RPC counters: the link's (see {@link LinkCounters}) plus these. */
export interface LinkStats extends LinkCounters {
  /** Resets seen. */
  resets: number;
  /** Duration of the last successful handshake (ms). */
  handshakeMs: number;
  /** Calls sent (hello and capability pages included). */
  calls: number;
  /** Replies and errors that matched no pending call (late after a timeout or abort). */
  lateReplies: number;
  /** Messages from the agent that could not be decoded. */
  badMessages: number;
}

/** Options of {@link RpcClient}. */
export interface RpcClientOptions {
  /** Default per-call timeout (ms). @default 5000 */
  timeoutMs?: number;
  /** Total time to open a session and read hello, when opening or after a reset (ms). @default 10000 */
  handshakeTimeoutMs?: number;
  /** Re-handshake automatically after a reset. @default true */
  autoRehandshake?: boolean;
  /**
   * Line rate (baud): retransmission timeouts include the line time of unacknowledged bytes, and
   * the link paces its frames (`paceFrames`). Pass 0 for a module's own USB port (LuatOS
   * `uart.VUART_0`, Luat `uart.USB`): it has no baud, and pacing would only slow it.
   * @default the transport's `lineBaud`: a serial or RFC 2217 port's rate, the simulated UART's;
   *   unknown (nothing estimated) for raw TCP (LinkOptions.baud in src/link/link.ts)
   */
  baud?: number;
  /** Send a keepalive `Y` after this long without hearing the agent (ms). @default 400 */
  keepaliveMs?: number;
  /**
   * With `baud` known, leave the line quiet for a moment after 1 KB of frames or more, so a module
   * UART that reports received bytes only when its line goes quiet reads them as they come
   * (LinkOptions.paceFrames in src/link/link.ts). @default true
   */
  paceFrames?: boolean;
}

/** Per-call options. */
export interface CallOptions {
  /** Timeout for this call (ms, > 0); overrides the client's default. */
  timeoutMs?: number;
  /** Abort the call (it fails with code `ABORTED`); a call already sent still runs on the module. */
  signal?: AbortSignal;
  /**
   * Queue the call ahead of the messages that wait on the link and have not started (after the
   * message being cut into frames and after earlier `ahead` calls), so that it does not wait
   * behind bulk writes: a `socket.rx` behind three 4 KB `socket.tx` waits about a second at
   * 115200 baud. It may then run on the module before calls made earlier, so use it only where
   * the order does not matter (reads). @default false (calls go out in the order made)
   */
  ahead?: boolean;
}

/** A call in flight; settled exactly once by {@link RpcClient} (`settle`). */
class Pending {
  done = false;
  /** The call's message on the link (set once queued). */
  msg?: QueuedMessage;
  onAbort?: () => void;
  constructor(
    readonly id: number,
    readonly fn: string,
    readonly timeoutMs: number,
    /** `performance.now()` time at which the call fails with `TIMEOUT`. */
    readonly deadline: number,
    readonly queue: DeadlineQueue,
    public resolve: (v: WireValue[]) => void,
    public reject: (e: Error) => void,
    readonly signal?: AbortSignal,
  ) {}
}

/** What a settled {@link Pending} holds instead of its promise's functions. */
function settled(): void {}

/**
 * Calls that share one timeout value, in call order: their deadlines ascend, so one timer
 * for the earliest live deadline over all queues serves every call. Settled calls are
 * dropped from the head as they settle, and compacted away when most of a queue is settled.
 */
class DeadlineQueue {
  items: Pending[] = [];
  head = 0;
  live = 0;
}


const MAX_ID = 65535;
/** Functions every v2 agent answers by name. */
const BUILTIN = new Set(['hello', 'agent.caps', 'agent.stats']);

function checkTimeout(ms: number | undefined, what: string): void {
  if (ms !== undefined && !isTimerMs(ms)) {
    throw new InvalidArgumentError(`${what}: timeoutMs must be a positive number of milliseconds (at most ${MAX_TIMER_MS}), got ${String(ms)}`);
  }
}

/**
 * An RPC session over one transport. Create with {@link RpcClient.open}, which
 * handshakes before resolving. Every call settles exactly once: with the values,
 * a typed error (`REMOTE`, `RESET`, `DISCONNECTED`, `CLOSED`, `UNSUPPORTED`,
 * `TOO_LARGE`, `ABORTED`, `INVALID_ARGUMENT`) or `TIMEOUT`.
 */
export class RpcClient {
  /** Non-frame UART lines and agent notices (hot: nothing is replayed). */
  readonly logs: Observable<LogLine>;
  /** Socket events (hot). */
  readonly events: Observable<AgentEvent>;
  /** Forwarded topics such as NTP_UPDATE (hot). */
  readonly publishes: Observable<AgentPublish>;
  /** Module resets (hot). */
  readonly resets: Observable<ResetEvent>;
  /** The reliable link under the calls. */
  readonly link: Link;

  private readonly logs$ = new Subject<LogLine>();
  private readonly events$ = new Subject<AgentEvent>();
  private readonly publishes$ = new Subject<AgentPublish>();
  private readonly resets$ = new Subject<ResetEvent>();
  private readonly pending = new Map<number, Pending>();
  /** Deadline queues of the calls in flight, by timeout (ms). */
  private readonly deadlines = new Map<number, DeadlineQueue>();
  /** The one timeout timer: armed for `sweepAt`, referenced only while calls are in flight. */
  private sweepTimer?: NodeJS.Timeout;
  private sweepAt = Infinity;
  private sweepRef = false;
  private readonly opts: Required<Omit<RpcClientOptions, 'baud' | 'keepaliveMs' | 'paceFrames'>>;
  private readonly capIndex = new Map<string, number>();
  private readonly extra = { resets: 0, handshakeMs: 0, calls: 0, lateReplies: 0, badMessages: 0 };
  private nextId = 1;
  private hello_?: HelloInfo;
  private epoch = -1;
  private closed = false;
  private closeError?: Error;
  private ready: Promise<void> = Promise.resolve();
  /** True while {@link ready} is a handshake under way (calls wait for it). */
  private readyPending = false;
  private handshaking = false;
  private v1Seen = false;
  private handshakeFail?: (e: Error) => void;

  private constructor(
    readonly transport: Transport,
    opts: RpcClientOptions,
  ) {
    checkTimeout(opts.timeoutMs, 'RpcClient');
    checkTimeout(opts.handshakeTimeoutMs, 'RpcClient handshake');
    this.opts = {
      timeoutMs: opts.timeoutMs ?? 5000,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 10000,
      autoRehandshake: opts.autoRehandshake ?? true,
    };
    this.logs = this.logs$.asObservable();
    this.events = this.events$.asObservable();
    this.publishes = this.publishes$.asObservable();
    this.resets = this.resets$.asObservable();
    this.link = new Link(transport, { baud: opts.baud, keepaliveMs: opts.keepaliveMs, paceFrames: opts.paceFrames });
    this.link.handlers = {
      message: (m, kind) => this.onMessage(m, kind),
      log: (text) => this.logs$.next({ source: 'uart', level: 3, text }),
      reset: (r) => this.onReset(r),
      v1: () => {
        this.v1Seen = true;
        this.handshakeFail?.(this.v1Error());
      },
      closed: (err) => this.shutdown(new TetherError('DISCONNECTED', `transport closed: ${transport.description}`, { cause: err })),
    };
  }

  /**
   * Open a session on `transport` and handshake.
   * @throws TetherError `HANDSHAKE` when no hello answer arrives within `handshakeTimeoutMs`,
   *   `VERSION_MISMATCH` when the agent speaks another protocol version, `INVALID_ARGUMENT` for bad options.
   */
  static async open(transport: Transport, opts: RpcClientOptions = {}): Promise<RpcClient> {
    const c = new RpcClient(transport, opts);
    try {
      await c.handshake();
    } catch (e) {
      await c.close();
      throw e;
    }
    return c;
  }

  /** The agent's hello answer (after open). */
  get hello(): HelloInfo {
    if (!this.hello_) throw new TetherError('HANDSHAKE', 'no handshake yet');
    return this.hello_;
  }

  /** Current boot epoch of the module. */
  get currentEpoch(): number {
    return this.epoch;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Link and RPC counters (a fresh snapshot at every read). */
  get stats(): LinkStats {
    return { ...this.link.counters, ...this.extra };
  }

  private v1Error(): TetherError {
    return new TetherError('VERSION_MISMATCH', `agent speaks protocol 1: update it (tether flash / tether agent); this host speaks protocol ${PROTOCOL_VERSION}`, {
      context: { agent: 1, host: PROTOCOL_VERSION },
    });
  }

  private async handshake(): Promise<void> {
    this.handshaking = true;
    const t0 = performance.now();
    const deadline = Date.now() + this.opts.handshakeTimeoutMs;
    const left = () => deadline - Date.now();
    const timeout = () =>
      new TetherError('HANDSHAKE', `no answer from the tether agent on ${this.transport.description} within ${this.opts.handshakeTimeoutMs} ms: is the agent running on the module, on this UART, at this baud rate?`, {
        context: { ms: this.opts.handshakeTimeoutMs, badFrames: this.link.counters.badFrames, logLines: this.link.counters.logLines },
      });
    // every wait below also ends when a v1 agent is recognised or the client closes
    const guard = <T>(p: Promise<T>) =>
      new Promise<T>((resolve, reject) => {
        const ms = left();
        if (ms <= 0) return reject(timeout());
        const t = setTimeout(() => reject(timeout()), ms);
        this.handshakeFail = (e) => {
          clearTimeout(t);
          reject(e);
        };
        if (this.v1Seen) this.handshakeFail(this.v1Error());
        p.then(
          (v) => {
            clearTimeout(t);
            resolve(v);
          },
          (e) => {
            clearTimeout(t);
            reject(e);
          },
        );
      });
    try {
      for (;;) {
        if (this.closed) throw this.closeError ?? new TetherError('CLOSED', 'client closed');
        try {
          await guard(this.link.start());
          // the third argument: what this host reads (section 9); an agent that bundles replies
          // (hello `bundle`) starts once it has this
          const [h] = await guard(this.rawCall('hello', [PROTOCOL_VERSION, HOST_MAX_FRAME, HOST_FEATURES], Math.max(1, left())));
          const info = parseHello(h);
          if (info.proto !== PROTOCOL_VERSION) {
            throw new TetherError('VERSION_MISMATCH', `agent speaks protocol ${info.proto}, this host speaks ${PROTOCOL_VERSION}: update the agent (tether flash / tether agent)`, {
              context: { agent: info.proto, host: PROTOCOL_VERSION },
            });
          }
          const ncaps = Math.round(clampNum(toNumber(field(h, 'ncaps')) ?? 0, HELLO_CLAMP.ncaps));
          const caps: string[] = [];
          while (caps.length < ncaps) {
            const page = await guard(this.rawCall('agent.caps', [caps.length + 1, CAPS_PAGE], Math.max(1, left())));
            if (page.length === 0) break;
            for (const c of page) caps.push(toText(c) ?? '');
          }
          info.caps = caps;
          this.capIndex.clear();
          caps.forEach((c, i) => this.capIndex.set(c, i + 1));
          this.link.configure(info);
          const known = this.hello_ !== undefined;
          const before = this.epoch;
          this.hello_ = info;
          this.epoch = info.epoch;
          if (known && before !== info.epoch) {
            // seen only now (e.g. after a reconnect): the module rebooted while we could not hear it
            this.extra.resets++;
            this.resets$.next({ previousEpoch: before, epoch: info.epoch, failedCalls: 0, reason: 'epoch' });
          }
          this.extra.handshakeMs = Math.round(performance.now() - t0);
          return;
        } catch (e) {
          if (e instanceof TetherError && e.code === 'RESET' && left() > 0) continue;
          throw e;
        }
      }
    } finally {
      this.handshaking = false;
      this.handshakeFail = undefined;
    }
  }

  /**
   * Call `fn` on the module with `args`; resolves with every return value in order.
   * @throws TetherError `INVALID_ARGUMENT` (bad options or unencodable arguments, nothing sent),
   *   `UNSUPPORTED` (fn not in the agent's capabilities), `TOO_LARGE`,
   *   `REMOTE` ({@link RemoteError}; remote code `NOMEM`, `isNoMemory` in src/errors.ts: the module's heap had
   *   no room for the call and it did not run), `TIMEOUT`, `RESET`, `ABORTED`, `DISCONNECTED`, `CLOSED`.
   */
  call(fn: string, args: ReadonlyArray<WireValue | undefined> = [], opts: CallOptions = {}): Promise<WireValue[]> {
    try {
      checkTimeout(opts.timeoutMs, fn);
      if (opts.ahead !== undefined && typeof opts.ahead !== 'boolean') throw new InvalidArgumentError(`${fn}: ahead must be a boolean, got ${typeof opts.ahead}`);
      if (this.closed) throw this.closeError ?? new TetherError('CLOSED', 'client closed');
      if (opts.signal?.aborted) throw new TetherError('ABORTED', `${fn}: aborted before it was sent`);
      // no handshake under way: send now (no promise and microtask spent on waiting for none)
      if (!this.readyPending) return this.callNow(fn, args, opts);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.callAfterHandshake(fn, args, opts, this.epoch);
  }

  /** {@link call} while a handshake (after a reset) is under way: wait for it, then send. */
  private async callAfterHandshake(fn: string, args: ReadonlyArray<WireValue | undefined>, opts: CallOptions, startEpoch: number): Promise<WireValue[]> {
    await this.ready;
    if (this.closed) throw this.closeError ?? new TetherError('CLOSED', 'client closed');
    if (this.epoch !== startEpoch) throw new ResetError(`${fn}: the module reset before the call was sent`, { fn });
    if (opts.signal?.aborted) throw new TetherError('ABORTED', `${fn}: aborted before it was sent`);
    return this.callNow(fn, args, opts);
  }

  /** Send call `fn` (handshake done); a rejected promise for a function the agent lacks. */
  private callNow(fn: string, args: ReadonlyArray<WireValue | undefined>, opts: CallOptions): Promise<WireValue[]> {
    const idx = this.capIndex.get(fn);
    if (idx === undefined && !BUILTIN.has(fn)) {
      const h = this.hello;
      return Promise.reject(new TetherError('UNSUPPORTED', `${fn} is not exposed by the agent (family ${h.family}, agent ${h.agent})`, { context: { fn } }));
    }
    return this.rawCall(idx !== undefined ? idx : fn, args, opts.timeoutMs ?? this.opts.timeoutMs, opts.signal, fn, opts.ahead === true);
  }

  /** Cold observable form of {@link call}: one remote call per subscription; unsubscribe aborts. */
  call$(fn: string, args: ReadonlyArray<WireValue | undefined> = [], opts: CallOptions = {}): Observable<WireValue[]> {
    return new Observable<WireValue[]>((sub) => {
      const ac = new AbortController();
      const onAbort = () => ac.abort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.call(fn, args, { ...opts, signal: ac.signal }).then(
        (v) => {
          sub.next(v);
          sub.complete();
        },
        (e) => sub.error(e),
      );
      return () => {
        opts.signal?.removeEventListener('abort', onAbort);
        ac.abort();
      };
    });
  }

  private rawCall(wireFn: string | number, args: ReadonlyArray<WireValue | undefined>, timeoutMs: number, signal?: AbortSignal, label = String(wireFn), ahead = false): Promise<WireValue[]> {
    return new Promise<WireValue[]>((resolve, reject) => {
      const id = this.allocId();
      let content: Buffer;
      try {
        content = callMessage(id, wireFn, args);
      } catch (e) {
        reject(new InvalidArgumentError(`${label}: cannot encode arguments: ${(e as Error).message}`, { fn: label }));
        return;
      }
      if (this.hello_ && content.length > this.hello_.maxmsg) {
        reject(new TetherError('TOO_LARGE', `${label}: request is ${content.length} bytes, the agent accepts at most ${this.hello_.maxmsg}`, { context: { bytes: content.length, maxmsg: this.hello_.maxmsg } }));
        return;
      }
      const now = performance.now();
      let q = this.deadlines.get(timeoutMs);
      if (!q) {
        q = new DeadlineQueue();
        this.deadlines.set(timeoutMs, q);
      }
      const p = new Pending(id, label, timeoutMs, now + timeoutMs, q, resolve, reject, signal);
      this.pending.set(id, p);
      q.items.push(p);
      q.live++;
      if (p.deadline < this.sweepAt) this.armSweep(p.deadline, now);
      else if (!this.sweepRef) {
        this.sweepTimer?.ref();
        this.sweepRef = true;
      }
      if (signal) {
        p.onAbort = () => {
          const withdrawn = p.msg?.cancel() ?? false;
          this.settle(p, new TetherError('ABORTED', `${label}: aborted${withdrawn ? ' before it was sent' : ''}`, { context: { fn: label, id, sent: p.msg?.sent ?? false } }));
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.extra.calls++;
      p.msg = this.link.send(content, ahead);
    });
  }

  /** Settle call `p` (once: later settlements are ignored) with `err`, or else with the values `v`. */
  private settle(p: Pending, err: Error | undefined, v?: WireValue[]): void {
    if (p.done) return;
    p.done = true;
    this.pending.delete(p.id);
    const q = p.queue;
    q.live--;
    const items = q.items;
    while (q.head < items.length && items[q.head].done) q.head++;
    if (q.head >= items.length) {
      // nothing left in this queue: drop it
      items.length = 0;
      q.head = 0;
      if (this.deadlines.get(p.timeoutMs) === q) this.deadlines.delete(p.timeoutMs);
    } else if (q.head > 1024 && q.head * 2 > items.length) {
      items.splice(0, q.head);
      q.head = 0;
    } else if (items.length - q.head > 2 * q.live + 1024) {
      q.items = items.slice(q.head).filter((x) => !x.done);
      q.head = 0;
    }
    if (this.pending.size === 0 && this.sweepRef) {
      // nothing in flight: the timer stays armed but no longer holds the process open
      this.sweepTimer?.unref();
      this.sweepRef = false;
    }
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    const { resolve, reject } = p;
    // a settled call may wait in its deadline queue a while: let go of what it held
    p.msg = undefined;
    p.resolve = p.reject = settled;
    if (err) reject(err);
    else resolve(v!);
  }

  /** Arm the timeout timer for `deadline` (earlier than the one armed). */
  private armSweep(deadline: number, now: number): void {
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepAt = deadline;
    this.sweepRef = true;
    this.sweepTimer = setTimeout(() => this.sweep(), Math.min(MAX_TIMER_MS, Math.max(1, deadline - now)));
  }

  /** Fail every call whose deadline passed with `TIMEOUT`; re-arm for the earliest one left. */
  private sweep(): void {
    this.sweepTimer = undefined;
    this.sweepAt = Infinity;
    this.sweepRef = false;
    const now = performance.now();
    let next = Infinity;
    for (const [ms, q] of this.deadlines) {
      while (q.head < q.items.length) {
        const p = q.items[q.head];
        if (p.done) {
          q.head++;
          continue;
        }
        if (p.deadline > now) {
          if (p.deadline < next) next = p.deadline;
          break;
        }
        q.head++;
        const withdrawn = p.msg?.cancel() ?? false;
        this.settle(p, new TimeoutError(`${p.fn}: no reply within ${p.timeoutMs} ms`, { fn: p.fn, id: p.id, ms: p.timeoutMs, sent: (p.msg?.sent ?? false) && !withdrawn }));
      }
      if (q.head >= q.items.length) this.deadlines.delete(ms);
    }
    if (next < Infinity && !this.closed) this.armSweep(next, now);
  }

  private allocId(): number {
    for (let k = 0; k < MAX_ID; k++) {
      const id = this.nextId;
      this.nextId = id >= MAX_ID ? 1 : id + 1;
      if (!this.pending.has(id)) return id;
    }
    throw new TetherError('PROTOCOL', 'no free call id: 65535 calls in flight');
  }

  private onMessage(content: Buffer, kind?: number): void {
    let m: Message;
    try {
      m = decodeMessage(content, kind);
    } catch (e) {
      if (e instanceof FrameSyntaxError) {
        this.extra.badMessages++;
        return;
      }
      throw e;
    }
    switch (m.type) {
      case 'R': {
        const p = this.pending.get(m.id);
        if (p) this.settle(p, undefined, m.values);
        else this.extra.lateReplies++;
        return;
      }
      case 'X': {
        const p = this.pending.get(m.id);
        if (p) this.settle(p, new RemoteError(m.code, m.message, { fn: p.fn, id: m.id }));
        else this.extra.lateReplies++;
        return;
      }
      case 'E':
        this.events$.next({ handle: m.handle, values: m.values, epoch: this.epoch });
        return;
      case 'P':
        this.publishes$.next({ topic: m.topic, values: m.values });
        return;
      case 'L':
        this.logs$.next({ source: 'agent', level: m.level, text: m.message });
        return;
      default:
        this.extra.badMessages++;
    }
  }

  private onReset(r: LinkReset): void {
    if (this.closed) return;
    const previous = this.epoch;
    this.extra.resets++;
    const failed = [...this.pending.values()];
    for (const p of failed) {
      const why =
        r.reason === 'reconnect'
          ? `the connection to the module (${this.transport.description}) dropped while the call was in flight; the module may have reset`
          : `the module reset (${r.reason}: boot epoch ${previous} -> ${r.epoch}) while the call was in flight`;
      this.settle(p, new ResetError(`${p.fn}: ${why}`, { fn: p.fn, id: p.id, previousEpoch: previous, epoch: r.epoch, reason: r.reason }));
    }
    // calls made from now on belong to the new epoch (a lost session keeps the epoch: the
    // module's objects are still there); they wait on `ready` for the new handshake
    if (this.hello_) {
      this.epoch = r.epoch;
      this.resets$.next({ previousEpoch: previous, epoch: r.epoch, failedCalls: failed.length, reason: r.reason });
    }
    if (this.opts.autoRehandshake && !this.handshaking && this.hello_) {
      // after a dropped connection, wait until the transport reconnected (it closes, and so
      // ends this client with DISCONNECTED, if it gives up); the handshake's epoch then tells
      // whether the module really reset (see handshake())
      const up = r.reason === 'reconnect' ? this.link.whenConnected() : Promise.resolve();
      this.handshaking = true;
      this.readyPending = true;
      const ready: Promise<void> = up
        .then(() => this.handshake())
        .catch((e) => {
          this.shutdown(e instanceof Error ? e : new Error(String(e)));
        })
        .finally(() => {
          if (this.ready === ready) this.readyPending = false;
        });
      this.ready = ready;
    }
  }

  private shutdown(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = err;
    this.link.shutdown();
    const e = err instanceof TetherError ? err : new TetherError('DISCONNECTED', err.message, { cause: err });
    for (const p of [...this.pending.values()]) this.settle(p, e);
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    this.sweepAt = Infinity;
    this.sweepRef = false;
    this.handshakeFail?.(e);
    this.logs$.complete();
    this.events$.complete();
    this.publishes$.complete();
    this.resets$.complete();
  }

  /** Close the session and the transport. Pending calls fail with `CLOSED`. Idempotent. */
  async close(): Promise<void> {
    this.shutdown(new TetherError('CLOSED', 'client closed'));
    await this.transport.close();
  }
}

function clampNum(x: number, [lo, hi]: readonly [number, number]): number {
  return Math.min(hi, Math.max(lo, x));
}

/**
 * Decode and clamp the hello table (section 9). `caps` is left empty (read separately).
 * @throws TetherError `PROTOCOL` if required fields are missing.
 */
export function parseHello(v: WireValue | undefined): HelloInfo {
  if (!(v instanceof Map)) throw new TetherError('PROTOCOL', 'hello answer is not a table');
  const num = (k: string) => toNumber(field(v, k));
  const str = (k: string) => toText(field(v, k));
  const proto = num('proto');
  const epoch = num('epoch');
  const family = str('family');
  if (proto === undefined || epoch === undefined || family === undefined) {
    throw new TetherError('PROTOCOL', 'hello answer lacks proto, epoch or family');
  }
  const bi = field(v, 'boolinv');
  const maxframe = clampNum(num('maxframe') ?? BASE_MAX_FRAME, HELLO_CLAMP.maxframe);
  return {
    proto,
    agent: str('agent') ?? '?',
    family,
    fw: str('fw'),
    bsp: str('bsp'),
    lua: str('lua'),
    intbits: num('intbits'),
    maxframe,
    outmax: clampNum(num('outmax') ?? BASE_MAX_FRAME, HELLO_CLAMP.outmax),
    window: clampNum(num('window') ?? 240, HELLO_CLAMP.window),
    txwin: clampNum(num('txwin') ?? 1024, HELLO_CLAMP.txwin),
    maxmsg: clampNum(num('maxmsg') ?? 1024, HELLO_CLAMP.maxmsg),
    heap: num('heap'),
    epoch,
    bundle: num('bundle') === 1,
    short: (num('short') ?? 0) >= 1,
    shortAcks: (num('short') ?? 0) >= 2,
    hold: clampNum(num('hold') ?? 0, [0, 65536]),
    boolinv: typeof bi === 'boolean' ? bi : undefined,
    caps: [],
    raw: v,
  };
}

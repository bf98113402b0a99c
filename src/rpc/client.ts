/**
 * RPC client of protocol v1 (docs/protocol.md): turns a byte {@link Transport}
 * into calls with ids, timeouts and AbortSignal, flow control within the
 * agent's window, the hello handshake, and reset detection via the boot epoch.
 */
import { ReadlineParser } from '@serialport/parser-readline';
import { Subject, Observable } from 'rxjs';
import type { Transport } from '../transport/transport.js';
import {
  BASE_MAX_FRAME,
  BASE_WINDOW,
  CREDIT_MODULO,
  HOST_MAX_FRAME,
  PROTOCOL_VERSION,
  WINDOW_RESERVE,
} from '../codec/constants.js';
import { callContent, checkLine, decodeFrame, encodeFrame, FrameSyntaxError, Reassembler, type Frame } from '../codec/frame.js';
import { field, tableToArray, toNumber, toText, type WireValue } from '../codec/values.js';
import { RemoteError, ResetError, TetherError, TimeoutError } from '../errors.js';

/** What the agent said about itself in hello (docs/protocol.md section 4). */
export interface HelloInfo {
  proto: number;
  agent: string;
  family: string;
  fw?: string;
  bsp?: string;
  lua?: string;
  /** Integer width of the module's Lua (bits). */
  intbits?: number;
  /** Longest frame the agent accepts (bytes incl. `\n`). */
  maxframe: number;
  /** Flow-control window (bytes). */
  window: number;
  /** Longest logical message the agent accepts (bytes). */
  maxmsg: number;
  /** The agent's Lua heap (KB). */
  heap?: number;
  epoch: number;
  /** LuatOS: firmware returns the first boolean inverted (pre-2023-01-31). Undefined when unknown. */
  boolinv?: boolean;
  /** Functions the agent exposes, in index order. */
  caps: string[];
  /** The whole decoded table, for family-specific fields. */
  raw: Map<WireValue, WireValue>;
}

/** A line on the UART that is not a frame (boot log, print output), or an agent `L` notice. */
export interface LogLine {
  source: 'uart' | 'agent';
  /** 1 error, 2 warning, 3 info (agent notices); 3 for UART lines. */
  level: number;
  text: string;
}

/** A socket event from the agent (`E` frame). */
export interface AgentEvent {
  handle: number;
  values: WireValue[];
  /** Boot epoch the event belongs to. */
  epoch: number;
}

/** A forwarded `sys.publish` topic (`P` frame). */
export interface AgentPublish {
  topic: string;
  values: WireValue[];
}

/** Emitted when the module reset (its boot epoch changed). */
export interface ResetEvent {
  previousEpoch: number;
  epoch: number;
  /** Calls that failed with a reset error. */
  failedCalls: number;
}

/** Link counters. */
export interface LinkStats {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Lines starting with `~` dropped for a bad checksum, bad bytes, or a malformed body. */
  badFrames: number;
  /** Lines over the host's limit, dropped. */
  overlongLines: number;
  /** Non-frame lines seen (boot log, prints). */
  logLines: number;
  /** Fragmented messages lost. */
  droppedMessages: number;
  /** `K` credit frames received. */
  credits: number;
  /** Times the host sent `~Y` because it waited on the window. */
  syncs: number;
  resets: number;
  /** Duration of the last successful handshake (ms). */
  handshakeMs: number;
}

/** Options of {@link RpcClient}. */
export interface RpcClientOptions {
  /** Default per-call timeout (ms). @default 5000 */
  timeoutMs?: number;
  /** Total time to get a hello answer when opening or after a reset (ms). @default 10000 */
  handshakeTimeoutMs?: number;
  /** Time to wait for one hello attempt before retrying (ms). @default 1000 */
  helloAttemptMs?: number;
  /** Wait on the window this long before sending `~Y` (ms). @default 500 */
  syncAfterMs?: number;
  /** Re-handshake automatically after a reset. @default true */
  autoRehandshake?: boolean;
}

/** Per-call options. */
export interface CallOptions {
  /** Timeout for this call (ms); overrides the client's default. */
  timeoutMs?: number;
  /** Abort the call (it fails with code `ABORTED`); a call already sent still runs on the module. */
  signal?: AbortSignal;
}

interface Pending {
  id: number;
  fn: string;
  resolve(v: WireValue[]): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
  sent: boolean;
  epoch: number;
  cleanup(): void;
}

const MAX_ID = 65535;
/** Smallest window (bytes) the host accepts from an agent; below it frames would be too small to carry a call. */
const MIN_WINDOW = 96;

/**
 * An RPC session over one transport. Create with {@link RpcClient.open}, which
 * handshakes before resolving. All calls settle: a value, a typed error
 * (`REMOTE`, `RESET`, `DISCONNECTED`, `UNSUPPORTED`, `TOO_LARGE`, `ABORTED`) or `TIMEOUT`.
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
  readonly stats: LinkStats = {
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    badFrames: 0,
    overlongLines: 0,
    logLines: 0,
    droppedMessages: 0,
    credits: 0,
    syncs: 0,
    resets: 0,
    handshakeMs: 0,
  };

  private readonly logs$ = new Subject<LogLine>();
  private readonly events$ = new Subject<AgentEvent>();
  private readonly publishes$ = new Subject<AgentPublish>();
  private readonly resets$ = new Subject<ResetEvent>();
  private readonly parser = new ReadlineParser({ delimiter: '\n', encoding: 'latin1' });
  private readonly reasm = new Reassembler(1 << 20);
  private readonly pending = new Map<number, Pending>();
  private readonly queue: Array<{ lines: string[]; bytes: number; p?: Pending }> = [];
  private readonly opts: Required<RpcClientOptions>;
  private nextId = 1;
  private hello_?: HelloInfo;
  private epoch = -1;
  private maxFrame = BASE_MAX_FRAME;
  private window = BASE_WINDOW;
  private sent = 0; // bytes sent, mod CREDIT_MODULO
  private acked = 0; // last K count
  private writing = false;
  private blockedSince = 0;
  private syncTimer?: NodeJS.Timeout;
  private closed = false;
  private closeError?: Error;
  private ready: Promise<void> = Promise.resolve();
  private handshaking = false;

  private constructor(
    readonly transport: Transport,
    opts: RpcClientOptions,
  ) {
    this.opts = {
      timeoutMs: opts.timeoutMs ?? 5000,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 10000,
      helloAttemptMs: opts.helloAttemptMs ?? 1000,
      syncAfterMs: opts.syncAfterMs ?? 500,
      autoRehandshake: opts.autoRehandshake ?? true,
    };
    this.logs = this.logs$.asObservable();
    this.events = this.events$.asObservable();
    this.publishes = this.publishes$.asObservable();
    this.resets = this.resets$.asObservable();
    this.parser.on('data', (line: string) => this.onLine(Buffer.from(line, 'latin1')));
    transport.onData((chunk) => {
      this.stats.bytesIn += chunk.length;
      this.parser.write(chunk);
      const buffered = (this.parser as unknown as { buffer: Buffer }).buffer;
      if (buffered.length > HOST_MAX_FRAME) {
        (this.parser as unknown as { buffer: Buffer }).buffer = Buffer.alloc(0);
        this.stats.overlongLines++;
        this.reasm.poison();
      }
    });
    transport.onClose((err) => this.shutdown(new TetherError('DISCONNECTED', `transport closed: ${transport.description}`, { cause: err })));
  }

  /**
   * Open a session on `transport` and handshake.
   * @throws TetherError `HANDSHAKE` when no hello answer arrives within `handshakeTimeoutMs`,
   *   `VERSION_MISMATCH` when the agent speaks another protocol version.
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

  private async handshake(): Promise<void> {
    this.handshaking = true;
    const t0 = performance.now();
    const deadline = Date.now() + this.opts.handshakeTimeoutMs;
    let last: unknown;
    try {
      while (Date.now() < deadline && !this.closed) {
        // a bare newline ends any partial line the agent may hold
        this.enqueueRaw('\n');
        try {
          const vals = await this.rawCall('hello', [PROTOCOL_VERSION, HOST_MAX_FRAME], Math.min(this.opts.helloAttemptMs, deadline - Date.now()));
          const h = parseHello(vals[0]);
          if (h.proto !== PROTOCOL_VERSION) {
            throw new TetherError('VERSION_MISMATCH', `agent speaks protocol ${h.proto}, this host speaks ${PROTOCOL_VERSION}: flash the agent from this tether version`, {
              context: { agent: h.proto, host: PROTOCOL_VERSION },
            });
          }
          this.hello_ = h;
          this.epoch = h.epoch;
          this.stats.handshakeMs = Math.round(performance.now() - t0);
          // honour the agent's window (a 256-byte ESP8266 ring advertises less than 255)
          this.window = Math.max(MIN_WINDOW, h.window);
          // a frame must fit the window, or it could never be sent
          this.maxFrame = Math.max(MIN_WINDOW - WINDOW_RESERVE, Math.min(h.maxframe, HOST_MAX_FRAME, this.window - WINDOW_RESERVE));
          return;
        } catch (e) {
          last = e;
          if (e instanceof TetherError && (e.code === 'VERSION_MISMATCH' || e.code === 'DISCONNECTED')) throw e;
          if (e instanceof TetherError && e.code === 'RESET') continue;
        }
      }
      if (this.closed) throw this.closeError ?? new TetherError('CLOSED', 'client closed');
      throw new TetherError('HANDSHAKE', `no answer to hello from ${this.transport.description} within ${this.opts.handshakeTimeoutMs} ms: is the tether agent running on the module, on this UART, at this baud rate?`, {
        cause: last,
        context: { ms: this.opts.handshakeTimeoutMs, badFrames: this.stats.badFrames, logLines: this.stats.logLines },
      });
    } finally {
      this.handshaking = false;
    }
  }

  /**
   * Call `fn` on the module with `args`; resolves with every return value in order.
   * @throws TetherError `UNSUPPORTED` (fn not in the agent's capabilities), `TOO_LARGE`,
   *   `REMOTE` ({@link RemoteError}), `TIMEOUT`, `RESET`, `ABORTED`, `DISCONNECTED`.
   */
  async call(fn: string, args: ReadonlyArray<WireValue | undefined> = [], opts: CallOptions = {}): Promise<WireValue[]> {
    if (this.closed) throw this.closeError ?? new TetherError('CLOSED', 'client closed');
    if (opts.signal?.aborted) throw new TetherError('ABORTED', `${fn}: aborted before it was sent`);
    const startEpoch = this.epoch;
    await this.ready;
    if (this.epoch !== startEpoch) throw new ResetError(`${fn}: the module reset before the call was sent`, { fn });
    const h = this.hello;
    const idx = h.caps.indexOf(fn);
    if (idx < 0 && fn !== 'hello') {
      throw new TetherError('UNSUPPORTED', `${fn} is not exposed by the agent (family ${h.family}, agent ${h.agent})`, { context: { fn } });
    }
    return this.rawCall(idx >= 0 ? String(idx + 1) : fn, args, opts.timeoutMs ?? this.opts.timeoutMs, opts.signal, fn);
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

  private rawCall(wireFn: string, args: ReadonlyArray<WireValue | undefined>, timeoutMs: number, signal?: AbortSignal, label = wireFn): Promise<WireValue[]> {
    return new Promise<WireValue[]>((resolve, reject) => {
      const id = this.allocId();
      let content: string;
      try {
        content = callContent(id, wireFn, args);
      } catch (e) {
        reject(new TetherError('INVALID_ARGUMENT', `${label}: cannot encode arguments: ${(e as Error).message}`));
        return;
      }
      if (this.hello_ && content.length > this.hello_.maxmsg) {
        reject(new TetherError('TOO_LARGE', `${label}: request is ${content.length} bytes, the agent accepts at most ${this.hello_.maxmsg}`, { context: { bytes: content.length, maxmsg: this.hello_.maxmsg } }));
        return;
      }
      const onAbort = () => {
        p.cleanup();
        reject(new TetherError('ABORTED', `${label}: aborted`, { context: { fn: label, id, sent: p.sent } }));
      };
      const p: Pending = {
        id,
        fn: label,
        sent: false,
        epoch: this.epoch,
        resolve: (v) => {
          p.cleanup();
          resolve(v);
        },
        reject: (e) => {
          p.cleanup();
          reject(e);
        },
        cleanup: () => {
          if (p.timer) clearTimeout(p.timer);
          signal?.removeEventListener('abort', onAbort);
          this.pending.delete(id);
          const qi = this.queue.findIndex((q) => q.p === p);
          if (qi >= 0) this.queue.splice(qi, 1);
        },
      };
      this.pending.set(id, p);
      p.timer = setTimeout(() => {
        p.reject(new TimeoutError(`${label}: no reply within ${timeoutMs} ms`, { fn: label, id, ms: timeoutMs, sent: p.sent }));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      const lines = encodeFrame(content, this.maxFrame);
      this.queue.push({ lines, bytes: lines.reduce((n, l) => n + l.length, 0), p });
      this.pump();
    });
  }

  private allocId(): number {
    for (let k = 0; k < MAX_ID; k++) {
      const id = this.nextId;
      this.nextId = id >= MAX_ID ? 1 : id + 1;
      if (!this.pending.has(id)) return id;
    }
    throw new TetherError('PROTOCOL', 'no free call id: 65535 calls in flight');
  }

  private enqueueRaw(text: string): void {
    this.queue.push({ lines: [text], bytes: text.length });
    this.pump();
  }

  private get unacked(): number {
    const d = (((this.sent - this.acked) % CREDIT_MODULO) + CREDIT_MODULO) % CREDIT_MODULO;
    if (d > CREDIT_MODULO / 2) {
      // the agent counted more than we think we sent (bytes from before a reset): resync
      this.sent = this.acked;
      return 0;
    }
    return d;
  }

  /** Write queued messages while the window allows. One message at a time; its fragments go back to back. */
  private pump(): void {
    if (this.writing || this.closed) return;
    const item = this.queue[0];
    if (!item) return;
    const limit = this.window - WINDOW_RESERVE;
    const need = Math.min(item.bytes, limit);
    if (this.unacked + need > limit && this.unacked > 0) {
      if (!this.blockedSince) this.blockedSince = Date.now();
      this.armSync();
      return;
    }
    this.blockedSince = 0;
    // send as many lines of this message as fit
    const lines: string[] = [];
    let bytes = 0;
    while (item.lines.length > 0 && (this.unacked + bytes + item.lines[0].length <= limit || (this.unacked === 0 && bytes === 0))) {
      bytes += item.lines[0].length;
      lines.push(item.lines.shift()!);
    }
    if (lines.length === 0) {
      // a single line larger than the free window: wait for credit
      if (!this.blockedSince) this.blockedSince = Date.now();
      this.armSync();
      return;
    }
    item.bytes -= bytes;
    if (item.lines.length === 0) {
      this.queue.shift();
      if (item.p) item.p.sent = true;
    }
    this.writing = true;
    this.sent = (this.sent + bytes) % CREDIT_MODULO;
    this.stats.bytesOut += bytes;
    this.stats.framesOut += lines.length;
    this.transport.write(Buffer.from(lines.join(''), 'latin1')).then(
      () => {
        this.writing = false;
        this.pump();
      },
      (e) => {
        this.writing = false;
        this.shutdown(e instanceof TetherError ? e : new TetherError('TRANSPORT', `write failed: ${(e as Error).message}`, { cause: e }));
      },
    );
  }

  private armSync(): void {
    if (this.syncTimer || this.closed) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      if (this.closed || !this.blockedSince) return;
      this.stats.syncs++;
      const y = encodeFrame('Y', BASE_MAX_FRAME)[0];
      this.stats.bytesOut += y.length;
      this.sent = (this.sent + y.length) % CREDIT_MODULO;
      this.transport.write(Buffer.from(y, 'latin1')).catch(() => {});
      this.armSync();
    }, this.opts.syncAfterMs);
  }

  private onLine(line: Buffer): void {
    const r = checkLine(line);
    if (r.kind === 'log') {
      if (r.text.length === 0) return;
      this.stats.logLines++;
      this.logs$.next({ source: 'uart', level: 3, text: r.text });
      return;
    }
    if (r.kind === 'bad') {
      this.stats.badFrames++;
      this.reasm.poison();
      return;
    }
    const before = this.reasm.dropped;
    const content = this.reasm.push(r.content);
    this.stats.droppedMessages += this.reasm.dropped - before;
    if (content === undefined) return;
    let f: Frame;
    try {
      f = decodeFrame(content);
    } catch (e) {
      if (e instanceof FrameSyntaxError) {
        this.stats.badFrames++;
        return;
      }
      throw e;
    }
    this.stats.framesIn++;
    this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    switch (f.type) {
      case 'R': {
        const p = this.pending.get(f.id);
        if (p) p.resolve(f.values);
        return;
      }
      case 'X': {
        const p = this.pending.get(f.id);
        if (p) p.reject(new RemoteError(f.code, f.message, { fn: p.fn, id: f.id }));
        return;
      }
      case 'E':
        this.events$.next({ handle: f.handle, values: f.values, epoch: this.epoch });
        return;
      case 'P':
        this.publishes$.next({ topic: f.topic, values: f.values });
        return;
      case 'L':
        this.logs$.next({ source: 'agent', level: f.level, text: f.message });
        return;
      case 'K':
        this.stats.credits++;
        this.acked = f.count % CREDIT_MODULO;
        if (this.syncTimer && this.unacked === 0) {
          clearTimeout(this.syncTimer);
          this.syncTimer = undefined;
        }
        this.pump();
        return;
      case 'B':
        this.onBoot(f.epoch);
        return;
      default:
        this.stats.badFrames++;
    }
  }

  private onBoot(epoch: number): void {
    // the agent starts counting from zero; whatever we sent before is gone
    this.sent = 0;
    this.acked = 0;
    this.maxFrame = BASE_MAX_FRAME;
    this.window = BASE_WINDOW;
    if (!this.hello_ || epoch === this.epoch) return;
    const previous = this.epoch;
    this.epoch = epoch;
    this.stats.resets++;
    let failed = 0;
    for (const p of [...this.pending.values()]) {
      if (this.handshaking && p.fn === 'hello') continue;
      failed++;
      p.reject(new ResetError(`${p.fn}: the module reset (boot epoch ${previous} -> ${epoch}) while the call was in flight`, { fn: p.fn, id: p.id, previousEpoch: previous, epoch }));
    }
    // drop queued bytes of anything not yet sent (partial fragments would confuse the new agent)
    this.queue.length = 0;
    this.resets$.next({ previousEpoch: previous, epoch, failedCalls: failed });
    if (this.opts.autoRehandshake && !this.handshaking) {
      this.ready = this.handshake().catch((e) => {
        this.shutdown(e instanceof Error ? e : new Error(String(e)));
      });
    }
  }

  private shutdown(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = err;
    if (this.syncTimer) clearTimeout(this.syncTimer);
    for (const p of [...this.pending.values()]) p.reject(err instanceof TetherError ? err : new TetherError('DISCONNECTED', err.message, { cause: err }));
    this.queue.length = 0;
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

/** Decode the hello table. @throws TetherError `PROTOCOL` if required fields are missing. */
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
  return {
    proto,
    agent: str('agent') ?? '?',
    family,
    fw: str('fw'),
    bsp: str('bsp'),
    lua: str('lua'),
    intbits: num('intbits'),
    maxframe: num('maxframe') ?? BASE_MAX_FRAME,
    window: num('window') ?? BASE_WINDOW,
    maxmsg: num('maxmsg') ?? 1024,
    heap: num('heap'),
    epoch,
    boolinv: typeof bi === 'boolean' ? bi : undefined,
    caps: tableToArray(field(v, 'caps')).map((c) => toText(c) ?? ''),
    raw: v,
  };
}

/**
 * The reliable link of protocol v2, host side (docs/protocol.md sections 3-6, 8):
 * a session (`S`/`A` with a nonce), sequence numbers, cumulative acknowledgements
 * piggybacked on every sequenced frame, go-back-N towards the agent, selective
 * repeat from the agent, RFC 6298 retransmission timers, window flow control,
 * frame-size adaptation in both directions, keepalive (`Y`) and reset detection
 * (epoch and nonce in every `A`, the `B` frame).
 *
 * It moves messages (type character + body, as bytes) and knows nothing of calls.
 */
import type { Transport } from '../transport/transport.js';
import {
  BASE_MAX_FRAME,
  START_FRAME,
  HELLO_CLAMP,
  HOST_MAX_FRAME,
  HOST_MAX_MSG,
  KEEPALIVE_MS,
  MAX_UNACKED_FRAMES,
  MIN_FRAME,
  RTO_MAX_MS,
  RTO_MIN_MS,
  TICK_MS,
  SEQ_MOD,
  WINDOW_RESERVE,
} from '../codec/constants.js';
import { bundleBody, bundledSize, encodeFrame, encodeShortAck, encodeShortFrame, fitPiece, frameOverhead, FRAME_TRAILER, isV1Frame, LineSplitter, parseLine, seqHead, SHORT_ACK_BYTES, SHORT_ACK_MAX_SIZE, shortHead, unbundle, type LinkFrame } from '../codec/frame.js';
import { TetherError } from '../errors.js';

/** Longest a pure ack waits for a frame to ride on or for more bytes to cover (ms). */
const ACK_DELAY_MS = 10;
/**
 * Most bytes of the agent's window the host fills while the agent sends bulk too
 * ({@link Link.windowInUse}): the agent's one Lua VM reads the host's frames and writes its own,
 * and a wider host window speeds the host's direction at the cost of the agent's. A TCP echo
 * through the LuatOS agent at 921600 (8 KB RX buffer): module→host 0.70-0.74 of the line filling
 * the whole 8 KB window, 0.75-0.78 keeping to this (docs/protocol-performance.md, "Bursts of 40 ms
 * at 921,600"). It is the window of the 4 KB RX buffer the agent sets up at 230400 baud and below.
 */
const BOTH_WAYS_WINDOW = 4032;
/** Period (ms) over which the host measures how much of its receiving line the agent's frames fill ({@link Link.windowInUse}). */
const BULK_PERIOD_MS = 100;
/**
 * Age (ms) past which what the host measured over {@link BULK_PERIOD_MS} no longer counts: a
 * judgment made at the end of a period holds this long after it (the next one normally comes a
 * period later, when the agent's next in-order frame arrives), and a period that lasted this
 * long (the agent's frames paused in it) is not taken as bulk.
 */
const BULK_STALE_MS = 2 * BULK_PERIOD_MS;
/** Share of the line's bytes in a {@link BULK_PERIOD_MS} period above which the agent sends bulk. */
const BULK_SHARE = 0.25;
/**
 * Bytes of pure acks the host writes while its frames fill half the agent's window or more, until
 * the agent shows it read them ({@link Link.pureAck}): one long `A` (about 30 bytes) or three
 * short ones (14 bytes each, section 4) beside a `Y`, within the 64-byte reserve.
 */
const ACK_BUDGET = 48;
/**
 * Longest the host holds pure acks back for want of a sign that the agent read (ms): on a noisy
 * line the signs are lost too. One `A` per 100 ms stays within the free bytes of the agent's buffer.
 */
const ACK_HOLD_MAX_MS = 100;
/** Shortest wait before a tail-loss probe (ms): agents can be slow to drain their ring. */
const PROBE_MIN_MS = 20;
/**
 * Tail-loss probes sent in a row without an answer before only the retransmission timeout
 * probes. Each after the first must also fit in the agent's window beside the unacknowledged
 * frames (Link.poll): the window's reserve holds only one `Y`.
 */
const PROBES_MAX = 3;
/** `Y`s remembered for their answers ({@link PROBES_MAX} in a row, and the timeout's). */
const PROBES_KEPT = 4;
/** Longest `Y` line (bytes): `~Y9999 ` and its checksum, newline. */
const Y_MAX_BYTES = 16;
/** A frame unacknowledged this long (ms, plus the window's line time) is repeated even without an answer to a Y. */
const LIVENESS_MS = 500;
/**
 * A `Y` unanswered for this many retransmission timeouts (not backed off) is lost, it or its
 * answer: a further one may go even when it does not fit beside the unacknowledged frames (section 5).
 */
const Y_LOST_RTOS = 2;
/** Longest wait before holes are listed again while nothing fills them ({@link Link.armRelist}) (ms). */
const RELIST_MAX_MS = 400;

/** Link counters (bytes, frames). */
export interface LinkCounters {
  bytesIn: number;
  bytesOut: number;
  /** Sequenced frames written, first copies only. */
  framesOut: number;
  /** Sequenced frames received and handed on (in order, once). */
  framesIn: number;
  /** Lines starting with `~` that failed the CRC, the escaping or the syntax. */
  badFrames: number;
  /** Lines over the host's limit, dropped. */
  overlongLines: number;
  /** Non-frame lines (boot log, prints). */
  logLines: number;
  /** Messages dropped because they were larger than the host accepts. */
  droppedMessages: number;
  /** Messages written inside `M` frames (section 2, "Bundles"), first copies only. */
  bundledOut: number;
  /** Messages received inside `M` frames. */
  bundledIn: number;
  /** Frames the host sent again. */
  retransmits: number;
  /** Retransmission rounds started by the timer. */
  timeouts: number;
  /** Copies of agent frames dropped as duplicates. */
  duplicates: number;
  /** Agent frames that arrived ahead of a gap (kept, selective repeat). */
  outOfOrder: number;
  /** `A` frames sent / received. */
  acksOut: number;
  acksIn: number;
  /** Pure `A` frames held back until the agent showed it read the ones before (its UART buffer). */
  acksHeld: number;
  /** `Y` keepalives sent. */
  polls: number;
  /** Current frame sizes (bytes incl. `\n`): host→agent and agent→host. */
  frameSize: number;
  agentFrameSize: number;
  /** Smoothed round-trip time (ms). */
  srttMs: number;
  /** Congestion window towards the agent (frames). */
  cwnd: number;
}

/** Options of {@link Link}. */
export interface LinkOptions {
  /**
   * Line rate in baud (8N1: 10 bits a byte): adds line time to timeouts and paces frames
   * (`paceFrames`). 0: not a paced line (a module's own USB port), nothing estimated.
   * @default the transport's `lineBaud` when it has one (serial and RFC 2217 ports, the
   * simulator's UART), read each time so a baud switch takes effect; else 0 (raw TCP)
   */
  baud?: number;
  /** Send `Y` after this long without hearing the agent (ms). @default 400 (KEEPALIVE_MS) */
  keepaliveMs?: number;
  /** Initial retransmission timeout (ms) before a round trip was measured. @default 250 */
  initialRtoMs?: number;
  /**
   * With `baud` known: after 20 ms of line time written in a row (at least 1 KB, at most half the
   * agent's window), write the next data frame only once the bytes before it are through the line
   * (estimated at `baud`, 10 bits a byte) and 0.75 ms more, so the line goes quiet now and then.
   * A module UART that hands received bytes to Lua only when its line goes quiet (the EC618's RX
   * idle timeout, docs/protocol-performance.md) then reads, and acknowledges, the frames as they
   * arrive instead of one window per round trip. Acknowledgements and repeats are never held.
   * @default true (no effect without `baud`)
   */
  paceFrames?: boolean;
}

/** Why the link lost its session. */
export interface LinkReset {
  /** Epoch of the session that was lost. */
  previousEpoch: number;
  /** Epoch the agent reported (the same when only the session was lost). */
  epoch: number;
  /**
   * `boot` (a `B` frame), `epoch` (an `A` with another epoch), `session` (an `A` with another nonce),
   * `reconnect` (the transport's connection dropped and is being reopened: whether the module
   * reset is known only after the next handshake; `epoch` is then the previous one).
   */
  reason: 'boot' | 'epoch' | 'session' | 'reconnect';
}

/** What a link reports upwards. Every handler is optional. */
export interface LinkHandlers {
  /**
   * A whole message from the agent, in order, exactly once: `content` is the type character
   * and the body, or, when `kind` (the type character's byte value) is given, the body alone
   * (decode with `decodeMessage(content, kind)`). `content` may be a view of received bytes:
   * copy what is kept after the call.
   */
  message?(content: Buffer, kind?: number): void;
  /** A line that is not a frame. */
  log?(text: string): void;
  /** The agent was seen to reset or the session was lost; the link is idle until {@link Link.start}. */
  reset?(r: LinkReset): void;
  /** A protocol-1 agent answered. */
  v1?(): void;
  /** The transport closed. */
  closed?(err?: Error): void;
}

/** A message given to {@link Link.send}. */
export interface QueuedMessage {
  /** True once its first frame was written. */
  readonly sent: boolean;
  /** Withdraw the message if none of its frames was written yet (true), else false (it goes on). */
  cancel(): boolean;
}

/**
 * Quiet time (ms) after a frame's estimated end before the next data frame goes
 * ({@link LinkOptions.paceFrames}): over 4 times the EC618's RX idle timeout (2 character times,
 * 0.17 ms at 115200), with room for an estimate that is a little early. The timer that waits
 * for it is set to whole milliseconds rounded down (`setTimeout` fires at the earliest then, often
 * up to a millisecond later): rounding up made the gaps 2-3 ms, 15 % of the line at 921600.
 */
const PACE_GAP_MS = 0.75;
/**
 * Bytes written in a row before the link leaves the line quiet ({@link LinkOptions.paceFrames}):
 * about {@link PACE_EVERY_MS} of line time, at least {@link PACE_EVERY_MIN} bytes and at most half
 * the agent's window (the agent then reads one half while the other arrives). At 115200 that is
 * 1 KB (89 ms of line: a gap costs about 1 %), at 921600 about 3.7 KB (the LuatOS agent's half
 * window there is 4,064 bytes: it sets up an 8 KB RX buffer above 230400 baud; with a 4 KB buffer
 * the half window, 2,016). Host→module at 921600 measured 0.68 of the line with a gap after
 * every frame, 0.81 with one per 1 KB, 0.87 with one per half window and the rounded-down timer
 * (docs/protocol-performance.md, "Fewer gaps in the line"), and a gap per 40 ms with the 8 KB
 * buffer gained 0.02-0.03 over one per 20 ms with 4 KB ("Bursts of 40 ms at 921,600").
 */
const PACE_EVERY_MIN = 1024;
/** Line time (ms) written in a row before a gap, where that is more than {@link PACE_EVERY_MIN} bytes. */
const PACE_EVERY_MS = 40;

class OutMessage implements QueuedMessage {
  /** Bytes of `buf` already cut into frames. */
  off = 0;
  cancelled = false;
  constructor(
    readonly buf: Buffer,
    readonly ahead = false,
  ) {}
  get sent(): boolean {
    return this.off > 0;
  }
  cancel(): boolean {
    if (this.off > 0) return false;
    this.cancelled = true;
    return true;
  }
}

interface Unacked {
  seq: number;
  line: Buffer;
  sentAt: number;
  retx: boolean;
  /** The next new sequence number when it was last repeated: frames from it on went after it. */
  after: number;
}

const clamp = (x: number, [lo, hi]: readonly [number, number]) => Math.min(hi, Math.max(lo, x));
const mod = (x: number) => ((x % SEQ_MOD) + SEQ_MOD) % SEQ_MOD;

/**
 * A host-side link over one transport. Create, set handlers, then {@link start} a session.
 * Messages given to {@link send} before the session is open wait in the queue.
 */
export class Link {
  readonly counters: LinkCounters = {
    bytesIn: 0,
    bytesOut: 0,
    framesOut: 0,
    framesIn: 0,
    badFrames: 0,
    overlongLines: 0,
    logLines: 0,
    droppedMessages: 0,
    bundledOut: 0,
    bundledIn: 0,
    retransmits: 0,
    timeouts: 0,
    duplicates: 0,
    outOfOrder: 0,
    acksOut: 0,
    acksHeld: 0,
    acksIn: 0,
    polls: 0,
    frameSize: BASE_MAX_FRAME,
    agentFrameSize: BASE_MAX_FRAME,
    srttMs: 0,
    cwnd: 4,
  };
  handlers: LinkHandlers = {};

  private readonly lines = new LineSplitter(HOST_MAX_FRAME);
  private readonly opts: Required<Omit<LinkOptions, 'baud'>>;
  /** {@link LinkOptions.baud} as given; undefined: ask the transport. */
  private readonly baudOpt?: number;
  private state: 'idle' | 'starting' | 'open' | 'closed' = 'idle';
  private nonce = 0;
  /** Epoch of the current (or last) session; 0 before the first. */
  private epoch_ = 0;
  // transmit side
  private readonly queue: OutMessage[] = [];
  private qHead = 0;
  private nextSeq = 0;
  private readonly unacked: Unacked[] = [];
  private uHead = 0;
  private unackedBytes = 0;
  /** The agent's own window (bytes): its first `A` of the session, then hello's `window`. */
  private agentWindow = 240;
  /**
   * Bytes the agent's last `A` added to its window for host frames it keeps ahead of a gap (host
   * feature 2, section 4); 0 once the acknowledgement moved past that `A`'s.
   */
  private heldExtra = 0;
  /** Bytes of in-order agent frame bodies since {@link inSince} ({@link noteAgentBytes}). */
  private inBytes = 0;
  /** `performance.now()` at which the current measuring period began. */
  private inSince = 0;
  /** The agent's frames filled more than {@link BULK_SHARE} of the line in the last whole period. */
  private agentBulk = false;
  private agentMaxFrame = BASE_MAX_FRAME;
  private agentOutMax = BASE_MAX_FRAME;
  private frameSize = BASE_MAX_FRAME;
  private readonly txLoss = new LossEstimator();
  private readonly rxLoss = new LossEstimator();
  /** Congestion window (frames): halved per loss round, +1 per clean ack (go-back-N never risks many frames). */
  private cwnd = 4;
  private srtt = 0;
  private rttvar = 0;
  private rto: number;
  private backoff = 1;
  /**
   * Deadlines (`performance.now()` ms, 0 = none) of the retransmission timeout and of the
   * tail-loss probe. One timer serves both: an ack moves the deadlines and leaves the timer
   * alone (no timer is cleared and set per ack); when it fires early it re-arms for what is left.
   */
  private rtoAt = 0;
  private probeDue = 0;
  private timer?: NodeJS.Timeout;
  /** When {@link timer} fires (ms). */
  private timerAt = 0;
  private readonly onTimerFn = () => this.onTimer();
  /**
   * The `Y`s sent and not yet answered, oldest first, at most {@link PROBES_KEPT}: token
   * (1..9999, echoed by the `A` that answers it) and `performance.now()` when it was written. An
   * answer often comes after the next `Y` went (a probe interval is two round trips, and the
   * answer waits behind the agent's own frames): it proves as much for its own `Y`.
   */
  private probes: { token: number; at: number }[] = [];
  /** Token of the last `Y` sent (1..9999). */
  private probeToken = 0;
  /** `Y`s sent since the last `A` came ({@link PROBES_MAX}). */
  private probesUnanswered = 0;
  /** `performance.now()` of the last `Y`. */
  private lastPollAt = 0;
  /** A `Y` was sent and no `A` came since. */
  private pollOut = false;
  /** Timeouts in a row without progress. */
  private stalls = 0;
  /** The fastest round trip measured (ms): no answer can come sooner. */
  private minRtt = Infinity;
  // receive side
  private expect = 0;
  /**
   * The agent frame received last (any intact sequenced frame: in order, ahead of a gap or a
   * copy), -1 for none this session: what the `top` field of a hole list names (section 5).
   */
  private lastIn = -1;
  private readonly ahead = new Map<number, { kind: string; body: Buffer }>();
  private parts: Buffer[] = [];
  private partsSize = 0;
  private partsTooBig = false;
  private agentFrame = BASE_MAX_FRAME;
  private ackPending = false;
  private ackTimer?: NodeJS.Timeout;
  /** Lists the holes again while they remain ({@link armRelist}); its interval's multiplier. */
  private relistTimer?: NodeJS.Timeout;
  private relistBackoff = 1;
  /** A hole list is due after the batch being read (its corrupt line and that line's seq hint). */
  private nakDue = false;
  private nakBad = false;
  private nakHint = -1;
  /** Agent bytes received since the last ack went out. */
  private unackedIn = 0;
  private lastNak = '';
  private nakAt = 0;
  /** Time of the last retransmission (Karn's rule: no RTT sample from frames sent before it). */
  private recoverAt = 0;
  private lastHeard = Date.now();
  /** True while a received chunk is being read (see {@link onData}). */
  private reading = false;
  /** An ack opened the window while reading: pump once the chunk is read. */
  private pumpDue = false;
  /** The agent reads `M` frames (hello `bundle`, section 2): set by {@link configure}, per session. */
  private bundles = false;
  /** The agent reads short heads (hello `short`, section 1): set by {@link configure}, per session. */
  private short = false;
  /** The agent reads short acknowledgements (hello `short` 2, section 4): set by {@link configure}, per session. */
  private shortAcks = false;
  /** A pump is queued as a microtask: messages sent in the same tick go out together (bundles). */
  private pumpSoon = false;
  private readonly onLineFn = (line: Buffer) => this.onLine(line);
  private keepTimer?: NodeJS.Timeout;
  private startTimer?: NodeJS.Timeout;
  private startWaiter?: { resolve(epoch: number): void; reject(e: Error): void };
  private out: Buffer[] = [];
  private flushScheduled = false;
  /** False while a reconnecting transport is down (see {@link Transport.onReconnect}). */
  private transportUp = true;
  private upWaiters: Array<{ resolve(): void; reject(e: Error): void }> = [];

  constructor(
    readonly transport: Transport,
    opts: LinkOptions = {},
  ) {
    this.baudOpt = opts.baud;
    this.opts = { keepaliveMs: opts.keepaliveMs ?? KEEPALIVE_MS, initialRtoMs: opts.initialRtoMs ?? 250, paceFrames: opts.paceFrames ?? true };
    this.rto = this.opts.initialRtoMs;
    transport.onData((chunk) => this.onData(chunk));
    transport.onClose((err) => {
      this.shutdown();
      this.handlers.closed?.(err);
    });
    transport.onReconnect?.((ev) => {
      if (this.state === 'closed') return;
      if (ev.type === 'lost') {
        this.transportUp = false;
        // frames in flight are gone with the connection, and the module may have reset meanwhile
        if (this.state === 'open') this.lost('reconnect', this.epoch_);
        return;
      }
      this.transportUp = true;
      for (const w of this.upWaiters.splice(0)) w.resolve();
    });
  }

  /** False while a reconnecting transport is down; true otherwise (also for transports that never reconnect). */
  get transportConnected(): boolean {
    return this.transportUp;
  }

  /**
   * Resolves when the transport is connected: at once unless a reconnecting transport is down.
   * @throws TetherError `CLOSED` when the link closes first (the transport gave up or was closed).
   */
  whenConnected(): Promise<void> {
    if (this.state === 'closed') return Promise.reject(new TetherError('CLOSED', 'link closed'));
    if (this.transportUp) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.upWaiters.push({ resolve, reject }));
  }

  /** True while a session is open. */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** Epoch of the agent in the current session (0 before the first). */
  get epoch(): number {
    return this.epoch_;
  }

  /** The agent's receive window (bytes) as it last said. */
  get window(): number {
    return this.agentWindow;
  }

  /**
   * Start a session: send `S` with a new nonce, with backoff (100 ms doubling to 1 s,
   * jittered), until the agent answers with an `A` carrying it.
   * Resolves with the agent's epoch.
   * @throws TetherError `CLOSED` when the link is closed meanwhile (other failures: the caller's timeout).
   */
  start(): Promise<number> {
    if (this.state === 'closed') return Promise.reject(new TetherError('CLOSED', 'link closed'));
    this.dropSession();
    this.state = 'starting';
    // a short nonce keeps every A short; it only has to differ from the last session's
    const last = this.nonce;
    do this.nonce = 1 + Math.floor(Math.random() * 999999);
    while (this.nonce === last);
    this.startWaiter?.reject(new TetherError('CLOSED', 'superseded by a new start'));
    return new Promise<number>((resolve, reject) => {
      this.startWaiter = { resolve, reject };
      let delay = 100;
      let attempts = 0;
      const attempt = () => {
        if (this.state !== 'starting') return;
        // every repeat may be a sign of noise: ask for half the frame size each time (the size in
        // the last S the agent got applies), and count it as a loss (section 6)
        if (attempts > 0) {
          this.agentFrame = Math.max(MIN_FRAME, Math.floor(this.agentFrame / 2));
          this.counters.agentFrameSize = this.agentFrame;
          this.txLoss.sample(true, 24);
        }
        attempts++;
        // a bare newline ends any partial line the agent may hold
        this.write(Buffer.concat([Buffer.from('\n'), encodeFrame(`S${this.nonce} ${this.agentFrame}`)]));
        const jitter = 0.75 + Math.random() * 0.5;
        this.startTimer = setTimeout(attempt, delay * jitter);
        delay = Math.min(1000, delay * 2);
      };
      attempt();
    });
  }

  /**
   * Tell the link what hello said: the agent's line limit, the largest frame it can send and
   * whether it reads `M` frames (`bundle`, section 2: then whole messages queued together share a
   * frame), short heads (`short`, section 1: then the host's sequenced frames have them) and
   * short acknowledgements (`shortAcks`, section 4: then the host's pure `A` frames without a
   * `miss` list are `~a` frames).
   * @default bundle false, short false, shortAcks false
   */
  configure(info: { maxframe: number; outmax: number; window?: number; bundle?: boolean; short?: boolean; shortAcks?: boolean }): void {
    this.bundles = info.bundle === true;
    this.short = info.short === true;
    this.shortAcks = info.shortAcks === true;
    this.agentMaxFrame = clamp(info.maxframe, HELLO_CLAMP.maxframe);
    this.agentOutMax = clamp(info.outmax, HELLO_CLAMP.outmax);
    if (info.window !== undefined) this.agentWindow = clamp(info.window, HELLO_CLAMP.window);
    this.frameSize = Math.min(this.frameSize, this.maxOwnFrame());
  }

  private maxOwnFrame(): number {
    return Math.max(MIN_FRAME, Math.min(this.agentMaxFrame, this.agentWindow - WINDOW_RESERVE));
  }

  /**
   * Queue a message (type character + body) for the agent. Returns its handle: whether a
   * frame of it was written (`sent`), and `cancel()` to withdraw it while none was. With `ahead`
   * it goes before the queued messages not started yet (after the one being cut into frames, whose
   * frames stay together, and after earlier `ahead` messages). @default ahead false (in order)
   */
  send(content: Buffer, ahead = false): QueuedMessage {
    const m = new OutMessage(content, ahead);
    if (!ahead) this.queue.push(m);
    else {
      // after the message being cut (its frames must stay together) and the other `ahead` ones
      let i = this.qHead;
      if (i < this.queue.length && this.queue[i].off > 0) i++;
      while (i < this.queue.length && this.queue[i].ahead) i++;
      this.queue.splice(i, 0, m);
    }
    if (!this.bundles) this.pump();
    else if (this.reading) this.pumpDue = true; // pumped once the chunk is read
    else if (!this.pumpSoon) {
      // the messages sent in this tick (calls made in a loop, or after the replies of one chunk) can
      // share frames: pump once they are queued
      this.pumpSoon = true;
      queueMicrotask(() => {
        this.pumpSoon = false;
        this.pump();
      });
    }
    return m;
  }

  /** Close the link (not the transport). Pending start fails with `CLOSED`. */
  shutdown(): void {
    if (this.state === 'closed') return;
    this.dropSession();
    this.state = 'closed';
    if (this.keepTimer) clearTimeout(this.keepTimer);
    this.keepTimer = undefined;
    this.startWaiter?.reject(new TetherError('CLOSED', 'link closed'));
    this.startWaiter = undefined;
    for (const w of this.upWaiters.splice(0)) w.reject(new TetherError('CLOSED', 'link closed'));
  }

  /** Forget every frame and message of the session (both directions). */
  private dropSession(): void {
    if (this.startTimer) clearTimeout(this.startTimer);
    this.startTimer = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.rtoAt = 0;
    this.probeDue = 0;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (this.relistTimer) clearTimeout(this.relistTimer);
    this.relistTimer = undefined;
    this.relistBackoff = 1;
    if (this.paceTimer) clearTimeout(this.paceTimer);
    this.paceTimer = undefined;
    this.unackedIn = 0;
    this.bundles = false; // until hello says so again
    this.short = false;
    this.shortAcks = false;
    this.queue.length = 0;
    this.qHead = 0;
    this.unacked.length = 0;
    this.uHead = 0;
    this.unackedBytes = 0;
    this.heldExtra = 0;
    this.nextSeq = 0;
    this.expect = 0;
    this.lastIn = -1;
    this.ahead.clear();
    this.parts = [];
    this.partsSize = 0;
    this.partsTooBig = false;
    this.ackPending = false;
    this.lastNak = '';
    this.backoff = 1;
    this.frameSize = Math.min(BASE_MAX_FRAME, this.maxOwnFrame());
    this.agentFrame = START_FRAME; // raised by the first good frame of the session (rxSample)
    this.cwnd = 4;
    this.stalls = 0;
    this.probes = [];
    this.pollOut = false;
    this.txLoss.reset();
    this.rxLoss.reset();
    this.counters.frameSize = this.frameSize;
    this.counters.agentFrameSize = this.agentFrame;
  }

  // ---------------------------------------------------------------- output

  /** `performance.now()` at which the bytes written so far are through the line at `baud` (estimate). */
  private lineFreeAt = 0;
  /** Bytes of pure `A` frames written since the agent last showed it read ({@link pureAck}). */
  private pureAckBytes = 0;
  /** `performance.now()` of the last reset of {@link pureAckBytes}. */
  private pureAckSince = 0;
  /** Bytes written since the line was last quiet for {@link PACE_GAP_MS} (estimate). */
  private sinceGap = 0;
  /** Pumps the queue once the line is free again ({@link LinkOptions.paceFrames}). */
  private paceTimer?: NodeJS.Timeout;
  private write(b: Buffer): void {
    if (this.state === 'closed' || !this.transport.isOpen) return;
    if (this.baud > 0) {
      const now = performance.now();
      if (this.lineFreeAt + PACE_GAP_MS <= now) this.sinceGap = 0;
      this.lineFreeAt = Math.max(now, this.lineFreeAt) + this.lineTimeMs(b.length);
      this.sinceGap += b.length;
    }
    this.out.push(b);
    this.counters.bytesOut += b.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.out.length === 0) return;
    // always a fresh buffer: retransmit lines must never be lent to a transport that may keep or change them
    const data = Buffer.concat(this.out);
    this.out = [];
    this.transport.write(data).catch(() => {
      /* the transport reports its own close */
    });
  }

  /**
   * An `A` frame from the host. `top`: 1 + the agent sequence number received last (sent with a
   * `miss` list: a repair the agent wrote before that frame is lost for sure, one written after
   * it may still be on its way, section 5), 0 for none.
   */
  private ackFrame(miss?: number[], top = 0): Buffer {
    this.ackPending = false;
    this.unackedIn = 0;
    this.counters.acksOut++;
    const m = miss && miss.length ? ' ' + miss.join(' ') : '';
    // 14 bytes instead of about 30 (section 4, "Short acknowledgements")
    if (this.shortAcks && m === '' && top === 0 && this.agentFrame <= SHORT_ACK_MAX_SIZE) return encodeShortAck(this.expect, this.agentFrame);
    // the epoch field is informative from the host: 0 keeps the frame short
    return encodeFrame(`A${this.expect} 0 ${this.agentFrame} ${this.nonce} ${top}${m}`);
  }

  /**
   * A pure `A` is due (section 4). It is delayed, as TCP delays acks: it goes out once about a
   * frame's worth of the agent's bytes is unacknowledged, or after ACK_DELAY_MS, and not at all
   * when a sequenced frame carries the ack first. Pure acks are not flow-controlled: one per
   * received batch would fill a 256-byte module ring (the window reserve holds about one).
   */
  private scheduleAck(bytes = 0): void {
    if (this.state !== 'open') return;
    this.ackPending = true;
    this.unackedIn += bytes;
    if (this.unackedIn >= this.agentFrame) {
      this.pureAck();
      return;
    }
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      if (this.ackPending && this.state === 'open') this.pureAck();
    }, ACK_DELAY_MS);
  }

  /**
   * Write the pending pure `A`, unless the agent may not have read the ones before it. While
   * frames of ours fill the agent's window (half of it or more) its UART buffer holds them and
   * only the reserve is left for unsequenced frames (section 4); an agent busy writing or waiting
   * for its RX idle timeout does not read for a while, and an `A` every 10 ms or every frame it
   * sends would overrun that buffer. So at most {@link ACK_BUDGET} bytes of pure acks go out until
   * the agent shows it read (its ack moves on, or an `A` of its own comes: it sends one after each
   * batch it read), or {@link ACK_HOLD_MAX_MS} passed. The held ack goes then; a frame of ours
   * carries it sooner.
   */
  private pureAck(): void {
    // a long A is about 30 bytes (its exact length is known only once encoded), a short one 14
    // (section 4). On a noisy line the agent's signs of reading get lost too: after
    // ACK_HOLD_MAX_MS the budget is new again
    const now = performance.now();
    if (now - this.pureAckSince > ACK_HOLD_MAX_MS) {
      this.pureAckBytes = 0;
      this.pureAckSince = now;
    }
    if (this.unackedBytes * 2 >= this.agentWindow && this.pureAckBytes + (this.shortAcks ? SHORT_ACK_BYTES : 30) > ACK_BUDGET) {
      this.counters.acksHeld++;
      if (!this.ackTimer) {
        this.ackTimer = setTimeout(
          () => {
            this.ackTimer = undefined;
            if (this.ackPending && this.state === 'open') this.pureAck();
          },
          Math.ceil(ACK_HOLD_MAX_MS - (now - this.pureAckSince)) + 1,
        );
      }
      return;
    }
    const line = this.ackFrame();
    this.pureAckBytes += line.length;
    this.write(line);
  }

  /** The agent read what we sent (its ack moved on, or it sent an `A`): owed acks may go. */
  private agentRead(): void {
    this.pureAckBytes = 0;
    this.pureAckSince = performance.now();
    if (this.ackPending && this.state === 'open') {
      if (this.ackTimer) clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
      this.pureAck();
    }
  }

  /** Holdoff before the same hole is reported or repaired again: about a round trip (ms). */
  private holdoff(): number {
    return Math.max(1.5 * this.srtt, 2);
  }

  /**
   * Report holes (section 5): an `A` listing the sequence numbers missing below the
   * highest frame received, and after a corrupt line also the one after it (it may be the
   * frame that was corrupted: this covers losses at the tail). At most 16; one per batch of
   * bytes read (after it); the same list is not repeated within a round trip unless `again`
   * (the holes listed again while nothing fills them, {@link armRelist}).
   */
  private nak(badLine: boolean, hint = -1, again = false): void {
    if (this.state !== 'open') return;
    if (this.reading) {
      // one list per batch of bytes read, after it: an A per frame ahead of a gap (a burst of
      // them while the agent repairs) overran the module's RX buffer, which the window fills
      this.nakDue = true;
      if (badLine) {
        this.nakBad = true;
        if (hint >= 0) this.nakHint = hint;
      }
      return;
    }
    let top = -1; // highest distance ahead of `expect` received
    for (const k of this.ahead.keys()) top = Math.max(top, mod(k - this.expect));
    const miss: number[] = [];
    for (let d = 0; d < top && miss.length < 16; d++) {
      const sq = mod(this.expect + d);
      if (!this.ahead.has(sq)) miss.push(sq);
    }
    if (badLine && miss.length < 16) {
      // the corrupt line's own sequence number, when its head survived (unchecked, so only a
      // hint): a frame already received or below `expect` needs no repair, one beyond the
      // highest held is named itself instead of guessing the one after the highest
      const h = hint < 0 ? -1 : mod(hint - this.expect);
      if (h < 0 || h >= MAX_UNACKED_FRAMES) {
        if (hint < 0) miss.push(mod(this.expect + top + 1));
      } else if (h > top && h <= top + 16) {
        for (let d = top + 1; d <= h && miss.length < 16; d++) miss.push(mod(this.expect + d));
      }
    }
    if (miss.length === 0) return;
    const key = miss.join(' ');
    const now = performance.now();
    if (!again && key === this.lastNak && now - this.nakAt < this.holdoff()) return this.armRelist();
    this.lastNak = key;
    this.nakAt = now;
    this.write(this.ackFrame(miss, this.lastIn + 1));
    this.armRelist();
  }

  /**
   * While holes remain, list them again after a round trip (at least a tick of the agent's, which
   * repeats a repair only in a later tick), backing off to {@link RELIST_MAX_MS} while nothing
   * fills them. A lost repair of the agent's, with nothing written after it (its window full of
   * the frames behind the holes), was otherwise repaired only at the agent's retransmission
   * timeout: 0.2-0.5 s of a still line each time (section 5).
   */
  private armRelist(): void {
    if (this.relistTimer || this.ahead.size === 0) return;
    const ms = Math.min(RELIST_MAX_MS, Math.max(this.holdoff(), TICK_MS) * this.relistBackoff);
    this.relistTimer = setTimeout(() => {
      this.relistTimer = undefined;
      if (this.state !== 'open' || this.ahead.size === 0) return;
      this.relistBackoff = Math.min(this.relistBackoff * 2, RELIST_MAX_MS / TICK_MS);
      this.nak(false, -1, true); // the same list again, on purpose
    }, ms);
  }

  /** Write frames of queued messages while the window and the frame limit allow. */
  private pump(): void {
    if (this.state !== 'open') return;
    const limit = this.windowInUse() + this.heldExtra - WINDOW_RESERVE;
    while (this.qHead < this.queue.length) {
      const m = this.queue[this.qHead];
      if (m.cancelled) {
        this.popQueue();
        continue;
      }
      if (this.unacked.length - this.uHead >= Math.min(MAX_UNACKED_FRAMES, Math.floor(this.heldExtra > 0 ? Math.max(this.cwnd, this.cwndFloor()) : this.cwnd))) break;
      if (this.pacing()) break;
      const seq = this.nextSeq;
      let head: string;
      let end: number;
      const remaining = m.buf.length - m.off;
      if (m.off === 0) {
        // whole when it fits
        const whole = this.head(String.fromCharCode(m.buf[0]), seq);
        const n = fitPiece(m.buf, 1, this.frameSize, whole, this.short);
        if (n >= remaining - 1) {
          if (this.bundles && this.pumpBundle(m, seq)) continue;
          head = whole;
          end = m.buf.length;
        } else {
          head = this.head('&', seq);
          // a first piece never ends the message: the last one must be a `$`
          end = Math.min(m.off + fitPiece(m.buf, m.off, this.frameSize, head, this.short), m.buf.length - 1);
        }
      } else {
        const h = this.head('&', seq);
        const n = fitPiece(m.buf, m.off, this.frameSize, h, this.short);
        if (n >= remaining) {
          head = this.head('$', seq);
          end = m.buf.length;
        } else {
          head = h;
          end = m.off + n;
        }
      }
      const whole = m.off === 0 && end === m.buf.length;
      const body = m.buf.subarray(whole ? 1 : m.off, end);
      const line = this.frame(head, body);
      if (this.unackedBytes > 0 && this.unackedBytes + line.length > limit) break;
      m.off = end;
      if (m.off >= m.buf.length) this.popQueue();
      this.sendSeq(seq, line);
    }
  }

  /** Head of our sequenced frame `seq` of `kind`, carrying our ack: short when the agent reads them (section 1). */
  private head(kind: string, seq: number): string {
    return this.short ? shortHead(kind, seq, this.expect) : seqHead(kind, seq, this.expect);
  }

  /** Our sequenced frame line of `head` (from {@link head}) and `body`, in the same form. */
  private frame(head: string, body: Uint8Array): Buffer {
    return this.short ? encodeShortFrame(head, body) : encodeFrame(head, body);
  }

  /** Write sequenced frame `seq` (its first copy), keep it until acknowledged; it carries our ack. */
  private sendSeq(seq: number, line: Buffer): void {
    this.nextSeq = mod(seq + 1);
    this.unacked.push({ seq, line, sentAt: performance.now(), retx: false, after: 0 });
    this.unackedBytes += line.length;
    this.counters.framesOut++;
    this.ackPending = false;
    this.unackedIn = 0;
    this.write(line);
    this.armRto();
  }

  /**
   * Write the queued whole messages from `m` (the head of the queue, whole in a frame) on as one
   * `M` frame when more than one fits the frame size and the agent's window (section 2,
   * "Bundles"); false when not, and nothing was done.
   */
  private pumpBundle(m: OutMessage, seq: number): boolean {
    const head = this.head('M', seq);
    const over = frameOverhead(head, this.short);
    let budget = this.frameSize - over;
    if (this.unackedBytes > 0) budget = Math.min(budget, this.windowInUse() + this.heldExtra - WINDOW_RESERVE - this.unackedBytes - over);
    const items = [m];
    let used = bundledSize(m.buf);
    let j = this.qHead + 1;
    while (j < this.queue.length && used < budget) {
      const n = this.queue[j];
      if (!n.cancelled) {
        const w = bundledSize(n.buf);
        if (used + w > budget) break;
        items.push(n);
        used += w;
      }
      j++;
    }
    if (items.length < 2) return false;
    const body = bundleBody(items.map((x) => x.buf));
    const line = this.frame(head, body);
    for (const x of items) x.off = x.buf.length;
    for (let k = j - this.qHead; k > 0; k--) this.popQueue();
    this.counters.bundledOut += items.length;
    this.sendSeq(seq, line);
    return true;
  }

  /**
   * True when the next data frame must wait for the line ({@link LinkOptions.paceFrames}); a
   * timer then pumps the queue once the line is free and {@link PACE_GAP_MS} has passed.
   */
  private pacing(): boolean {
    if (!this.opts.paceFrames || this.baud <= 0) return false;
    const every = Math.max(PACE_EVERY_MIN, Math.min(this.windowInUse() >> 1, Math.floor((this.baud * PACE_EVERY_MS) / 10_000)));
    if (this.sinceGap < every) return false;
    const wait = this.lineFreeAt + PACE_GAP_MS - performance.now();
    if (wait <= 0) return false;
    if (!this.paceTimer) {
      // whole milliseconds rounded down from a 1 ms gap (wait + 0.25): Node fires the timer at
      // that time or up to a millisecond later; one that fires before the 0.75 ms is up re-arms
      this.paceTimer = setTimeout(() => {
        this.paceTimer = undefined;
        this.pump();
      }, Math.max(1, Math.floor(wait + 0.25)));
    }
    return true;
  }

  /**
   * The part of the agent's window (bytes) the host fills now: all of it, or at most
   * {@link BOTH_WAYS_WINDOW} while the agent sends bulk too (its in-order frames filled more than
   * {@link BULK_SHARE} of the line in the last whole {@link BULK_PERIOD_MS}, which ended less than
   * {@link BULK_STALE_MS} ago).
   */
  private windowInUse(): number {
    if (this.agentWindow <= BOTH_WAYS_WINDOW || !this.agentBulk || performance.now() - this.inSince >= BULK_STALE_MS) return this.agentWindow;
    return BOTH_WAYS_WINDOW;
  }

  /** Count `n` bytes of an in-order agent frame body; once a period is over, judge whether the agent sends bulk. */
  private noteAgentBytes(n: number): void {
    const now = performance.now();
    this.inBytes += n;
    const span = now - this.inSince;
    if (span < BULK_PERIOD_MS) return;
    const baud = this.baud;
    this.agentBulk = baud > 0 && span < BULK_STALE_MS && this.inBytes >= (span * baud * BULK_SHARE) / 10_000;
    this.inBytes = 0;
    this.inSince = now;
  }

  private popQueue(): void {
    this.qHead++;
    if (this.qHead > 64 && this.qHead * 2 > this.queue.length) {
      this.queue.splice(0, this.qHead);
      this.qHead = 0;
    }
  }

  /** Fewest frames the congestion window goes down to: what fills the agent's window at the frame size in force, at least 4. */
  private cwndFloor(): number {
    return Math.max(4, Math.floor((this.agentWindow + this.heldExtra - WINDOW_RESERVE) / Math.max(MIN_FRAME, this.frameSize)));
  }

  /** The line rate in force (baud; 0: unknown or not paced), {@link LinkOptions.baud}. */
  private get baud(): number {
    const b = this.baudOpt ?? this.transport.lineBaud ?? 0;
    return b > 0 ? b : 0;
  }

  private lineTimeMs(bytes: number): number {
    const baud = this.baud;
    return baud > 0 ? (bytes * 10000) / baud : 0;
  }

  /** Start the retransmission timeout (and the tail-loss probe) unless it runs or nothing is unacknowledged. */
  private armRto(): void {
    if (this.rtoAt !== 0 || this.uHead >= this.unacked.length) return;
    const now = performance.now();
    // the RTT samples already include the line time of what was queued before a frame
    const ms = Math.min(RTO_MAX_MS, this.rto * this.backoff);
    this.rtoAt = now + ms;
    // tail-loss probe: a `Y` after about two round trips without progress asks for the ack,
    // which a lost `A` would otherwise only bring back after the timeout
    const probeMs = this.probeMs();
    this.probeDue = probeMs < ms ? now + probeMs : 0;
    this.armTimer(this.probeDue || this.rtoAt, now);
  }

  /** Progress (an ack): the timeout starts over from now. */
  private restartRto(): void {
    this.rtoAt = 0;
    this.probeDue = 0;
    this.armRto();
  }

  /** Have the timer fire at `at` at the latest (a timer that fires sooner is kept). */
  private armTimer(at: number, now: number): void {
    if (this.timer) {
      if (this.timerAt <= at) return;
      clearTimeout(this.timer);
    }
    this.timerAt = at;
    this.timer = setTimeout(this.onTimerFn, Math.max(1, at - now));
  }

  private onTimer(): void {
    this.timer = undefined;
    // Node fires timers on whole milliseconds: a deadline within 1 ms is due
    const now = performance.now() + 1;
    if (this.probeDue !== 0 && now >= this.probeDue) {
      this.probeDue = 0;
      if (this.state === 'open' && this.uHead < this.unacked.length) {
        this.poll();
        // the Y or its answer may be lost as well (at 10⁻³ one in five is): probe again a probe
        // interval later, up to PROBES_MAX in a row, rather than leave the line idle until the
        // timeout (a window's worth of frames waited 200-450 ms for it)
        const again = now + this.probeMs();
        if (this.probesUnanswered < PROBES_MAX && this.rtoAt !== 0 && again < this.rtoAt) this.probeDue = again;
      }
    }
    if (this.rtoAt !== 0 && now >= this.rtoAt) {
      this.rtoAt = 0;
      this.onRto();
    }
    const next = this.probeDue !== 0 && (this.rtoAt === 0 || this.probeDue < this.rtoAt) ? this.probeDue : this.rtoAt;
    if (next !== 0) this.armTimer(next, now - 1);
  }

  private onRto(): void {
    if (this.state !== 'open' || this.uHead >= this.unacked.length) return;
    this.counters.timeouts++;
    // noise, not congestion, loses frames on a UART: back off little (the timer also covers a dead agent)
    this.backoff = Math.min(this.backoff * 2, 4);
    // nothing heard for a whole timeout: send less until acks come back, but never fewer frames
    // than fill the agent's window (noise, not congestion, loses them: a floor of 4 small frames
    // left most of the line idle at 10⁻³)
    this.cwnd = Math.max(this.cwndFloor(), this.cwnd / 2);
    this.counters.cwnd = this.cwnd;
    // the original may still sit unread in the module's UART buffer (a slow agent, not a lost
    // frame): repeating it blindly could overflow that buffer. Ask with a Y instead; the answer
    // proves everything sent before it was consumed or lost, and afterProbe() repairs.
    this.poll();
    // liveness: after two timeouts in a row without progress, and once the oldest frame is
    // clearly overdue (no agent takes that long to drain its ring), repeat it itself
    const oldest = this.unacked[this.uHead];
    if (++this.stalls >= 2 && performance.now() - oldest.sentAt > LIVENESS_MS + this.lineTimeMs(this.agentWindow)) this.retransmit(oldest);
    this.armRto();
  }

  /** Selective repeat: send one unacknowledged frame again (section 5). */
  private retransmit(u: Unacked): void {
    const now = performance.now();
    this.recoverAt = now;
    if (!u.retx) this.lossSample(true, u.line.length);
    u.retx = true;
    u.sentAt = now;
    u.after = this.nextSeq;
    this.counters.retransmits++;
    this.ackPending = false;
    this.write(u.line);
  }

  /**
   * Send a `Y` unless one is still unanswered: unsequenced frames are not flow-controlled, and a
   * slow agent's small ring (NodeMCU: 256 bytes) must not fill with probes.
   */
  private poll(): void {
    const now = performance.now();
    // a Y unanswered for a probe interval is taken as lost (it or its answer): another may go,
    // PROBES_MAX in a row for the tail-loss probe (the timeout's own probe is spaced by its backoff)
    if (this.pollOut) {
      if (now - this.lastPollAt < this.probeMs()) return;
      // the earlier Ys may still sit unread in the agent's buffer (a slow agent, not a lost Y):
      // the window's reserve holds one, so a further one must fit beside the unacknowledged frames,
      // unless the last is Y_LOST_RTOS timeouts old (no agent that answers at the pace its round
      // trips show keeps it unread that long). Without that, a lost Y beside a full window (NodeMCU:
      // one or two frames fill it) left the line idle until the liveness repeat, 0.5 s each time
      const full = this.unackedBytes + this.probesUnanswered * Y_MAX_BYTES > this.agentWindow + this.heldExtra - WINDOW_RESERVE;
      if (full && now - this.lastPollAt < Y_LOST_RTOS * this.rto) return;
    }
    this.pollOut = true;
    this.probesUnanswered++;
    this.lastPollAt = now;
    this.counters.polls++;
    this.probeToken = (this.probeToken % 9999) + 1;
    if (this.probes.push({ token: this.probeToken, at: now }) > PROBES_KEPT) this.probes.shift();
    this.write(encodeFrame(`Y${this.probeToken}`));
  }

  /** Wait before a tail-loss probe, and before a `Y` without an answer counts as lost (ms). */
  private probeMs(): number {
    return Math.max(2 * this.srtt, PROBE_MIN_MS);
  }

  /**
   * When the `Y` with this token was written (`performance.now()` ms), or 0 when it is not one of
   * the {@link PROBES_KEPT} last ones (or was answered already). An answer proves nothing about
   * later `Y`s, so they stay; earlier ones are forgotten (their answers would prove less).
   */
  private probeAnswered(token: number): number {
    if (token === 0) return 0;
    const i = this.probes.findIndex((p) => p.token === token);
    if (i < 0) return 0;
    const at = this.probes[i].at;
    this.probes.splice(0, i + 1);
    return at;
  }

  /**
   * The `A` that answers a `Y` written at `at` (it echoes the `Y`'s token) and lists no hole: the
   * line keeps order, so once the agent answered the `Y`, a frame sent before the `Y` and still
   * unacknowledged is lost: repeat the oldest at once. An `A` without the token may have crossed
   * the `Y` on the line and proves nothing: repeating then could overflow a slow agent's UART
   * buffer (section 5).
   */
  private afterProbe(at: number): void {
    if (this.uHead >= this.unacked.length) return;
    const u = this.unacked[this.uHead];
    if (u.sentAt < at) this.retransmit(u);
  }

  /**
   * The agent listed holes: repeat each listed frame not repeated within a round trip, and, when
   * the list answers a `Y` written at `probeAt` (else 0), each listed frame last sent before that
   * `Y`: the agent read everything sent before it, so such a frame is lost, a repair too.
   */
  private onMiss(miss: number[], probeAt: number): void {
    const outstanding = this.unacked.length - this.uHead;
    if (outstanding === 0) return;
    const base = this.unacked[this.uHead].seq;
    const now = performance.now();
    // the agent holds a frame at least as far as the one before the last listed (the list names
    // holes below the highest frame it holds, and at most the one after it)
    let far = 0;
    for (const sq of miss) if (mod(sq - base) < outstanding) far = Math.max(far, mod(sq - base));
    const held = mod(base + far - 1);
    for (const sq of miss) {
      const i = mod(sq - base);
      if (i >= outstanding) continue;
      const u = this.unacked[this.uHead + i];
      // a frame never repeated is lost for sure (the line is FIFO); so is a repair when the agent
      // holds a frame first sent after it; else a repair is repeated only after a timeout's worth
      // of time (it may still be queued behind other frames on the line), or when the answer to a
      // Y written after it still lists it
      if (!u.retx || mod(held - u.after) < SEQ_MOD / 2 || u.sentAt < probeAt || now - u.sentAt > this.rto + this.lineTimeMs(this.unackedBytes)) this.retransmit(u);
    }
  }

  /** One frame outcome towards the agent: adapt the frame size to the loss seen (section 6). */
  private lossSample(lost: boolean, size: number): void {
    this.txLoss.sample(lost, size);
    this.frameSize = Math.min(this.maxOwnFrame(), this.txLoss.bestSize(this.maxOwnFrame()));
    this.counters.frameSize = this.frameSize;
  }

  /** Process a cumulative acknowledgement `ack` (next seq the agent expects). */
  private onAck(ack: number): void {
    if (this.uHead >= this.unacked.length) return;
    const base = this.unacked[this.uHead].seq;
    const n = mod(ack - base);
    const outstanding = this.unacked.length - this.uHead;
    if (n === 0 || n > outstanding) return; // nothing new, or outside (oldest .. next]: stale or bogus
    this.heldExtra = 0; // what the agent kept ahead of a gap is handed on or acknowledged now
    this.pureAckBytes = 0; // the agent read up to these frames, and the acks written before them
    this.pureAckSince = performance.now();
    const now = performance.now();
    for (let k = 0; k < n; k++) {
      const u = this.unacked[this.uHead++];
      this.unackedBytes -= u.line.length;
      if (!u.retx) {
        // Karn: no sample from a frame whose ack may have waited for a repair
        if (k === 0 && u.sentAt > this.recoverAt) this.sampleRtt(now - u.sentAt);
        this.cwnd = Math.min(MAX_UNACKED_FRAMES, this.cwnd + (this.cwnd < 16 ? 1 : 1 / this.cwnd));
        this.counters.cwnd = this.cwnd;
        this.lossSample(false, u.line.length);
      }
    }
    if (this.uHead > 64 && this.uHead * 2 > this.unacked.length) {
      this.unacked.splice(0, this.uHead);
      this.uHead = 0;
    }
    this.backoff = 1;
    this.stalls = 0;
    this.restartRto();
    this.pumpNow();
  }

  /** Pump the queue now, or once the chunk being read is handled (its acks and lists first). */
  private pumpNow(): void {
    if (this.reading) this.pumpDue = true;
    else this.pump();
  }

  private sampleRtt(r: number): void {
    this.minRtt = Math.min(this.minRtt, r);
    if (this.srtt === 0) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(RTO_MAX_MS, Math.max(RTO_MIN_MS, this.srtt + 4 * this.rttvar));
    this.counters.srttMs = Math.round(this.srtt * 10) / 10;
  }

  // ----------------------------------------------------------------- input

  private onData(chunk: Uint8Array): void {
    this.counters.bytesIn += chunk.length;
    this.lastHeard = Date.now();
    // acks inside the chunk open the window, but frames go out once the whole chunk was read:
    // then they all carry the newest ack (an agent walks its retransmit queue per new ack)
    this.reading = true;
    try {
      this.lines.push(chunk, this.onLineFn);
    } finally {
      this.reading = false;
    }
    this.counters.overlongLines = this.lines.overlong;
    if (this.nakDue) {
      const bad = this.nakBad;
      const hint = this.nakHint;
      this.nakDue = this.nakBad = false;
      this.nakHint = -1;
      this.nak(bad, hint);
    }
    if (this.pumpDue) {
      this.pumpDue = false;
      this.pump();
    }
  }

  private onLine(line: Buffer): void {
    if (line.length === 0 || (line.length === 1 && line[0] === 0x0d)) return;
    const r = parseLine(line);
    if (r.kind === 'log') {
      this.counters.logLines++;
      this.handlers.log?.(r.text);
      return;
    }
    if (r.kind === 'bad') {
      if (isV1Frame(line)) {
        this.handlers.v1?.();
        return;
      }
      this.counters.badFrames++;
      // only a line that starts like a frame of the agent tells of a lost frame: a stray `~` line
      // (boot noise, line garbage) says nothing of the frames, and counting it as a loss shrank
      // the agent's frame size to the minimum and made the agent repeat frames still on their way
      if (looksLikeAgentFrame(line)) {
        this.rxSample(true, Math.min(line.length + 1, this.agentFrame));
        this.nak(true, seqHint(line));
      }
      return;
    }
    this.onFrame(r.frame);
  }

  /** One frame outcome from the agent (a good line, or a bad line / a gap): adapt its frame size. */
  private rxSample(lost: boolean, size: number): void {
    if (this.state !== 'open' && this.state !== 'starting') return;
    this.rxLoss.sample(lost, size);
    // corrupt agent lines while starting tell of the noise from the agent: the first size the
    // session asks for after START_FRAME follows them
    if (this.state === 'starting') return;
    const next = this.rxLoss.bestSize(this.agentOutMax);
    // tell the agent when the size moved by more than an eighth
    if (Math.abs(next - this.agentFrame) * 8 > this.agentFrame) {
      this.agentFrame = next;
      this.counters.agentFrameSize = next;
      this.scheduleAck(next);
    }
  }

  private onFrame(f: LinkFrame): void {
    switch (f.type) {
      case 'a':
        // a short acknowledgement stands for an A with this session's nonce and epoch: only an
        // agent in this session sends it (section 4, "Short acknowledgements")
        if (this.state !== 'open') {
          this.counters.acksIn++;
          return;
        }
        return this.onFrame({ type: 'A', ack: f.ack, epoch: this.epoch_, size: f.size, nonce: this.nonce, probe: 0, miss: NO_MISS });
      case 'A':
        this.counters.acksIn++;
        this.pollOut = false;
        this.probesUnanswered = 0;
        if (this.state === 'starting') {
          if (f.nonce === this.nonce) this.opened(f.epoch, f.size);
          return;
        }
        if (this.state !== 'open') return;
        if (f.nonce !== this.nonce) return this.lost('session', f.epoch);
        if (f.epoch !== this.epoch_) return this.lost('epoch', f.epoch);
        const size = clamp(f.size, HELLO_CLAMP.window);
        // above its own window: host frames it keeps ahead of a gap, which left its UART buffer;
        // they count only while the ack stays at this A's (a repair that fills the gap hands them
        // on, and an ack in a later frame carries no size)
        const extra = size - this.agentWindow;
        if (extra <= 0) this.agentWindow = size;
        const probeAt = this.probeAnswered(f.probe);
        this.onAck(f.ack);
        this.heldExtra = extra > 0 && (this.uHead >= this.unacked.length || this.unacked[this.uHead].seq === f.ack) ? extra : 0;
        if (this.heldExtra > 0) this.pumpNow();
        this.agentRead();
        if (f.miss.length > 0) this.onMiss(f.miss, probeAt);
        else if (probeAt !== 0) this.afterProbe(probeAt);
        return;
      case 'B':
        if (this.state === 'open' && f.epoch !== this.epoch_) this.lost('boot', f.epoch);
        return;
      case 'seq':
        if (this.state !== 'open') return;
        this.onSeq(f.kind, f.seq, f.ack, f.body);
        return;
      default:
        // S and Y travel host→agent only
        this.counters.badFrames++;
    }
  }

  private opened(epoch: number, window: number): void {
    if (this.startTimer) clearTimeout(this.startTimer);
    this.startTimer = undefined;
    this.state = 'open';
    this.epoch_ = epoch;
    this.agentWindow = clamp(window, HELLO_CLAMP.window);
    this.frameSize = Math.min(this.frameSize, this.maxOwnFrame());
    this.counters.frameSize = this.frameSize;
    this.armKeepalive();
    const w = this.startWaiter;
    this.startWaiter = undefined;
    w?.resolve(epoch);
    this.pump();
  }

  private lost(reason: LinkReset['reason'], epoch: number): void {
    const previousEpoch = this.epoch_;
    this.dropSession();
    this.state = 'idle';
    this.handlers.reset?.({ previousEpoch, epoch, reason });
  }

  private onSeq(kind: string, seq: number, ack: number, body: Buffer): void {
    this.onAck(ack);
    if (this.state !== 'open') return;
    this.lastIn = seq;
    const d = mod(seq - this.expect);
    if (d === 0) {
      this.deliver(kind, body);
      this.expect = mod(this.expect + 1);
      while (this.ahead.size > 0) {
        const next = this.ahead.get(this.expect);
        if (!next) break;
        this.ahead.delete(this.expect);
        this.deliver(next.kind, next.body);
        this.expect = mod(this.expect + 1);
      }
      this.rxSample(false, body.length + 24);
      this.noteAgentBytes(body.length);
      // a repair filled a hole and others remain: list them now (the list changed, so it goes at
      // once). Without it the agent, its window full of frames behind the holes, sent nothing new
      // that could show the holes, and repaired them one per retransmission timeout (0.3 s each)
      this.relistBackoff = 1;
      if (this.ahead.size > 0) this.nak(false);
      else this.scheduleAck(body.length + 24);
    } else if (d < MAX_UNACKED_FRAMES) {
      this.counters.outOfOrder++;
      if (!this.ahead.has(seq)) {
        this.ahead.set(seq, { kind, body });
        // a good frame, even ahead of a gap: without it the loss estimate saw mostly losses
        this.rxSample(false, body.length + 24);
      }
      this.nak(false);
    } else {
      this.counters.duplicates++;
      this.scheduleAck();
    }
  }

  private deliver(kind: string, body: Buffer): void {
    this.counters.framesIn++;
    if (kind === '&' || kind === '$') {
      if (!this.partsTooBig) {
        if (this.partsSize + body.length > HOST_MAX_MSG) {
          this.partsTooBig = true;
          this.parts = [];
        } else {
          this.parts.push(body);
          this.partsSize += body.length;
        }
      }
      if (kind === '&') return;
      const tooBig = this.partsTooBig;
      const whole = tooBig ? undefined : Buffer.concat(this.parts);
      this.parts = [];
      this.partsSize = 0;
      this.partsTooBig = false;
      if (!whole || whole.length === 0) {
        this.counters.droppedMessages++;
        return;
      }
      this.handlers.message?.(whole);
      return;
    }
    if (this.parts.length > 0 || this.partsTooBig) {
      // a whole message inside a fragmented one cannot happen on a reliable link: drop both halves' remains
      this.counters.droppedMessages++;
      this.parts = [];
      this.partsSize = 0;
      this.partsTooBig = false;
    }
    if (kind === 'M') {
      // whole messages, in order (section 2, "Bundles"); where the body stops being a bundle the
      // rest is dropped and counted (it passed the CRC, so the agent made it)
      const { messages, ok } = unbundle(body);
      if (!ok) this.counters.droppedMessages++;
      this.counters.bundledIn += messages.length;
      for (const m of messages) this.handlers.message?.(m.subarray(1), m[0]);
      return;
    }
    // a whole message: its body as it lies in the line, with its type apart (no copy)
    this.handlers.message?.(body, kind.charCodeAt(0));
  }

  private armKeepalive(): void {
    if (this.keepTimer) return;
    const tick = () => {
      this.keepTimer = undefined;
      if (this.state === 'closed') return;
      if (this.state === 'open' && Date.now() - this.lastHeard >= this.opts.keepaliveMs && this.uHead >= this.unacked.length) {
        this.pollOut = false; // a keepalive always goes: nothing was heard for a while
        this.poll();
      }
      this.keepTimer = setTimeout(tick, this.opts.keepaliveMs / 2);
      this.keepTimer.unref?.();
    };
    this.keepTimer = setTimeout(tick, this.opts.keepaliveMs / 2);
    this.keepTimer.unref?.();
  }
}

/**
 * The loss estimate's floor on a clean line is 1/(clean bytes + CLEAN_PRIOR) per byte
 * ({@link LossEstimator.perByte}): a session's frames start at about 230 bytes and reach 1 KB
 * after about 41 KB without a loss. 1/(16 · clean + 16384) (frames from about 640 bytes, 1 KB after
 * 1.6 KB) was faster on a clean line but cost host→module at 10⁻³ 0.55 → 0.47 of clean: the first
 * frames, too large for that line, cannot be cut again once sent (docs/protocol-performance.md,
 * "An acknowledgement behind a full TX cache").
 */
const CLEAN_PRIOR = 2048;

/**
 * Estimates the per-byte loss probability of one direction from frame outcomes
 * (EWMA over frames) and picks the frame size that maximises goodput (section 6):
 * argmax over n of (n − overhead)/n · (1 − q)^n.
 */
export class LossEstimator {
  private loss = 0;
  private size = BASE_MAX_FRAME;
  private n = 0;
  /** Bytes carried by good frames since the last loss (the evidence that large frames are safe). */
  private clean = 0;
  private cached = 0;
  private cachedMax = 0;
  private dirty = true;

  /** Record one frame of `size` bytes that was lost or not. */
  sample(lost: boolean, size: number): void {
    const a = this.n < 16 ? 1 / (this.n + 1) : 1 / 32;
    this.n++;
    this.loss += a * ((lost ? 1 : 0) - this.loss);
    this.size += a * (size - this.size);
    this.clean = lost ? 0 : this.clean + size;
    if (lost) this.dirty = true;
  }

  /**
   * Loss probability per byte used for sizing: the measured one, but never below
   * 1/(clean bytes since the last loss + {@link CLEAN_PRIOR}). A frame cannot
   * be cut again once sent, so the size only grows as far as the clean bytes seen vouch for it
   * (section 6).
   */
  get perByte(): number {
    const measured = this.loss <= 0 ? 0 : 1 - Math.pow(1 - Math.min(this.loss, 0.99), 1 / Math.max(this.size, 1));
    return Math.max(measured, 1 / (this.clean + CLEAN_PRIOR));
  }

  /**
   * Best frame size in [MIN_FRAME, max] for the estimated loss. Recomputed after a loss and every
   * 16 samples (between them the size stays as it was).
   */
  bestSize(max: number): number {
    if (this.cached > 0 && this.cachedMax === max && !this.dirty && (this.n & 15) !== 0) return this.cached;
    this.dirty = false;
    this.cachedMax = max;
    this.cached = this.searchSize(max);
    return this.cached;
  }

  /**
   * The grid point (MIN_FRAME + 8k, at most `max`) where g(n) = ((n − 24)/n)·(1 − q)^n is largest,
   * the first one on a tie. g is unimodal in n: ln g has the derivative 24/(n(n − 24)) + ln(1 − q),
   * zero at n* = 12 + √(144 + 24/−ln(1 − q)); the best grid point is one of the two around n*.
   * The 24 bytes are counted for short heads too (section 1): counting their 13 made the frames
   * grow more slowly on a clean line, and module→host at 921,600 fell from 0.93 to 0.88 of the line.
   * Uncached: {@link bestSize} is what the link uses.
   */
  searchSize(max: number): number {
    const q = this.perByte;
    const top = MIN_FRAME + Math.floor((max - MIN_FRAME) / 8) * 8;
    if (top <= MIN_FRAME) return MIN_FRAME;
    const l = -Math.log1p(-q);
    const star = l > 0 ? 12 + Math.sqrt(144 + 24 / l) : Infinity;
    const lo = Math.min(top, Math.max(MIN_FRAME, MIN_FRAME + Math.floor((star - MIN_FRAME) / 8) * 8));
    const hi = Math.min(top, lo + 8);
    const g = (n: number) => ((n - 24) / n) * Math.pow(1 - q, n);
    return hi > lo && g(hi) > g(lo) ? hi : lo;
  }

  /** {@link searchSize} by trying every grid point (reference for tests). @internal */
  searchSizeSlow(max: number): number {
    const q = this.perByte;
    let best = MIN_FRAME;
    let bestV = -1;
    for (let n = MIN_FRAME; n <= max; n += 8) {
      const v = ((n - 24) / n) * Math.pow(1 - q, n);
      if (v > bestV) {
        bestV = v;
        best = n;
      }
    }
    return best;
  }

  reset(): void {
    this.loss = 0;
    this.size = BASE_MAX_FRAME;
    this.n = 0;
    this.clean = 0;
    this.cached = 0;
    this.dirty = true;
  }
}

/** The `miss` list of an `A` that has none (never changed). */
const NO_MISS: number[] = [];

/** Short type bytes of the sequenced frames an agent sends (`r x e p l m f t`, section 1), by byte. */
const SHORT_AGENT: boolean[] = [];
for (const c of 'rxeplmft') SHORT_AGENT[c.charCodeAt(0)] = true;
/** A base-64 digit of a short head (0x30..0x6F, section 1). */
function isDigit64(c: number): boolean {
  return c >= 0x30 && c < 0x70;
}

/**
 * True when a line that failed the frame checks starts like a frame the agent sends: `~`, a type
 * the agent uses (`R X E P L & $ A B`) and a digit, or a short type (`r x e p l m f t`) and
 * four base-64 digits, or a short acknowledgement's `a` and two. Random text after a `~` rarely does (about 1
 * in 100 for printable bytes), a frame hit by a flip, a drop, a duplicate or inserted text
 * mostly does (its first three bytes are hit with probability about 3 in 1,000 at 10⁻³).
 */
export function looksLikeAgentFrame(line: Uint8Array): boolean {
  if (line.length < 3 || line[0] !== 0x7e) return false;
  const t = line[1];
  if (SHORT_AGENT[t]) return line.length >= 6 && isDigit64(line[2]) && isDigit64(line[3]) && isDigit64(line[4]) && isDigit64(line[5]);
  if (t === 0x61) return line.length >= 4 && isDigit64(line[2]) && isDigit64(line[3]);
  const typeOk = t === 0x52 || t === 0x58 || t === 0x45 || t === 0x50 || t === 0x4c || t === 0x26 || t === 0x24 || t === 0x41 || t === 0x42;
  return typeOk && line[2] >= 0x30 && line[2] <= 0x39;
}

/**
 * The sequence number a corrupt line's head names (`~R12.` ...: type, digits, a dot; `~r0<` ...:
 * a short type and two base-64 digits), or -1 when
 * its head does not read as a sequenced frame's. It is not covered by a good CRC: a hint only.
 */
export function seqHint(line: Uint8Array): number {
  const t = line[1];
  if (SHORT_AGENT[t]) return line.length >= 4 && isDigit64(line[2]) && isDigit64(line[3]) ? (line[2] - 0x30) * 64 + (line[3] - 0x30) : -1;
  if (!(t === 0x52 || t === 0x58 || t === 0x45 || t === 0x50 || t === 0x4c || t === 0x26 || t === 0x24)) return -1;
  let v = 0;
  for (let i = 2; i < Math.min(line.length, 7); i++) {
    const c = line[i];
    if (c === 0x2e) return i > 2 && v < SEQ_MOD ? v : -1;
    if (c < 0x30 || c > 0x39) return -1;
    v = v * 10 + (c - 0x30);
  }
  return -1;
}

/** Bytes a sequenced frame adds to its payload at most (head with 4-digit numbers, trailer). */
export const MAX_FRAME_OVERHEAD = 1 + 1 + 4 + 1 + 4 + 1 + FRAME_TRAILER;

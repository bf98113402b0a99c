/**
 * A minimal protocol-v2 agent in TypeScript, written from docs/protocol.md alone:
 * session (S/A), go-back-N receiver, selective-repeat sender with a timer and
 * fast retransmit, fragments, hello / agent.caps / agent.stats and a few test
 * functions. It runs on the device end of a transport, in-process. Used by the
 * link tests and by `npm run bench` (host-only calls/s, without a Lua VM).
 * No side effects on import.
 */
import { encodeFrame, fragment, LineSplitter, parseLine, decodeMessage, encodeMessage, seqHead, fitPiece, type Message } from '../../src/codec/frame.js';
import type { WireValue } from '../../src/codec/values.js';
import type { Transport } from '../../src/transport/transport.js';

/** Options of {@link startStubAgent}. */
export interface StubAgentOptions {
  epoch?: number;
  /** Receive window (bytes). @default 4096 */
  window?: number;
  maxframe?: number;
  outmax?: number;
  /** Retransmission timeout (ms). @default 100 */
  rtoMs?: number;
  /** Retransmit queue limit (bytes); frames beyond it wait unsent. @default 8192 */
  txwin?: number;
  /** Functions in addition to the built-ins (echo, add, count). */
  fns?: Record<string, (...args: WireValue[]) => WireValue[]>;
  /** Functions that answer later (or never): call `reply` with the values when done. */
  deferred?: Record<string, (reply: (values: WireValue[]) => void, ...args: WireValue[]) => void>;
  /** Protocol version reported in hello. @default 2 */
  proto?: number;
}

/** A running stub agent: counters, and `stop()`. */
export interface StubAgent {
  /** Calls run, by function name. */
  runs: Map<string, number>;
  stats: { calls: number; bad: number; dup: number; ahead: number; retx: number };
  /** Send an event message `E<handle> values`. */
  event(handle: number, ...values: WireValue[]): void;
  /** Start as a new boot (new epoch, no session) and send a `B` frame. */
  reboot(epoch: number, sendBoot?: boolean): void;
  stop(): void;
}

/** Run a v2 stub agent on `device` (the device end of a transport pair). */
export function startStubAgent(device: Transport, o: StubAgentOptions = {}): StubAgent {
  const window = o.window ?? 4096;
  const maxframe = o.maxframe ?? 1024;
  const outmax = o.outmax ?? 1024;
  const rtoMs = o.rtoMs ?? 100;
  const txwin = o.txwin ?? 8192;
  /** Bytes of the frames written and not yet acknowledged. */
  let queued = 0;
  let epoch = o.epoch ?? 4242;
  let nonce = 0;
  let expect = 0;
  let nextSeq = 0;
  let size = 255;
  let parts: Buffer[] = [];
  const aheadBuf = new Map<number, { kind: string; body: Buffer }>();
  /**
   * Retransmit queue from `txHead`: unacknowledged frames in order; its last `held` entries
   * wait unsent for the send window (frames held back are always the newest).
   */
  let txq: Array<{ seq: number; line: Buffer; at: number; retx?: boolean }> = [];
  let txHead = 0;
  let held = 0;
  let timer: NodeJS.Timeout | undefined;
  /** When the retransmission timer was last (re)started: it fires `rtoMs` after that. */
  let timerFrom = 0;
  let stopped = false;
  const runs = new Map<string, number>();
  const stats = { calls: 0, bad: 0, dup: 0, ahead: 0, retx: 0 };
  const splitter = new LineSplitter(maxframe);
  const caps = ['echo', 'add', 'count', 'agent.ping'];
  const fns: Record<string, (...a: WireValue[]) => WireValue[]> = {
    echo: (...a) => a,
    add: (a, b) => [(a as number) + (b as number)],
    count: (name) => [runs.get(String(name instanceof Uint8Array ? Buffer.from(name).toString() : name)) ?? 0],
    'agent.ping': (...a) => [epoch, ...a],
    ...o.fns,
  };
  caps.push(...Object.keys(o.fns ?? {}), ...Object.keys(o.deferred ?? {}));
  // lines written in one turn go out as one transport write, in order
  let out: Buffer[] = [];
  let flushing = false;
  const flush = () => {
    flushing = false;
    const data = out.length === 1 ? out[0] : Buffer.concat(out);
    out = [];
    if (!stopped) void device.write(data).catch(() => {});
  };
  const write = (b: Buffer) => {
    if (stopped) return;
    out.push(b);
    if (!flushing) {
      flushing = true;
      queueMicrotask(flush);
    }
  };
  const ackLine = (miss: number[] = [], probe = 0) => encodeFrame(`A${expect} ${epoch} ${window} ${nonce} ${probe}${miss.length ? ' ' + miss.join(' ') : ''}`);
  /** Holes below the highest frame kept, and after a corrupt line the next one (section 5). */
  const holes = (badLine: boolean) => {
    let top = -1;
    for (const k of aheadBuf.keys()) top = Math.max(top, (k - expect + 4096) % 4096);
    const miss: number[] = [];
    for (let d = 0; d < top && miss.length < 16; d++) if (!aheadBuf.has((expect + d) % 4096)) miss.push((expect + d) % 4096);
    if (badLine && miss.length < 16) miss.push((expect + top + 1) % 4096);
    return miss;
  };
  const onTimer = () => {
    timer = undefined;
    if (stopped) return;
    const left = timerFrom + rtoMs - Date.now();
    if (left > 0 && txHead < txq.length) {
      // restarted by an ack meanwhile: wait the rest
      timer = setTimeout(onTimer, left);
      return;
    }
    if (txHead < txq.length) {
      stats.retx++;
      txq[txHead].at = Date.now();
      write(txq[txHead].line);
    }
    arm();
  };
  const arm = () => {
    if (timer || txHead >= txq.length || stopped) return;
    timerFrom = Date.now();
    timer = setTimeout(onTimer, rtoMs);
  };
  /** Forget every frame to send (a new session or a reboot). */
  const clearTx = () => {
    txq = [];
    txHead = 0;
    held = 0;
    queued = 0;
  };
  /**
   * While a received chunk is processed, replies wait here and go out after its last line:
   * every one then carries the newest acknowledgement (fewer acks for the host to process).
   */
  let replies: Buffer[] | undefined;
  const sendMessage = (m: Buffer) => {
    if (replies) {
      replies.push(m);
      return;
    }
    let off = 0;
    while (off < m.length) {
      const seq = nextSeq;
      let line: Buffer;
      const whole = seqHead(String.fromCharCode(m[0]), seq, expect);
      if (off === 0 && fitPiece(m, 1, size, whole) >= m.length - 1) {
        line = encodeFrame(whole, m.subarray(1)); // the whole message in one frame (as `fragment` would)
        off = m.length;
      } else {
        const h = seqHead('&', seq, expect);
        let n = fitPiece(m, off, size, h);
        if (off === 0) n = Math.min(n, m.length - 1);
        const last = off + n >= m.length;
        line = encodeFrame(last ? seqHead('$', seq, expect) : h, m.subarray(off, off + n));
        off += n;
      }
      nextSeq = (nextSeq + 1) % 4096;
      txq.push({ seq, line, at: Date.now() });
      if (queued + line.length > txwin || held > 0) held++;
      else {
        queued += line.length;
        write(line);
      }
    }
    arm();
  };
  const release = () => {
    // frames held back for the send window go out as acks free room
    while (held > 0) {
      const u = txq[txq.length - held];
      if (queued + u.line.length > txwin) break;
      queued += u.line.length;
      held--;
      write(u.line);
    }
  };
  const onAck = (ack: number, miss?: number[]) => {
    const pending = txq.length - txHead;
    if (pending === 0) return;
    const n = (ack - txq[txHead].seq + 4096) % 4096;
    if (n > 0 && n <= pending - held) {
      for (let k = 0; k < n; k++) queued -= txq[txHead + k].line.length;
      txHead += n;
      if (txHead >= txq.length) {
        txq = [];
        txHead = 0;
      } else if (txHead > 256 && txHead * 2 > txq.length) {
        txq.splice(0, txHead);
        txHead = 0;
      }
      release();
      // restart the timer (lazily: a running one waits the rest when it fires)
      timerFrom = Date.now();
      arm();
    }
    if (!miss || miss.length === 0) return;
    const now = Date.now();
    for (const sq of miss) {
      const i = (sq - (txq[txHead]?.seq ?? 0) + 4096) % 4096;
      const u = txq[txHead + i];
      if (!u || i >= txq.length - txHead - held || (u.retx && now - u.at < 5)) continue;
      u.retx = true;
      stats.retx++;
      u.at = now;
      write(u.line);
    }
  };
  const run = (m: Message) => {
    if (m.type !== 'C') return;
    stats.calls++;
    let name = m.fn;
    if (/^[0-9]+$/.test(name)) name = caps[Number(name) - 1] ?? name;
    runs.set(name, (runs.get(name) ?? 0) + 1);
    let reply: Message;
    if (name === 'hello') {
      reply = { type: 'R', id: m.id, values: [new Map<WireValue, WireValue>([['proto', o.proto ?? 2], ['agent', 'stub'], ['family', 'stub'], ['maxframe', maxframe], ['outmax', outmax], ['window', window], ['txwin', 65536], ['maxmsg', 65536], ['epoch', epoch], ['ncaps', caps.length]])] };
    } else if (name === 'agent.caps') {
      const first = m.args[0] as number;
      const count = m.args[1] as number;
      reply = { type: 'R', id: m.id, values: caps.slice(first - 1, first - 1 + count) };
    } else if (name === 'agent.stats') {
      reply = { type: 'R', id: m.id, values: [new Map<WireValue, WireValue>(Object.entries(stats))] };
    } else if (o.deferred?.[name]) {
      o.deferred[name]((values) => sendMessage(encodeMessage({ type: 'R', id: m.id, values })), ...m.args);
      return;
    } else if (fns[name]) {
      reply = { type: 'R', id: m.id, values: fns[name](...m.args) };
    } else {
      reply = { type: 'X', id: m.id, code: 'NOFN', message: `no function ${m.fn}` };
    }
    sendMessage(encodeMessage(reply));
  };
  device.onData((chunk) => {
    let needAck = false;
    let sentSince = false;
    let gap = false;
    let badLine = false;
    /** Token of a `Y` in this chunk: answered after it, with the holes (section 5). */
    let probe = 0;
    const queuedReplies: Buffer[] = (replies = []);
    try {
      splitter.push(chunk, (line) => {
        const r = parseLine(line);
        if (r.kind === 'log') return;
        if (r.kind === 'bad') {
          stats.bad++;
          badLine = true;
          return;
        }
        const f = r.frame;
        if (f.type === 'S') {
          if (f.nonce !== nonce) {
            nonce = f.nonce;
            expect = 0;
            nextSeq = 0;
            clearTx();
            queuedReplies.length = 0; // replies of the old session die with it
            parts = [];
            aheadBuf.clear();
          }
          size = Math.max(48, Math.min(outmax, f.size));
          write(ackLine());
          return;
        }
        if (f.type === 'Y') {
          probe = f.probe;
          return;
        }
        if (f.type === 'A') {
          if (f.nonce !== nonce || nonce === 0) return;
          size = Math.max(48, Math.min(outmax, f.size));
          onAck(f.ack, f.miss);
          return;
        }
        if (f.type !== 'seq') return;
        if (nonce === 0) {
          write(ackLine());
          return;
        }
        onAck(f.ack);
        const d = (f.seq - expect + 4096) % 4096;
        needAck = true;
        sentSince = false;
        if (d !== 0) {
          if (d < 2048) {
            stats.ahead++;
            gap = true;
            aheadBuf.set(f.seq, { kind: f.kind, body: f.body }); // selective repeat: keep it (bounded by the window)
          } else stats.dup++;
          return;
        }
        gap = false;
        let cur: { kind: string; body: Buffer } | undefined = { kind: f.kind, body: f.body };
        while (cur) {
          expect = (expect + 1) % 4096;
          let msg: Buffer | undefined;
          if (cur.kind === '&') parts.push(cur.body);
          else if (cur.kind === '$') {
            parts.push(cur.body);
            msg = Buffer.concat(parts);
            parts = [];
          } else {
            msg = Buffer.allocUnsafe(cur.body.length + 1);
            msg[0] = cur.kind.charCodeAt(0);
            cur.body.copy(msg, 1);
          }
          if (msg) {
            const before = queuedReplies.length;
            run(decodeMessage(msg));
            if (queuedReplies.length !== before) sentSince = true;
          }
          cur = aheadBuf.get(expect);
          aheadBuf.delete(expect);
        }
        gap = aheadBuf.size > 0;
      });
    } finally {
      replies = undefined;
      // the replies carry the acknowledgement of everything in the chunk
      for (const m of queuedReplies) sendMessage(m);
    }
    // the answer to a Y lists the holes too (this stub never keeps lines unread, so it always
    // echoes the token)
    const miss = nonce !== 0 && (gap || badLine || (probe !== 0 && aheadBuf.size > 0)) ? holes(badLine) : [];
    if (miss.length > 0 || probe !== 0) write(ackLine(miss, probe));
    else if (needAck && !sentSince && nonce !== 0) write(ackLine());
  });
  return {
    runs,
    stats,
    event: (handle, ...values) => sendMessage(encodeMessage({ type: 'E', handle, values })),
    reboot: (e, sendBoot = true) => {
      epoch = e;
      nonce = 0;
      expect = 0;
      nextSeq = 0;
      clearTx();
      parts = [];
      if (sendBoot) write(encodeFrame(`B${epoch} 2`));
    },
    stop: () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}

/**
 * A minimal in-process protocol-v2 agent at frame level (docs/protocol.md), for
 * measuring the host alone (`npm run bench`: host-only calls/s) and for tests
 * that want an agent without a Lua VM.
 *
 * It answers `S` (session start) and `Y` with an `A`, runs each in-order `C`
 * and answers with an `R` (or `X`), and acknowledges what it received. It is
 * meant for a CLEAN link: it keeps no retransmit queue (it never resends) and
 * drops out-of-order frames. It handles fragmented calls (`&`/`$`) but always
 * sends whole frames (the host accepts lines up to 4096 bytes).
 *
 * Functions: `hello`, `agent.caps`, `agent.stats`, and the capabilities
 * `agent.ping` (returns the epoch, then its arguments) and `socket.sntp_port` (123).
 * No side effects on import.
 */
import { decodeMessage, encodeFrame, encodeMessage, LineSplitter, parseLine, seqHead } from '../../src/codec/frame.js';
import { PROTOCOL_VERSION } from '../../src/codec/constants.js';
import type { WireValue } from '../../src/codec/values.js';
import type { Transport } from '../../src/transport/transport.js';

/** Options of {@link StubAgent}. */
export interface StubAgentOptions {
  /** Boot epoch. @default random */
  epoch?: number;
  /** Receive window advertised in `A` frames (bytes). @default 65536 */
  window?: number;
  /** Longest line accepted (bytes incl. `\n`), advertised as `maxframe` and `outmax`. @default 4096 */
  maxFrame?: number;
  /** Send `B<epoch> 2` when attached. @default true */
  boot?: boolean;
}

const CAPS = ['agent.ping', 'socket.sntp_port'];

/** The stub agent. Attach it to the device end of a pair. */
export class StubAgent {
  readonly epoch: number;
  /** Counters: calls run, frames in/out, bad lines. */
  readonly stats = { calls: 0, framesIn: 0, framesOut: 0, bad: 0, dup: 0, ahead: 0 };
  private readonly lines: LineSplitter;
  private readonly window: number;
  private readonly maxFrame: number;
  private nonce = 0;
  private expect = 0;
  private nextSeq = 0;
  private parts: Buffer[] = [];
  private out: Buffer[] = [];
  private needAck = false;

  constructor(
    private readonly t: Transport,
    o: StubAgentOptions = {},
  ) {
    this.epoch = o.epoch ?? 1 + Math.floor(Math.random() * 2147483645);
    this.window = o.window ?? 65536;
    this.maxFrame = o.maxFrame ?? 4096;
    this.lines = new LineSplitter(this.maxFrame);
    t.onData((chunk) => this.onData(chunk));
    if (o.boot ?? true) void t.write(encodeFrame(`B${this.epoch} ${PROTOCOL_VERSION}`)).catch(() => {});
  }

  private ack(): Buffer {
    this.needAck = false;
    return encodeFrame(`A${this.expect} ${this.epoch} ${this.window} ${this.nonce}`);
  }

  /** One batch of UART bytes: handle every line, then write all answers at once (like the agents). */
  private onData(chunk: Uint8Array): void {
    this.lines.push(chunk, (line) => this.onLine(line));
    if (this.needAck) this.out.push(this.ack());
    if (this.out.length > 0) {
      const data = this.out.length === 1 ? this.out[0] : Buffer.concat(this.out);
      this.out = [];
      if (this.t.isOpen) void this.t.write(data).catch(() => {});
    }
  }

  private onLine(line: Buffer): void {
    const r = parseLine(line);
    if (r.kind === 'log') return;
    if (r.kind === 'bad') {
      this.stats.bad++;
      return;
    }
    const f = r.frame;
    this.stats.framesIn++;
    switch (f.type) {
      case 'S':
        if (f.nonce !== this.nonce) {
          this.nonce = f.nonce;
          this.expect = 0;
          this.nextSeq = 0;
          this.parts = [];
        }
        this.out.push(this.ack());
        return;
      case 'Y':
        this.out.push(this.ack());
        return;
      case 'A':
        return; // the stub never resends, so acks need no bookkeeping
      case 'seq': {
        if (this.nonce === 0) {
          this.out.push(this.ack());
          return;
        }
        this.needAck = true;
        const d = (f.seq - this.expect + 4096) % 4096;
        if (d !== 0) {
          if (d < 2048) this.stats.ahead++;
          else this.stats.dup++;
          return;
        }
        this.expect = (this.expect + 1) % 4096;
        if (f.kind === '&') {
          this.parts.push(f.body);
          return;
        }
        let msg: Buffer;
        if (f.kind === '$') {
          this.parts.push(f.body);
          msg = Buffer.concat(this.parts);
          this.parts = [];
        } else msg = Buffer.concat([Buffer.from(f.kind, 'latin1'), f.body]);
        this.onMessage(msg);
        return;
      }
      default:
        return;
    }
  }

  private send(content: Buffer): void {
    const head = seqHead(String.fromCharCode(content[0]), this.nextSeq, this.expect);
    this.nextSeq = (this.nextSeq + 1) % 4096;
    this.needAck = false;
    this.stats.framesOut++;
    this.out.push(encodeFrame(head, content.subarray(1)));
  }

  private onMessage(content: Buffer): void {
    let m;
    try {
      m = decodeMessage(content);
    } catch {
      this.stats.bad++;
      return;
    }
    if (m.type !== 'C') return;
    this.stats.calls++;
    const values = this.run(m.fn, m.args);
    if (values === undefined) this.send(encodeMessage({ type: 'X', id: m.id, code: 'NOFN', message: `no function ${m.fn}` }));
    else this.send(encodeMessage({ type: 'R', id: m.id, values }));
  }

  private run(fn: string, args: WireValue[]): WireValue[] | undefined {
    const idx = /^[0-9]+$/.test(fn) ? Number(fn) : CAPS.indexOf(fn) + 1;
    const name = idx >= 1 && idx <= CAPS.length ? CAPS[idx - 1] : fn;
    switch (name) {
      case 'hello':
        return [
          new Map<WireValue, WireValue>([
            ['proto', PROTOCOL_VERSION],
            ['agent', 'stub'],
            ['family', 'stub'],
            ['lua', 'none'],
            ['intbits', 32],
            ['maxframe', this.maxFrame],
            ['outmax', this.maxFrame],
            ['window', this.window],
            ['txwin', 65536],
            ['maxmsg', 65536],
            ['heap', 0],
            ['epoch', this.epoch],
            ['ncaps', CAPS.length],
          ]),
        ];
      case 'agent.caps': {
        const first = typeof args[0] === 'number' ? args[0] : 1;
        const count = typeof args[1] === 'number' ? args[1] : CAPS.length;
        return CAPS.slice(first - 1, first - 1 + count);
      }
      case 'agent.stats':
        return [new Map<WireValue, WireValue>([['calls', this.stats.calls], ['bad', this.stats.bad], ['dup', this.stats.dup], ['ahead', this.stats.ahead], ['retx', 0], ['queued', 0], ['heap', 0]])];
      case 'agent.ping':
        return [this.epoch, ...args];
      case 'socket.sntp_port':
        return [123];
      default:
        return undefined;
    }
  }
}

/**
 * Plays the host at frame level against a real Lua agent (docs/protocol.md): builds the
 * bytes a host sends (`S`, sequenced `C` calls with increasing seq, `A`, `Y`) and parses
 * what the agent sends back (every line must be a valid frame or a log line), reassembling
 * the agent's messages in sequence order (selective repeat, as the host does) and counting
 * duplicates. Pure bytes in and out: the tests connect it to a fengari VM, to stock Lua
 * 5.1/5.3 (WebAssembly, test/helpers/lua.ts) or to a simulated module's UART.
 */
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { bundleBody, callMessage, decodeMessage, encodeFrame, encodeShortFrame, fragment, LineSplitter, parseLine, seqHead, shortHead, unbundle, type LinkFrame, type Message } from '../../src/codec/frame.js';
import { HOST_MAX_FRAME, SEQ_MOD } from '../../src/codec/constants.js';
import type { WireValue } from '../../src/codec/values.js';
import { repoRoot } from '../../src/util/repo-root.js';
import { runLua, type LuaVersion } from './lua.js';

type SeqFrame = Extract<LinkFrame, { type: 'seq' }>;
export type Reply = Extract<Message, { type: 'R' }> | Extract<Message, { type: 'X' }>;

export class AgentHost {
  /** Next sequence number this host sends. */
  seq = 0;
  /** Next agent sequence number expected (the host's cumulative ack). */
  rx = 0;
  /** Every frame parsed from the agent, in arrival order. */
  readonly frames: LinkFrame[] = [];
  /** The agent's messages, in sequence order, each once. */
  readonly messages: Message[] = [];
  /** The bytes of each of {@link frames}' lines (incl. `\n`), in the same order. */
  readonly frameBytes: number[] = [];
  /** Lines that started with `~` but were not valid frames. */
  readonly bad: string[] = [];
  /** Non-frame lines. */
  readonly logs: string[] = [];
  /** Agent frames received again after they were delivered (retransmissions). */
  dups = 0;
  /** Sequenced frames received with long heads (`~R12.3 ...`) and with short ones (`~r0<03...`, section 1). */
  readonly heads = { long: 0, short: 0 };
  /** Send sequenced frames with short heads (section 1), as a host does once hello said the agent reads them. */
  short = false;
  private readonly lines = new LineSplitter(HOST_MAX_FRAME);
  private readonly ahead = new Map<number, SeqFrame>();
  private parts: Buffer[] = [];

  constructor(
    readonly nonce = 1234567,
    /** Frame size the host lets the agent use (S/A `size`). */
    public size = 255,
  ) {}

  /** `S<nonce> <size>`. */
  start(size = this.size): Buffer {
    this.size = size;
    return encodeFrame(`S${this.nonce} ${size}`);
  }

  /**
   * `A<ack> <epoch> <size> <nonce> <top> [<miss>...]`: acknowledges everything delivered; `miss`
   * lists holes; `top` (the host's fifth field) is 1 + the agent frame received last, 0 for none.
   */
  ack(ack = this.rx, size = this.size, nonce = this.nonce, miss: number[] = [], top = 0): Buffer {
    return encodeFrame(`A${ack} 0 ${size} ${nonce} ${top}${miss.map((m) => ' ' + m).join('')}`);
  }

  /** `Y`. */
  poll(): Buffer {
    return encodeFrame('Y1');
  }

  /** The frames of one call (fragmented to `frameSize`), with the next sequence numbers. */
  call(id: number, fn: string | number, args: WireValue[] = [], frameSize = 255): Buffer {
    const lines = fragment(callMessage(id, fn, args), frameSize, this.seq, this.rx, this.short);
    this.seq = (this.seq + lines.length) % SEQ_MOD;
    return Buffer.concat(lines);
  }

  /** One `M` frame (a bundle, section 2) of calls, each `[id, fn, args]`, with the next sequence number. */
  bundle(list: Array<[number, string | number, WireValue[]?]>): Buffer {
    const body = bundleBody(list.map(([id, fn, args]) => callMessage(id, fn, args ?? [])));
    const f = this.short ? encodeShortFrame(shortHead('M', this.seq, this.rx), body) : encodeFrame(seqHead('M', this.seq, this.rx), body);
    this.seq = (this.seq + 1) % SEQ_MOD;
    return f;
  }

  /** Several calls, each `[id, fn, args]`. */
  calls(list: Array<[number, string | number, WireValue[]?]>, frameSize = 255): Buffer {
    return Buffer.concat(list.map(([id, fn, args]) => this.call(id, fn, args ?? [], frameSize)));
  }

  /** Parse bytes from the agent. */
  receive(bytes: Uint8Array | string): this {
    const b = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
    this.lines.push(b, (line) => {
      const p = parseLine(line);
      if (p.kind === 'log') {
        if (p.text !== '') this.logs.push(p.text);
        return;
      }
      if (p.kind === 'bad') {
        this.bad.push(`${p.reason}: ${JSON.stringify(line.toString('latin1').slice(0, 120))}`);
        return;
      }
      // an A without holes compares with plain objects
      if (p.frame.type === 'A' && p.frame.miss.length === 0) delete (p.frame as { miss?: number[] }).miss;
      if (p.frame.type === 'A' && p.frame.probe === 0) delete (p.frame as { probe?: number }).probe;
      this.frames.push(p.frame);
      this.frameBytes.push(line.length + 1);
      if (p.frame.type === 'seq') {
        this.heads[line[1] >= 0x61 ? 'short' : 'long']++; // short types are lower case
        this.onSeq(p.frame);
      }
    });
    return this;
  }

  private onSeq(f: SeqFrame): void {
    const d = (f.seq - this.rx + SEQ_MOD) % SEQ_MOD;
    if (d >= SEQ_MOD / 2) {
      this.dups++;
      return;
    }
    if (d > 0) {
      if (this.ahead.has(f.seq)) this.dups++;
      this.ahead.set(f.seq, f);
      return;
    }
    this.deliver(f);
    for (let g = this.ahead.get(this.rx); g; g = this.ahead.get(this.rx)) {
      this.ahead.delete(g.seq);
      this.deliver(g);
    }
  }

  private deliver(f: SeqFrame): void {
    this.rx = (this.rx + 1) % SEQ_MOD;
    if (f.kind === '&') {
      this.parts.push(f.body);
      return;
    }
    if (f.kind === 'M') {
      const { messages, ok } = unbundle(f.body);
      assert.ok(ok, `a bundle from the agent that is not one: ${JSON.stringify(f.body.toString('latin1'))}`);
      for (const m of messages) this.messages.push(decodeMessage(m));
      return;
    }
    let m: Buffer;
    if (f.kind === '$') {
      this.parts.push(f.body);
      m = Buffer.concat(this.parts);
      this.parts = [];
    } else {
      m = Buffer.concat([Buffer.from(f.kind, 'latin1'), f.body]);
    }
    this.messages.push(decodeMessage(m));
  }

  /** Frames of a type (`A`, `B`, `S`, `Y`, or a sequenced kind such as `R`, `&`). */
  of(type: string): LinkFrame[] {
    return this.frames.filter((f) => (f.type === 'seq' ? f.kind === type : f.type === type));
  }

  /** The `A` frames the agent sent. */
  get acks(): Array<Extract<LinkFrame, { type: 'A' }>> {
    return this.frames.filter((f): f is Extract<LinkFrame, { type: 'A' }> => f.type === 'A');
  }

  /** The reply (R or X) to call `id`, or undefined. */
  reply(id: number): Reply | undefined {
    return this.messages.find((m): m is Reply => (m.type === 'R' || m.type === 'X') && m.id === id);
  }

  /** The values of the R reply to call `id` (fails when it is missing or an X). */
  values(id: number): WireValue[] {
    const r = this.reply(id);
    assert.ok(r, `no reply to call ${id}`);
    assert.equal(r.type, 'R', `call ${id} failed: ${JSON.stringify(r)}`);
    return r.values;
  }

  /** The code of the X reply to call `id`. */
  code(id: number): string {
    const r = this.reply(id);
    assert.ok(r && r.type === 'X', `call ${id} should have failed: ${JSON.stringify(r)}`);
    return r.code;
  }

  /** Replies to call `id` (more than one means the call ran twice). */
  repliesTo(id: number): number {
    return this.messages.filter((m) => (m.type === 'R' || m.type === 'X') && m.id === id).length;
  }

  /** Fail when the agent wrote a line that starts with `~` and is not a valid frame. */
  assertClean(what = 'agent'): void {
    assert.deepEqual(this.bad, [], `${what} wrote bad frames`);
  }
}

/** Latin-1 text of a string value. */
export const txt = (v: WireValue | undefined): string => Buffer.from(v as Uint8Array).toString('latin1');

/**
 * Run the shared core under stock Lua `v` (5.1 or 5.3, WebAssembly: test/helpers/lua.ts) with
 * firmware-shim/test/core-driver.lua: feeds `input` (at once, or in `chunk`-byte batches;
 * `chunk` -1: a script, see the driver), then calls A.tick() `ticks` times (default 0).
 * Returns the agent's output bytes; fails the test when the driver fails.
 */
export function runCoreDriver(v: LuaVersion, input: Uint8Array, o: { ticks?: number; chunk?: number } = {}): Buffer {
  const root = repoRoot();
  const r = runLua(v, join(root, 'firmware-shim/test/core-driver.lua'), {
    args: [join(root, 'firmware-shim/common/protocol.lua'), join(root, 'firmware-shim/common/core.lua'), String(o.ticks ?? 0), String(o.chunk ?? 0)],
    stdin: input,
  });
  assert.equal(r.status, 0, `Lua ${v} failed: ${r.stderr}`);
  return r.stdout;
}

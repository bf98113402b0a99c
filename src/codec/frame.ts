/**
 * Frames of protocol v1 (docs/protocol.md sections 1, 5). Pure functions and
 * small state machines; no I/O.
 */
import { FRAME_MARK, FrameType, type FrameTypeChar } from './constants.js';
import { decodeValues, encodeValues, Handle, ValueSyntaxError, type WireValue } from './values.js';

/** CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) of `data`. Same as LuatOS `crypto.crc16("MODBUS", s)`. */
export function crc16(data: Uint8Array | string): number {
  const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  let crc = 0xffff;
  for (let i = 0; i < b.length; i++) {
    crc ^= b[i];
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

/** Bytes a frame adds around its logical content: marker, space, 4 CRC digits, newline. */
export const FRAME_OVERHEAD = 7;

/**
 * Encode one logical frame (TYPE + BODY) as one or more physical lines, each
 * at most `maxFrame` bytes including `\n`. Longer content is split into `&`/`$`
 * fragments (section 5). Returns the lines, each ending in `\n`.
 * Throws RangeError if `maxFrame` is too small to carry anything.
 */
export function encodeFrame(logical: string, maxFrame: number): string[] {
  const room = maxFrame - FRAME_OVERHEAD;
  if (room < 8) throw new RangeError(`maxFrame ${maxFrame} is too small`);
  if (logical.length <= room) return [physical(logical)];
  const piece = room - 1; // one byte for the & / $ type
  const lines: string[] = [];
  for (let off = 0; off < logical.length; off += piece) {
    const last = off + piece >= logical.length;
    lines.push(physical((last ? FrameType.LastFragment : FrameType.Fragment) + logical.slice(off, off + piece)));
  }
  return lines;
}

function physical(content: string): string {
  const s = FRAME_MARK + content;
  return `${s} ${hex4(crc16(s))}\n`;
}

/** Classification of one received line. */
export type LineResult =
  | { kind: 'frame'; content: string } // verified TYPE+BODY (may be a fragment)
  | { kind: 'log'; text: string } // not a frame: boot log, print output...
  | { kind: 'bad'; reason: string; line: string }; // starts with the marker but is corrupt

/**
 * Classify one line (without its `\n`; a trailing `\r` is ignored).
 * A line that starts with `~` must be printable ASCII and carry a valid CRC.
 */
export function checkLine(line: Uint8Array): LineResult {
  let end = line.length;
  if (end > 0 && line[end - 1] === 0x0d) end--;
  const text = Buffer.from(line.subarray(0, end)).toString('latin1');
  if (text[0] !== FRAME_MARK) return { kind: 'log', text: Buffer.from(line.subarray(0, end)).toString('utf8') };
  for (let i = 0; i < end; i++) {
    const c = line[i];
    if (c < 0x20 || c > 0x7e) return { kind: 'bad', reason: 'non-printable byte', line: text };
  }
  if (end < 7 || text[end - 5] !== ' ') return { kind: 'bad', reason: 'no checksum', line: text };
  const want = text.slice(end - 4);
  const got = hex4(crc16(text.slice(0, end - 5)));
  if (want !== got) return { kind: 'bad', reason: `checksum ${want} != ${got}`, line: text };
  return { kind: 'frame', content: text.slice(1, end - 5) };
}

/**
 * Reassembles `&`/`$` fragments (section 5). Feed it every verified frame
 * content; it returns the complete logical content when there is one.
 */
export class Reassembler {
  private pieces: string[] = [];
  private size = 0;
  private poisoned = false;
  /** Logical frames dropped because a fragment went missing, or too large. */
  dropped = 0;

  constructor(private readonly maxMessage = 1 << 20) {}

  /** A corrupt frame arrived: if a fragmented frame is being collected, it is now incomplete. */
  poison(): void {
    if (this.pieces.length > 0) this.poisoned = true;
  }

  /** Returns the logical content, or undefined while more fragments are needed / after a drop. */
  push(content: string): string | undefined {
    const t = content[0];
    if (t === FrameType.Fragment || t === FrameType.LastFragment) {
      this.pieces.push(content.slice(1));
      this.size += content.length - 1;
      if (this.size > this.maxMessage) this.poisoned = true;
      if (t === FrameType.Fragment) return undefined;
      const whole = this.pieces.join('');
      const bad = this.poisoned;
      this.reset();
      if (bad) {
        this.dropped++;
        return undefined;
      }
      return whole;
    }
    if (this.pieces.length > 0) {
      // a plain frame in the middle of a fragmented one: the fragmented one is lost
      this.dropped++;
      this.reset();
    }
    return content;
  }

  private reset(): void {
    this.pieces = [];
    this.size = 0;
    this.poisoned = false;
  }
}

/** A decoded logical frame. */
export type Frame =
  | { type: 'C'; id: number; fn: string; args: WireValue[] }
  | { type: 'R'; id: number; values: WireValue[] }
  | { type: 'X'; id: number; code: string; message: string }
  | { type: 'E'; handle: number; values: WireValue[] }
  | { type: 'P'; topic: string; values: WireValue[] }
  | { type: 'L'; level: number; message: string }
  | { type: 'B'; epoch: number; proto: number }
  | { type: 'K'; count: number }
  | { type: 'Y' };

/** Raised by {@link decodeFrame} for a well-checksummed frame whose body is malformed. */
export class FrameSyntaxError extends Error {}

const NUM_RE = /^-?[0-9]+$/;

function num(s: string | undefined, what: string): number {
  if (s === undefined || !NUM_RE.test(s)) throw new FrameSyntaxError(`bad ${what}: ${String(s).slice(0, 16)}`);
  return Number(s);
}

function text(v: WireValue | undefined): string {
  if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
  if (typeof v === 'string') return v;
  return String(v);
}

/** Decode a logical frame content (TYPE + BODY). Throws {@link FrameSyntaxError}. */
export function decodeFrame(content: string): Frame {
  const type = content[0] as FrameTypeChar;
  const tokens = content.length > 1 ? content.slice(1).split(' ') : [];
  try {
    switch (type) {
      case FrameType.Call: {
        if (tokens.length < 2) throw new FrameSyntaxError('call without function');
        return { type: 'C', id: num(tokens[0], 'id'), fn: tokens[1], args: decodeValues(tokens.slice(2)) };
      }
      case FrameType.Result:
        return { type: 'R', id: num(tokens[0], 'id'), values: decodeValues(tokens.slice(1)) };
      case FrameType.Error: {
        const vals = decodeValues(tokens.slice(1));
        return { type: 'X', id: num(tokens[0], 'id'), code: text(vals[0]), message: text(vals[1]) };
      }
      case FrameType.Event:
        return { type: 'E', handle: num(tokens[0], 'handle'), values: decodeValues(tokens.slice(1)) };
      case FrameType.Publish: {
        const vals = decodeValues(tokens);
        return { type: 'P', topic: text(vals[0]), values: vals.slice(1) };
      }
      case FrameType.Log: {
        const vals = decodeValues(tokens.slice(1));
        return { type: 'L', level: num(tokens[0], 'level'), message: text(vals[0]) };
      }
      case FrameType.Boot:
        return { type: 'B', epoch: num(tokens[0], 'epoch'), proto: num(tokens[1], 'proto') };
      case FrameType.Credit:
        return { type: 'K', count: num(tokens[0], 'count') };
      case FrameType.Sync:
        return { type: 'Y' };
      default:
        throw new FrameSyntaxError(`unknown frame type ${JSON.stringify(type)}`);
    }
  } catch (e) {
    if (e instanceof ValueSyntaxError) throw new FrameSyntaxError(e.message);
    throw e;
  }
}

/** Logical content of a call frame: `C<id> <fn> <args>`. */
export function callContent(id: number, fn: string | number, args: ReadonlyArray<WireValue | undefined>): string {
  const a = encodeValues(args);
  return `${FrameType.Call}${id} ${fn}${a ? ' ' + a : ''}`;
}

/** Logical content of any agent→host frame, for simulators and tests. */
export function contentOf(f: Frame): string {
  const join = (head: string, vals: ReadonlyArray<WireValue | undefined>) => {
    const a = encodeValues(vals);
    return a ? `${head} ${a}` : head;
  };
  switch (f.type) {
    case 'C':
      return callContent(f.id, f.fn, f.args);
    case 'R':
      return join(`R${f.id}`, f.values);
    case 'X':
      return join(`X${f.id}`, [f.code, f.message]);
    case 'E':
      return join(`E${f.handle}`, f.values);
    case 'P':
      return `P${join(encodeValues([f.topic]), f.values)}`;
    case 'L':
      return join(`L${f.level}`, [f.message]);
    case 'B':
      return `B${f.epoch} ${f.proto}`;
    case 'K':
      return `K${f.count}`;
    case 'Y':
      return 'Y';
  }
}

export { Handle };

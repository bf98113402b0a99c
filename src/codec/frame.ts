/**
 * Frames and messages of protocol v2 (docs/protocol.md sections 1, 2, 7, 8).
 * Pure functions and small state machines; no I/O.
 */
import { crc32 as zcrc32 } from 'node:zlib';
import { ESCAPE_BYTE, FRAME_MARK, MESSAGE_TYPES, SHORT_KINDS } from './constants.js';
import { decodeValues, encodeHeadValues, encodeValues, Handle, ValueSyntaxError, type WireValue } from './values.js';

/** CRC-32/ISO-HDLC (zlib) of `data`, unsigned. `crc32("123456789")` = 0xCBF43926. */
export function crc32(data: Uint8Array | string): number {
  if (typeof data === 'string') return zcrc32(Buffer.from(data, 'latin1')) >>> 0;
  return crcRange(data, 0, data.length);
}

/** CRC-32 table (reflected polynomial 0xEDB88320). */
const CRC_TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  CRC_TABLE[n] = c;
}

/** CRC-32 of `b[from..to)`: a table loop for short frames (cheaper than a call into zlib), zlib for long ones. */
function crcRange(b: Uint8Array, from: number, to: number): number {
  if (to - from >= 48) return zcrc32(from === 0 && to === b.length ? b : b.subarray(from, to)) >>> 0;
  let c = -1;
  for (let i = from; i < to; i++) c = CRC_TABLE[(c ^ b[i]) & 255] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/**
 * CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) of `data`. Protocol v1's frame check:
 * v2 keeps it only to recognise a v1 agent (and the simulated `crypto.crc16`).
 */
export function crc16(data: Uint8Array | string): number {
  const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  let crc = 0xffff;
  for (let i = 0; i < b.length; i++) {
    crc ^= b[i];
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}

const HEX = '0123456789ABCDEF';
/** Two uppercase hex digits of every byte value. */
const HEX2: string[] = [];
for (let i = 0; i < 256; i++) HEX2.push(HEX[i >> 4] + HEX[i & 15]);
/** ASCII codes of the hex digits. */
const HEX_CODES = Buffer.from(HEX, 'latin1');
function hex8(n: number): string {
  return HEX2[(n >>> 24) & 255] + HEX2[(n >>> 16) & 255] + HEX2[(n >>> 8) & 255] + HEX2[n & 255];
}

const NL = 0x0a;
const ESC = ESCAPE_BYTE;

/** Bytes `b` with 0x0A and 0x10 escaped (section 1). Returns `b` itself when nothing needs escaping. */
export function escapeBytes(b: Uint8Array): Buffer {
  const src = Buffer.from(b.buffer, b.byteOffset, b.length);
  const n = countEscapes(src, 0, src.length);
  if (n === 0) return src;
  const out = Buffer.allocUnsafe(b.length + n);
  let j = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c === NL || c === ESC) {
      out[j++] = ESC;
      out[j++] = c + 0x40;
    } else out[j++] = c;
  }
  return out;
}

/** Undo {@link escapeBytes}; undefined on a bad escape. */
export function unescapeBytes(b: Uint8Array): Buffer | undefined {
  const src = Buffer.from(b.buffer, b.byteOffset, b.length);
  if (src.indexOf(ESC) < 0) return src;
  const out = Buffer.allocUnsafe(b.length);
  let j = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c === ESC) {
      const x = b[++i];
      if (x !== 0x4a && x !== 0x50) return undefined;
      out[j++] = x - 0x40;
    } else out[j++] = c;
  }
  return out.subarray(0, j);
}

/** How many bytes of `b[from..to)` need escaping (0x0A, 0x10): a loop when short, memchr scans when long. */
function countEscapes(b: Buffer, from: number, to: number): number {
  let n = 0;
  if (to - from < 64) {
    for (let i = from; i < to; i++) {
      const c = b[i];
      if (c === NL || c === ESC) n++;
    }
    return n;
  }
  for (let i = b.indexOf(NL, from); i >= 0 && i < to; i = b.indexOf(NL, i + 1)) n++;
  for (let i = b.indexOf(ESC, from); i >= 0 && i < to; i = b.indexOf(ESC, i + 1)) n++;
  return n;
}

/** Escaped length of `b[from..to)`. */
function escapedLength(b: Uint8Array, from: number, to: number): number {
  return to - from + countEscapes(b instanceof Buffer ? b : Buffer.from(b.buffer, b.byteOffset, b.length), from, to);
}

/** Copy `src` into `out` at `at`, escaped (`n` bytes need it); returns the offset after it. */
function putEscaped(out: Buffer, at: number, src: Uint8Array, n: number): number {
  if (n === 0) {
    out.set(src, at);
    return at + src.length;
  }
  let j = at;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === NL || c === ESC) {
      out[j++] = ESC;
      out[j++] = c + 0x40;
    } else out[j++] = c;
  }
  return j;
}

/** Bytes a frame adds after its head and body: space, 8 CRC digits, newline. */
export const FRAME_TRAILER = 10;

/**
 * One frame line (section 1): `~` HEAD [` ` BODY] ` ` CRC `\n`, escaped, with its CRC-32.
 * `head` is printable ASCII without spaces at its end (e.g. `C5.3`, `A0 88123 240 7`).
 */
export function encodeFrame(head: string, body?: Uint8Array | string): Buffer {
  // one buffer, written in place: mark, head, [space, body], space, CRC, newline
  const hl = head.length;
  let hx = 0;
  for (let k = 0; k < hl; k++) {
    const c = head.charCodeAt(k) & 0xff; // latin1
    if (c === NL || c === ESC) hx++;
  }
  let bb: Buffer | undefined;
  let bx = 0;
  if (body !== undefined && body.length > 0) {
    bb = typeof body === 'string' ? Buffer.from(body, 'latin1') : body instanceof Buffer ? body : Buffer.from(body.buffer, body.byteOffset, body.length);
    bx = countEscapes(bb, 0, bb.length);
  }
  const contentLen = 1 + hl + hx + (bb ? 1 + bb.length + bx : 0);
  const out = Buffer.allocUnsafe(contentLen + FRAME_TRAILER);
  out[0] = FRAME_MARK_CODE;
  let j = 1;
  for (let k = 0; k < hl; k++) {
    const c = head.charCodeAt(k) & 0xff;
    if (c === NL || c === ESC) {
      out[j++] = ESC;
      out[j++] = c + 0x40;
    } else out[j++] = c;
  }
  if (bb) {
    out[j++] = 0x20;
    j = putEscaped(out, j, bb, bx);
  }
  const crc = crcRange(out, 0, j);
  out[j++] = 0x20;
  for (let k = 28; k >= 0; k -= 4) out[j++] = HEX_CODES[(crc >>> k) & 15];
  out[j] = NL;
  return out;
}
const FRAME_MARK_CODE = FRAME_MARK.charCodeAt(0);

/** Bytes a frame with a short head adds after its body: 6 CRC digits and the newline (section 1, "Short heads"). */
export const SHORT_TRAILER = 7;
/** Digit value `v` (0..63) of a short head or CRC is the byte 0x30 + v (`0` to `o`). */
const DIGIT0 = 0x30;

/**
 * The short head of a sequenced frame (section 1, "Short heads"): the kind's short type byte
 * (`c`, `r`, ... `m`, `f` for `&`, `t` for `$`), then `seq` and `ack` (0..4095) as two base-64
 * digits each, most significant first. E.g. `shortHead('C', 65, 3)` = `c1103`.
 */
export function shortHead(kind: string, seq: number, ack: number): string {
  return SHORT_KINDS[kind] + String.fromCharCode(DIGIT0 + ((seq >> 6) & 63), DIGIT0 + (seq & 63), DIGIT0 + ((ack >> 6) & 63), DIGIT0 + (ack & 63));
}

/**
 * One frame line with a short head (section 1, "Short heads"): `~` HEAD BODY CRC `\n`, with no
 * spaces; BODY escaped as in the long form; CRC-32 of `~` HEAD BODY (as sent) in six base-64
 * digits: its upper 16 bits in three, then its lower 16 bits in three, most significant first.
 * `head` is a {@link shortHead}.
 */
export function encodeShortFrame(head: string, body?: Uint8Array | string): Buffer {
  let bb: Buffer | undefined;
  let bx = 0;
  if (body !== undefined && body.length > 0) {
    bb = typeof body === 'string' ? Buffer.from(body, 'latin1') : body instanceof Buffer ? body : Buffer.from(body.buffer, body.byteOffset, body.length);
    bx = countEscapes(bb, 0, bb.length);
  }
  const hl = head.length;
  const out = Buffer.allocUnsafe(1 + hl + (bb ? bb.length + bx : 0) + SHORT_TRAILER);
  out[0] = FRAME_MARK_CODE;
  out.write(head, 1, hl, 'latin1');
  let j = 1 + hl;
  if (bb) j = putEscaped(out, j, bb, bx);
  j = putCrc6(out, j, crcRange(out, 0, j));
  out[j] = NL;
  return out;
}

/** Write `crc` as six base-64 digits at `out[j]` (section 1, "Short heads"); returns the offset after them. */
function putCrc6(out: Buffer, j: number, crc: number): number {
  const hi = crc >>> 16;
  const lo = crc & 0xffff;
  out[j++] = DIGIT0 + (hi >> 12);
  out[j++] = DIGIT0 + ((hi >> 6) & 63);
  out[j++] = DIGIT0 + (hi & 63);
  out[j++] = DIGIT0 + (lo >> 12);
  out[j++] = DIGIT0 + ((lo >> 6) & 63);
  out[j++] = DIGIT0 + (lo & 63);
  return j;
}

/** Largest `size` a short acknowledgement carries: three base-64 digits (section 4, "Short acknowledgements"). */
export const SHORT_ACK_MAX_SIZE = 64 ** 3 - 1;
/** Bytes of a short acknowledgement: `~a`, 5 digits, 6 CRC digits and `\n` (section 4). */
export const SHORT_ACK_BYTES = 14;
/** Bytes of a short acknowledgement before its newline. */
const SHORT_ACK_LINE = SHORT_ACK_BYTES - 1;

/**
 * A short acknowledgement (section 4, "Short acknowledgements"), 14 bytes: `~a`, `ack` (0..4095)
 * in two base-64 digits, `size` (0..{@link SHORT_ACK_MAX_SIZE}) in three, the CRC in six and `\n`.
 * It stands for an `A` with no `miss` list, `probe`/`top` 0, and the session's nonce and epoch.
 * E.g. `encodeShortAck(3, 424)` is `~a0306X` followed by six CRC digits.
 * @throws RangeError when `ack` or `size` is out of range (a caller's bug: use the long form).
 */
export function encodeShortAck(ack: number, size: number): Buffer {
  if (!(ack >= 0 && ack < 4096 && size >= 0 && size <= SHORT_ACK_MAX_SIZE)) throw new RangeError(`short A: ack ${ack} size ${size}`);
  const out = Buffer.allocUnsafe(SHORT_ACK_BYTES);
  out[0] = FRAME_MARK_CODE;
  out[1] = 0x61; // a
  out[2] = DIGIT0 + (ack >> 6);
  out[3] = DIGIT0 + (ack & 63);
  out[4] = DIGIT0 + (size >> 12);
  out[5] = DIGIT0 + ((size >> 6) & 63);
  out[6] = DIGIT0 + (size & 63);
  putCrc6(out, 7, crcRange(out, 0, 7));
  out[SHORT_ACK_LINE] = NL;
  return out;
}

/**
 * Bytes a sequenced frame whose head is `head` takes besides its body: `~`, the head, and the
 * trailer (long form: a space before the body, a space, 8 hex digits and `\n`; short form: 6
 * digits and `\n`).
 */
export function frameOverhead(head: string, short: boolean): number {
  return short ? 1 + head.length + SHORT_TRAILER : 2 + head.length + FRAME_TRAILER;
}

/** A frame after its CRC was checked and its bytes unescaped (section 1). */
export type LinkFrame =
  | { type: 'S'; nonce: number; size: number }
  /**
   * `probe`: from the agent, the token of the `Y` this `A` answers, 0 when it answers none; from
   * the host (`top`), 1 + the agent sequence number it received last, sent with a `miss` list, 0
   * otherwise (section 5);
   * `miss`: sequence numbers the sender of the `A` lacks (selective acknowledgement, section 5).
   */
  | { type: 'A'; ack: number; epoch: number; size: number; nonce: number; probe: number; miss: number[] }
  /**
   * A short acknowledgement (`~a`, section 4, "Short acknowledgements"): an `A` with no `miss`
   * list and `probe`/`top` 0 whose nonce and epoch are the session's own; the receiver takes it
   * only while a session is open.
   */
  | { type: 'a'; ack: number; size: number }
  /** `probe`: 1..9999, echoed by the `A` that answers it. */
  | { type: 'Y'; probe: number }
  | { type: 'B'; epoch: number; proto: number }
  /** A sequenced frame: `kind` is a message type (C R X E P L), a fragment (`&`, `$`) or a bundle (`M`). */
  | { type: 'seq'; kind: string; seq: number; ack: number; body: Buffer };

/** Classification of one received line. */
export type LineResult =
  | { kind: 'frame'; frame: LinkFrame }
  | { kind: 'log'; text: string }
  | { kind: 'bad'; reason: string };

const MIN_LINE = 12; // "~Y1" + " " + 8 hex
const UNSEQ_RE = /^([SAYB])([0-9 ]*)$/;
/** One-character strings of the sequenced frame kinds, by byte value (undefined: not a kind). */
const SEQ_KIND: Array<string | undefined> = [];
for (const k of 'CRXEPL&$M') SEQ_KIND[k.charCodeAt(0)] = k;
/** The kind each short type byte stands for (section 1, "Short heads"), by byte value. */
const SHORT_KIND: Array<string | undefined> = [];
for (const [k, v] of Object.entries(SHORT_KINDS)) SHORT_KIND[v.charCodeAt(0)] = k;
const MIN_SHORT_LINE = 12; // "~" kind, 4 digits, 6 CRC digits

/**
 * Classify one line (without its `\n`; a trailing `\r` is ignored) (section 1).
 * Never throws.
 */
export function parseLine(line: Uint8Array): LineResult {
  let end = line.length;
  if (end > 0 && line[end - 1] === 0x0d) end--;
  const b = end === line.length && line instanceof Buffer ? line : Buffer.from(line.buffer, line.byteOffset, end);
  if (end === 0 || b[0] !== 0x7e /* ~ */) return { kind: 'log', text: b.toString('utf8') };
  if (end > 1) {
    const sk = SHORT_KIND[b[1]];
    if (sk !== undefined) return parseShort(b, end, sk);
    if (b[1] === 0x61 /* a */) return parseShortAck(b, end);
  }
  if (end < MIN_LINE || b[end - 9] !== 0x20) return { kind: 'bad', reason: 'no checksum' };
  // the 8 uppercase hex digits of the CRC, read in place
  let want = 0;
  for (let k = end - 8; k < end; k++) {
    const c = b[k];
    let v: number;
    if (c >= 0x30 && c <= 0x39) v = c - 0x30;
    else if (c >= 0x41 && c <= 0x46) v = c - 0x37;
    else return { kind: 'bad', reason: 'no checksum' };
    want = want * 16 + v;
  }
  const cend = end - 9;
  const got = crcRange(b, 0, cend);
  if (want !== got) return { kind: 'bad', reason: `checksum ${b.toString('latin1', end - 8, end)} != ${hex8(got)}` };
  // content `[from, to)` of `c`: in place when nothing is escaped
  let c: Buffer = b;
  let from = 1;
  let to = cend;
  const e = b.indexOf(ESC, 1);
  if (e >= 0 && e < cend) {
    const u = unescapeBytes(b.subarray(1, cend));
    if (!u) return { kind: 'bad', reason: 'bad escape' };
    c = u;
    from = 0;
    to = u.length;
  }
  const t = c[from];
  if (t === 0x53 || t === 0x41 || t === 0x59 || t === 0x42) return parseUnsequenced(c, from, to);
  // sequenced: <kind><1-4 digits>.<1-4 digits>, up to the first space
  const kind = SEQ_KIND[t];
  if (kind === undefined || from >= to) return { kind: 'bad', reason: 'bad head' };
  let i = from + 1;
  let seq = 0;
  while (i < to && i - from <= 4 && c[i] >= 0x30 && c[i] <= 0x39) seq = seq * 10 + (c[i++] - 0x30);
  if (i === from + 1 || i >= to || c[i] !== 0x2e /* . */) return { kind: 'bad', reason: 'bad head' };
  const s = ++i;
  let ack = 0;
  while (i < to && i - s < 4 && c[i] >= 0x30 && c[i] <= 0x39) ack = ack * 10 + (c[i++] - 0x30);
  if (i === s || (i < to && c[i] !== 0x20)) return { kind: 'bad', reason: 'bad head' };
  const body = i < to ? c.subarray(i + 1, to) : Buffer.alloc(0);
  return { kind: 'frame', frame: { type: 'seq', kind, seq, ack, body } };
}

/** Value of the base-64 digit byte `c` (section 1, "Short heads"), or -1. */
function digit(c: number): number {
  return c >= DIGIT0 && c < DIGIT0 + 64 ? c - DIGIT0 : -1;
}

/** A line `b[0..end)` whose type byte is a short kind (section 1, "Short heads"). */
function parseShort(b: Buffer, end: number, kind: string): LineResult {
  if (end < MIN_SHORT_LINE) return { kind: 'bad', reason: 'no checksum' };
  const cend = end - 6;
  const bad = checkCrc6(b, cend);
  if (bad) return bad;
  const s1 = digit(b[2]);
  const s2 = digit(b[3]);
  const a1 = digit(b[4]);
  const a2 = digit(b[5]);
  if (s1 < 0 || s2 < 0 || a1 < 0 || a2 < 0) return { kind: 'bad', reason: 'bad head' };
  let body = b.subarray(6, cend);
  if (body.indexOf(ESC) >= 0) {
    const u = unescapeBytes(body);
    if (!u) return { kind: 'bad', reason: 'bad escape' };
    body = u;
  }
  return { kind: 'frame', frame: { type: 'seq', kind, seq: s1 * 64 + s2, ack: a1 * 64 + a2, body } };
}

/**
 * The check of a short form (section 1, "Short heads"): the six base-64 digits at `b[cend..cend+6)`
 * against the CRC-32 of `b[0..cend)`. A bad line's result, or undefined when they match.
 */
function checkCrc6(b: Buffer, cend: number): LineResult | undefined {
  let hi = 0;
  let lo = 0;
  for (let k = cend; k < cend + 6; k++) {
    const v = digit(b[k]);
    if (v < 0) return { kind: 'bad', reason: 'no checksum' };
    if (k < cend + 3) hi = hi * 64 + v;
    else lo = lo * 64 + v;
  }
  const got = crcRange(b, 0, cend);
  return hi * 65536 + lo === got ? undefined : { kind: 'bad', reason: `checksum ${b.toString('latin1', cend, cend + 6)} != ${crc6(got)}` };
}

/** A line `b[0..end)` whose type byte is `a`: a short acknowledgement (section 4). */
function parseShortAck(b: Buffer, end: number): LineResult {
  if (end !== SHORT_ACK_LINE) return { kind: 'bad', reason: 'bad a' };
  const bad = checkCrc6(b, 7);
  if (bad) return bad;
  let v = 0;
  for (let k = 2; k < 7; k++) {
    const d = digit(b[k]);
    if (d < 0) return { kind: 'bad', reason: 'bad a' };
    v = v * 64 + d;
  }
  // two digits of ack, then three of size
  return { kind: 'frame', frame: { type: 'a', ack: Math.floor(v / 262144), size: v % 262144 } };
}

/** The six base-64 digits of `crc` (section 1, "Short heads"). */
export function crc6(crc: number): string {
  const b = Buffer.allocUnsafe(6);
  putCrc6(b, 0, crc >>> 0);
  return b.toString('latin1');
}

/** An unsequenced frame (`S`, `A`, `Y`, `B`): the whole content `c[from..to)` is the head. */
function parseUnsequenced(c: Buffer, from: number, to: number): LineResult {
  // fast path: numbers of 1-15 digits separated by single spaces; anything else the general way
  let f: number[] | undefined = [];
  let i = from + 1;
  if (i < to) {
    for (;;) {
      const s = i;
      let n = 0;
      while (i < to && c[i] >= 0x30 && c[i] <= 0x39) n = n * 10 + (c[i++] - 0x30);
      if (i === s || i - s > 15) {
        f = undefined;
        break;
      }
      f.push(n);
      if (i >= to) break;
      if (c[i] !== 0x20 || i + 1 >= to) {
        f = undefined;
        break;
      }
      i++;
    }
  }
  if (!f) {
    const m = UNSEQ_RE.exec(c.toString('latin1', from, to));
    if (!m) return { kind: 'bad', reason: 'bad head' };
    f = m[2] === '' ? [] : m[2].split(' ').map(Number);
    if (f.some((x) => !Number.isSafeInteger(x))) return { kind: 'bad', reason: 'bad number' };
  }
  switch (c[from]) {
    case 0x53: // S
      if (f.length !== 2) return { kind: 'bad', reason: 'bad S' };
      return { kind: 'frame', frame: { type: 'S', nonce: f[0], size: f[1] } };
    case 0x41: {
      // A
      if (f.length < 5 || f.length > 5 + 16 || f[4] > 9999) return { kind: 'bad', reason: 'bad A' };
      const miss = f.slice(5);
      for (const x of miss) if (x >= 4096) return { kind: 'bad', reason: 'bad A' };
      return { kind: 'frame', frame: { type: 'A', ack: f[0], epoch: f[1], size: f[2], nonce: f[3], probe: f[4], miss } };
    }
    case 0x59: // Y
      if (f.length !== 1 || f[0] < 1 || f[0] > 9999) return { kind: 'bad', reason: 'bad Y' };
      return { kind: 'frame', frame: { type: 'Y', probe: f[0] } };
    default:
      // B
      if (f.length !== 2) return { kind: 'bad', reason: 'bad B' };
      return { kind: 'frame', frame: { type: 'B', epoch: f[0], proto: f[1] } };
  }
}

/**
 * True when `line` (without `\n`) is a valid protocol-v1 frame (CRC-16/MODBUS, 4 hex digits):
 * the host uses it to tell a v1 agent apart (section 9).
 */
export function isV1Frame(line: Uint8Array): boolean {
  let end = line.length;
  if (end > 0 && line[end - 1] === 0x0d) end--;
  if (end < 7 || line[0] !== 0x7e || line[end - 5] !== 0x20) return false;
  const b = Buffer.from(line.buffer, line.byteOffset, end);
  const want = b.toString('latin1', end - 4, end);
  return /^[0-9A-F]{4}$/.test(want) && crc16(b.subarray(0, end - 5)).toString(16).toUpperCase().padStart(4, '0') === want;
}

/**
 * Cuts a byte stream into lines at `\n`, holding at most `maxLine` bytes of a partial
 * line (section 1): a longer line is dropped whole (counted in {@link overlong}) and
 * bytes are discarded until the next `\n`.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private skipping = false;
  /** Lines dropped for being longer than `maxLine`. */
  overlong = 0;

  constructor(private readonly maxLine: number) {}

  /** Feed bytes; `onLine` gets every complete line without its `\n`. */
  push(chunk: Uint8Array, onLine: (line: Buffer) => void): void {
    const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    let start = 0;
    for (;;) {
      const nl = b.indexOf(NL, start);
      if (nl < 0) break;
      if (this.skipping) {
        this.skipping = false;
        this.parts = [];
        this.size = 0;
      } else if (this.size + (nl - start) >= this.maxLine) {
        this.overlong++;
        this.parts = [];
        this.size = 0;
      } else {
        let line: Buffer;
        if (this.size === 0) line = b.subarray(start, nl);
        else {
          this.parts.push(b.subarray(start, nl));
          line = Buffer.concat(this.parts);
          this.parts = [];
          this.size = 0;
        }
        onLine(line);
      }
      start = nl + 1;
    }
    if (start < b.length && !this.skipping) {
      const rest = b.subarray(start);
      if (this.size + rest.length >= this.maxLine) {
        this.overlong++;
        this.skipping = true;
        this.parts = [];
        this.size = 0;
      } else {
        this.parts.push(Buffer.from(rest)); // copy: the chunk's memory may be reused
        this.size += rest.length;
      }
    }
  }

  /** Forget a partial line. */
  reset(): void {
    this.parts = [];
    this.size = 0;
    this.skipping = false;
  }
}

/**
 * Bytes one message takes in an `M` frame's body (section 2, "Bundles"), escaped (0x0A and 0x10
 * take two): its length in decimal, a space, the message.
 */
export function bundledSize(message: Uint8Array): number {
  return String(message.length).length + 1 + escapedLength(message, 0, message.length);
}

/**
 * The body of an `M` frame (section 2, "Bundles"): every message, type character first, as its
 * byte length (unescaped, decimal), a space and the message, one after the other. Pure.
 */
export function bundleBody(messages: ReadonlyArray<Uint8Array>): Buffer {
  const parts: Uint8Array[] = [];
  for (const m of messages) parts.push(Buffer.from(`${m.length} `, 'latin1'), m);
  return Buffer.concat(parts);
}

/**
 * The messages of an `M` frame's body (unescaped), as views into it, and whether all of it was a
 * bundle (`ok`). Where it stops being one (a length that is not 1-7 digits and a space, 0, or
 * past the end) the messages before that point are still returned; an empty body is not a
 * bundle. The messages' types are the receiver's to check, as for whole frames. Never throws.
 */
export function unbundle(body: Buffer): { messages: Buffer[]; ok: boolean } {
  const messages: Buffer[] = [];
  let i = 0;
  do {
    let n = 0;
    const s = i;
    while (i < body.length && i - s < 7 && body[i] >= 0x30 && body[i] <= 0x39) n = n * 10 + (body[i++] - 0x30);
    if (i === s || body[i] !== 0x20 || n === 0 || i + 1 + n > body.length) return { messages, ok: false };
    messages.push(body.subarray(i + 1, i + 1 + n));
    i += 1 + n;
  } while (i < body.length);
  return { messages, ok: true };
}

/** Head of a sequenced frame: `<kind><seq>.<ack>`. */
export function seqHead(kind: string, seq: number, ack: number): string {
  return `${kind}${seq}.${ack}`;
}

/**
 * How many bytes of `msg` from `offset` fit in a sequenced frame of at most `frameSize`
 * bytes (incl. `\n`) whose head is `head` (escaping counted), a {@link shortHead} when `short`.
 * At least 1.
 */
export function fitPiece(msg: Uint8Array, offset: number, frameSize: number, head: string, short = false): number {
  const budget = frameSize - frameOverhead(head, short);
  let n = 0;
  let used = 0;
  while (offset + n < msg.length) {
    const c = msg[offset + n];
    const w = c === NL || c === ESC ? 2 : 1;
    if (used + w > budget) break;
    used += w;
    n++;
  }
  return Math.max(1, n);
}

/**
 * Cut `message` into sequenced frame lines of at most `frameSize` bytes (section 2): one
 * whole frame when it fits, else `&`/`$` pieces. Sequence numbers start at `seq`
 * (mod 4096); every frame carries `ack`; with `short`, in short heads (section 1). For tests and
 * simple peers: the link cuts lazily, frame by frame.
 */
export function fragment(message: Uint8Array, frameSize: number, seq: number, ack: number, short = false): Buffer[] {
  const head = short ? shortHead : seqHead;
  const encode = short ? encodeShortFrame : encodeFrame;
  const kind = String.fromCharCode(message[0]);
  const whole = head(kind, seq, ack);
  if (frameOverhead(whole, short) + escapedLength(message, 1, message.length) <= frameSize) {
    return [encode(whole, message.subarray(1))];
  }
  const out: Buffer[] = [];
  let off = 0;
  let s = seq;
  while (off < message.length) {
    const h = head('&', s, ack);
    const n = fitPiece(message, off, frameSize, h, short);
    const last = off + n >= message.length;
    out.push(encode(last ? head('$', s, ack) : h, message.subarray(off, off + n)));
    off += n;
    s = (s + 1) % 4096;
  }
  return out;
}

/** A decoded message (section 7). */
export type Message =
  | { type: 'C'; id: number; fn: string; args: WireValue[] }
  | { type: 'R'; id: number; values: WireValue[] }
  | { type: 'X'; id: number; code: string; message: string }
  | { type: 'E'; handle: number; values: WireValue[] }
  | { type: 'P'; topic: string; values: WireValue[] }
  | { type: 'L'; level: number; message: string };

/** Raised by {@link decodeMessage} for a message whose body is malformed. */
export class FrameSyntaxError extends Error {}

function text(v: WireValue | undefined): string {
  if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
  if (typeof v === 'string') return v;
  return String(v);
}

/** Offset after the number {@link leadNum} read last, and its space. */
let leadAt = 0;

/** Decimal number at `b[from..]`; the offset after it and its space goes to {@link leadAt}. */
function leadNum(b: Buffer, from: number, what: string): number {
  let i = from;
  let neg = false;
  if (b[i] === 0x2d) {
    neg = true;
    i++;
  }
  const s = i;
  let n = 0;
  while (i < b.length && b[i] >= 0x30 && b[i] <= 0x39 && i - s < 10) n = n * 10 + (b[i++] - 0x30);
  if (i === s || (i < b.length && b[i] !== 0x20)) throw new FrameSyntaxError(`bad ${what}`);
  leadAt = i < b.length ? i + 1 : i;
  return neg ? -n : n;
}

/** Message type characters by byte value. */
const MSG_TYPE: Array<string | undefined> = [];
for (const k of MESSAGE_TYPES) MSG_TYPE[k.charCodeAt(0)] = k;

/**
 * Decode a message (section 7): `content` is the type character and the body, or, when `kind`
 * (the type character's byte value) is given, the body alone (a whole-message frame's body,
 * decoded in place).
 * @throws FrameSyntaxError on a malformed body or an unknown type.
 */
export function decodeMessage(content: Uint8Array, kind?: number): Message {
  const b = content instanceof Buffer ? content : Buffer.from(content.buffer, content.byteOffset, content.length);
  const from = kind === undefined ? 1 : 0;
  const code = kind ?? (b.length > 0 ? b[0] : -1);
  const type = MSG_TYPE[code];
  if (type === undefined) throw new FrameSyntaxError(`unknown message type ${JSON.stringify(code < 0 ? '' : String.fromCharCode(code))}`);
  try {
    switch (type) {
      case 'C': {
        const id = leadNum(b, from, 'id');
        const at = leadAt;
        let sp = b.indexOf(0x20, at);
        if (sp < 0) sp = b.length;
        if (sp === at) throw new FrameSyntaxError('call without function');
        return { type: 'C', id, fn: b.toString('latin1', at, sp), args: decodeValues(b, Math.min(sp + 1, b.length)) };
      }
      case 'R': {
        const id = leadNum(b, from, 'id');
        return { type: 'R', id, values: decodeValues(b, leadAt) };
      }
      case 'X': {
        const id = leadNum(b, from, 'id');
        const v = decodeValues(b, leadAt);
        return { type: 'X', id, code: text(v[0]), message: text(v[1]) };
      }
      case 'E': {
        const handle = leadNum(b, from, 'handle');
        return { type: 'E', handle, values: decodeValues(b, leadAt) };
      }
      case 'P': {
        const v = decodeValues(b, from);
        return { type: 'P', topic: text(v[0]), values: v.slice(1) };
      }
      default: {
        const level = leadNum(b, from, 'level');
        const v = decodeValues(b, leadAt);
        return { type: 'L', level, message: text(v[0]) };
      }
    }
  } catch (e) {
    if (e instanceof ValueSyntaxError) throw new FrameSyntaxError(e.message);
    throw e;
  }
}

function join(head: string, values: ReadonlyArray<WireValue | undefined>): Buffer {
  return encodeHeadValues(head, values);
}

/**
 * Message content of a call: `C<id> <fn> <args>`.
 * @throws RangeError / TypeError when an argument cannot be encoded.
 */
export function callMessage(id: number, fn: string | number, args: ReadonlyArray<WireValue | undefined>): Buffer {
  return join(`C${id} ${fn}`, args);
}

/** Message content of any message, for simulators, stub agents and tests. */
export function encodeMessage(m: Message): Buffer {
  switch (m.type) {
    case 'C':
      return callMessage(m.id, m.fn, m.args);
    case 'R':
      return join(`R${m.id}`, m.values);
    case 'X':
      return join(`X${m.id}`, [m.code, m.message]);
    case 'E':
      return join(`E${m.handle}`, m.values);
    case 'P':
      return Buffer.concat([Buffer.from('P'), encodeValues([m.topic, ...m.values])]);
    case 'L':
      return join(`L${m.level}`, [m.message]);
  }
}

export { Handle };

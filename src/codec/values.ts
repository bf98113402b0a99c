/**
 * Value tokens of protocol v2 (docs/protocol.md section 7). Pure functions, no I/O.
 * Values are encoded into and decoded from bytes (`Buffer`), because `b<n>:` strings
 * carry raw bytes, spaces included.
 */
import { COMPACT_MAX, MAX_TABLE_DEPTH, SAFE_STRING_PATTERN } from './constants.js';

/** A socket handle: the integer the agent uses for a module-side socket object. */
export class Handle {
  constructor(readonly id: number) {}
  toString(): string {
    return `h${this.id}`;
  }
  toJSON(): string {
    return `h${this.id}`;
  }
}

/** A float that must be sent as a float even if it is integral (e.g. `1.0`). */
export class Float {
  constructor(readonly value: number) {}
}

/** A Lua table as decoded from the wire: keys in arrival order. */
export type LuaTable = Map<WireValue, WireValue>;

/**
 * A Lua value on the host side:
 * nil → `null`, boolean, number (integers and floats; see {@link Float}),
 * string → `Uint8Array` when decoded (binary-safe; encoders also take JS strings, sent as UTF-8),
 * table → `Map`, handle → {@link Handle}.
 */
export type WireValue = null | boolean | number | Float | string | Uint8Array | Handle | LuaTable | WireValue[];

/** A token could not be decoded. */
export class ValueSyntaxError extends Error {}

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

/** Bytes allowed in the compact `'` string form, by byte value (from SAFE_STRING_PATTERN). */
const SAFE_BYTE = new Uint8Array(256);
for (let c = 0; c < 128; c++) if (SAFE_STRING_PATTERN.test(String.fromCharCode(c))) SAFE_BYTE[c] = 1;

// One scratch buffer the encoder appends to (encoding is synchronous and never re-entered);
// every result is copied out of it into a buffer of its own.
let wb = Buffer.allocUnsafe(4096);
let wp = 0;
/** Offset where the current value list starts: a value written there gets no leading space. */
let wbase = 0;

function room(n: number): void {
  if (wp + n <= wb.length) return;
  const nb = Buffer.allocUnsafe(Math.max(wb.length * 2, wp + n));
  wb.copy(nb, 0, 0, wp);
  wb = nb;
}

/** Append `s` as latin1 (the low byte of each UTF-16 unit, as `Buffer.from(s, 'latin1')`). */
function putLatin1(s: string): void {
  const n = s.length;
  room(n);
  const b = wb;
  let p = wp;
  for (let k = 0; k < n; k++) b[p++] = s.charCodeAt(k);
  wp = p;
}

function putByte(c: number): void {
  room(1);
  wb[wp++] = c;
}

function putBytes(u: Uint8Array): void {
  room(u.length);
  wb.set(u, wp);
  wp += u.length;
}

/** A fresh buffer with the scratch bytes `[from, wp)`; shrinks the scratch after a large message. */
function take(from: number): Buffer {
  const out = Buffer.allocUnsafe(wp - from);
  wb.copy(out, 0, from, wp);
  if (wb.length > 65536) wb = Buffer.allocUnsafe(4096);
  wp = 0;
  return out;
}

function pushString(b: Uint8Array): void {
  const n = b.length;
  if (n <= COMPACT_MAX) {
    let safe = true;
    for (let k = 0; k < n; k++) {
      if (SAFE_BYTE[b[k]] === 0) {
        safe = false;
        break;
      }
    }
    if (safe) {
      room(n + 1);
      wb[wp++] = 0x27; // '
      wb.set(b, wp);
      wp += n;
      return;
    }
  }
  putLatin1(`b${n}:`);
  putBytes(b);
}

/** A JS string: compact when short and safe (then it is ASCII, UTF-8 = latin1), else its UTF-8 bytes. */
function pushText(s: string): void {
  const n = s.length;
  if (n <= COMPACT_MAX) {
    let safe = true;
    for (let k = 0; k < n; k++) {
      const c = s.charCodeAt(k);
      if (c > 127 || SAFE_BYTE[c] === 0) {
        safe = false;
        break;
      }
    }
    if (safe) {
      room(n + 1);
      wb[wp++] = 0x27; // '
      putLatin1(s);
      return;
    }
  }
  pushString(Buffer.from(s, 'utf8'));
}

function encodeFloat(x: number): string {
  if (Number.isNaN(x)) return 'dnan';
  if (x === Infinity) return 'dinf';
  if (x === -Infinity) return 'd-inf';
  return `d${x}`;
}

function pushValue(v: WireValue | undefined, depth: number): void {
  if (wp > wbase) putByte(0x20);
  if (v === null || v === undefined) putByte(0x5f /* _ */);
  else if (v === true) putByte(0x54 /* T */);
  else if (v === false) putByte(0x46 /* F */);
  else if (typeof v === 'number') {
    putLatin1(Number.isInteger(v) && v >= INT32_MIN && v <= INT32_MAX ? String(v) : encodeFloat(v));
  } else if (v instanceof Float) putLatin1(encodeFloat(v.value));
  else if (v instanceof Handle) putLatin1(`h${v.id}`);
  else if (typeof v === 'string') pushText(v);
  else if (v instanceof Uint8Array) pushString(v);
  else {
    if (depth >= MAX_TABLE_DEPTH) throw new RangeError(`table nesting deeper than ${MAX_TABLE_DEPTH}`);
    putByte(0x7b /* { */);
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        pushValue(i + 1, depth + 1);
        pushValue(x, depth + 1);
      });
    } else if (v instanceof Map) {
      for (const [k, x] of v) {
        if (k === null || k === undefined) throw new TypeError('a table key cannot be nil');
        pushValue(k, depth + 1);
        pushValue(x, depth + 1);
      }
    } else {
      throw new TypeError(`cannot encode a value of type ${typeof v}`);
    }
    putByte(0x20);
    putByte(0x7d /* } */);
  }
}

/**
 * @internal Encode `head` (latin1), then a space and `values` when there are any, as one
 * buffer (the message encoders' single copy).
 */
export function encodeHeadValues(head: string, values: ReadonlyArray<WireValue | undefined>): Buffer {
  wp = 0;
  putLatin1(head);
  putByte(0x20);
  wbase = wp;
  for (let k = 0; k < values.length; k++) pushValue(values[k], 0);
  if (wp === wbase) wp--; // no values: no space
  return take(0);
}

/**
 * Encode values as space-separated tokens (empty buffer for none).
 * @throws RangeError (table deeper than 4), TypeError (nil table key, unencodable type).
 */
export function encodeValues(values: ReadonlyArray<WireValue | undefined>): Buffer {
  wp = 0;
  wbase = 0;
  for (let k = 0; k < values.length; k++) pushValue(values[k], 0);
  return take(0);
}

/** Encode one value (tables expand to several tokens). */
export function encodeValue(v: WireValue | undefined): Buffer {
  return encodeValues([v]);
}

const C_SPACE = 0x20;

// Decoder cursor: decoding is synchronous and calls no outside code, so one module-level
// cursor serves every call (saves three closures per message).
let db: Buffer = Buffer.alloc(0);
let di = 0;
let dend = 0;

function dsep(): void {
  if (di < dend) {
    if (db[di] !== C_SPACE) throw new ValueSyntaxError(`expected a space at byte ${di}`);
    di++;
    if (di >= dend) throw new ValueSyntaxError('trailing space');
  }
}

/** End of the token at `di` (the next space or the end). */
function tokenEnd(): number {
  const b = db;
  let j = di;
  while (j < dend && b[j] !== C_SPACE) j++;
  return j;
}

function dnext(depth: number): WireValue {
  const b = db;
  const end = dend;
  const i = di;
  if (i >= end) throw new ValueSyntaxError('unexpected end of values');
  const c = b[i];
  if (c === 0x62 /* b */) {
    let j = i + 1;
    let n = 0;
    while (j < end && b[j] >= 0x30 && b[j] <= 0x39 && j - i <= 8) n = n * 10 + (b[j++] - 0x30);
    if (j === i + 1 || j >= end || b[j] !== 0x3a /* : */) throw new ValueSyntaxError('bad b<n>: string token');
    if (j + 1 + n > end) throw new ValueSyntaxError(`b string of ${n} bytes runs past the end`);
    const v = new Uint8Array(b.subarray(j + 1, j + 1 + n));
    di = j + 1 + n;
    return v;
  }
  const j = tokenEnd();
  di = j;
  // integers: -?[0-9]+
  if ((c >= 0x30 && c <= 0x39) || c === 0x2d) {
    let k = c === 0x2d ? i + 1 : i;
    const s = k;
    let n = 0;
    while (k < j && b[k] >= 0x30 && b[k] <= 0x39) n = n * 10 + (b[k++] - 0x30);
    if (k === j && k > s) {
      if (j - s > 15) {
        const t = b.toString('latin1', i, j);
        const x = Number(t);
        if (!Number.isSafeInteger(x)) throw new ValueSyntaxError(`integer out of range: ${t.slice(0, 16)}`);
        return x;
      }
      return c === 0x2d ? -n : n;
    }
  }
  if (j === i + 1) {
    if (c === 0x5f /* _ */) return null;
    if (c === 0x54 /* T */) return true;
    if (c === 0x46 /* F */) return false;
    if (c === 0x7b /* { */) {
      if (depth >= MAX_TABLE_DEPTH) throw new ValueSyntaxError('table nested too deep');
      const m: LuaTable = new Map();
      for (;;) {
        dsep();
        if (di >= end) throw new ValueSyntaxError('unterminated table');
        if (b[di] === 0x7d && (di + 1 === end || b[di + 1] === C_SPACE)) {
          di++;
          return m;
        }
        const k = dnext(depth + 1);
        dsep();
        if (di >= end || (b[di] === 0x7d && (di + 1 === end || b[di + 1] === C_SPACE))) throw new ValueSyntaxError('table key without value');
        const v = dnext(depth + 1);
        if (k === null) throw new ValueSyntaxError('nil table key');
        m.set(k instanceof Uint8Array ? Buffer.from(k).toString('latin1') : k, v);
      }
    }
    if (c === 0x7d /* } */) throw new ValueSyntaxError('unexpected }');
  }
  if (c === 0x27 /* ' */) {
    if (j - i - 1 > COMPACT_MAX) throw new ValueSyntaxError('bad compact string token');
    for (let k = i + 1; k < j; k++) if (SAFE_BYTE[b[k]] === 0) throw new ValueSyntaxError('bad compact string token');
    return new Uint8Array(b.subarray(i + 1, j));
  }
  const t = b.toString('latin1', i, j);
  const rest = t.slice(1);
  switch (t[0]) {
    case 'd': {
      if (rest === 'inf') return new Float(Infinity);
      if (rest === '-inf') return new Float(-Infinity);
      if (rest === 'nan' || rest === '-nan') return new Float(NaN);
      const x = Number(rest);
      if (rest === '' || Number.isNaN(x) || !/^[-+0-9.eE]+$/.test(rest)) throw new ValueSyntaxError(`bad float token: ${t.slice(0, 16)}`);
      return new Float(x);
    }
    case 'h':
      if (!/^[0-9]{1,10}$/.test(rest)) throw new ValueSyntaxError(`bad handle token: ${t.slice(0, 16)}`);
      return new Handle(Number(rest));
    default:
      throw new ValueSyntaxError(`unknown token: ${t.slice(0, 16)}`);
  }
}

/**
 * Decode tokens from `buf` starting at `offset` up to its end.
 * @throws ValueSyntaxError on any malformed token.
 */
export function decodeValues(buf: Uint8Array, offset = 0): WireValue[] {
  const out: WireValue[] = [];
  if (offset >= buf.length) return out;
  db = buf instanceof Buffer ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  di = offset;
  dend = buf.length;
  try {
    while (di < dend) {
      out.push(dnext(0));
      dsep();
    }
  } finally {
    db = EMPTY;
  }
  return out;
}
const EMPTY = Buffer.alloc(0);

/** Numeric value of a decoded number (integer or {@link Float}); undefined otherwise. */
export function toNumber(v: WireValue | undefined): number | undefined {
  if (typeof v === 'number') return v;
  if (v instanceof Float) return v.value;
  return undefined;
}

/** Text of a decoded string value (UTF-8); undefined for non-strings. */
export function toText(v: WireValue | undefined): string | undefined {
  if (typeof v === 'string') return v;
  if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
  return undefined;
}

/** Field of a decoded table by string key. */
export function field(t: WireValue | undefined, key: string): WireValue | undefined {
  return t instanceof Map ? t.get(key) : undefined;
}

/** A decoded table with keys 1..n as an array. */
export function tableToArray(t: WireValue | undefined): WireValue[] {
  if (!(t instanceof Map)) return [];
  const out: WireValue[] = [];
  for (let k = 1; t.has(k); k++) out.push(t.get(k) as WireValue);
  return out;
}

/** Convert a decoded value to plain JSON-friendly data (strings as UTF-8 text when printable, else `{base64}`). */
export function toPlain(v: WireValue | undefined): unknown {
  if (v === undefined || v === null) return null;
  if (v instanceof Float) return Number.isFinite(v.value) ? v.value : String(v.value);
  if (v instanceof Handle) return `h${v.id}`;
  if (v instanceof Uint8Array) {
    const s = Buffer.from(v).toString('utf8');
    return Buffer.from(s, 'utf8').equals(Buffer.from(v)) && !/[\x00-\x08\x0e-\x1f]/.test(s) ? s : { base64: Buffer.from(v).toString('base64') };
  }
  if (v instanceof Map) {
    const arr = tableToArray(v);
    if (arr.length === v.size && arr.length > 0) return arr.map(toPlain);
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) o[String(toPlain(k))] = toPlain(x);
    return o;
  }
  if (Array.isArray(v)) return v.map(toPlain);
  return v;
}

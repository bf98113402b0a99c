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

function pushString(out: Buffer[], b: Uint8Array): void {
  if (b.length <= COMPACT_MAX) {
    const latin = Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
    if (SAFE_STRING_PATTERN.test(latin)) {
      out.push(Buffer.from(`'${latin}`, 'latin1'));
      return;
    }
  }
  out.push(Buffer.from(`b${b.length}:`, 'latin1'), Buffer.from(b.buffer, b.byteOffset, b.length));
}

function encodeFloat(x: number): string {
  if (Number.isNaN(x)) return 'dnan';
  if (x === Infinity) return 'dinf';
  if (x === -Infinity) return 'd-inf';
  return `d${x}`;
}

function pushValue(out: Buffer[], v: WireValue | undefined, depth: number): void {
  if (out.length > 0) out.push(SPACE);
  if (v === null || v === undefined) out.push(NIL);
  else if (v === true) out.push(TRUE);
  else if (v === false) out.push(FALSE);
  else if (typeof v === 'number') {
    out.push(Buffer.from(Number.isInteger(v) && v >= INT32_MIN && v <= INT32_MAX ? String(v) : encodeFloat(v), 'latin1'));
  } else if (v instanceof Float) out.push(Buffer.from(encodeFloat(v.value), 'latin1'));
  else if (v instanceof Handle) out.push(Buffer.from(`h${v.id}`, 'latin1'));
  else if (typeof v === 'string') pushString(out, Buffer.from(v, 'utf8'));
  else if (v instanceof Uint8Array) pushString(out, v);
  else {
    if (depth >= MAX_TABLE_DEPTH) throw new RangeError(`table nesting deeper than ${MAX_TABLE_DEPTH}`);
    out.push(OPEN);
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        pushValue(out, i + 1, depth + 1);
        pushValue(out, x, depth + 1);
      });
    } else if (v instanceof Map) {
      for (const [k, x] of v) {
        if (k === null || k === undefined) throw new TypeError('a table key cannot be nil');
        pushValue(out, k, depth + 1);
        pushValue(out, x, depth + 1);
      }
    } else {
      throw new TypeError(`cannot encode a value of type ${typeof v}`);
    }
    out.push(SPACE, CLOSE);
  }
}

const SPACE = Buffer.from(' ');
const NIL = Buffer.from('_');
const TRUE = Buffer.from('T');
const FALSE = Buffer.from('F');
const OPEN = Buffer.from('{');
const CLOSE = Buffer.from('}');

/**
 * Encode values as space-separated tokens (empty buffer for none).
 * @throws RangeError (table deeper than 4), TypeError (nil table key, unencodable type).
 */
export function encodeValues(values: ReadonlyArray<WireValue | undefined>): Buffer {
  const out: Buffer[] = [];
  for (const v of values) pushValue(out, v, 0);
  return Buffer.concat(out);
}

/** Encode one value (tables expand to several tokens). */
export function encodeValue(v: WireValue | undefined): Buffer {
  return encodeValues([v]);
}

const C_SPACE = 0x20;

/**
 * Decode tokens from `buf` starting at `offset` up to its end.
 * @throws ValueSyntaxError on any malformed token.
 */
export function decodeValues(buf: Uint8Array, offset = 0): WireValue[] {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const end = b.length;
  let i = offset;
  const token = (): string => {
    let j = i;
    while (j < end && b[j] !== C_SPACE) j++;
    const t = b.toString('latin1', i, j);
    i = j;
    return t;
  };
  const sep = () => {
    if (i < end) {
      if (b[i] !== C_SPACE) throw new ValueSyntaxError(`expected a space at byte ${i}`);
      i++;
      if (i >= end) throw new ValueSyntaxError('trailing space');
    }
  };
  const next = (depth: number): WireValue => {
    if (i >= end) throw new ValueSyntaxError('unexpected end of values');
    const c = b[i];
    if (c === 0x62 /* b */) {
      let j = i + 1;
      let n = 0;
      while (j < end && b[j] >= 0x30 && b[j] <= 0x39 && j - i <= 8) n = n * 10 + (b[j++] - 0x30);
      if (j === i + 1 || j >= end || b[j] !== 0x3a /* : */) throw new ValueSyntaxError('bad b<n>: string token');
      if (j + 1 + n > end) throw new ValueSyntaxError(`b string of ${n} bytes runs past the end`);
      const v = Uint8Array.from(b.subarray(j + 1, j + 1 + n));
      i = j + 1 + n;
      return v;
    }
    const t = token();
    if (t === '_') return null;
    if (t === 'T') return true;
    if (t === 'F') return false;
    if (t === '{') {
      if (depth >= MAX_TABLE_DEPTH) throw new ValueSyntaxError('table nested too deep');
      const m: LuaTable = new Map();
      for (;;) {
        sep();
        if (i >= end) throw new ValueSyntaxError('unterminated table');
        if (b[i] === 0x7d && (i + 1 === end || b[i + 1] === C_SPACE)) {
          i++;
          return m;
        }
        const k = next(depth + 1);
        sep();
        if (i >= end || (b[i] === 0x7d && (i + 1 === end || b[i + 1] === C_SPACE))) throw new ValueSyntaxError('table key without value');
        const v = next(depth + 1);
        if (k === null) throw new ValueSyntaxError('nil table key');
        m.set(k instanceof Uint8Array ? Buffer.from(k).toString('latin1') : k, v);
      }
    }
    if (t === '}') throw new ValueSyntaxError('unexpected }');
    if (/^-?[0-9]+$/.test(t)) {
      const n = Number(t);
      if (!Number.isSafeInteger(n)) throw new ValueSyntaxError(`integer out of range: ${t.slice(0, 16)}`);
      return n;
    }
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
      case "'":
        if (rest.length > COMPACT_MAX || !SAFE_STRING_PATTERN.test(rest)) throw new ValueSyntaxError('bad compact string token');
        return Uint8Array.from(Buffer.from(rest, 'latin1'));
      case 'h':
        if (!/^[0-9]{1,10}$/.test(rest)) throw new ValueSyntaxError(`bad handle token: ${t.slice(0, 16)}`);
        return new Handle(Number(rest));
      default:
        throw new ValueSyntaxError(`unknown token: ${t.slice(0, 16)}`);
    }
  };
  const out: WireValue[] = [];
  while (i < end) {
    out.push(next(0));
    sep();
  }
  return out;
}

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

/**
 * Value tokens of protocol v1 (docs/protocol.md section 2). Pure functions, no I/O.
 */
import { MAX_TABLE_DEPTH, SAFE_STRING_PATTERN } from './constants.js';

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

/** Encode one value as a token (tables expand to several tokens). Throws RangeError/TypeError on unencodable input. */
export function encodeValue(v: WireValue | undefined, depth = 0): string {
  if (v === null || v === undefined) return '_';
  if (v === true) return 'T';
  if (v === false) return 'F';
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= INT32_MIN && v <= INT32_MAX) return String(v);
    return encodeFloat(v);
  }
  if (v instanceof Float) return encodeFloat(v.value);
  if (v instanceof Handle) return `h${v.id}`;
  if (typeof v === 'string') return encodeString(Buffer.from(v, 'utf8'));
  if (v instanceof Uint8Array) return encodeString(v);
  if (depth >= MAX_TABLE_DEPTH) throw new RangeError(`table nesting deeper than ${MAX_TABLE_DEPTH}`);
  if (Array.isArray(v)) {
    const parts = ['{'];
    v.forEach((x, i) => parts.push(String(i + 1), encodeValue(x, depth + 1)));
    parts.push('}');
    return parts.join(' ');
  }
  if (v instanceof Map) {
    const parts = ['{'];
    for (const [k, x] of v) {
      if (k === null) throw new TypeError('a table key cannot be nil');
      parts.push(encodeValue(k, depth + 1), encodeValue(x, depth + 1));
    }
    parts.push('}');
    return parts.join(' ');
  }
  throw new TypeError(`cannot encode a value of type ${typeof v}`);
}

function encodeFloat(x: number): string {
  if (Number.isNaN(x)) return 'dnan';
  if (x === Infinity) return 'dinf';
  if (x === -Infinity) return 'd-inf';
  return `d${x}`;
}

function encodeString(b: Uint8Array): string {
  if (b.length <= 64) {
    const latin = Buffer.from(b).toString('latin1');
    if (SAFE_STRING_PATTERN.test(latin)) return `'${latin}`;
  }
  return `s${Buffer.from(b).toString('base64')}`;
}

/** Encode a list of values as space-separated tokens ('' for none). */
export function encodeValues(values: ReadonlyArray<WireValue | undefined>): string {
  return values.map((v) => encodeValue(v)).join(' ');
}

const INT_RE = /^-?[0-9]+$/;
const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Decode tokens (already split on single spaces) into values.
 * Throws {@link ValueSyntaxError} on any malformed token.
 */
export function decodeValues(tokens: readonly string[]): WireValue[] {
  const out: WireValue[] = [];
  let i = 0;
  const next = (depth: number): WireValue => {
    if (i >= tokens.length) throw new ValueSyntaxError('unexpected end of values');
    const t = tokens[i++];
    if (t === '_') return null;
    if (t === 'T') return true;
    if (t === 'F') return false;
    if (t === '{') {
      if (depth >= MAX_TABLE_DEPTH) throw new ValueSyntaxError('table nested too deep');
      const m: LuaTable = new Map();
      for (;;) {
        if (i >= tokens.length) throw new ValueSyntaxError('unterminated table');
        if (tokens[i] === '}') {
          i++;
          return m;
        }
        const k = next(depth + 1);
        if (i < tokens.length && tokens[i] === '}') throw new ValueSyntaxError('table key without value');
        const v = next(depth + 1);
        m.set(k instanceof Uint8Array ? Buffer.from(k).toString('latin1') : k, v);
      }
    }
    if (t === '}') throw new ValueSyntaxError('unexpected }');
    if (INT_RE.test(t)) {
      const n = Number(t);
      if (!Number.isSafeInteger(n)) throw new ValueSyntaxError(`integer out of range: ${t}`);
      return n;
    }
    const tag = t[0];
    const rest = t.slice(1);
    switch (tag) {
      case 'd': {
        if (rest === 'inf') return new Float(Infinity);
        if (rest === '-inf') return new Float(-Infinity);
        if (rest === 'nan' || rest === '-nan') return new Float(NaN);
        const x = Number(rest);
        if (rest === '' || Number.isNaN(x)) throw new ValueSyntaxError(`bad float token: ${t}`);
        return new Float(x);
      }
      case 's':
        if (!B64_RE.test(rest) || rest.length % 4 !== 0) throw new ValueSyntaxError('bad base64 string token');
        return Uint8Array.from(Buffer.from(rest, 'base64'));
      case "'":
        if (!SAFE_STRING_PATTERN.test(rest)) throw new ValueSyntaxError('bad compact string token');
        return Uint8Array.from(Buffer.from(rest, 'latin1'));
      case 'h': {
        if (!/^[0-9]+$/.test(rest)) throw new ValueSyntaxError(`bad handle token: ${t}`);
        return new Handle(Number(rest));
      }
      default:
        throw new ValueSyntaxError(`unknown token: ${t.slice(0, 16)}`);
    }
  };
  while (i < tokens.length) out.push(next(0));
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

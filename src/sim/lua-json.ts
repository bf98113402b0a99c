/**
 * JSON <-> Lua value conversion shared by the emulated `json` libraries of the
 * simulated firmwares (LuatOS cJSON, Luat lua-cjson).
 */
import { LuaFloat, type LuaIn, type LuaOut } from './lua-vm.js';

/**
 * A Lua value (as read by LuaVm.toJs) to a JSON-ready JS value. Tables with keys
 * 1..n become arrays, other tables objects; strings are decoded as UTF-8.
 * @throws Error on userdata/functions or nesting deeper than 16.
 */
export function luaToJson(v: LuaOut, depth = 0): unknown {
  if (depth > 16) throw new Error('nesting too deep');
  if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
  if (v instanceof Map) {
    const n = v.size;
    let isArray = n > 0;
    for (let i = 1; i <= n && isArray; i++) if (!v.has(i)) isArray = false;
    if (isArray) return Array.from({ length: n }, (_, i) => luaToJson(v.get(i + 1), depth + 1));
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) o[String(k)] = luaToJson(x, depth + 1);
    return o;
  }
  if (v === undefined) return null;
  if (typeof v === 'object') throw new Error('type not supported');
  return v;
}

/**
 * A parsed JSON value to a value to push into Lua. Non-integral numbers stay floats;
 * with `integerOnly` (integer-only Luat cores) every number is truncated to int32.
 */
export function jsonToLua(v: unknown, opts: { integerOnly?: boolean } = {}): LuaIn {
  if (v === null) return null;
  if (Array.isArray(v)) return v.map((x) => jsonToLua(x, opts));
  if (typeof v === 'object') {
    const o: Record<string, LuaIn> = {};
    for (const [k, x] of Object.entries(v as object)) o[k] = jsonToLua(x, opts);
    return o;
  }
  if (typeof v === 'number') {
    if (opts.integerOnly) return Math.trunc(v) | 0;
    if (!Number.isInteger(v)) return new LuaFloat(v);
  }
  return v as LuaIn;
}

/**
 * Small raw-fengari helpers the simulated ESP8266 needs beyond {@link LuaVm}:
 * userdata that keep their identity (a callback gets the SAME socket object the
 * Lua code holds), synchronous unprotected calls from inside a library function
 * (the firmware calls some callbacks before the C function returns), and exact
 * firmware error messages.
 */
import fengari from 'fengari';
import { LuaRaise, LuaRef, type LuaArgs, type LuaIn, type LuaVm } from '../lua-vm.js';

const { lua, lauxlib, to_luastring } = fengari as unknown as {
  lua: any;
  lauxlib: any;
  to_luastring: (s: string) => Uint8Array;
};

/** Create a full userdata holding `obj` (metatable `metatable`, defined with {@link LuaVm.defineClass}) and keep it in the registry. */
export function newUserdataRef(vm: LuaVm, L: any, obj: object, metatable: string): LuaRef {
  const data = lua.lua_newuserdata(L, 0) as { obj?: object };
  data.obj = obj;
  lauxlib.luaL_setmetatable(L, to_luastring(metatable));
  return new LuaRef(vm, lauxlib.luaL_ref(L, lua.LUA_REGISTRYINDEX), 'userdata');
}

/**
 * Call `ref(args...)` right now on the calling thread, unprotected: an error propagates
 * to the Lua code that called the library function (like `lua_call` inside a C function).
 */
export function callNow(vm: LuaVm, a: LuaArgs, ref: LuaRef, ...args: LuaIn[]): void {
  const L = a.L;
  lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, ref.ref);
  for (const x of args) vm.push(L, x);
  lua.lua_call(L, args.length, 0);
}

/** Lua type name of argument `i` (`no value` beyond the top, like luaL_typename). */
export function typeName(a: LuaArgs, i: number): string {
  if (i > a.count) return 'no value';
  return fengari.to_jsstring(lua.lua_typename(a.L, lua.lua_type(a.L, i)));
}

/** lua_isnumber: numbers and strings convertible to numbers. */
export function isNumberLike(a: LuaArgs, i: number): boolean {
  return i <= a.count && lua.lua_isnumber(a.L, i);
}

/** lua_isstring: strings and numbers. */
export function isStringLike(a: LuaArgs, i: number): boolean {
  return i <= a.count && lua.lua_isstring(a.L, i);
}

/** lua_tointeger of a number-like argument (truncated like the firmware's integer conversion). */
export function toInt(a: LuaArgs, i: number): number {
  const n = lua.lua_tonumber(a.L, i) as number;
  return Math.trunc(n);
}

/** A `bad argument #i to 'fn' (msg)` error with the firmware's function name. */
export function badArg(i: number, fn: string, msg: string): LuaRaise {
  return new LuaRaise(`bad argument #${i} to '${fn}' (${msg})`);
}

/** luaL_checkinteger with the firmware's message (`number expected, got X`). */
export function checkInt(a: LuaArgs, i: number, fn: string, argNo = i): number {
  if (!isNumberLike(a, i)) throw badArg(argNo, fn, `number expected, got ${typeName(a, i)}`);
  return toInt(a, i);
}

/** luaL_checklstring with the firmware's message; numbers are converted. */
export function checkBytes(a: LuaArgs, i: number, fn: string, argNo = i): Uint8Array {
  if (!isStringLike(a, i)) throw badArg(argNo, fn, `string expected, got ${typeName(a, i)}`);
  return a.bytes(i);
}

/** Text of a byte string (latin1 keeps every byte). */
export const latin1 = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

/** Strict dotted-quad IPv4 check (what lwIP's ipaddr_aton accepts for the usual forms). */
export function isDottedQuad(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  return !!m && m.slice(1).every((p) => Number(p) <= 255);
}

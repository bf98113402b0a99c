/**
 * Family-independent Lua VM host for the simulated modules.
 *
 * Runs real Lua code (the agent files from `firmware-shim/`, verbatim) in fengari,
 * a Lua 5.3 VM written in JavaScript whose integers are 32-bit like the Air780E's
 * (`math.maxinteger` = 2147483647). Emulated firmware libraries are written in
 * TypeScript as {@link LuaLibFn}s and registered as global tables.
 */
import fengari from 'fengari';

const { lua, lauxlib, lualib, to_luastring } = fengari as unknown as {
  lua: any;
  lauxlib: any;
  lualib: any;
  to_luastring: (s: string) => Uint8Array;
};

/** A local variable's active range in a function's bytecode: [startpc, endpc) (Lua's LocVar). */
export interface LocalRange {
  startpc: number;
  endpc: number;
}

/**
 * The largest number of locals active at once in one function, from the pc ranges of its
 * local variables (Lua's `locvars`, what `luac -l -l` lists). This is the count Lua 5.1's
 * parser checks against LUAI_MAXVARS as it declares each local (lparser.c new_localvar:
 * `nactvar + n + 1`): locals whose ranges overlap were active together. The ranges are taken
 * as closed ([startpc, endpc]): a local declared at the very end of a block has an empty range
 * that ends where the block's other locals end, and it was active together with them. Where a
 * block's locals end at the pc a later local starts (rare), this counts one set too many: the
 * count never comes out below the parser's.
 */
export function maxActiveLocals(locals: readonly LocalRange[]): number {
  let max = 0;
  for (const a of locals) {
    let n = 0;
    for (const b of locals) {
      if (b === a || (b.startpc <= a.startpc && a.startpc <= b.endpc)) n++;
    }
    if (n > max) max = n;
  }
  return max;
}

/** A function of a compiled chunk with more active locals than a firmware allows. */
export interface LocalLimitViolation {
  /** 0 for the main chunk, else the line the function starts at. */
  linedefined: number;
  /** Source line of the first local over the limit (approximates where the firmware's parser stops). */
  line: number;
  /** Active locals at most. */
  locals: number;
}

/**
 * Walk a compiled prototype (fengari's Proto) and its nested functions, depth first, and
 * return the first whose active locals exceed `limit`.
 */
function findLocalViolation(p: any, limit: number): LocalLimitViolation | undefined {
  const locals: LocalRange[] = (p.locvars ?? []).map((v: any) => ({ startpc: v.startpc, endpc: v.endpc }));
  const n = maxActiveLocals(locals);
  if (n > limit) {
    // the (limit+1)th local to become active: where the parser would have stopped
    const sorted = [...locals].sort((a, b) => a.startpc - b.startpc);
    let line = p.linedefined as number;
    for (const a of sorted) {
      const active = locals.filter((b) => b === a || (b.startpc <= a.startpc && a.startpc <= b.endpc)).length;
      if (active > limit) {
        line = p.lineinfo[Math.max(0, a.startpc - 1)] ?? line;
        break;
      }
    }
    return { linedefined: p.linedefined, line, locals: n };
  }
  for (const q of p.p ?? []) {
    const v = findLocalViolation(q, limit);
    if (v) return v;
  }
  return undefined;
}

/** A Lua float that must stay a float when pushed (plain JS integers become Lua integers). */
export class LuaFloat {
  constructor(readonly value: number) {}
}

/** A light userdata value (e.g. the `ctrl` pointer a LuatOS socket callback receives). */
export class LightUserdata {
  constructor(readonly ptr: object) {}
}

/** A reference to a Lua value kept alive in the registry. Call `release()` when done. */
export class LuaRef {
  /** Release the reference once pushed into Lua (a value handed over once, e.g. a loaded chunk). */
  releaseOnPush = false;
  constructor(readonly vm: LuaVm, readonly ref: number, readonly type: 'function' | 'table' | 'userdata') {}
  /** A second reference to the same value (released on its own). */
  dup(): LuaRef {
    lua.lua_rawgeti(this.vm.L, lua.LUA_REGISTRYINDEX, this.ref);
    return new LuaRef(this.vm, lauxlib.luaL_ref(this.vm.L, lua.LUA_REGISTRYINDEX), this.type);
  }
  release(): void {
    if (this.vm.closed) return;
    lauxlib.luaL_unref(this.vm.L, lua.LUA_REGISTRYINDEX, this.ref);
  }
}

/** A full userdata wrapping a JS object, created by {@link LuaVm.newUserdata}. */
export class UserdataBox<T extends object = object> {
  constructor(readonly obj: T, readonly metatable: string) {}
}

/** Values a library function may return or pass into Lua. Plain objects and arrays become new tables. */
export type LuaIn =
  | undefined
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | LuaFloat
  | LightUserdata
  | LuaRef
  | UserdataBox
  | LuaIn[]
  | { [k: string]: LuaIn };

/** A JS value read back from Lua by {@link LuaVm.toJs}. Tables become Maps; strings are byte arrays. */
export type LuaOut = undefined | boolean | number | string | Uint8Array | Map<LuaOut, LuaOut> | object;

/** Raised inside a library function to produce a Lua error with this exact message (no position prefix). */
export class LuaRaise extends Error {
  constructor(readonly luaMessage: string) {
    super(luaMessage);
  }
}

/** Typed access to the arguments of a library call, with luaL_check* semantics. */
export class LuaArgs {
  constructor(readonly vm: LuaVm, readonly L: any, readonly fnName: string) {}
  get count(): number {
    return lua.lua_gettop(this.L);
  }
  type(i: number): string {
    return i > this.count ? 'nil' : lua.lua_typename(this.L, lua.lua_type(this.L, i)) && fengari.to_jsstring(lua.lua_typename(this.L, lua.lua_type(this.L, i)));
  }
  isNil(i: number): boolean {
    return lua.lua_isnoneornil(this.L, i);
  }
  isInteger(i: number): boolean {
    return lua.lua_isinteger(this.L, i);
  }
  isNumber(i: number): boolean {
    return lua.lua_type(this.L, i) === lua.LUA_TNUMBER;
  }
  isString(i: number): boolean {
    return lua.lua_type(this.L, i) === lua.LUA_TSTRING;
  }
  isBoolean(i: number): boolean {
    return lua.lua_type(this.L, i) === lua.LUA_TBOOLEAN;
  }
  isFunction(i: number): boolean {
    return lua.lua_type(this.L, i) === lua.LUA_TFUNCTION;
  }
  isTable(i: number): boolean {
    return lua.lua_type(this.L, i) === lua.LUA_TTABLE;
  }
  /** luaL_checkinteger: raises `bad argument #i` if not an integer (or integral float / numeric string). */
  int(i: number): number {
    return lauxlib.luaL_checkinteger(this.L, i);
  }
  optInt(i: number, def: number): number {
    return lauxlib.luaL_optinteger(this.L, i, def);
  }
  num(i: number): number {
    return lauxlib.luaL_checknumber(this.L, i);
  }
  optNum(i: number, def: number): number {
    return lauxlib.luaL_optnumber(this.L, i, def);
  }
  /** luaL_checklstring: raises if not a string or number; numbers are converted. */
  bytes(i: number): Uint8Array {
    return lauxlib.luaL_checklstring(this.L, i);
  }
  optBytes(i: number): Uint8Array | undefined {
    return this.isNil(i) ? undefined : this.bytes(i);
  }
  str(i: number): string {
    return Buffer.from(this.bytes(i)).toString('latin1');
  }
  optStr(i: number): string | undefined {
    return this.isNil(i) ? undefined : this.str(i);
  }
  /** lua_toboolean: nil/false are false, everything else true. */
  truthy(i: number): boolean {
    return lua.lua_toboolean(this.L, i);
  }
  /** The JS object inside a full userdata made by {@link LuaVm.newUserdata}, or a light userdata's pointer. */
  userdata<T extends object>(i: number): T | undefined {
    const t = lua.lua_type(this.L, i);
    if (t === lua.LUA_TUSERDATA) return (lua.lua_touserdata(this.L, i) as { obj?: T }).obj;
    if (t === lua.LUA_TLIGHTUSERDATA) return lua.lua_touserdata(this.L, i) as T;
    return undefined;
  }
  /** Keep the function at `i` alive and return a reference to call it later. */
  fnRef(i: number): LuaRef {
    lauxlib.luaL_checktype(this.L, i, lua.LUA_TFUNCTION);
    lua.lua_pushvalue(this.L, i);
    return new LuaRef(this.vm, lauxlib.luaL_ref(this.L, lua.LUA_REGISTRYINDEX), 'function');
  }
  /** Convert the argument at `i` to a JS value (tables become Maps, strings byte arrays). */
  value(i: number): LuaOut {
    return this.vm.toJs(this.L, i);
  }
  /** Raise a Lua error `bad argument #i to 'fn' (msg)`. */
  argError(i: number, msg: string): never {
    lauxlib.luaL_argerror(this.L, i, to_luastring(msg));
    throw new Error('unreachable');
  }
}

/** A library function: gets its arguments, returns the values to push (an array: its length is the count). */
export type LuaLibFn = (args: LuaArgs) => LuaIn[] | void;

export interface LuaVmOptions {
  /** Called with every error raised by a top-level callback the VM could not hand to Lua code (the module would reboot). */
  onUncaughtError?: (message: string) => void;
}

/**
 * A Lua VM. Libraries are registered with {@link registerLib}; Lua callbacks are
 * invoked from JS events with {@link callRef} (protected; an error is reported to
 * `onUncaughtError`, the way the firmware logs it and reboots).
 */
/**
 * Bytes the live Lua objects would take in a Lua 5.1 core on a 32-bit target with double numbers
 * (NodeMCU's default build; also the scale of the i386 `lua5.1` measurement in
 * scripts/heap-nodemcu.ts), walking everything reachable from the registry (globals, loaded
 * modules, references the firmware holds), the type metatables and the live coroutines' stacks.
 * Sizes (Lua 5.1 lobject.h / lstate.h, i386 alignment: a TValue is 12 bytes):
 * - string: 16-byte header + length + 1, each distinct string once (strings are interned), plus
 *   4 bytes per slot of the string table (a power of two);
 * - table: 32 + 12 per array slot + 28 per hash node (the hash part a power of two); the keys
 *   1..n of a sequence count as array slots, and so do the integer keys Lua's rehash would put
 *   in the array part (ltable.c computesizes: more than half of 1..2^i used);
 * - Lua function: closure 20 + 4 per upvalue; each distinct upvalue 24; each distinct prototype
 *   76 + 4 per instruction + 12 per constant + 4 per nested prototype, debug info stripped
 *   (`luac -s`: no line info, no local or upvalue names);
 * - C closure 20 + 12 per upvalue (light C functions, the firmware's ROM libraries, cost nothing);
 * - userdata 20 + its size (unknown here: 0); coroutine 112 + 12 per stack slot + 192.
 * An estimate (fengari keeps its own JS objects): docs/fidelity.md, "Heap".
 */
export function estimateLua51Heap(L: any): number {
  return heapWalk(L);
}

/**
 * {@link estimateLua51Heap}, attributing each object to the first root that reaches it: the type
 * metatables, then each field of the globals table, then the rest of the registry (debugging:
 * `TETHER_HEAP_DEBUG=1` prints it when a budget check fails).
 * @returns root name -> bytes, largest first.
 */
export function heapBreakdown(L: any): Array<[string, number]> {
  const out = new Map<string, number>();
  heapWalk(L, out);
  return [...out.entries()].sort((a, b) => b[1] - a[1]);
}

/** Prototypes in flash (NodeMCU's LFS), by main Lua state: no heap. */
const FLASH = new WeakMap<object, WeakSet<object>>();

/**
 * Mark the function at the top of `L`'s stack as living in flash (NodeMCU's Lua Flash Store): its
 * prototype and the nested ones cost no heap in {@link estimateLua51Heap}, nor do the constants
 * only they reach. A constant string that a table key or a value in RAM also reaches still counts
 * once: stricter than the firmware, whose LFS strings stay in flash (docs/fidelity.md, "LFS").
 */
export function markFlash(L: any): void {
  const top = L.stack[L.top - 1]?.value;
  if (!top?.p) return;
  const key = L.l_G ?? L;
  let f = FLASH.get(key);
  if (!f) FLASH.set(key, (f = new WeakSet()));
  const flash = f;
  const mark = (p: any) => {
    if (flash.has(p)) return;
    flash.add(p);
    for (const q of p.p) mark(q);
  };
  mark(top.p);
}

/** The chunk a prototype's `source:line` (as {@link heapWalk} names it) comes from. */
function protoChunk(what: string): string {
  return what.replace(/:\d+$/, '');
}

/**
 * The live Lua function prototypes by the chunk that defined them: chunk name (`@tether_call.lua`,
 * `=nodemcu`) -> bytes at the sizes of {@link estimateLua51Heap}. Shows which of an agent's files
 * loaded on first use are in the heap at a given moment (test/nodemcu-lazy.test.ts).
 */
export function liveProtoChunks(L: any): Map<string, number> {
  const out = new Map<string, number>();
  heapWalk(L, undefined, (kind, bytes, what) => {
    if (kind !== 'proto') return;
    const chunk = protoChunk(what);
    out.set(chunk, (out.get(chunk) ?? 0) + bytes);
  });
  return out;
}

function heapDebug(vm: LuaVm, used: number): void {
  const kinds = new Map<string, number>();
  const big: Array<[number, string]> = [];
  heapWalk(vm.L, undefined, (kind, bytes, what) => {
    kinds.set(kind, (kinds.get(kind) ?? 0) + bytes);
    if (kind === 'proto') {
      const f = `proto ${protoChunk(what)}`;
      kinds.set(f, (kinds.get(f) ?? 0) + bytes);
    }
    if (bytes >= 200) big.push([bytes, `${kind}:${what}`]);
  }, new Set(vm.finalizables), []);
  big.sort((a, b) => b[0] - a[0]);
  const k = [...kinds.entries()].map(([n, b]) => `${n}=${b}`).join(' ');
  process.stderr.write(`[heap] over budget: used ${used} > ${vm.heapLimit} (base ${(vm as any).heapBase}): ${k}\n  big: ${big.slice(0, 30).map(([b, w]) => `${b} ${w}`).join(' | ')}\n  at: ${new Error().stack?.split('\n').slice(2, 6).join(' <- ')}\n`);
}

/**
 * A firmware object whose userdata Lua may drop (a closed socket or server): the registry
 * references the firmware keeps for it (`udRef`, its self reference, and `refs()`, its
 * callbacks) keep nothing alive by themselves. When the heap walk does not reach the userdata
 * from anywhere else, it is garbage: {@link LuaVm.heapUsed} calls `finalize()` (the userdata's
 * `__gc`, e.g. nodemcu-firmware app/modules/net.c net_delete unrefs every callback), as the full
 * collection of NodeMCU's default EGC mode would before the next allocation.
 */
export interface Finalizable {
  readonly udRef: number;
  refs(): number[];
  finalize(): void;
}

/**
 * A Lua string's bytes as a JS string (latin1), the key by which {@link heapWalk} counts each
 * distinct string once. fengari's strings are immutable byte arrays, so the key is made once per
 * string, not on every walk (a walk every 20 ms went mostly into these conversions).
 */
const STRING_KEYS = new WeakMap<Uint8Array, string>();

function heapWalk(L: any, parts?: Map<string, number>, note?: (kind: string, bytes: number, what: string) => void, fin?: Set<Finalizable>, dead?: Finalizable[]): number {
  const seen = new Set<unknown>();
  const reg = L.l_G.l_registry?.value;
  const skip = new Set<number>();
  if (fin) for (const f of fin) for (const r of [f.udRef, ...f.refs()]) skip.add(r);
  const flash = FLASH.get(L.l_G ?? L);
  const strings = new Set<string>();
  let total = 0;
  const stack: any[] = [];
  const str = (ts: any) => {
    const b: Uint8Array = ts?.realstring ?? ts;
    if (!b || typeof b.length !== 'number') return;
    let k = STRING_KEYS.get(b);
    if (k === undefined) {
      k = Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
      STRING_KEYS.set(b, k);
    }
    if (strings.has(k)) return;
    strings.add(k);
    total += 17 + b.length;
    note?.('string', 17 + b.length, JSON.stringify(k.slice(0, 24)));
  };
  const tv = (v: any) => {
    if (!v || v.value === null || v.value === undefined) return;
    const t = v.type & 0x0f;
    if (t === 4) str(v.value);
    else if (t === 5 || t === 6 || t === 7 || t === 8) {
      if (v.type === 0x16) return; // light C function
      if (!seen.has(v.value)) {
        seen.add(v.value);
        stack.push(v);
      }
    }
  };
  const proto = (p: any) => {
    if (!p || seen.has(p)) return;
    seen.add(p);
    if (flash?.has(p)) return; // in flash, with its constants and nested prototypes
    total += 76 + 4 * p.code.length + 12 * p.k.length + 4 * p.p.length;
    note?.('proto', 76 + 4 * p.code.length + 12 * p.k.length + 4 * p.p.length, `${p.source ? Buffer.from(p.source.realstring ?? p.source).toString('latin1') : '?'}:${p.linedefined}`);
    for (const k of p.k) tv(k);
    for (const q of p.p) proto(q);
  };
  const drain = () => {
  while (stack.length > 0) {
    const v = stack.pop();
    const o = v.value;
    switch (v.type & 0x0f) {
      case 5: {
        // table: sequence keys 1..n are the array part
        // the array part as Lua's rehash sizes it (ltable.c computesizes): the largest 2^i with
        // more than half of 1..2^i used, counted as its used keys (a constructor's exact size);
        // a sequence 1..n is n slots. The registry's references (luaL_ref) are such keys.
        let n = 0;
        while (o.strong.has(n + 1)) n++;
        if (n < o.strong.size) {
          const nums = new Array<number>(32).fill(0);
          let total = 0;
          for (const k of o.strong.keys()) {
            if (typeof k === 'number' && Number.isInteger(k) && k > 0 && k <= 2 ** 26) {
              nums[Math.ceil(Math.log2(k))]++;
              total++;
            }
          }
          let a = 0;
          for (let i = 0, twotoi = 1; i < 32 && twotoi / 2 < total; i++, twotoi *= 2) {
            a += nums[i];
            if (a > twotoi / 2) n = Math.max(n, a);
          }
        }
        const nh = o.strong.size - n;
        total += 32 + 12 * n + (nh > 0 ? 28 * (1 << Math.ceil(Math.log2(nh))) : 0);
        if (note) {
          const keys = [...o.strong.values()].slice(0, 6).map((e: any) => { const kb = e.key?.value?.realstring ?? e.key?.value; return kb && typeof kb.length === 'number' ? Buffer.from(kb).toString('latin1') : String(kb); });
          note('table', 32 + 12 * n + (nh > 0 ? 28 * (1 << Math.ceil(Math.log2(nh))) : 0), `[${n}+${nh}] ${keys.join(',')}`);
        }
        for (const e of o.strong.values()) {
          if (o === reg && skip.size > 0 && typeof e.key?.value === 'number' && skip.has(e.key.value)) continue;
          tv(e.key);
          tv(e.value);
        }
        if (o.metatable) tv({ type: 5, value: o.metatable });
        break;
      }
      case 6:
        if (v.type === 0x26) {
          // C closure
          total += 20 + 12 * o.nupvalues;
          for (const u of o.upvalue) tv(u);
        } else {
          total += 20 + 4 * o.nupvalues;
          note?.('closure', 20 + 4 * o.nupvalues, '');
          for (const u of o.upvals) {
            if (!u || seen.has(u)) continue;
            seen.add(u);
            total += 24;
            note?.('upval', 24, '');
            tv(u);
          }
          proto(o.p);
        }
        break;
      case 7:
        total += 20;
        if (o.metatable) tv({ type: 5, value: o.metatable });
        tv(o.uservalue);
        break;
      case 8: {
        const th = o;
        const top = Number.isFinite(th.top) ? th.top : 0;
        // the stack as Lua 5.1 sizes it after a full collection: lgc.c checkstacksizes halves a
        // stack more than 4 times larger than its part in use (down to 2 * 45 slots); fengari
        // never shrinks it outside errors. NodeMCU's default EGC mode, ALWAYS, runs that full
        // collection before every allocation (nodemcu-firmware docs/modules/node.md
        // node.egc.setmode; app/lua/lauxlib.c l_alloc).
        let used = top;
        for (let ci = th.ci; ci; ci = ci.previous) if (Number.isFinite(ci.top) && ci.top > used) used = ci.top;
        let slots = Math.max(45, th.stack?.length ?? 0);
        while (slots > 90 && 4 * (used + 1) < slots) slots = Math.floor(slots / 2);
        total += 112 + 12 * slots + 192;
        note?.('thread', 112 + 12 * slots + 192, `stack ${th.stack?.length} counted ${slots}`);
        for (let i = 0; i < top; i++) tv(th.stack[i]);
        break;
      }
    }
  }
  };
  if (parts) {
    const root = (name: string, f: () => void) => {
      const before = total;
      f();
      drain();
      parts.set(name, (parts.get(name) ?? 0) + total - before);
    };
    root('(metatables)', () => {
      for (const mt of L.l_G.mt ?? []) if (mt) tv({ type: 5, value: mt });
    });
    const reg = L.l_G.l_registry?.value;
    const g = reg?.strong?.get(2); // LUA_RIDX_GLOBALS
    const gt = g?.value?.value;
    if (gt) {
      seen.add(gt);
      for (const e of gt.strong.values()) {
        const kb = e.key?.value?.realstring ?? e.key?.value;
        const name = kb && typeof kb.length === 'number' ? Buffer.from(kb.buffer, kb.byteOffset, kb.length).toString('latin1') : String(e.key?.value);
        root(name, () => {
          tv(e.key);
          tv(e.value);
        });
      }
      total += 32 + 28 * (1 << Math.ceil(Math.log2(Math.max(1, gt.strong.size))));
    }
    root('(registry)', () => tv(L.l_G.l_registry));
  } else {
    tv(L.l_G.l_registry);
    for (const mt of L.l_G.mt ?? []) if (mt) tv({ type: 5, value: mt });
    drain();
    // firmware objects closed: counted when Lua still reaches their userdata, else garbage
    for (const f of fin ?? []) {
      const ud = reg?.strong?.get(f.udRef)?.value;
      if (ud && seen.has(ud.value)) {
        for (const r of [f.udRef, ...f.refs()]) tv(reg.strong.get(r)?.value);
        drain();
      } else dead?.push(f);
    }
  }
  // the string table: 4 bytes per slot, slots a power of two at least the number of strings
  total += 4 * (1 << Math.ceil(Math.log2(Math.max(32, strings.size))));
  return total;
}

/** The error a Lua core raises when its allocator fails (Lua 5.1/5.3 lstate.h MEMERRMSG). */
export const MEMERRMSG = 'not enough memory';

/** Options of {@link LuaVm.setHeapBudget}. */
export interface HeapBudget {
  /** Lua heap the firmware gives the VM (bytes), as {@link LuaVm.heapUsed} counts it. */
  limit: number;
  /** Instructions between checks (a count hook). @default 1000 */
  everyInstructions?: number;
  /** Milliseconds between two walks of the heap (each walk costs about a millisecond). @default 20 */
  everyMs?: number;
  /** Or after this many hook calls (`everyInstructions` each), whichever comes first. @default 200 */
  everyHooks?: number;
  /**
   * Also walk the heap inside a library call (a C function of the firmware) once the strings
   * library calls have handed into Lua since the last walk reach this many bytes (`socket.read`,
   * `uart.read`, `sock_recv`, `zbuff:toStr`, ...): over `limit`, that call fails with
   * {@link MEMERRMSG}, as the firmware's `lua_pushlstring` of the result would. 0 = never.
   * A walk costs about 0.5 ms with an agent loaded (issue #8 measurement). @default 16384
   */
  everyBridgeBytes?: number;
}

export class LuaVm {
  readonly L: any;
  closed = false;
  private readonly opts: LuaVmOptions;
  /** LUAI_MAXVARS of the simulated firmware's Lua parser, when stricter than fengari's 200. */
  private maxLocals: number | undefined;
  /** Bytes of {@link estimateLua51Heap} that do not count as the Lua heap (the firmware's own, in ROM). */
  private heapBase = 0;
  private budget?: Required<HeapBudget>;
  private lastHeapCheck = 0;
  private hooksSinceCheck = 0;
  /** Bytes of strings library calls pushed into Lua since the last walk (see `everyBridgeBytes`). */
  private bridgeBytes = 0;
  /** Highest {@link heapUsed} seen by a budget check (bytes). */
  heapPeak = 0;
  /** Set by a family that already handled the agent load running out of heap (its own way). */
  heapLoadHandled = false;

  constructor(opts: LuaVmOptions = {}) {
    this.opts = opts;
    this.L = lauxlib.luaL_newstate();
    // Standard libraries the modules have (LuatOS builds include io/os partially; we give base, coroutine, table, string, math, utf8, os).
    const libs: Array<[string, any]> = [
      ['_G', lualib.luaopen_base],
      ['coroutine', lualib.luaopen_coroutine],
      ['table', lualib.luaopen_table],
      ['string', lualib.luaopen_string],
      ['math', lualib.luaopen_math],
      ['utf8', lualib.luaopen_utf8],
      ['os', lualib.luaopen_os],
      ['debug', lualib.luaopen_debug],
    ];
    for (const [name, open] of libs) {
      lauxlib.luaL_requiref(this.L, to_luastring(name), open, 1);
      lua.lua_pop(this.L, 1);
    }
    // package/require: a minimal `require` that looks in package.preload and package.loaded.
    this.runString(
      `package = package or { loaded = {}, preload = {} }
       for _, n in ipairs({"string","table","math","coroutine","os","utf8","debug"}) do package.loaded[n] = _G[n] end
       function require(name)
         local v = package.loaded[name]
         if v ~= nil then return v end
         local g = rawget(_G, name)
         if g ~= nil then package.loaded[name] = g return g end
         local loader = package.preload[name]
         if not loader then error("module '" .. tostring(name) .. "' not found", 2) end
         v = loader(name)
         if v == nil then v = true end
         package.loaded[name] = v
         return v
       end
       -- fengari has no collectgarbage("count"): estimateLua51Heap (registered below)
`,
      '=vm-init',
    );
    // collectgarbage: "count" is the Lua 5.1 32-bit estimate (KB, and the bytes modulo 1024, as
    // Lua 5.1 returns); "collect"/"step" free nothing fengari would not free anyway
    this.registerGlobal('collectgarbage', (a) => {
      const opt = a.optStr(1) ?? 'collect';
      if (opt === 'count') {
        const b = this.heapUsed();
        return [new LuaFloat(b / 1024), b % 1024];
      }
      if (opt === 'isrunning') return [true];
      return [0];
    });
  }

  /** The Lua heap in use (bytes): {@link estimateLua51Heap} less what {@link setHeapBase} excluded. */
  heapUsed(): number {
    const dead: Finalizable[] = [];
    const used = Math.max(0, heapWalk(this.L, undefined, undefined, this.finalizables, dead) - this.heapBase);
    for (const f of dead) {
      this.finalizables.delete(f);
      f.finalize();
    }
    return used;
  }

  /** Closed firmware objects whose userdata Lua may drop (see {@link Finalizable}). */
  readonly finalizables = new Set<Finalizable>();

  /**
   * Count what exists now as the firmware's own (ROM tables, libraries in flash): later
   * {@link heapUsed} figures count only what Lua code builds on top.
   */
  setHeapBase(): void {
    this.heapBase = estimateLua51Heap(this.L);
  }

  /**
   * Give the VM a heap budget: while Lua code runs, a count hook walks the heap every
   * `everyMs` ms or `everyHooks` hook calls, and so does every entry into the VM (a callback, a
   * chunk) when the last walk is `everyMs` old; over `limit`, the running code gets the error a Lua core raises when its allocator fails
   * ({@link MEMERRMSG}, no position), at the point the code had reached. The family decides what
   * the firmware does with it (the error takes the path any Lua error takes there). Live data is
   * counted, as after the emergency GC both cores run before failing an allocation.
   * @param b the budget; undefined removes it.
   */
  setHeapBudget(b: HeapBudget | undefined): void {
    const L = this.L;
    if (!b) {
      this.budget = undefined;
      lua.lua_sethook(L, null, 0, 0);
      return;
    }
    this.budget = { everyInstructions: 1000, everyMs: 20, everyHooks: 200, everyBridgeBytes: 16384, ...b };
    this.lastHeapCheck = 0;
    this.bridgeBytes = 0;
    lua.lua_sethook(
      L,
      (L2: any) => {
        const bud = this.budget;
        if (!bud) return;
        const now = Date.now();
        if (++this.hooksSinceCheck < bud.everyHooks && now - this.lastHeapCheck < bud.everyMs) return;
        this.lastHeapCheck = now;
        this.hooksSinceCheck = 0;
        this.bridgeBytes = 0;
        const used = this.heapUsed();
        if (used > this.heapPeak) this.heapPeak = used;
        if (used > bud.limit) {
          if (process.env.TETHER_HEAP_DEBUG) {
            heapDebug(this, used);
            lauxlib.luaL_traceback(L2, L2, null, 0);
            process.stderr.write(`  lua: ${lua.lua_tojsstring(L2, -1)}\n`);
            lua.lua_pop(L2, 1);
          }
          lua.lua_pushstring(L2, to_luastring(MEMERRMSG));
          lua.lua_error(L2);
        }
      },
      lua.LUA_MASKCOUNT,
      this.budget.everyInstructions,
    );
  }

  /** True when a budget is set and its last walk is `everyMs` old. */
  private budgetDue(): boolean {
    return this.budget !== undefined && Date.now() - this.lastHeapCheck >= this.budget.everyMs;
  }

  /** The heap budget's limit (bytes), undefined without one. */
  get heapLimit(): number | undefined {
    return this.budget?.limit;
  }

  /**
   * Check the budget now (outside Lua code, e.g. after a chunk ran).
   * @returns true when the heap in use is over the budget.
   */
  overBudget(): boolean {
    if (!this.budget) return false;
    this.lastHeapCheck = Date.now();
    this.bridgeBytes = 0;
    const used = this.heapUsed();
    if (used > this.heapPeak) this.heapPeak = used;
    if (used > this.budget.limit && process.env.TETHER_HEAP_DEBUG) heapDebug(this, used);
    return used > this.budget.limit;
  }

  /** Register `fns` as fields of the global table `name` (created if missing), plus constants. */
  registerLib(name: string, fns: Record<string, LuaLibFn>, consts: Record<string, LuaIn> = {}): void {
    const L = this.L;
    lua.lua_getglobal(L, to_luastring(name));
    if (!lua.lua_istable(L, -1)) {
      lua.lua_pop(L, 1);
      lua.lua_newtable(L);
      lua.lua_pushvalue(L, -1);
      lua.lua_setglobal(L, to_luastring(name));
    }
    for (const [k, fn] of Object.entries(fns)) {
      this.pushFunction(fn, `${name}.${k}`);
      lua.lua_setfield(L, -2, to_luastring(k));
    }
    for (const [k, v] of Object.entries(consts)) {
      this.push(L, v);
      lua.lua_setfield(L, -2, to_luastring(k));
    }
    lua.lua_pop(L, 1);
  }

  /** Register a global function. */
  registerGlobal(name: string, fn: LuaLibFn): void {
    this.pushFunction(fn, name);
    lua.lua_setglobal(this.L, to_luastring(name));
  }

  /** Define a metatable `name` in the registry whose `__index` holds `methods` (for userdata objects). */
  defineClass(name: string, methods: Record<string, LuaLibFn>, extra: Record<string, LuaLibFn> = {}): void {
    const L = this.L;
    lauxlib.luaL_newmetatable(L, to_luastring(name));
    lua.lua_newtable(L);
    for (const [k, fn] of Object.entries(methods)) {
      this.pushFunction(fn, `${name}:${k}`);
      lua.lua_setfield(L, -2, to_luastring(k));
    }
    lua.lua_setfield(L, -2, to_luastring('__index'));
    for (const [k, fn] of Object.entries(extra)) {
      this.pushFunction(fn, `${name}.${k}`);
      lua.lua_setfield(L, -2, to_luastring(k));
    }
    lua.lua_pushstring(L, to_luastring(name));
    lua.lua_setfield(L, -2, to_luastring('__name'));
    lua.lua_pop(L, 1);
  }

  /** A value that, when returned to Lua, becomes a new full userdata holding `obj` with metatable `metatable`. */
  newUserdata<T extends object>(obj: T, metatable: string): UserdataBox<T> {
    return new UserdataBox(obj, metatable);
  }

  private pushFunction(fn: LuaLibFn, label: string): void {
    const vm = this;
    lua.lua_pushcfunction(this.L, (L: any) => {
      let out: LuaIn[] | void;
      try {
        out = fn(new LuaArgs(vm, L, label));
      } catch (e) {
        if (e instanceof LuaRaise) {
          lua.lua_pushstring(L, to_luastring(e.luaMessage));
          return lua.lua_error(L);
        }
        // fengari signals Lua errors raised by luaL_* helpers by throwing its own objects; let those through.
        if (e instanceof Error && !(e as any).status) {
          lua.lua_pushstring(L, to_luastring(`${label}: internal simulator error: ${e.message}`));
          return lua.lua_error(L);
        }
        throw e;
      }
      if (!out) return 0;
      lauxlib.luaL_checkstack(L, out.length + 2, null);
      let bytes = 0;
      for (const v of out) {
        vm.push(L, v);
        if (v instanceof Uint8Array || typeof v === 'string') bytes += v.length;
      }
      // an allocation-heavy call: check the heap now, at the allocation, instead of up to 20 ms
      // (or everyHooks * everyInstructions instructions) later
      const bud = vm.budget;
      if (bud && bytes > 0 && bud.everyBridgeBytes > 0 && (vm.bridgeBytes += bytes) >= bud.everyBridgeBytes) {
        vm.bridgeBytes = 0;
        if (vm.overBudget()) {
          lua.lua_pushstring(L, to_luastring(MEMERRMSG));
          return lua.lua_error(L);
        }
      }
      return out.length;
    });
  }

  /** Push a JS value on the stack of `L`. */
  push(L: any, v: LuaIn): void {
    if (v === undefined || v === null) lua.lua_pushnil(L);
    else if (typeof v === 'boolean') lua.lua_pushboolean(L, v);
    else if (typeof v === 'number') {
      if (Number.isInteger(v) && v >= -2147483648 && v <= 2147483647) lua.lua_pushinteger(L, v);
      else lua.lua_pushnumber(L, v);
    } else if (typeof v === 'string') lua.lua_pushstring(L, to_luastring(v));
    else if (v instanceof Uint8Array) lua.lua_pushstring(L, v);
    else if (v instanceof LuaFloat) lua.lua_pushnumber(L, v.value);
    else if (v instanceof LightUserdata) lua.lua_pushlightuserdata(L, v.ptr);
    else if (v instanceof LuaRef) {
      lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, v.ref);
      if (v.releaseOnPush) v.release();
    }
    else if (v instanceof UserdataBox) {
      const data = lua.lua_newuserdata(L, 0) as { obj?: object };
      data.obj = v.obj;
      lauxlib.luaL_setmetatable(L, to_luastring(v.metatable));
    } else if (Array.isArray(v)) {
      lua.lua_createtable(L, v.length, 0);
      v.forEach((x, i) => {
        this.push(L, x);
        lua.lua_rawseti(L, -2, i + 1);
      });
    } else {
      lua.lua_newtable(L);
      for (const [k, x] of Object.entries(v)) {
        if (x === undefined) continue;
        this.push(L, x);
        lua.lua_setfield(L, -2, to_luastring(k));
      }
    }
  }

  /** Convert the value at stack index `i` of `L` to JS. */
  toJs(L: any, i: number, depth = 0): LuaOut {
    switch (lua.lua_type(L, i)) {
      case lua.LUA_TNIL:
      case lua.LUA_TNONE:
        return undefined;
      case lua.LUA_TBOOLEAN:
        return lua.lua_toboolean(L, i);
      case lua.LUA_TNUMBER:
        return lua.lua_tonumber(L, i);
      case lua.LUA_TSTRING:
        return Uint8Array.from(lua.lua_tostring(L, i));
      case lua.LUA_TTABLE: {
        if (depth > 8) return new Map();
        const m = new Map<LuaOut, LuaOut>();
        const t = lua.lua_absindex(L, i);
        lua.lua_pushnil(L);
        while (lua.lua_next(L, t) !== 0) {
          const key = this.toJs(L, -2, depth + 1);
          const k = key instanceof Uint8Array ? Buffer.from(key).toString('latin1') : key;
          m.set(k, this.toJs(L, -1, depth + 1));
          lua.lua_pop(L, 1);
        }
        return m;
      }
      case lua.LUA_TUSERDATA:
        return (lua.lua_touserdata(L, i) as { obj?: object }).obj ?? {};
      default:
        return {};
    }
  }

  /**
   * Make this VM's compiler refuse, as a firmware built with a smaller LUAI_MAXVARS does, any
   * chunk with a function that has more than `limit` locals active at once: chunks run with
   * {@link runString} and chunks compiled by the Lua functions `load`, `loadstring` (and so
   * `loadfile`/`dofile`/`require` built on them). The error is the one Lua 5.1's parser raises
   * (lparser.c errorlimit): `<chunk>:<line>: main function has more than <limit> local variables`
   * or `... function at line <n> has more than <limit> local variables`. Call it before any Lua
   * code captures `load`.
   * @param limit Locals per function (NodeMCU's Lua 5.1: 50, app/lua/luaconf.h:547).
   */
  setLocalLimit(limit: number): void {
    this.maxLocals = limit;
    const L = this.L;
    for (const name of ['load', 'loadstring']) {
      lua.lua_getglobal(L, to_luastring(name));
      if (lua.lua_type(L, -1) !== lua.LUA_TFUNCTION) {
        lua.lua_pop(L, 1);
        continue;
      }
      const orig = lauxlib.luaL_ref(L, lua.LUA_REGISTRYINDEX);
      lua.lua_pushcfunction(L, (L2: any) => {
        const n = lua.lua_gettop(L2);
        const chunkArg = lua.lua_type(L2, 1) === lua.LUA_TSTRING ? lua.lua_tostring(L2, 1) : null;
        const nameArg = lua.lua_type(L2, 2) === lua.LUA_TSTRING ? lua.lua_tostring(L2, 2) : null;
        lua.lua_rawgeti(L2, lua.LUA_REGISTRYINDEX, orig);
        lua.lua_insert(L2, 1);
        lua.lua_call(L2, n, lua.LUA_MULTRET);
        if (lua.lua_type(L2, 1) !== lua.LUA_TFUNCTION) return lua.lua_gettop(L2);
        const chunkName = nameArg ? Buffer.from(nameArg).toString('latin1') : chunkArg ? Buffer.from(chunkArg).toString('latin1') : '=(load)';
        const msg = this.localLimitError(L2, 1, chunkName);
        if (msg === undefined) return lua.lua_gettop(L2);
        lua.lua_settop(L2, 0);
        lua.lua_pushnil(L2);
        lua.lua_pushstring(L2, to_luastring(msg));
        return 2;
      });
      lua.lua_setglobal(L, to_luastring(name));
    }
  }

  /**
   * The parser's error for the function at `idx` (just loaded as `chunkName`) if it breaks the
   * simulated firmware's local limit ({@link setLocalLimit}, LUAI_MAXVARS), else undefined.
   */
  localLimitError(L: any, idx: number, chunkName: string): string | undefined {
    if (this.maxLocals === undefined) return undefined;
    const cl = lua.lua_topointer(L, idx) as { p?: unknown } | null;
    if (!cl || !cl.p) return undefined;
    const v = findLocalViolation(cl.p, this.maxLocals);
    if (!v) return undefined;
    // luaO_chunkid: '@file' and '=name' print as given, source text as [string "first line..."]
    const c0 = chunkName[0];
    const id = c0 === '@' || c0 === '=' ? chunkName.slice(1) : `[string "${chunkName.split('\n')[0].slice(0, 40)}..."]`;
    const what = v.linedefined === 0 ? 'main function' : `function at line ${v.linedefined}`;
    return `${id}:${v.line}: ${what} has more than ${this.maxLocals} local variables`;
  }

  /** Run a chunk of Lua source. Returns an error message, or undefined on success. */
  runString(source: string | Uint8Array, chunkName: string): string | undefined {
    const L = this.L;
    if (this.budgetDue() && this.overBudget()) return MEMERRMSG;
    const code = typeof source === 'string' ? to_luastring(source) : source;
    const st = lauxlib.luaL_loadbuffer(L, code, null, to_luastring(chunkName));
    if (st !== lua.LUA_OK) {
      const msg = this.popError();
      return msg;
    }
    const limitErr = this.localLimitError(L, -1, chunkName);
    if (limitErr !== undefined) {
      lua.lua_pop(L, 1);
      return limitErr;
    }
    return this.pcall(0, 0);
  }

  /**
   * Call a referenced Lua function (protected). Returns `{ values }` or `{ error }`.
   * Errors are not raised to JS: the caller decides (the firmware would reboot on an error in a callback).
   */
  callRef(ref: LuaRef, ...args: LuaIn[]): { values?: LuaOut[]; error?: string } {
    if (this.closed) return { error: 'VM closed' };
    // over the heap budget: the callback's first allocation fails (checked every `everyMs` ms)
    if (this.budgetDue() && this.overBudget()) return { error: MEMERRMSG };
    const L = this.L;
    const base = lua.lua_gettop(L);
    lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, ref.ref);
    for (const a of args) this.push(L, a);
    const err = this.pcall(args.length, lua.LUA_MULTRET);
    if (err !== undefined) return { error: err };
    const n = lua.lua_gettop(L) - base;
    const values: LuaOut[] = [];
    for (let k = 1; k <= n; k++) values.push(this.toJs(L, base + k));
    lua.lua_settop(L, base);
    return { values };
  }

  /** Call a global function by name (protected). */
  callGlobal(name: string, ...args: LuaIn[]): { values?: LuaOut[]; error?: string } {
    const L = this.L;
    lua.lua_getglobal(L, to_luastring(name));
    const ref = new LuaRef(this, lauxlib.luaL_ref(L, lua.LUA_REGISTRYINDEX), 'function');
    try {
      return this.callRef(ref, ...args);
    } finally {
      ref.release();
    }
  }

  /** Report an error that escaped to the top of a callback (the firmware reboots on these). */
  uncaught(message: string): void {
    this.opts.onUncaughtError?.(message);
  }

  private pcall(nargs: number, nres: number): string | undefined {
    const L = this.L;
    // message handler adds a traceback
    const base = lua.lua_gettop(L) - nargs;
    lua.lua_pushcfunction(L, (L2: any) => {
      const msg = lua.lua_tostring(L2, 1);
      lauxlib.luaL_traceback(L2, L2, msg === null ? to_luastring('(error object is not a string)') : msg, 1);
      return 1;
    });
    lua.lua_insert(L, base);
    let st: number;
    try {
      st = lua.lua_pcall(L, nargs, nres, base);
    } catch (e) {
      // a JS exception escaping fengari (should not happen): clean the stack and report
      lua.lua_settop(L, base - 1);
      return `simulator exception: ${(e as Error).message}`;
    }
    lua.lua_remove(L, base);
    if (st !== lua.LUA_OK) return this.popError();
    return undefined;
  }

  private popError(): string {
    const L = this.L;
    const s = lua.lua_tostring(L, -1);
    lua.lua_pop(L, 1);
    return s === null ? '(non-string error)' : Buffer.from(s).toString('utf8');
  }

  close(): void {
    this.closed = true;
  }
}

/** Decode Lua bytes as text (latin1 keeps every byte). */
export function luaText(v: LuaOut): string | undefined {
  return v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : undefined;
}

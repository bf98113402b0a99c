/**
 * Emulated LuatOS `zbuff` library (a C memory buffer with a cursor), as the
 * simulated Air780E has it. Semantics mirror `components/lfs/../zbuff/luat_lib_zbuff.c`
 * (ZB:<line> below refers to that file, openLuat/LuatOS): one field is both the
 * read/write cursor and the `used` mark (a C union), `toStr` ignores `used`,
 * `query` works on 0..used, numbers pushed as integers wrap to 32 bits like the
 * module's Lua (`LUAT_CONF_VM_64bit` off).
 *
 * Only the parts the agent and `socket` use are emulated (no framebuffer drawing,
 * no pack/unpack); see docs/fidelity-luatos-socket.md.
 */
import fengari from 'fengari';
import { LuaFloat, type LuaArgs, type LuaIn, type LuaLibFn, type LuaVm } from '../lua-vm.js';

const { lua, lauxlib, to_luastring } = fengari as unknown as {
  lua: any;
  lauxlib: any;
  to_luastring: (s: string) => Uint8Array;
};

/** Metatable name of zbuff userdata (`LUAT_ZBUFF_TYPE`, luat_zbuff.h). */
export const ZBUFF_TYPE = 'ZBUFF*';

/** Largest buffer the emulation allocates, bytes; bigger requests fail like a failed malloc. */
const MAX_ALLOC = 16 * 1024 * 1024;

/** One zbuff: `addr` holds `len` bytes; `used` is the cursor/used union. */
export class Zbuff {
  addr: Uint8Array;
  /** Cursor and used mark (one C union field), bytes from the start. */
  used = 0;
  constructor(len: number) {
    this.addr = new Uint8Array(len);
  }
  /** Allocated length in bytes. */
  get len(): number {
    return this.addr.length;
  }
  /** `__zbuff_resize` (ZB: __zbuff_resize): realloc to `n` bytes, `used` clamped. */
  resize(n: number): void {
    const next = new Uint8Array(Math.max(0, n));
    next.set(this.addr.subarray(0, Math.min(this.addr.length, next.length)));
    this.addr = next;
    if (this.used > next.length) this.used = next.length;
  }
}

/** `luaL_checkudata(L, i, "ZBUFF*")`: the zbuff at argument `i`, or the exact Lua error the C code raises. */
export function checkZbuff(args: LuaArgs, i: number): Zbuff {
  const ud = lauxlib.luaL_checkudata(args.L, i, to_luastring(ZBUFF_TYPE)) as { obj?: unknown };
  if (!(ud.obj instanceof Zbuff)) throw new Error('zbuff userdata without a buffer');
  return ud.obj;
}

/** The zbuff at argument `i` if it is one (luaL_testudata), else undefined. */
export function testZbuff(args: LuaArgs, i: number): Zbuff | undefined {
  const ud = lauxlib.luaL_testudata(args.L, i, to_luastring(ZBUFF_TYPE)) as { obj?: unknown } | null;
  return ud && ud.obj instanceof Zbuff ? ud.obj : undefined;
}

/** The bytes `0..used` of a zbuff (what `socket.tx` sends, LS:599). A copy. */
export function zbuffUsedBytes(z: Zbuff): Uint8Array {
  return z.addr.slice(0, z.used);
}

/**
 * Append `data` at `used`, growing the buffer when it is too small (what `socket.rx`
 * does, LS:723: resize to `used + n` when `len - used < n`). Returns the bytes written.
 */
export function zbuffAppend(z: Zbuff, data: Uint8Array): number {
  if (z.len - z.used < data.length) z.resize(z.used + data.length);
  z.addr.set(data, z.used);
  z.used += data.length;
  return data.length;
}

/** C `int % 0x100` stored into a uint8_t. */
const byteOf = (n: number) => ((n % 0x100) + 0x100) & 0xff;

/**
 * Install `zbuff` into `vm`: `zbuff.create` plus the buffer methods
 * (write, read, clear, seek, toStr, len, used, del, query, set, resize, copy, free,
 * readI8..readF64, writeI8..writeF64) and `buf[i]` / `#buf`.
 */
export function installZbuff(vm: LuaVm): void {
  const self = (a: LuaArgs) => checkZbuff(a, 1);

  /** `zbuff.create(len | {w,h,bit}, fill?, type?)` ZB:l_zbuff_create. nothing when len <= 0. */
  const create: LuaLibFn = (a) => {
    let len: number;
    if (a.isTable(1)) {
      const t = a.value(1) as Map<unknown, unknown>;
      const w = Number(t.get(1) ?? 0);
      const h = Number(t.get(2) ?? 0);
      const bit = Number(t.get(3) ?? 0);
      if (![1, 4, 8, 16, 24, 32].includes(bit)) return [];
      len = Math.floor((w * h * bit - 1) / 8) + 1;
    } else {
      len = a.int(1);
    }
    if (len === 0) return [];
    if (len < 0 || len > MAX_ALLOC) return [null, 'memory not enough'];
    const z = new Zbuff(len);
    if (!a.isTable(1)) {
      if (a.isInteger(2)) z.addr.fill(byteOf(a.int(2)));
      else if (a.isString(2) || a.isNumber(2)) {
        const s = a.bytes(2);
        const n = Math.min(s.length, len);
        z.addr.set(s.subarray(0, n));
        z.used = n;
      }
    }
    return [vm.newUserdata(z, ZBUFF_TYPE)];
  };

  const methods: Record<string, LuaLibFn> = {
    /** `buf:write(str | byte, ...)` ZB:l_zbuff_write: at the cursor, clipped to len; returns bytes written. */
    write: (a) => {
      if (a.isInteger(2)) {
        const z = self(a);
        let n = 0;
        while (a.isInteger(2 + n) && z.used < z.len) {
          z.addr[z.used++] = byteOf(a.int(2 + n));
          n++;
        }
        return [n];
      }
      const data = a.bytes(2);
      const z = self(a);
      const n = Math.min(data.length, z.len - z.used);
      z.addr.set(data.subarray(0, n), z.used);
      z.used += n;
      return [n];
    },
    /** `buf:read(n=1)` ZB:l_zbuff_read: from the cursor, which advances. */
    read: (a) => {
      const z = self(a);
      let n = a.optInt(2, 1);
      if (n > z.len - z.used) n = z.len - z.used;
      if (n <= 0) return [new Uint8Array(0)];
      const out = z.addr.slice(z.used, z.used + n);
      z.used += n;
      return [out];
    },
    /** `buf:clear(v=0)`: fill the whole buffer, cursor unchanged. */
    clear: (a) => {
      const z = self(a);
      z.addr.fill(byteOf(a.optInt(2, 0)));
      return [];
    },
    /** `buf:seek(off, whence=SEEK_SET)` ZB:l_zbuff_seek: clamped to 0..len; returns the cursor; nothing for a bad whence. */
    seek: (a) => {
      const z = self(a);
      let off = a.int(2);
      const whence = a.optInt(3, 0);
      if (whence === 1) off = z.used + off;
      else if (whence === 2) off = z.len + off;
      else if (whence !== 0) return [];
      z.used = Math.min(Math.max(off, 0), z.len);
      return [z.used];
    },
    /** `buf:toStr(off=0, len=buf:len())` ZB:l_zbuff_toStr: ignores `used`. */
    toStr: (a) => {
      const z = self(a);
      let start = a.optInt(2, 0);
      if (start > z.len) start = z.len;
      if (start < 0) start = 0;
      let n = a.optInt(3, z.len);
      if (start + n > z.len) n = z.len - start;
      if (n < 0) n = 0;
      return [z.addr.slice(start, start + n)];
    },
    /** `buf:len()`: allocated length. */
    len: (a) => [self(a).len],
    /** `buf:used()`: the cursor/used mark. */
    used: (a) => [self(a).used],
    /** `buf:del(off=0, len=used)` ZB:l_zbuff_del: removes bytes inside 0..used, shifting the rest down. */
    del: (a) => {
      const z = self(a);
      let start = a.optInt(2, 0);
      if (start < 0) {
        start += z.used;
        if (start < 0) return [];
      }
      if (start >= z.used) return [];
      let n = a.optInt(3, z.used) >>> 0;
      if (start + n > z.used) n = z.used - start;
      if (!n) return [];
      if (start + n === z.used) z.used = start;
      else {
        const rest = z.used - n;
        z.addr.copyWithin(start, start + n, z.used);
        z.used = rest;
      }
      return [];
    },
    /** `buf:query(off=0, len=used, bigend?, signed?, float?)` ZB:l_zbuff_query: nil when empty. */
    query: (a) => {
      const z = self(a);
      let start = a.optInt(2, 0);
      if (start < 0) {
        start += z.used;
        if (start < 0) return [null];
      }
      if (start > z.used) start = z.used;
      let n = a.optInt(3, z.used) >>> 0;
      if (start + n > z.used) n = z.used - start;
      if (!n) return [null];
      const p = z.addr.subarray(start, start + n);
      if (a.isBoolean(4) && n <= 8) {
        const big = a.truthy(4);
        const signed = a.isBoolean(5) && a.truthy(5);
        const isFloat = a.isBoolean(6) && a.truthy(6);
        const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
        switch (n) {
          case 1:
            return [signed ? dv.getInt8(0) : dv.getUint8(0)];
          case 2:
            return [signed ? dv.getInt16(0, !big) : dv.getUint16(0, !big)];
          case 4:
            // C copies the raw bytes for floats (native little-endian) and pushes int32 for integers.
            return [isFloat ? new LuaFloat(dv.getFloat32(0, true)) : dv.getInt32(0, !big)];
          case 8:
            // lua_pushinteger(int64) with a 32-bit lua_Integer keeps the low 32 bits.
            return [isFloat ? new LuaFloat(dv.getFloat64(0, true)) : Number(BigInt.asIntN(32, dv.getBigInt64(0, !big)))];
          default:
            return [null];
        }
      }
      return [p.slice()];
    },
    /** `buf:set(start=0, v=0, len=buf:len())`: memset, clipped to the buffer. */
    set: (a) => {
      const z = self(a);
      const v = a.optInt(3, 0) & 0xff;
      const start = Math.max(0, a.optInt(2, 0));
      const n = a.optInt(4, z.len);
      if (start >= z.len) return [];
      z.addr.fill(v, start, Math.min(z.len, start + Math.max(0, n)));
      return [];
    },
    /** `buf:resize(n)`: realloc (only when n is an integer); `used` clamped. */
    resize: (a) => {
      const z = self(a);
      if (a.isInteger(2)) {
        const n = a.int(2);
        if (n >= 0 && n <= MAX_ALLOC) z.resize(n);
      }
      return [];
    },
    /** `buf:copy(start=used, str | zbuff[, off, len] | byte, ...)` ZB:l_zbuff_copy: grows as needed; returns bytes written. */
    copy: (a) => {
      const z = self(a);
      let cur = a.optInt(2, z.used);
      if (cur < 0) {
        cur = z.used + cur;
        if (cur < 0) return [0];
      }
      const put = (data: Uint8Array): number => {
        if (data.length + cur > z.len) z.resize(z.len + data.length + cur);
        z.addr.set(data, cur);
        cur += data.length;
        if (cur > z.used) z.used = cur;
        return data.length;
      };
      if (a.isInteger(3)) {
        const bytes: number[] = [];
        while (a.isInteger(3 + bytes.length)) bytes.push(byteOf(a.int(3 + bytes.length)));
        const out = new Uint8Array(bytes);
        if (cur > z.len) z.resize(cur * 2);
        return [put(out)];
      }
      if (a.isString(3) || a.isNumber(3)) return [put(a.bytes(3))];
      if (a.type(3) === 'userdata') {
        const src = checkZbuff(a, 3);
        const off = a.optInt(4, 0);
        const n = a.optInt(5, src.used);
        return [put(src.addr.slice(off, off + n))];
      }
      return [0];
    },
    /** `buf:free()`: release the memory (len and used become 0). */
    free: (a) => {
      const z = self(a);
      z.addr = new Uint8Array(0);
      z.used = 0;
      return [];
    },
  };

  // readXX / writeXX (native little-endian on the module's ARM core).
  const kinds: Array<[string, number, (dv: DataView) => LuaIn, (dv: DataView, v: number) => void, boolean]> = [
    ['I8', 1, (d) => d.getInt8(0), (d, v) => d.setInt8(0, v), false],
    ['U8', 1, (d) => d.getUint8(0), (d, v) => d.setUint8(0, v), false],
    ['I16', 2, (d) => d.getInt16(0, true), (d, v) => d.setInt16(0, v, true), false],
    ['U16', 2, (d) => d.getUint16(0, true), (d, v) => d.setUint16(0, v, true), false],
    ['I32', 4, (d) => d.getInt32(0, true), (d, v) => d.setInt32(0, v, true), false],
    ['U32', 4, (d) => d.getUint32(0, true) | 0, (d, v) => d.setUint32(0, v >>> 0, true), false],
    ['I64', 8, (d) => Number(BigInt.asIntN(32, d.getBigInt64(0, true))), (d, v) => d.setBigInt64(0, BigInt(v), true), false],
    ['U64', 8, (d) => Number(BigInt.asIntN(32, d.getBigUint64(0, true))), (d, v) => d.setBigInt64(0, BigInt(v), true), false],
    ['F32', 4, (d) => new LuaFloat(d.getFloat32(0, true)), (d, v) => d.setFloat32(0, v, true), true],
    ['F64', 8, (d) => new LuaFloat(d.getFloat64(0, true)), (d, v) => d.setFloat64(0, v, true), true],
  ];
  for (const [name, size, get, put, isFloat] of kinds) {
    methods[`read${name}`] = (a) => {
      const z = self(a);
      if (z.len - z.used < size) return [];
      const dv = new DataView(z.addr.buffer, z.addr.byteOffset + z.used, size);
      z.used += size;
      return [get(dv)];
    };
    methods[`write${name}`] = (a) => {
      const z = self(a);
      if (z.len - z.used < size) return [0];
      const v = isFloat ? a.num(2) : a.int(2);
      put(new DataView(z.addr.buffer, z.addr.byteOffset + z.used, size), v);
      z.used += size;
      return [size];
    };
  }

  vm.registerLib('zbuff', { create }, { SEEK_SET: 0, SEEK_CUR: 1, SEEK_END: 2 });
  vm.defineClass(ZBUFF_TYPE, methods, {
    /** `#buf` = allocated length. */
    __len: (a) => [self(a).len],
    /** `buf[i]` for an index that is not a method name (ZB:l_zbuff_index): nothing past the end. */
    __zindex: (a) => {
      const z = self(a);
      const o = a.int(2);
      if (o < 0 || o >= z.len) return [];
      return [z.addr[o]];
    },
    /** `buf[i] = v` (ZB:l_zbuff_newindex). */
    __newindex: (a) => {
      if (!a.isInteger(2)) return [];
      const z = self(a);
      const o = a.int(2);
      const v = byteOf(a.int(3));
      if (o < 0 || o >= z.len) return [];
      z.addr[o] = v;
      return [];
    },
  });
  // Methods first, then the integer index (the C __index does rawget on the metatable, then indexes).
  const L = vm.L;
  lauxlib.luaL_getmetatable(L, to_luastring(ZBUFF_TYPE));
  lua.lua_pushvalue(L, -1);
  lua.lua_setglobal(L, to_luastring('__zbuff_mt'));
  lua.lua_pop(L, 1);
  const err = vm.runString(
    `local mt = __zbuff_mt
     __zbuff_mt = nil
     local methods, raw = mt.__index, mt.__zindex
     mt.__zindex = nil
     mt.__index = function(b, k)
       local m = methods[k]
       if m ~= nil then return m end
       return raw(b, k)
     end`,
    '=zbuff-init',
  );
  if (err) throw new Error(`zbuff init failed: ${err}`);
}

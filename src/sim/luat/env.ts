/**
 * Emulated core libraries of the simulated Air724UG (RDA8910, legacy Luat, Lua 5.1):
 * `rtos` (message ids, timers, receive, soft watchdog, version, trace), `uart` (the
 * 2 KB RX ring that overwrites its oldest bytes, no length in the RX message),
 * `crypto`, `json`, `pm`, `print`, the flash file system behind `io`, and the Lua 5.1
 * (and integer-only core) rules applied to the fengari VM.
 * Semantics: docs/firmware/luat-socketcore.md (rtos messages, readiness, UART, tasks).
 * Differences from the module: docs/fidelity-luat.md.
 */
import { createHash } from 'node:crypto';
import { LuaRaise, type LuaArgs, type LuaIn, type LuaOut, type LuaVm } from '../lua-vm.js';
import { jsonToLua, luaToJson } from '../lua-json.js';
import { crc32 } from '../checksums.js';
import type { Scheduler } from '../scheduler.js';
import type { UartWire } from '../uart-wire.js';
import { performance } from 'node:perf_hooks';
import { RtosLoop, WAIT_MSG_TIMEOUT, type LuatMsgIds } from './loop.js';

/** `uart.ATC`: the virtual AT channel (owned by ril.lua). */
export const UART_ATC = 0x7f;
/** The debug/host port. */
export const UART_DEBUG = 0x80;
/** `uart.USB`: the USB AT port, a data port after `uart.setup(uart.USB, 0, 0, ...)`. */
export const UART_USB = 0x81;
/** Size of the UART RX ring (`UART_RX_BUF_SIZE`). */
export const UART_RING_BYTES = 2048;

/** Baud rates `uart.setup` accepts on UART1..3 (others raise, as on the 8910). */
const BAUDS = new Set([1200, 2400, 4800, 9600, 14400, 19200, 28800, 38400, 57600, 115200, 230400, 460800, 921600, 1000000, 2000000, 3000000, 4000000]);

/**
 * The UART RX ring: fixed size, and on overflow the OLDEST bytes are overwritten (the
 * ring code of the core), so a host that ignores the window corrupts the stream.
 */
export class UartRing {
  private data = Buffer.alloc(0);
  /** Bytes lost to overflow (overwritten before they were read). */
  overwritten = 0;
  constructor(readonly size = UART_RING_BYTES) {}
  get length(): number {
    return this.data.length;
  }
  /** Append bytes; returns true when the ring went from empty to non-empty. */
  push(chunk: Uint8Array): boolean {
    const wasEmpty = this.data.length === 0;
    let d = Buffer.concat([this.data, Buffer.from(chunk)]);
    if (d.length > this.size) {
      this.overwritten += d.length - this.size;
      d = d.subarray(d.length - this.size);
    }
    this.data = d;
    return wasEmpty && d.length > 0;
  }
  /** Take `n` bytes. */
  take(n: number): Buffer {
    const out = Buffer.from(this.data.subarray(0, Math.max(0, n)));
    this.data = this.data.subarray(out.length);
    return out;
  }
  /** Bytes up to and including the first `\n`, or everything when there is none (a partial line). */
  takeLine(): Buffer {
    const nl = this.data.indexOf(10);
    return this.take(nl < 0 ? this.data.length : nl + 1);
  }
  /** Everything up to (not including) the first whitespace, after skipping leading whitespace. */
  takeWord(): Buffer {
    let i = 0;
    while (i < this.data.length && /\s/.test(String.fromCharCode(this.data[i]))) i++;
    this.take(i);
    let j = 0;
    while (j < this.data.length && !/\s/.test(String.fromCharCode(this.data[j]))) j++;
    return this.take(j);
  }
  clear(): void {
    this.data = Buffer.alloc(0);
  }
}

/** What the environment needs from the simulated module. */
export interface LuatEnvHost {
  vm: LuaVm;
  scheduler: Scheduler;
  wire: UartWire;
  /** UART id wired to the host (1..3 or 129 = uart.USB). */
  uartId: number;
  msgIds: LuatMsgIds;
  /** `rtos.get_version()`. */
  version: string;
  /** Integer-only core: no `math`, no %f/%g, integer `collectgarbage("count")`. */
  integerOnly: boolean;
  /** The flash file system (persists across reboots of one simulated module). */
  flash: Map<string, Buffer>;
  /** Trace port (LuaTools' log over USB), not the RPC UART. */
  log(line: string): void;
  fatal(message: string): void;
  ticks(): number;
  reboot(): void;
}

/** What {@link installLuatEnv} returns: the loop and state tests can observe. */
export interface LuatEnv {
  loop: RtosLoop;
  ring: UartRing;
  /** `pm.wake` tags currently held. */
  wakeTags: Set<string>;
  /** Where trace (print/log) goes: undefined = the USB trace port, else a UART id. */
  traceUart(): number | undefined;
  /** Stop timers and the watchdog of this boot. */
  shutdown(): void;
}

const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');

/** Install rtos/uart/crypto/json/pm/print/__fs and the Lua 5.1 rules. Run SYS_LUA afterwards. */
export function installLuatEnv(h: LuatEnvHost): LuatEnv {
  const { vm, scheduler, wire } = h;
  const loop = new RtosLoop(vm, scheduler, (m) => h.fatal(m));
  const ring = new UartRing();
  const wakeTags = new Set<string>();
  const timers = new Map<number, () => void>();
  let dog: (() => void) | undefined;
  let dogMs = 0;
  let trace: number | undefined;

  applyLua51Rules(vm, h.integerOnly);

  // ---------------------------------------------------------------- print / trace
  const fmt = (a: LuaArgs, from: number) => {
    const parts: string[] = [];
    for (let i = from; i <= a.count; i++) {
      const v = a.value(i);
      parts.push(v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : v === undefined ? 'nil' : typeof v === 'object' ? 'table' : String(v));
    }
    return parts.join('\t');
  };
  const traceLine = (line: string) => {
    if (trace !== undefined && trace === h.uartId && wire.listening) wire.toHost(Buffer.from(line + '\r\n', 'latin1'));
    else if (trace === undefined) h.log(line);
  };
  vm.registerGlobal('print', (a) => traceLine(fmt(a, 1)));

  // ---------------------------------------------------------------- simulator primitives
  vm.registerGlobal('__sim_kick', () => loop.kick());
  vm.registerLib('__fs', {
    read: (a) => {
      const d = h.flash.get(a.str(1));
      return [d ? Uint8Array.from(d) : null];
    },
    write: (a) => {
      h.flash.set(a.str(1), Buffer.from(a.bytes(2)));
      return [true];
    },
    remove: (a) => [h.flash.delete(a.str(1))],
  });

  // ---------------------------------------------------------------- rtos
  const ids = h.msgIds as unknown as Record<string, number>;
  vm.registerLib(
    'rtos',
    {
      receive: () => {
        const m = loop.take();
        if (!m) return [WAIT_MSG_TIMEOUT];
        if ('table' in m) return [m.table];
        return [m.id, m.param ?? null];
      },
      timer_start: (a) => {
        const id = a.int(1);
        const ms = a.int(2);
        timers.get(id)?.();
        timers.set(
          id,
          scheduler.after(Math.max(ms, 5), () => {
            timers.delete(id);
            loop.post({ id: h.msgIds.MSG_TIMER, param: id });
          }),
        );
        return [1];
      },
      timer_stop: (a) => {
        const id = a.int(1);
        timers.get(id)?.();
        timers.delete(id);
        return [1];
      },
      get_version: () => [h.version],
      get_build_time: () => ['Nov 20 2026 12:00:00'],
      poweron_reason: () => [0],
      poweron: () => [],
      set_lua_info: () => [],
      // 8910 ticks are 1/16 ms (patch.lua: os.clockms() = rtos.tick() / 16)
      tick: () => [(h.ticks() * 16) | 0],
      restart: () => {
        scheduler.post(() => h.reboot());
        return [];
      },
      openSoftDog: (a) => {
        dogMs = a.optInt(1, 60000);
        armDog();
        return [];
      },
      eatSoftDog: () => {
        if (dog) armDog();
        return [];
      },
      closeSoftDog: () => {
        dog?.();
        dog = undefined;
        return [];
      },
      set_trace: (a) => {
        const on = a.optInt(1, 0);
        trace = on === 1 && !a.isNil(2) ? a.int(2) : undefined;
        return [];
      },
      get_fs_free_size: () => [1048576 - Array.from(h.flash.values()).reduce((n, b) => n + b.length, 0)],
      get_fs_total_size: () => [1048576],
    },
    { ...ids, WAIT_MSG_TIMEOUT, INF_TIMEOUT: -1, POWERON_KEY: 0, POWERON_CHARGER: 1 },
  );
  function armDog(): void {
    dog?.();
    dog = scheduler.after(dogMs, () => {
      dog = undefined;
      h.log('soft watchdog expired: the Lua VM was blocked or stopped feeding it, rebooting');
      h.fatal('soft watchdog expired');
    });
  }

  // ---------------------------------------------------------------- uart
  const rxMode = new Map<number, number>(); // id -> msgmode
  const txDone = new Set<number>();
  let rpcOpen = false;
  // RX timing (docs/firmware/luat-socketcore.md, UART): the
  // 8910 core moves received bytes into the 2 KB ring (UART_RX_BUF_SIZE, the oldest bytes overwritten
  // on overflow) and posts MSG_UART_RXDATA (uart id, NO length) only when the ring goes from empty to
  // non-empty; Lua must read until uart.read returns "". So the bytes go into the ring as they arrive
  // and the message is queued for the next turn of the rtos loop (setImmediate): no idle timeout and
  // no fixed delay is added to a receive.
  wire.onReceive = () => {
    if (!rpcOpen) return;
    const chunk = wire.read(wire.buffered);
    if (chunk.length === 0) return;
    if (ring.push(chunk) && rxMode.get(h.uartId) !== 1) loop.post({ id: h.msgIds.MSG_UART_RXDATA, param: h.uartId });
  };
  const validId = (id: number) => id === 1 || id === 2 || id === 3 || id === UART_ATC || id === UART_DEBUG || id === UART_USB;
  vm.registerLib(
    'uart',
    {
      setup: (a) => {
        const id = a.int(1);
        const baud = a.int(2);
        const dataBits = a.int(3);
        const parity = a.int(4);
        const stop = a.int(5);
        const msgmode = a.optInt(6, 0);
        const txReport = a.optInt(7, 0);
        if (!validId(id)) throw new LuaRaise(`uart.setup: uart id ${id} does not exist`);
        if (id >= 1 && id <= 3 && !BAUDS.has(baud)) throw new LuaRaise(`uart.setup: baud ${baud} is not supported`);
        rxMode.set(id, msgmode);
        if (txReport === 1) txDone.add(id);
        else txDone.delete(id);
        if (id === h.uartId) {
          rpcOpen = true;
          ring.clear();
          // the shared wire only relays: bytes move at once into this ring (which overwrites)
          wire.rxBufferSize = 1 << 30;
          wire.listening = true;
          // the simulated line follows the module's own settings (l_uart.c uart_setup hands them to
          // platform_uart_setup); uart.USB is a USB CDC port: no baud, no pacing
          wire.paced = id !== UART_USB;
          if (id !== UART_USB) wire.moduleLine = { baud, dataBits, parity: parity !== 2, stopBits: stop === 2 ? 2 : stop === 1 ? 1.5 : 1 };
        }
        return [baud];
      },
      close: (a) => {
        const id = a.int(1);
        if (id === h.uartId) {
          rpcOpen = false;
          wire.listening = false;
          wire.clear();
          ring.clear();
        }
        return [];
      },
      read: (a) => {
        const id = a.int(1);
        if (id !== h.uartId || !rpcOpen) return [''];
        if (a.isNumber(2)) return [Uint8Array.from(ring.take(a.int(2)))];
        const f = a.isNil(2) ? '*l' : a.str(2);
        if (f.startsWith('*l')) return [Uint8Array.from(ring.takeLine())];
        if (f.startsWith('*s')) return [Uint8Array.from(ring.takeWord())];
        if (f.startsWith('*n')) {
          const w = ring.takeWord().toString('latin1');
          const n = Number(w);
          return [w === '' || Number.isNaN(n) ? null : n];
        }
        throw new LuaRaise(`uart.read: invalid format ${f}`);
      },
      write: (a) => {
        const id = a.int(1);
        const parts: Buffer[] = [];
        for (let i = 2; i <= a.count; i++) {
          if (a.isNumber(i)) {
            // l_uart.c uart_write: a number outside 0..255 is luaL_error "invalid number"
            const n = a.int(i);
            if (n < 0 || n > 255) throw new LuaRaise('invalid number');
            parts.push(Buffer.from([n]));
          } else {
            // l_uart.c uart_write passes each string's size_t length to the platform's send_buff,
            // whose length is a u16 (CSDK commit 9fa34023, app/elua/platform/openat/src/platform_uart.c,
            // platform_s_uart_send_buff(unsigned id, const u8 *buff, u16 len) -> uart_phy_write(...,
            // uint16 length)): a string over 65535 bytes is cut to len & 0xffff, and that count is
            // what uart.write adds to its result (issue #8). What the core's write_uart does when the
            // app writes faster than the line drains is closed source: here every byte is queued.
            const b = a.bytes(i);
            parts.push(Buffer.from(b.subarray(0, b.length & 0xffff)));
          }
        }
        const data = Buffer.concat(parts);
        if (id === h.uartId && rpcOpen) {
          wire.toHost(data);
          // MSG_UART_TX_DONE when the bytes are out on the (paced) line
          if (txDone.has(id)) {
            const wait = wire.txFreeAt - performance.now();
            if (wait >= 1) scheduler.after(wait, () => loop.post({ id: h.msgIds.MSG_UART_TX_DONE, param: id }));
            else loop.post({ id: h.msgIds.MSG_UART_TX_DONE, param: id });
          }
        }
        return [data.length];
      },
      set_rs485_oe: () => [],
    },
    { ATC: UART_ATC, USB: UART_USB, PAR_NONE: 2, PAR_EVEN: 0, PAR_ODD: 1, STOP_1: 0, STOP_1_5: 1, STOP_2: 2 },
  );

  // ---------------------------------------------------------------- crypto (the length arguments are required: crypto.c)
  const lenArg = (a: LuaArgs, data: Uint8Array, i: number) => data.subarray(0, Math.max(0, Math.min(a.int(i), data.length)));
  vm.registerLib('crypto', {
    crc16: (a) => {
      const method = a.str(1).toUpperCase();
      const data = a.bytes(2);
      const p = CRC16[method];
      if (method === 'USER-DEFINED') {
        return [crc16(data, a.int(3), a.int(4), a.int(5), a.int(6) === 1, a.int(7) === 1)];
      }
      if (!p) throw new LuaRaise(`crypto.crc16: unknown method ${method}`);
      return [crc16(data, ...p)];
    },
    crc16_modbus: (a) => [crc16(lenArg(a, a.bytes(1), 2), ...CRC16.MODBUS)],
    crc32: (a) => [crc32(lenArg(a, a.bytes(1), 2)) | 0],
    crc8: (a) => [crc8(lenArg(a, a.bytes(1), 2))],
    md5: (a) => [createHash('md5').update(lenArg(a, a.bytes(1), 2)).digest('hex').toUpperCase()],
    sha1: (a) => [createHash('sha1').update(lenArg(a, a.bytes(1), 2)).digest('hex').toUpperCase()],
    sha256: (a) => [createHash('sha256').update(a.bytes(1)).digest('hex').toUpperCase()],
    base64_encode: (a) => [Buffer.from(lenArg(a, a.bytes(1), 2)).toString('base64')],
    base64_decode: (a) => {
      const s = text(lenArg(a, a.bytes(1), 2));
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 === 1) return [''];
      return [Uint8Array.from(Buffer.from(s, 'base64'))];
    },
  });

  // ---------------------------------------------------------------- json (lua-cjson; patch.lua: decode returns (t, ok, err) and never throws)
  vm.registerLib(
    'json',
    {
      encode: (a) => {
        try {
          return [JSON.stringify(luaToJson(a.value(1)))];
        } catch (e) {
          throw new LuaRaise(`Cannot serialise: ${(e as Error).message}`);
        }
      },
      decode: (a) => {
        try {
          return [jsonToLua(JSON.parse(a.str(1)), { integerOnly: h.integerOnly }), true, null];
        } catch (e) {
          return [null, false, (e as Error).message];
        }
      },
    },
    { null: null },
  );

  // ---------------------------------------------------------------- pm
  vm.registerLib('pm', {
    wake: (a) => {
      wakeTags.add(a.str(1));
      return [];
    },
    sleep: (a) => {
      wakeTags.delete(a.str(1));
      return [];
    },
    isSleep: (a) => (a.isNil(1) ? [wakeTags.size === 0] : [!wakeTags.has(a.str(1))]),
  });

  return {
    loop,
    ring,
    wakeTags,
    traceUart: () => trace,
    shutdown: () => {
      // a halted core writes nothing more (e.g. Lua code still unwinding after an assert)
      rpcOpen = false;
      loop.stop();
      for (const c of timers.values()) c();
      timers.clear();
      dog?.();
      dog = undefined;
      wire.onReceive = undefined;
    },
  };
}

/**
 * Make the fengari (Lua 5.3) VM follow Lua 5.1 rules as far as a library can: `_VERSION`,
 * `unpack`/`loadstring`/`table.getn`/`table.maxn`/`math.pow`/`math.mod` present, the 5.2+/5.3
 * functions absent (`table.unpack/pack/move`, `string.pack/unpack`, `utf8`, `math.type`,
 * `math.tointeger`, `math.maxinteger`, `load` of a string). Integer-only cores: no `math`, no
 * float conversions in `string.format`, `tonumber` yields only integers, `collectgarbage("count")`
 * an integer. Syntax (`//`, `&`, `goto`) and the truncating `/` cannot be emulated here: the tests
 * check them with `luac5.1 -p` and a source scan (docs/fidelity-luat.md).
 */
export function applyLua51Rules(vm: LuaVm, integerOnly: boolean): void {
  const err = vm.runString(
    String.raw`
    local integerOnly = ${integerOnly ? 'true' : 'false'}
    _VERSION = "Lua 5.1"
    unpack = table.unpack
    local rawload = load
    loadstring = function(s, name) return rawload(s, name) end
    load = function(f, name)
      if type(f) ~= "function" then error("bad argument #1 to 'load' (function expected, got " .. type(f) .. ")", 2) end
      return rawload(f, name)
    end
    table.getn = function(t) return #t end
    table.maxn = function(t)
      local n = 0
      for k in pairs(t) do if type(k) == "number" and k > n then n = k end end
      return n
    end
    table.unpack, table.pack, table.move = nil, nil, nil
    string.pack, string.unpack, string.packsize = nil, nil, nil
    utf8 = nil
    package.loaded.utf8 = nil
    coroutine.isyieldable = nil
    math.type, math.tointeger, math.ult, math.maxinteger, math.mininteger = nil, nil, nil, nil, nil
    math.pow = function(x, y) return x ^ y end
    math.mod = math.fmod
    math.log10 = function(x) return math.log(x, 10) end
    if integerOnly then
      math = nil
      package.loaded.math = nil
      local rawfmt, sfind = string.format, string.find
      string.format = function(f, ...)
        if type(f) == "string" and sfind(f, "%%[-+ #0]*%d*%.?%d*[eEfgGaA]") then
          error("bad argument #1 to 'format' (invalid option: no float conversions on an integer-only core)", 2)
        end
        return rawfmt(f, ...)
      end
      local rawtonumber = tonumber
      tonumber = function(v, base)
        local n
        if base == nil then n = rawtonumber(v) else n = rawtonumber(v, base) end
        if n ~= nil and n ~= n - n % 1 then return nil end
        return n
      end
      local rawgc = collectgarbage
      collectgarbage = function(opt, ...)
        local r = rawgc(opt, ...)
        if opt == "count" and type(r) == "number" then return r - r % 1 end
        return r
      end
    end`,
    '=lua51-rules',
  );
  if (err !== undefined) throw new Error(`Lua 5.1 rules failed: ${err}`);
}

/** CRC-16 parameter sets of `crypto.crc16` (platform/src/crc.c): poly, init, xorout, refin, refout. */
const CRC16: Record<string, [number, number, number, boolean, boolean]> = {
  IBM: [0x8005, 0x0000, 0x0000, true, true],
  MAXIM: [0x8005, 0x0000, 0xffff, true, true],
  USB: [0x8005, 0xffff, 0xffff, true, true],
  MODBUS: [0x8005, 0xffff, 0x0000, true, true],
  CCITT: [0x1021, 0x0000, 0x0000, true, true],
  'CCITT-FALSE': [0x1021, 0xffff, 0x0000, false, false],
  X25: [0x1021, 0xffff, 0xffff, true, true],
  XMODEM: [0x1021, 0x0000, 0x0000, false, false],
  DNP: [0x3d65, 0x0000, 0xffff, true, true],
};

function reflect(v: number, bits: number): number {
  let r = 0;
  for (let i = 0; i < bits; i++) if (v & (1 << i)) r |= 1 << (bits - 1 - i);
  return r;
}

/** Generic CRC-16. */
export function crc16(data: Uint8Array, poly: number, init: number, xorout: number, refin: boolean, refout: boolean): number {
  let crc = init & 0xffff;
  for (const b0 of data) {
    const b = refin ? reflect(b0, 8) : b0;
    crc ^= b << 8;
    for (let k = 0; k < 8; k++) crc = crc & 0x8000 ? ((crc << 1) ^ poly) & 0xffff : (crc << 1) & 0xffff;
  }
  if (refout) crc = reflect(crc, 16);
  return (crc ^ xorout) & 0xffff;
}

function crc8(data: Uint8Array): number {
  let c = 0;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 0x80 ? ((c << 1) ^ 0x07) & 0xff : (c << 1) & 0xff;
  }
  return c;
}


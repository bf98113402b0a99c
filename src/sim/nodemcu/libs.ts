/**
 * Emulated NodeMCU modules other than `net`: uart, node (+ node.task, pipe), tmr,
 * bit, file (SPIFFS in memory), wifi (station status), optional encoder, and the
 * base functions that touch the firmware (print, dofile, loadfile, require).
 * Semantics: docs/firmware/nodemcu.md (other agent-side APIs).
 */
import { LuaFloat, LuaRaise, LuaRef as LuaRefClass, markFlash, type LuaArgs, type LuaIn, type LuaRef } from '../lua-vm.js';
import { readAgentBundle, readLazyAgentFiles } from '../../util/repo-root.js';
import type { NodemcuSimOptions } from './options.js';
import fengari from 'fengari';

const { lua: flua, lauxlib: flauxlib, to_luastring: fto } = fengari as unknown as { lua: any; lauxlib: any; to_luastring: (s: string) => Uint8Array };
import type { Esp } from './firmware.js';
import { badArg, checkBytes, isNumberLike, isStringLike, latin1, newUserdataRef, toInt, typeName } from './lua-util.js';

/** Firmware version the emulated `node.info` reports. */
export const SIM_FW = { major: 3, minor: 0, revision: 0, branch: 'release', commit: '36cbf9f' };

/** Modules of the default build (app/include/user_modules.h), plus pipe. */
export const DEFAULT_MODULES = ['adc', 'bit', 'dht', 'file', 'gpio', 'i2c', 'mqtt', 'net', 'node', 'ow', 'pipe', 'spi', 'tmr', 'uart', 'wifi'];

const i32 = (n: number) => n | 0;

/** Rates NodeMCU's platform_uart_setup accepts (app/platform/platform.c); any other runs at 9600. */
export const UART_RATES = new Set([300, 600, 1200, 2400, 4800, 9600, 19200, 31250, 38400, 57600, 74880, 115200, 230400, 256000, 460800, 921600, 1843200, 3686400]);

export function installUart(esp: Esp): void {
  const { vm } = esp;
  const baud = { rate: 115200, databits: 8, parity: 0, stopbits: 1 };
  vm.registerLib(
    'uart',
    {
      setup: (a) => {
        const id = a.int(1);
        if (id !== 0 && id !== 1) throw new LuaRaise(`uart ${id} does not exist`);
        const rate = a.int(2);
        baud.rate = rate;
        baud.databits = a.optInt(3, 8);
        baud.parity = a.optInt(4, 0);
        baud.stopbits = a.optInt(5, 1);
        if (id === 0) {
          // platform_uart_setup -> uart_setup -> uart_config resets the RX and TX FIFOs after it set
          // the divisor (nodemcu-firmware app/driver/uart.c:61 and 69-71 at 0069f00): what the FIFO
          // still held is lost, not sent at the new rate. The Lua code reaches this call only once
          // uart_tx_one_char let go of its last write (all but TX_FIFO_SPIN_AT bytes out: busyUntil).
          esp.resetTxFifo();
          // the simulated line follows: an unsupported rate runs at 9600 (app/platform/platform.c
          // platform_uart_setup, `default: UartDev.baut_rate = BIT_RATE_9600`); stop bits 1, 2, 3 = 1.5
          esp.wire.moduleLine = {
            baud: UART_RATES.has(rate) ? rate : 9600,
            dataBits: baud.databits >= 5 && baud.databits <= 8 ? baud.databits : 8,
            parity: baud.parity !== 0,
            stopBits: baud.stopbits === 2 ? 2 : baud.stopbits === 3 ? 1.5 : 1,
          };
        }
        if (id === 0 && !a.isNil(6)) esp.setEcho(a.int(6) !== 0);
        return [rate]; // the requested rate, even when the driver fell back to 9600
      },
      getconfig: (a) => {
        const id = a.int(1);
        if (id !== 0 && id !== 1) throw new LuaRaise(`uart ${id} does not exist`);
        return [baud.rate, baud.databits, baud.parity, baud.stopbits];
      },
      on: (a) => {
        const method = a.str(1);
        if (method !== 'data') throw new LuaRaise('method not supported');
        let stack = 2;
        let count = 0;
        let end: number | undefined;
        if (a.isNumber(stack)) {
          count = a.int(stack++);
          if (count < 0 || count >= 256) throw new LuaRaise('wrong arg range');
        } else if (a.isString(stack)) {
          const s = a.bytes(stack++);
          if (s.length !== 1) throw new LuaRaise('wrong arg range');
          end = s[0];
        }
        if (a.isFunction(stack)) {
          const fn = a.fnRef(stack);
          const ri = stack + 1;
          const runInput = !(a.isNumber(ri) && toInt(a, ri) === 0);
          esp.setDataMode(fn, count, end, runInput);
        } else {
          esp.clearDataMode(); // unregister and restore the interpreter
        }
      },
      write: (a) => {
        const id = a.int(1);
        const parts: Buffer[] = [];
        for (let i = 2; i <= a.count; i++) {
          if (a.isNumber(i)) {
            const n = a.int(i);
            if (n < 0 || n > 255) throw new LuaRaise('invalid number');
            parts.push(Buffer.from([n]));
          } else parts.push(Buffer.from(checkBytes(a, i, 'write')));
        }
        const data = Buffer.concat(parts);
        if (id === 0) esp.uartTx(data);
        else if (id === 1) esp.log(`uart1: ${data.toString('latin1')}`);
        else throw new LuaRaise(`uart ${id} does not exist`);
      },
      alt: () => {},
    },
    { PARITY_NONE: 0, PARITY_EVEN: 1, PARITY_ODD: 2, STOPBITS_1: 1, STOPBITS_1_5: 3, STOPBITS_2: 2 },
  );
}

export function installNode(esp: Esp, chipId: number, release: string, modules: string[]): void {
  const { vm, sched } = esp;
  vm.defineClass('pipe.obj', {
    read: (a) => {
      const spec = a.isNumber(2) ? a.int(2) : a.isString(2) ? a.str(2) : undefined;
      const b = esp.pipeRead(spec);
      return [b ? Uint8Array.from(b) : null];
    },
  });
  esp.setPipe(newUserdataRef(vm, vm.L, {}, 'pipe.obj'));
  const heapBase = esp.opts.heapBytes ?? 44000;
  // system_get_free_heap_size(): the free heap at boot less the Lua heap (lua-vm.ts estimateLua51Heap)
  const luaBytes = () => vm.heapUsed();
  vm.registerLib('node', {
    heap: () => [Math.max(0, heapBase - luaBytes())],
    chipid: () => [chipId],
    flashid: () => [1458400],
    restart: () => esp.restart(),
    random: (a) => {
      if (a.count === 0) return [new LuaFloat(Math.random())];
      const lo = a.count >= 2 ? a.int(1) : 1;
      const hi = a.count >= 2 ? a.int(2) : a.int(1);
      if (hi < lo) throw badArg(2, 'random', 'interval is empty');
      return [lo + Math.floor(Math.random() * (hi - lo + 1))];
    },
    info: (a) => {
      if (a.count === 0) {
        esp.console('node.info() is deprecated: use node.info("hw") etc.\n');
        return [SIM_FW.major, SIM_FW.minor, SIM_FW.revision, chipId, 1458400, 4096, 0, 40000000];
      }
      const group = a.str(1);
      switch (group) {
        case 'hw':
          return [{ chip_id: chipId, flash_id: 1458400, flash_size: 4096, flash_mode: 0, flash_speed: 40000000 }];
        case 'sw_version':
          return [
            {
              git_branch: SIM_FW.branch,
              git_commit_id: SIM_FW.commit,
              git_release: release,
              git_commit_dts: '202402250804',
              node_version_major: SIM_FW.major,
              node_version_minor: SIM_FW.minor,
              node_version_revision: SIM_FW.revision,
            },
          ];
        case 'build_config':
          // The simulator models the LUA=53 build, whose numbers are 32-bit integers and 32-bit
          // floats: node.info reports that as number_type "float" (issue 8 part C5;
          // docs/firmware/nodemcu.md). "integer" is an integer-only build (LUA_NUMBER_INTEGRAL,
          // Lua 5.1 only); a "Lua 5.3 + integer" build does not exist. The stored node.c versions
          // predate node.info("build_config"), so no line of it was read.
          return [{ ssl: false, lfs_size: 0, modules: modules.join(','), number_type: 'float', esp_timers: 7 }];
        case 'lfs':
          return [{ lfs_size: 0 }];
        default:
          throw new LuaRaise('invalid option');
      }
    },
    setonerror: (a) => {
      esp.onError?.release();
      esp.onError = a.isFunction(1) ? a.fnRef(1) : undefined;
    },
    output: (a) => {
      if (a.isFunction(1)) esp.setOutput(a.fnRef(1), !(a.isNumber(2) && a.int(2) === 0));
      else esp.setOutput(undefined, true);
    },
    input: (a) => esp.input(latin1(checkBytes(a, 1, 'input'))),
    bootreason: () => [2, 6],
    egc: () => {},
  });
  vm.registerLib('__nm_task', {
    post: (a) => {
      const fi = a.isFunction(1) ? 1 : 2;
      if (!a.isFunction(fi)) throw badArg(fi, 'post', 'function expected');
      const fn = a.fnRef(fi);
      sched.post(() => {
        esp.protectedCall(fn);
        fn.release();
      });
    },
  }, { LOW_PRIORITY: 0, MEDIUM_PRIORITY: 1, HIGH_PRIORITY: 2 });
  vm.runString('node.task = __nm_task __nm_task = nil', '=node.task');
}

interface Timer {
  ms: number;
  mode: number;
  fn?: LuaRef;
  running: boolean;
  cancel?: () => void;
  ud?: LuaRef;
}

const MAX_MS = 6870947;

export function installTmr(esp: Esp): void {
  const { vm, sched } = esp;
  const timerOf = (a: LuaArgs): Timer => {
    const t = a.userdata<Timer>(1);
    if (!t || !('mode' in t)) throw badArg(1, 'tmr', 'tmr.timer expected');
    return t;
  };
  const arm = (t: Timer) => {
    t.cancel?.();
    t.running = true;
    t.cancel = sched.afterFromVm(t.ms, () => {
      t.cancel = undefined;
      if (!t.fn) return;
      const fn = t.fn;
      if (t.mode === 2) arm(t); // ALARM_AUTO repeats
      else {
        t.running = false;
        if (t.mode === 0) t.fn = undefined; // ALARM_SINGLE unregisters itself
      }
      esp.protectedCall(fn, t.ud);
      if (t.mode === 0) fn.release();
    });
  };
  const register = (a: LuaArgs, t: Timer) => {
    const ms = a.isNumber(2) ? a.int(2) : -1;
    if (ms < 1 || ms > MAX_MS) throw badArg(1, 'register', 'Range: 1-6870947');
    const mode = a.isNumber(3) ? a.int(3) : -1;
    if (mode < 0 || mode > 2) throw badArg(2, 'register', 'Invalid mode');
    if (!a.isFunction(4)) throw badArg(3, 'register', 'Must be function');
    t.cancel?.();
    t.running = false;
    t.fn?.release();
    t.ms = ms;
    t.mode = mode;
    t.fn = a.fnRef(4);
  };
  vm.defineClass('tmr.timer', {
    register: (a) => void register(a, timerOf(a)),
    alarm: (a) => {
      const t = timerOf(a);
      register(a, t);
      arm(t);
      return [true];
    },
    start: (a) => {
      const t = timerOf(a);
      if (!t.fn) return [false];
      if (!t.running) arm(t);
      return [true];
    },
    stop: (a) => {
      const t = timerOf(a);
      const was = t.running;
      t.cancel?.();
      t.cancel = undefined;
      t.running = false;
      return [was];
    },
    unregister: (a) => {
      const t = timerOf(a);
      t.cancel?.();
      t.running = false;
      t.fn?.release();
      t.fn = undefined;
    },
    interval: (a) => {
      const t = timerOf(a);
      const ms = a.int(2);
      if (ms < 1 || ms > MAX_MS) throw badArg(1, 'interval', 'Range: 1-6870947');
      t.ms = ms;
      if (t.running) arm(t);
    },
    state: (a) => {
      const t = timerOf(a);
      if (!t.fn) return [null];
      return [t.running, t.mode];
    },
  });
  vm.registerLib(
    'tmr',
    {
      create: (a) => {
        const t: Timer = { ms: 0, mode: 0, running: false };
        t.ud = newUserdataRef(vm, a.L, t, 'tmr.timer');
        return [t.ud];
      },
      now: () => [Math.floor(esp.ticks() * 1000) % 2147483648],
      time: () => [Math.floor(esp.ticks() / 1000)],
      delay: () => {},
      wdclr: () => {},
    },
    { ALARM_SINGLE: 0, ALARM_SEMI: 1, ALARM_AUTO: 2 },
  );
}

export function installBit(esp: Esp): void {
  const n = (a: LuaArgs, i: number) => {
    if (!isNumberLike(a, i)) throw badArg(i, 'bit', `number expected, got ${typeName(a, i)}`);
    return toInt(a, i) | 0;
  };
  const fold = (f: (x: number, y: number) => number) => (a: LuaArgs) => {
    let r = n(a, 1);
    for (let i = 2; i <= a.count; i++) r = f(r, n(a, i));
    return [i32(r)];
  };
  esp.vm.registerLib('bit', {
    bnot: (a) => [i32(~n(a, 1))],
    band: fold((x, y) => x & y),
    bor: fold((x, y) => x | y),
    bxor: fold((x, y) => x ^ y),
    lshift: (a) => [i32(n(a, 1) << n(a, 2))],
    rshift: (a) => [i32(n(a, 1) >>> n(a, 2))],
    arshift: (a) => [i32(n(a, 1) >> n(a, 2))],
    bit: (a) => [i32(1 << n(a, 1))],
    set: (a) => {
      let v = n(a, 1);
      for (let i = 2; i <= a.count; i++) v |= 1 << n(a, i);
      return [i32(v)];
    },
    clear: (a) => {
      let v = n(a, 1);
      for (let i = 2; i <= a.count; i++) v &= ~(1 << n(a, i));
      return [i32(v)];
    },
    isset: (a) => [(n(a, 1) & (1 << n(a, 2))) !== 0],
    isclear: (a) => [(n(a, 1) & (1 << n(a, 2))) === 0],
  });
}

export function installEncoder(esp: Esp): void {
  esp.vm.registerLib('encoder', {
    toBase64: (a) => [Buffer.from(checkBytes(a, 1, 'toBase64')).toString('base64')],
    fromBase64: (a) => {
      const s = latin1(checkBytes(a, 1, 'fromBase64'));
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw new LuaRaise('Invalid base64 string');
      return [Uint8Array.from(Buffer.from(s, 'base64'))];
    },
    toHex: (a) => [Buffer.from(checkBytes(a, 1, 'toHex')).toString('hex')],
    fromHex: (a) => {
      const s = latin1(checkBytes(a, 1, 'fromHex'));
      if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new LuaRaise('Invalid hex string');
      return [Uint8Array.from(Buffer.from(s, 'hex'))];
    },
  });
}

export function installWifi(esp: Esp): void {
  const net = esp.opts.network ?? {};
  let mode = 1;
  const status = () => net.wifiStatus ?? 5;
  esp.vm.registerLib(
    '__nm_sta',
    {
      status: () => [status()],
      getip: () => (status() === 5 ? [net.ip ?? '127.0.0.1', net.netmask ?? '255.0.0.0', net.gateway ?? '127.0.0.1'] : [null]),
      getmac: () => [net.mac ?? '5c:cf:7f:00:00:01'],
      getrssi: () => (status() === 5 ? [-52] : [null]),
    },
    { },
  );
  esp.vm.registerLib('__nm_ap', { getip: () => [null], getmac: () => [(net.mac ?? '5c:cf:7f:00:00:01').replace(/^5c/, '5e')] });
  esp.vm.registerLib(
    'wifi',
    {
      getmode: () => [mode],
      setmode: (a) => {
        mode = a.int(1);
        return [mode];
      },
    },
    { NULLMODE: 0, STATION: 1, SOFTAP: 2, STATIONAP: 3, STA_IDLE: 0, STA_CONNECTING: 1, STA_WRONGPWD: 2, STA_APNOTFOUND: 3, STA_FAIL: 4, STA_GOTIP: 5 },
  );
  esp.vm.runString('wifi.sta = __nm_sta wifi.ap = __nm_ap __nm_sta = nil __nm_ap = nil', '=wifi');
}

interface OpenFile {
  name: string;
  data: Buffer;
  pos: number;
  read: boolean;
  write: boolean;
  append: boolean;
  closed: boolean;
}

const SPIFFS_TOTAL = 3449675;
const MAX_OPEN = 4;

/** The SPIFFS file system (`file` module): names up to 31 characters, 4 open files, writes land on flush/close. */
export function installFile(esp: Esp): void {
  const { vm, files } = esp;
  const open = new Set<OpenFile>();
  let current: OpenFile | undefined;
  const checkName = (a: LuaArgs, i: number, fn: string) => {
    const name = latin1(checkBytes(a, i, fn));
    if (name.length > 31 || name.length === 0) throw new LuaRaise('filename invalid');
    return name;
  };
  const commit = (f: OpenFile) => {
    if (f.write && !f.closed) files.set(f.name, Buffer.from(f.data));
  };
  const close = (f: OpenFile) => {
    if (f.closed) return;
    commit(f);
    f.closed = true;
    open.delete(f);
    if (current === f) current = undefined;
  };
  const readFrom = (f: OpenFile, a: LuaArgs, i: number): LuaIn => {
    if (!f.read) return null;
    let n = 1024;
    let stop: number | undefined;
    if (a.isNumber(i)) n = Math.min(Math.max(a.int(i), 0), 1024);
    else if (isStringLike(a, i)) stop = a.bytes(i)[0];
    if (f.pos >= f.data.length) return null;
    let end = Math.min(f.data.length, f.pos + n);
    if (stop !== undefined) {
      const at = f.data.indexOf(stop, f.pos);
      end = at >= 0 && at < f.pos + 1024 ? at + 1 : Math.min(f.data.length, f.pos + 1024);
    }
    const out = f.data.subarray(f.pos, end);
    f.pos = end;
    return Uint8Array.from(out);
  };
  const writeTo = (f: OpenFile, data: Uint8Array): LuaIn => {
    if (!f.write || f.closed) return null;
    if (f.append) f.pos = f.data.length;
    const before = f.data.subarray(0, f.pos);
    const after = f.data.subarray(Math.min(f.data.length, f.pos + data.length));
    f.data = Buffer.concat([before, Buffer.from(data), after]);
    f.pos += data.length;
    return true;
  };
  const seek = (f: OpenFile, a: LuaArgs, i: number): LuaIn => {
    const whence = a.optStr(i) ?? 'cur';
    const off = a.isNumber(i + 1) ? a.int(i + 1) : 0;
    const base = whence === 'set' ? 0 : whence === 'end' ? f.data.length : f.pos;
    const p = base + off;
    if (p < 0) return null;
    f.pos = p;
    return p;
  };
  const self = (a: LuaArgs): OpenFile => {
    const f = a.userdata<OpenFile>(1);
    if (!f || !('pos' in f)) throw badArg(1, 'file', 'file.obj expected');
    if (f.closed) throw new LuaRaise('file closed');
    return f;
  };
  const cur = (): OpenFile => {
    if (!current || current.closed) throw new LuaRaise('open a file first');
    return current;
  };
  vm.defineClass('file.obj', {
    close: (a) => {
      const f = a.userdata<OpenFile>(1);
      if (f && 'pos' in f) close(f);
    },
    read: (a) => [readFrom(self(a), a, 2)],
    readline: (a) => {
      const f = self(a);
      if (!f.read || f.pos >= f.data.length) return [null];
      const at = f.data.indexOf(10, f.pos);
      const end = at >= 0 ? at + 1 : f.data.length;
      const out = f.data.subarray(f.pos, end);
      f.pos = end;
      return [Uint8Array.from(out)];
    },
    write: (a) => [writeTo(self(a), checkBytes(a, 2, 'write'))],
    writeline: (a) => [writeTo(self(a), Buffer.concat([Buffer.from(checkBytes(a, 2, 'writeline')), Buffer.from('\n')]))],
    flush: (a) => {
      commit(self(a));
      return [true];
    },
    seek: (a) => [seek(self(a), a, 2)],
  });
  vm.registerLib('file', {
    open: (a) => {
      const name = checkName(a, 1, 'open');
      const mode = a.optStr(2) ?? 'r';
      if (!/^[rwa]\+?b?$/.test(mode)) throw new LuaRaise('invalid open mode');
      const exists = files.has(name);
      if (mode[0] === 'r' && !exists) return [null];
      if (open.size >= MAX_OPEN) return [null];
      const plus = mode.includes('+');
      let data = exists ? Buffer.from(files.get(name)!) : Buffer.alloc(0);
      if (mode[0] === 'w') {
        data = Buffer.alloc(0);
        files.set(name, data); // the file exists, empty, from now on
      } else if (mode[0] === 'a' && !exists) files.set(name, data);
      const f: OpenFile = { name, data, pos: mode[0] === 'a' ? data.length : 0, read: mode[0] === 'r' || plus, write: mode[0] !== 'r' || plus, append: mode[0] === 'a', closed: false };
      open.add(f);
      current = f;
      return [newUserdataRef(vm, a.L, f, 'file.obj')];
    },
    close: (a) => {
      const f = a.userdata<OpenFile>(1) ?? current;
      if (f && 'pos' in f) close(f);
    },
    read: (a) => [readFrom(cur(), a, 1)],
    readline: (a) => {
      const f = cur();
      if (!f.read || f.pos >= f.data.length) return [null];
      const at = f.data.indexOf(10, f.pos);
      const end = at >= 0 ? at + 1 : f.data.length;
      const out = f.data.subarray(f.pos, end);
      f.pos = end;
      void a;
      return [Uint8Array.from(out)];
    },
    write: (a) => [writeTo(cur(), checkBytes(a, 1, 'write'))],
    writeline: (a) => [writeTo(cur(), Buffer.concat([Buffer.from(checkBytes(a, 1, 'writeline')), Buffer.from('\n')]))],
    flush: () => {
      commit(cur());
      return [true];
    },
    seek: (a) => [seek(cur(), a, 1)],
    remove: (a) => {
      files.delete(checkName(a, 1, 'remove'));
    },
    rename: (a) => {
      const from = checkName(a, 1, 'rename');
      const to = checkName(a, 2, 'rename');
      if (!files.has(from) || files.has(to)) return [false];
      files.set(to, files.get(from)!);
      files.delete(from);
      return [true];
    },
    exists: (a) => [files.has(checkName(a, 1, 'exists'))],
    list: (a) => {
      const pat = a.optStr(1);
      const o: Record<string, LuaIn> = {};
      for (const [k, v] of files) if (!pat || new RegExp(luaPatternToRegExp(pat)).test(k)) o[k] = v.length;
      return [o];
    },
    fsinfo: () => {
      let used = 0;
      for (const v of files.values()) used += v.length + 256;
      return [SPIFFS_TOTAL - used, used, SPIFFS_TOTAL];
    },
    stat: (a) => {
      const name = checkName(a, 1, 'stat');
      const v = files.get(name);
      return v ? [{ name, size: v.length, is_dir: false, is_rdonly: false, is_hidden: false, is_sys: false, is_arch: false }] : [null];
    },
    putcontents: (a) => {
      const name = checkName(a, 1, 'putcontents');
      files.set(name, Buffer.from(checkBytes(a, 2, 'putcontents')));
      return [true];
    },
    getcontents: (a) => {
      const v = files.get(checkName(a, 1, 'getcontents'));
      return [v ? Uint8Array.from(v) : null];
    },
    format: () => files.clear(),
  });
  // the Lua Flash Store (NodemcuSimOptions.lfs): node.LFS.get / node.flashindex, node.LFS.list
  const lfs = lfsModules(esp.opts.lfs);
  vm.registerLib('__nm_lfs', {
    // a module's main function, its prototypes in flash (no heap); nil for a name LFS lacks, and
    // for every name without LFS (the default build)
    get: (a) => {
      const name = a.isString(1) ? a.str(1) : undefined;
      const src = name === undefined ? undefined : lfs.get(name);
      if (src === undefined) return [null];
      const L = a.L;
      const chunk = `@${name}.lua`;
      const st = flauxlib.luaL_loadbuffer(L, Buffer.from(src, 'utf8'), Buffer.byteLength(src), fto(chunk));
      // luac.cross refuses what the firmware's parser refuses: no such module would be in the image
      const limit = st === flua.LUA_OK ? vm.localLimitError(L, -1, chunk) : flua.lua_tojsstring(L, -1);
      if (limit !== undefined) {
        flua.lua_pop(L, 1);
        throw new LuaRaise(`LFS module ${name}: ${limit}`);
      }
      markFlash(L);
      const ref = new LuaRefClass(vm, flauxlib.luaL_ref(L, flua.LUA_REGISTRYINDEX), 'function');
      ref.releaseOnPush = true;
      return [ref];
    },
    list: () => [lfs.size ? [...lfs.keys()].sort() : null],
  });
  // base functions that read the file system
  vm.registerLib('__nm_fs', {
    contents: (a) => {
      const v = files.get(a.str(1));
      return [v ? Uint8Array.from(v) : null];
    },
    // loadfile: the compiled chunk straight from the file's bytes, or nil and the message. The
    // firmware's luaL_loadfile reads a file through a C buffer (app/lua/lauxlib.c getF): the
    // file's text never becomes one Lua string in the heap; and the agent loads the .lc files
    // node.compile made, so no parser runs in the heap either (no Lua code runs while it loads)
    load: (a) => {
      const name = a.str(1);
      const v = files.get(name);
      if (!v) return [null, `cannot open ${name}`];
      const L = a.L;
      const st = flauxlib.luaL_loadbuffer(L, Uint8Array.from(v), v.length, fto(`@${name}`));
      if (st !== flua.LUA_OK) {
        const msg = flua.lua_tojsstring(L, -1);
        flua.lua_pop(L, 1);
        return [null, msg];
      }
      // the firmware's parser limits (LUAI_MAXVARS 50) hold for a file too
      const limit = vm.localLimitError(L, -1, `@${name}`);
      if (limit !== undefined) {
        flua.lua_pop(L, 1);
        return [null, limit];
      }
      const ref = new LuaRefClass(vm, flauxlib.luaL_ref(L, flua.LUA_REGISTRYINDEX), 'function');
      ref.releaseOnPush = true; // handed over as the result: nothing else keeps the chunk
      return [ref];
    },
  });
}

/** A very small Lua-pattern to RegExp translation for file.list (%. and plain text). */
function luaPatternToRegExp(p: string): string {
  return p.replace(/%(.)/g, (_, c: string) => '\\' + c);
}

/**
 * Base functions: print (to the console, tab-separated), dofile/loadfile/require from
 * SPIFFS, and the REPL's executor. NodeMCU has no `os` and no `io`.
 */
export const BASE_LUA = `
local console, contents, loadf = __nm_console, __nm_fs.contents, __nm_fs.load
node.LFS = { get = __nm_lfs.get, list = __nm_lfs.list }
node.flashindex = __nm_lfs.get
__nm_console, __nm_fs, __nm_lfs = nil, nil, nil
local select, tostring, tconcat, load, error = select, tostring, table.concat, load, error
function print(...)
  local n = select("#", ...)
  local t = {}
  for i = 1, n do t[i] = tostring((select(i, ...))) end
  console(tconcat(t, "\\t") .. "\\n")
end
function loadfile(name)
  return loadf(tostring(name))
end
function dofile(name)
  local f, e = loadfile(name)
  if not f then error(e, 2) end
  return f()
end
do
  local req = require
  require = function(name)
    local v = package.loaded[name]
    if v ~= nil then return v end
    for _, fn in ipairs({ name .. ".lc", name .. ".lua" }) do
      local s = contents(fn)
      if s then
        local f = assert(load(s, "@" .. fn))
        v = f(name)
        if v == nil then v = true end
        package.loaded[name] = v
        return v
      end
    end
    return req(name)
  end
end
os, io = nil, nil
package.loaded.os = nil
do
  local buf
  local traceback, pack, unpack = debug.traceback, table.pack, table.unpack
  __nm_repl(function(line)
    if buf == nil and line:sub(1, 1) == "=" then line = "return " .. line:sub(2) end
    local src = buf and (buf .. "\\n" .. line) or line
    local f, err = load(src, "=stdin")
    if not f and err:sub(-5) == "<eof>" then buf = src return 2 end
    buf = nil
    if not f then return 1, err end
    local r = pack(xpcall(f, traceback))
    if not r[1] then return 1, tostring(r[2]) end
    if r.n > 1 then print(unpack(r, 2, r.n)) end
    return 1
  end)
end
__nm_repl = nil
`;

/**
 * The modules of the simulated Lua Flash Store ({@link NodemcuSimOptions.lfs}): name -> Lua source.
 * `true`: the agent's files, `tether` (the resident agent) and each `tether_*` it loads on first use.
 */
export function lfsModules(lfs: NodemcuSimOptions['lfs']): Map<string, string> {
  const m = new Map<string, string>();
  if (lfs === true) {
    m.set('tether', readAgentBundle('nodemcu'));
    for (const [k, v] of readLazyAgentFiles('nodemcu')) m.set(k.replace(/\.lua$/, ''), v);
  } else if (lfs) for (const [k, v] of Object.entries(lfs)) m.set(k, v);
  return m;
}

/**
 * Emulated LuatOS system libraries for the simulated Air780E (EC618):
 * uart, crypto, string extensions, rtos, mcu, mobile, log, json.
 * Semantics: docs/firmware/luatos.md (numbers, uart, sys, zbuff, ...).
 * `socket` and `zbuff` live in socket-lib.ts / zbuff.ts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { LuaFloat, LuaRaise, type LuaArgs, type LuaIn, type LuaOut, type LuaRef, type LuaVm } from '../lua-vm.js';
import { jsonToLua, luaToJson } from '../lua-json.js';
import { crc32 } from '../checksums.js';
import type { Scheduler } from '../scheduler.js';
import { lineCharMs, type UartWire } from '../uart-wire.js';
import { performance } from 'node:perf_hooks';
import { crc16 as crc16Modbus } from '../../codec/frame.js';

/**
 * TX cache of the EC618 UART driver, bytes: `Uart_BaseInitEx(id, baud, 1024, rxbuf, ...)` in
 * luat_uart_setup (luatos-soc-2022 interface/src/luat_uart_ec618.c, commit 1a4c51c2). A
 * `uart.write` returns once the rest of its bytes fit in it.
 */
export const UART_TX_CACHE = 1024;

/** Identity and radio state the emulated firmware reports. */
export interface LuatosIdentity {
  /** `rtos.version()`. @default "V1112-sim" (the suffix lets tools tell a simulated module) */
  version?: string;
  /** `rtos.bsp()`. @default "EC618" */
  bsp?: string;
  /** `mobile.imei()`. @default "869020060000011" */
  imei?: string;
  /** `mobile.iccid()`. @default "89860000000000000011" */
  iccid?: string;
  /** `mobile.csq()` 0..31. @default 24 */
  csq?: number;
  /** `mobile.status()`: 0 not registered, 1 registered, 2 searching, 3 denied, 4 unknown, 5 roaming. @default 1 */
  status?: number;
}

/** What the environment needs from the simulated module. */
export interface LuatosEnvHost {
  vm: LuaVm;
  scheduler: Scheduler;
  wire: UartWire;
  /** UART id wired to the host. @default 1 */
  uartId: number;
  identity: LuatosIdentity;
  /** Module debug log (Luatools' log channel, not the RPC UART). */
  log(line: string): void;
  /** A fatal error: the firmware prints "Lua VM exit!! reboot" and restarts. */
  fatal(message: string): void;
  /** Milliseconds since this boot. */
  ticks(): number;
  /** Reboot requested by Lua (`rtos.reboot()`). */
  reboot(): void;
}

const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');

/** `uart.setup`'s default baud rate (bits per second). */
export const DEFAULT_BAUD = 115200;
/** `uart.VUART_0`: the USB CDC virtual port (LUAT_VUART_ID_0, 0x20); `uart.VUART_1` is 33. */
export const VUART_0 = 32;
/** Character times of silence after which the emulated driver reports the RX idle timeout. */
export const RX_IDLE_CHARS = 2;

/**
 * Bits one character takes on the line: start bit, data bits, parity bit (if any), stop bits.
 * @param dataBits `uart.setup` argument 3. @default 8
 * @param stopBits `uart.setup` argument 4. @default 1
 * @param parity `uart.setup` argument 5 (`uart.None` = 0). @default 0
 */
export function uartCharBits(dataBits = 8, stopBits = 1, parity = 0): number {
  return 1 + dataBits + (parity !== 0 ? 1 : 0) + stopBits;
}

/**
 * RX idle timeout of the emulated EC618 UART in milliseconds: {@link RX_IDLE_CHARS} character
 * times at the configured line settings (8N1: 20 bit times, 0.174 ms at 115200 baud, 2.08 ms at 9600).
 * The rule is the simulator's: the firmware does not document its timeout, only that the receive
 * event comes when the line went idle (the RX FIFO timeout interrupt, UART_CB_RX_TIMEOUT).
 * @param baud bits per second (`uart.setup` argument 2); values below 1 fall back to {@link DEFAULT_BAUD}.
 * @param dataBits @param stopBits @param parity as for {@link uartCharBits}.
 */
export function uartIdleMs(baud = DEFAULT_BAUD, dataBits = 8, stopBits = 1, parity = 0): number {
  const rate = baud >= 1 ? baud : DEFAULT_BAUD;
  return (RX_IDLE_CHARS * uartCharBits(dataBits, stopBits, parity) * 1000) / rate;
}

/** Largest RX buffer `uart.setup` gets on the EC618 (bytes): {@link uartRxBufferSize}. */
export const UART_RX_BUF_MAX = 16384;

/**
 * RX buffer (bytes) that `uart.setup(id, ..., bufsz)` gets on the emulated module: the stricter of
 * the two `Uart_BaseInitEx` drivers read. The EC618's (luatos-soc-2022
 * interface/src/luat_uart_ec618.c at 1a4c51c2, `luat_uart_setup` line 209) passes `bufsz` on as
 * given, 0 meaning 1024; the EC7xx's (luatos-soc-2023 interface/src/luat_uart_ec7xx.c at
 * 6cd6dfa8, lines 174-178) clamps it to 2048..16384. So: as given, at most
 * {@link UART_RX_BUF_MAX}; 0 or less (or not a number) gives 1024. The older CMSIS driver of the
 * EC618 (luat_uart_ec618.c at 315e5e0a) ignores `bufsz` (a static 1024-byte buffer): not
 * modelled, listed in docs/fidelity.md.
 * @param bufsz `uart.setup` argument 7 (luat_lib_uart.c default 1024).
 */
export function uartRxBufferSize(bufsz: number): number {
  if (!(bufsz >= 1)) return 1024;
  return Math.min(Math.floor(bufsz), UART_RX_BUF_MAX);
}

/** Install everything into the VM. Returns nothing; all state lives in closures tied to this boot. */
export function installLuatosEnv(h: LuatosEnvHost): void {
  const { vm, scheduler, wire } = h;

  // --- simulator primitives used by the Lua `sys` implementation
  let timerSeq = 0;
  const timers = new Map<number, () => void>();
  vm.registerLib('__sim', {
    timer: (a) => {
      const ms = a.optInt(1, 0);
      const fn = a.fnRef(2);
      const id = ++timerSeq;
      timers.set(
        id,
        // armed by Lua code: counts from when a blocking uart.write let the task go (Scheduler.afterFromVm)
        scheduler.afterFromVm(ms, () => {
          timers.delete(id);
          runCallback(fn, true);
        }),
      );
      return [id];
    },
    cancel: (a) => {
      const id = a.optInt(1, 0);
      timers.get(id)?.();
      timers.delete(id);
    },
    post: (a) => {
      const fn = a.fnRef(1);
      scheduler.post(() => runCallback(fn, true));
    },
    now: () => [h.ticks()],
    fatal: (a) => {
      const msg = a.optStr(1) ?? 'error';
      scheduler.post(() => h.fatal(msg));
    },
  });

  /** Run a Lua callback from the event loop; an error escaping it is fatal, as on the module. */
  function runCallback(fn: LuaRef, release: boolean, ...args: LuaIn[]): void {
    const r = vm.callRef(fn, ...args);
    if (release) fn.release();
    if (r.error !== undefined) h.fatal(r.error);
  }

  // --- print / log go to the debug channel, never to the RPC UART
  const fmt = (a: LuaArgs, from: number) => {
    const parts: string[] = [];
    for (let i = from; i <= a.count; i++) {
      const v = a.value(i);
      parts.push(v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : v === undefined ? 'nil' : String(v));
    }
    return parts.join(' ');
  };
  vm.registerGlobal('print', (a) => h.log(fmt(a, 1)));
  const level = (name: string): ((a: LuaArgs) => void) => (a) => h.log(`${name}/${a.optStr(1) ?? ''} ${fmt(a, 2)}`);
  vm.registerLib(
    'log',
    { info: level('I'), warn: level('W'), error: level('E'), debug: level('D'), setLevel: () => {}, style: () => {} },
    { LOG_SILENT: 0, LOG_DEBUG: 1, LOG_INFO: 2, LOG_WARN: 3, LOG_ERROR: 4 },
  );

  // --- uart: only `uartId` is wired to the host; others accept calls and go nowhere.
  //
  // The receive callback follows the EC618 driver (luat_uart_ec618.c `luat_uart_cb`, and the
  // "Logic for reporting receiving data" comment of luat_uart.h; docs/firmware/luatos.md
  // section 2): bytes collect in the RX buffer of `bufsz` bytes and Lua's `uart.on(id, "receive", fn)`
  // gets `fn(id, len)`
  // - on the RX idle timeout (UART_CB_RX_TIMEOUT: the line has been silent for a while after a
  //   burst) with `len` = the bytes buffered, once per burst;
  // - at once when the buffer is full (UART_CB_RX_BUFFER_FULL), with `len` = -1 (0xffffffff), on
  //   UART1 only ("only UART1 can wake up"); bytes beyond the buffer are lost. On the other UARTs a
  //   full buffer is reported by the idle timeout, with its length.
  // The idle timeout is RX_IDLE_CHARS character times at the baud given to uart.setup (see
  // uartIdleMs). Below 1 ms (every baud above ~20000 at 8N1) it is the next turn of the event loop
  // (setImmediate): setTimeout cannot go below 1 ms, and no fixed delay is added to a receive.
  const receiveCb = new Map<number, LuaRef>();
  const sentCb = new Map<number, LuaRef>();
  const UART_IDS = new Set([0, 1, 2, 3, 32, 33]);
  /** UART1 reports a full RX buffer at once with len -1 (UART_CB_RX_BUFFER_FULL). */
  const FULL_REPORT_UART = 1;
  let rxIdleMs = uartIdleMs();
  let rxFull = false; // the buffer filled (or overflowed) since the last report
  let fullReported = false; // the -1 report of the buffer being full went out, and it is still full
  let rxGen = 0; // a newer byte (or report) voids the pending report
  let cancelIdle: (() => void) | undefined;
  const report = () => {
    cancelIdle = undefined;
    const cb = receiveCb.get(h.uartId);
    if (!cb || wire.buffered === 0) return;
    const len = rxFull && h.uartId === FULL_REPORT_UART ? -1 : wire.buffered;
    rxFull = false;
    runCallback(cb, false, h.uartId, len);
  };
  /** Report after `ms` (0: next event-loop turn) unless a newer byte or report comes first. */
  const schedule = (ms: number) => {
    const gen = ++rxGen;
    cancelIdle?.();
    cancelIdle = undefined;
    if (ms < 1) {
      scheduler.post(() => {
        if (gen === rxGen) report();
      });
    } else {
      cancelIdle = scheduler.after(ms, () => {
        if (gen === rxGen) report();
      });
    }
  };
  wire.onReceive = (overflow) => {
    const full = overflow || wire.buffered >= wire.rxBufferSize;
    // full on UART1: UART_CB_RX_BUFFER_FULL, reported now (as an rtos message: the next loop turn),
    // once: the bytes that keep arriving into the still full buffer are lost without another report
    if (full && h.uartId === FULL_REPORT_UART) {
      if (!fullReported) {
        fullReported = true;
        rxFull = true;
        schedule(0);
      }
      return;
    }
    fullReported = false;
    // The idle timeout counts line time from the last byte of a burst (UART_CB_RX_TIMEOUT,
    // luatos-soc-2022 interface/src/luat_uart_ec618.c `luat_uart_cb` at 1a4c51c2, lines 108-161:
    // the driver's RX FIFO timeout, raised by the line's silence): what the host writes later
    // does not hold it back. So the burst is over when the line stays quiet
    // for the timeout after these bytes, whether or not the host has already written its next
    // burst (which then starts after a gap on the line): every byte restarts the idle timer, one
    // report per burst.
    if (wire.rxQuietAfter(rxIdleMs)) schedule(rxIdleMs);
    // The paced line still carries bytes of this burst with no gap: the next slice decides. A
    // report still pending for the burst before stands when these bytes came after a gap (the
    // simulator delivered them late, in the same turn of its loop as that burst's end).
    else if (!wire.rxQuietBefore(rxIdleMs)) {
      ++rxGen;
      cancelIdle?.();
      cancelIdle = undefined;
    }
  };
  vm.registerLib(
    'uart',
    {
      setup: (a) => {
        const id = a.int(1);
        if (!UART_IDS.has(id)) return [-1];
        const baud = a.optInt(2, DEFAULT_BAUD);
        const dataBits = a.optInt(3, 8);
        const stopBits = a.optInt(4, 1);
        const parity = a.optInt(5, 0);
        const bufsz = a.optInt(7, 1024);
        if (id === h.uartId) {
          wire.rxBufferSize = uartRxBufferSize(bufsz);
          wire.listening = true;
          // uart.VUART_0/1 (32, 33) are the USB CDC virtual ports: no baud, no pacing, no RX idle
          // timeout (openLuat/LuatOS demo/usb_uart/EC618/main.lua:36-41 in the version that says so
          // sets VUART_0, "the fixed id of the USB virtual serial port", up at 115200 with the comment
          // "the baud does not matter, a purely virtual port"; LUAT_VUART_ID_0 is 0x20 in luat_uart.h).
          // A USB packet is reported when it arrives: the next turn of the loop (USB's own packet
          // timing is not modelled, docs/fidelity.md).
          const usb = id >= VUART_0;
          wire.paced = !usb;
          rxIdleMs = usb ? 0 : uartIdleMs(baud, dataBits, stopBits, parity);
          // the simulated line follows the module's own settings (a host at another rate reads garbage):
          // openLuat/LuatOS luat/modules/luat_lib_uart.c l_uart_setup (at 04b3a4a): baud (arg 2, default
          // 115200; its table goes up to 2000000), data bits (3), stop bits (4), parity (5, uart.None = 0)
          if (!usb) wire.moduleLine = { baud: baud >= 1 ? baud : DEFAULT_BAUD, dataBits, parity: parity !== 0, stopBits };
        }
        return [0];
      },
      on: (a) => {
        const id = a.int(1);
        const ev = a.str(2);
        const map = ev === 'receive' ? receiveCb : ev === 'sent' ? sentCb : undefined;
        if (!map) return;
        map.get(id)?.release();
        if (a.isFunction(3)) map.set(id, a.fnRef(3));
        else map.delete(id);
      },
      read: (a) => {
        const id = a.int(1);
        const len = a.optInt(2, 1024);
        if (id !== h.uartId) return [''];
        return [Uint8Array.from(wire.read(len))];
      },
      write: (a) => {
        const id = a.int(1);
        const data = a.bytes(2);
        if (id === h.uartId) {
          // luat_lib_uart.c l_uart_write hands the bytes to the driver: luat_uart_write ->
          // Uart_TxTaskSafe (luatos-soc-2022 interface/src/luat_uart_ec618.c, commit 1a4c51c2,
          // luat_uart_write), a blocking TX in the calling task through the driver's 1024-byte TX
          // cache (Uart_BaseInitEx(id, baud, 1024, ...) in luat_uart_setup). Nothing is dropped;
          // the Lua VM is held until all but the last cache-full are on the line (issue #8).
          // Modelled as a busy-until time: timers, socket and UART callbacks due meanwhile wait
          // (Scheduler.busyUntil); Node is never blocked.
          const called = performance.now();
          wire.toHost(data);
          if (wire.paced) {
            scheduler.hold(wire.txIdealFreeAt - UART_TX_CACHE * lineCharMs(wire.moduleLine), called);
          }
          const cb = sentCb.get(id);
          // "sent" when the bytes are out on the (paced) line
          const wait = wire.txFreeAt - performance.now();
          if (cb) {
            if (wait >= 1) scheduler.after(wait, () => runCallback(cb, false, id));
            else scheduler.post(() => runCallback(cb, false, id));
          }
        }
        return [0];
      },
      close: (a) => {
        if (a.int(1) === h.uartId) {
          wire.listening = false;
          wire.clear();
        }
      },
      exist: (a) => [UART_IDS.has(a.int(1))],
    },
    { None: 0, Even: 2, Odd: 1, LSB: 0, MSB: 1, VUART_0, VUART_1: VUART_0 + 1 },
  );

  // --- crypto
  vm.registerLib('crypto', {
    crc16: (a) => {
      const method = a.str(1).toUpperCase();
      const data = a.bytes(2);
      if (method !== 'MODBUS') throw new LuaRaise(`crypto.crc16: method ${method} is not emulated (only MODBUS)`);
      return [crc16Modbus(data)];
    },
    crc16_modbus: (a) => [crc16Modbus(a.bytes(1))],
    crc32: (a) => [crc32(a.bytes(1)) | 0], // signed, like the module's 32-bit lua_Integer
    md5: (a) => [createHash('md5').update(a.bytes(1)).digest('hex').toUpperCase()],
    sha1: (a) => [createHash('sha1').update(a.bytes(1)).digest('hex').toUpperCase()],
    sha256: (a) => [createHash('sha256').update(a.bytes(1)).digest('hex').toUpperCase()],
    trng: (a) => [Uint8Array.from(randomBytes(Math.min(Math.max(a.int(1), 0), 128)))],
    base64_encode: (a) => [Buffer.from(a.bytes(1)).toString('base64')],
    base64_decode: (a) => [fromBase64(text(a.bytes(1)))],
  });

  // --- string extensions (C functions on LuatOS)
  vm.registerLib('string', {
    toHex: (a) => {
      const s = a.bytes(1);
      const sep = a.optStr(2) ?? '';
      const parts = Array.from(s, (b) => b.toString(16).toUpperCase().padStart(2, '0'));
      return [parts.join(sep), s.length * 2];
    },
    fromHex: (a) => {
      const hex = a.str(1).replace(/[^0-9a-fA-F]/g, '');
      return [Uint8Array.from(Buffer.from(hex.length % 2 ? hex.slice(0, -1) : hex, 'hex'))];
    },
    toBase64: (a) => [Buffer.from(a.bytes(1)).toString('base64')],
    fromBase64: (a) => [fromBase64(text(a.bytes(1)))],
    split: (a) => {
      const s = a.str(1);
      const sep = a.optStr(2) ?? ',';
      return [s.split(sep).filter((x) => x.length > 0)];
    },
  });

  // --- rtos / mcu
  const id = h.identity;
  const version = id.version ?? 'V1112-sim';
  vm.registerLib('rtos', {
    version: (a) => (a.truthy(1) ? [version, Number(version.replace(/\D/g, '')) || 0, 32] : [version]),
    bsp: () => [id.bsp ?? 'EC618'],
    meminfo: (a) => {
      const kind = a.optStr(1) ?? 'lua';
      if (kind === 'sys') return [4194304, 1572864, 1638400];
      // (total, used, max used): the heap budget of the simulated module and the Lua 5.1 estimate
      const used = vm.heapUsed();
      return [vm.heapLimit ?? 204800, used, Math.max(used, vm.heapPeak)];
    },
    reboot: () => {
      scheduler.post(() => h.reboot());
    },
  });
  vm.registerLib('mcu', {
    ticks: () => [h.ticks() | 0],
    tick64: () => [new LuaFloat(h.ticks())],
    hz: () => [1000],
  });

  // --- mobile (cellular radio state)
  vm.registerLib('mobile', {
    imei: () => [id.imei ?? '869020060000011'],
    iccid: () => [id.iccid ?? '89860000000000000011'],
    csq: () => [id.csq ?? 24],
    rssi: () => [-113 + 2 * (id.csq ?? 24)],
    status: () => [id.status ?? 1],
  });

  // --- json: encode -> string or (nil, err); decode -> (obj, 1) or (nil, false, err)
  vm.registerLib('json', {
    encode: (a) => {
      try {
        return [JSON.stringify(luaToJson(a.value(1)))];
      } catch (e) {
        return [null, (e as Error).message];
      }
    },
    decode: (a) => {
      try {
        return [jsonToLua(JSON.parse(a.str(1))), 1];
      } catch (e) {
        return [null, false, (e as Error).message];
      }
    },
  }, { null: null });
}

function fromBase64(s: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 === 1) return new Uint8Array(0);
  return Uint8Array.from(Buffer.from(s, 'base64'));
}


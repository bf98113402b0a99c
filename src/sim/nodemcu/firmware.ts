/**
 * The core of the simulated ESP8266 running NodeMCU: UART 0 (256-byte RX ring that
 * drops the OLDEST bytes silently, line delivery to `uart.on("data")` callbacks),
 * the console (print / REPL output with `\n` -> `\r\n`, `node.output` redirection
 * into a pipe), the stock REPL (echo, `> ` / `>> ` prompts, 256-character line
 * limit, `Lua error:` reports), and the routing of Lua errors: protected callbacks
 * (tmr, uart, node.task, ping) go to `node.setonerror`, unprotected ones (net)
 * PANIC and reboot the chip.
 * Semantics: docs/firmware/nodemcu.md (REPL; TCP send and the sent event).
 */
import { performance } from 'node:perf_hooks';
import type { FamilyContext } from '../module.js';
import type { LuaIn, LuaRef, LuaVm } from '../lua-vm.js';
import type { Scheduler } from '../scheduler.js';
import type { UartWire } from '../uart-wire.js';
import type { NodemcuSimOptions } from './options.js';
import { lineCharMs } from '../uart-wire.js';

/**
 * Bytes the ESP8266's UART TX FIFO may still hold when `uart_tx_one_char` returns: it spins
 * while the FIFO count is 126 or more (nodemcu-firmware app/driver/uart.c:125-130 at 0069f00,
 * `uart_tx_one_char`; the FIFO holds 128).
 */
export const TX_FIFO_SPIN_AT = 126;

/** LUA_MAXINPUT: the REPL discards its line buffer at the 256th character. */
export const REPL_MAX_INPUT = 256;

type UartMode =
  | { kind: 'repl' }
  /** uart.on("data", n|char, fn, run_input) */
  | { kind: 'data'; fn: LuaRef; runInput: boolean; count: number; end?: number };

/** Everything of one boot of the simulated chip that the libraries share. */
export class Esp {
  readonly vm: LuaVm;
  readonly sched: Scheduler;
  readonly wire: UartWire;
  readonly opts: NodemcuSimOptions;
  readonly files: Map<string, Buffer>;
  /** Set when the boot is torn down: late Node events must not touch the VM. */
  dead = false;
  /** node.setonerror handler (undefined = the firmware's default: print, restart after 2 s). */
  onError?: LuaRef;
  /** UART RX ring bytes dropped (overflow), counted for tests. */
  rxDropped = 0;

  private readonly ctx: FamilyContext;
  private ring: number[] = [];
  private readonly ringSize: number;
  private readonly linePiece: number;
  private mode: UartMode = { kind: 'repl' };
  private echo = true;
  private drainPosted = false;
  private dataLine: number[] = [];
  private replLine: number[] = [];
  private lastEol = 0; // previous end-of-line char (CR 13 / LF 10) to fold CRLF / LFCR
  private execQueue: string[] = [];
  private execPosted = false;
  private replExec?: LuaRef;
  private output?: { fn: LuaRef; serial: boolean; pipe: Buffer[]; posted: boolean };
  private pipeRef?: LuaRef;
  private restartPending = false;

  constructor(ctx: FamilyContext, opts: NodemcuSimOptions, files: Map<string, Buffer>) {
    this.ctx = ctx;
    this.vm = ctx.vm;
    this.sched = ctx.scheduler;
    this.wire = ctx.wire;
    this.opts = opts;
    this.files = files;
    this.ringSize = opts.rxRing ?? 256;
    this.linePiece = opts.linePiece ?? 255;
    // the wire hands every byte straight to our ring (the ring, not the wire, models the driver).
    // RX timing (docs/firmware/nodemcu.md, UART receive modes): the 128-byte hardware FIFO feeds
    // a 256-byte ring (RX_BUFF_SIZE) that drops the OLDEST bytes when full, and a high-priority task
    // drains it, never while Lua runs. Here: bytes enter the ring as they arrive and the drain task is
    // posted for the next event-loop turn (setImmediate, see postDrain): no fixed delay per receive.
    this.wire.rxBufferSize = 1 << 30;
    this.wire.listening = true;
    this.wire.onReceive = () => {
      const b = this.wire.read(this.wire.buffered);
      this.rx(b);
    };
  }

  /** Module debug log (not the UART). */
  log(line: string): void {
    this.ctx.log(line);
  }

  ticks(): number {
    return this.ctx.ticks();
  }

  /** `node.restart()`: the chip resets once the current Lua code returned. */
  restart(): void {
    if (this.restartPending || this.dead) return;
    this.restartPending = true;
    this.sched.post(() => this.ctx.reboot());
  }

  // ---------------------------------------------------------------- UART TX / console

  /** Raw bytes on UART 0 TX (`uart.write`, echo, PANIC text). */
  uartTx(data: Uint8Array | string): void {
    if (this.dead) return;
    const called = performance.now();
    this.wire.toHost(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
    // Every UART 0 write (uart.write, print, echo: uart0_tx_buffer / uart0_putc) pushes byte by byte
    // with uart_tx_one_char, which spins while the TX FIFO is full (app/driver/uart.c:123-134 at
    // 0069f00): the Lua VM is held until all but TX_FIFO_SPIN_AT bytes are on the line, ~11.5 KB/s
    // at 115200, also inside lwIP callbacks. Modelled as a busy-until time: timers, tasks and
    // socket callbacks due meanwhile wait for it (Scheduler.busyUntil); Node is never blocked.
    if (this.wire.paced) {
      this.sched.hold(this.wire.txIdealFreeAt - TX_FIFO_SPIN_AT * lineCharMs(this.wire.moduleLine), called);
    }
  }

  /**
   * The UART driver resets its TX FIFO (`uart.setup`): the bytes still in it when the Lua code got
   * there are lost. On the chip the VM reaches that code only when the spin of its last write let
   * go ({@link uartTx}); here it runs at once, so the cut is at the busy-until time, not now.
   * @returns bytes dropped
   */
  resetTxFifo(): number {
    if (!this.wire.paced) return 0;
    return this.wire.resetTxFifo(Math.max(performance.now(), this.sched.busyUntil));
  }

  /** Console output (print, REPL prompt and errors): `node.output` pipe and/or the UART with `\n` -> `\r\n`. */
  console(data: Uint8Array | string): void {
    if (this.dead) return;
    const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : Buffer.from(data);
    const out = this.output;
    if (out) {
      out.pipe.push(b);
      if (!out.posted) {
        out.posted = true;
        this.sched.post(() => this.runOutput());
      }
      if (!out.serial) return;
    }
    this.uartTx(crlf(b));
  }

  /** `node.output(fn, serial_debug)` / `node.output()`. */
  setOutput(fn: LuaRef | undefined, serial: boolean): void {
    this.output?.fn.release();
    this.output = fn ? { fn, serial, pipe: [], posted: false } : undefined;
  }

  /** The pipe object the output callback receives (set by the node library). */
  setPipe(ref: LuaRef): void {
    this.pipeRef = ref;
  }

  /** pipe:read(n | "\n+"): take bytes from the output pipe. */
  pipeRead(spec: number | string | undefined): Buffer | undefined {
    const out = this.output;
    if (!out || out.pipe.length === 0) return undefined;
    const all = Buffer.concat(out.pipe);
    let n = all.length;
    if (typeof spec === 'number') n = Math.min(Math.max(spec, 0), all.length);
    else if (typeof spec === 'string' && spec.length === 2 && (spec[1] === '+' || spec[1] === '-')) {
      const at = all.indexOf(spec.charCodeAt(0));
      if (at >= 0) n = spec[1] === '+' ? at + 1 : at;
    }
    const got = all.subarray(0, n);
    const rest = all.subarray(n);
    out.pipe = rest.length ? [Buffer.from(rest)] : [];
    return got.length ? Buffer.from(got) : undefined;
  }

  private runOutput(): void {
    const out = this.output;
    if (!out) return;
    out.posted = false;
    if (out.pipe.length === 0) return;
    // the reader task runs under pcallx
    this.protectedCall(out.fn, this.pipeRef);
    if (this.output === out && out.pipe.length > 0 && !out.posted) {
      // unread data: the firmware reposts the reader only when it returned true; drop the rest
      out.pipe = [];
    }
  }

  // ---------------------------------------------------------------- errors

  /** Run a callback the firmware protects with luaL_pcallx (tmr, uart, node.task, ping, output). */
  protectedCall(fn: LuaRef, ...args: LuaIn[]): void {
    if (this.dead) return;
    const r = this.vm.callRef(fn, ...args);
    if (r.error !== undefined) this.reportError(r.error);
  }

  /** The firmware's luaL_pcallx error path: node.setonerror's handler, or print + restart after 2 s. */
  reportError(message: string): void {
    if (this.dead) return;
    if (this.onError) {
      const r = this.vm.callRef(this.onError, message);
      if (r.error === undefined) return;
      message = r.error;
    }
    this.console(`${message}\n`);
    this.log(`lua error (default onerror: restart in ${this.opts.onErrorRestartMs ?? 2000} ms): ${message}`);
    this.sched.after(this.opts.onErrorRestartMs ?? 2000, () => this.ctx.reboot());
  }

  /**
   * Run a callback the firmware calls with plain lua_call (every net callback): an error is
   * `PANIC: unprotected error in call to Lua API` and the watchdog resets the chip.
   */
  unprotectedCall(fn: LuaRef, ...args: LuaIn[]): boolean {
    if (this.dead) return false;
    if (this.sched.mustWait) {
      // the VM is held by a blocking uart.write: lwIP's event waits for it, in order
      const own = fn.dup();
      this.sched.whenFree(() => {
        this.unprotectedCall(own, ...args);
        own.release();
      });
      return true;
    }
    const r = this.vm.callRef(fn, ...args);
    if (r.error === undefined) return true;
    this.uartTx(`PANIC: unprotected error in call to Lua API (${r.error.split('\n')[0]})\r\n`);
    this.ctx.fatal(`PANIC: unprotected error in call to Lua API (${r.error})`);
    this.dead = true;
    return false;
  }

  // ---------------------------------------------------------------- UART RX

  /** Bytes arriving on RX: into the ring, dropping the oldest when full (silently). */
  private rx(b: Buffer): void {
    if (this.dead) return;
    for (const x of b) this.ring.push(x);
    const over = this.ring.length - this.ringSize;
    if (over > 0) {
      this.ring.splice(0, over);
      this.rxDropped += over;
    }
    this.postDrain();
  }

  /** Bytes waiting in the RX ring (tests). */
  get ringFill(): number {
    return this.ring.length;
  }

  private postDrain(): void {
    if (this.drainPosted || this.ring.length === 0) return;
    this.drainPosted = true;
    this.sched.post(() => {
      this.drainPosted = false;
      this.drain();
      this.postDrain();
    });
  }

  /**
   * The input task: move ring bytes to the current consumer. A data callback gets one
   * delivery per task (Lua runs, the ring refills meanwhile); the REPL line editor takes
   * everything, and completed lines run one per task.
   */
  private drain(): void {
    if (this.dead) return;
    while (this.ring.length > 0) {
      const mode = this.mode;
      const c = this.ring.shift()!;
      if (mode.kind === 'data' && !mode.runInput) {
        this.dataLine.push(c);
        const full = mode.count > 0 ? this.dataLine.length >= mode.count : mode.end === undefined || c === mode.end || this.dataLine.length >= this.linePiece;
        if (full) {
          const line = Uint8Array.from(this.dataLine);
          this.dataLine = [];
          this.protectedCall(mode.fn, line);
          return;
        }
      } else {
        this.replChar(c);
      }
    }
  }

  /** The REPL's line editor (app/driver/input.c). */
  private replChar(c: number): void {
    if (c === 13 || c === 10) {
      const folded = this.lastEol !== 0 && this.lastEol !== c && this.replLine.length === 0;
      this.lastEol = folded ? 0 : c;
      if (folded) return; // second half of CRLF / LFCR
      if (this.echo) this.uartTx('\r\n');
      const line = Buffer.from(this.replLine).toString('latin1');
      this.replLine = [];
      this.lineDone(line);
      return;
    }
    this.lastEol = 0;
    if (c === 8 || c === 127) {
      if (this.replLine.length > 0) {
        this.replLine.pop();
        if (this.echo) this.uartTx(Buffer.from([8, 32, 8]));
      }
      return;
    }
    if (this.echo) this.uartTx(Buffer.from([c]));
    this.replLine.push(c);
    if (this.replLine.length >= REPL_MAX_INPUT) this.replLine = []; // silently discarded and refilled
  }

  private lineDone(line: string): void {
    const mode = this.mode;
    if (mode.kind === 'data' && mode.runInput) this.protectedCall(mode.fn, line);
    this.execQueue.push(line);
    if (!this.execPosted) {
      this.execPosted = true;
      this.sched.post(() => this.execNext());
    }
  }

  /** `node.input(str)`: lines straight into the interpreter's stdin. */
  input(text: string): void {
    for (const l of text.split(/\r\n|\n|\r/)) if (l.length) this.lineDone(l);
  }

  private execNext(): void {
    this.execPosted = false;
    const line = this.execQueue.shift();
    if (line === undefined || this.dead) return;
    this.runLine(line);
    if (this.execQueue.length > 0 && !this.execPosted) {
      this.execPosted = true;
      this.sched.post(() => this.execNext());
    }
  }

  /** The Lua side of the REPL (loads, runs, reports), set up by the family at boot. */
  setReplExec(ref: LuaRef): void {
    this.replExec = ref;
  }

  private runLine(line: string): void {
    if (!this.replExec) return;
    const r = this.vm.callRef(this.replExec, Buffer.from(line, 'latin1'));
    if (this.dead) return;
    let prompt = '> ';
    if (r.error !== undefined) this.console(`Lua error: ${r.error}\n`);
    else {
      const [more, err] = r.values ?? [];
      if (err instanceof Uint8Array) this.console(`Lua error: ${Buffer.from(err).toString('latin1')}\n`);
      if (more === 2) prompt = '>> ';
    }
    this.prompt(prompt);
  }

  /** Print the prompt (through the console: `node.output` catches it too). */
  prompt(p = '> '): void {
    this.console(p);
  }

  // ---------------------------------------------------------------- uart.on / uart.setup

  /** `uart.on("data", ...)` with a function. */
  setDataMode(fn: LuaRef, count: number, end: number | undefined, runInput: boolean): void {
    this.clearDataMode();
    this.mode = { kind: 'data', fn, runInput, count, end };
    this.dataLine = [];
    this.postDrain();
  }

  /** `uart.on("data")`: unregister and give the UART back to the interpreter. */
  clearDataMode(): void {
    if (this.mode.kind === 'data') this.mode.fn.release();
    this.mode = { kind: 'repl' };
    this.dataLine = [];
  }

  setEcho(on: boolean): void {
    this.echo = on;
  }

  /** True while a `uart.on("data", ..., 0)` callback owns the UART (the agent runs). */
  get uartTaken(): boolean {
    return this.mode.kind === 'data' && !this.mode.runInput;
  }
}

/** uart0_putc: `\n` becomes `\r\n`, `\r` is dropped. */
export function crlf(b: Uint8Array): Buffer {
  const out: number[] = [];
  for (const c of b) {
    if (c === 10) out.push(13, 10);
    else if (c !== 13) out.push(c);
  }
  return Buffer.from(out);
}

/**
 * The emulated Luat core's message queue (what `rtos.receive` returns) and the loop
 * that feeds it to Lua. On the module `sys.run()` loops forever: dispatch the
 * `sys.publish` queue, block in `rtos.receive(rtos.INF_TIMEOUT)`, hand the message to
 * a timer/task or to `handlers[msg]` / `handlers[msg.id]`. The simulator cannot block
 * a Lua call, so `sys.run()` returns at once and this loop calls the Lua function
 * `__luat_step(msg, param)` (one iteration of that loop body, defined in sys-lua.ts)
 * for every queued message, on the module's scheduler.
 */
import type { LuaIn, LuaVm } from '../lua-vm.js';
import type { Scheduler } from '../scheduler.js';

/** Numeric values of the `rtos.MSG_*` names (a C enum that grows with the core's features). */
export interface LuatMsgIds {
  MSG_TIMER: number;
  MSG_UART_RXDATA: number;
  MSG_UART_TX_DONE: number;
  MSG_PDP_ACT_CNF: number;
  MSG_PDP_DEACT_CNF: number;
  MSG_PDP_DEACT_IND: number;
  MSG_SOCK_RECV_IND: number;
  MSG_SOCK_SEND_CNF: number;
  MSG_SOCK_CLOSE_CNF: number;
  MSG_SOCK_CONN_CNF: number;
  MSG_SOCK_SEND_IND: number;
  MSG_SOCK_CLOSE_IND: number;
}

/** The values of the CSDK build of the 8910 core (firmware notes section 1b). */
export const CSDK_MSG_IDS: LuatMsgIds = {
  MSG_TIMER: 5,
  MSG_UART_RXDATA: 6,
  MSG_UART_TX_DONE: 7,
  MSG_PDP_ACT_CNF: 28,
  MSG_PDP_DEACT_CNF: 29,
  MSG_PDP_DEACT_IND: 30,
  MSG_SOCK_RECV_IND: 31,
  MSG_SOCK_SEND_CNF: 32,
  MSG_SOCK_CLOSE_CNF: 33,
  MSG_SOCK_CONN_CNF: 34,
  MSG_SOCK_SEND_IND: 35,
  MSG_SOCK_CLOSE_IND: 36,
};

/** `rtos.WAIT_MSG_TIMEOUT`. */
export const WAIT_MSG_TIMEOUT = 4;

/**
 * One core message: a number with a parameter (`MSG_TIMER`, `MSG_UART_RXDATA`) or a table with an
 * `id` field. `onDeliver` runs when Lua takes the message, before any handler: the core's
 * `platform_on_*` converters act at that moment (e.g. CLOSE_IND closes the socket then).
 */
export type RtosMsg = { id: number; param?: number } | { table: { [k: string]: LuaIn }; onDeliver?: () => void };

/** Messages processed per scheduler turn before yielding to Node I/O. */
const BATCH = 32;

export class RtosLoop {
  private readonly queue: RtosMsg[] = [];
  private scheduled = false;
  private kicked = false;
  private dead = false;
  /** Messages delivered to Lua so far. */
  delivered = 0;

  constructor(
    private readonly vm: LuaVm,
    private readonly scheduler: Scheduler,
    /** An error escaped a handler: the 8910 `sys.run` has no pcall, the VM dies and the module reboots. */
    private readonly fatal: (message: string) => void,
  ) {}

  /** Queue a message for Lua. */
  post(msg: RtosMsg): void {
    if (this.dead) return;
    this.queue.push(msg);
    this.schedule();
  }

  /** Run one loop iteration soon even with no message (a `sys.publish` waits for dispatch). */
  kick(): void {
    if (this.dead) return;
    this.kicked = true;
    this.schedule();
  }

  /** `rtos.receive` called directly from Lua: the next message, or undefined (the simulator never blocks). */
  take(): RtosMsg | undefined {
    const m = this.queue.shift();
    if (m && 'table' in m) m.onDeliver?.();
    return m;
  }

  /** Messages waiting. */
  get pending(): number {
    return this.queue.length;
  }

  stop(): void {
    this.dead = true;
    this.queue.length = 0;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.scheduler.post(() => this.pump());
  }

  private pump(): void {
    this.scheduled = false;
    if (this.dead || this.vm.closed) return;
    let n = 0;
    while (!this.dead && n < BATCH && (this.queue.length > 0 || this.kicked)) {
      const msg = this.queue.shift();
      this.kicked = false;
      if (msg && 'table' in msg) msg.onDeliver?.();
      const r = msg === undefined ? this.vm.callGlobal('__luat_step') : 'table' in msg ? this.vm.callGlobal('__luat_step', msg.table) : this.vm.callGlobal('__luat_step', msg.id, msg.param ?? null);
      if (msg) this.delivered++;
      n++;
      if (r.error !== undefined) {
        this.dead = true;
        this.fatal(r.error);
        return;
      }
    }
    if (this.queue.length > 0 || this.kicked) this.schedule();
  }
}

/**
 * The simulated Air780E (EC618, LuatOS): which libraries it has and which agent it runs.
 */
import type { FamilyBoot, FamilyContext, SimFamily } from '../module.js';
import { applyAgentSettings, withLineBaud, type AgentSettings } from '../agent-settings.js';
import { checkBaud, checkHeapBytes } from '../module.js';

/** The module's Lua heap (bytes): the default heap budget (see the option `heapBytes`). */
export const LUATOS_LUA_HEAP = 204800;
import { installLuatosEnv, type LuatosIdentity } from './env.js';
import { SYS_LUA } from './sys-lua.js';
import { installSocketLib } from './socket-lib.js';
import { installZbuff } from './zbuff.js';
import type { SimNetworkOptions } from './sim-env.js';

export interface LuatosSimOptions {
  /** Firmware identity and radio state. */
  identity?: LuatosIdentity;
  /** Network behaviour of the emulated `socket` library. */
  network?: SimNetworkOptions;
  /**
   * Globals set before the agent runs, as a user sets them before `require("tether")`, e.g.
   * `{ TETHER_ALLOW_RESTART: true }` (firmware-shim/luatos/config.lua). `TETHER_UART` also picks
   * the simulated port the host is wired to: `{ TETHER_UART: 32 }` is the Air780E's USB virtual
   * port (`uart.VUART_0`), which has no baud: bytes are not paced (docs/fidelity.md, "UART pacing").
   * @default {} (the agent's own defaults: restart off, UART1)
   */
  agentSettings?: AgentSettings;
  /**
   * Baud rate of the simulated serial line (bits per second): the host's side, and the rate the
   * agent sets up its UART with (its `TETHER_BAUD` setting, unless `agentSettings` names one).
   * Bytes are paced at it in both directions (docs/fidelity.md, "UART pacing").
   * @default 115200
   */
  baud?: number;
  /**
   * Lua heap budget (bytes): Lua code that needs more fails with Lua's "not enough memory" (the
   * error escapes to the firmware, which logs it and reboots: docs/fidelity.md, "Heap").
   * `collectgarbage("count")` and `rtos.meminfo("lua")` report against it.
   * @default 204800: LUAT_HEAP_SIZE, "default 200k, adjustable 128 ~ 300k" (openLuat/luatos-soc-2022
   * project/luatos/inc/luat_conf_bsp.h:11-13 at 005e726, the EC618 LuatOS build)
   */
  heapBytes?: number;
  /** Enforce `heapBytes` (false: report the heap but never fail an allocation). @default true */
  enforceHeap?: boolean;
}

/** Create the LuatOS family for {@link SimulatedModule.start}. */
export function luatosFamily(opts: LuatosSimOptions = {}): SimFamily {
  checkBaud(opts.baud, 'baud');
  checkHeapBytes(opts.heapBytes, 'heapBytes');
  return {
    lineBaud: opts.baud,
    name: 'luatos',
    moduleName: 'Air780E',
    agentFile: 'dist/agents/luatos/main.lua',
    // the agent's RPC UART: its TETHER_UART setting when given (config.lua), else UART1
    defaultUartId: typeof opts.agentSettings?.TETHER_UART === 'number' ? opts.agentSettings.TETHER_UART : 1,
    bootNoise: () => [
      '',
      `[00000.012] I/boot ${opts.identity?.bsp ?? 'EC618'} LuatOS@${opts.identity?.version ?? 'V1112'} starting`,
      '[00000.031] I/main loadlibs done, running main.lua',
    ],
    install(ctx: FamilyContext): FamilyBoot {
      installLuatosEnv({
        vm: ctx.vm,
        scheduler: ctx.scheduler,
        wire: ctx.wire,
        uartId: ctx.uartId,
        identity: opts.identity ?? {},
        log: ctx.log,
        fatal: ctx.fatal,
        ticks: ctx.ticks,
        reboot: ctx.reboot,
      });
      // the firmware's libraries are ROM tables (rotable): what Lua code builds counts from here
      ctx.vm.setHeapBase();
      if (opts.enforceHeap ?? true) ctx.vm.setHeapBudget({ limit: opts.heapBytes ?? LUATOS_LUA_HEAP });
      const err = ctx.vm.runString(SYS_LUA, '=sys.lua');
      if (err) throw new Error(`sys.lua failed to load: ${err}`);
      applyAgentSettings(ctx.vm, withLineBaud(opts.agentSettings, opts.baud));
      installZbuff(ctx.vm);
      const socketLib = installSocketLib(ctx.vm, {
        post: (fn) => ctx.scheduler.post(fn),
        network: opts.network ?? {},
        log: ctx.log,
        publish: (topic, ...args) => {
          const r = ctx.vm.callGlobal('sys_pub', topic, ...args);
          if (r.error) ctx.fatal(r.error);
        },
      });
      return { shutdown: () => socketLib.shutdown() };
    },
  };
}

/**
 * The simulated Air724UG (RDA8910, legacy Luat / LuaTask, Lua 5.1): which libraries it
 * has and which agent it runs (the generated dist/agents/luat/main.lua, verbatim).
 * Differences from the module: docs/fidelity-luat.md.
 */
import type { FamilyBoot, FamilyContext, SimFamily } from '../module.js';
import { applyAgentSettings, withLineBaud, type AgentSettings } from '../agent-settings.js';
import { checkBaud, checkHeapBytes } from '../module.js';

/** The module's Lua heap (bytes): the default heap budget (see the option `heapBytes`). */
export const LUAT_LUA_HEAP = 1426063;
import { installLuatEnv, type LuatEnv } from './env.js';
import { CSDK_MSG_IDS, type LuatMsgIds } from './loop.js';
import { installRadio, type LuatRadio, type LuatRadioOptions } from './radio.js';
import { installSocketcore, type LuatNetworkOptions, type Socketcore, type SocketcoreFeatures } from './socketcore.js';
import { SYS_LUA } from './sys-lua.js';

export type { LuatRadioOptions } from './radio.js';
export type { LuatNetworkOptions, SocketcoreFeatures } from './socketcore.js';

export interface LuatSimOptions {
  /**
   * `rtos.get_version()`. A name containing `_FLOAT` is a double-number build.
   * @default "Luat_V0026_RDA8910_FLOAT-sim", or "Luat_V0026_RDA8910-sim" with `integerOnly`
   * (the `-sim` suffix lets tools tell a simulated module)
   */
  version?: string;
  /**
   * Emulate an integer-only core (LUA_NUMBER = 32-bit long): no `math` library, no float
   * conversions in `string.format`, integral `tonumber`/`collectgarbage("count")`. The truncating
   * `/` cannot be emulated (docs/fidelity-luat.md). @default false
   */
  integerOnly?: boolean;
  /** Override `rtos.MSG_*` values (they differ between core builds). @default the CSDK build's */
  msgIds?: Partial<LuatMsgIds>;
  /** Core features that differ between builds. */
  features?: SocketcoreFeatures;
  /** Identity and radio (net/misc/link) behaviour. */
  radio?: LuatRadioOptions;
  /** socketcore network behaviour. */
  network?: LuatNetworkOptions;
  /**
   * Globals set before the agent runs, as a user sets them before `require("tether")`, e.g.
   * `{ TETHER_ALLOW_RESTART: true }` (firmware-shim/luat/config.lua). `TETHER_UART` also picks
   * the simulated port the host is wired to: `{ TETHER_UART: 129 }` is the Air724UG's USB port
   * (`uart.USB`), which has no baud: bytes are not paced (docs/fidelity.md, "UART pacing").
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
   * Lua heap budget (bytes): Lua code that needs more fails with Lua 5.1's "not enough memory"
   * (the error escapes to the core, which reboots: docs/fidelity.md, "Heap").
   * `collectgarbage("count")` reports against it.
   * @default 1426063: "roughly 1.36 MB" of Lua heap on the 8910 (Luat_CSDK_Air724U core/readme.txt,
   * docs/firmware/luat-socketcore.md)
   */
  heapBytes?: number;
  /** Enforce `heapBytes` (false: report the heap but never fail an allocation). @default true */
  enforceHeap?: boolean;
}

/** The libraries of the current boot, for tests (undefined while the module is off). */
export interface LuatBoot {
  env: LuatEnv;
  radio: LuatRadio;
  socketcore: Socketcore;
}

/** A {@link SimFamily} with access to the current boot's emulated libraries. */
export interface LuatFamily extends SimFamily {
  readonly current: LuatBoot | undefined;
  /** The module's flash (persists across reboots). */
  readonly flash: Map<string, Buffer>;
}

/** Create the Luat family for {@link SimulatedModule.start}. */
export function luatFamily(opts: LuatSimOptions = {}): LuatFamily {
  const integerOnly = opts.integerOnly ?? false;
  const version = opts.version ?? (integerOnly ? 'Luat_V0026_RDA8910-sim' : 'Luat_V0026_RDA8910_FLOAT-sim');
  const msgIds: LuatMsgIds = { ...CSDK_MSG_IDS, ...opts.msgIds };
  const flash = new Map<string, Buffer>();
  let current: LuatBoot | undefined;
  checkBaud(opts.baud, 'baud');
  checkHeapBytes(opts.heapBytes, 'heapBytes');
  return {
    lineBaud: opts.baud,
    name: 'luat',
    moduleName: 'Air724UG',
    agentFile: 'dist/agents/luat/main.lua',
    // the agent's RPC UART: its TETHER_UART setting when given (config.lua), else UART1
    defaultUartId: typeof opts.agentSettings?.TETHER_UART === 'number' ? opts.agentSettings.TETHER_UART : 1,
    // the 8910's boot log goes to the USB trace port, not to UART1..3
    bootNoise: () => [],
    get current() {
      return current;
    },
    flash,
    install(ctx: FamilyContext): FamilyBoot {
      const env = installLuatEnv({
        vm: ctx.vm,
        scheduler: ctx.scheduler,
        wire: ctx.wire,
        uartId: ctx.uartId,
        msgIds,
        version,
        integerOnly,
        flash,
        log: ctx.log,
        fatal: ctx.fatal,
        ticks: ctx.ticks,
        reboot: ctx.reboot,
      });
      const radio = installRadio(ctx.vm, ctx.scheduler, opts.radio ?? {}, ctx.log, ctx.fatal);
      const sc = installSocketcore({
        vm: ctx.vm,
        loop: env.loop,
        msgIds,
        network: opts.network ?? {},
        features: opts.features ?? {},
        linkReady: () => radio.ready(),
        log: ctx.log,
        fatal: ctx.fatal,
      });
      radio.onLinkDown(() => sc.linkDown());
      // the core's libraries are C (luaL_register tables: on the 8910 in RAM, counted as the
      // firmware's here); what Lua code builds counts from here
      ctx.vm.setHeapBase();
      if (opts.enforceHeap ?? true) ctx.vm.setHeapBudget({ limit: opts.heapBytes ?? LUAT_LUA_HEAP });
      const err = ctx.vm.runString(SYS_LUA, '=sys.lua');
      if (err) throw new Error(`sys.lua failed to load: ${err}`);
      applyAgentSettings(ctx.vm, withLineBaud(opts.agentSettings, opts.baud));
      const boot: LuatBoot = { env, radio, socketcore: sc };
      current = boot;
      return {
        shutdown: () => {
          if (current === boot) current = undefined;
          sc.shutdown();
          radio.shutdown();
          env.shutdown();
        },
      };
    },
  };
}

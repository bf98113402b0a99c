/**
 * The simulated ESP8266 running NodeMCU 3.0 (default build): which modules it has,
 * how it boots (ROM noise at the wrong baud, the firmware banner, init.lua or the
 * agent, then the `> ` prompt), and its SPIFFS, which survives resets of the module.
 */
import type { FamilyBoot, FamilyContext, SimFamily } from '../module.js';
import { readAgentBundle, readLazyAgentFiles } from '../../util/repo-root.js';
import { Esp } from './firmware.js';
import { BASE_LUA, DEFAULT_MODULES, SIM_FW, installBit, installEncoder, installFile, installNode, installTmr, installUart, installWifi } from './libs.js';
import { installNet, type NetLib } from './net-lib.js';
import type { NodemcuSimOptions } from './options.js';
import { withLineBaud } from '../agent-settings.js';
import { MEMERRMSG, type HeapBudget } from '../lua-vm.js';

/** The walks of `heapCheck: 'exact'`: every 100 instructions and at every callback entry (options.ts). */
const HEAP_CHECK_EXACT: Partial<HeapBudget> = { everyInstructions: 100, everyHooks: 1, everyMs: 0 };

/** Free heap (bytes) of an ESP8266 on the default NodeMCU build after boot, before any Lua code (docs/firmware/nodemcu.md). */
export const NODEMCU_FREE_HEAP = 44000;
import { checkBaud, checkHeapBytes } from '../module.js';
import { InvalidArgumentError } from '../../errors.js';

export type { NodemcuSimOptions, NodemcuNetworkOptions } from './options.js';

/** The NodeMCU family object: a {@link SimFamily} plus the emulated flash file system. */
export interface NodemcuFamily extends SimFamily {
  /** SPIFFS content, name -> bytes (shared by every boot of the module). */
  readonly files: Map<string, Buffer>;
  /** The running boot's firmware state (tests), undefined while powered off. */
  readonly esp: Esp | undefined;
  /** The running boot's net library (tests). */
  readonly netLib: NetLib | undefined;
}

/** What the ESP8266 ROM prints at 74880 baud, as a 115200-baud terminal sees it. */
const ROM_NOISE = '\x00\xe0\x1c\x8c\x9e\x12\x8c\x8c\xe2|\x00\x8c\x1c\x9c\x1c\x9c\x0c\x0c\x92\x00l\x8c\xe0\x8c\x0c\x8cl\x9c\xe2\x8c\x0c';

/** Create the NodeMCU family for {@link SimulatedModule.start}. */
export function nodemcuFamily(opts: NodemcuSimOptions = {}): NodemcuFamily {
  const files = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(opts.files ?? {})) files.set(k, Buffer.from(typeof v === 'string' ? Buffer.from(v, 'utf8') : v));
  // Booting the agent means it was flashed: its files loaded on first use (tether_*.lua, what
  // `tether flash` uploads next to tether.lua) are on SPIFFS, unless the options put others there.
  // The agent reads them with file.exists + loadfile like on the module (libs.ts BASE_LUA).
  // With the agent in LFS (opts.lfs true) it loads them from there instead.
  if ((opts.boot ?? 'agent') === 'agent' && opts.lfs !== true) {
    for (const [k, v] of readLazyAgentFiles('nodemcu')) if (!files.has(k)) files.set(k, Buffer.from(v, 'utf8'));
  }
  const modules = [...DEFAULT_MODULES, ...(opts.extraModules ?? [])].sort();
  const release = opts.release ?? 'sim';
  let esp: Esp | undefined;
  let netLib: NetLib | undefined;
  checkBaud(opts.baud, 'baud');
  checkHeapBytes(opts.heapBytes, 'heapBytes');
  // TETHER_HEAP_CHECK=exact in the environment: every simulated ESP8266 checks exactly (a test run)
  const heapCheck = opts.heapCheck ?? (process.env.TETHER_HEAP_CHECK || undefined);
  if (heapCheck !== undefined && heapCheck !== 'sampled' && heapCheck !== 'exact') {
    throw new InvalidArgumentError(`heapCheck (or TETHER_HEAP_CHECK) must be 'sampled' or 'exact', got ${JSON.stringify(heapCheck)}`);
  }
  return {
    lineBaud: opts.baud,
    name: 'nodemcu',
    moduleName: 'ESP8266',
    agentFile: 'dist/agents/nodemcu/main.lua',
    defaultUartId: 0,
    files,
    get esp() {
      return esp;
    },
    get netLib() {
      return netLib;
    },
    bootNoise: () => [
      ROM_NOISE,
      '',
      `NodeMCU ${SIM_FW.major}.${SIM_FW.minor}.${SIM_FW.revision}.0 built with Docker provided by frightanic.com`,
      `\tbranch: ${SIM_FW.branch}`,
      `\tcommit: ${SIM_FW.commit}`,
      `\trelease: ${release}`,
      '\trelease DTS: 202402250804',
      '\tSSL: false',
      '\tbuild type: float', // LUA=53: int32 + float32 numbers (as node.info's number_type, libs.ts)
      `\tLFS: ${opts.lfs ? '0x20000' : '0x0'} bytes total capacity`,
      `\tmodules: ${modules.filter((m) => m !== 'pipe').join(',')}`,
      ' build 2024-02-25 08:04 powered by Lua 5.3.5 on SDK 3.0.1-dev(fce080e)',
    ],
    install(ctx: FamilyContext): FamilyBoot {
      const e = new Esp(ctx, opts, files);
      esp = e;
      const { vm } = ctx;
      // LUAI_MAXVARS 50 in the default Lua 5.1 core (app/lua/luaconf.h:547): before BASE_LUA captures load
      vm.setLocalLimit(opts.maxLocals ?? 50);
      vm.registerGlobal('__nm_console', (a) => e.console(a.bytes(1)));
      vm.registerGlobal('__nm_repl', (a) => e.setReplExec(a.fnRef(1)));
      installUart(e);
      installNode(e, opts.chipId ?? 1193046, release, modules);
      installTmr(e);
      installBit(e);
      installFile(e);
      installWifi(e);
      if (modules.includes('encoder')) installEncoder(e);
      netLib = installNet(e);
      const err = vm.runString(BASE_LUA, '=nodemcu');
      if (err) throw new Error(`NodeMCU base library failed to load: ${err}`);
      // The firmware's libraries live in flash (ROTables): only what Lua code builds counts as heap.
      vm.setHeapBase();
      // The Lua heap lives in the ESP8266's system heap: ~44 KB free after boot on the default
      // build (nodemcu-firmware docs/lfs.md; docs/firmware/nodemcu.md "Heap after boot"). Over it,
      // Lua 5.1's allocator fails with "not enough memory" (lstate.h MEMERRMSG, after the emergency
      // GC, app/lua/lgc.c); the error takes the path of any Lua error at that point: at load,
      // init.lua's report and the prompt; in a tmr/uart/task callback, node.setonerror (default:
      // print, restart after 2 s); in a net callback, PANIC and reset.
      const budget = (opts.enforceHeap ?? true) ? { limit: opts.heapBytes ?? NODEMCU_FREE_HEAP, ...(heapCheck === 'exact' ? HEAP_CHECK_EXACT : {}) } : undefined;
      if (budget) vm.setHeapBudget(budget);
      const lib = netLib;
      // The module runs the agent file as '@main.lua' right after install(). With boot
      // 'agent' that is what init.lua would start; with 'repl' the stock firmware boots
      // instead: init.lua from SPIFFS if there is one, then the prompt.
      const run = vm.runString.bind(vm);
      vm.runString = (source, chunkName) => {
        if (chunkName !== '@main.lua') return run(source, chunkName);
        vm.runString = run;
        let r: string | undefined;
        if ((opts.boot ?? 'agent') === 'agent') {
          const settings = Object.entries(withLineBaud(opts.agentSettings, opts.baud) ?? {});
          for (const [k, v] of settings) {
            if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`agentSettings: ${JSON.stringify(k)} is not a Lua global name`);
          }
          if (settings.length) r = run(settings.map(([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`).join('\n'), '=settings');
          // from LFS as an init.lua would start it there (tether agent --lfs --init), else the file
          if (r === undefined) {
            // the load is checked exactly: it runs once, and between two sampled checks an agent
            // too big for the heap could get as far as taking the UART (the firmware fails the
            // very allocation that goes over, part way through the main chunk)
            if (budget) vm.setHeapBudget({ ...budget, ...HEAP_CHECK_EXACT });
            r = opts.lfs === true ? run('node.LFS.get("tether")("lfs")', '=init') : run(source, '@tether.lua');
            if (budget) vm.setHeapBudget(budget);
          }
          // loading ran out of heap after the budget's last check: the same error, at the end
          if (r === undefined && vm.overBudget()) r = MEMERRMSG;
          vm.heapLoadHandled = true;
        }
        else if (files.has('init.lua')) r = run('dofile("init.lua")', '=init');
        if (r !== undefined) e.console(`${r}\n`); // lua.c reports an init.lua error and goes on to the prompt
        e.prompt();
        return undefined;
      };
      return {
        shutdown: () => {
          e.dead = true;
          lib.shutdown();
          if (esp === e) {
            esp = undefined;
            netLib = undefined;
          }
        },
      };
    },
  };
}

/** The bundled agent text (what `tether flash` uploads as tether.lua and `sim:nodemcu` runs). */
export function nodemcuAgentSource(): string {
  return readAgentBundle('nodemcu');
}

/**
 * Options of the simulated ESP8266 (NodeMCU firmware). Every field is optional;
 * the defaults model a stock NodeMCU 3.0 default build on a board that joined WiFi.
 */

import type { SimNet } from '../network.js';

/** Network behaviour of the emulated `net` and `wifi` modules. */
export interface NodemcuNetworkOptions {
  /** Station IP (`wifi.sta.getip()`, `net.ifinfo(0)`). @default "127.0.0.1" (the simulated module lives on loopback) */
  ip?: string;
  /** @default "255.0.0.0" */
  netmask?: string;
  /** @default "127.0.0.1" */
  gateway?: string;
  /** Host address every server / UDP socket of the module really binds to. @default "127.0.0.1" */
  bindHost?: string;
  /** `wifi.sta.status()`: 0 idle, 1 connecting, 2 wrong password, 3 AP not found, 4 fail, 5 got IP. @default 5 */
  wifiStatus?: number;
  /** Station MAC (`wifi.sta.getmac()`, `net.ifinfo(0).hwaddr`). @default "5c:cf:7f:00:00:01" */
  mac?: string;
  /** Static DNS answers, name (case-insensitive) -> IPv4, checked before the host's resolver. @default { localhost: "127.0.0.1" } */
  hosts?: Record<string, string>;
  /** Initial DNS servers (`net.dns.getdnsserver`). Reported only: names resolve through `hosts` (and, with `net: 'host'`, the host's resolver). @default ["208.67.222.222"] */
  dnsServers?: string[];
  /**
   * What the simulated module may reach (src/sim/network.ts): `'loopback'` resolves only `hosts`,
   * `localhost` and IP literals and connects only to 127.0.0.0/8 (elsewhere a connect ends with
   * reconnection ERR_ABRT at once, a datagram is dropped); `'host'` uses the host's resolver and
   * network (`tether sim --net host`). @default 'loopback'
   */
  net?: SimNet;
  /** Time until an unanswered connect gives up with ERR_ABRT (-8) (lwIP TCP_SYNMAXRTX). @default 20000 */
  connectTimeoutMs?: number;
  /** Delay from the kernel accepting sent bytes to the "sent" callback (the ACK). @default 0 */
  ackDelayMs?: number;
  /** Round-trip time (ms) `net.ping` reports for `ip`, or null when it does not answer. @default 127.0.0.0/8 and the station IP/gateway answer in 1 ms */
  pingReply?: (ip: string) => number | null;
  /** Interval between pings (ms); also the per-ping timeout. @default 1000 */
  pingIntervalMs?: number;
}

export interface NodemcuSimOptions {
  /**
   * What runs at power-on.
   * - `agent` (default): the agent file runs as if init.lua started it (`sim:nodemcu`, `tether sim --family nodemcu`).
   * - `repl`: the stock firmware only: init.lua from the emulated SPIFFS if there is one, then the `> ` prompt (for `tether flash`).
   */
  boot?: 'agent' | 'repl';
  /** Files on the emulated SPIFFS at the first power-on (they persist across resets of this module). */
  files?: Record<string, string | Uint8Array>;
  /**
   * The Lua Flash Store (a firmware built with LFS, its image loaded by `node.LFS.reload`): module
   * name -> Lua source, what `luac.cross -f` made of those files. `true`: the agent's own files
   * (`tether` and each `tether_*`, as `tether agent --lfs` writes them); with boot `agent` the agent
   * then starts from LFS (`node.LFS.get("tether")("lfs")`, the built bundle: an `agentSource`
   * given to SimulatedModule.start is not used) and its files are not copied to SPIFFS.
   * `node.LFS.get(name)` and `node.flashindex(name)` give a module's function; the prototypes of LFS
   * modules live in flash and cost no heap (lua-vm.ts markFlash). A
   * difference: the sim compiles the sources, the firmware maps luac.cross's image
   * (docs/fidelity.md, "LFS"). @default none (the default build: `node.LFS.get` gives nil)
   */
  lfs?: boolean | Record<string, string>;
  /** Extra modules of a custom build, e.g. `["encoder"]`. */
  extraModules?: string[];
  /** Network behaviour. */
  network?: NodemcuNetworkOptions;
  /**
   * Free system heap (bytes) at boot before any Lua code: the Lua heap's budget. `node.heap()` and
   * `collectgarbage("count")` report against it (the Lua 5.1 32-bit estimate, lua-vm.ts
   * estimateLua51Heap); Lua code that needs more fails with "not enough memory" (docs/fidelity.md,
   * "Heap"). @default 44000 (nodemcu-firmware docs/lfs.md: ~44 KB free on the default build)
   */
  heapBytes?: number;
  /**
   * Enforce `heapBytes`, as the firmware does: Lua code that needs more gets "not enough memory"
   * (false: report the heap but never fail an allocation, for experiments). The failure point is
   * that of NodeMCU's default emergency GC mode, `node.egc.ALWAYS` (a full collection before every
   * allocation, nodemcu-firmware docs/modules/node.md): only live data counts (docs/fidelity.md,
   * "Heap"). @default true
   */
  enforceHeap?: boolean;
  /**
   * When the enforced budget is checked. `'sampled'`: a walk of the heap every 20 ms or 200 000
   * instructions of Lua code, at callback entries and inside big library calls (fast enough for
   * bulk transfers, but a peak as short as one call may pass between two walks). `'exact'`: a
   * walk every 100 instructions and at every callback entry, so a transient peak over the budget
   * fails as it would on the module (about 10 times slower: for tests of the agent's peaks).
   * `TETHER_HEAP_CHECK=exact` in the environment sets it for every simulated ESP8266 that does not
   * set it. docs/fidelity.md, "Heap". @default 'sampled'
   */
  heapCheck?: 'sampled' | 'exact';
  /** `node.chipid()`. @default 1193046 */
  chipId?: number;
  /** Delay of the default `node.setonerror` handler's restart (ms). @default 2000 (the firmware's) */
  onErrorRestartMs?: number;
  /** Longest piece a `uart.on("data", "\n", fn, 0)` callback receives when no terminator came (bytes). @default 255 */
  linePiece?: number;
  /** UART RX ring size (bytes). @default 256 */
  rxRing?: number;
  /**
   * Agent settings: globals set before the agent file runs, as a user types them at the prompt
   * before `dofile("tether.lua")` (or an init.lua sets them), e.g.
   * `{ TETHER_ALLOW_REPL: true, TETHER_ALLOW_RESTART: true }`. Only with `boot: 'agent'`.
   * @default {} (the agent's own defaults: remote REPL and restart off)
   */
  agentSettings?: Record<string, boolean | number | string>;
  /**
   * Most locals a function may have active at once; loading a chunk with more fails the way the
   * firmware's parser does ("main function has more than 50 local variables"). The default is the
   * default build's Lua 5.1 core, LUAI_MAXVARS 50 (nodemcu-firmware app/lua/luaconf.h:547 at
   * 88bd9e01); the Lua 5.3 core allows 200. The simulator is as strict as the stricter core.
   * @default 50
   */
  maxLocals?: number;
  /** Firmware release string in `node.info("sw_version").git_release`. @default "sim" (tools recognise a simulator by fw ending in -sim) */
  release?: string;
  /**
   * Baud rate of the simulated serial line (bits per second): the host's side, and the rate the
   * agent sets up its UART with (its `TETHER_BAUD` setting, unless `agentSettings` names one).
   * Bytes are paced at it in both directions (docs/fidelity.md, "UART pacing").
   * @default 115200
   */
  baud?: number;
}

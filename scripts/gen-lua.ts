/**
 * Generates the Lua side of the wire constants and bundles each family's agent
 * into the single file a user flashes.
 *
 *   node dist/scripts/gen-lua.js            write protocol.lua (committed) and the bundles
 *   node dist/scripts/gen-lua.js --bundles  write the bundles only (`npm run build` does this)
 *   node dist/scripts/gen-lua.js --check    exit 1 if the committed protocol.lua is stale
 *
 * Inputs: src/codec/constants.ts (LUA_CONSTANTS), firmware-shim/common/core.lua,
 * firmware-shim/<family>/{config,agent}.lua, and a family's files loaded on first use,
 * firmware-shim/<family>/tether_*.lua (NodeMCU: the call groups agent.lua's HAL.part loads from
 * the module's flash), copied as they are next to the bundle: dist/agents/<family>/tether_*.lua. Outputs: firmware-shim/common/protocol.lua
 * (committed, checked for staleness by test/gen-lua.test.ts) and the agent bundles, build
 * outputs in dist/agents/<family>/main.lua (never committed; see agentBundlePath in
 * src/util/repo-root.ts), which the simulators run, `tether flash` uploads and
 * `tether agent` copies out.
 */
import { readFileSync, writeFileSync, existsSync, readdirSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LUA_CONSTANTS } from '../src/codec/constants.js';

/** Repository root (this file runs from dist/scripts/). */
export const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

/** Families whose agents are bundled: every firmware-shim/<family>/ with a config.lua and an agent.lua. */
export function families(root = ROOT): string[] {
  const dir = join(root, 'firmware-shim');
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(dir, d.name, 'config.lua')) && existsSync(join(dir, d.name, 'agent.lua')))
    .map((d) => d.name)
    .sort();
}

const luaString = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/** Text of firmware-shim/common/protocol.lua. */
export function renderProtocolLua(): string {
  const lines = [
    '-- GENERATED from src/codec/constants.ts by scripts/gen-lua.ts. Do not edit.',
    'local TP = {',
    ...LUA_CONSTANTS.map(([k, v]) => `  ${k} = ${typeof v === 'number' ? v : luaString(v)},`),
    '}',
    '',
  ];
  return lines.join('\n');
}

/**
 * Families whose core is split (issue 8, the ESP8266's small heap): each block of
 * firmware-shim/common/core.lua between `-- @lazy NAME` and `-- @end` (a function
 * `function A.tether_X(A, N) ... end -- tether_X`) is left out of the resident bundle and
 * becomes the file tether_NAME.lua, loaded on first use: `call` (tether_calls: value decoding,
 * call dispatch) and `core` (tether_builtins: hello and the agent.* calls), `enc` (tether_enc: the
 * value encoder), `gap` (tether_gap: the list of missing frames) and `bundle` (tether_bundle: an
 * `M` frame's messages), which the core asks for with `HAL.part(name)` when it needs them. Session set-up stays resident: without a session no error could reach the host. Other families keep the blocks in their one
 * file, where they run once at load. A split family's files also get the protocol constants
 * written as literals ({@link inlineConstants}).
 */
export const SPLIT_CORE_FAMILIES = ['nodemcu'];

const LAZY_BLOCK = /^-- @lazy (\w+)[^\n]*\n(?:--[^\n]*\n)*function A\.(tether_\w+)\(A, N\)\n([\s\S]*?)^end -- \2\n-- @end\n/gm;

/**
 * A block of core.lua between the lines `-- @fast` and `-- @end fast`: a shortcut that saves
 * work per message and that the code around it does not need (without it the same result
 * comes the long way). A split family's bundle leaves these out: on the ESP8266 the heap, not
 * the CPU, is the bound (each costs resident bytecode; issue 8), and the NodeMCU agent's peak
 * in the 1 MiB echo at 10^-3 went over the simulated 44,000 bytes with them in.
 * Blocks between `-- @unsplit` and `-- @end unsplit` go the same way: code that only a family
 * setting `HAL.txq` or `HAL.hold` runs (LuatOS, Luat), which a split family's HAL leaves unset,
 * and ways of doing the same that spend heap for speed (a message escaped whole before it is cut).
 */
const FAST_BLOCK = /^[ \t]*-- @(fast|unsplit)\b[^\n]*\n[\s\S]*?^[ \t]*-- @end \1\n/gm;

/**
 * Lua text without its `-- @fast` and `-- @unsplit` blocks: what a split family's files keep of
 * it (tests run the one-file core this way to check the split family's code paths).
 */
export function stripFastBlocks(text: string): string {
  return text.replace(FAST_BLOCK, '');
}

/** core.lua and, for a split family, the blocks cut out of it: lazy name -> function body. */
function coreParts(family: string, root: string): { core: string; lazy: Map<string, string> } {
  const core = readFileSync(join(root, 'firmware-shim', 'common', 'core.lua'), 'utf8').replace(/\s+$/, '') + '\n';
  const lazy = new Map<string, string>();
  if (!SPLIT_CORE_FAMILIES.includes(family)) return { core, lazy };
  for (const m of core.matchAll(LAZY_BLOCK)) lazy.set(m[1], m[3].replace(FAST_BLOCK, ''));
  if (!lazy.has('call') || !lazy.has('core')) throw new Error('firmware-shim/common/core.lua: the "-- @lazy call" and "-- @lazy core" blocks (function A.tether_X(A, N) ... end -- tether_X, then -- @end) are missing');
  return { core: core.replace(LAZY_BLOCK, '').replace(FAST_BLOCK, ''), lazy };
}

/**
 * For a split family (the ESP8266's heap, issue 8): every `TP.NAME` of the protocol constants
 * (src/codec/constants.ts LUA_CONSTANTS) replaced by its value as a Lua literal, so the agent
 * keeps no TP table in its heap (the table, its 18 slots and the lookups cost about 1.5 KB idle
 * under the i386 lua5.1 measurement). `TP` itself stays defined (an empty table) for code that
 * passes it on.
 * @throws Error for a `TP.NAME` that is not a protocol constant (a typo: nil at run time).
 */
export function inlineConstants(text: string, file: string): string {
  const values = new Map<string, string | number>(LUA_CONSTANTS.map(([k, v]) => [k, v]));
  return text.replace(/\bTP\.([A-Za-z_][A-Za-z0-9_]*)/g, (_m, k: string) => {
    const v = values.get(k);
    if (v === undefined) throw new Error(`${file}: TP.${k} is not a protocol constant (src/codec/constants.ts)`);
    return typeof v === 'number' ? String(v) : luaString(v);
  });
}

/** Text of the bundled agent for a family (the resident file; for a split family without tether_calls, its constants inlined). */
export function renderAgent(family: string, root = ROOT): string {
  const read = (p: string) => readFileSync(join(root, 'firmware-shim', p), 'utf8').replace(/\s+$/, '') + '\n';
  const split = SPLIT_CORE_FAMILIES.includes(family);
  const text = [
    read(`${family}/config.lua`),
    `-- tether agent ${family}: GENERATED by scripts/gen-lua.ts from firmware-shim/common/*.lua and firmware-shim/${family}/*.lua. Edit those, not this file.`,
    split ? '-- the protocol constants (firmware-shim/common/protocol.lua) are written where they are used\nlocal TP = {}\n' : renderProtocolLua(),
    coreParts(family, root).core,
    read(`${family}/agent.lua`),
  ].join('\n');
  return split ? inlineConstants(text, `${family} agent`) : text;
}

/** The committed generated files: path relative to the root → expected content. */
export function generatedFiles(): Map<string, string> {
  const m = new Map<string, string>();
  m.set('firmware-shim/common/protocol.lua', renderProtocolLua());
  return m;
}

/**
 * A family's files loaded on first use (firmware-shim/<family>/tether_*.lua), sorted by name:
 * file name on the module → content. They go onto the module next to the main agent file.
 */
export function lazyAgentFiles(family: string, root = ROOT): Map<string, string> {
  const dir = join(root, 'firmware-shim', family);
  const m = new Map<string, string>();
  for (const [name, body] of coreParts(family, root).lazy) {
    m.set(`tether_${name}.lua`, `-- tether agent ${family}: a part of the core loaded on first use. GENERATED by scripts/gen-lua.ts from the "-- @lazy ${name}" block of firmware-shim/common/core.lua. Edit that, not this file.\nlocal A, N = ...\n${body}`);
  }
  for (const n of readdirSync(dir).filter((x) => /^tether_[a-z0-9]+\.lua$/.test(x))) {
    m.set(n, readFileSync(join(dir, n), 'utf8').replace(/\s+$/, '') + '\n');
  }
  if (SPLIT_CORE_FAMILIES.includes(family)) for (const [n, text] of m) m.set(n, inlineConstants(text, n));
  return new Map([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The agent bundles (build outputs): path relative to the root → content (main.lua and the lazy files). */
export function bundleFiles(root = ROOT): Map<string, string> {
  const m = new Map<string, string>();
  for (const f of families(root)) {
    m.set(`dist/agents/${f}/main.lua`, renderAgent(f, root));
    for (const [n, text] of lazyAgentFiles(f, root)) m.set(`dist/agents/${f}/${n}`, text);
  }
  return m;
}

/** Paths of generated files whose content on disk differs from what would be generated. */
export function staleFiles(root = ROOT): string[] {
  const stale: string[] = [];
  for (const [p, text] of generatedFiles()) {
    const abs = join(root, p);
    if (!existsSync(abs) || readFileSync(abs, 'utf8') !== text) stale.push(p);
  }
  return stale;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes('--check')) {
    const stale = staleFiles();
    if (stale.length) {
      console.error(`stale generated files (run node dist/scripts/gen-lua.js): ${stale.join(', ')}`);
      process.exit(1);
    }
    console.log('generated Lua files are up to date');
  } else {
    const bundlesOnly = process.argv.includes('--bundles');
    const out = bundlesOnly ? bundleFiles() : new Map([...generatedFiles(), ...bundleFiles()]);
    for (const [p, text] of out) {
      const abs = join(ROOT, p);
      // unchanged files are left alone: a simulator starting during a build never reads a
      // half-written agent, and file times say when an agent really changed
      if (existsSync(abs) && readFileSync(abs, 'utf8') === text) continue;
      mkdirSync(dirname(abs), { recursive: true });
      writeFileSync(abs, text);
      if (!bundlesOnly) console.log(`wrote ${p}`);
    }
  }
}

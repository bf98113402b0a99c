/**
 * Stock Lua 5.1 and 5.3 for the test suite, with Node as the only requirement: the reference
 * interpreters (PUC-Rio Lua 5.1.5 and 5.3.6, unmodified C sources) compiled to WebAssembly by
 * Emscripten, from the npm package `lua-wasm-bindings` (MIT, TypeScriptToLua's test
 * interpreters). The suite runs these by default, on CI and on a fresh machine alike, so no
 * Debian `lua5.1`/`lua5.3` is needed. (The i386 heap measurement of `npm run bench`,
 * scripts/heap-nodemcu.ts, still uses Debian's i386 lua5.1: it measures a 32-bit build's heap.)
 *
 * The bindings expose only part of the C API and pass C strings as UTF-8, so nothing binary
 * crosses that way. Instead every run gets a fresh Emscripten instance whose stdin, stdout and
 * stderr are byte devices (Module.stdin/stdout/stderr): {@link runLua} behaves like the
 * standalone `lua` command (`lua script args < stdin`), byte-exact in both directions. Host
 * files the script reads (the script itself, files named in `args`, `files`) are sent ahead of
 * stdin and read by a small Lua prelude into the instance's in-memory file system; `io.open`,
 * `io.lines`, `loadfile` and `dofile` find them under their host paths.
 *
 * {@link luacCheck} is `luac -p` (parse only) and {@link dumpChunk} is `luac -o` for 5.1
 * (string.dump of the loaded chunk; test/helpers/lua51-bytecode.ts reads it).
 */
import { readFileSync, existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

/** A stock Lua version the suite runs. */
export type LuaVersion = '5.1' | '5.3';

/** Result of {@link runLua}, like a finished `lua` process. */
export interface LuaRun {
  /** Exit status: 0, 1 for an uncaught error (message and traceback on stderr, as lua.c), or os.exit's. */
  status: number;
  /** Every byte the script wrote to stdout (io.write, print, io.stdout). */
  stdout: Buffer;
  /** stderr as text (latin1). */
  stderr: string;
}

/** Options of {@link runLua}. */
export interface LuaRunOptions {
  /** The script's arguments: `arg[1..n]` and the main chunk's `...` (default none). */
  args?: readonly string[];
  /** Bytes on stdin (default empty). */
  stdin?: Uint8Array | string;
  /**
   * Host files the script may read besides the script and existing files named in `args`
   * (absolute or relative to the current directory; default none).
   */
  files?: readonly string[];
  /** Script source instead of reading `script` from disk; `script` is then only its name (arg[0], chunkname). */
  source?: string;
}

const GLUE: Record<LuaVersion, string> = {
  '5.1': 'lua-wasm-bindings/dist/glue/glue-lua-5.1.5.js',
  '5.3': 'lua-wasm-bindings/dist/glue/glue-lua-5.3.6.js',
};

const require = createRequire(import.meta.url);
type Glue = (m: Record<string, unknown>) => {
  cwrap: (name: string, ret: string | null, args: string[]) => (...a: unknown[]) => any;
  ready: Promise<unknown>;
};
/** The WebAssembly API (not in this project's TypeScript lib settings). */
const WA = (globalThis as unknown as { WebAssembly: { Module: new (b: Uint8Array) => object; Instance: new (m: object, imports: object) => { exports: object } } }).WebAssembly;
const glues = new Map<LuaVersion, { glue: Glue; wasm: object }>();

/** The glue and the compiled module of version `v`, once per process (compiling takes most of a run's time). */
function loadGlue(v: LuaVersion): { glue: Glue; wasm: object } {
  let g = glues.get(v);
  if (!g) {
    let path: string;
    try {
      path = require.resolve(GLUE[v]);
    } catch {
      throw new Error(`Lua ${v} (WebAssembly) is missing: run "npm install" (devDependency lua-wasm-bindings)`);
    }
    g = { glue: require(path) as Glue, wasm: new WA.Module(readFileSync(path.replace(/\.js$/, '.wasm'))) };
    glues.set(v, g);
  }
  return g;
}

/** Thrown by Module.quit when the Lua program calls exit() (os.exit, or our prelude). */
class LuaExit {
  constructor(readonly status: number) {}
}

/**
 * The prelude, run first: reads the argument and file bundle from stdin (binary-safe
 * io.read(n)), copies the files into the in-memory file system, redirects the file functions,
 * sets `arg` and runs the script with a traceback on error (lua.c's behaviour: message on
 * stderr, exit status 1). Uses only what 5.1 and 5.3 share.
 */
const PRELUDE = `
local rd = io.read
local function num() return tonumber(rd("*l")) end
local nargs = num()
local args = {}
for i = 0, nargs do args[i] = rd(num()) or "" end
local map, nfiles = {}, num()
for i = 1, nfiles do
  local p = rd(num()) or ""
  local data = rd(num()) or ""
  local m = "/tmp/tether-" .. i
  local f = assert(io.open(m, "wb")) f:write(data) f:close()
  map[p] = m
end
local open, lines, load, unpack = io.open, io.lines, loadstring or load, unpack or table.unpack
local function vopen(p, mode)
  if map[p] and (mode == nil or mode:sub(1, 1) == "r") then return open(map[p], mode) end
  return open(p, mode)
end
io.open = vopen
io.lines = function(p, ...) if p ~= nil and map[p] then return lines(map[p], ...) end return lines(p, ...) end
loadfile = function(p)
  if p == nil then return load(rd("*a"), "=stdin") end
  local f, e = vopen(p, "rb")
  if not f then return nil, "cannot open " .. p end
  local s = f:read("*a") f:close()
  if s:sub(1, 1) == "#" then s = "--" .. s end
  return load(s, "@" .. p)
end
dofile = function(p) local f = assert(loadfile(p)) return f() end
-- Emscripten's exit() does not flush C stdio: flush before leaving
local exit, stdout, stderr, traceback, tostring = os.exit, io.stdout, io.stderr, debug.traceback, tostring
os.exit = function(...) stdout:flush() stderr:flush() return exit(...) end
arg = args
local main, err = loadfile(args[0])
if not main then stderr:write("lua: ", err, "\\n") os.exit(1) end
local ok, e = xpcall(function() return main(unpack(args, 1, nargs)) end, function(m) return traceback(tostring(m), 2) end)
stdout:flush()
if not ok then stderr:write("lua: ", e, "\\n") exit(1) end
exit(0)
`;

function field(b: Uint8Array): Buffer[] {
  return [Buffer.from(`${b.length}\n`), Buffer.from(b)];
}

/**
 * Run a Lua script like the stock `lua` command: `lua<v> script args... < stdin`. Synchronous;
 * a fresh interpreter each time. Never throws for a failing script (see {@link LuaRun.status});
 * throws when the WebAssembly build is missing.
 * @param v Lua version (`'5.1'` mirrors NodeMCU's and Luat's cores, `'5.3'` LuatOS's).
 * @param script Path of the script (read from disk unless `o.source` is given).
 */
export function runLua(v: LuaVersion, script: string, o: LuaRunOptions = {}): LuaRun {
  const args = [script, ...(o.args ?? [])];
  const files = new Map<string, Buffer>();
  const add = (p: string) => {
    if (!files.has(p) && existsSync(p) && statSync(p).isFile()) files.set(p, readFileSync(p));
    const abs = resolve(p);
    if (abs !== p && files.has(p)) files.set(abs, files.get(p)!);
  };
  if (o.source !== undefined) files.set(script, Buffer.from(o.source, 'latin1'));
  for (const p of [...args, ...(o.files ?? [])]) add(p);
  const parts: Buffer[] = [Buffer.from(`${args.length - 1}\n`)];
  for (const a of args) parts.push(...field(Buffer.from(a, 'latin1')));
  parts.push(Buffer.from(`${files.size}\n`));
  for (const [p, data] of files) parts.push(...field(Buffer.from(p, 'latin1')), ...field(data));
  parts.push(typeof o.stdin === 'string' ? Buffer.from(o.stdin, 'latin1') : Buffer.from(o.stdin ?? []));
  const input = Buffer.concat(parts);
  return runPrelude(v, input);
}

function runPrelude(v: LuaVersion, input: Buffer): LuaRun {
  const { glue, wasm } = loadGlue(v);
  let pos = 0;
  const out: number[] = [];
  const err: number[] = [];
  // Emscripten's Node glue adds process-wide handlers on every instance; keep the test runner's own
  const before = { u: process.listeners('uncaughtException'), r: process.listeners('unhandledRejection') };
  let m: ReturnType<Glue>;
  try {
    m = glue({
      instantiateWasm: (imports: object, receive: (i: object, m: object) => void) => {
        const instance = new WA.Instance(wasm, imports);
        receive(instance, wasm);
        return instance.exports;
      },
      stdin: () => (pos < input.length ? input[pos++] : null),
      stdout: (b: number) => out.push(b),
      stderr: (b: number) => err.push(b),
      print: (s: string) => err.push(...Buffer.from(`${s}\n`)),
      printErr: (s: string) => err.push(...Buffer.from(`${s}\n`)),
      quit: (status: number) => {
        throw new LuaExit(status);
      },
    });
  } finally {
    for (const l of process.listeners('uncaughtException')) if (!before.u.includes(l)) process.off('uncaughtException', l);
    for (const l of process.listeners('unhandledRejection')) if (!before.r.includes(l)) process.off('unhandledRejection', l);
  }
  m.ready.catch(() => undefined);
  const newstate = m.cwrap('luaL_newstate', 'number', []);
  const openlibs = m.cwrap('luaL_openlibs', null, ['number']);
  const loadstring = m.cwrap('luaL_loadstring', 'number', ['number', 'string']);
  const tostr = m.cwrap('lua_tolstring', 'string', ['number', 'number', 'number']);
  // lua_pcall is a function in 5.1 and a macro over lua_pcallk in 5.3 (extra args ignored by 5.1)
  const call = v === '5.1' ? m.cwrap('lua_pcall', 'number', ['number', 'number', 'number', 'number']) : m.cwrap('lua_pcallk', 'number', ['number', 'number', 'number', 'number', 'number', 'number']);
  let status = 0;
  try {
    const L = newstate();
    openlibs(L);
    if (loadstring(L, PRELUDE) !== 0) throw new Error(`prelude: ${tostr(L, -1, 0)}`);
    if (call(L, 0, 0, 0, 0, 0) !== 0) {
      err.push(...Buffer.from(`lua: ${tostr(L, -1, 0)}\n`, 'latin1'));
      status = 1;
    }
  } catch (e) {
    if (e instanceof LuaExit) status = e.status;
    else if (e instanceof Error && (e.name === 'RuntimeError' || e instanceof RangeError)) {
      // a trap (e.g. C stack overflow): the process would have crashed
      err.push(...Buffer.from(`lua: ${String(e)}\n`));
      status = 1;
    } else throw e;
  }
  return { status, stdout: Buffer.from(out), stderr: Buffer.from(err).toString('latin1') };
}

/**
 * `luac -p`: parse `source` under stock Lua `v` without running it.
 * @param chunkname As luac names a file: `@path` (default `=stdin`).
 * @returns undefined when it compiles, else the parser's message (`name:line: message`).
 */
export function luacCheck(v: LuaVersion, source: string | Buffer, chunkname = '=stdin'): string | undefined {
  const r = runLua(v, '=luac', {
    source: `local load = loadstring or load
local s = io.read("*a")
local f, e = load(s, ${JSON.stringify(chunkname)})
if not f then io.write(e) os.exit(1) end`,
    stdin: typeof source === 'string' ? Buffer.from(source, 'utf8') : source,
  });
  if (r.status === 0) return undefined;
  return r.stdout.toString('latin1') || r.stderr;
}

/**
 * `luac5.1 -o`: the Lua 5.1 bytecode of `source` (string.dump of the loaded main chunk, debug
 * information kept), for test/helpers/lua51-bytecode.ts. Throws with the parser's message when
 * the source does not compile.
 */
export function dumpChunk51(source: string | Buffer, chunkname = '=stdin'): Buffer {
  const r = runLua('5.1', '=luac', {
    source: `local f, e = loadstring(io.read("*a"), ${JSON.stringify(chunkname)})
if not f then io.stderr:write(e) os.exit(1) end
io.write(string.dump(f))`,
    stdin: typeof source === 'string' ? Buffer.from(source, 'utf8') : source,
  });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}

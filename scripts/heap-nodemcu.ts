/**
 * Lua heap of the NodeMCU agent, measured the way issue 8 prescribes: the 32-bit (i386)
 * Debian lua5.1 (double numbers, 32-bit pointers like the ESP8266's Lua 5.1 core), the agent
 * compiled with debug info stripped (`luac5.1 -s`, by the same i386 build), NodeMCU's C
 * modules (uart, tmr, node, net, wifi, bit) stubbed in Lua and created BEFORE the baseline,
 * so they stay outside the count.
 *
 *   node dist/scripts/heap-nodemcu.js            measure (says "i386 lua5.1 not available" without it),
 *                                                then the estimate for the agent in LFS (below)
 *   node dist/scripts/heap-nodemcu.js --fetch    first download lua5.1:i386, liblua5.1-0:i386 and
 *                                                libc6:i386 (apt-get download; needs
 *                                                `dpkg --add-architecture i386 && apt-get update`)
 *                                                and unpack them privately (dpkg-deb -x)
 *   node dist/scripts/heap-nodemcu.js --fetch-only   download and unpack, no measurement (exit 0
 *                                                once unpacked; a kernel without 32-bit support
 *                                                then needs qemu-i386 to run it)
 *   --lua CMD                                    measure with another interpreter (e.g. lua5.1)
 *   TETHER_HEAP_SAMPLE_ALL=1 node dist/scripts/heap-nodemcu.js   the peak over the whole run, the
 *                                                session's hello included (loads its parts at once)
 *
 * The i386 tree lives in $TETHER_LUA51_I386 (default ~/.cache/tether/lua5.1-i386). It runs
 * through its own ld-linux.so.2; on a kernel without 32-bit support, through qemu-i386
 * (Debian package qemu-user) when that is installed.
 *
 * Every agent file is measured the way it lives on the module: the resident tether.lua and the
 * files it loads on first use (dist/agents/nodemcu/tether_*.lua, what node.compile turns into
 * tether_*.lc on the module) are all compiled with `luac -s` into one directory, the driver's
 * `file.exists` sees them there and the agent's loadfile reads them (the driver runs in that
 * directory), so a group loaded at the peak is counted at the peak, and the idle figure counts
 * only what stays resident.
 *
 * Figures (KB = 1024 bytes of `collectgarbage("count")`, after full GCs):
 * - idle: resident after loading, a session (S + hello) and timer ticks, everything acknowledged;
 * - peak: the largest live heap seen at any firmware entry point (every uart.write, socket
 *   send, callback) while a TCP socket receives 1460 bytes (forwarded to the host as an event)
 *   and the host sends 1460 bytes through it (a call reassembled from 255-byte frames). Each
 *   sample runs a full GC first: it is live data, not garbage waiting for collection.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callMessage, encodeFrame, fragment } from '../src/codec/frame.js';
import { Handle, type WireValue } from '../src/codec/values.js';
import { agentBundlePath, readLazyAgentFiles } from '../src/util/repo-root.js';

/** Result of one measurement. */
export interface NodemcuHeap {
  /** Interpreter used (`i386 lua5.1`, or the command given). */
  interpreter: string;
  /** Resident Lua heap of the agent after full GC, idle (KB). */
  idleKB: number;
  /** Largest live heap while receiving and sending 1460 bytes (KB). */
  peakKB: number;
  /** Size of the stripped bytecode of the resident file (bytes). */
  bytecodeBytes: number;
  /** Size of the stripped bytecode of the files loaded on first use (bytes, all of them). */
  lazyBytecodeBytes: number;
  /** Payload bytes the stubbed socket really sent (1460 when the call worked). */
  sentBytes: number;
  /** Bytes of the 1460-byte receive found in the agent's event frames (1460 when forwarded). */
  forwardedBytes: number;
}

/** Where the private i386 tree is unpacked. */
export function i386Dir(): string {
  return process.env.TETHER_LUA51_I386 ?? join(homedir(), '.cache', 'tether', 'lua5.1-i386');
}

/** A command prefix that runs a binary of the i386 tree, or undefined. */
function i386Runner(dir = i386Dir()): ((bin: string) => string[]) | undefined {
  const ld = join(dir, 'lib', 'i386-linux-gnu', 'ld-linux.so.2');
  const lua = join(dir, 'usr', 'bin', 'lua5.1');
  if (!existsSync(ld) || !existsSync(lua)) return undefined;
  const libs = [join(dir, 'usr', 'lib', 'i386-linux-gnu'), join(dir, 'lib', 'i386-linux-gnu')].join(':');
  const make = (pre: string[]) => (bin: string) => [...pre, ld, '--library-path', libs, join(dir, 'usr', 'bin', bin)];
  for (const pre of [[], ['qemu-i386']]) {
    const run = make(pre);
    const [cmd, ...args] = run('lua5.1');
    const r = spawnSync(cmd, [...args, '-e', 'io.write(_VERSION)'], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout === 'Lua 5.1') return run;
  }
  return undefined;
}

/** Download and unpack the i386 lua5.1 privately (apt-get download + dpkg-deb -x). */
export function fetchI386(dir = i386Dir()): void {
  mkdirSync(dir, { recursive: true });
  const debs = mkdtempSync(join(tmpdir(), 'tether-i386-'));
  try {
    const r = spawnSync('apt-get', ['download', 'lua5.1:i386', 'liblua5.1-0:i386', 'libc6:i386', 'libreadline8:i386', 'libtinfo6:i386'], { cwd: debs, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`apt-get download failed (enable the architecture first: dpkg --add-architecture i386 && apt-get update): ${r.stderr.trim()}`);
    for (const f of readdirSync(debs).filter((n) => n.endsWith('.deb'))) {
      const x = spawnSync('dpkg-deb', ['-x', join(debs, f), dir], { encoding: 'utf8' });
      if (x.status !== 0) throw new Error(`dpkg-deb -x ${f}: ${x.stderr}`);
    }
  } finally {
    rmSync(debs, { recursive: true, force: true });
  }
}

const NONCE = 4242;

/** The host's side, as phases the driver plays: frames to feed and firmware events between them. */
function hostInput(): Buffer {
  let seq = 0;
  const call = (id: number, fn: string, args: WireValue[]) => {
    const lines = fragment(callMessage(id, fn, args), 255, seq, 0);
    seq += lines.length;
    return Buffer.concat(lines);
  };
  const mark = (m: string) => Buffer.from(`%%${m}\n`);
  const payload = Buffer.alloc(1460);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 131 + 7) % 256;
  const h = new Handle(1); // the first handle the agent hands out
  return Buffer.concat([
    encodeFrame(`S${NONCE} 255`),
    call(1, 'hello', []),
    mark('K'),
    mark('TICK'),
    mark('K'),
    mark('IDLE'),
    call(2, 'net.createConnection', []),
    call(3, 'tcpsocket.on', [h, 'receive', true]),
    call(4, 'tcpsocket.connect', [h, 7, '127.0.0.1']),
    mark('K'),
    mark('BASEPEAK'),
    mark('RECV'),
    mark('K'),
    call(5, 'tcpsocket.send', [h, payload]),
    mark('K'),
    mark('TICK'),
    mark('K'),
    mark('END'),
  ]);
}

/** Lua 5.1 driver: stubs, baseline, the agent, the phases. Prints `RESULT idle peak sent fwd` on stderr. */
const DRIVER = String.raw`
local agentfile, inputfile, lfsmode = arg[1], arg[2], arg[3]
local function readall(p) local f = assert(io.open(p, "rb")) local s = f:read("*a") f:close() return s end
local input = readall(inputfile)
local function norm(x) return x % 4294967296 end
local function op(f)
  local function two(a, b)
    a, b = norm(a), norm(b)
    local r, p = 0, 1
    while a > 0 or b > 0 do
      local x, y = a % 2, b % 2
      if f(x, y) then r = r + p end
      a, b, p = (a - x) / 2, (b - y) / 2, p * 2
    end
    return r
  end
  return function(a, b, ...) local r = two(a, b) for i = 1, select("#", ...) do r = two(r, (select(i, ...))) end return r end
end
bit = {
  band = op(function(x, y) return x == 1 and y == 1 end), bor = op(function(x, y) return x == 1 or y == 1 end),
  bxor = op(function(x, y) return x ~= y end),
  lshift = function(a, n) return norm(norm(a) * 2 ^ n) end,
  rshift = function(a, n) local x = norm(a) local d = 2 ^ n return (x - x % d) / d end,
}
local CT = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do if c % 2 == 1 then c = bit.bxor((c - c % 2) / 2, 3988292384) else c = c / 2 end end
  CT[i] = c
end
local function hex8(s)
  local c = 4294967295
  for i = 1, #s do c = bit.bxor(CT[bit.band(bit.bxor(c, s:byte(i)), 255)], (c - c % 256) / 256) end
  return string.format("%08X", bit.bxor(c, 4294967295))
end
local function live() collectgarbage("collect") collectgarbage("collect") return collectgarbage("count") end
local BASE, PEAK, SENT, FWD, TOP = 0, 0, 0, 0, nil
local sampling = (os.getenv("TETHER_HEAP_SAMPLE_ALL") == "1")
local PHASE, PEAKAT = "start", ""
-- LFS mode (third argument "lfs"): an estimate of the heap on a firmware with the Lua Flash Store,
-- where function prototypes and their constant strings live in flash: every sample subtracts the
-- prototypes still alive. A file's prototypes are measured when it loads (the heap a loadfile adds:
-- prototypes, constant strings new to the heap, one closure) less what its main function frees once
-- it has run (the main prototype's own code and constants); they count as alive while the value
-- its main chunk returned (the agent's table, a group's table) is, a weak key here. Prototypes
-- only a callback still holds then count as RAM: the estimate errs on the high side.
local LFS = lfsmode == "lfs" and setmetatable({}, { __mode = "k" }) or nil
local function inram() local k = live() if LFS then for _, n in pairs(LFS) do k = k - n end end return k end
local function sample() if sampling then local k = inram() if k > PEAK then PEAK = k PEAKAT = PHASE end end end
local out = io.stdout
uart = {
  on = function(ev, term, fn, run) UARTCB = fn end,
  write = function(id, s)
    sample()
    local q = s:match("^~[RXEPL&$](%d+)%.")
    if q then TOP = tonumber(q) end
    local n = select(2, s:gsub("\131", "")) -- payload byte 0x83 marks forwarded receive data (see below)
    FWD = FWD + n
  end,
  setup = function() end,
}
local timers = {}
tmr = { ALARM_SINGLE = 0, ALARM_SEMI = 1, ALARM_AUTO = 2, now = function() return 123456 end,
  create = function()
    local t = {}
    t.alarm = function(self, ms, mode, fn) self.fn, self.mode = fn, mode if not self.listed then self.listed = true timers[#timers + 1] = self end return true end
    t.unregister = function(self) self.fn = nil end
    return t
  end }
-- the agent's files loaded on first use (compiled, paths in arg[4..]) stand for SPIFFS: the agent
-- reads them by name with file.exists and loadfile
local LAZY = {}
for i = 4, #arg do LAZY[string.match(arg[i], "[^/]+$")] = arg[i] end
file = { exists = function(n) return LAZY[n] ~= nil end }
do local lf = loadfile loadfile = function(n)
  if not LFS then return lf(LAZY[n] or n) end
  local a = live()
  local chunk, e = lf(LAZY[n] or n)
  if not chunk then return chunk, e end
  local whole = live() - a
  return function(...)
    local running = {} -- all of the file's prototypes are in flash while its main chunk runs, too
    LFS[running] = whole
    local t = chunk(...)
    local c1 = live() chunk = nil
    if type(t) == "table" then LFS[t] = whole - (c1 - live()) end
    LFS[running] = nil
    return t
  end
end end
node = { heap = function() return 40000 end, chipid = function() return 4242 end, random = function() return 777 end,
  info = function(g) if g == "sw_version" then return { node_version_major = 3, node_version_minor = 0, node_version_revision = 0, git_release = "" } end
    if g == "build_config" then return { modules = "bit,file,net,node,tmr,uart,wifi", number_type = "double" } end end,
  output = function() end, setonerror = function() end, restart = function() end }
wifi = { sta = { status = function() return 5 end, getip = function() return "127.0.0.1" end }, getmode = function() return 1 end }
local Sock = {} Sock.__index = Sock
function Sock:on(ev, fn) sample() self.cb[ev] = fn end
function Sock:connect(port, host) sample() self.peer = true end
function Sock:send(data, fn) sample() SENT = SENT + #data end
function Sock:close() end
local SOCKS = {}
net = { TCP = 1, UDP = 2,
  createConnection = function() local s = setmetatable({ cb = {} }, Sock) SOCKS[#SOCKS + 1] = s return s end,
  createServer = function() return setmetatable({ cb = {} }, Sock) end,
  createUDPSocket = function() return setmetatable({ cb = {} }, Sock) end,
  dns = { resolve = function() end, getdnsserver = function() return "127.0.0.1" end, setdnsserver = function() end } }
-- 1460 bytes of 0x83 (a byte the protocol sends raw: counting it in the agent's output proves the
-- forward), every eighth byte \n or DLE instead: data with bytes to escape, as a binary stream
-- has (1 in 128 is one), so the frame builder's escaping is counted too; RAWN of them are 0x83
local RECV = string.rep("\131\131\131\131\131\131\131\n\131\131\131\131\131\131\131\16", 91) .. "\131\131\131\131"
local RAWN = select(2, RECV:gsub("\131", ""))
local function ackall()
  if TOP then local f = "~A" .. ((TOP + 1) % 4096) .. " 0 255 ${NONCE} 0" UARTCB(f .. " " .. hex8(f) .. "\n") end
end
local function tick(n) for _ = 1, n do for _, t in ipairs(timers) do local fn = t.fn if fn then if t.mode == 0 then t.fn = nil end fn(t) end end end end

BASE = live()
local f = assert(loadfile(agentfile))
AG = f()
f = nil
local pos, IDLE = 1, 0
while pos <= #input do
  local nl = input:find("\n", pos, true)
  local stop = nl and math.min(nl, pos + 254) or math.min(#input, pos + 254)
  local piece = input:sub(pos, stop)
  local m = piece:match("^%%%%(%u+)\n$")
  PHASE = m or piece:sub(1, 24)
  if m == "K" then ackall()
  elseif m == "TICK" then tick(25)
  elseif m == "IDLE" then IDLE = inram() - BASE IDLEOK = AG.idle()
  elseif m == "BASEPEAK" then if not sampling then sampling = true PEAK = inram() end
  elseif m == "RECV" then local s = SOCKS[1] sample() s.cb.receive(s, RECV)
  elseif m == "END" then sampling = false
  else UARTCB(piece) sample() end
  piece = nil
  pos = stop + 1
end
if os.getenv("TETHER_HEAP_SAMPLE_ALL") == "1" then io.stderr:write("PEAKAT " .. PEAKAT .. "\n") end
io.stderr:write(string.format("RESULT %.3f %.3f %d %d %s\n", IDLE, PEAK - BASE, SENT, FWD == RAWN and #RECV or FWD, tostring(IDLEOK and AG.idle())))
`.replace('${NONCE}', String(NONCE));

/**
 * An interpreter given as a function instead of a command: runs it with `args` (as the
 * command's arguments) and returns its exit status and stderr (latin1). The test suite passes
 * its WebAssembly Lua 5.1 this way (test/agent-heap.test.ts).
 */
export type LuaExec = (args: string[]) => { status: number | null; stderr: string; error?: Error };

function exec(cmd: string[] | LuaExec, args: string[]): { status: number | null; stderr: string; error?: Error } {
  if (typeof cmd === 'function') return cmd(args);
  return spawnSync(cmd[0], [...cmd.slice(1), ...args], { encoding: 'latin1', timeout: 300000, maxBuffer: 64 << 20 });
}

/**
 * Measure. `lua` and `luac` are command prefixes or {@link LuaExec} functions (the i386 build
 * by default); `agentFile` is the resident agent file (default the bundle,
 * dist/agents/nodemcu/main.lua; for experiments). With `lfs` the figures are an estimate for a
 * firmware whose Lua Flash Store holds the agent's files (`tether agent --lfs`): the same run, less
 * the function prototypes and constant strings still alive at each sample, which LFS keeps in
 * flash (the driver's "LFS mode" says how they are measured). @default lfs false
 * @throws Error when no interpreter is available or the agent fails under it.
 */
export function measureNodemcuHeap(o: { lua?: string[] | LuaExec; luac?: string[] | LuaExec; interpreter?: string; agentFile?: string; lfs?: boolean } = {}): NodemcuHeap {
  let lua = o.lua;
  let luac = o.luac;
  let interpreter = o.interpreter ?? (Array.isArray(lua) ? lua.join(' ') : '');
  if (!lua) {
    const run = i386Runner();
    if (!run) throw new Error('i386 lua5.1 not available');
    lua = run('lua5.1');
    luac = run('luac5.1');
    interpreter = 'i386 lua5.1 (Debian 5.1.5)';
  }
  luac ??= ['luac5.1'];
  const dir = mkdtempSync(join(tmpdir(), 'tether-heap-'));
  try {
    const bc = join(dir, 'tether.lc');
    const compile = (src: string, out: string) => {
      const c = exec(luac!, ['-s', '-o', out, src]);
      if (c.status !== 0) throw new Error(`luac -s failed: ${c.stderr || c.error?.message}`);
      return Number(spawnSync('stat', ['-c', '%s', out], { encoding: 'utf8' }).stdout.trim());
    };
    const size = compile(o.agentFile ?? agentBundlePath('nodemcu'), bc);
    let lazy = 0;
    const lazyFiles: string[] = [];
    for (const [name, text] of readLazyAgentFiles('nodemcu')) {
      const src = join(dir, `src-${name}`);
      writeFileSync(src, text);
      const out = join(dir, name.replace(/\.lua$/, '.lc'));
      lazy += compile(src, out);
      lazyFiles.push(out);
    }
    writeFileSync(join(dir, 'driver.lua'), DRIVER);
    writeFileSync(join(dir, 'input.bin'), hostInput());
    const r = exec(lua, [join(dir, 'driver.lua'), bc, join(dir, 'input.bin'), o.lfs ? 'lfs' : 'ram', ...lazyFiles]);
    const m = /RESULT (\S+) (\S+) (\d+) (\d+) (\S+)/.exec(r.stderr ?? '');
    const at = /PEAKAT ([^\n]*)/.exec(r.stderr ?? '');
    if (at) process.stderr.write(`peak at: ${JSON.stringify(at[1])}\n`);
    if (r.status === 0 && m && m[5] !== 'true') throw new Error(`the agent under ${interpreter} still had unacknowledged frames when measured (idle ${m[1]} KB, peak ${m[2]} KB): the driver's acknowledgements failed`);
    if (r.status !== 0 || !m) throw new Error(`the agent failed under ${interpreter}: ${(r.stderr || r.error?.message || '').slice(0, 800)}`);
    return { interpreter, idleKB: Number(m[1]), peakKB: Number(m[2]), sentBytes: Number(m[3]), forwardedBytes: Number(m[4]), bytecodeBytes: size, lazyBytecodeBytes: lazy };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  if (args.includes('--fetch') || args.includes('--fetch-only')) fetchI386();
  // --fetch-only: download and unpack, nothing else (.ci/run, which then makes sure the
  // binary can run: through qemu-i386 on a kernel without 32-bit support)
  if (args.includes('--fetch-only')) process.exit(0);
  const li = args.indexOf('--lua');
  try {
    const how = li >= 0 ? { lua: [args[li + 1]], luac: [args[li + 1].replace(/^lua/, 'luac')] } : {};
    const r = measureNodemcuHeap(how);
    console.log(`NodeMCU agent heap (${r.interpreter}, luac -s bytecode ${r.bytecodeBytes} bytes resident + ${r.lazyBytecodeBytes} bytes loaded on first use): idle ${r.idleKB.toFixed(1)} KB, peak ${r.peakKB.toFixed(1)} KB while receiving and sending 1460 bytes (goal <= 16 / <= 24 KB)`);
    const l = measureNodemcuHeap({ ...how, lfs: true });
    console.log(`with the agent in LFS (estimate: the same run less the prototypes and constant strings alive, which LFS keeps in flash): idle ${l.idleKB.toFixed(1)} KB, peak ${l.peakKB.toFixed(1)} KB`);
    for (const x of [r, l]) if (x.sentBytes !== 1460 || x.forwardedBytes !== 1460) console.log(`warning: sent ${x.sentBytes} / forwarded ${x.forwardedBytes} of 1460 bytes`);
  } catch (e) {
    console.log((e as Error).message);
    process.exitCode = 1;
  }
}

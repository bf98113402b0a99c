/**
 * The Luat agent under real Lua 5.1 rules (issue #4, "the agent passes under Lua 5.1
 * rules, integer-only mode included"):
 * - `luac -p` of stock Lua 5.1 on the bundled firmware-shim/luat/main.lua (5.1 syntax: no goto, //, bit ops);
 * - the whole agent run by the real Lua 5.1 interpreter against a pure-Lua stub firmware
 *   (rtos queue, uart ring, crypto, a fake socketcore) plus the simulator's own sys.lua,
 *   fed frames in odd-sized chunks (partial lines), in a FLOAT core and in an integer-only
 *   core (no math library, no float conversions in string.format);
 * - a source scan for what only an integer-only core would reject at run time (`/` truncates
 *   there, `math` is absent, `%f`/`%g` are not in its string.format).
 * The interpreter is PUC-Rio Lua 5.1.5 compiled to WebAssembly (test/helpers/lua.ts, npm
 * devDependency lua-wasm-bindings): Node is all this test needs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import type { Message } from '../src/codec/frame.js';
import { AgentHost, txt } from './helpers/agent-host.js';
import { Float, type WireValue } from '../src/codec/values.js';
import { parseHello } from '../src/rpc/client.js';
import { renderAgent } from '../scripts/gen-lua.js';
import { SYS_LUA } from '../src/sim/luat/sys-lua.js';
import { luacCheck, runLua } from './helpers/lua.js';

const ROOT = repoRoot();
const MAIN = join(ROOT, 'dist/agents/luat/main.lua');

/** A stub Luat firmware in pure Lua 5.1 (no bit library: CRC-32 by arithmetic). */
const HARNESS = String.raw`
local MAIN, SYSLUA, INPUT, MODE = arg[1], arg[2], arg[3], arg[4]
local sfmt, schar, sbyte, ssub = string.format, string.char, string.byte, string.sub
local stderr, stdout, lines = io.stderr, io.stdout, io.lines
local function err(s) stderr:write(s .. "\n") end
print = function(...)
  local t = {}
  for i = 1, select("#", ...) do t[#t + 1] = tostring((select(i, ...))) end
  err("TRACE " .. table.concat(t, " "))
end

if MODE == "int" then
  -- an integer-only core: no math library, no float conversions
  math = nil
  package.loaded.math = nil
  local rawfmt, sfind = string.format, string.find
  string.format = function(f, ...)
    if type(f) == "string" and sfind(f, "%%[-+ #0]*%d*%.?%d*[eEfgGaA]") then error("invalid option to 'format' (integer-only core)", 2) end
    return rawfmt(f, ...)
  end
end

-- CRC-32/ISO-HDLC by arithmetic (nibble XOR table), signed like the core's crypto.crc32
local X4 = {}
for a = 0, 15 do
  for b = 0, 15 do
    local r, p, x, y = 0, 1, a, b
    while x > 0 or y > 0 do
      local u, v = x % 2, y % 2
      if u ~= v then r = r + p end
      x, y, p = (x - u) / 2, (y - v) / 2, p * 2
    end
    X4[a * 16 + b] = r
  end
end
local function xor8(a, b)
  local al, bl = a % 16, b % 16
  return X4[(a - al) / 16 * 16 + (b - bl) / 16] * 16 + X4[al * 16 + bl]
end
local T1, T2, T3, T4 = {}, {}, {}, {}
for i = 0, 255 do
  local c = { i, 0, 0, 0 }
  for _ = 1, 8 do
    local lsb = c[1] % 2
    for k = 1, 4 do
      local hi = c[k + 1] and (c[k + 1] % 2) or 0
      c[k] = (c[k] - c[k] % 2) / 2 + hi * 128
    end
    if lsb == 1 then c = { xor8(c[1], 32), xor8(c[2], 131), xor8(c[3], 184), xor8(c[4], 237) } end
  end
  T1[i], T2[i], T3[i], T4[i] = c[1], c[2], c[3], c[4]
end
local function crc32(s)
  local c1, c2, c3, c4 = 255, 255, 255, 255
  for i = 1, #s do
    local t = xor8(c1, sbyte(s, i))
    c1, c2, c3, c4 = xor8(c2, T1[t]), xor8(c3, T2[t]), xor8(c4, T3[t]), T4[t]
  end
  c1, c2, c3, c4 = 255 - c1, 255 - c2, 255 - c3, 255 - c4
  local v = ((c4 * 256 + c3) * 256 + c2) * 256 + c1
  if c4 >= 128 then v = v - 4294967296 end
  return v
end
local function hex8(c)
  if c < 0 then c = c + 4294967296 end
  local lo = c % 65536
  return sfmt("%04X%04X", (c - lo) / 65536, lo)
end

local MSG = { MSG_TIMER = 5, MSG_UART_RXDATA = 6, MSG_UART_TX_DONE = 7, MSG_SOCK_RECV_IND = 31, MSG_SOCK_SEND_CNF = 32,
  MSG_SOCK_CLOSE_CNF = 33, MSG_SOCK_CONN_CNF = 34, MSG_SOCK_SEND_IND = 35, MSG_SOCK_CLOSE_IND = 36 }
local queue, kicked, now, timers = {}, false, 0, {}
local function post(m) queue[#queue + 1] = m end
local out, ring, uartid = {}, "", nil
rtos = {
  receive = function() return 4 end,
  timer_start = function(id, ms) timers[id] = now + ms return 1 end,
  timer_stop = function(id) timers[id] = nil return 1 end,
  get_version = function() return MODE == "int" and "Luat_V0026_RDA8910" or "Luat_V0026_RDA8910_TTS_FLOAT" end,
  tick = function() return now * 16 end,
  poweron_reason = function() return 0 end,
  openSoftDog = function() end,
  eatSoftDog = function() end,
  restart = function() error("restart requested") end,
  set_trace = function() end,
  WAIT_MSG_TIMEOUT = 4, INF_TIMEOUT = -1,
}
for k, v in pairs(MSG) do rtos[k] = v end
uart = {
  ATC = 127, USB = 129, PAR_NONE = 2, STOP_1 = 0,
  setup = function(id, baud) if id ~= 127 then uartid = id end return baud end,
  write = function(id, ...)
    local n = 0
    for i = 1, select("#", ...) do
      local s = select(i, ...)
      if id == uartid then out[#out + 1] = s end
      n = n + #s
    end
    return n
  end,
  read = function(id, n)
    assert(type(n) == "number", "the stub reads by count only")
    local s = ssub(ring, 1, n)
    ring = ssub(ring, n + 1)
    return s
  end,
  close = function() end,
}
crypto = {
  crc32 = function(s, len) assert(type(len) == "number", "crc32: len is required") return crc32(ssub(s, 1, len)) end,
}
__fs_store = {}
__fs = { read = function(p) return __fs_store[p] end, write = function(p, d) __fs_store[p] = d return true end, remove = function(p) __fs_store[p] = nil return true end }
__sim_kick = function() kicked = true end

-- a fake socketcore: echoes what is sent
local slots = {}
local function sockmsg(name, idx, result, lenname, len)
  local m = { id = MSG["MSG_SOCK_" .. name], socket_index = idx, result = result }
  if lenname then m[lenname] = len end
  post(m)
end
socketcore = { SOL_SOCKET = 4095, IPPROTO_TCP = 6, SO_REUSEADDR = 4, SO_KEEPALIVE = 8, TCP_KEEPIDLE = 3, TCP_KEEPINTVL = 4,
  TCP_KEEPCNT = 5, ERR_OK = 0, ERR_ENOTCONN = 11, ERR_EARG = 16 }
local function conn(ext, typ, addr, port, cert)
  for i = 0, 9 do
    if not slots[i] then
      slots[i] = { state = "connected", rx = "" }
      local ok = 0
      if typ == 2 and (type(cert) ~= "table" or type(cert.hostName) ~= "string" or type(cert.caCert) ~= "string") then ok = 1 end
      if port == 1 then ok = 1 end
      if ok == 1 then slots[i].state = "closed" end
      sockmsg("CONN_CNF", i, ok)
      return i
    end
  end
  if ext then return -1 end
  return nil
end
socketcore.sock_conn = function(...) return conn(false, ...) end
socketcore.sock_conn_ext = function(...) return conn(true, ...) end
socketcore.sock_send = function(idx, data)
  local s = slots[idx]
  if not s or s.state ~= "connected" then return 0, 11 end
  s.rx = s.rx .. data
  sockmsg("SEND_CNF", idx, 0, "send_len", #data)
  sockmsg("RECV_IND", idx, 0, "recv_len", #data)
  return 1, 0
end
socketcore.sock_recv = function(idx, len)
  local s = slots[idx]
  if not s then return "" end
  local d = ssub(s.rx, 1, len)
  s.rx = ssub(s.rx, len + 1)
  return d
end
socketcore.sock_close = function(idx)
  if not slots[idx] then return 0 end
  slots[idx].state = "closed"
  sockmsg("CLOSE_CNF", idx, 99)
  return 1
end
socketcore.sock_destroy = function(idx)
  if slots[idx] and slots[idx].state == "closed" then slots[idx] = nil return 1 end
  return 0
end
socketcore.sock_setopt = function(idx, level, opt, val)
  if not slots[idx] or type(val) ~= "number" then return -1 end
  return 0
end
net = { getState = function() return "REGISTERED" end, getRssi = function() return 21 end, startQueryAll = function() end }
misc = { getImei = function() return "866714040000017" end, getModelType = function() return "Air724UG" end }
link = { isReady = function() return true end }
local woke
pm = { wake = function(t) woke = t end, isSleep = function(t) return woke ~= t end }

dofile(SYSLUA)
local agent = assert(loadfile(MAIN))
agent()

local function step(...)
  local ok, e = pcall(__luat_step, ...)
  if not ok then err("FATAL " .. tostring(e)) os.exit(3) end
end
local function run()
  local n = 0
  while #queue > 0 or kicked do
    n = n + 1
    if n > 100000 then err("FATAL runaway loop") os.exit(3) end
    kicked = false
    if #queue > 0 then
      local m = table.remove(queue, 1)
      if m.id then step(m) else step(m[1], m[2]) end
    else
      step()
    end
  end
end
local function advance(ms)
  local target = now + ms
  while true do
    local id, due
    for k, d in pairs(timers) do if d <= target and (not due or d < due) then id, due = k, d end end
    if not id then break end
    timers[id] = nil
    now = due
    post({ MSG.MSG_TIMER, id })
    run()
  end
  now = target
end
local function unhex(h) return (string.gsub(h, "(%x%x)", function(x) return schar(tonumber(x, 16)) end)) end
local function hex(s) return (string.gsub(s, "(.)", function(c) return sfmt("%02X", sbyte(c)) end)) end

run()
for line in lines(INPUT) do
  local kind, rest = ssub(line, 1, 1), ssub(line, 3)
  if kind == "H" then
    local wasEmpty = ring == ""
    ring = ring .. unhex(rest)
    if wasEmpty then post({ MSG.MSG_UART_RXDATA, uartid }) end
    run()
  elseif kind == "T" then
    advance(tonumber(rest))
  elseif kind == "L" then
    assert(loadstring(rest))()
    run()
  elseif kind == "K" then
    -- the host acknowledges every frame the agent sent so far: A<last seq + 1> 0 255 <nonce> 0
    local top
    for q in string.gmatch(table.concat(out), "\n~[RXEPL&$](%d+)%.") do top = tonumber(q) end
    if top then
      local f = "~A" .. ((top + 1) % 4096) .. " 0 255 " .. rest .. " 0"
      local wasEmpty = ring == ""
      ring = ring .. f .. " " .. hex8(crc32(f)) .. "\n"
      if wasEmpty then post({ MSG.MSG_UART_RXDATA, uartid }) end
      run()
    end
  end
end
advance(2500)
stdout:write(hex(table.concat(out)), "\n")
err("WOKE " .. tostring(woke))
`;

/**
 * Run the agent under Lua 5.1 with `input` (lines `H <hex>` bytes, `T <ms>` time, `L <lua>`,
 * `K <nonce>` the host acknowledges everything so far); returns the host's view and stderr.
 */
function runAgent(mode: 'float' | 'int', input: string[]): { host: AgentHost; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tether-luat-'));
  try {
    writeFileSync(join(dir, 'harness.lua'), HARNESS);
    writeFileSync(join(dir, 'sys.lua'), SYS_LUA);
    writeFileSync(join(dir, 'input.txt'), input.join('\n') + '\n');
    const run = runLua('5.1', join(dir, 'harness.lua'), { args: [MAIN, join(dir, 'sys.lua'), join(dir, 'input.txt'), mode] });
    const r = { status: run.status, stderr: run.stderr, stdout: run.stdout.toString('utf8') };
    assert.equal(r.status, 0, `the agent failed under Lua 5.1 (${mode}):\n${r.stderr}`);
    const host = new AgentHost();
    host.receive(Buffer.from(r.stdout.trim(), 'hex'));
    host.assertClean('the Luat agent');
    return { host, stderr: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Feed bytes as hex lines cut into odd-sized chunks, so lines arrive in pieces (and several per chunk). */
function chunked(wire: Buffer, sizes = [7, 1, 300, 33, 64, 2, 129]): string[] {
  const out: string[] = [];
  let i = 0;
  let k = 0;
  while (i < wire.length) {
    const n = sizes[k++ % sizes.length];
    out.push('H ' + wire.subarray(i, i + n).toString('hex'));
    i += n;
  }
  return out;
}

const xcode = (host: AgentHost, id: number) => host.code(id);
const reply = (host: AgentHost, id: number) => host.values(id);

function allValues(host: AgentHost): WireValue[] {
  const out: WireValue[] = [];
  const walk = (v: WireValue) => {
    out.push(v);
    if (v instanceof Map) for (const [k, x] of v) walk(k as WireValue), walk(x);
  };
  for (const m of host.messages) if ('values' in m) for (const v of m.values) walk(v);
  return out;
}

test('the bundled Luat agent is up to date and is valid Lua 5.1 syntax (luac -p)', () => {
  assert.equal(readFileSync(MAIN, 'utf8'), renderAgent('luat'), 'dist/agents/luat/main.lua is stale: run npm run build');
  assert.equal(luacCheck('5.1', readFileSync(MAIN), `@${MAIN}`), undefined, 'Lua 5.1 luac -p rejected main.lua');
});

for (const mode of ['float', 'int'] as const) {
  test(`the agent runs under the real Lua 5.1 (${mode === 'int' ? 'integer-only core: no math, no %f/%g' : 'FLOAT core'}): hello, every socketcore call, messages, status`, () => {
    const cert = '-----BEGIN CERTIFICATE-----\n' + 'A'.repeat(700) + '\n-----END CERTIFICATE-----\n';
    const hb = new AgentHost(4242);
    const calls: Array<[number, string, WireValue[]?]> = [
      [1, 'hello', [2, 4096]],
      [2, 'socketcore.consts'],
      [3, 'socketcore.sock_conn_ext', [0, '127.0.0.1', 7]],
      [4, 'socketcore.sock_send', [0, Buffer.from('hello over 5.1')]],
      [5, 'socketcore.sock_recv', [0, 14]],
      [6, 'socketcore.sock_setopt', [0, 0xfff, 8, 1]],
      [7, 'socketcore.sock_setopt', [0, 0xfff, 8, 'x']],
      [8, 'socketcore.sock_close', [0]],
      [9, 'socketcore.sock_destroy', [0]],
      [10, 'socketcore.sock_conn', [2, 'localhost', 443, new Map<WireValue, WireValue>([['hostName', 'localhost'], ['caCert', cert]])]],
      [11, 'socketcore.sock_conn', [0, '127.0.0.1', 1]],
      [12, 'net.getState'],
      [13, 'net.getRssi'],
      [14, 'misc.getImei'],
      [15, 'rtos.get_version'],
      [16, 'link.isReady'],
      [17, 'mobile.status'],
      [18, 'socketcore.sock_send', [5, Buffer.from('x')]],
      [19, 'agent.caps', [1, 100]],
      [20, 'agent.caps', [25, 24]],
      [21, 'agent.caps', [49, 24]],
    ];
    // the host acknowledges after every call (K), as a real host does soon after each reply
    const wire = [...chunked(Buffer.concat([Buffer.from('\n'), hb.start()])), 'K 4242'];
    for (const [id, fn, args] of calls) wire.push(...chunked(hb.call(id, fn, args ?? [])), 'K 4242');
    // after the agent is up, another lib registers its own CONN_CNF handler (as socket.lua would)
    const other = 'L rtos.on(rtos.MSG_SOCK_CONN_CNF, function(msg) _G.OTHER = (_G.OTHER or "") .. msg.socket_index .. "," end)';
    const inject = 'L socketcore.sock_conn(0, "1.2.3.4", 80)';
    const probe = 'L print("OTHER=" .. tostring(_G.OTHER))';
    const { host: frames, stderr } = runAgent(mode, [...wire, 'T 10', other, inject, probe, 'K 4242']);

    assert.deepEqual(frames.frames[0], { type: 'B', epoch: (frames.frames[0] as { epoch: number }).epoch, proto: 2 });
    const h = parseHello(reply(frames, 1)[0]);
    assert.ok(reply(frames, 19).length <= 24, 'at most a page of 24 names, whatever the count');
    h.caps = [...reply(frames, 19), ...reply(frames, 20), ...reply(frames, 21)].map((v) => txt(v));
    assert.equal(h.caps.length, h.raw.get('ncaps'));
    assert.equal(h.family, 'luat');
    assert.equal(h.lua, 'Lua 5.1');
    assert.equal(h.intbits, mode === 'float' ? 53 : 32, 'doubles hold integers exactly to 2^53; integer-only cores 32');
    assert.equal(h.window, 1792, 'window sized for the 2 KB overwrite-on-overflow ring');
    assert.equal(h.raw.get('float'), mode === 'float');
    assert.equal(txt(h.raw.get('fw') as WireValue), mode === 'int' ? 'Luat_V0026_RDA8910' : 'Luat_V0026_RDA8910_TTS_FLOAT');
    assert.equal(txt(h.raw.get('bsp') as WireValue), 'RDA8910');
    const msg = h.raw.get('msg') as Map<WireValue, WireValue>;
    assert.deepEqual(Object.fromEntries(msg), { MSG_SOCK_CONN_CNF: 34, MSG_SOCK_SEND_CNF: 32, MSG_SOCK_RECV_IND: 31, MSG_SOCK_CLOSE_CNF: 33, MSG_SOCK_CLOSE_IND: 36, MSG_UART_RXDATA: 6, MSG_TIMER: 5 });
    assert.equal(h.raw.get('remainbuf'), false, 'the stub core has no sock_getremainbuf: feature-detected');
    assert.ok(!h.caps.includes('socketcore.sock_getremainbuf'));
    for (const fn of ['sock_conn', 'sock_conn_ext', 'sock_send', 'sock_close', 'sock_recv', 'sock_destroy', 'sock_setopt']) assert.ok(h.caps.includes(`socketcore.${fn}`), fn);

    const consts = reply(frames, 2)[0] as Map<WireValue, WireValue>;
    assert.equal(consts.get('SOL_SOCKET'), 4095);
    assert.equal(consts.get('ERR_ENOTCONN'), 11);
    assert.deepEqual(reply(frames, 3), [0]);
    assert.deepEqual(reply(frames, 4), [1, 0], 'sock_send returns two numbers');
    assert.equal(txt(reply(frames, 5)[0]), 'hello over 5.1');
    assert.deepEqual(reply(frames, 6), [0]);
    assert.deepEqual(reply(frames, 7), [-1]);
    assert.deepEqual(reply(frames, 8), [1]);
    assert.deepEqual(reply(frames, 9), [1]);
    assert.deepEqual(reply(frames, 10), [0], 'the SSL cert table arrives as a Lua table of strings');
    assert.deepEqual(reply(frames, 11), [1]);
    assert.equal(txt(reply(frames, 12)[0]), 'REGISTERED');
    assert.deepEqual(reply(frames, 13), [21]);
    assert.equal(txt(reply(frames, 14)[0]), '866714040000017');
    assert.match(txt(reply(frames, 15)[0]), /^Luat_V0026_RDA8910/);
    assert.deepEqual(reply(frames, 16), [true]);
    assert.equal(xcode(frames, 17), 'NOFN', 'no LuatOS-only names on a Luat agent');
    assert.deepEqual(reply(frames, 18), [0, 11], 'not connected: ok 0, ERR_ENOTCONN');

    const ev = frames.messages.filter((f): f is Extract<Message, { type: 'E' }> => f.type === 'E').map((e) => [e.handle, txt(e.values[0]), ...e.values.slice(1)]);
    assert.equal(frames.dups, 0, 'every frame acknowledged in time: no retransmission');
    assert.deepEqual(ev.slice(0, 6), [
      [0, 'CONN_CNF', 34, 0],
      [0, 'SEND_CNF', 32, 0, 14],
      [0, 'RECV_IND', 31, 0, 14],
      [0, 'CLOSE_CNF', 33, 99],
      [0, 'CONN_CNF', 34, 0],
      [1, 'CONN_CNF', 34, 1],
    ]);
    // slot 0 (the SSL one) is still owned by the agent: the injected conn lands in slot 2, which the agent does not own
    assert.match(stderr, /OTHER=2,/, 'a handler registered later through rtos.on gets the messages of sockets the agent did not open');
    assert.ok(!ev.some((e) => e[0] === 2), 'the agent does not forward messages of sockets it does not own when another handler exists');
    assert.match(stderr, /WOKE tether/, 'pm.wake("tether")');
    assert.ok(!allValues(frames).some((v) => v instanceof Float), 'no float ever reaches the wire');
    assert.ok(!/FATAL|failed/.test(stderr), stderr);
  });
}

/** Lua source with comments and string literals blanked out (for operator scans). */
function code(src: string): string {
  let out = '';
  let i = 0;
  const longOpen = (at: number) => /^\[(=*)\[/.exec(src.slice(at));
  while (i < src.length) {
    if (src.startsWith('--', i)) {
      const m = longOpen(i + 2);
      if (m) {
        const end = src.indexOf(`]${m[1]}]`, i);
        i = end < 0 ? src.length : end + m[1].length + 2;
      } else {
        const nl = src.indexOf('\n', i);
        i = nl < 0 ? src.length : nl;
      }
      continue;
    }
    const m = src[i] === '[' ? longOpen(i) : null;
    if (m) {
      const end = src.indexOf(`]${m[1]}]`, i);
      i = end < 0 ? src.length : end + m[1].length + 2;
      out += '""';
      continue;
    }
    if (src[i] === '"' || src[i] === "'") {
      const q = src[i++];
      while (i < src.length && src[i] !== q) i += src[i] === '\\' ? 2 : 1;
      i++;
      out += '""';
      continue;
    }
    out += src[i++];
  }
  return out;
}

test('integer-only cores: the Luat agent never divides, never touches math, never formats floats', () => {
  for (const f of ['firmware-shim/luat/agent.lua', 'firmware-shim/luat/config.lua']) {
    const src = readFileSync(join(ROOT, f), 'utf8');
    const c = code(src);
    assert.ok(!/\//.test(c), `${f}: '/' truncates on an integer-only core (and // is not Lua 5.1)`);
    assert.ok(!/\bmath\s*\./.test(c), `${f}: the math library does not exist on an integer-only core`);
    assert.ok(!/\bgoto\b/.test(c), `${f}: no goto in Lua 5.1`);
    assert.ok(!/[&|]|<<|>>|~(?!=)/.test(c), `${f}: no bit operators in Lua 5.1`);
    assert.ok(!/%[-+ #0]*\d*\.?\d*[eEfgGaA]/.test(src.replace(/--.*$/gm, '')), `${f}: no %f/%g/%e in string.format on an integer-only core`);
    assert.ok(!/table\.unpack|table\.pack|math\.type|string\.pack|utf8\./.test(c), `${f}: 5.2+ functions`);
  }
  const core = readFileSync(join(ROOT, 'firmware-shim/common/core.lua'), 'utf8');
  // the shared core: '/' only in exact divisions (a multiple of 65536 by 65536, of a non-negative
  // x less x % 64 by 64: the same result whether '/' truncates or not), math only behind a guard
  for (const line of code(core).split('\n').filter((l) => l.includes('/'))) {
    const rest = line.replace(/\(c - lo\) \/ 65536/g, '').replace(/\((\w+) - \1 % 64\) \/ 64/g, '');
    assert.ok(!rest.includes('/'), `core.lua: '/' truncates on an integer-only core: ${line.trim()}`);
  }
  for (const line of code(core).split('\n').filter((l) => /\bmath\b/.test(l))) {
    assert.match(line, /math and|math_type and/, `core.lua: unguarded use of math: ${line.trim()}`);
  }
});

test('the real Lua 5.1 also loads the simulator sys.lua and reports its version', () => {
  const r = runLua('5.1', '=version', { source: 'io.write(_VERSION)' });
  assert.equal(r.stdout.toString(), 'Lua 5.1');
  assert.equal(luacCheck('5.1', SYS_LUA, '@sys.lua'), undefined);
});

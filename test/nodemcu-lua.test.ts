/**
 * The NodeMCU agent under the stock interpreters its firmware builds descend from
 * (Lua 5.1 = the default LUA=51 build, 5.3 = LUA=53; PUC-Rio 5.1.5 and 5.3.6 compiled to
 * WebAssembly, test/helpers/lua.ts): a syntax check of the
 * whole bundled file, then the WHOLE agent run by a driver with mocked NodeMCU modules
 * (uart, node, tmr, wifi, net; `bit` in plain Lua for 5.1, with 5.3 operators for 5.3).
 * The agent's pure parts (CRC-32 with the `bit` module, escaping, the protocol) are checked
 * against the TypeScript codec: every frame it writes must pass parseLine, every payload
 * must round-trip byte-exact, for lengths 0..200 and a 1460-byte segment.
 * The interpreters come from npm (lua-wasm-bindings): Node is all these tests need.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentBundlePath, readLazyAgentFiles } from '../src/util/repo-root.js';
import { crc32, type Message } from '../src/codec/frame.js';
import { AgentHost } from './helpers/agent-host.js';
import { Handle, type WireValue } from '../src/codec/values.js';
import { parseHello } from '../src/rpc/client.js';
import { renderAgent } from '../scripts/gen-lua.js';
import { luacCheck, runLua, type LuaVersion } from './helpers/lua.js';

const MAIN = agentBundlePath('nodemcu');

/** Mocked NodeMCU modules, then the agent file, then the UART input and a few firmware callbacks. */
const DRIVER = String.raw`
local load = loadstring or load
local function readall(p) local f = assert(io.open(p, "rb")) local s = f:read("*a") f:close() return s end
local agentfile, inputfile = arg[1], arg[2]

-- bit: NodeMCU's C module; plain arithmetic under 5.1, operators under 5.3
if _VERSION == "Lua 5.1" then
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
    return function(a, b, ...)
      local r = two(a, b)
      for i = 1, select("#", ...) do r = two(r, (select(i, ...))) end
      return r
    end
  end
  bit = {
    band = op(function(x, y) return x == 1 and y == 1 end),
    bor = op(function(x, y) return x == 1 or y == 1 end),
    bxor = op(function(x, y) return x ~= y end),
    lshift = function(a, n) return norm(norm(a) * 2 ^ n) end,
    rshift = function(a, n) local x = norm(a) local d = 2 ^ n return (x - x % d) / d end,
  }
else
  bit = load([[
    local function fold(f) return function(a, b, ...) local r = f(a, b) for i = 1, select("#", ...) do r = f(r, (select(i, ...))) end return r end end
    return {
      band = fold(function(a, b) return a & b end), bor = fold(function(a, b) return a | b end),
      bxor = fold(function(a, b) return a ~ b end),
      lshift = function(a, n) return (a << n) & 0xFFFFFFFF end, rshift = function(a, n) return (a & 0xFFFFFFFF) >> n end,
    }]])()
end

local UART, OUTPUT, ONERR
uart = {
  on = function(ev, term, fn, run)
    if term == nil then UART = nil return end -- uart.on("data"): the REPL is back
    assert(ev == "data" and term == "\n" and run == 0, "agent must take the UART binary-safe") UART = fn
  end,
  write = function(id, ...)
    assert(id == 0)
    for i = 1, select("#", ...) do
      local s = select(i, ...)
      local q = s:match("^~[RXEPL&$](%d+)%.")
      if q then TOP = tonumber(q) end
      io.write(s)
    end
  end,
  setup = function() end,
}
local timers = {}
tmr = { ALARM_SINGLE = 0, ALARM_SEMI = 1, ALARM_AUTO = 2, now = function() return 123456 end,
  create = function()
    local t = {}
    t.alarm = function(self, ms, mode, fn)
      assert(type(ms) == "number" and ms >= 1 and (mode == 0 or mode == 2) and type(fn) == "function")
      self.fn, self.mode = fn, mode
      if not self.listed then self.listed = true timers[#timers + 1] = self end
      return true
    end
    t.unregister = function(self) self.fn = nil end
    return t
  end }
-- file: the agent's files loaded on first use (paths in arg[3..]) stand for SPIFFS; the agent reads
-- them by name with file.exists and loadfile
local LAZY = {}
for i = 3, #arg do LAZY[string.match(arg[i], "[^/]+$")] = arg[i] end
file = { exists = function(n) return LAZY[n] ~= nil end }
do local lf = loadfile loadfile = function(n) return lf(LAZY[n] or n) end end
node = {
  heap = function() return 38123 end, chipid = function() return 4242 end, random = function(a, b) return 777 end,
  info = function(g)
    if g == "sw_version" then return { node_version_major = 3, node_version_minor = 0, node_version_revision = 0, git_release = "drv" } end
    if g == "build_config" then return { modules = "bit,file,net,node,tmr,uart,wifi", number_type = "float" } end
  end,
  output = function(fn, s) OUTPUT = fn end, setonerror = function(fn) ONERR = fn end, restart = function() end,
}
wifi = { sta = { status = function() return 5 end, getip = function() return "192.168.4.2", "255.255.255.0", "192.168.4.1" end }, getmode = function() return 1 end }

local Sock = {} Sock.__index = Sock
function Sock:on(ev, fn) self.cb[ev] = fn end
function Sock:connect(port, host) if self.peer then error("already connected", 0) end self.peer = { port, host or "127.0.0.1" } end
function Sock:send(data, fn) if data == "" then error("no data to send", 0) end if fn then self.cb.sent = fn end self.out = self.out .. data end
function Sock:getpeer() if self.peer then return self.peer[1], self.peer[2] end return nil, nil end
function Sock:getaddr() return 5555, "192.168.4.2" end
function Sock:close() if not self.peer then error("not connected", 0) end self.peer = nil end
function Sock:hold() end
function Sock:unhold() end
function Sock:ttl(n) return n or 255 end
function Sock:dns(d, fn) if fn then self.cb.dns = fn end self.cb.dns(self, "10.0.0.9") end
function Sock:listen(a, b, c) self.listening = { a, b, c } if type(a) == "function" then self.acc = a elseif type(b) == "function" then self.acc = b else self.acc = c end end
SOCKS = {}
local function newsock(kind) local s = setmetatable({ cb = {}, out = "", kind = kind }, Sock) SOCKS[#SOCKS + 1] = s return s end
net = {
  TCP = 1, UDP = 2,
  createConnection = function() return newsock("tcp") end,
  createServer = function(t) local s = newsock("srv") s.timeout = t return s end,
  createUDPSocket = function() return newsock("udp") end,
  ifinfo = function(i) if i == 0 then return { ip = "192.168.4.2", hwaddr = "\92\207\127\0\0\1" } end end,
  dns = { resolve = function(h, cb) cb(nil, h == "localhost" and "127.0.0.1" or nil) end,
          getdnsserver = function(i) return "8.8.8.8" end, setdnsserver = function() end },
}

TETHER_ALLOW_REPL = true -- this run exercises agent.repl (off by default: test/agent-allow.test.ts)
assert(load(readall(agentfile), "=tether.lua"))()
assert(UART and OUTPUT, "the agent must register a uart data callback and redirect print")

-- CRC-32 with the bit module, for the host's acknowledgements
local CT = {}
for i = 0, 15 do
  local c = i
  for _ = 1, 4 do if bit.band(c, 1) == 1 then c = bit.bxor(bit.rshift(c, 1), 3988292384) else c = bit.rshift(c, 1) end end
  CT[i] = c
end
local function hex8(s)
  local c = 4294967295
  for i = 1, #s do
    c = bit.bxor(c, s:byte(i))
    c = bit.bxor(bit.rshift(c, 4), CT[bit.band(c, 15)])
    c = bit.bxor(bit.rshift(c, 4), CT[bit.band(c, 15)])
  end
  c = bit.band(bit.bxor(c, 4294967295), 4294967295) % 4294967296
  return string.format("%08X", c)
end

-- the UART hands over lines (with their \n) in pieces of at most 255 bytes; a line "%%K <nonce>"
-- is the host acknowledging every frame the agent sent so far
local input = readall(inputfile)
local pos = 1
while pos <= #input do
  local nl = input:find("\n", pos, true)
  local stop = nl and math.min(nl, pos + 254) or math.min(#input, pos + 254)
  local piece = input:sub(pos, stop)
  local nonce = piece:match("^%%%%K (%d+)\n$")
  if nonce then
    if TOP then
      local f = "~A" .. ((TOP + 1) % 4096) .. " 0 255 " .. nonce .. " 0"
      UART(f .. " " .. hex8(f) .. "\n")
    end
  else
    UART(piece)
  end
  pos = stop + 1
end
-- firmware callbacks: data on every socket that registered "receive", a hook that fails, a disconnection
for _, s in ipairs(SOCKS) do
  if s.cb.receive then s.cb.receive(s, "\0\1\2 recv \255") end
end
tether_hook = function(h, ev) error("hook failed on " .. ev) end
for _, s in ipairs(SOCKS) do
  if s.cb.receive then s.cb.receive(s, "after hook") end
  if s.cb.disconnection then s.cb.disconnection(s, 0) end
  if s.acc then local c = newsock("tcp") s.acc(c) end
end
tether_hook = nil
print("stray print must not reach the UART raw")
if type(OUTPUT) == "function" then OUTPUT("printed text") end
-- timers: 30 rounds (the agent's tick, the repl's wait for its reply's acknowledgement)
for _ = 1, 30 do
  for _, t in ipairs(timers) do
    local fn = t.fn
    if fn then
      if t.mode == 0 then t.fn = nil end
      fn(t)
    end
  end
end
`;

function runAgent(v: LuaVersion, input: Buffer): { host: AgentHost; raw: string } {
  const lua = `Lua ${v}`;
  const dir = mkdtempSync(join(tmpdir(), 'tether-nodemcu-lua-'));
  try {
    writeFileSync(join(dir, 'driver.lua'), DRIVER);
    writeFileSync(join(dir, 'input.txt'), input);
    const lazy = [...readLazyAgentFiles('nodemcu')].map(([n, text]) => {
      writeFileSync(join(dir, n), text);
      return join(dir, n);
    });
    const run = runLua(v, join(dir, 'driver.lua'), { args: [MAIN, join(dir, 'input.txt'), ...lazy] });
    const r = { status: run.status, stderr: run.stderr, stdout: run.stdout.toString('latin1') };
    assert.equal(r.status, 0, `${lua} failed: ${r.stderr}`);
    const host = new AgentHost(4242);
    host.receive(r.stdout);
    host.assertClean(`${lua}: the agent`);
    // print() is not redirected in the driver's stock Lua: the driver's own print, and the agent's after agent.repl
    const logs = host.logs.filter((l) => l !== 'stray print must not reach the UART raw' && l !== 'tether agent stopped');
    assert.deepEqual(logs, [], `${lua}: the agent wrote something that is not a frame`);
    return { host, raw: r.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** S, then every call followed by the host's acknowledgement (`%%K`, done by the driver). */
const calls = (list: Array<[number, string, WireValue[]]>) => {
  const h = new AgentHost(4242);
  const ack = Buffer.from('%%K 4242\n');
  return Buffer.concat([Buffer.from('boot noise\r\n'), h.start(), ...list.flatMap(([id, fn, args]) => [h.call(id, fn, args), ack])]);
};

test('the bundled NodeMCU agent is current and passes luac -p of Lua 5.1 and 5.3', () => {
  assert.equal(readFileSync(MAIN, 'utf8'), renderAgent('nodemcu'), 'dist/agents/nodemcu/main.lua is stale: run npm run build');
  const lazy = [...readLazyAgentFiles('nodemcu').keys()].map((n) => join(MAIN, '..', n));
  assert.deepEqual(lazy.map((p) => p.replace(/.*\//, '')), ['tether_bundle.lua', 'tether_call.lua', 'tether_core.lua', 'tether_enc.lua', 'tether_gap.lua', 'tether_info.lua', 'tether_net.lua', 'tether_srv.lua', 'tether_sys.lua', 'tether_tcp.lua', 'tether_udp.lua']);
  for (const file of [MAIN, ...lazy]) {
    for (const v of ['5.1', '5.3'] as const) assert.equal(luacCheck(v, readFileSync(file), `@${file}`), undefined, `Lua ${v}: ${file}`);
    // Lua 5.1 rules, beyond what luac5.1 parses: no integer-division or bitwise operators anywhere
    const src = readFileSync(file, 'utf8').replace(/--[^\n]*/g, '').replace(/"(\\.|[^"\\])*"/g, '""');
    assert.doesNotMatch(src, /\/\/|<<|>>|\bgoto\b|[^~]~[^=]|&/, `Lua 5.3-only operators in ${file}`);
  }
});

for (const v of ['5.1', '5.3'] as LuaVersion[]) {
  const lua = `Lua ${v}`;
  test(`the whole NodeMCU agent under ${lua}: hello, raw byte vectors and CRC-32 against the TS codec, net handles, events, guarded callbacks`, () => {
    // vectors: every length 0..200 (every byte value, \n and DLE escapes, fragments) plus a 1460-byte TCP segment
    const vectors: Buffer[] = [];
    for (let n = 0; n <= 200; n += 1) vectors.push(Buffer.from(Array.from({ length: n }, (_, i) => (i * 53 + n * 7) % 256)));
    vectors.push(Buffer.from(Array.from({ length: 1460 }, (_, i) => (i * 97 + 13) % 256)));
    const list: Array<[number, string, WireValue[]]> = [[1, 'hello', [2, 4096]], [2, 'agent.caps', [1, 200]], [3, 'agent.caps', [25, 24]], [4, 'agent.caps', [49, 24]]];
    vectors.forEach((v, i) => list.push([100 + i, 'agent.ping', [v]]));
    list.push(
      [10, 'net.createConnection', []],
      [11, 'tcpsocket.on', [new Handle(1), 'receive', true]],
      [12, 'tcpsocket.on', [new Handle(1), 'disconnection', true]],
      [13, 'tcpsocket.connect', [new Handle(1), 80, 'example.com']],
      [14, 'tcpsocket.getpeer', [new Handle(1)]],
      [15, 'tcpsocket.send', [new Handle(1), Buffer.from([0, 10, 13, 255]), true]],
      [16, 'tcpsocket.dns', [new Handle(1), 'x.example', true]],
      [17, 'net.dns.resolve', ['localhost']],
      [18, 'wifi.sta.getip', []],
      [19, 'net.ifinfo', [0]],
      [20, 'net.createServer', [1, 30]],
      [21, 'tcpserver.listen', [new Handle(3), 8080, null, ['receive']]],
      [22, 'udpsocket.close', [new Handle(1)]],
      [23, 'tcpsocket.close', [new Handle(1)]],
      [24, 'tcpsocket.close', [new Handle(1)]],
      [25, 'agent.repl', []],
    );
    const { host } = runAgent(v, calls(list));
    const frames = host.messages;
    type Reply = { type: 'R' | 'X'; id: number; values: WireValue[]; code: string; message: string };
    const byId = (id: number) => frames.find((f) => (f.type === 'R' || f.type === 'X') && f.id === id) as unknown as Reply;
    assert.deepEqual(host.frames[0], { type: 'B', epoch: 777, proto: 2 });
    const h = parseHello(byId(1).values[0]);
    assert.ok(byId(2).values.length <= 24, 'at most a page of 24 names, whatever the count');
    h.caps = [...byId(2).values, ...byId(3).values, ...byId(4).values].map((v) => Buffer.from(v as Uint8Array).toString());
    assert.equal(h.caps.length, h.raw.get('ncaps'));
    assert.equal(h.intbits, v === '5.1' ? 53 : 64, 'the driver\'s stock interpreters: doubles (5.1), 64-bit integers (5.3)');
    assert.equal(h.family, 'nodemcu');
    assert.equal(h.fw, '3.0.0-drv');
    assert.equal(h.bsp, 'ESP8266');
    assert.equal(h.maxframe, 255);
    assert.ok(h.window <= 255, 'window respects the 256-byte RX ring');
    assert.equal((h.raw.get('nodeheap') as number), 38123, 'hello reports node.heap()');
    assert.equal(typeof h.heap, 'number', 'hello reports the Lua heap (KB)');
    assert.equal(h.lua, lua);
    for (const fn of ['net.createConnection', 'net.createServer', 'net.createUDPSocket', 'net.dns.resolve', 'tcpsocket.send', 'udpsocket.send', 'tcpserver.listen', 'agent.repl', 'agent.release']) assert.ok(h.caps.includes(fn), fn);
    vectors.forEach((v, i) => {
      const r = byId(100 + i);
      assert.equal(r.type, 'R', `agent.ping of ${v.length} bytes`);
      assert.ok(Buffer.from(r.values[1] as Uint8Array).equals(v), `raw round trip of ${v.length} bytes under ${lua}`);
    });
    assert.deepEqual(byId(10).values, [new Handle(1)]);
    assert.equal(byId(14).values[0], 80, 'getpeer: port first');
    assert.equal(Buffer.from(byId(14).values[1] as Uint8Array).toString(), 'example.com');
    assert.equal(byId(15).type, 'R');
    const dns = frames.find((f) => f.type === 'E' && f.handle === 1 && Buffer.from(f.values[0] as Uint8Array).toString() === 'dns') as Extract<Message, { type: 'E' }>;
    assert.equal(Buffer.from(dns.values[1] as Uint8Array).toString(), '10.0.0.9');
    // resolve: the request id comes back; the callback (nil, ip) arrived as an event (before the reply: synchronous)
    const req = byId(17).values[0] as number;
    const ev = frames.find((f) => f.type === 'E' && f.handle === req) as Extract<Message, { type: 'E' }>;
    assert.deepEqual(ev.values.slice(1), [null, Uint8Array.from(Buffer.from('127.0.0.1'))]);
    assert.ok(frames.indexOf(ev) < frames.indexOf(byId(17)), 'a synchronous callback precedes the reply');
    assert.equal(Buffer.from(byId(18).values[0] as Uint8Array).toString(), '192.168.4.2');
    const ifinfo = byId(19).values[0] as Map<string, WireValue>;
    assert.deepEqual(Buffer.from(ifinfo.get('hwaddr') as Uint8Array), Buffer.from([92, 207, 127, 0, 0, 1]));
    assert.deepEqual(byId(20).values, [new Handle(3)]);
    assert.equal(byId(21).type, 'R');
    assert.equal(byId(22).code, 'BADHANDLE', 'a tcpsocket handle is refused by udpsocket methods');
    assert.equal(byId(23).type, 'R');
    assert.equal(byId(24).code, 'ERR');
    assert.equal(byId(24).message, 'not connected', 'firmware error strings pass unchanged');
    assert.deepEqual(byId(25).values, [true]);
    // events: receive (binary), the hook error logged without stopping the forwarder, disconnection, accept
    const evs = frames.filter((f) => f.type === 'E' && f.handle === 1) as Array<Extract<Message, { type: 'E' }>>;
    const names = evs.map((e) => Buffer.from(e.values[0] as Uint8Array).toString());
    assert.deepEqual(names, ['dns', 'receive', 'receive', 'disconnection']);
    assert.ok(Buffer.from(evs[1].values[1] as Uint8Array).equals(Buffer.from('\0\x01\x02 recv \xff', 'latin1')));
    assert.equal(Buffer.from(evs[2].values[1] as Uint8Array).toString(), 'after hook');
    assert.deepEqual(evs[3].values.slice(1), [0]);
    const logs = frames.filter((f) => f.type === 'L') as Array<Extract<Message, { type: 'L' }>>;
    assert.ok(logs.some((l) => l.level === 1 && /hook failed on receive/.test(l.message)), 'the failing hook was logged as an L1 notice');
    assert.ok(logs.some((l) => l.level === 3 && l.message === 'printed text'), 'print output is forwarded as L3');
    const acc = frames.find((f) => f.type === 'E' && f.handle === 3) as Extract<Message, { type: 'E' }>;
    assert.equal(Buffer.from(acc.values[0] as Uint8Array).toString(), 'accept');
    assert.ok(acc.values[1] instanceof Handle, 'the accepted socket arrives as a new handle');
    // the CRC-32 check value of the spec, as every frame above used
    assert.equal(crc32('123456789'), 0xcbf43926);
    // agent.repl: the timer ran, retransmitting what the host never acknowledged, then gave the REPL back
    assert.ok(host.dups > 0, 'the frames sent after the last acknowledgement were retransmitted on the timer');
    assert.ok(host.logs.includes('tether agent stopped'), 'agent.repl restored the interpreter after its wait');
  });
}

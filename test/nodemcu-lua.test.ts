/**
 * The NodeMCU agent under the stock interpreters its firmware builds descend from
 * (Debian lua5.1 = the default LUA=51 build, lua5.3 = LUA=53): a syntax check of the
 * whole bundled file, then the WHOLE agent run by a driver with mocked NodeMCU modules
 * (uart, node, tmr, wifi, net; `bit` in plain Lua for 5.1, with 5.3 operators for 5.3).
 * The agent's pure parts (base64, CRC-16/MODBUS, the protocol) are checked against the
 * TypeScript codec: every frame it writes must pass checkLine, every payload must
 * round-trip byte-exact, for lengths 0..200 and random bytes.
 * These tests FAIL (never skip) without the interpreters: apt-get install -y lua5.1 lua5.3.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { callContent, checkLine, crc16, decodeFrame, encodeFrame, Reassembler, type Frame } from '../src/codec/frame.js';
import { Handle, type WireValue } from '../src/codec/values.js';
import { parseHello } from '../src/rpc/client.js';
import { renderAgent } from '../scripts/gen-lua.js';

const MAIN = join(repoRoot(), 'firmware-shim/nodemcu/main.lua');

function need(bin: string): void {
  const r = spawnSync(bin, ['-v'], { encoding: 'utf8' });
  if (r.error) assert.fail(`${bin} is not installed: run "apt-get install -y lua5.1 lua5.3" (.ci/run does this)`);
}

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
  write = function(id, ...) assert(id == 0) for i = 1, select("#", ...) do io.write((select(i, ...))) end end,
  setup = function() end,
}
local timers = {}
tmr = { ALARM_SINGLE = 0, now = function() return 123456 end,
  create = function() return { alarm = function(self, ms, mode, fn) timers[#timers + 1] = { fn, self } return true end } end }
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

assert(load(readall(agentfile), "=tether.lua"))()
assert(UART and OUTPUT, "the agent must register a uart data callback and redirect print")

-- the UART hands over lines (with their \n) in pieces of at most 255 bytes
local input = readall(inputfile)
local pos = 1
while pos <= #input do
  local nl = input:find("\n", pos, true)
  local stop = nl and math.min(nl, pos + 254) or math.min(#input, pos + 254)
  UART(input:sub(pos, stop))
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
for _, t in ipairs(timers) do t[1](t[2]) end
`;

function runAgent(lua: string, input: string): { frames: Frame[]; raw: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tether-nodemcu-lua-'));
  try {
    writeFileSync(join(dir, 'driver.lua'), DRIVER);
    writeFileSync(join(dir, 'input.txt'), input, 'latin1');
    const r = spawnSync(lua, [join(dir, 'driver.lua'), MAIN, join(dir, 'input.txt')], { encoding: 'latin1', timeout: 120000 });
    assert.equal(r.status, 0, `${lua} failed: ${r.stderr}`);
    const reasm = new Reassembler();
    const frames: Frame[] = [];
    for (const line of r.stdout.split('\n').filter(Boolean)) {
      // print() is not redirected in the driver's stock Lua: the driver's own print, and the agent's after agent.repl
      if (line === 'stray print must not reach the UART raw' || line === 'tether agent stopped') continue;
      const c = checkLine(Buffer.from(line, 'latin1'));
      assert.equal(c.kind, 'frame', `${lua}: the agent wrote something that is not a valid frame: ${JSON.stringify(line.slice(0, 120))}`);
      const whole = reasm.push((c as { content: string }).content);
      if (whole) frames.push(decodeFrame(whole));
    }
    return { frames, raw: r.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const calls = (list: Array<[number, string, WireValue[]]>) => ['boot noise\r\n', ...list.flatMap(([id, fn, args]) => encodeFrame(callContent(id, fn, args), 255))].join('');

test('the bundled NodeMCU agent is current and passes luac5.1 -p and luac5.3 -p', () => {
  need('luac5.1');
  need('luac5.3');
  assert.equal(readFileSync(MAIN, 'utf8'), renderAgent('nodemcu'), 'firmware-shim/nodemcu/main.lua is stale: run node dist/scripts/gen-lua.js');
  for (const c of ['luac5.1', 'luac5.3']) {
    const r = spawnSync(c, ['-p', MAIN], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${c}: ${r.stderr}`);
  }
  // Lua 5.1 rules, beyond what luac5.1 parses: no integer-division or bitwise operators anywhere
  const src = readFileSync(MAIN, 'utf8').replace(/--[^\n]*/g, '').replace(/"(\\.|[^"\\])*"/g, '""');
  assert.doesNotMatch(src, /\/\/|<<|>>|\bgoto\b|[^~]~[^=]|&/, 'Lua 5.3-only operators in the agent');
});

for (const lua of ['lua5.1', 'lua5.3']) {
  test(`the whole NodeMCU agent under ${lua}: hello, base64 + CRC vectors against the TS codec, net handles, events, guarded callbacks`, () => {
    need(lua);
    // vectors: every length 0..200 (all padding cases, several 48-char output blocks) plus random bytes
    const vectors: Buffer[] = [];
    for (let n = 0; n <= 200; n += 1) vectors.push(Buffer.from(Array.from({ length: n }, (_, i) => (i * 53 + n * 7) % 256)));
    vectors.push(Buffer.from(Array.from({ length: 1460 }, (_, i) => (i * 97 + 13) % 256)));
    const list: Array<[number, string, WireValue[]]> = [[1, 'hello', [1, 4096]]];
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
    const { frames } = runAgent(lua, calls(list));
    type Reply = { type: 'R' | 'X'; id: number; values: WireValue[]; code: string; message: string };
    const byId = (id: number) => frames.find((f) => (f.type === 'R' || f.type === 'X') && f.id === id) as unknown as Reply;
    assert.deepEqual(frames[0], { type: 'B', epoch: 777, proto: 1 });
    const h = parseHello(byId(1).values[0]);
    assert.equal(h.family, 'nodemcu');
    assert.equal(h.fw, '3.0.0-drv');
    assert.equal(h.bsp, 'ESP8266');
    assert.equal(h.maxframe, 255);
    assert.ok(h.window <= 255, 'window respects the 256-byte RX ring');
    assert.equal((h.raw.get('nodeheap') as number), 38123, 'hello reports node.heap()');
    assert.equal(typeof h.heap, 'number', 'hello reports the Lua heap (KB)');
    assert.equal(h.lua, lua === 'lua5.1' ? 'Lua 5.1' : 'Lua 5.3');
    for (const fn of ['net.createConnection', 'net.createServer', 'net.createUDPSocket', 'net.dns.resolve', 'tcpsocket.send', 'udpsocket.send', 'tcpserver.listen', 'agent.repl', 'agent.release']) assert.ok(h.caps.includes(fn), fn);
    vectors.forEach((v, i) => {
      const r = byId(100 + i);
      assert.equal(r.type, 'R', `agent.ping of ${v.length} bytes`);
      assert.ok(Buffer.from(r.values[1] as Uint8Array).equals(v), `base64 round trip of ${v.length} bytes under ${lua}`);
    });
    assert.deepEqual(byId(10).values, [new Handle(1)]);
    assert.equal(byId(14).values[0], 80, 'getpeer: port first');
    assert.equal(Buffer.from(byId(14).values[1] as Uint8Array).toString(), 'example.com');
    assert.equal(byId(15).type, 'R');
    const dns = frames.find((f) => f.type === 'E' && f.handle === 1 && Buffer.from(f.values[0] as Uint8Array).toString() === 'dns') as Extract<Frame, { type: 'E' }>;
    assert.equal(Buffer.from(dns.values[1] as Uint8Array).toString(), '10.0.0.9');
    // resolve: the request id comes back; the callback (nil, ip) arrived as an event (before the reply: synchronous)
    const req = byId(17).values[0] as number;
    const ev = frames.find((f) => f.type === 'E' && f.handle === req) as Extract<Frame, { type: 'E' }>;
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
    const evs = frames.filter((f) => f.type === 'E' && f.handle === 1) as Array<Extract<Frame, { type: 'E' }>>;
    const names = evs.map((e) => Buffer.from(e.values[0] as Uint8Array).toString());
    assert.deepEqual(names, ['dns', 'receive', 'receive', 'disconnection']);
    assert.ok(Buffer.from(evs[1].values[1] as Uint8Array).equals(Buffer.from('\0\x01\x02 recv \xff', 'latin1')));
    assert.equal(Buffer.from(evs[2].values[1] as Uint8Array).toString(), 'after hook');
    assert.deepEqual(evs[3].values.slice(1), [0]);
    const logs = frames.filter((f) => f.type === 'L') as Array<Extract<Frame, { type: 'L' }>>;
    assert.ok(logs.some((l) => l.level === 1 && /hook failed on receive/.test(l.message)), 'the failing hook was logged as an L1 frame');
    assert.ok(logs.some((l) => l.level === 3 && l.message === 'printed text'), 'print output is forwarded as L3');
    const acc = frames.find((f) => f.type === 'E' && f.handle === 3) as Extract<Frame, { type: 'E' }>;
    assert.equal(Buffer.from(acc.values[0] as Uint8Array).toString(), 'accept');
    assert.ok(acc.values[1] instanceof Handle, 'the accepted socket arrives as a new handle');
    // a CRC vector from the codec itself: CRC-16/MODBUS("123456789") = 0x4B37, as every frame above used
    assert.equal(crc16('123456789'), 0x4b37);
  });
}

-- NodeMCU family part: the `net` module (and wifi/node status) over the tether protocol.
-- Firmware semantics: ../shared/firmware-notes/nodemcu.md. Names on the wire: docs/nodemcu.md.
-- Lua 5.1 rules: no //, no bit operators, no goto, no integer division; bit work goes
-- through the `bit` module (default build). Small tables only: the ESP8266 has ~40 KB heap.
local band, bor, bxor, lshift, rshift = bit.band, bit.bor, bit.bxor, bit.lshift, bit.rshift
local sbyte, schar = string.byte, string.char

-- CRC-16/MODBUS (reflected poly 0xA001, init 0xFFFF), a nibble at a time: 16-entry table.
local CT = {}
for i = 0, 15 do
  local c = i
  for _ = 1, 4 do
    if band(c, 1) == 1 then c = bxor(rshift(c, 1), 40961) else c = rshift(c, 1) end
  end
  CT[i] = c
end
HAL.crc16 = function(s)
  local crc = 65535
  for i = 1, #s do
    crc = bxor(crc, sbyte(s, i))
    crc = bxor(rshift(crc, 4), CT[band(crc, 15)])
    crc = bxor(rshift(crc, 4), CT[band(crc, 15)])
  end
  return crc
end

-- Base64 (standard alphabet, padded) without encoder: output is built 48 characters at
-- a time from one reused 48-slot table, so a 1460-byte payload costs ~40 short strings.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local Q = {}
local function flush(out, k)
  out[#out + 1] = schar(unpack(Q, 1, k))
  return 0
end
HAL.b64e = function(s)
  local out, k = {}, 0
  for i = 1, #s, 3 do
    local a, b, c = sbyte(s, i, i + 2)
    local v = bor(lshift(a, 16), lshift(b or 0, 8), c or 0)
    Q[k + 1] = sbyte(B64, rshift(v, 18) + 1)
    Q[k + 2] = sbyte(B64, band(rshift(v, 12), 63) + 1)
    Q[k + 3] = b and sbyte(B64, band(rshift(v, 6), 63) + 1) or 61
    Q[k + 4] = c and sbyte(B64, band(v, 63) + 1) or 61
    k = k + 4
    if k >= 48 then k = flush(out, k) end
  end
  if k > 0 then flush(out, k) end
  return tconcat(out)
end
-- one base64 character code -> 0..63 (nil for '=' padding)
local function b64v(x)
  if x >= 97 then return x - 71 end
  if x >= 65 then return x - 65 end
  if x == 61 then return nil end
  if x >= 48 then return x + 4 end
  if x == 43 then return 62 end
  return 63
end
HAL.b64d = function(s)
  local out, k = {}, 0
  for i = 1, #s, 4 do
    local a, b, c, d = sbyte(s, i, i + 3)
    c = c and b64v(c)
    d = d and b64v(d)
    local v = bor(lshift(b64v(a) or 0, 18), lshift(b64v(b or 61) or 0, 12), lshift(c or 0, 6), d or 0)
    k = k + 1
    Q[k] = rshift(v, 16)
    if c then k = k + 1 Q[k] = band(rshift(v, 8), 255) end
    if d then k = k + 1 Q[k] = band(v, 255) end
    if k >= 45 then k = flush(out, k) end
  end
  if k > 0 then flush(out, k) end
  return tconcat(out)
end

HAL.write = function(s) uart.write(0, s) end
-- The UART hands the agent at most 255 bytes per line callback and its RX ring holds 256
-- bytes, dropping the OLDEST silently when full: frames stay within 255 bytes and the
-- host keeps at most one window (<= 255 bytes, protocol.md section 6) unacknowledged.
HAL.maxframe = 255
HAL.window = 240
HAL.outmax = 1024
HAL.maxmsg = 4096
HAL.heap = function() local k = collectgarbage("count") return k - k % 1 end
HAL.epoch = function()
  local ok, e = pcall(node.random, 1, 2147483646)
  if ok and type(e) == "number" and e >= 1 then return e - e % 1 end
  e = tmr.now() % 2147483646
  return e - e % 1 + 1
end
HAL.info = function(t)
  t.family = "nodemcu"
  t.bsp = "ESP8266"
  t.nodeheap = node.heap()
  t.chipid = node.chipid()
  local ok, v = pcall(node.info, "sw_version")
  if ok and type(v) == "table" and v.node_version_major then
    t.fw = v.node_version_major .. "." .. v.node_version_minor .. "." .. v.node_version_revision ..
      ((v.git_release and v.git_release ~= "") and ("-" .. v.git_release) or "")
  end
  ok, v = pcall(node.info, "build_config")
  if ok and type(v) == "table" then
    t.modules = v.modules
    t.numbers = v.number_type
  end
end

-- ---------------------------------------------------------------------------
-- Handles: every module object the host sees gets an integer; `kinds` says what it is.
local kinds = {}
local function new(obj, kind)
  local id = A.newHandle(obj)
  kinds[id] = kind
  return id
end
local function chk(o, kind)
  local id = A.hid[o]
  if id == nil or kinds[id] ~= kind then
    error({ TP.E_HANDLE, "not a " .. kind .. " handle" })
  end
  return id
end

-- An event for the host, then the optional on-module hook tether_hook(handle, event, ...).
-- Callers run it under A.guard: an error here is logged (L1), never raised into the firmware
-- (net callbacks are called unprotected on the ESP8266: an error there reboots the chip).
local function emit(id, ev, ...)
  A.event(id, ev, ...)
  local hook = rawget(_G, "tether_hook")
  if hook then hook(id, ev, ...) end
end
-- socket callback: drop the socket argument (the frame's handle names it)
local function fwd(id, ev)
  return function(_, ...) A.guard(emit, id, ev, ...) end
end

local DEFAULT_EVS = { "connection", "receive", "sent", "disconnection" }

local function method(kind, name, f)
  A.reg(kind .. "." .. name, function(o, ...)
    local id = chk(o, kind)
    if f then return f(o, id, ...) end
    return o[name](o, ...)
  end)
end

local function on(o, id, ev, enable)
  if enable then return o:on(ev, fwd(id, ev)) end
  return o:on(ev, nil)
end

-- net.* constructors: arguments go to the firmware unchanged (its quirks included)
A.reg("net.createConnection", function(...)
  local s = net.createConnection(...)
  new(s, "tcpsocket")
  return s
end)
A.reg("net.createServer", function(...)
  local s = net.createServer(...)
  new(s, "tcpserver")
  return s
end)
A.reg("net.createUDPSocket", function(...)
  local s = net.createUDPSocket(...)
  new(s, "udpsocket")
  return s
end)
for _, name in ipairs({ "ifinfo", "multicastJoin", "multicastLeave" }) do
  if net[name] then A.reg("net." .. name, net[name]) end
end
A.reg("net.dns.getdnsserver", net.dns.getdnsserver)
A.reg("net.dns.setdnsserver", net.dns.setdnsserver)

-- resolve(host) -> request id; the callback (nil, ip|nil) arrives as E<id> 'dns _ <ip>
-- (before the reply when the firmware calls it synchronously: IP literals, cached names).
-- Request ids are numbers from the handle sequence with no table entry: nothing to free.
-- (The host never calls with them: not h<n> tokens.)
A.reg("net.dns.resolve", function(host)
  local id = A.newHandle(nil)
  local ok, e = pcall(net.dns.resolve, host, function(...) A.guard(emit, id, "dns", ...) end)
  if not ok then error(e, 0) end
  return id
end)

-- ping(host, count) -> request id; E<id> 'recv bytes ip seq rtt per reply, then
-- E<id> 'sent ip total timeouts bytes ms at the end (or 'recv 0 alone when DNS failed)
if net.ping then
  A.reg("net.ping", function(host, count)
    local id = A.newHandle(nil)
    local function recv(...) A.guard(emit, id, "recv", ...) end
    local function sent(...) A.guard(emit, id, "sent", ...) end
    local ok, e
    if count ~= nil then ok, e = pcall(net.ping, host, count, recv, sent)
    else ok, e = pcall(net.ping, host, recv, sent) end
    if not ok then error(e, 0) end
    return id
  end)
end

-- tcpsocket methods (handle first)
for _, name in ipairs({ "connect", "close", "getpeer", "getaddr", "hold", "unhold", "ttl" }) do
  method("tcpsocket", name)
end
method("tcpsocket", "on", on)
-- send(h, data, withcb): withcb registers the agent's "sent" forwarder as send's fn argument
method("tcpsocket", "send", function(o, id, data, withcb)
  if withcb then return o:send(data, fwd(id, "sent")) end
  return o:send(data)
end)
method("tcpsocket", "dns", function(o, id, domain, withcb)
  if withcb then return o:dns(domain, fwd(id, "dns")) end
  return o:dns(domain)
end)

-- tcpserver: listen(h, port, ip, events) where events lists what the agent registers on
-- every accepted socket before the firmware's own "connection" callback (default below)
method("tcpserver", "listen", function(o, id, port, ip, evs)
  if evs == nil then evs = DEFAULT_EVS end
  local function acc(c)
    A.guard(function()
      local cid = new(c, "tcpsocket")
      for _, ev in ipairs(evs) do c:on(ev, fwd(cid, ev)) end
      emit(id, "accept", c)
    end)
  end
  if port ~= nil and ip ~= nil then return o:listen(port, ip, acc) end
  if port ~= nil then return o:listen(port, acc) end
  if ip ~= nil then return o:listen(ip, acc) end
  return o:listen(acc)
end)
method("tcpserver", "close")
method("tcpserver", "getaddr")

-- udpsocket methods
for _, name in ipairs({ "listen", "close", "getaddr", "ttl" }) do
  method("udpsocket", name)
end
method("udpsocket", "on", on)
method("udpsocket", "send", function(o, id, port, ip, data, withcb)
  if withcb then return o:send(port, ip, data, fwd(id, "sent")) end
  return o:send(port, ip, data)
end)
method("udpsocket", "dns", function(o, id, domain, withcb)
  if withcb then return o:dns(domain, fwd(id, "dns")) end
  return o:dns(domain)
end)

-- release(h): the host is done with an object: unregister its callbacks, close it
-- (errors ignored: it may be closed already) and forget the handle.
A.reg("agent.release", function(o)
  local id = A.hid[o]
  if id == nil then error({ TP.E_HANDLE, "not a handle" }) end
  local k = kinds[id]
  if k == "tcpsocket" then
    for _, ev in ipairs({ "connection", "reconnection", "disconnection", "receive", "sent", "dns" }) do pcall(o.on, o, ev, nil) end
  elseif k == "udpsocket" then
    for _, ev in ipairs({ "receive", "sent", "dns" }) do pcall(o.on, o, ev, nil) end
  end
  pcall(o.close, o)
  kinds[id] = nil
  A.release(id)
  A.dead[id] = nil -- keep no record per released handle: the heap must not grow with every connection
end)

-- status for `tether info` / diag
A.reg("wifi.sta.status", wifi.sta.status)
A.reg("wifi.sta.getip", wifi.sta.getip)
A.reg("wifi.getmode", wifi.getmode)
A.reg("node.heap", node.heap)
A.reg("node.chipid", node.chipid)
A.reg("node.restart", function()
  tmr.create():alarm(50, tmr.ALARM_SINGLE, function() node.restart() end)
end)

-- print() output goes to the host as L3 frames, never raw onto the RPC UART
local function output(p)
  A.guard(function()
    while true do
      local s = p
      if type(p) ~= "string" then s = p:read(240) end -- 3.x hands a pipe, 2.x a string
      if s == nil or s == "" then break end
      if TETHER_LOG ~= false and sfind(s, "[^%s>]") then A.log(3, s) end
      if type(p) == "string" then break end
    end
  end)
  return false
end

-- give the Lua prompt back: after the reply, restore the interpreter and print()
A.reg("agent.repl", function()
  tmr.create():alarm(20, tmr.ALARM_SINGLE, function()
    uart.on("data")
    node.output()
    if node.setonerror then node.setonerror() end
    print("tether agent stopped")
  end)
  return true
end)

if TETHER_BAUD then uart.setup(0, TETHER_BAUD, 8, 0, 1, 0) end
if node.setonerror then
  node.setonerror(function(msg) pcall(A.log, 1, "lua error: " .. tostring(msg)) end)
end
node.output(output, 0)
uart.on("data", "\n", function(d) A.guard(A.feed, d) end, 0)
A.start()
return A

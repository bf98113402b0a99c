-- NodeMCU family part: the `net` module (and wifi/node status) over the tether protocol.
-- Firmware semantics: docs/firmware/nodemcu.md. Names on the wire: docs/nodemcu.md.
-- Lua 5.1 rules: no //, no bit operators, no goto, no integer division; bit work goes
-- through the `bit` module (default build). Small tables only: the ESP8266 has ~40 KB heap.
-- Strings travel raw (protocol v2 `b<n>:` tokens): no base64 here.
local sfind = string.find

-- CRC-32/ISO-HDLC (reflected poly 0xEDB88320, here as the signed -306674912), a nibble at a
-- time from a 16-entry table; values are the bit module's 32-bit integers (the core takes signed ones)
do
  local band, bxor, rshift, sbyte = bit.band, bit.bxor, bit.rshift, string.byte
  local CT = {}
  for i = 0, 15 do
    local c = i
    for _ = 1, 4 do
      if band(c, 1) == 1 then c = bxor(rshift(c, 1), -306674912) else c = rshift(c, 1) end
    end
    CT[i] = c
  end
  HAL.crc32 = function(s)
    local c = -1
    for i = 1, #s do
      c = bxor(c, sbyte(s, i))
      c = bxor(rshift(c, 4), CT[band(c, 15)])
      c = bxor(rshift(c, 4), CT[band(c, 15)])
    end
    return bxor(c, -1)
  end
end

HAL.write = function(s) uart.write(0, s) end
-- The UART hands the agent at most 255 bytes per line callback and its RX ring holds 256
-- bytes, dropping the OLDEST silently when full: the agent accepts lines of 255 bytes and the
-- host keeps at most one window (240 bytes, protocol.md section 4) unacknowledged.
HAL.maxframe = 255
HAL.window = 240
HAL.outmax = 1024
HAL.txwin = 1024 -- ~40 KB heap: at most 1 KB of sent frames waits for its acknowledgement
-- Flow control of TCP receive data (issue #10): a socket is held (sock:hold()) once the backlog
-- for the host passes HOLD_AT bytes after one of its "receive" events, and every held socket is
-- unheld once the backlog is down to UNHOLD_AT. A held pcb still delivers what the peer had in
-- flight, at most one TCP window (TCP_WND, 4 * 1460 bytes by default: nodemcu-firmware
-- app/modules/net.c net_tcp_recv_cb calls tcp_recved(pcb, hold ? 0 : TCP_WND) after each
-- "receive", net.c:231-242; net_unhold re-opens the window, net.c:579-589), so the backlog limit
-- obmax leaves room for HOLD_AT + one window of events (with their few bytes of framing each).
local HOLD_AT, UNHOLD_AT = 1024, 256
HAL.obmax = 8192
HAL.maxmsg = 4096
HAL.baud = TETHER_BAUD or 115200
HAL.heap = function()
  local k = collectgarbage("count")
  k = k - k % 1
  return math and math.tointeger and math.tointeger(k) or k -- an integer on 5.3 builds too
end
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
    if v.number_type == "integer" and t.intbits == 53 then t.intbits = 32 end
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
-- socket callback: drop the socket argument (the event's handle names it)
local function fwd(id, ev)
  return function(_, ...) A.guard(emit, id, ev, ...) end
end

-- TCP "receive": the event, then flow control (see HOLD_AT). An event the backlog still refuses
-- (a peer that went past the window, or several sockets at once) is never dropped silently: the
-- agent closes that socket and reports reconnection(-1) (ERR_MEM, "out of memory": the module had
-- no room for the data), which the host's stream turns into an error.
local holding = {}
local function onrecv(id)
  return function(o, data)
    A.guard(function()
      if not A.event(id, "receive", data) then
        for _, ev in ipairs({ "receive", "sent", "connection", "disconnection", "reconnection" }) do pcall(o.on, o, ev, nil) end
        pcall(o.close, o)
        holding[o] = nil
        A.send("E" .. id .. " 'reconnection -1", true)
        return
      end
      local hook = rawget(_G, "tether_hook")
      if hook then hook(id, "receive", data) end
      if A.backlog() > HOLD_AT and not holding[o] then
        holding[o] = true
        A.stats.held = (A.stats.held or 0) + 1
        o:hold()
      end
    end)
  end
end
A.ondrain = function(n)
  if n > UNHOLD_AT or next(holding) == nil then return end
  for o in pairs(holding) do
    holding[o] = nil
    pcall(o.unhold, o)
  end
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
  if enable then return o:on(ev, (ev == "receive" and kinds[id] == "tcpsocket") and onrecv(id) or fwd(id, ev)) end
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
      for _, ev in ipairs(evs) do c:on(ev, ev == "receive" and onrecv(cid) or fwd(cid, ev)) end
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
-- (errors ignored: it may be closed already) and forget the handle; the userdata's last
-- reference goes with it (its __gc unrefs the espconn). HAL.sweep does it for every object.
local function drop(o, id)
  local k = kinds[id]
  if k == "tcpsocket" then
    for _, ev in ipairs({ "connection", "reconnection", "disconnection", "receive", "sent", "dns" }) do pcall(o.on, o, ev, nil) end
  elseif k == "udpsocket" then
    for _, ev in ipairs({ "receive", "sent", "dns" }) do pcall(o.on, o, ev, nil) end
  end
  pcall(o.close, o)
  holding[o] = nil
  kinds[id] = nil
  A.release(id)
  A.dead[id] = nil -- keep no record per released handle: the heap must not grow with every connection
end
A.reg("agent.release", function(o)
  local id = A.hid[o]
  if id == nil then error({ TP.E_HANDLE, "not a handle" }) end
  drop(o, id)
end)
HAL.sweep = function()
  local n = 0
  for id in pairs(kinds) do
    local o = A.handles[id]
    if o ~= nil then drop(o, id) else kinds[id] = nil end
    n = n + 1
  end
  return n
end

-- status for `tether info` / diag
A.reg("wifi.sta.status", wifi.sta.status)
A.reg("wifi.sta.getip", wifi.sta.getip)
A.reg("wifi.getmode", wifi.getmode)
A.reg("node.heap", node.heap)
A.reg("node.chipid", node.chipid)
-- remote REPL and restart: refused unless the settings enable them (config.lua)
local function allowed(on, setting, what)
  if not on then error({ TP.E_ERR, what .. " is off on this module: set " .. setting .. " = true in the agent's settings (tether.lua, or as a global before dofile)" }, 0) end
end
A.reg("node.restart", function()
  allowed(TETHER_ALLOW_RESTART, "TETHER_ALLOW_RESTART", "node.restart")
  tmr.create():alarm(50, tmr.ALARM_SINGLE, function() node.restart() end)
end)

-- print() output goes to the host as L3 notices, never raw onto the RPC UART
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

-- the link's retransmission timer
local ticker = tmr.create()
ticker:alarm(TP.TICK_MS, tmr.ALARM_AUTO, function() A.guard(A.tick) end)

-- give the Lua prompt back: once the reply is acknowledged (at most ~1 s), stop the timer,
-- restore the interpreter and print()
A.reg("agent.repl", function()
  allowed(TETHER_ALLOW_REPL, "TETHER_ALLOW_REPL", "agent.repl (the remote Lua prompt)")
  local n = 0
  ticker:alarm(TP.TICK_MS, tmr.ALARM_AUTO, function()
    n = n + 1
    A.guard(A.tick)
    if n < 20 and not A.idle() then return end
    ticker:unregister()
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

-- NodeMCU family part: the `net` module (and wifi/node status) over the tether protocol.
-- Firmware semantics: docs/firmware/nodemcu.md. Names on the wire: docs/nodemcu.md.
-- Lua 5.1 rules: no //, no bit operators, no goto, no integer division; bit work goes
-- through the `bit` module (default build). Small tables only: the ESP8266 has ~40 KB heap.
-- Strings travel raw (protocol v2 `b<n>:` tokens): no base64 here.

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
local HOLD_AT, UNHOLD_AT = 0, 0
HAL.obmax = tonumber(TETHER_BACKLOG) or 8192
HAL.maxmsg = 4096
HAL.baud = TETHER_BAUD or 115200
HAL.epoch = function()
  local ok, e = pcall(node.random, 1, 2147483646)
  if ok and type(e) == "number" and e >= 1 then return e - e % 1 end
  e = tmr.now() % 2147483646
  return e - e % 1 + 1
end
-- hello's family fields and the heap figure: tether_info.lua (HAL.part("info"), not resident)

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
-- no room for the data), which the host's stream turns into an error. So is a segment whose event
-- could not even be encoded (the heap ran out: "not enough memory" raised inside A.event).
local holding = {}
local loaded = {} -- group -> its table, until the next tick (HAL.part below)
-- (one function for every socket and segment: no closure is made per "receive")
local function recv(o, id, data)
  -- the groups a call loaded (the call decoder and the call's group, 4-5 KB) go now rather than at
  -- the next tick: the room is this segment's (a receive right after a call was the agent's peak,
  -- 41.5 KB; the next call loads them again)
  loaded = {}
  local ok, queued = pcall(A.event, id, "receive", data)
  if not (ok and queued) then
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
end
local function onrecv(id)
  return function(o, data) A.guard(recv, o, id, data) end
end
A.ondrain = function(n)
  if n > UNHOLD_AT or next(holding) == nil then return end
  for o in pairs(holding) do
    holding[o] = nil
    pcall(o.unhold, o)
  end
end

-- release(h) and the sweep of a session's objects (drop, HAL.sweep) live in tether_sys.lua
HAL.sweep = function() return HAL.part("sys").sweep() end

-- print() output goes to the host as L3 notices, never raw onto the RPC UART (tether_sys.lua's
-- output, loaded when something prints: the heap keeps only this)
local function output(p)
  A.guard(function() HAL.part("sys").output(p) end)
  return false
end

-- ---------------------------------------------------------------------------
-- Functions loaded on first use (issue 8: a small resident agent). The calls live in flash files,
-- one per group, tether_<group>.lua, compiled to tether_<group>.lc by node.compile when the agent
-- starts (when the firmware has it). A group file is a chunk called with (A, N) that returns a
-- table: function name -> function. The core's own calls part (decoding, dispatch, hello and the
-- agent.* calls) is the groups "call" and "core". A call's group is dropped when the call is done, the calls
-- part at the next timer tick; then only their files are left: the heap holds none of their code.
local N = { kinds = kinds, new = new, chk = chk, emit = emit, fwd = fwd, onrecv = onrecv, holding = holding, TP = TP,
  log = TETHER_LOG, allowRepl = TETHER_ALLOW_REPL, allowRestart = TETHER_ALLOW_RESTART, K = A.K }
-- started as node.LFS.get("tether")("lfs") (README.txt and init.lua of `tether agent --lfs`)
N.lfs = ... == "lfs"
-- (HAL.part: the core's parts, "call" and "core" the groups of its calls part, and "info" its
-- heap, info, lazy and capname, which this HAL leaves out)
function HAL.part(g)
  local t = loaded[g]
  if t == nil then
    -- one group besides the calls part at a time: a group a running call still uses stays
    -- reachable from its stack; hello's sweep (sys) is gone before its info loads (the peak)
    loaded = { call = loaded.call }
    local f = "tether_" .. g
    -- an agent started from the Lua Flash Store (`tether agent --lfs`) takes its groups from
    -- there first: their code runs from flash, never in the heap (node.LFS.get, older releases
    -- node.flashindex; either gives a function only for a module it holds). One started from
    -- SPIFFS never does: an LFS image of another version may be there too.
    local lfs, ok, chunk = node.LFS, false, nil
    if N.lfs then ok, chunk = pcall(lfs and lfs.get or node.flashindex, f) end
    if not (ok and type(chunk) == "function") then
      f = (file.exists(f .. ".lc") and f .. ".lc") or f .. ".lua"
      local e
      chunk, e = loadfile(f)
      if not chunk then error({ TP.E_ERR, "cannot load " .. f .. ": " .. tostring(e) }, 0) end
    end
    t = chunk(A, N)
    loaded[g] = t
  end
  return t
end
-- the core's parts: "call" (common/core.lua tether_calls, cut out into tether_call.lua by gen-lua)
-- and "core" (hello and agent.*, tether_core.lua); a call's group is dropped when the call is done
-- (the calls part itself stays until the tick). Loaded when needed: "enc" (value encoder, and the
-- decoder's tables and floats, tether_enc.lua), "gap" (gap repair, tether_gap.lua), "bundle" (an M
-- frame, read only: this agent offers no bundles, tether_bundle.lua); dropped at the next tick
-- the calls part stays for the next call of a burst, unless messages wait for the host (a stream
-- receiving): then the heap needs the room for them (44000 bytes), the next call loads it again
HAL.called = function() loaded = A.backlog() == 0 and { call = loaded.call } or {} end
HAL.spent = function() loaded.call = nil end -- a call with a payload: its decoder goes before it runs
-- the group of a function: by the name's prefix (nil for a name the agent does not offer: the
-- core then answers E_NOFN; the groups hold only the offered names under these prefixes)
local GROUP = { tcpsocket = "tcp", tcpserver = "srv", udpsocket = "udp", net = "net", wifi = "sys", node = "sys", agent = "sys" }
HAL.load = function(name)
  local g = GROUP[string.match(name, "^(%a+)%.") or ""]
  return g and HAL.part(g)[name]
end
-- no HAL.lazy: the names loaded on first use (agent.caps, hello's ncaps) and a call by
-- capability number come from tether_info.lua (lazy, capname), not kept in the heap

-- the link's retransmission timer; it also drops the group loaded last
local ticker = tmr.create()
N.ticker = ticker
ticker:alarm(TP.TICK_MS, tmr.ALARM_AUTO, function()
  if next(loaded) then loaded = {} end
  A.guard(A.tick)
end)

if node.compile then
  for _, g in ipairs({ "call", "core", "enc", "gap", "info", "tcp", "srv", "udp", "net", "sys" }) do
    if file.exists("tether_" .. g .. ".lua") then pcall(node.compile, "tether_" .. g .. ".lua") end
  end
end
if TETHER_BAUD then uart.setup(0, TETHER_BAUD, 8, 0, 1, 0) end
if node.setonerror then
  node.setonerror(function(msg) pcall(A.log, 1, "lua error: " .. tostring(msg)) end)
end
node.output(output, 0)
uart.on("data", "\n", function(d) A.guard(A.feed, d) end, 0)
A.start()
-- used once: their code leaves the heap; so do the core's A.reg and A.publish, which this agent
-- never uses (its calls are loaded by name, and it forwards no topics)
A.start, HAL.epoch, A.reg, A.publish = nil, nil, nil, nil
return A

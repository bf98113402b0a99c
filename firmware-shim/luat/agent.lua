-- Luat family part: the core's `socketcore` API over the tether protocol.
-- Semantics: docs/firmware/luat-socketcore.md; wire naming: docs/luat.md; spec: docs/protocol.md.
-- Lua 5.1 only, and integer-only cores (LUA_NUMBER = 32-bit long) included: no math library,
-- no '/' (it truncates there), no %f/%g, no value above 2^31-1, no goto, no bit operators.
local sys = require("sys")

local net, misc, link, pm
do
  local function lib(name)
    local ok, m = pcall(require, name)
    if ok and type(m) == "table" then return m end
    local g = rawget(_G, name)
    if type(g) == "table" then return g end
    return nil
  end
  net, misc, link, pm = lib("net"), lib("misc"), lib("link"), lib("pm")
end
local SC = rawget(_G, "socketcore")
local U = TETHER_UART
local USB = (uart.USB or 129)
local sfind, smatch = string.find, string.match

local function try(f, ...)
  local ok, v = pcall(f, ...)
  if ok then return v end
  return nil
end

-- core build: "Luat_V0026_RDA8910_TTS_FLOAT" is a double-number build; without _FLOAT numbers are
-- 32-bit integers and there is no math library (notes section 3, "Lua").
local FW = try(rtos.get_version) or ""
local FLOAT = sfind(FW, "FLOAT", 1, true) ~= nil and type(rawget(_G, "math")) == "table"

-- a later `require "socket"` registers its own MSG_SOCK_* handlers with rtos.on (one handler per id):
-- true when that happened before this agent loaded (it then cannot see those messages' owners)
local SHARED = type(package.loaded["socket"]) == "table"

HAL.write = function(s) uart.write(U, s) end
-- CRC-32/ISO-HDLC; the length argument is required by the core (crypto.c), the result is signed
HAL.crc32 = function(s) return crypto.crc32(s, #s) end
HAL.baud = U == USB and 2000000 or TETHER_BAUD -- the USB port has no baud rate: its line time is ~0
HAL.maxframe = 1024
HAL.outmax = 1024
-- The UART RX ring is 2048 bytes and OVERWRITES its oldest bytes when it overflows: the host may
-- have at most `window` bytes unacknowledged, so the ring never holds more than that.
HAL.window = 1792
HAL.txwin = 4096
-- host frames kept ahead of a gap count as window up to 4 KB more (docs/protocol.md section 4;
-- the 1.36 MB Lua heap holds them): they left the RX ring
HAL.hold = 4096
HAL.maxmsg = 16384
HAL.heap = function()
  local k = collectgarbage("count")
  return k - k % 1
end
HAL.epoch = function()
  -- a boot counter in the file system makes two boots within the same second differ
  local boots = 0
  pcall(function()
    local f = io.open("/tether_boot", "rb")
    if f then
      boots = tonumber(f:read("*a")) or 0
      f:close()
    end
    boots = (boots + 1) % 100000
    f = io.open("/tether_boot", "wb")
    if f then
      f:write(tostring(boots))
      f:close()
    end
  end)
  local tick = try(rtos.tick) or 0
  local seed = tostring(boots) .. ":" .. tostring(try(os.time) or 0) .. ":" .. tostring(tick) .. ":" .. tostring({})
  local e
  if crypto.md5 then
    local h = try(crypto.md5, seed, #seed)
    if type(h) == "string" then e = tonumber(string.sub(h, 1, 7), 16) end
  end
  if not e then e = (boots % 10000) * 7919 + tick % 100000 end
  return e + 1
end

-- the rtos.MSG_* values this agent relies on: they come from a C enum that differs between builds
local MSGNAMES = { "MSG_SOCK_CONN_CNF", "MSG_SOCK_SEND_CNF", "MSG_SOCK_RECV_IND", "MSG_SOCK_CLOSE_CNF",
  "MSG_SOCK_CLOSE_IND", "MSG_UART_RXDATA", "MSG_TIMER" }

local owned = {} -- socket_index -> true while a socket this agent opened holds the slot
local nowned = 0
-- socket_index -> true: closed by a sweep, destroyed when its CLOSE_CNF comes (the slot stays in
-- use until sock_destroy, which frees only a closed slot: docs/firmware/luat-socketcore.md
-- lines 72-73 and 387, from the CSDK's modules/src/tcpipsock.c)
local closing = {}

HAL.info = function(t)
  t.family = "luat"
  t.fw = FW
  t.bsp = smatch(FW, "(RDA%d+)") or smatch(FW, "(ASR%d+)")
  t.float = FLOAT
  t.intbits = FLOAT and 53 or 32 -- doubles hold integers exactly up to 2^53
  t.uart = U
  t.libver = sys.SCRIPT_LIB_VER
  if misc and misc.getModelType then t.model = try(misc.getModelType) end
  local m = {}
  for i = 1, #MSGNAMES do m[MSGNAMES[i]] = rtos[MSGNAMES[i]] end
  t.msg = m
  t.socketcore = type(SC) == "table"
  t.remainbuf = type(SC) == "table" and type(SC.sock_getremainbuf) == "function"
  t.setopt = type(SC) == "table" and type(SC.sock_setopt) == "function"
  t.shared = SHARED
  t.owned = nowned
  if pm and pm.isSleep then t.awake = not try(pm.isSleep, "tether") end
end

-- ---------------------------------------------------------------- socket messages
-- The agent owns the five MSG_SOCK_* handlers. rtos.on keeps one handler per id, so it is wrapped:
-- a handler another lib registers later (socket.lua) gets the messages of the sockets this agent did
-- not open; the agent forwards the rest as E messages: E<socket_index> '<NAME> <id> <result> [<len>].
do
  local SOCKMSG = {
    { "MSG_SOCK_CONN_CNF", "CONN_CNF" },
    { "MSG_SOCK_SEND_CNF", "SEND_CNF", "send_len" },
    { "MSG_SOCK_RECV_IND", "RECV_IND", "recv_len" },
    { "MSG_SOCK_CLOSE_CNF", "CLOSE_CNF" },
    { "MSG_SOCK_CLOSE_IND", "CLOSE_IND" },
  }
  local mine, others = {}, {}
  local rawon = rtos.on

  local function forward(name, lenfield, msg)
    local idx = msg.socket_index
    if type(idx) ~= "number" then idx = -1 end
    if lenfield then A.event(idx, name, msg.id, msg.result, msg[lenfield])
    else A.event(idx, name, msg.id, msg.result) end
  end

  local CNF = rtos.MSG_SOCK_CLOSE_CNF
  local function handler(id, name, lenfield)
    return function(msg)
      if type(msg) ~= "table" then return end
      local ci = msg.socket_index
      if closing[ci] then -- swept: no host wants its messages; CLOSE_CNF frees the slot
        if id == CNF then
          closing[ci] = nil
          pcall(SC.sock_destroy, ci)
        end
        return
      end
      local o = others[id]
      if o and not owned[msg.socket_index] then
        A.guard(o, msg)
        return
      end
      A.guard(forward, name, lenfield, msg)
    end
  end

  if type(SC) == "table" then
    for i = 1, #SOCKMSG do
      local s = SOCKMSG[i]
      local id = rtos[s[1]]
      if id ~= nil then
        mine[id] = handler(id, s[2], s[3])
        rawon(id, mine[id])
      end
    end
    rtos.on = function(id, fn)
      if mine[id] then
        others[id] = fn
        return
      end
      return rawon(id, fn)
    end
  end
end

-- ---------------------------------------------------------------- socketcore calls
do
  local function own(r)
    if type(r) == "number" and r >= 0 and not owned[r] then
      owned[r] = true
      nowned = nowned + 1
    end
    return r
  end

  if type(SC) == "table" then
    -- arguments are passed exactly as the host sent them (the core counts them with lua_gettop)
    A.reg("socketcore.sock_conn", function(...) return own(SC.sock_conn(...)) end)
    if SC.sock_conn_ext then
      A.reg("socketcore.sock_conn_ext", function(...) return own(SC.sock_conn_ext(...)) end)
    end
    A.reg("socketcore.sock_send", function(...) return SC.sock_send(...) end)
    if type(SC.sock_getremainbuf) == "function" then
      A.reg("socketcore.sock_getremainbuf", function(...) return SC.sock_getremainbuf(...) end)
    end
    A.reg("socketcore.sock_close", function(...) return SC.sock_close(...) end)
    -- sock_recv(i, len): the core asserts on a length of 0 and reboots (platform_socket_recv starts with
    -- ASSERT(data != NULL && length > 0), app/elua/platform/openat/src/platform_socket.c:827), and
    -- l_sock_recv (tcpipsock.c) passes `len` on as a kal_uint16, so 65536 is 0 again: the agent
    -- refuses any len that is not an integer 1..65535 with BADARG and never calls the core with it
    A.reg("socketcore.sock_recv", function(...)
      local len = select(2, ...)
      if type(len) ~= "number" or len % 1 ~= 0 or len < 1 or len > 65535 then
        error({ TP.E_ARG, "sock_recv: len must be an integer 1..65535 (bytes), got " .. tostring(len) ..
          " (the core asserts on 0: platform_socket.c:827)" }, 0)
      end
      return SC.sock_recv(...)
    end)
    -- every slot the agent opened for a host: sock_close now, sock_destroy on its CLOSE_CNF (or now
    -- when sock_close had nothing to close: no CNF comes then)
    HAL.sweep = function()
      local n = 0
      for idx in pairs(owned) do
        local ok, r = pcall(SC.sock_close, idx)
        if ok and r == 1 then closing[idx] = true else pcall(SC.sock_destroy, idx) end
        owned[idx] = nil
        n = n + 1
      end
      nowned = 0
      return n
    end
    A.reg("socketcore.sock_destroy", function(idx)
      local r = SC.sock_destroy(idx)
      if r == 1 and owned[idx] then
        owned[idx] = nil
        nowned = nowned - 1
      end
      return r
    end)
    if type(SC.sock_setopt) == "function" then
      A.reg("socketcore.sock_setopt", function(...) return SC.sock_setopt(...) end)
    end
    -- the socketcore.* constants as this core defines them
    local CONSTS = { "SOL_SOCKET", "IPPROTO_TCP", "SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT",
      "SO_REUSEADDR", "ERR_UNKOWN", "ERR_OK", "ERR_ENOMEM", "ERR_ENOBUFS", "ERR_ETIMEOUT", "ERR_ERTE", "ERR_EINPROGRESS",
      "ERR_EWOULDBLOCK", "ERR_EADDRINUSE", "ERR_EALREADY", "ERR_EISCONN", "ERR_ENOTCONN", "ERR_EIF", "ERR_EABORT",
      "ERR_ERST", "ERR_ECLSD", "ERR_EARG", "ERR_EIO", "ERR_SSL_EHANDESHAK", "ERR_SSL_EINIT", "ERR_SSL_EINVALID" }
    A.reg("socketcore.consts", function()
      local t = {}
      for i = 1, #CONSTS do t[CONSTS[i]] = SC[CONSTS[i]] end
      return t
    end)
  end
end

-- ---------------------------------------------------------------- status
do
  local function regif(name, t, fn)
    if t and type(t[fn]) == "function" then A.reg(name, t[fn]) end
  end
  regif("net.getState", net, "getState")
  regif("net.getRssi", net, "getRssi")
  regif("net.getRsrp", net, "getRsrp")
  regif("net.getNetMode", net, "getNetMode")
  regif("net.csqQueryPoll", net, "csqQueryPoll")
  regif("misc.getImei", misc, "getImei")
  regif("misc.getModelType", misc, "getModelType")
  regif("rtos.get_version", rtos, "get_version")
  -- sys.restart(reason): off unless TETHER_ALLOW_RESTART (config.lua); the reply goes out first
  A.reg("sys.restart", function()
    if not TETHER_ALLOW_RESTART then
      error({ TP.E_ERR, "sys.restart is off on this module: set TETHER_ALLOW_RESTART = true in the agent's settings (main.lua, or as a global before require)" }, 0)
    end
    sys.timerStart(function()
      if not pcall(sys.restart, "tether") then pcall(rtos.restart) end
    end, 100)
    return true
  end)
  regif("link.isReady", link, "isReady")
  -- readiness and registration, forwarded as P messages
  local TOPICS = { "IP_READY_IND", "IP_ERROR_IND", "NET_STATE_REGISTERED", "NET_STATE_UNREGISTER" }
  for i = 1, #TOPICS do
    local topic = TOPICS[i]
    sys.subscribe(topic, function(...) A.guard(A.publish, topic, ...) end)
  end
end

-- ---------------------------------------------------------------- keep trace off the RPC UART
-- print/log go to the trace port (USB on 4G); log.openTrace / rtos.set_trace could point them at a
-- UART: refuse that for the RPC UART.
do
  local rlog = rawget(_G, "log")
  if type(rlog) == "table" and type(rlog.openTrace) == "function" then
    local raw = rlog.openTrace
    rlog.openTrace = function(v, uartid, baud)
      if v and uartid == U then
        A.guard(A.log, 2, "log.openTrace to the RPC UART refused")
        return
      end
      return raw(v, uartid, baud)
    end
  end
  if type(rtos.set_trace) == "function" then
    local raw = rtos.set_trace
    rtos.set_trace = function(flag, uartid, ...)
      if flag == 1 and uartid == U then
        A.guard(A.log, 2, "rtos.set_trace to the RPC UART refused")
        return
      end
      return raw(flag, uartid, ...)
    end
  end
end

-- ---------------------------------------------------------------- the RPC UART
-- The 8910 posts the RX message only when its ring goes from empty to non-empty, with no length:
-- read until uart.read returns "" every time. Reads are bounded per event (the watchdog must never
-- starve); if bytes remain, a timer continues, and a slow poll heals a lost event.
do
  local drain
  local function again() A.guard(drain) end
  drain = function()
    for _ = 1, 32 do
      local s = uart.read(U, 1024)
      if s == nil or s == "" then return end
      A.feed(s)
    end
    sys.timerStart(again, 5) -- bytes remain: no RX event will come for them, continue soon
  end
  if type(uart.on) ~= "function" then pcall(require, "clib") end
  uart.on(U, "receive", function() A.guard(drain) end)
  local setup_ok, setup_err = pcall(function()
    if U == USB then
      uart.setup(U, 0, 0, uart.PAR_NONE, uart.STOP_1)
    else
      uart.setup(U, TETHER_BAUD, 8, uart.PAR_NONE, uart.STOP_1)
    end
  end)
  if not setup_ok then print("tether: uart.setup failed: " .. tostring(setup_err)) end
  sys.timerLoopStart(function() A.guard(drain) end, 1000) -- heals a lost RX event
  sys.timerLoopStart(function() A.guard(A.tick) end, TP.TICK_MS) -- the link's retransmission timer
end

if pm and pm.wake then pcall(pm.wake, "tether") end
if TETHER_QUERY_MS > 0 and net and net.startQueryAll then pcall(net.startQueryAll, TETHER_QUERY_MS, 600000) end

A.start()
if SHARED then A.log(2, "socket was required before the agent: its MSG_SOCK_* handlers were replaced") end
if TETHER_MODNAME == nil then
  sys.init(0, 0)
  sys.run()
end
return A

-- LuatOS family part: the `socket` library over the tether protocol.
-- Semantics: docs/firmware/luatos.md; spec: docs/protocol.md.
local sys = require("sys")
local U = TETHER_UART

HAL.write = function(s) uart.write(U, s) end
-- TX pacing (issue 7). On the EC618 `uart.write` hands the bytes to luat_uart_write, a blocking
-- TX through the driver's 1024-byte TX cache (Uart_TxTaskSafe; Uart_BaseInitEx(id, baud, 1024, ...)
-- in luat_uart_setup, luatos-soc-2022 interface/src/luat_uart_ec618.c at 1a4c51c2): the Lua task
-- is held until all but the last 1024 bytes are on the line, so a 4 KB reply would stop the agent
-- for about 270 ms at 115200 (no received frame read, no acknowledgement sent). Frames wait here
-- instead and go when the cache has room, estimated from the baud and mcu.ticks() (not from the
-- "sent" event: it comes from the driver's TX-done callback, and whether that comes once per write
-- is not known here; a pacing that waited for a missing event would stop the agent). Acknowledgements
-- go at once. USB ports (uart.VUART_0/1) have no baud: nothing to wait for.
local TXCACHE = 1024
-- ms of bytes left in the TX cache when the next frame goes (below): 3 ms measured the same in a
-- both-ways echo; 10 leaves room for a Lua timer that runs late on the module
local TXLEAD = 10
if U < 32 and mcu and mcu.ticks then
  -- Q: frames in the order written by the core; R: repairs, in the order the host listed them,
  -- which go before Q (a list names the lowest hole first: its repair moves the host's ack on)
  local Q, qh, qt, R, rh, rt, armed, free = {}, 1, 0, {}, 1, 0, false, 0
  local per = 10000 / (TETHER_BAUD or 115200) -- ms a byte (8N1)
  local hz = mcu.hz and mcu.hz() or 1000
  local function now() return mcu.ticks() * 1000 / hz end
  local function put(s)
    local t = now()
    if free < t or free > t + 4 * TXCACHE * per then free = t end -- idle, or the tick counter wrapped
    free = free + #s * per
    uart.write(U, s)
  end
  local pump
  pump = function()
    armed = false
    while true do
      local s = R[rh] or Q[qh]
      if s == nil then return end
      local left = (free - now()) / per -- bytes still in the TX cache
      -- the next frame goes once it fits and the cache has at most TXLEAD ms of bytes left: an
      -- acknowledgement written meanwhile waits behind that and one frame, not behind a full
      -- cache (at 115200 a full cache is 89 ms, and the host's window waited for it)
      if left > 0 and (left + #s > TXCACHE or left * per > TXLEAD) then
        armed = true
        sys.timerStart(A.guard, math.max(1, math.ceil(math.max((left + #s - TXCACHE) * per, left * per - TXLEAD))), pump)
        return
      end
      if R[rh] then
        R[rh] = nil
        rh = rh + 1
      else
        Q[qh] = nil
        qh = qh + 1
      end
      put(s)
    end
  end
  -- ticks (TP.TICK_MS) until n bytes written now are on the line: behind what the TX cache holds
  -- and the repairs waiting here (the core repeats a repair only once it could have reached the
  -- host, docs/protocol.md section 5)
  HAL.txq = function(n)
    local b = (free - now()) / per
    if b < 0 then b = 0 end
    for i = rh, rt do b = b + #R[i] end
    return (b + n) * per / TP.TICK_MS
  end
  -- true when T[a..b] holds the frame s (one of the queues above)
  local function holds(T, a, b, s)
    for i = a, b do
      if T[i] == s then return true end
    end
    return false
  end
  HAL.write = function(s, repair, now)
    if now then return put(s) end -- an acknowledgement (or the boot frame): nothing to wait for
    if repair then
      -- a frame still queued here was never on the line, so it is not lost: the host named it
      -- after a corrupt line (it guesses the frame after the highest it holds) and it goes in its
      -- turn; repeated ahead of its queued copy it went twice
      if holds(Q, qh, qt, s) or holds(R, rh, rt, s) then return end
      -- a repeated frame goes before the queued ones: the host holds what follows the hole and
      -- waits for this one; behind up to txwin (8 KB, 0.7 s at 115200) of queued frames it came
      -- after the host had asked again, and was sent twice
      rt = rt + 1
      R[rt] = s
    else
      qt = qt + 1
      Q[qt] = s
    end
    if not armed then pump() end
  end
end
-- crypto.crc32 is CRC-32/ISO-HDLC, pushed as a signed 32-bit integer (the core accepts that)
HAL.crc32 = crypto.crc32
HAL.baud = TETHER_BAUD
HAL.maxframe = 1024
HAL.outmax = 1024
-- the host keeps at most `window` bytes unacknowledged: the RX buffer never overflows. The EC7xx
-- driver gives uart.setup at most 16384 bytes (luatos-soc-2023 luat_uart_ec7xx.c luat_uart_setup,
-- lines 174-178 at 6cd6dfa8, clamps bufsz to 2048..16384): a larger TETHER_RXBUF must not widen
-- the window
HAL.window = math.min(TETHER_RXBUF, 16384) - 64
-- two 4 KB `rx` replies: the agent goes on handling calls (and acknowledging the host's frames)
-- while one is on the line (issue 7); the backlog limit stays 16 KB
HAL.txwin = 8192
-- host frames kept ahead of a gap count as window up to 4 KB more (docs/protocol.md section 4): at
-- 10^-3 the host otherwise waited for the window while a hole was repaired
HAL.hold = 4096
HAL.obmax = 16384
HAL.maxmsg = 8192
HAL.heap = function() return math.floor(collectgarbage("count")) end
HAL.epoch = function()
  local e = 0
  if crypto.trng then
    local s = crypto.trng(4)
    if s and #s == 4 then e = (s:byte(1) % 128) * 16777216 + s:byte(2) * 65536 + s:byte(3) * 256 + s:byte(4) end
  end
  if e == 0 then
    math.randomseed(os.time() + (mcu and mcu.ticks and mcu.ticks() or 0))
    e = math.random(1, 2147483646)
  end
  return e
end

-- Firmware built before 2023-01-31 returns the first boolean inverted ("true = error").
-- Probe once: socket.wait on a fresh (offline) socket fails, so the first value says which.
local boolinv
local function probe()
  if boolinv ~= nil then return boolinv end
  local ok, c = pcall(socket.create, nil, function() end)
  if ok and c then
    local ok2, first = pcall(socket.wait, c)
    if ok2 and type(first) == "boolean" then boolinv = first end
    pcall(socket.release, c)
  end
  return boolinv
end

HAL.info = function(t)
  t.family = "luatos"
  local ok, v = pcall(rtos.version)
  t.fw = ok and v or nil
  ok, v = pcall(rtos.bsp)
  t.bsp = ok and v or nil
  t.boolinv = probe()
  -- socket.rx takes everything the firmware holds per read and hands it out in `limit` pieces
  -- (see socket.rx below): nothing pending at the peer's FIN is lost
  t.rxdrain = true
  if rtos.meminfo then
    local ok2, total, used, max = pcall(rtos.meminfo, "lua")
    if ok2 then t.luamem = { total = total, used = used, max = max } end
  end
end

-- a callback for socket `id`: every event becomes an E message, under pcall
-- (none once the host's handle was released: a swept socket stays silent)
local function cb(id)
  return function(ctrl, event, param)
    if not A.dead[id] then A.guard(A.event, id, event, param) end
  end
end

-- bytes read from the firmware that the host has not taken yet, per socket (see socket.rx)
local rxstash = setmetatable({}, { __mode = "k" })

-- every socket (ctrl) the agent made for a host is a handle: close it (a forced close, no event),
-- then free the ctrl, each under pcall; the handle dies with it, as nothing may be called on a
-- released ctrl (docs/firmware/luatos.md lines 164 and 172, luat_lib_socket.c)
HAL.sweep = function()
  local n = 0
  for id, c in pairs(A.handles) do
    pcall(socket.close, c)
    pcall(socket.release, c)
    rxstash[c] = nil
    A.release(id)
    n = n + 1
  end
  return n
end

A.reg("socket.create", function(ad)
  local id = A.newHandle(nil)
  local s = socket.create(ad, cb(id))
  if s == nil then return nil end
  A.bind(id, s)
  return s
end)

A.reg("socket.accept", function(c)
  local id = A.newHandle(nil)
  local r = { n = 0 }
  local function keep(...) r = { n = select("#", ...), ... } end
  keep(socket.accept(c, cb(id)))
  if type(r[2]) == "userdata" then
    A.bind(id, r[2])
    -- the accepted socket reports normal events only once a call has put it in
    -- a waiting state (luat_lib_socket.c accept path): arm it for EVENT now
    pcall(socket.wait, r[2])
  end
  return (table.unpack or unpack)(r, 1, r.n)
end)

A.reg("socket.release", function(c)
  local id = A.hid[c]
  socket.release(c)
  rxstash[c] = nil
  if id then A.release(id) end
end)

-- rx(c, wantbuf, flag, limit): with wantbuf the agent reads into its own zbuff
-- and appends the bytes as one extra return value after the firmware's.
-- Each firmware read takes EVERYTHING the socket holds: socket.rx is called without a limit, and
-- l_socket_rx (luat_lib_socket.c:723) asks network_rx for the pending total and grows the zbuff to
-- it. This matters after the peer's FIN: network_rx (luat_network_adapter.c, network_rx: "need_close
-- && !new_rx_flag" returns -1, and a read with a buffer clears new_rx_flag) allows ONE more read, so
-- a read of `limit` bytes out of more would lose the rest. What exceeds `limit` waits here (per
-- socket, at most what the firmware had buffered: its TCP receive window) and the next rx calls
-- hand it out first, `limit` bytes at a time, in order, without calling the firmware; once it is
-- gone they read the firmware again (which then says (false, 0) after a FIN: the end).
local function okv() return probe() ~= true end -- the firmware's "success" first value (boolinv)
-- the next (at most `limit`) bytes the agent holds for `c`; forgets the stash once it is empty
local function unstash(c, st, limit)
  local n = st.b:used() - st.off
  if limit ~= nil and n > limit then n = limit end
  local s = st.b:toStr(st.off, n)
  st.off = st.off + n
  if st.off >= st.b:used() then
    rxstash[c] = nil
    if st.b.free then st.b:free() end
  end
  return n, s
end
A.reg("socket.rx", function(c, wantbuf, flag, limit)
  local st = rxstash[c]
  if not wantbuf then
    if st then return okv(), st.b:used() - st.off end
    return socket.rx(c)
  end
  if st == nil then
    local b = zbuff.create(limit or 1024)
    local r = { n = 0 }
    local function keep(...) r = { n = select("#", ...), ... } end
    keep(socket.rx(c, b, flag))
    local used = b:used()
    if limit == nil or used <= limit or r[3] ~= nil then
      -- all of it fits (or a UDP datagram, which is never split)
      r.n = r.n + 1
      r[r.n] = b:toStr(0, used)
      if b.free then b:free() end
      return (table.unpack or unpack)(r, 1, r.n)
    end
    st = { b = b, off = 0 }
    rxstash[c] = st
  end
  local n, s = unstash(c, st, limit)
  return okv(), n, nil, nil, s
end)

-- read(c, limit) and wait(c) see the bytes the agent holds for the socket first, so that raw calls
-- mixed with rx keep the stream's order: read hands them out (TCP: (true, data)), wait says
-- (true, true) "data pending" while there are some
if socket.read then
  A.reg("socket.read", function(c, limit, ...)
    local st = rxstash[c]
    if st == nil then return socket.read(c, limit, ...) end
    if type(limit) == "number" and limit <= 0 then limit = nil end
    local _, s = unstash(c, st, limit)
    return okv(), s
  end)
end
if socket.wait then
  A.reg("socket.wait", function(c, ...)
    if rxstash[c] then return okv(), true end
    return socket.wait(c, ...)
  end)
end

-- tx(c, data, ip, port, flag, resume): the firmware's socket.tx plus a per-socket HOLD, so that a
-- host keeping several tx in flight (pipelined) never gets its TCP stream reordered. The firmware
-- refuses a tx when its buffer is full ((ok, true, true): nothing accepted); a TX_OK can free the
-- buffer between two queued calls, so chunk k could be refused and chunk k+1 accepted. Hence:
--   * any refusal as full sets the hold on that socket (whatever the 6th argument);
--   * resume == false (a pipelined tx): while the hold is set it is refused the same way, with the
--     firmware's own first value of the refusal, WITHOUT calling the firmware;
--   * resume == true: clears the hold, then calls the firmware (the host resends from the first
--     refused chunk with it, after the other refused chunks settled and TX_OK came);
--   * no 6th argument (older hosts, raw calls): clears the hold and calls the firmware, exactly as
--     before, so a host that sends one tx at a time and retries after TX_OK keeps working.
-- The 6th argument is never passed to the firmware. A refusal is recognised by its 2nd and 3rd
-- values both true (failure is (ok, ?, false)); boolinv only inverts the 1st, which is replayed as is.
local txhold = setmetatable({}, { __mode = "k" })
A.reg("socket.tx", function(c, ...)
  local a = { n = select("#", ...), ... }
  local resume
  if a.n >= 5 then
    resume = a[5]
    a.n = 4
    while a.n > 1 and a[a.n] == nil do a.n = a.n - 1 end
  end
  if resume == false then
    local first = txhold[c]
    if first ~= nil then return first, true, true end
  else
    txhold[c] = nil
  end
  local r = { n = 0 }
  local function keep(...) r = { n = select("#", ...), ... } end
  keep(socket.tx(c, (table.unpack or unpack)(a, 1, a.n)))
  if r[2] == true and r[3] == true then txhold[c] = r[1] end
  return (table.unpack or unpack)(r, 1, r.n)
end)

-- connect(c, host, port, ...): an integer host is the raw IPv4 address word (little-endian on the
-- module: 0x0100007F is 127.0.0.1, docs/firmware/luatos.md). The agent passes it to the firmware as
-- dotted text: l_socket_connect (luat_lib_socket.c:486) leaves its `ip` pointer NULL for an integer
-- and then logs it with "%s" (LLOGD "connect to %s,%d", luat_lib_socket.c:507), which a libc may
-- crash on. A dotted string connects to the same address (network_connect parses it, no DNS).
A.reg("socket.connect", function(c, host, ...)
  if type(host) == "number" and host == math.floor(host) then
    local u = host % 4294967296
    host = string.format("%d.%d.%d.%d", u % 256, math.floor(u / 256) % 256, math.floor(u / 65536) % 256,
      math.floor(u / 16777216) % 256)
  end
  return socket.connect(c, host, ...)
end)

for _, name in ipairs({ "debug", "config", "linkup", "discon", "close",
  "listen", "state", "setDNS", "sslLog", "localIP", "adapter", "remoteIP", "sntp", "ntptm", "sntp_port",
  "dft", "close_all", "rx_cache" }) do
  if socket[name] then A.reg("socket." .. name, socket[name]) end
end

-- rtos.reboot(): off unless TETHER_ALLOW_RESTART (config.lua); the reply goes out first
A.reg("rtos.reboot", function()
  if not TETHER_ALLOW_RESTART then
    error({ TP.E_ERR, "rtos.reboot is off on this module: set TETHER_ALLOW_RESTART = true in the agent's settings (main.lua, or as a global before require)" }, 0)
  end
  sys.timerStart(function() if not pcall(rtos.reboot) and pm and pm.reboot then pcall(pm.reboot) end end, 100)
  return true
end)

-- module status for `tether info`
if mobile then
  for _, name in ipairs({ "imei", "csq", "status", "iccid", "rssi" }) do
    if mobile[name] then A.reg("mobile." .. name, mobile[name]) end
  end
end
if rtos.meminfo then A.reg("rtos.meminfo", rtos.meminfo) end

for _, topic in ipairs({ "NTP_UPDATE", "NTP_ERROR", "IP_READY", "IP_LOSE" }) do
  sys.subscribe(topic, function(...) A.guard(A.publish, topic, ...) end)
end

uart.setup(U, TETHER_BAUD, 8, 1, uart.None, uart.LSB, TETHER_RXBUF)
-- read the RX buffer until a read comes back empty, as the firmware's uart demos do (a short read
-- is not taken for an empty buffer: whether the driver's read stops at its ring's wrap is not
-- known here)
local function onrx(id, len)
  if len == -1 then A.log(2, "uart rx buffer overflow: bytes were lost") end
  while true do
    local s = uart.read(id, 1024)
    if s == nil or #s == 0 then break end
    A.feed(s)
  end
end
-- what A.guard does (an error becomes an L1 notice), written out: this runs for every batch the
-- host sends, and A.guard's pack/unpack of the results nobody reads cost three calls each time
uart.on(U, "receive", function(id, len)
  local ok, e = pcall(onrx, id, len)
  if not ok then pcall(A.log, 1, e) end
end)

A.start()
-- the link's retransmission timer
sys.timerLoopStart(function() A.guard(A.tick) end, TP.TICK_MS)
if TETHER_MODNAME == nil then sys.run() end
return A

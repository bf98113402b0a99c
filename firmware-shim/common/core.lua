-- tether agent core: protocol v2 (docs/protocol.md), shared by every firmware family.
-- Lua 5.1 and 5.3 (integer-only cores and NodeMCU's int32/float32 5.3 included): no //, no bit
-- operators, no goto, no math library needed, no number above 2^31-1 is ever made here.
-- The family part fills HAL, calls A.start() once its UART is set up, feeds every chunk it reads
-- to A.feed(s) and calls A.tick() every TP.TICK_MS ms from one periodic timer.
--   HAL.write(s, r, now)  write bytes to the RPC UART; r: a repeated frame (a repair), which a
--                    family that queues its frames ahead of a slow UART may send before the queued
--                    ones; now: an unsequenced frame (an A in either form, a B), which such a
--                    family writes at once, ahead of its queue
--   HAL.crc32(s)     CRC-32/ISO-HDLC of s as an integer (signed or unsigned 32-bit)
--   HAL.maxframe     longest line the agent accepts (bytes incl. \n, >= 255)
--   HAL.outmax       longest frame the agent sends (bytes incl. \n)
--   HAL.window       receive window (bytes, at most the UART RX buffer)
--   HAL.txwin        retransmit queue limit (bytes)
--   HAL.hold         (optional) bytes of host frames kept ahead of a gap that the agent adds to
--                    its window for a host that takes them (hello flag 2, docs/protocol.md section
--                    4): they left the UART buffer. Without it the window is HAL.window alone
--   HAL.txq(n)       (optional) ticks until n bytes written now are on the line, behind the
--                    family's UART queue (LuatOS: its TX cache and the repairs not yet written): a
--                    repair is repeated only REPAIR_TICKS after it is on the line, not after it was
--                    queued
--   HAL.obmax        backlog limit for the host in a session (bytes of messages not yet sent;
--                    optional, default 4 * txwin); see send below
--   HAL.maxmsg       longest message accepted after reassembly (bytes)
--   HAL.baud         UART baud rate (line time in the retransmission timeout)
--   HAL.heap()       Lua heap in KB (integer); a family with HAL.part may leave it out: the
--                    `heap` function of HAL.part("info") then (NodeMCU: tether_info.lua)
--   HAL.epoch()      1..2147483646, new at every start
--   HAL.info(t)      add family fields to the hello table t; left out like HAL.heap: `info` of
--                    HAL.part("info")
--   HAL.sweep()      release every module object the agent made for a host (sockets, servers,
--                    timers) with the family's own calls, each under pcall; returns how many
--                    (optional: without it nothing is released)
--   HAL.called()     after each call from the host (optional; NodeMCU drops what it loaded for it)
--   HAL.spent()      (optional) forget the loaded copy of tether_calls: called by it after it
--                    decoded a call of over 512 bytes or a built-in one, and by the core before a
--                    reply with a table is encoded; the core runs the function (K.run) once the
--                    part returned, so the part is garbage by then (the next call loads it again)
--   HAL.part(name)   the table of a @lazy block below when the build left it out of the file
--                    (NodeMCU: tether_<name>.lua, loaded when needed): "call" (tether_calls),
--                    "core" (tether_builtins), "enc", "gap" or "bundle"; and "info", the family's
--                    heap, info, lazy and capname (the name of capability number n, as
--                    tether_builtins' capname) where HAL leaves them out
--   HAL.load(name)   (optional) the function `name` loaded on first use, or nil: the core calls it
--                    for a name the host calls that is not registered. With HAL.lazy, a string of
--                    names each followed by one space (listed in agent.caps after the registered
--                    ones), only for those; without it HAL.load alone decides, and the list is
--                    `lazy` of HAL.part("info") (NodeMCU: it lives in a flash file, not the heap)

local HAL = {}
local A = { handles = {}, hid = {}, dead = {}, nexth = 1, fns = {}, caps = {} }

-- @lazy call: the host's calls (docs/protocol.md section 8): decoding the argument values,
-- dispatch and the reply. A function of (A, N) with N.K the core's shared
-- state (a field of A, not a main-chunk local: those are few on NodeMCU); returns { call = call }. In one-file agents it runs once at load (resident); the NodeMCU
-- build (scripts/gen-lua.ts) cuts this block out into tether_call.lua, loaded on first use.
function A.tether_calls(A, N)
  local K = N.K
  local TP, HAL, ST, xerr = K.TP, K.HAL, K.ST, K.xerr
  local sfind, ssub, sbyte = string.find, string.sub, string.byte
  local function badarg(m) error({ TP.E_ARG, m }, 0) end

  -- the value token at s[i]; returns it and the index of the next token
  local function dec(s, i, depth)
    local c = ssub(s, i, i)
    if c == "b" then
      local _, e, n = sfind(s, "^b(%d+):", i)
      n = tonumber(n)
      if not e or e + n > #s or (e + n < #s and sbyte(s, e + n + 1) ~= 32) then badarg("bad string token") end
      return ssub(s, e + 1, e + n), e + n + 2
    end
    if c == "{" or c == "d" then return K.part("enc").dec(s, i, depth, dec) end -- tables, floats: tether_enc
    local j = sfind(s, " ", i, true) or #s + 1
    local t = ssub(s, i, j - 1)
    j = j + 1
    if t == "_" then return nil, j end
    if t == "T" then return true, j end
    if t == "F" then return false, j end
    if c == "'" then return ssub(t, 2), j end
    if c == "h" then
      local id = tonumber(ssub(t, 2))
      local o = id and A.handles[id]
      if o == nil then
        error({ TP.E_HANDLE, (id and A.dead[id]) and ("handle " .. id .. " was released") or ("unknown handle " .. ssub(t, 1, 16)) }, 0)
      end
      return o, j
    end
    if not sfind(t, "^%-?%d+$") then badarg("bad token " .. ssub(t, 1, 16)) end
    return tonumber(t), j
  end

  -- the values of s from index i on (the message itself: no copy of a payload is made first)
  local function decvals(s, i)
    local out, n = {}, 0
    while i <= #s do
      local v
      v, i = dec(s, i, 0)
      n = n + 1
      out[n] = v
    end
    out.n = n
    return out
  end

  local BUILTIN = { hello = true, ["agent.caps"] = true, ["agent.stats"] = true, ["agent.ping"] = true, ["agent.release_all"] = true }
  -- a registered function, or a built-in one (tether_builtins: resident, or loaded on first use)
  local function lookup(fname)
    local f = A.fns[fname]
    if f == nil and BUILTIN[fname] then f = (K.builtins or HAL.part("core"))[fname] end
    return f
  end
  -- the name of capability number n: tether_builtins' list, or where that is not resident the
  -- family's (NodeMCU: tether_info.lua, a small flash file, not tether_builtins)
  local function capname(n) return (K.builtins or HAL.part("info")).capname(n) end

  -- call id: fname with the values of the message K.m from index i on (the core hands the message
  -- over in K.m and keeps no reference: the payload is freed as soon as it is decoded). Returns the
  -- function and its arguments (a table with n) for the core to run (K.run), or nothing when it
  -- sent the call's error reply itself
  local function call(id, fname, i)
    local s = K.m
    K.m = nil
    local f, ok0 = nil, true
    -- @fast (a registered function by name or by its capability number, A.reg keeps both: the
    -- host sends numbers; else lookup under pcall: built-ins, NodeMCU's numbers by capname)
    f = A.fns[fname]
    -- @end fast
    if f == nil then ok0, f = pcall(lookup, fname) end
    if ok0 and f == nil and sfind(fname, "^%d+$") then -- a capability number (tether_builtins knows the list)
      ok0, f = pcall(capname, tonumber(fname))
      if ok0 then
        fname = f or fname
        -- NodeMCU: the list (tether_core, tether_sys) goes before the function's group is loaded
        if HAL.called then HAL.called() end
        ok0, f = pcall(lookup, fname)
      end
    end
    if not ok0 then return K.fail(id, f, TP.E_ERR, true) end
    local z = HAL.lazy
    if f == nil and HAL.load and (not z or sfind(" " .. z, " " .. fname .. " ", 1, true)) then
      local ok, g = pcall(HAL.load, fname)
      if not ok then return K.fail(id, g, TP.E_ERR, true) end
      f = g
    end
    if f == nil then return xerr(id, TP.E_NOFN, "no function " .. ssub(fname, 1, 64)) end
    local ok, args = pcall(decvals, s, i)
    local big = #s > 512 or BUILTIN[fname]
    s = nil
    if not ok then return K.fail(id, args, TP.E_ARG, true) end
    -- a call carrying a payload, or a built-in one (hello loads tether_core.lua and
    -- tether_info.lua, once a session), on a build that loads this part from flash: the part is
    -- forgotten now (HAL.spent; the next call loads it again) and is garbage once this returns, so
    -- the payload (or those parts) and the decoder are not in the heap together
    if big and HAL.spent then HAL.spent() end
    return f, args
  end
  return { call = call }
end -- tether_calls
-- @end

-- @lazy core: the built-in calls (hello, agent.caps, agent.stats, agent.ping,
-- agent.release_all), listed first in agent.caps. A function of (A, N) like tether_calls; returns
-- name -> function. Resident in one-file agents; NodeMCU's build cuts it out into tether_core.lua.
function A.tether_builtins(A, N)
  local K = N.K
  local TP, HAL, L, ST = K.TP, K.HAL, K.L, K.ST
  local unpack = unpack or table.unpack
  local B = {}
  -- the names loaded on first use: HAL.lazy, or the family's list (HAL.load without HAL.lazy)
  local function lazy()
    local z = HAL.lazy
    if not z and HAL.load then z = HAL.part("info").lazy end
    return z
  end
  -- HAL.heap, or the family's (see HAL.part)
  local function heap() return (HAL.heap or HAL.part("info").heap)() end
  -- the name of capability number n (registered ones first, then HAL.lazy's); not a call (the
  -- BUILTIN list of tether_calls gates what the host can call here)
  function B.capname(n)
    local nm = A.caps[n]
    local z = lazy()
    if nm or not z then return nm end
    n = n - #A.caps
    for w in string.gmatch(z, "(%S+) ") do
      n = n - 1
      if n == 0 then return w end
    end
  end
  -- the host's hello: its protocol, its line limit and its features, a sum of flags (docs/protocol.md
  -- section 9); flag 1: it reads M frames. An agent with the bundle part resident sends them from
  -- then on in this session (a hello without features changes nothing: tether diag's second one)
  B.hello = function(_, _, feats)
    feats = tonumber(feats)
    if feats then
      L.mb = K.bundle ~= nil and feats % 2 == 1 or nil
      -- @unsplit (flag 2: the host takes the bytes of frames kept ahead of a gap as window, section 4)
      L.hw = HAL.hold and feats % 4 >= 2 or nil
      -- flag 4: it reads short heads (section 1); this agent then sends them
      L.sh = feats % 8 >= 4 or nil
      -- flag 8: it reads short acknowledgements (section 4); this agent then sends them
      L.sa = feats % 16 >= 8 or nil
      -- @end unsplit
    end
    local z = lazy()
    local t = {
      proto = TP.PROTO, agent = TP.AGENT, lua = _VERSION,
      intbits = (math and math.type) and (math.maxinteger == 2147483647 and 32 or 64) or 53,
      maxframe = HAL.maxframe, outmax = HAL.outmax, window = HAL.window, txwin = HAL.txwin,
      maxmsg = HAL.maxmsg, heap = heap(), epoch = L.epoch,
      ncaps = #A.caps + (z and select(2, string.gsub(z, " ", "")) or 0),
      released = L.freed or 0, bundle = K.bundle and 1 or nil, hold = HAL.hold,
    }
    -- @unsplit (it reads short heads, section 1, and short acknowledgements, section 4: the host
    -- then sends them)
    t.short = 2
    -- @end unsplit
    local info = HAL.info or HAL.part("info").info
    info(t)
    return t
  end
  -- at most CAPS_PAGE names a call (docs/protocol.md section 9): the whole list in one reply was
  -- the NodeMCU agent's highest heap (43.9 of 44 KB)
  B["agent.caps"] = function(first, count)
    first = first or 1
    if first < 1 then first = 1 end
    count = count or TP.CAPS_PAGE
    if count > TP.CAPS_PAGE then count = TP.CAPS_PAGE end
    local out = {}
    for i = first, first + count - 1 do
      local nm = B.capname(i)
      if nm == nil then break end
      out[#out + 1] = nm
    end
    return unpack(out)
  end
  B["agent.stats"] = function()
    return { calls = ST.calls, bad = ST.bad, dup = ST.dup, ahead = ST.ahead, retx = ST.retx,
      lost = ST.lost, queued = L.qb, heap = heap(), held = ST.held, ferr = ST.ferr }
  end
  B["agent.ping"] = function(...) return L.epoch, ... end
  -- release every object the agent made for any host (a clean close, tether reset-sockets)
  B["agent.release_all"] = K.sweep

  return B
end -- tether_builtins
-- @end

-- @lazy enc: the value encoder (docs/protocol.md section 7) for replies, events and publishes
-- whose values are not all strings and integers, and the decoder's rare tokens (tables, floats).
-- A function of (A, N) like tether_calls; returns { encvals = encvals, dec = dec }. Resident in
-- one-file agents; NodeMCU's build cuts it out into tether_enc.lua, loaded when needed.
function A.tether_enc(A, N)
  local K = N.K
  local TP, encstr = K.TP, K.encstr
  local mtype = math and math.type
  local HUGE = math and math.huge

  local function encnum(v)
    if mtype then
      if mtype(v) == "integer" then return tostring(v) end
    elseif v % 1 == 0 and v >= -2147483647 and v <= 2147483647 then
      return string.format("%d", v)
    end
    if v ~= v then return "dnan" end
    if HUGE and v == HUGE then return "dinf" end
    if HUGE and v == -HUGE then return "d-inf" end
    return "d" .. string.format("%.17g", v)
  end

  local function enc(v, depth, out)
    local t, n = type(v), #out + 1
    if v == nil then out[n] = "_"
    elseif t == "boolean" then out[n] = v and "T" or "F"
    elseif t == "number" then out[n] = encnum(v)
    elseif t == "string" then out[n] = encstr(v)
    elseif A.hid[v] then out[n] = "h" .. A.hid[v]
    elseif t == "table" and depth < TP.MAX_DEPTH then
      out[n] = "{"
      for k, x in pairs(v) do
        enc(k, depth + 1, out)
        enc(x, depth + 1, out)
      end
      out[#out + 1] = "}"
    else out[n] = encstr(tostring(v)) end
  end

  -- the values p[from..to] as tokens separated by spaces
  local function encvals(p, from, to)
    local out = {}
    for i = from, to do enc(p[i], 0, out) end
    return table.concat(out, " ")
  end

  -- the decoder's rare tokens (a call's table and float arguments; tether_calls decodes the rest)
  local sfind, ssub = string.find, string.sub
  local function badarg(m) error({ TP.E_ARG, m }, 0) end
  -- the table or float token at s[i] and the index of the next token; dec1 is the caller's
  -- decoder (tether_calls), for a table's keys and values
  local function dec(s, i, depth, dec1)
    if ssub(s, i, i) == "{" then
      if depth >= TP.MAX_DEPTH then badarg("table too deep") end
      local tb = {}
      i = i + 2
      while ssub(s, i, i) ~= "}" do
        if i > #s then badarg("unterminated table") end
        local k, v
        k, i = dec1(s, i, depth + 1)
        v, i = dec1(s, i, depth + 1)
        if k ~= nil then tb[k] = v end
      end
      return tb, i + 2
    end
    local j = sfind(s, " ", i, true) or #s + 1
    local r = ssub(s, i + 1, j - 1)
    if r == "inf" then return HUGE, j + 1 end
    if r == "-inf" then return -HUGE, j + 1 end
    if r == "nan" then return HUGE and (HUGE - HUGE), j + 1 end
    local x = tonumber(r)
    if x == nil then badarg("bad float " .. ssub(ssub(s, i, j - 1), 1, 16)) end
    return x, j + 1
  end
  return { encvals = encvals, dec = dec }
end -- tether_enc
-- @end

-- @lazy gap: gap repair (docs/protocol.md section 5), needed only while host frames are kept
-- ahead of a gap or after a corrupt line. A function of (A, N); returns { holes, ahead, drain }.
-- Resident in one-file agents; NodeMCU's build cuts it out into tether_gap.lua.
function A.tether_gap(A, N)
  local K = N.K
  local TP, L = K.TP, K.L
  local MOD = TP.SEQ_MOD
  -- the " seq" list of missing frames below the highest kept one, plus the one after it after a
  -- corrupt line (bl); nil when there is none or the same list was sent this tick (again: a
  -- Y's answer, which always carries it)
  local function holes(bl, again)
    local top = -1
    for k in pairs(L.ah) do
      local d = (k - L.rx) % MOD
      if d < 0 then d = d + MOD end
      if d > top then top = d end
    end
    local out, k = {}, 0
    for d = 0, top - 1 do
      if k >= TP.MAX_MISS then break end
      if L.ah[(L.rx + d) % MOD] == nil then
        k = k + 1
        out[k] = " " .. ((L.rx + d) % MOD)
      end
    end
    if bl and k < TP.MAX_MISS then out[k + 1] = " " .. ((L.rx + top + 1) % MOD) end
    local m = table.concat(out)
    if m == "" or (m == L.lastnak and L.nakt == L.tk and not again) then return nil end
    L.lastnak, L.nakt = m, L.tk
    return m
  end
  -- a host frame ahead of the one expected: kept (selective repeat, at most a window of bytes)
  local function ahead(t, seq, body)
    K.ST.ahead = K.ST.ahead + 1
    L.gap = true
    if L.ah[seq] == nil and L.ahb + #body <= K.HAL.window + (L.hw and K.HAL.hold or 0) then
      L.ah[seq] = { t, body }
      L.ahb = L.ahb + #body
    end
  end
  -- hand on the kept frames that now follow in order
  local function drain()
    local H = L.ah
    while H[L.rx] and not K.blocked() do
      local f = H[L.rx]
      local ok, e = pcall(K.deliver, f[1], L.rx, f[2])
      if not ok then -- no room to take it (it is still kept): the next frame from the host tries again
        pcall(A.log, 1, e)
        break
      end
    end
  end
  return { holes = holes, ahead = ahead, drain = drain }
end -- tether_gap
-- @end

-- @lazy bundle: bundles (docs/protocol.md section 2): whole messages that share one M frame,
-- both ways. A function of (A, N); returns { take, cut }. Resident in one-file agents; NodeMCU's
-- build cuts it out into tether_bundle.lua (that agent does not offer bundles: loaded only if a
-- host sends one anyway).
function A.tether_bundle(A, N)
  local K = N.K
  local L, ST = K.L, K.ST
  local smatch, ssub = string.match, string.sub
  -- split(body): the messages of an M frame's body ("<len> <message>" each, len in bytes), each
  -- with its call id: B[i] the id (false: none), B[i + 1] the message, B.n the count of both; B.bad
  -- where the body stops being a bundle (the rest is dropped). The core splits before the frame
  -- counts as received: a body the heap has no room to split is not acknowledged, and comes again
  local function split(body)
    local n, B, p = #body, { n = 0 }, 1
    repeat -- at least one message (an empty body is not a bundle)
      local len, j = smatch(body, "^(%d%d?%d?%d?%d?%d?%d?) ()", p)
      len = tonumber(len)
      if not len or len < 1 or j + len - 1 > n then
        B.bad = true
        break
      end
      p = j + len
      local m = ssub(body, j, j + len - 1)
      B[B.n + 1], B[B.n + 2] = smatch(m, "^C(%d+) ") or false, m
      B.n = B.n + 2
    until p > n
    return B
  end
  local at -- the index in B of the next message to hand on
  -- hand them on from B[at]: at moves past each before it runs, so one that raises is not run again
  local function each(B)
    while at < B.n do
      local i = at
      at = at + 2
      K.message(B[i], B[i + 1])
    end
  end
  -- hand on the messages split from an M frame, in order (each is answered: K.message); with
  -- bundles on (L.mb) the replies wait for the last, and go out together
  local function take(B)
    local hold = L.mb
    L.hold, at = hold, 1
    while at < B.n do
      local ok, e = pcall(each, B)
      if not ok then pcall(A.log, 1, e) end
    end
    if B.bad then ST.bad = ST.bad + 1 end
    L.hold = nil
    if hold then K.flush() end
  end
  -- the waiting messages from the head of the backlog that fit one frame whole, as one M frame;
  -- false when fewer than two fit (nothing done: the core sends the first as usual)
  local function cut()
    local out, room = L.out, L.sh and L.size - 13 or L.size - 22 -- as a frame of one message (the core's cut)
    local b, used, h = {}, 0, L.oh
    while h <= L.ot do
      local m = out[h]
      if used + #m + 2 > room then break end -- too long even unescaped: not escaped for nothing
      local item = #m .. " " .. K.esc(m)
      if used + #item > room then break end
      b[#b + 1] = item
      used = used + #item
      h = h + 1
    end
    if b[2] == nil then return false end
    for k = L.oh, h - 1 do
      L.ob = L.ob - #out[k]
      out[k] = nil
    end
    if h > L.ot then L.oh, L.ot = 1, 0 else L.oh = h end
    K.push("M", table.concat(b))
    return true
  end
  return { split = split, take = take, cut = cut }
end -- tether_bundle
-- @end

-- everything else lives in this function's scope (keeps the main chunk's locals few)
local function tether_core()
  local sfind, ssub, sbyte, smatch, tconcat = string.find, string.sub, string.byte, string.match, table.concat
  local unpack = unpack or table.unpack
  local MOD = TP.SEQ_MOD
  -- counters (agent.stats) and link state; L.q holds the wire lines sent and not yet acknowledged
  -- (seq tx-#q .. tx-1), L.out the messages not yet sent (L.out[L.oh] .. L.out[L.ot]: head and tail
  -- indexes, no table.remove shifting the rest), L.pend the calls received while blocked
  local ST = { calls = 0, bad = 0, dup = 0, ahead = 0, retx = 0, lost = 0 }
  -- L.ah keeps host frames that came ahead of a gap (selective repeat, at most one window of
  -- bytes, plus HAL.hold with L.hw), L.rq the tick at which a frame's last repair is on the line
  -- (by seq), under seq + SEQ_MOD the next new seq at that moment (L.tx: frames from it on went on
  -- the line after the repair) and under seq + 2 * SEQ_MOD the repair's number (L.rc counts them:
  -- repairs go on the line in that order), until the frame is acknowledged; L.tk counts ticks.
  -- L.parts: the pieces of the message being reassembled (false: none). L.ow: the calls whose
  -- error reply the heap had no room to queue (ids in 1..4, their codes in 5..8; false: free),
  -- made here so that storing there allocates nothing; A.tick sends them (K.owe)
  local L = { nonce = 0, epoch = 0, size = TP.BASE_FRAME, buf = "", skip = false, tx = 0, rx = 0,
    q = {}, qb = 0, out = {}, oh = 1, ot = 0, ob = 0, pend = {}, pb = 0, t = 0, m = 1, ackdue = false,
    ah = {}, ahb = 0, rq = {}, rc = 0, tk = 0, parts = false,
    ow = { false, false, false, false, false, false, false, false } }
  A.stats = ST

  local function pack(...) return { n = select("#", ...), ... } end

  -- x mod m in 0..m-1 whatever the sign convention of % (integer-only cores may use C's)
  local function umod(x, m)
    x = x % m
    if x < 0 then x = x + m end
    return x
  end

  -- the CRC as 8 uppercase hex digits, from two 16-bit halves (the division is exact); with b64
  -- (short heads, docs/protocol.md section 1) as six base-64 digits, each the byte 48 + its value:
  -- the upper half in three, then the lower half in three, most significant first
  local function crchex(s, b64)
    local c = HAL.crc32(s)
    -- @fast (umod written out: a line each way per frame, the agent's hottest path)
    do
      local lo = c % 65536
      if lo < 0 then lo = lo + 65536 end
      c = (c - lo) / 65536 % 65536
      if c < 0 then c = c + 65536 end
      -- @unsplit (short heads: for a host that reads them, hello flag 4; a split family does not
      -- offer them)
      if b64 then
        local a, b = c % 64, lo % 64
        c, lo = (c - c % 64) / 64, (lo - lo % 64) / 64
        return string.char(48 + (c - c % 64) / 64, 48 + c % 64, 48 + a, 48 + (lo - lo % 64) / 64, 48 + lo % 64, 48 + b)
      end
      -- @end unsplit
      return string.format("%04X%04X", c, lo)
    end
    -- @end fast
    local lo = umod(c, 65536)
    return string.format("%04X%04X", umod((c - lo) / 65536, 65536), lo)
  end

  local ESC, UNESC = { ["\n"] = "\16J", ["\16"] = "\16P" }, { J = "\n", P = "\16" }
  local function esc(s)
    -- @fast (most messages have neither byte: two plain finds are cheaper than copying by gsub)
    if not sfind(s, "\16", 1, true) and not sfind(s, "\n", 1, true) then return s end
    -- @end fast
    return (string.gsub(s, "[\n\16]", ESC))
  end

  local function sendu(head) -- an unsequenced frame
    local s = "~" .. head
    HAL.write(s .. " " .. crchex(s) .. "\n", nil, true)
  end
  -- probe: the token of the Y this A answers (0: none); long: the answer to an S, never short
  local function sendA(miss, probe, long)
    L.ackdue = false
    -- with the host's flag 2 (hello), the window grows by the bytes kept ahead of a gap, which left
    -- the UART buffer: only while the ack stays where this A puts it (section 4)
    local w = HAL.window
    -- @unsplit
    if L.hw then w = w + (L.ahb < HAL.hold and L.ahb or HAL.hold) end
    -- @end unsplit
    -- @unsplit (a short acknowledgement for a host that reads them, section 4: ~a, ack in two
    -- base-64 digits, the window in three, the CRC in six; no miss list, no probe's token)
    if L.sa and not long and not miss and (probe or 0) == 0 and w < 262144 then
      local r, v = L.rx, (w - w % 64) / 64 -- exact divisions only (integer-only cores)
      local s = "~a" .. string.char(48 + (r - r % 64) / 64, 48 + r % 64, 48 + (v - v % 64) / 64, 48 + v % 64, 48 + w % 64)
      return HAL.write(s .. crchex(s, true) .. "\n", nil, true)
    end
    -- @end unsplit
    sendu("A" .. L.rx .. " " .. L.epoch .. " " .. w .. " " .. L.nonce .. " " .. (probe or 0) .. (miss or ""))
  end

  -- a new sequenced frame: kept in the retransmit queue until acknowledged. ci: the frame is a
  -- piece of the message being cut (L.ce) and the next piece starts at ci; false or nil: the
  -- message is done with it
  local function push(t, body, ci)
    local s
    -- @unsplit (a short head for a host that reads them, section 1)
    if L.sh then -- the short type (lower case; & f, $ t), seq and ack in two base-64 digits each
      local i, x, r = sfind("CRXEPLM&$", t, 1, true), L.tx, L.rx
      s = "~" .. ssub("crxeplmft", i, i) .. string.char(48 + (x - x % 64) / 64, 48 + x % 64, 48 + (r - r % 64) / 64, 48 + r % 64) .. body
      body = nil
      s = s .. crchex(s, true) .. "\n"
    else
    -- @end unsplit
      s = "~" .. t .. L.tx .. "." .. L.rx .. (body ~= "" and (" " .. body) or "")
      body = nil -- in the frame now: the piece need not stay while the CRC is computed
      s = s .. " " .. crchex(s) .. "\n"
    -- @unsplit
    end
    -- @end unsplit
    local q = L.q
    if q[1] == nil then L.t, L.m = 0, 1 end
    q[#q + 1] = s
    -- the piece is taken at once, next to the line that queued it: an error after this (the heap
    -- running out in HAL.write's call) must not cut the same piece again as a new frame
    if ci then L.ci = ci else L.ce = nil end
    L.qb = L.qb + #s
    L.tx = (L.tx + 1) % MOD
    L.ackdue = false
    HAL.write(s)
  end

  -- send queued messages while the retransmit queue has room; each is cut to the frame size now.
  -- The NodeMCU agent escapes it piece by piece (section 2: escaping is per frame), so no escaped
  -- copy of a whole message is made (one more copy of a 1460-byte "receive" at a 40 KB heap's
  -- peak); a family with heap to spare escapes it whole at once (L.cx: one gsub, not one a piece).
  -- The message being cut is L.ce from L.ci on: an error part way (a module out of memory in the
  -- CRC of a piece) leaves it there and the next flush goes on with the next piece, so a message
  -- is never cut short and the next one never joins its fragments
  local function cut()
    local out = L.out
    while (L.ce or out[L.oh]) and L.nonce ~= 0 and L.qb < HAL.txwin and #L.q < TP.MAX_UNACKED do
      -- @fast (bundles: several whole messages waiting and a host that reads M frames, one
      -- frame for them; the NodeMCU agent does not offer bundles)
      if not L.ce and L.mb and L.ot > L.oh and A.K.part("bundle").cut() then
      else
      -- @end fast
        if not L.ce then
          local h = L.oh
          L.ce, L.ci = out[h], 1
          out[h] = nil
          if h == L.ot then L.oh, L.ot = 1, 0 else L.oh = h + 1 end
          L.ob = L.ob - #L.ce
          -- @unsplit (escaped whole: fewer calls per byte, the CPU's work at 921,600 baud)
          L.ce, L.cx = esc(L.ce), true
          -- @end unsplit
        end
        local m = L.ce
        local room, n = L.size - 22, #m -- "~" type seq(4) "." ack(4) " " body " " crc(8) "\n"
        -- @unsplit (short: "~" type seq(2) ack(2) body crc(6) "\n")
        if L.sh then room = L.size - 13 end
        -- @end unsplit
        local e = L.ci == 1 and n <= room + 1 and (L.cx and m or esc(m))
        if e and #e <= room + 1 then
          push(ssub(e, 1, 1), ssub(e, 2))
        else
          while L.ce do
            local i = L.ci
            local j, p = i + room - 1, nil
            -- @unsplit (escaped already: a piece never splits an escape)
            if L.cx then
              if j >= n then j = n elseif sbyte(m, j) == 16 then j = j - 1 end
              push(j == n and "$" or "&", ssub(m, i, j), j < n and j + 1)
            else
            -- @end unsplit
              -- the piece ends a byte sooner for each byte to escape in it (two on the line),
              -- so it takes at most room bytes escaped
              p = sfind(m, "[\n\16]", i)
              while p and p <= j do
                j = j - 1
                p = sfind(m, "[\n\16]", p + 1)
              end
              if j > n then j = n end
              push(j == n and "$" or "&", esc(ssub(m, i, j)), j < n and j + 1)
            -- @unsplit
            end
            -- @end unsplit
          end
        end
        -- (push cleared L.ce with the message's last frame; L.cx stays: set again with the next
        -- message, and NodeMCU never makes the key)
      -- @fast
      end
      -- @end fast
    end
  end
  local function flush()
    -- @fast (while a bundle's calls run with bundles on, the replies wait for the last: tether_bundle)
    if L.hold then return end
    -- @end fast
    local ok = pcall(cut)
    if not ok then ST.ferr = (ST.ferr or 0) + 1 end -- agent.stats ferr; the next flush goes on
    local d = A.ondrain -- the family's flow control: the backlog went down (bytes still waiting)
    if d then d(L.ob) end
  end

  -- a message (type char .. body) for the host; the backlog is bounded (without a session: txwin,
  -- in one: HAL.obmax or 4 * txwin). Replies (R, X) always go in: a call is never left without its
  -- answer. Anything else over the limit is refused: counted (agent.stats lost) and false is
  -- returned, so the family part tells the host its own way (NodeMCU closes the socket and reports
  -- it); true when the message was queued.
  local function send(m, force)
    if not force and L.ob > 0 and L.ob + #m > (L.nonce == 0 and HAL.txwin or (HAL.obmax or 4 * HAL.txwin)) then
      local t = ssub(m, 1, 1)
      if t ~= "R" and t ~= "X" then
        ST.lost = ST.lost + 1
        return false
      end
    end
    -- the slot first, then the count: a heap that runs out as the queue grows leaves no hole
    -- in it (a hole would stop every later message)
    local i = L.ot + 1
    L.out[i] = m
    L.ot = i
    L.ob = L.ob + #m
    -- @fast (a bundle's replies wait for its last call: no flush call per reply)
    if L.hold then return true end
    -- @end fast
    flush()
    return true
  end
  A.send = send

  -- send frame i of the retransmit queue again (selective repeat, section 5)
  local function retx(i)
    ST.retx = ST.retx + 1
    local sq = umod(L.tx - #L.q + i - 1, MOD)
    local s, t = L.q[i], L.tk
    -- @unsplit (the tick at which it is on the line, where the family's UART queues: HAL.txq)
    if HAL.txq then t = t + HAL.txq(#s) end
    -- @end unsplit
    L.rc = L.rc + 1
    L.rq[sq], L.rq[sq + MOD], L.rq[sq + MOD + MOD] = t, L.tx, L.rc
    HAL.write(s, true)
  end

  -- an acknowledgement, and the host's list of missing frames (a string of " seq" items); top:
  -- 1 + the frame of ours the host received last, 0 when it did not say (section 5; an older host
  -- sent 1 + the highest it holds, which the same test reads safely)
  local function onack(a, miss, top)
    local q, rq = L.q, L.rq
    local n = #q
    local d -- frames it acknowledges
    -- the number of that frame's repair, if it was repaired: read before the ack forgets it
    local lr = miss and top > 0 and rq[top - 1 + MOD + MOD]
    -- @fast (umod written out: every frame)
    d = (a - L.tx + n) % MOD
    if d < 0 then d = d + MOD end
    -- @end fast
    d = d or umod(a - L.tx + n, MOD)
    if d > 0 and d <= n then
      -- shift the queue down in place (no new table per acknowledgement)
      local qb = L.qb
      for i = 1, d do qb = qb - #q[i] end
      for i = 1, n do q[i] = q[i + d] end
      L.qb, L.t, L.m = qb, 0, 1
      -- the acknowledged frames' repairs are forgotten; the others' are kept: a list the host
      -- wrote before their repairs reached it comes after its ack moved (the lists go behind its
      -- own frames), and repeating them then went twice
      if next(rq) then
        for i = L.tx - n, L.tx - n + d - 1 do
          local sq = umod(i, MOD)
          rq[sq], rq[sq + MOD], rq[sq + MOD + MOD] = nil, nil, nil
        end
      end
      n = n - d
    end
    if miss and n > 0 then
      -- a listed frame never repeated is lost for sure (the line keeps order); so is a repair when
      -- the frame the host received last went on the line after it: a later repair (lr), or a new
      -- frame first sent after it (top); else a repair is repeated once REPAIR_TICKS ticks passed
      -- (it may still be on its way)
      local k = 0
      for sq in string.gmatch(miss, "%d+") do
        k = k + 1
        if k > TP.MAX_MISS then break end
        sq = tonumber(sq)
        local i = umod(sq - L.tx + n, MOD) + 1
        local last = rq[sq]
        -- not the line time of the whole queue too: most of the queue left before the repair, and
        -- a lost repair then held the window ~0.5 s
        if i <= n and (last == nil or L.tk - last >= TP.REPAIR_TICKS or (lr and rq[sq + MOD + MOD] < lr)
            or (top > 0 and not lr and umod(top - 1 - rq[sq + MOD], MOD) < 2048)) then retx(i) end
      end
    end
    -- room for what waits
    -- @fast (with nothing waiting the backlog did not change: no flush, no ondrain either)
    if L.ce or L.out[L.oh] then
    -- @end fast
      flush()
    -- @fast
    end
    -- @end fast
  end

  function A.tick()
    L.tk = L.tk + 1
    A.K.owe() -- error replies the heap had no room for: now, if there is
    if L.q[1] == nil then
      -- a message a flush could not cut (the heap ran out in it) goes out now, even when
      -- nothing else comes to flush it
      if L.ce or L.out[L.oh] then flush() end
      return
    end
    local t, b = L.t + 1, HAL.baud
    L.t = t
    -- timeout: t >= m * (RTO_TICKS + line time of the unacked bytes), line time = bytes * 200 / baud ticks
    if t >= TP.RTO_MAX or t * b >= L.m * (TP.RTO_TICKS * b + L.qb * 200) then
      retx(1)
      L.t = 0
      if L.m < 2 then L.m = L.m + L.m end -- noise, not congestion: back off little
    end
  end

  -- ---------------------------------------------------------------- values (section 7)
  local function encstr(v)
    if #v <= TP.COMPACT_MAX and sfind(v, TP.SAFE) then return "'" .. v end
    return "b" .. #v .. ":" .. v
  end
  local K -- the core's shared state for the @lazy parts (below)
  -- a @lazy block's table: made at load (one-file agents) or HAL.part(name) (loaded on first use)
  local function part(nm) return K[nm] or HAL.part(nm) end
  -- the values p[from..to] encoded: strings and integers here (most events: a "receive"
  -- forwards without loading anything), anything else with tether_enc
  local function encvals(p, from, to)
    local out = {}
    for i = from, to do
      local v = p[i]
      local tv = type(v)
      if tv == "string" then v = encstr(v)
      -- @fast (Lua 5.3: an integer as tether_enc writes it, without loading it)
      elseif tv == "number" and math and math.type and math.type(v) == "integer" then v = v .. "" -- as tostring writes it
      -- @end fast
      elseif tv == "number" and v % 1 == 0 and v >= -2147483647 and v <= 2147483647 and not (math and math.type) then
        v = string.format("%d", v)
      else return part("enc").encvals(p, from, to) end
      out[i - from + 1] = v
    end
    if to == from then return out[1] end -- one value (most replies): no concatenation
    return tconcat(out, " ")
  end

  -- ---------------------------------------------------------------- calls (section 8)
  local function xerr(id, code, msg)
    send("X" .. id .. " '" .. code .. " " .. encstr(msg))
  end
  K = { TP = TP, HAL = HAL, L = L, ST = ST, send = send, xerr = xerr, encvals = encvals, encstr = encstr, part = part }
  -- @fast (what the bundle part uses to send: bundles are sent only by agents that offer them)
  K.esc, K.push, K.flush = esc, push, flush
  -- @end fast
  A.K = K
  -- a call's error reply: an error raised as { code, message } keeps its code, anything else gets code
  -- pre: the call failed before its function started (loading or decoding it). Then Lua's own
  -- "not enough memory" (lstate.h MEMERRMSG) gets E_MEM, as nothing ran (section 8), and on a
  -- build that loads parts from flash what was loaded for the call goes first: the reply needs
  -- the room
  function K.fail(id, e, code, pre)
    if pre then
      if HAL.spent then HAL.spent() end
      if HAL.called then HAL.called() end
      if e == "not enough memory" then code = TP.E_MEM end
    end
    if type(e) == "table" and type(e[1]) == "string" then return xerr(id, e[1], tostring(e[2])) end
    xerr(id, code, tostring(e))
  end

  -- run a decoded call and send its reply. Resident, so the calls part (tether_call.lua on NodeMCU)
  -- is not on the stack while the function runs: a part HAL.spent forgot is garbage by then
  function K.run(id, f, args)
    ST.calls = ST.calls + 1
    local r = pack(pcall(f, unpack(args, 1, args.n)))
    args, f = nil, nil -- the arguments (a payload) are not kept while the reply goes out (the peak)
    -- a reply with a table (hello, agent.stats) loads tether_enc.lua: on a build that loads the
    -- calls part from flash it goes first, so the two are not in the heap together
    if HAL.spent then
      for k = 2, r.n do
        if type(r[k]) == "table" then
          HAL.spent()
          break
        end
      end
    end
    -- NodeMCU: the function's group (and what it loaded) goes before the reply is encoded, so
    -- hello's tether_core + tether_sys and tether_enc are never in the heap together
    if HAL.called then HAL.called() end
    if not r[1] then return K.fail(id, r[2], TP.E_ERR) end
    local ok, body = pcall(encvals, r, 2, r.n)
    if not ok then return K.fail(id, body, TP.E_ERR) end
    send("R" .. id .. (body ~= "" and (" " .. body) or ""))
  end

  -- K.owe(id, code): a call that cannot be answered now (no room even for its error reply) is
  -- owed: its id and code go into a free slot of L.ow (ids 1..4, codes 5..8: slots made at
  -- start, so storing allocates nothing; false when free). With all four taken it is lost to the
  -- host's timeout (agent.stats lost). K.owe(): the owed error replies are sent (A.tick) and
  -- forgotten, those there is still no room for stay. K.owe(id, code, true) sends that error
  -- reply now and raises when there is no room: call it under pcall (the text is put together
  -- inside). (One function: a 17th key would double K's hash part)
  function K.owe(id, code, now)
    if now then return xerr(id, code, code == TP.E_BIG and "message over " .. HAL.maxmsg .. " bytes" or "not enough memory") end
    local o = L.ow
    for i = 1, 4 do
      if id then
        if not o[i] then
          o[i], o[i + 4] = id, code
          return
        end
      elseif o[i] and pcall(K.owe, o[i], o[i + 4], true) then
        o[i] = false
      end
    end
    if id then ST.lost = ST.lost + 1 end
  end

  -- a whole message from the host (only calls travel this way), in K.m: the calls part takes it
  -- from there, so no frame keeps the payload once it is decoded. (message is local to this
  -- block: one local of this function, msg, stays, within Lua 5.1's 50 on NodeMCU)
  local msg
  do
  -- call id, whose message is K.m, pre .. K.m, or the pieces in table K.m joined: the message
  -- goes back into K.m, where the calls part decodes fname's values from index p + 1 on
  local function message(id, pre)
    local m = K.m
    K.m = nil
    if type(m) == "table" then m = tconcat(m) elseif pre then m = pre .. m end
    local fname, p = smatch(m, "^C%d+ ([^ ]+)()")
    if not fname then
      ST.bad = ST.bad + 1
      return
    end
    K.m, m = m, nil
    -- resident (tether_calls) or loaded on first use; a part that cannot be loaded (a file
    -- missing on the module) is the call's error reply: the call still settles
    local ok, C = true, K.calls
    if not C then ok, C = pcall(HAL.part, "call") end
    if not ok then return K.fail(id, C, TP.E_ERR, true) end
    local f, args = C.call(id, fname, p + 1)
    C = nil -- the calls part is not on the stack while the function runs (see K.run)
    if f then return K.run(id, f, args) end
    if HAL.called then HAL.called() end
  end
  -- every call from the host goes through here once it counts as received (L.rx), and is then
  -- answered whatever happens: a call whose handling raised before it was answered (the heap ran
  -- out part way: an allocation anywhere can fail) gets E_MEM while its function had not started
  -- (K.run counts the starts in ST.calls), ERR once it had (it may have had its effect); with no
  -- room even for that, the error is owed (K.owe). A second answer for a call that had one is
  -- ignored by the host.
  function msg(id, m, pre)
    if not (id and #id < 6) then
      ST.bad = ST.bad + 1
      return
    end
    local n = ST.calls
    K.m, m = m, nil -- (message takes it from there: no frame keeps the pieces while the call runs)
    local ok, e = pcall(message, id, pre)
    K.m = nil
    if ok then return end
    m = ST.calls == n -- it did not run
    if not pcall(K.fail, id, e, TP.E_ERR, m) then K.owe(id, m and TP.E_MEM or TP.E_ERR) end
  end
  end

  -- a sequenced frame: one ahead of a gap is kept (at most a window of bytes), a copy of one
  -- already handed on is dropped, the expected one is handed on (fragments reassembled up to
  -- maxmsg) and so are the kept ones that follow it (A.drain)
  local function deliver(t, seq, body)
    local d
    -- @fast (umod written out: every frame)
    d = (seq - L.rx) % MOD
    if d < 0 then d = d + MOD end
    -- @end fast
    d = d or umod(seq - L.rx, MOD)
    if d ~= 0 then
      if d + d < MOD then return part("gap").ahead(t, seq, body) end -- kept (tether_gap)
      ST.dup = ST.dup + 1
      return
    end
    -- what can run out of memory comes before the frame counts as received (L.rx): a frame the
    -- heap had no room for is not acknowledged, and the host sends it again. After that, the
    -- call it completes is answered whatever happens (msg)
    local P, id, B = L.parts, nil, nil
    if t == "&" or t == "$" then
      P = P or { n = 0, big = false }
      -- the call id is at the head of the first piece
      if t == "$" then id = smatch(P.big or P[1] or body, "^C(%d+) ") end
      if P.big then -- dropped (A.log): counted only
      elseif P.n + #body > HAL.maxmsg then -- keep only the head (for the call id) and the count
        P.big = P[1] or body
        for i = #P, 1, -1 do P[i] = nil end
      else
        P[#P + 1] = body
      end
      P.n = P.n + #body
    elseif t == "C" then
      id = smatch(body, "^(%d+) ")
    elseif t == "M" then -- its messages, split before the frame counts as received
      B = part("bundle").split(body)
    end
    local k = L.ah[seq] -- a kept copy of this frame is no longer needed
    if k then
      L.ah[seq] = nil
      L.ahb = L.ahb - #k[2]
    end
    L.rx = (L.rx + 1) % MOD
    L.ackdue = true
    if t == "&" then
      L.parts = P
      return
    end
    if L.parts and t ~= "$" then ST.bad = ST.bad + 1 end -- a message cut short by another
    L.parts = false
    if t == "M" then return part("bundle").take(B) end
    if t ~= "$" then return msg(id, body, t) end
    if not P.big then return msg(id, P) end
    -- over maxmsg, or its pieces were dropped for room (A.log): answered TOOBIG or NOMEM
    local c = P.n > HAL.maxmsg and TP.E_BIG or TP.E_MEM
    if c == TP.E_BIG then ST.bad = ST.bad + 1 end
    -- at once when there is room; owed (a slot, sent at a later tick) when there is not
    if id and not pcall(K.owe, id, c, true) then K.owe(id, c) end
  end

  local function blocked() return L.ce ~= nil or L.out[L.oh] ~= nil or L.qb >= HAL.txwin end

  -- session ownership (docs/protocol.md section 3): every object the agent made for a host
  -- belongs to the session that made it; a new session and agent.release_all free them all
  local function sweep()
    local ok, n = pcall(HAL.sweep)
    return ok and tonumber(n) or 0
  end

  K.sweep = sweep

  local function clamp(size)
    size = tonumber(size) or TP.BASE_FRAME
    if size < TP.MIN_FRAME then return TP.MIN_FRAME end
    if size > HAL.outmax then return HAL.outmax end
    return size
  end

  -- one line (without its \n)
  local function line(l)
    if sbyte(l, -1) == 13 then l = ssub(l, 1, -2) end
    if sbyte(l, 1) ~= 126 then return end -- not a frame: boot banner, echo, noise
    local n = #l
    local s, t, seq, ack, rest
    -- @unsplit (a short head, section 1: a lower-case type, seq and ack in two base-64 digits each,
    -- then the body, escaped as in the long form, and the CRC in six digits)
    t = n >= 12 and sfind("crxeplmft", ssub(l, 2, 2), 1, true)
    if not t and n == 13 and sbyte(l, 2) == 97 then -- ~a: a short acknowledgement (section 4)
      s = ssub(l, 1, 7)
      if not sfind(l, "^~a[0-o][0-o][0-o][0-o][0-o]") or crchex(s, true) ~= ssub(l, 8) then
        ST.bad = ST.bad + 1
        return
      end
      if L.nonce ~= 0 then -- it stands for an A with the session's nonce
        local a, b, c, d, e = sbyte(l, 3, 7)
        L.size = clamp(((c - 48) * 64 + d - 48) * 64 + e - 48)
        onack((a - 48) * 64 + b - 48)
      end
      return
    end
    if t then
      t, s = ssub("CRXEPLM&$", t, t), ssub(l, 1, -7)
      if not sfind(l, "^~.[0-o][0-o][0-o][0-o]") or crchex(s, true) ~= ssub(l, -6) or sfind(s, "\16[^JP]") or sbyte(s, -1) == 16 then
        ST.bad = ST.bad + 1
        if sfind(l, "^~[cfmt][0-o][0-o]") then L.bl = true end -- as a long head's below
        return
      end
      local a, b, c, d = sbyte(l, 3, 6)
      seq, ack, rest = (a - 48) * 64 + b - 48, (c - 48) * 64 + d - 48, ssub(s, 7)
      if sfind(rest, "\16", 1, true) then rest = string.gsub(rest, "\16(.)", UNESC) end
    else
    -- @end unsplit
      s = ssub(l, 1, -10)
      -- @fast (most lines have no escape: a good one is then taken as it is, not copied by gsub)
      if n >= 11 and not sfind(s, "\16", 1, true) and sbyte(l, -9) == 32 and crchex(s) == ssub(l, -8) then
        s = ssub(s, 2)
      else
      -- @end fast
        if n < 11 or sbyte(l, -9) ~= 32 or crchex(s) ~= ssub(l, -8) or sfind(s, "\16[^JP]") or sbyte(s, -1) == 16 then
          ST.bad = ST.bad + 1
          -- only a line that starts like a host's sequenced frame was probably one (section 5): a
          -- stray "~" line (noise) named the frame after the highest kept, a repeat the host did
          -- not need
          if sfind(l, "^~[C&$]%d") then L.bl = true end
          return
        end
        s = string.gsub(ssub(s, 2), "\16(.)", UNESC)
      -- @fast
      end
      -- @end fast
      t, seq, ack, rest = smatch(s, "^([CRXEPLM&$])(%d%d?%d?%d?)%.(%d%d?%d?%d?)(.*)$")
      if t then
        seq, ack = tonumber(seq), tonumber(ack)
        if seq >= MOD or ack >= MOD or (rest ~= "" and sbyte(rest, 1) ~= 32) then
          ST.bad = ST.bad + 1
          return
        end
        rest = ssub(rest, 2)
      end
    -- @unsplit
    end
    -- @end unsplit
    if t then
      if L.nonce == 0 then return sendA() end
      L.ackdue = true
      onack(ack)
      local P = L.pend
      if P[1] or blocked() then -- keep it (one window at most) until the queue has room
        if L.pb + n <= HAL.window then
          P[#P + 1] = { t, seq, rest, n }
          L.pb = L.pb + n
        end
        return
      end
      l, s = nil, nil -- the line and its unescaped copy are not kept while a call runs (the peak)
      deliver(t, seq, rest)
      -- @fast (A.drain checks too: not called for nothing)
      if next(L.ah) then
      -- @end fast
        A.drain()
      -- @fast
      end
      -- @end fast
      return
    end
    t = ssub(s, 1, 1)
    if t == "A" then
      local a, _, size, nonce, top, miss = smatch(s, "^A(%d+) (%d+) (%d+) (%d+) (%d+)([%d ]*)$")
      a = tonumber(a)
      if not a or a >= MOD then
        ST.bad = ST.bad + 1
      elseif tonumber(nonce) == L.nonce and L.nonce ~= 0 then
        L.size = clamp(size)
        onack(a, miss, tonumber(top))
      end
    elseif t == "S" then -- resident: without a session no error could reach the host
      local nonce, size = smatch(s, "^S(%d+) (%d+)$")
      nonce = tonumber(nonce)
      if not nonce or nonce < 1 or nonce > 2147483646 then
        ST.bad = ST.bad + 1
        return
      end
      if nonce ~= L.nonce then -- a new session: reset the link, keep the backlog only from before the first one
        if L.nonce ~= 0 then
          L.freed = sweep() -- what the previous session left (a crashed or vanished host)
          L.out, L.oh, L.ot, L.ob = {}, 1, 0, 0
        end
        -- (one field a statement: a multiple assignment takes a register for each value, and
        -- this function's frame is on the Lua stack under every call the host makes)
        L.nonce = nonce
        L.tx = 0
        L.rx = 0
        L.q = {}
        L.qb = 0
        L.pend = {}
        L.pb = 0
        L.parts = false
        L.ow = { false, false, false, false, false, false, false, false }
        L.ah = {}
        L.ahb = 0
        L.rq = {}
        L.ce = nil
        -- @fast (no bundles, no held window until this session's hello says the host takes them;
        -- the NodeMCU agent sets neither)
        L.mb, L.hw, L.sh, L.sa = nil, nil, nil, nil
        -- @end fast
      end
      L.size = clamp(size)
      sendA(nil, 0, true) -- long: a host that repeats S has no session open to read a short one
      flush()
    elseif t == "Y" then -- answered after the batch (A.feed), with the holes
      local probe = smatch(s, "^Y(%d%d?%d?%d?)$")
      if probe then L.yp = probe else ST.bad = ST.bad + 1 end
    elseif t ~= "B" then
      ST.bad = ST.bad + 1
    end
  end

  -- bytes from the UART: call with every chunk read
  function A.feed(chunk)
    local s, pos, max = L.buf .. chunk, 1, HAL.maxframe
    L.buf = ""
    while true do
      local nl = sfind(s, "\n", pos, true)
      if not nl then break end
      if L.skip then
        L.skip = false
      elseif nl - pos >= max then
        ST.bad = ST.bad + 1
      else
        local ok, e = pcall(line, ssub(s, pos, nl - 1))
        if not ok then pcall(A.log, 1, e) end
      end
      pos = nl + 1
    end
    if not L.skip then
      if #s - pos + 1 >= max then -- an overlong line: discard it up to its \n
        L.skip = true
        ST.bad = ST.bad + 1
      else
        -- @fast (no string.sub for nothing)
        if pos > #s then L.buf = "" else
        -- @end fast
          L.buf = ssub(s, pos)
        -- @fast
        end
        -- @end fast
      end
    end
    local P = L.pend
    while P[1] and not blocked() do
      local p = table.remove(P, 1)
      L.pb = L.pb - p[4]
      local ok, e = pcall(deliver, p[1], p[2], p[3])
      if not ok then pcall(A.log, 1, e) end
    end
    -- a Y's answer lists the holes (the same list again too): the host repeats at once what it
    -- sent before the Y and is still listed. With lines kept unread (the queue is full) it does
    -- not echo the token: the host would take those frames for lost
    local y = L.yp
    L.yp = nil
    local miss
    -- @fast (A.holes finds none without a gap, a bad line or a kept frame: not called then)
    if L.gap or L.bl or next(L.ah) then
    -- @end fast
      miss = A.holes(y)
    -- @fast
    end
    -- @end fast
    if miss or y or L.ackdue then sendA(miss, not P[1] and y or nil) end
  end

  -- hand on the kept frames that now follow in order (tether_gap, only when frames are kept)
  K.deliver, K.blocked, K.message = deliver, blocked, msg
  function A.drain()
    if next(L.ah) then part("gap").drain() end
  end

  -- after a gap or a corrupt line: the " seq" list of missing frames below the highest kept one,
  -- plus the one after it after a corrupt line (section 5); the same list at most once a tick
  -- (tether_gap, loaded only then)
  function A.holes(again)
    A.drain()
    local gap, bl = L.gap, L.bl
    L.gap, L.bl = false, false
    if L.nonce == 0 or not (gap or bl or next(L.ah)) then return nil end
    return part("gap").holes(bl, again)
  end

  -- ---------------------------------------------------------------- for the family parts
  function A.reg(name, fn)
    A.fns[name] = fn
    A.caps[#A.caps + 1] = name
    -- @fast (and by its capability number, the name a host calls it by: one lookup, not capname's)
    A.fns[tostring(#A.caps)] = fn
    -- @end fast
  end

  function A.newHandle(obj)
    local id = A.nexth
    A.nexth = id + 1
    if obj ~= nil then A.bind(id, obj) end
    return id
  end

  function A.bind(id, obj)
    A.handles[id] = obj
    A.hid[obj] = id
  end

  function A.release(id)
    local o = A.handles[id]
    if o ~= nil then A.hid[o] = nil end
    A.handles[id] = nil
    A.dead[id] = true
  end

  -- an event for handle h; returns false when the backlog refused it (see send)
  function A.event(h, ...)
    local ev, d = ...
    -- the common event, a name and one long string ("receive", data): one concatenation, so the
    -- bytes are copied once (encvals would make the token, then the body, then the message)
    if select("#", ...) == 2 and type(ev) == "string" and type(d) == "string" and #d > TP.COMPACT_MAX then
      return send("E" .. h .. " " .. encstr(ev) .. " b" .. #d .. ":" .. d)
    end
    local p = pack(...)
    local body = encvals(p, 1, p.n)
    return send("E" .. h .. (body ~= "" and (" " .. body) or ""))
  end

  -- bytes of messages waiting to be sent to the host (the family's flow control reads it)
  function A.backlog() return L.ob end

  function A.publish(topic, ...)
    local p = pack(topic, ...)
    send("P" .. encvals(p, 1, p.n))
  end

  function A.log(level, msg)
    -- the heap ran out (every error the agent catches comes here): a call being put together
    -- lets go of its pieces first, allocating nothing (they could hold the heap until no line can
    -- be read any more, its own next frame neither). The rest of its frames are counted, not
    -- kept, and the call is answered NOMEM (deliver)
    local P = L.parts
    if msg == "not enough memory" and P and not P.big then
      P.big = P[1]
      for i = #P, 1, -1 do P[i] = nil end
    end
    if type(msg) == "table" then msg = msg[2] or msg[1] end -- a { code, message } error
    send("L" .. level .. " " .. encstr(tostring(msg)))
  end

  -- run f under pcall; a failure becomes an L1 notice (an error never escapes into the firmware).
  -- Returns nothing and makes nothing: it runs outside every pcall (NodeMCU calls its net
  -- callbacks unprotected, net.c), where an allocation the heap has no room for (a table for f's
  -- results, as before) raised into the firmware: a PANIC, the module resets
  function A.guard(f, ...)
    local ok, e = pcall(f, ...)
    if not ok then pcall(A.log, 1, e) end
  end

  -- true when every frame sent was acknowledged and nothing waits
  function A.idle() return L.q[1] == nil and L.out[L.oh] == nil and L.ce == nil end

  -- the built-in calls (their code is in tether_calls): first in agent.caps
  for _, n in ipairs({ "hello", "agent.caps", "agent.stats", "agent.ping", "agent.release_all" }) do A.caps[#A.caps + 1] = n end

  -- the @lazy blocks, when this file has them (no main-chunk locals: NodeMCU's parser limit)
  for _, nm in ipairs({ "enc", "gap", "bundle" }) do
    local f = A["tether_" .. nm]
    if f then K[nm], A["tether_" .. nm] = f(A, { K = K }), nil end
  end
  if A.tether_calls then K.calls, A.tether_calls = A.tether_calls(A, { K = K }), nil end
  if A.tether_builtins then K.builtins, A.tether_builtins = A.tether_builtins(A, { K = K }), nil end

  function A.start()
    L.epoch = HAL.epoch()
    sendu("B" .. L.epoch .. " " .. TP.PROTO)
  end
end
tether_core()

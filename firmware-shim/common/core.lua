-- tether agent core: protocol v1 (docs/protocol.md), shared by every firmware family.
-- Lua 5.1 and 5.3, integer-only cores included: no //, no bit operators, no goto,
-- no math library needed. The family part fills HAL before calling A.start().
--   HAL.write(s)      write bytes to the RPC UART
--   HAL.crc16(s)      CRC-16/MODBUS of s as an integer 0..65535
--   HAL.b64e(s), HAL.b64d(s)   base64 encode / decode
--   HAL.maxframe      longest line the agent accepts (bytes incl. \n)
--   HAL.window        flow-control window (bytes)
--   HAL.maxmsg        longest logical message accepted (bytes)
--   HAL.heap()        Lua heap in KB (integer)
--   HAL.epoch()       a number new at every start
--   HAL.info(t)       add family fields to the hello table t

local HAL = {}
local A = { bad = 0, handles = {}, hid = {}, dead = {}, nexth = 1, fns = {}, caps = {} }

local sfind, ssub, sfmt, tconcat = string.find, string.sub, string.format, table.concat
local unpack = unpack or table.unpack
local math_type = math and math.type
local HUGE = math and math.huge
local outmax = TP.BASE_FRAME
local consumed = 0
local inbuf, skipping = "", false
local pieces, poisoned = nil, false

local function pack(...) return { n = select("#", ...), ... } end

local function hex4(n) return sfmt("%04X", n) end

-- write one logical frame, fragmented if needed
local function send(content)
  local room = outmax - 7
  if #content <= room then
    local s = "~" .. content
    HAL.write(s .. " " .. hex4(HAL.crc16(s)) .. "\n")
    return
  end
  local piece = room - 1
  local off = 1
  local n = #content
  while off <= n do
    local last = off + piece > n
    local s = (last and "~$" or "~&") .. ssub(content, off, off + piece - 1)
    HAL.write(s .. " " .. hex4(HAL.crc16(s)) .. "\n")
    off = off + piece
  end
end
A.send = send

-- values -> tokens
local enc
local function encnum(v)
  if math_type then
    if math_type(v) == "integer" then return tostring(v) end
  elseif v % 1 == 0 and v >= -2147483648 and v <= 2147483647 then
    return sfmt("%d", v)
  end
  if v ~= v then return "dnan" end
  if HUGE and v == HUGE then return "dinf" end
  if HUGE and v == -HUGE then return "d-inf" end
  return "d" .. sfmt("%.17g", v)
end

enc = function(v, depth, out)
  local t = type(v)
  if v == nil then out[#out + 1] = "_"
  elseif t == "boolean" then out[#out + 1] = v and "T" or "F"
  elseif t == "number" then out[#out + 1] = encnum(v)
  elseif t == "string" then
    if #v <= 64 and sfind(v, TP.SAFE) then out[#out + 1] = "'" .. v
    else out[#out + 1] = "s" .. HAL.b64e(v) end
  elseif A.hid[v] then out[#out + 1] = "h" .. A.hid[v]
  elseif t == "table" and depth < TP.MAX_DEPTH then
    out[#out + 1] = "{"
    for k, x in pairs(v) do
      enc(k, depth + 1, out)
      enc(x, depth + 1, out)
    end
    out[#out + 1] = "}"
  else out[#out + 1] = "s" .. HAL.b64e(tostring(v)) end
end

local function encvals(p, from, to)
  local out = {}
  for i = from, to do enc(p[i], 0, out) end
  return tconcat(out, " ")
end

-- tokens -> values; errors are tables {code, message}
local function dec(toks, i, depth)
  local t = toks[i]
  if t == nil then error({ TP.E_ARG, "missing value" }) end
  local c = ssub(t, 1, 1)
  if t == "_" then return nil, i + 1 end
  if t == "T" then return true, i + 1 end
  if t == "F" then return false, i + 1 end
  if c == "'" then return ssub(t, 2), i + 1 end
  if c == "s" then return HAL.b64d(ssub(t, 2)), i + 1 end
  if c == "h" then
    local id = tonumber(ssub(t, 2))
    local o = id and A.handles[id]
    if o == nil then
      error({ TP.E_HANDLE, (id and A.dead[id]) and ("handle " .. id .. " was released") or ("unknown handle " .. t) })
    end
    return o, i + 1
  end
  if c == "d" then
    local r = ssub(t, 2)
    if r == "inf" then return HUGE, i + 1 end
    if r == "-inf" then return -HUGE, i + 1 end
    if r == "nan" then return HUGE and (HUGE - HUGE), i + 1 end
    local x = tonumber(r)
    if x == nil then error({ TP.E_ARG, "bad float " .. t }) end
    return x, i + 1
  end
  if t == "{" then
    if depth >= TP.MAX_DEPTH then error({ TP.E_ARG, "table too deep" }) end
    local tb = {}
    i = i + 1
    while toks[i] ~= "}" do
      if toks[i] == nil then error({ TP.E_ARG, "unterminated table" }) end
      local k, v
      k, i = dec(toks, i, depth + 1)
      v, i = dec(toks, i, depth + 1)
      if k ~= nil then tb[k] = v end
    end
    return tb, i + 1
  end
  local n = tonumber(t)
  if n == nil or not sfind(t, "^%-?%d+$") then error({ TP.E_ARG, "bad token " .. ssub(t, 1, 16) }) end
  return n, i + 1
end

local function decvals(s)
  local toks = {}
  for tok in string.gmatch(s, "[^ ]+") do toks[#toks + 1] = tok end
  local out, n, i = {}, 0, 1
  while i <= #toks do
    n = n + 1
    out[n], i = dec(toks, i, 0)
  end
  out.n = n
  return out
end

local function reply_err(id, code, msg)
  local out = {}
  enc(code, 0, out)
  enc(msg, 0, out)
  send("X" .. id .. " " .. tconcat(out, " "))
end

-- public helpers for family code
function A.reg(name, fn)
  A.fns[name] = fn
  A.caps[#A.caps + 1] = name
end

function A.newHandle(obj)
  local id = A.nexth
  A.nexth = id + 1
  if obj ~= nil then
    A.handles[id] = obj
    A.hid[obj] = id
  end
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

function A.event(h, ...)
  local p = pack(...)
  local body = encvals(p, 1, p.n)
  send("E" .. h .. (body ~= "" and (" " .. body) or ""))
end

function A.publish(topic, ...)
  local p = pack(topic, ...)
  send("P" .. encvals(p, 1, p.n))
end

function A.log(level, msg)
  local out = {}
  enc(tostring(msg), 0, out)
  send("L" .. level .. " " .. out[1])
end

-- run f under pcall; report failures as a log frame (never let an error escape)
function A.guard(f, ...)
  local r = pack(pcall(f, ...))
  if not r[1] then pcall(A.log, 1, r[2]) end
  return unpack(r, 1, r.n)
end

local function call(id, fname, argstr)
  local f = A.fns[fname]
  if f == nil and sfind(fname, "^%d+$") then
    local nm = A.caps[tonumber(fname)]
    f = nm and A.fns[nm]
  end
  if f == nil then return reply_err(id, TP.E_NOFN, "no function " .. fname) end
  local ok, args = pcall(decvals, argstr)
  if not ok then
    if type(args) == "table" then return reply_err(id, args[1], args[2]) end
    return reply_err(id, TP.E_ARG, tostring(args))
  end
  local r = pack(pcall(f, unpack(args, 1, args.n)))
  if not r[1] then
    local e = r[2]
    if type(e) == "table" then return reply_err(id, e[1], e[2]) end
    return reply_err(id, TP.E_ERR, tostring(e))
  end
  local body = encvals(r, 2, r.n)
  send("R" .. id .. (body ~= "" and (" " .. body) or ""))
end

local function logical(content)
  local t = ssub(content, 1, 1)
  if t == "C" then
    local id, fname, rest = string.match(content, "^C(%d+) ([^ ]+) ?(.*)$")
    if id then call(id, fname, rest) else A.bad = A.bad + 1 end
  elseif t == "Y" then
    send("K" .. consumed)
  else
    A.bad = A.bad + 1
  end
end

local function line(l)
  if ssub(l, -1) == "\r" then l = ssub(l, 1, -2) end
  if ssub(l, 1, 1) ~= "~" then return end -- not a frame (echo, noise)
  local n = #l
  if n < 7 or ssub(l, -5, -5) ~= " " or sfind(l, "[^ -~]")
    or tonumber(ssub(l, -4), 16) ~= HAL.crc16(ssub(l, 1, -6)) then
    A.bad = A.bad + 1
    if pieces then poisoned = true end
    return
  end
  local content = ssub(l, 2, -6)
  local t = ssub(content, 1, 1)
  if t == "&" or t == "$" then
    pieces = pieces or {}
    pieces[#pieces + 1] = ssub(content, 2)
    A.msgsize = (A.msgsize or 0) + #content
    if A.msgsize > HAL.maxmsg then poisoned = true end
    if t == "&" then return end
    local whole = tconcat(pieces)
    local bad = poisoned
    pieces, poisoned, A.msgsize = nil, false, 0
    if bad then
      A.bad = A.bad + 1
      local id = string.match(whole, "^C(%d+) ")
      if id and #whole > HAL.maxmsg then reply_err(id, TP.E_BIG, "message over " .. HAL.maxmsg .. " bytes") end
      return
    end
    return logical(whole)
  end
  if pieces then pieces, poisoned, A.msgsize, A.bad = nil, false, 0, A.bad + 1 end
  return logical(content)
end

-- bytes from the UART; call with every chunk read
function A.feed(chunk)
  consumed = (consumed + #chunk) % TP.CREDIT_MOD
  local s = inbuf .. chunk
  local start = 1
  while true do
    local nl = sfind(s, "\n", start, true)
    if not nl then break end
    if skipping then skipping = false
    else
      local ok, e = pcall(line, ssub(s, start, nl - 1))
      if not ok then pcall(A.log, 1, e) end
    end
    start = nl + 1
  end
  inbuf = ssub(s, start)
  if #inbuf > HAL.maxframe then
    inbuf, skipping = "", true
    A.bad = A.bad + 1
  end
  send("K" .. consumed)
end

local epoch
A.reg("hello", function(proto, hostmax)
  if type(hostmax) == "number" and hostmax >= TP.BASE_FRAME then
    outmax = hostmax
    if HAL.outmax and HAL.outmax < outmax then outmax = HAL.outmax end
  end
  local t = {
    proto = TP.PROTO, agent = TP.AGENT, lua = _VERSION,
    intbits = (math_type and math.maxinteger == 2147483647 and 32) or (math_type and 64) or 32,
    maxframe = HAL.maxframe, window = HAL.window, maxmsg = HAL.maxmsg,
    heap = HAL.heap(), epoch = epoch, caps = A.caps, bad = A.bad,
  }
  HAL.info(t)
  return t
end)

A.reg("agent.ping", function(...) return epoch, ... end)

function A.start()
  epoch = HAL.epoch()
  send("B" .. epoch .. " " .. TP.PROTO)
end

-- Test driver: runs the shared agent core under a stock Lua interpreter (5.1 or 5.3).
-- usage: lua core-driver.lua protocol.lua core.lua < frames
-- Reads frames on stdin, writes the agent's frames on stdout. The HAL below is
-- pure Lua with arithmetic only (no bit library, no integer division operator),
-- so it also shows the core needs nothing but what Lua 5.1 guarantees.
local load = loadstring or load
local function readall(p) local f = assert(io.open(p, "rb")) local s = f:read("*a") f:close() return s end

local body = [==[
local function bxor(a, b)
  local r, p = 0, 1
  while a > 0 or b > 0 do
    local x, y = a % 2, b % 2
    if x ~= y then r = r + p end
    a, b, p = (a - x) / 2, (b - y) / 2, p * 2
  end
  return r
end
HAL.crc16 = function(s)
  local crc = 65535
  for i = 1, #s do
    crc = bxor(crc, s:byte(i))
    for _ = 1, 8 do
      local lsb = crc % 2
      crc = (crc - lsb) / 2
      if lsb == 1 then crc = bxor(crc, 40961) end
    end
  end
  return crc
end
local B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HAL.b64e = function(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = (n - n % 262144) / 262144
    local c2 = ((n - n % 4096) / 4096) % 64
    local c3 = ((n - n % 64) / 64) % 64
    local c4 = n % 64
    out[#out + 1] = B:sub(c1 + 1, c1 + 1) .. B:sub(c2 + 1, c2 + 1) ..
      (b and B:sub(c3 + 1, c3 + 1) or "=") .. (c and B:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end
HAL.b64d = function(s)
  local out, n, bits = {}, 0, 0
  for i = 1, #s do
    local ch = s:sub(i, i)
    if ch == "=" then break end
    local v = (B:find(ch, 1, true) or 1) - 1
    n, bits = n * 64 + v, bits + 6
    if bits >= 8 then
      bits = bits - 8
      local d = 2 ^ bits
      local byte = (n - n % d) / d
      out[#out + 1] = string.char(byte)
      n = n % d
    end
  end
  return table.concat(out)
end
HAL.write = function(s) io.write(s) end
HAL.maxframe, HAL.window, HAL.maxmsg = 255, 240, 2048
HAL.heap = function() local k = collectgarbage("count") return k - k % 1 end
HAL.epoch = function() return 777 end
HAL.info = function(t) t.family = "driver" end
A.reg("echo", function(...) return ... end)
A.reg("boom", function() error("kaboom") end)
A.start()
A.feed(io.read("*a") or "")
]==]

local chunk = readall(arg[1]) .. "\n" .. readall(arg[2]) .. "\n" .. body
local f = assert(load(chunk, "=agent"))
f()

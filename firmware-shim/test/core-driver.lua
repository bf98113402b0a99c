-- Test driver: runs the shared agent core under a stock Lua interpreter (5.1 or 5.3).
-- usage: lua core-driver.lua protocol.lua core.lua [ticks] [chunk] < input
-- Feeds stdin to the agent (all at once; or in pieces of `chunk` bytes, each a batch; or, with
-- chunk -1, as a script whose lines "%%T<n>" tick n times, "%%F" end a batch and "%%Q<n>" make
-- the agent's backlog refuse its next n messages with "not enough memory", as a heap with no room
-- for it to grow does), then calls
-- A.tick() `ticks` times (default 0) so that tests see retransmissions; the agent's bytes go
-- to stdout. Functions: echo (counts its runs), count (how many times echo ran), boom, big(n), gc. The HAL below is pure Lua with arithmetic only (no bit library, no
-- integer division operator), so it also shows the core needs nothing but what Lua 5.1 has.
local load = loadstring or load
local function readall(p) local f = assert(io.open(p, "rb")) local s = f:read("*a") f:close() return s end

local body = [==[
-- XOR of two bytes from a 16x16 nibble table built with arithmetic
local X4 = {}
for a = 0, 15 do
  for b = 0, 15 do
    local r, p, x, y = 0, 1, a, b
    while x > 0 or y > 0 do
      local u, v = x % 2, y % 2
      if u ~= v then r = r + p end
      x, y, p = (x - u) / 2, (y - v) / 2, p * 2
    end
    X4[a * 16 + b] = r
  end
end
local function xor8(a, b)
  local al, bl = a % 16, b % 16
  return X4[(a - al) / 16 * 16 + (b - bl) / 16] * 16 + X4[al * 16 + bl]
end
-- CRC-32 table in four byte planes (least significant first)
local T1, T2, T3, T4 = {}, {}, {}, {}
for i = 0, 255 do
  local c = { i, 0, 0, 0 }
  for _ = 1, 8 do
    local lsb = c[1] % 2
    for k = 1, 4 do -- shift right by one across the 4 bytes
      local hi = c[k + 1] and (c[k + 1] % 2) or 0
      c[k] = (c[k] - c[k] % 2) / 2 + hi * 128
    end
    if lsb == 1 then c = { xor8(c[1], 32), xor8(c[2], 131), xor8(c[3], 184), xor8(c[4], 237) } end
  end
  T1[i], T2[i], T3[i], T4[i] = c[1], c[2], c[3], c[4]
end
HAL.crc32 = function(s)
  local c1, c2, c3, c4 = 255, 255, 255, 255
  for i = 1, #s do
    local t = xor8(c1, s:byte(i))
    c1, c2, c3, c4 = xor8(c2, T1[t]), xor8(c3, T2[t]), xor8(c4, T3[t]), T4[t]
  end
  c1, c2, c3, c4 = 255 - c1, 255 - c2, 255 - c3, 255 - c4
  -- signed, like LuatOS/Luat crypto.crc32
  local v = ((c4 * 256 + c3) * 256 + c2) * 256 + c1
  if c4 >= 128 then v = v - 4294967296 end
  return v
end
HAL.write = function(s) io.write(s) end
HAL.maxframe, HAL.outmax, HAL.window, HAL.txwin, HAL.maxmsg, HAL.baud = 255, 1024, 240, 4096, 2048, 115200
HAL.heap = function() collectgarbage() local k = collectgarbage("count") return k - k % 1 end
HAL.epoch = function() return 777 end
HAL.info = function(t) t.family = "driver" end
local runs = 0
A.reg("echo", function(...) runs = runs + 1 return ... end)
A.reg("count", function() return runs end)
A.reg("boom", function() error("kaboom") end)
A.reg("big", function(n) return string.rep("x", n) end)
A.reg("gc", function() collectgarbage() collectgarbage() local k = collectgarbage("count") return k - k % 1 end)
A.start()
local input = io.read("*a") or ""
local chunk = tonumber(DRIVER_CHUNK) or 0
if chunk > 0 then
  for i = 1, #input, chunk do A.feed(input:sub(i, i + chunk - 1)) end
elseif chunk < 0 then
  -- script: lines "%%T<n>" call A.tick() n times, "%%F" ends a batch; other bytes are fed
  local pos, pat = 1, "%%%%([TFQ]%d*)\n"
  while true do
    local s, e, cmd = input:find(pat, pos)
    while s and s > 1 and input:sub(s - 1, s - 1) ~= "\n" do s, e, cmd = input:find(pat, s + 1) end
    A.feed(input:sub(pos, (s or #input + 1) - 1))
    if not s then break end
    if cmd:sub(1, 1) == "T" then for _ = 1, tonumber(cmd:sub(2)) or 1 do A.tick() end end
    if cmd:sub(1, 1) == "Q" then
      local n = tonumber(cmd:sub(2)) or 1
      setmetatable(A.K.L.out, { __newindex = function(t, k, v)
        if n > 0 then n = n - 1 error("not enough memory", 0) end
        rawset(t, k, v)
      end })
    end
    pos = e + 1
  end
else
  A.feed(input)
end
for _ = 1, tonumber(DRIVER_TICKS) or 0 do A.tick() end
]==]

DRIVER_TICKS, DRIVER_CHUNK = arg[3], arg[4]
local chunk = readall(arg[1]) .. "\n" .. readall(arg[2]) .. "\n" .. body
local f = assert(load(chunk, "=agent"))
f()

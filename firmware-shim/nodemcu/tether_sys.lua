-- NodeMCU agent, loaded on first use: status calls, agent.release, the remote REPL and restart.
-- A chunk called with (A, N) (agent.lua HAL.part). hello's family fields and the list of names
-- loaded on first use are in tether_info.lua (small: hello and agent.caps load only that).
local A, N = ...
local TP = N.TP
local H = {}
-- release(h): the host is done with an object: unregister its callbacks, close it
-- (errors ignored: it may be closed already) and forget the handle; the userdata's last
-- reference goes with it (its __gc unrefs the espconn). sweep does it for every object.
local kinds = N.kinds
local function drop(o, id)
  local k = kinds[id]
  if k == "tcpsocket" then
    for _, ev in ipairs({ "connection", "reconnection", "disconnection", "receive", "sent", "dns" }) do pcall(o.on, o, ev, nil) end
  elseif k == "udpsocket" then
    for _, ev in ipairs({ "receive", "sent", "dns" }) do pcall(o.on, o, ev, nil) end
  end
  pcall(o.close, o)
  N.holding[o] = nil
  kinds[id] = nil
  A.release(id)
  A.dead[id] = nil -- keep no record per released handle: the heap must not grow with every connection
end
-- every object the agent made for a host (agent.lua HAL.sweep: a new session, agent.release_all)
H.sweep = function()
  local n = 0
  for id in pairs(kinds) do
    local o = A.handles[id]
    if o ~= nil then drop(o, id) else kinds[id] = nil end
    n = n + 1
  end
  return n
end

H["agent.release"] = function(o)
  local id = A.hid[o]
  if id == nil then error({ TP.E_HANDLE, "not a handle" }) end
  drop(o, id)
end

-- print() output (agent.lua output): to the host as L3 notices; 3.x hands a pipe, 2.x a string.
-- TETHER_LOG = false drops it
H.output = function(p)
  while true do
    local s = p
    if type(p) ~= "string" then s = p:read(240) end
    if s == nil or s == "" then break end
    if N.log ~= false and string.find(s, "[^%s>]") then A.log(3, s) end
    if type(p) == "string" then break end
  end
end

-- status for `tether info` / diag
H["wifi.sta.status"] = wifi.sta.status
H["wifi.sta.getip"] = wifi.sta.getip
H["wifi.getmode"] = wifi.getmode
H["node.heap"] = node.heap
H["node.chipid"] = node.chipid
-- remote REPL and restart: refused unless the settings enable them (config.lua)
local function allowed(on, setting, what)
  if not on then error({ TP.E_ERR, what .. " is off on this module: set " .. setting .. " = true in the agent's settings (tether.lua, or as a global before dofile)" }, 0) end
end
H["node.restart"] = function()
  allowed(N.allowRestart, "TETHER_ALLOW_RESTART", "node.restart")
  tmr.create():alarm(50, tmr.ALARM_SINGLE, function() node.restart() end)
end

-- give the Lua prompt back: once the reply is acknowledged (at most ~1 s), stop the timer,
-- restore the interpreter and print()
H["agent.repl"] = function()
  allowed(N.allowRepl, "TETHER_ALLOW_REPL", "agent.repl (the remote Lua prompt)")
  local n, ticker = 0, N.ticker
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
end
return H

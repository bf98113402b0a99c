-- NodeMCU agent, loaded on first use: status calls, agent.release, the remote REPL and restart,
-- and hello's family fields (info). A chunk called with (A, N) (agent.lua HAL.group).
local A, N = ...
local TP = N.TP
local H = {}
H.info = function(t)
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


H["agent.release"] = function(o)
  local id = A.hid[o]
  if id == nil then error({ TP.E_HANDLE, "not a handle" }) end
  N.drop(o, id)
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

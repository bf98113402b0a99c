-- NodeMCU agent, loaded on first use: hello's family fields (info), the Lua heap (heap, for hello
-- and agent.stats) and the names of the functions loaded on first use (lazy, for agent.caps and
-- hello's ncaps; capname, for a call by number). A chunk called with (A, N) (agent.lua HAL.part):
-- the core takes these where HAL leaves them out (common/core.lua, HAL.part). Kept apart from tether_sys.lua so that hello, agent.caps and a call by
-- capability number load this small file and not the status/REPL calls: on an ESP8266 (44000
-- bytes free) the agent's peak is a call with its parts loaded (docs/nodemcu.md, "Heap").
local A, N = ...
local H = {}
-- the Lua heap in KB, an integer on 5.3 builds too
H.heap = function()
  local k = collectgarbage("count")
  k = k - k % 1
  return math and math.tointeger and math.tointeger(k) or k
end
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
-- the functions of the groups (tether_net/tcp/srv/udp/sys.lua), for agent.caps: each name
-- followed by one space (as core.lua's HAL.lazy); net.ping and the like only where the firmware has them
local lazy = "net.createConnection net.createServer net.createUDPSocket net.dns.getdnsserver net.dns.setdnsserver net.dns.resolve " ..
  "tcpsocket.connect tcpsocket.close tcpsocket.getpeer tcpsocket.getaddr tcpsocket.hold tcpsocket.unhold tcpsocket.ttl " ..
  "tcpsocket.on tcpsocket.send tcpsocket.dns tcpserver.listen tcpserver.close tcpserver.getaddr " ..
  "udpsocket.listen udpsocket.close udpsocket.getaddr udpsocket.ttl udpsocket.on udpsocket.send udpsocket.dns " ..
  "agent.release wifi.sta.status wifi.sta.getip wifi.getmode node.heap node.chipid node.restart agent.repl "
for _, name in ipairs({ "ifinfo", "multicastJoin", "multicastLeave", "ping" }) do
  if net[name] then lazy = lazy .. "net." .. name .. " " end
end
H.lazy = lazy
-- the name of capability number n (for a call by number): the registered
-- names first, then the list above, as tether_core.lua's capname, without loading that file
H.capname = function(n)
  local nm = A.caps[n]
  if nm then return nm end
  n = n - #A.caps
  for w in string.gmatch(lazy, "(%S+) ") do
    n = n - 1
    if n == 0 then return w end
  end
end
return H

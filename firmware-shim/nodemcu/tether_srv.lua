-- NodeMCU agent, loaded on first use: the net.tcpserver methods (handle first). A chunk called
-- with (A, N) (agent.lua HAL.part); returns name -> function.
local A, N = ...
local chk, fwd, onrecv, new = N.chk, N.fwd, N.onrecv, N.new
local H = {}
local DEFAULT_EVS = { "connection", "receive", "sent", "disconnection" }
-- listen(h, port, ip, events) where events lists what the agent registers on every accepted
-- socket before the firmware's own "connection" callback (default above)
H["tcpserver.listen"] = function(o, port, ip, evs)
  local id = chk(o, "tcpserver")
  if evs == nil then evs = DEFAULT_EVS end
  -- the accept callback outlives this file's load: it only uses the resident N functions
  local function acc(c)
    A.guard(function()
      local cid = new(c, "tcpsocket")
      for _, ev in ipairs(evs) do c:on(ev, ev == "receive" and onrecv(cid) or fwd(cid, ev)) end
      N.emit(id, "accept", c)
    end)
  end
  if port ~= nil and ip ~= nil then return o:listen(port, ip, acc) end
  if port ~= nil then return o:listen(port, acc) end
  if ip ~= nil then return o:listen(ip, acc) end
  return o:listen(acc)
end
H["tcpserver.close"] = function(o) chk(o, "tcpserver") return o:close() end
H["tcpserver.getaddr"] = function(o) chk(o, "tcpserver") return o:getaddr() end
return H

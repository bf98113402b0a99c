-- NodeMCU agent, loaded on first use: the net.tcpsocket methods (handle first). A chunk called
-- with (A, N) (agent.lua HAL.part); returns name -> function. Lua 5.1 rules as agent.lua.
local A, N = ...
local chk, fwd, onrecv = N.chk, N.fwd, N.onrecv
local H = {}
local function m(name, f)
  H["tcpsocket." .. name] = function(o, ...)
    local id = chk(o, "tcpsocket")
    if f then return f(o, id, ...) end
    return o[name](o, ...)
  end
end
for _, name in ipairs({ "connect", "close", "getpeer", "getaddr", "hold", "unhold", "ttl" }) do m(name) end
-- on(h, event, enable): the agent's forwarder ("receive" with flow control: agent.lua onrecv)
m("on", function(o, id, ev, enable)
  if enable then return o:on(ev, ev == "receive" and onrecv(id) or fwd(id, ev)) end
  return o:on(ev, nil)
end)
-- send(h, data, withcb): withcb registers the agent's "sent" forwarder as send's fn argument
m("send", function(o, id, data, withcb)
  if withcb then return o:send(data, fwd(id, "sent")) end
  return o:send(data)
end)
m("dns", function(o, id, domain, withcb)
  if withcb then return o:dns(domain, fwd(id, "dns")) end
  return o:dns(domain)
end)
return H

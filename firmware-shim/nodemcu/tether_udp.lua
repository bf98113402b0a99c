-- NodeMCU agent, loaded on first use: the net.udpsocket methods (handle first). A chunk called
-- with (A, N) (agent.lua HAL.part); returns name -> function.
local A, N = ...
local chk, fwd = N.chk, N.fwd
local H = {}
local function m(name, f)
  H["udpsocket." .. name] = function(o, ...)
    local id = chk(o, "udpsocket")
    if f then return f(o, id, ...) end
    return o[name](o, ...)
  end
end
for _, name in ipairs({ "listen", "close", "getaddr", "ttl" }) do m(name) end
m("on", function(o, id, ev, enable)
  if enable then return o:on(ev, fwd(id, ev)) end
  return o:on(ev, nil)
end)
m("send", function(o, id, port, ip, data, withcb)
  if withcb then return o:send(port, ip, data, fwd(id, "sent")) end
  return o:send(port, ip, data)
end)
m("dns", function(o, id, domain, withcb)
  if withcb then return o:dns(domain, fwd(id, "dns")) end
  return o:dns(domain)
end)
return H

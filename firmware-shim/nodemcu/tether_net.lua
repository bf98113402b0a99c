-- NodeMCU agent, loaded on first use: the net.* functions. A chunk called with (A, N)
-- (agent.lua HAL.part); returns name -> function.
local A, N = ...
local new, emit = N.new, N.emit
local H = {}
-- constructors: arguments go to the firmware unchanged (its quirks included)
H["net.createConnection"] = function(...)
  local s = net.createConnection(...)
  new(s, "tcpsocket")
  return s
end
H["net.createServer"] = function(...)
  local s = net.createServer(...)
  new(s, "tcpserver")
  return s
end
H["net.createUDPSocket"] = function(...)
  local s = net.createUDPSocket(...)
  new(s, "udpsocket")
  return s
end
H["net.ifinfo"] = net.ifinfo
H["net.multicastJoin"] = net.multicastJoin
H["net.multicastLeave"] = net.multicastLeave
H["net.dns.getdnsserver"] = net.dns.getdnsserver
H["net.dns.setdnsserver"] = net.dns.setdnsserver

-- resolve(host) -> request id; the callback (nil, ip|nil) arrives as E<id> 'dns _ <ip>
-- (before the reply when the firmware calls it synchronously: IP literals, cached names).
-- Request ids are numbers from the handle sequence with no table entry: nothing to free.
-- (The host never calls with them: not h<n> tokens.)
H["net.dns.resolve"] = function(host)
  local id = A.newHandle(nil)
  local ok, e = pcall(net.dns.resolve, host, function(...) A.guard(emit, id, "dns", ...) end)
  if not ok then error(e, 0) end
  return id
end

-- ping(host, count) -> request id; E<id> 'recv bytes ip seq rtt per reply, then
-- E<id> 'sent ip total timeouts bytes ms at the end (or 'recv 0 alone when DNS failed)
H["net.ping"] = net.ping and function(host, count)
  local id = A.newHandle(nil)
  local function recv(...) A.guard(emit, id, "recv", ...) end
  local function sent(...) A.guard(emit, id, "sent", ...) end
  local ok, e
  if count ~= nil then ok, e = pcall(net.ping, host, count, recv, sent)
  else ok, e = pcall(net.ping, host, recv, sent) end
  if not ok then error(e, 0) end
  return id
end
return H

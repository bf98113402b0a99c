/**
 * The emulated LuatOS `sys` library, written in Lua and run inside the simulated
 * module's VM. Semantics follow docs/firmware/luatos.md (sys):
 * taskInit/wait/waitUntil/publish/subscribe/timers, taskInitEx/waitMsg/sendMsg,
 * and the globals sys_pub/sys_send/sys_wait. It is our own code written from the
 * documented behaviour, on three primitives the simulator provides:
 *   __sim.timer(ms, fn) -> id, __sim.cancel(id), __sim.post(fn)
 * Differences from the firmware (sys.run returns at once; the simulator's event
 * loop drives everything) are listed in docs/fidelity.md.
 */
export const SYS_LUA = String.raw`
local sys = {}
local subs = {}        -- topic -> array of fn or coroutine
local timers = {}      -- sys timer id -> record
local nextid = 0
local queue = {}       -- pending publishes
local flushing = false
local msgq = {}        -- taskInitEx queues: name -> array of messages
local named = {}       -- name -> coroutine

local function report(err)
  log.error("sys", tostring(err))
  __sim.fatal(tostring(err))
end

local function resume(co, ...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then report(err) end
  return ok, err
end

function sys.taskInit(fn, ...)
  local co = coroutine.create(fn)
  resume(co, ...)
  return co
end

function sys.wait(ms)
  local co = coroutine.running()
  if co == nil then error("sys.wait must be called in a task", 2) end
  local id = __sim.timer(ms or 0, function() if coroutine.status(co) == "suspended" then resume(co) end end)
  local r = { coroutine.yield() }
  __sim.cancel(id)
  return table.unpack(r)
end

local function addsub(topic, f)
  local l = subs[topic]
  if not l then l = {} subs[topic] = l end
  for i = 1, #l do if l[i] == f then return end end
  l[#l + 1] = f
end

function sys.subscribe(topic, f) addsub(topic, f) end

function sys.unsubscribe(topic, f)
  local l = subs[topic]
  if not l then return end
  for i = #l, 1, -1 do if l[i] == f then table.remove(l, i) end end
end

function sys.waitUntil(topic, ms)
  local co = coroutine.running()
  if co == nil then error("sys.waitUntil must be called in a task", 2) end
  addsub(topic, co)
  local id
  if ms and ms > 0 then
    id = __sim.timer(ms, function()
      sys.unsubscribe(topic, co)
      if coroutine.status(co) == "suspended" then resume(co, false) end
    end)
  end
  local r = { coroutine.yield() }
  if id then __sim.cancel(id) end
  sys.unsubscribe(topic, co)
  return table.unpack(r)
end

local function deliver(topic, ...)
  local l = subs[topic]
  if not l then return end
  local copy = {}
  for i = 1, #l do copy[i] = l[i] end
  for i = 1, #copy do
    local f = copy[i]
    if type(f) == "function" then f(...)
    elseif coroutine.status(f) == "suspended" then
      sys.unsubscribe(topic, f)
      resume(f, true, ...)
    end
  end
end

local function flush()
  flushing = false
  while #queue > 0 do
    local m = table.remove(queue, 1)
    deliver(table.unpack(m, 1, m.n))
  end
end

function sys.publish(...)
  queue[#queue + 1] = table.pack(...)
  if not flushing then flushing = true __sim.post(flush) end
end

local function start(fn, ms, loop, ...)
  nextid = nextid + 1
  local id = nextid
  local args = table.pack(...)
  local rec = { fn = fn, ms = ms, loop = loop, args = args }
  local function fire()
    if timers[id] ~= rec then return end
    if loop then rec.h = __sim.timer(ms, fire) else timers[id] = nil end
    fn(table.unpack(args, 1, args.n))
  end
  rec.h = __sim.timer(ms, fire)
  timers[id] = rec
  return id
end

function sys.timerStart(fn, ms, ...) return start(fn, ms, false, ...) end
function sys.timerLoopStart(fn, ms, ...) return start(fn, ms, true, ...) end

function sys.timerStop(x, ...)
  if type(x) == "number" then
    local rec = timers[x]
    if rec then __sim.cancel(rec.h) timers[x] = nil end
    return
  end
  for id, rec in pairs(timers) do
    if rec.fn == x then __sim.cancel(rec.h) timers[id] = nil end
  end
end

function sys.timerStopAll(fn) sys.timerStop(fn) end

function sys.timerIsActive(x)
  if type(x) == "number" then return timers[x] ~= nil end
  for _, rec in pairs(timers) do if rec.fn == x then return true end end
  return false
end

-- task messages (the "task name" mode of socket.create)
function sys.taskInitEx(fn, name, cbFun, ...)
  msgq[name] = {}
  local co = coroutine.create(fn)
  named[name] = co
  resume(co, ...)
  return co
end

function sys.sendMsg(name, target, p1, p2, p3)
  local q = msgq[name]
  if not q then return false end
  q[#q + 1] = { target, p1, p2, p3 }
  sys.publish(name)
  return true
end

function sys.waitMsg(name, target, ms)
  local q = msgq[name]
  if not q then error("sys.waitMsg: no task named " .. tostring(name), 2) end
  local co = coroutine.running()
  local deadline = ms and ms > 0 and (__sim.now() + ms) or nil
  while true do
    for i = 1, #q do
      if target == nil or q[i][1] == target then return table.remove(q, i) end
    end
    local left = deadline and (deadline - __sim.now()) or nil
    if left and left <= 0 then return nil end
    local ok = sys.waitUntil(name, left)
    if not ok and left then
      for i = 1, #q do if target == nil or q[i][1] == target then return table.remove(q, i) end end
      return nil
    end
  end
end

function sys.cleanMsg(name) if msgq[name] then msgq[name] = {} end end

function sys.run() end

sysplus = sys
sys_pub = sys.publish
sys_send = sys.sendMsg
sys_wait = sys.waitMsg
package.loaded.sys = sys
package.loaded.sysplus = sys
_G.sys = sys
`;

/**
 * The emulated LuaTask lib of the simulated Air724UG (`sys`, `clib`'s `uart.on`, `log`,
 * `patch`'s coroutine wrapper, `utils`' io/string helpers), written in Lua 5.1 and run
 * inside the module's VM. Our own code, written from the behaviour documented in
 * docs/firmware/luat-socketcore.md (dispatch, tasks and timers):
 *
 * - `rtos.on(id, fn)`: one handler per id, a second call replaces the first.
 * - `sys.run` body: dispatch the publish queue, take one core message, MSG_TIMER goes to a
 *   task timer (resume the task) or a message timer (callback, loop timers restart), other
 *   number messages to `handlers[msg](param)`, table messages to `handlers[msg.id](msg)`.
 *   Handlers are NOT run under pcall (8910): an error kills the VM and the module reboots.
 *   Here `sys.run()` returns at once and the simulator calls `__luat_step` per message
 *   (src/sim/luat/loop.ts).
 * - `sys.wait(ms)` (min 5 ms) returns nil on timeout or the resume arguments; `waitUntil`
 *   returns `true, args...` or `false`; `waitUntilExt` returns `id, args...` or `false`.
 * - `sys.publish` queues; subscribers run before the next core message. Ids must be strings.
 * - `sys.timerStart(fn, ms, ...)` first stops an identical timer (same fn and args); returns
 *   the timer id or nil. Task timer ids are below 0x1FFFFFFF, message timer ids above.
 * - Loading `sys` opens the 60 s soft watchdog and feeds it every 20 s.
 * - `sys.init` asserts the PROJECT and VERSION globals.
 * - `uart.on(id, "receive"|"sent", fn)`: the callback gets `(id, length)`; length is nil (8910).
 * - Task errors are logged (patch.lua), the module restarts only if COROUTINE_ERROR_RESTART is set.
 * - `log.*` and `print` go to the trace port; `log.openTrace(v, uartid)` calls `rtos.set_trace`.
 *
 * Primitives from the simulator: `__sim_kick()` (run a loop iteration soon), `__fs` (flash).
 */
export const SYS_LUA = String.raw`
local function pack(...) return { n = select("#", ...), ... } end

-- ------------------------------------------------------------------ log (log.lua)
log = { LOGLEVEL_TRACE = 1, LOGLEVEL_DEBUG = 2, LOGLEVEL_INFO = 3, LOGLEVEL_WARN = 4, LOGLEVEL_ERROR = 5, LOGLEVEL_FATAL = 6, LOGLEVEL_SILENT = 7 }
local function logat(prefix)
  return function(tag, ...)
    local parts = { "[" .. prefix .. "]-[" .. tostring(tag) .. "]" }
    local a = pack(...)
    for i = 1, a.n do parts[#parts + 1] = tostring(a[i]) end
    print(table.concat(parts, " "))
  end
end
log.trace, log.debug, log.info = logat("T"), logat("D"), logat("I")
log.warn, log.error, log.fatal = logat("W"), logat("E"), logat("F")
function log.openTrace(v, uartid, baudrate)
  if uartid then
    if v then rtos.set_trace(1, uartid, baudrate) else rtos.set_trace(0, uartid) end
  else
    rtos.set_trace(v and 1 or 0)
  end
end

-- ------------------------------------------------------------------ patch.lua
local rawresume = coroutine.resume
coroutine.resume = function(co, ...)
  local r = pack(rawresume(co, ...))
  if not r[1] then
    log.error("coroutine.resume", tostring(r[2]))
    if rawget(_G, "COROUTINE_ERROR_RESTART") then rtos.restart() end
  end
  return unpack(r, 1, r.n)
end

-- ------------------------------------------------------------------ io / utils.lua (flash file system)
local File = {}
File.__index = File
function File:read(fmt)
  if self.closed then error("attempt to use a closed file", 2) end
  local d, p = self.data, self.pos
  if p > #d then return nil end
  fmt = fmt or "*l"
  if type(fmt) == "number" then
    local s = string.sub(d, p, p + fmt - 1)
    self.pos = p + #s
    return s
  end
  if fmt == "*a" or fmt == "a" then
    self.pos = #d + 1
    return string.sub(d, p)
  end
  local nl = string.find(d, "\n", p, true)
  local s = string.sub(d, p, (nl or #d + 1) - 1)
  self.pos = (nl or #d) + 1
  return s
end
function File:write(...)
  if self.closed then error("attempt to use a closed file", 2) end
  local a = pack(...)
  for i = 1, a.n do self.data = self.data .. tostring(a[i]) end
  self.dirty = true
  return self
end
function File:seek(whence, off)
  whence, off = whence or "cur", off or 0
  if whence == "set" then self.pos = off + 1 elseif whence == "end" then self.pos = #self.data + off + 1 else self.pos = self.pos + off end
  return self.pos - 1
end
function File:flush() if self.dirty then __fs.write(self.path, self.data) self.dirty = false end end
function File:close() self:flush() self.closed = true return true end
io = rawget(_G, "io") or {}
function io.open(path, mode)
  mode = mode or "r"
  local m = string.sub(mode, 1, 1)
  local d = __fs.read(path)
  if m == "r" then
    if d == nil then return nil, path .. ": No such file or directory" end
    return setmetatable({ path = path, data = d, pos = 1 }, File)
  elseif m == "w" then
    __fs.write(path, "")
    return setmetatable({ path = path, data = "", pos = 1, dirty = true }, File)
  elseif m == "a" then
    d = d or ""
    return setmetatable({ path = path, data = d, pos = #d + 1, dirty = true }, File)
  end
  return nil, "invalid mode " .. mode
end
function io.exists(path) return __fs.read(path) ~= nil end
function io.readFile(path) return __fs.read(path) end
function io.writeFile(path, s, mode)
  if mode and string.sub(mode, 1, 1) == "a" then s = (__fs.read(path) or "") .. s end
  __fs.write(path, s)
  return true
end
function io.fileSize(path) local d = __fs.read(path) return d and #d or 0 end
os.remove = function(path) return __fs.remove(path) end
-- utils.lua: gsub-based, so both return two values (string, count)
function string.toHex(s, sep)
  sep = sep or ""
  return string.gsub(s, "(.)", function(c) return string.format("%02X%s", string.byte(c), sep) end)
end
function string.fromHex(h)
  return string.gsub(h, "(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
end
function string.split(s, sep)
  local t = {}
  for piece in string.gmatch(s, "([^" .. (sep or ",") .. "]+)") do t[#t + 1] = piece end
  return t
end

-- ------------------------------------------------------------------ sys.lua
local sys = { SCRIPT_LIB_VER = "2.4.0" }
local TASK_TIMER_ID_MAX = 0x1FFFFFFF
local MSG_TIMER_ID_MAX = 0x7FFFFFFF
local taskTimerId = 0
local msgId = TASK_TIMER_ID_MAX
local timerPool, taskTimerPool, para, loop = {}, {}, {}, {}
local subscribers, messageQueue = {}, {}
local handlers = setmetatable({}, { __index = function() return function() end end })

function sys.restart(r)
  log.warn("sys.restart", tostring(r))
  rtos.restart()
end

function sys.wait(ms)
  assert(ms > 0, "The wait time cannot be negative!")
  if ms < 5 then ms = 5 end
  local co = coroutine.running()
  if co == nil then error("sys.wait must be called in a task", 2) end
  if taskTimerId >= TASK_TIMER_ID_MAX then taskTimerId = 0 end
  taskTimerId = taskTimerId + 1
  local timerid = taskTimerId
  taskTimerPool[co] = timerid
  timerPool[timerid] = co
  if 1 ~= rtos.timer_start(timerid, ms) then return end
  local message = pack(coroutine.yield())
  if message.n ~= 0 then
    rtos.timer_stop(timerid)
    taskTimerPool[co] = nil
    timerPool[timerid] = nil
    return unpack(message, 1, message.n)
  end
end

function sys.subscribe(id, callback)
  if type(id) ~= "string" or (type(callback) ~= "function" and type(callback) ~= "thread") then
    log.warn("warning: sys.subscribe invalid parameter", id, callback)
    return
  end
  if not subscribers[id] then subscribers[id] = {} end
  subscribers[id][callback] = true
end

function sys.unsubscribe(id, callback)
  if type(id) ~= "string" or (type(callback) ~= "function" and type(callback) ~= "thread") then
    log.warn("warning: sys.unsubscribe invalid parameter", id, callback)
    return
  end
  if subscribers[id] then subscribers[id][callback] = false end
end

function sys.waitUntil(id, ms)
  local co = coroutine.running()
  sys.subscribe(id, co)
  local message
  if ms then message = pack(sys.wait(ms)) else message = pack(coroutine.yield()) end
  sys.unsubscribe(id, co)
  return message[1] ~= nil, unpack(message, 2, message.n)
end

function sys.waitUntilExt(id, ms)
  local co = coroutine.running()
  sys.subscribe(id, co)
  local message
  if ms then message = pack(sys.wait(ms)) else message = pack(coroutine.yield()) end
  sys.unsubscribe(id, co)
  if message[1] ~= nil then return unpack(message, 1, message.n) end
  return false
end

function sys.taskInit(fun, ...)
  local co = coroutine.create(fun)
  coroutine.resume(co, ...)
  return co
end

function sys.init(mode, lprfnc)
  assert(PROJECT and PROJECT ~= "" and VERSION and VERSION ~= "", "Undefine PROJECT or VERSION")
  uart.setup(uart.ATC, 0, 0, uart.PAR_NONE, uart.STOP_1)
  log.info("poweron reason:", rtos.poweron_reason(), PROJECT, VERSION, sys.SCRIPT_LIB_VER, rtos.get_version())
end

local function same(a, b)
  local na, nb = a and a.n or 0, b and b.n or 0
  if na ~= nb then return false end
  for i = 1, na do if a[i] ~= b[i] then return false end end
  return true
end

function sys.timerStop(val, ...)
  if type(val) == "number" then
    timerPool[val], para[val], loop[val] = nil, nil, nil
    rtos.timer_stop(val)
    return
  end
  local args = pack(...)
  for k, v in pairs(timerPool) do
    if v == val and same(args, para[k]) then
      rtos.timer_stop(k)
      timerPool[k], para[k], loop[k] = nil, nil, nil
      break
    end
  end
end

function sys.timerStopAll(fnc)
  for k, v in pairs(timerPool) do
    if v == fnc then
      rtos.timer_stop(k)
      timerPool[k], para[k], loop[k] = nil, nil, nil
    end
  end
end

function sys.timerStart(fnc, ms, ...)
  assert(fnc ~= nil, "sys.timerStart(first param) is nil !")
  assert(ms > 0, "sys.timerStart(Second parameter) is <= zero !")
  if ms < 5 then ms = 5 end
  sys.timerStop(fnc, ...)
  while true do
    if msgId >= MSG_TIMER_ID_MAX then msgId = TASK_TIMER_ID_MAX end
    msgId = msgId + 1
    if timerPool[msgId] == nil then
      timerPool[msgId] = fnc
      break
    end
  end
  if rtos.timer_start(msgId, ms) ~= 1 then return end
  local args = pack(...)
  if args.n ~= 0 then para[msgId] = args end
  return msgId
end

function sys.timerLoopStart(fnc, ms, ...)
  local tid = sys.timerStart(fnc, ms, ...)
  if tid then loop[tid] = (ms < 5 and 5 or ms) end
  return tid
end

function sys.timerIsActive(val, ...)
  if type(val) == "number" then return timerPool[val] ~= nil end
  local args = pack(...)
  for k, v in pairs(timerPool) do
    if v == val and same(args, para[k]) then return true end
  end
end

function sys.publish(...)
  table.insert(messageQueue, pack(...))
  __sim_kick()
end

local function dispatch()
  while #messageQueue > 0 do
    local message = table.remove(messageQueue, 1)
    local subs = subscribers[message[1]]
    if subs then
      local list = {}
      for callback, flag in pairs(subs) do if flag then list[#list + 1] = callback end end
      for i = 1, #list do
        local callback = list[i]
        if type(callback) == "function" then
          callback(unpack(message, 2, message.n))
        elseif type(callback) == "thread" then
          coroutine.resume(callback, unpack(message, 1, message.n))
        end
      end
      for callback, flag in pairs(subs) do if not flag then subs[callback] = nil end end
    end
  end
end

rtos.on = function(id, handler) handlers[id] = handler end

-- sys.run: the simulator drives the loop (src/sim/luat/loop.ts); this returns at once
function sys.run() end

-- one iteration of the sys.run loop body for one core message (nil: dispatch only)
function __luat_step(msg, param)
  dispatch()
  if msg == nil then return end
  if msg == rtos.MSG_TIMER then
    if timerPool[param] then
      if param < TASK_TIMER_ID_MAX then
        local taskId = timerPool[param]
        timerPool[param] = nil
        if taskTimerPool[taskId] == param then
          taskTimerPool[taskId] = nil
          coroutine.resume(taskId)
        end
      else
        local cb = timerPool[param]
        if not loop[param] then timerPool[param] = nil end
        if para[param] ~= nil then
          local p = para[param]
          if not loop[param] then para[param] = nil end
          cb(unpack(p, 1, p.n))
        else
          cb()
        end
        if loop[param] then rtos.timer_start(param, loop[param]) end
      end
    end
  elseif type(msg) == "number" then
    handlers[msg](param)
  else
    handlers[msg.id](msg)
  end
  dispatch()
end

function __luat_publish(...) sys.publish(...) end

-- ------------------------------------------------------------------ clib.lua
local rxcb, txcb = {}, {}
uart.on = function(id, event, callback)
  if event == "receive" then rxcb[id] = callback
  elseif event == "sent" then txcb[id] = callback end
end
rtos.on(rtos.MSG_UART_RXDATA, function(id, length)
  if rxcb[id] then rxcb[id](id, length) end
end)
rtos.on(rtos.MSG_UART_TX_DONE, function(id)
  if txcb[id] then txcb[id](id) end
end)

if type(rtos.openSoftDog) == "function" then
  rtos.openSoftDog(60000)
  sys.timerLoopStart(rtos.eatSoftDog, 20000)
end

_G.sys = sys
package.loaded.sys = sys
package.loaded.log = log
package.loaded.clib = true
package.loaded.patch = true
package.loaded.utils = true
`;

-- tether agent for Luat (legacy openLuat LuaTask, Lua 5.1): Air724UG / Air720U / Air820U (RDA8910),
-- Air720 / Air720H (ASR1802). Drives the core's `socketcore` API. Wire naming: docs/luat.md.
-- Flash this file as main.lua with LuaTools, together with the LuaTask lib (sys, clib, log, patch,
-- utils, ril, net, misc, link, pm, ...). Or save it as tether.lua and `require "tether"` from your own
-- main.lua BEFORE anything that requires "socket" (http, mqtt, ntp, errDump, update, lbsLoc, ftp,
-- websocket); it then does not call sys.init/sys.run (your main.lua does).
-- Settings: set these globals before require() to override them.
local TETHER_UART = TETHER_UART or 1          -- RPC UART: 1..3 = UART1..UART3, uart.USB (129) = the USB AT port used as a data port
local TETHER_BAUD = TETHER_BAUD or 115200     -- baud rate of a physical UART (ignored for uart.USB)
local TETHER_QUERY_MS = TETHER_QUERY_MS or 60000 -- net.startQueryAll CSQ period (ms) so net.getRssi is fresh; 0 = leave it to the app
-- Off unless set to true: sys.restart (the host restarts the module: `tether reboot`)
local TETHER_ALLOW_RESTART = TETHER_ALLOW_RESTART == true
PROJECT = PROJECT or "tether"
VERSION = VERSION or "0.1.0"
local TETHER_MODNAME = ...

-- tether agent for NodeMCU (ESP8266, default firmware build: net node tmr uart file wifi bit;
-- no encoder, sjson or crypto needed). Lua 5.1 (the default build) and Lua 5.3 builds.
-- Put it on the module with `tether flash` (saved as tether.lua; `--init` adds an init.lua
-- that starts it at boot) and start it with dofile("tether.lua"). The agent owns UART 0
-- from then on; the host's `agent.repl` call gives the Lua prompt back.
-- Settings: set these globals before dofile() to override them.
local TETHER_BAUD = TETHER_BAUD   -- nil: keep the UART's current baud rate (115200 after boot)
local TETHER_LOG = TETHER_LOG     -- false: drop print() output instead of forwarding it as L notices
-- Bytes of messages for the host the agent keeps before it refuses TCP receive data (nil: 8192,
-- room for 1 KiB plus one TCP window after sock:hold()); a refused segment closes that socket and
-- the host's stream ends with an error (err -1), never silently short. See docs/nodemcu.md.
local TETHER_BACKLOG = TETHER_BACKLOG
-- Off unless set to true: agent.repl (hands UART 0 to the Lua prompt, where anyone on the UART
-- can run any code) and node.restart (the host resets the module). `tether flash --allow-repl`
-- starts the agent with TETHER_ALLOW_REPL = true (and so does its --init init.lua).
local TETHER_ALLOW_REPL = TETHER_ALLOW_REPL == true
local TETHER_ALLOW_RESTART = TETHER_ALLOW_RESTART == true

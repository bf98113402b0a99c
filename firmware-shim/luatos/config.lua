-- tether agent for LuatOS (Air780E / Air780EP, ESP32C3).
-- Flash this file as main.lua with Luatools, or save it as tether.lua and
-- require("tether") from your own main.lua (it then does not call sys.run()).
-- Settings: set these globals before require() to override them.
local TETHER_UART = TETHER_UART or 1        -- RPC UART: 1 = main UART, 2 = UART2, uart.VUART_0 (32) = USB virtual port
local TETHER_BAUD = TETHER_BAUD or 115200   -- baud rate of that UART
local TETHER_RXBUF = TETHER_RXBUF or (TETHER_BAUD > 230400 and 8192 or 4096) -- uart.setup RX buffer (bytes; default 4096, 8192 above 230400 baud; the EC618 driver gives at most 16384); the window is this (at most 16384) less 64
-- Off unless set to true: rtos.reboot (the host reboots the module: `tether reboot`)
local TETHER_ALLOW_RESTART = TETHER_ALLOW_RESTART == true
PROJECT = PROJECT or "tether"
VERSION = VERSION or "0.1.0"
local TETHER_MODNAME = ...

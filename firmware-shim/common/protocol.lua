-- GENERATED from src/codec/constants.ts by scripts/gen-lua.ts. Do not edit.
local TP = {
  PROTO = 1,
  AGENT = "0.1.0",
  MARK = "~",
  BASE_FRAME = 255,
  CREDIT_MOD = 16777216,
  MAX_DEPTH = 4,
  SAFE = "^[%w%._:/%-]*$",
  E_ERR = "ERR",
  E_NOFN = "NOFN",
  E_HANDLE = "BADHANDLE",
  E_ARG = "BADARG",
  E_BIG = "TOOBIG",
}

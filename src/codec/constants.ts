/**
 * Wire constants of protocol v1: the single source of truth.
 * `scripts/gen-lua.ts` writes them into `firmware-shim/common/protocol.lua`;
 * `test/gen-lua.test.ts` fails when the generated file is stale.
 * Spec: docs/protocol.md.
 */

/** Protocol version spoken by this host and generated into the agents. */
export const PROTOCOL_VERSION = 1;
/** Version of the agent files in firmware-shim/ (reported in hello as `agent`). */
export const AGENT_VERSION = '0.1.0';
/** First character of every frame. */
export const FRAME_MARK = '~';
/** Longest frame (bytes, including `\n`) that must always work (NodeMCU delivers 255 bytes per line). */
export const BASE_MAX_FRAME = 255;
/** Window (bytes) the host assumes before the handshake. */
export const BASE_WINDOW = 255;
/** Bytes of the window the host keeps free for `~Y` sync frames. */
export const WINDOW_RESERVE = 16;
/** `K` credit counts are cumulative modulo this (fits a 32-bit Lua integer and a double). */
export const CREDIT_MODULO = 16777216;
/** Longest line (bytes) the host accepts from the agent; advertised in hello. */
export const HOST_MAX_FRAME = 4096;
/** Largest table nesting accepted in values. */
export const MAX_TABLE_DEPTH = 4;

/** Frame types (docs/protocol.md section 1). */
export const FrameType = {
  Call: 'C',
  Result: 'R',
  Error: 'X',
  Event: 'E',
  Publish: 'P',
  Log: 'L',
  Boot: 'B',
  Credit: 'K',
  Sync: 'Y',
  Fragment: '&',
  LastFragment: '$',
} as const;
export type FrameTypeChar = (typeof FrameType)[keyof typeof FrameType];

/** Error codes an agent puts in `X` frames. */
export const RemoteCode = {
  Error: 'ERR',
  NoFunction: 'NOFN',
  BadHandle: 'BADHANDLE',
  BadArgument: 'BADARG',
  TooBig: 'TOOBIG',
} as const;

/** Characters allowed in the compact `'` string form. */
export const SAFE_STRING_PATTERN = /^[A-Za-z0-9._:/-]*$/;
/** The same set as a Lua pattern (used by the agents). */
export const SAFE_STRING_LUA_PATTERN = '^[%w%._:/%-]*$';

/** The values that go into the generated Lua constants table, in order. */
export const LUA_CONSTANTS: ReadonlyArray<[string, string | number]> = [
  ['PROTO', PROTOCOL_VERSION],
  ['AGENT', AGENT_VERSION],
  ['MARK', FRAME_MARK],
  ['BASE_FRAME', BASE_MAX_FRAME],
  ['CREDIT_MOD', CREDIT_MODULO],
  ['MAX_DEPTH', MAX_TABLE_DEPTH],
  ['SAFE', SAFE_STRING_LUA_PATTERN],
  ['E_ERR', RemoteCode.Error],
  ['E_NOFN', RemoteCode.NoFunction],
  ['E_HANDLE', RemoteCode.BadHandle],
  ['E_ARG', RemoteCode.BadArgument],
  ['E_BIG', RemoteCode.TooBig],
];

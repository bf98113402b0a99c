/**
 * Wire constants of protocol v2: the single source of truth.
 * `scripts/gen-lua.ts` writes the Lua ones into `firmware-shim/common/protocol.lua`;
 * `test/gen-lua.test.ts` fails when the generated file is stale.
 * Spec: docs/protocol.md (section numbers below refer to it).
 */

/** Protocol version spoken by this host and generated into the agents. */
export const PROTOCOL_VERSION = 2;
/** Version of the agent files in firmware-shim/ (reported in hello as `agent`). */
export const AGENT_VERSION = '0.2.0';
/** First character of every frame. */
export const FRAME_MARK = '~';
/** Escape byte (DLE) inside frames (section 1): 0x0A and 0x10 travel as 0x10, byte + 0x40. */
export const ESCAPE_BYTE = 0x10;
/** Longest frame (bytes, including `\n`) that must always work, and the initial frame size (section 6). */
export const BASE_MAX_FRAME = 255;
/** Smallest frame size (bytes incl. `\n`) the size adaptation goes down to (section 6). */
export const MIN_FRAME = 32;
/**
 * Frame size (bytes incl. `\n`) the host asks of the agent in `S`, before it has seen a frame of the
 * session (section 6): the first messages (hello's reply) are cut to it, and the host's first `A`
 * after a good frame gives the size the loss seen calls for. A frame keeps its size when repeated,
 * so a reply cut to 255 bytes on a line with 10⁻² errors per byte would hardly ever arrive.
 */
export const START_FRAME = 64;
/** Most sequence numbers one `A` lists as missing (section 5). */
export const MAX_MISS = 16;
/** Sequence numbers are counted modulo this (section 2). */
export const SEQ_MOD = 4096;
/** Most sequenced frames a sender may have unacknowledged (section 2). */
export const MAX_UNACKED_FRAMES = 1024;
/** Bytes of the agent's window the host keeps free for unsequenced frames (section 4). */
export const WINDOW_RESERVE = 64;
/** The agent's timer period (ms) (section 5). */
export const TICK_MS = 50;
/** The agent's base retransmission timeout (ticks) (section 5). */
export const RTO_TICKS = 4;
/**
 * Ticks after which the agent repeats a repair the host lists again, when nothing it wrote after
 * the repair has reached the host (section 5).
 */
export const REPAIR_TICKS = 2;
/** Largest agent retransmission timeout after backoff (ticks). */
export const RTO_MAX_TICKS = 40;
/** Bounds of the host's retransmission timeout (ms) (section 5). */
export const RTO_MIN_MS = 20;
export const RTO_MAX_MS = 2000;
/** The host sends `Y` after this long without hearing from the agent (ms) (section 8). */
export const KEEPALIVE_MS = 400;
/** Longest line (bytes incl. `\n`) the host accepts (section 1). */
export const HOST_MAX_FRAME = 4096;
/** Longest message (bytes) the host reassembles (section 2). */
export const HOST_MAX_MSG = 1 << 20;
/** Largest table nesting accepted in values (section 7). */
export const MAX_TABLE_DEPTH = 4;
/** Longest compact (`'`) string (section 7). */
export const COMPACT_MAX = 64;
/** Most names one `agent.caps` call returns (section 9): a page fits the ESP8266 agent's heap. */
export const CAPS_PAGE = 24;

/** Clamp ranges the host applies to hello numbers (section 9): [min, max]. */
export const HELLO_CLAMP = {
  maxframe: [255, 4096],
  outmax: [255, 4096],
  window: [96, 65536],
  maxmsg: [256, 1 << 20],
  txwin: [256, 1 << 20],
  ncaps: [0, 1024],
} as const;

/** Frame types (section 1). */
export const FrameType = {
  Start: 'S',
  Ack: 'A',
  Poll: 'Y',
  Boot: 'B',
  Call: 'C',
  Result: 'R',
  Error: 'X',
  Event: 'E',
  Publish: 'P',
  Log: 'L',
  Fragment: '&',
  LastFragment: '$',
  Bundle: 'M',
} as const;
export type FrameTypeChar = (typeof FrameType)[keyof typeof FrameType];

/**
 * The type byte of a sequenced frame with a short head (section 1, "Short heads"), by the kind
 * it stands for: the message types in lower case, `f` for a fragment (`&`), `t` for the last one
 * (`$`).
 */
export const SHORT_KINDS: Readonly<Record<string, string>> = { C: 'c', R: 'r', X: 'x', E: 'e', P: 'p', L: 'l', M: 'm', '&': 'f', $: 't' };

/** Message types that travel in sequenced frames (section 2). */
export const MESSAGE_TYPES = 'CRXEPL';

/**
 * The host's features, hello's third argument: a sum of flags (section 9). `HOST_TAKES_BUNDLES`
 * (1): the host reads `M` frames (several whole messages in one frame, section 2), so the agent
 * may send them.
 */
export const HOST_TAKES_BUNDLES = 1;
/**
 * Host feature flag 2 (section 4): the host reads the `size` of the agent's `A` as its window plus
 * the bytes of host frames it keeps ahead of a gap, valid only while the acknowledgement stays
 * where that `A` put it; an agent with hello `hold` then reports them (at most `hold` bytes).
 */
export const HOST_HELD_WINDOW = 2;
/**
 * Host feature flag 4 (section 1, "Short heads"): the host reads sequenced frames with short heads
 * (13 bytes of frame overhead instead of 17-21), so an agent that offers them (hello `short`) sends
 * them from then on in the session.
 */
export const HOST_SHORT_HEADS = 4;
/**
 * Host feature flag 8 (section 4, "Short acknowledgements"): the host reads `~a` frames (an `A`
 * in 14 bytes instead of about 38), so an agent that offers them (hello `short` 2) sends its pure
 * acknowledgements without a `miss` list or a probe's token that way from then on in the session.
 */
export const HOST_SHORT_ACKS = 8;
export const HOST_FEATURES = HOST_TAKES_BUNDLES + HOST_HELD_WINDOW + HOST_SHORT_HEADS + HOST_SHORT_ACKS;

/** Error codes an agent puts in `X` messages (section 8). */
export const RemoteCode = {
  Error: 'ERR',
  NoFunction: 'NOFN',
  BadHandle: 'BADHANDLE',
  BadArgument: 'BADARG',
  TooBig: 'TOOBIG',
  /**
   * The module's Lua heap had no room to load or decode the call ("not enough memory" before its
   * function ran): the call did not run, and the host may send it again as a new call.
   */
  NoMemory: 'NOMEM',
} as const;

/** Characters allowed in the compact `'` string form. */
export const SAFE_STRING_PATTERN = /^[A-Za-z0-9._:/-]*$/;
/** The same set as a Lua pattern (used by the agents). */
export const SAFE_STRING_LUA_PATTERN = '^[%w%._:/%-]*$';

/** The values that go into the generated Lua constants table, in order. */
export const LUA_CONSTANTS: ReadonlyArray<[string, string | number]> = [
  ['PROTO', PROTOCOL_VERSION],
  ['AGENT', AGENT_VERSION],
  ['BASE_FRAME', BASE_MAX_FRAME],
  ['MIN_FRAME', MIN_FRAME],
  ['MAX_MISS', MAX_MISS],
  ['SEQ_MOD', SEQ_MOD],
  ['MAX_UNACKED', MAX_UNACKED_FRAMES],
  ['TICK_MS', TICK_MS],
  ['RTO_TICKS', RTO_TICKS],
  ['REPAIR_TICKS', REPAIR_TICKS],
  ['RTO_MAX', RTO_MAX_TICKS],
  ['MAX_DEPTH', MAX_TABLE_DEPTH],
  ['COMPACT_MAX', COMPACT_MAX],
  ['CAPS_PAGE', CAPS_PAGE],
  ['SAFE', SAFE_STRING_LUA_PATTERN],
  ['E_ERR', RemoteCode.Error],
  ['E_NOFN', RemoteCode.NoFunction],
  ['E_HANDLE', RemoteCode.BadHandle],
  ['E_ARG', RemoteCode.BadArgument],
  ['E_BIG', RemoteCode.TooBig],
  ['E_MEM', RemoteCode.NoMemory],
];

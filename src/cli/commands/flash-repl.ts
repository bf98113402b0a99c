/**
 * Upload the tether agent to a NodeMCU module through its stock Lua REPL (the
 * engine of `tether flash`). Designed against the failure modes of NodeMCU-Tool,
 * nodemcu-uploader and ESPlorer (docs/firmware/nodemcu.md, how existing uploaders drive the REPL;
 * their users' worst complaints: partial or empty files after a failed upload, stuck prompts):
 *
 * - Prompt detection by a marker the echo cannot contain (`print("@T".."S1")` prints
 *   `@TS1`, its echo does not), retried until a deadline: survives boards that reset on
 *   open, boot noise at the wrong baud, a half-typed line, a REPL in `>>` continuation.
 *   A running agent is found by a hello frame and asked to give the prompt back.
 * - Every REPL line is under 255 characters (the REPL drops its buffer at 256) and is
 *   sent only after the previous one completed (a marker it prints, never a fixed wait).
 * - The file goes as raw bytes, not as hex or base64 in REPL lines: a small loader defined
 *   for this session puts the UART in counted data mode (`uart.on("data", 255, fn, 0)`:
 *   binary-safe, no echo, app/modules/uart.c) and acknowledges every 255-byte block with
 *   one byte as soon as its callback runs; the host sends the next block only then, so at
 *   most one block waits in the 256-byte RX ring (app/driver/uart.c RX_BUFF_SIZE) while Lua
 *   writes the previous one. A watchdog on the module ends the data mode and removes the
 *   partial file when the host goes quiet for 2-4 s: the REPL never stays lost.
 * - A temporary faster baud rate for the upload (esptool's way), confirmed by a marker at
 *   the new rate, with a fallback on both ends when the module does not answer.
 * - Written to a temporary name, verified by the module's own size + Adler-32 of what it
 *   reads back from flash, only then renamed: a reset or a failure never leaves a 0-byte or
 *   partial agent under the real name.
 * - Idempotent: an identical file on the module (size + Adler-32 computed on the module)
 *   is not uploaded again.
 * - Every failure is a TetherError with the step and what the module said.
 */
import type { Transport } from '../../transport/transport.js';
import { callMessage, decodeMessage, encodeFrame, fragment, parseLine } from '../../codec/frame.js';
import { PROTOCOL_VERSION, HOST_MAX_FRAME, BASE_MAX_FRAME } from '../../codec/constants.js';
import { toText, field } from '../../codec/values.js';
import { TetherError, TimeoutError } from '../../errors.js';
import { readLazyAgentFiles } from '../../util/repo-root.js';

/** Longest REPL line sent (the firmware discards its buffer at 256 characters). */
export const MAX_REPL_LINE = 250;

/** Progress of an upload. */
export interface FlashProgress {
  phase: 'sync' | 'probe' | 'baud' | 'check' | 'upload' | 'verify' | 'rename' | 'start';
  /** File being handled. */
  file?: string;
  /** Bytes done / total in the upload and verify phases. */
  done?: number;
  total?: number;
  message?: string;
}

/** Options of {@link flashNodemcu}. */
export interface FlashOptions {
  /** Agent text to upload. @default the bundled dist/agents/nodemcu/main.lua (the caller passes it) */
  agentSource: string;
  /** File name of the agent on the module (<= 31 characters). @default "tether.lua" */
  name?: string;
  /**
   * The agent's files loaded on first use (NodeMCU: tether_*.lua, the call groups; see
   * firmware-shim/nodemcu/agent.lua `HAL.part`), uploaded next to it the same way (checked,
   * written to a temporary name, read back, renamed; minified like the agent), each under its own
   * name; a stale compiled copy (`.lc`) of an uploaded file is removed (the agent compiles them
   * again when it starts). @default the bundled ones, dist/agents/nodemcu/tether_*.lua
   */
  files?: Array<{ name: string; text: string }>;
  /** Also write an init.lua that starts the agent at boot. @default false */
  init?: boolean;
  /**
   * The host may hand the UART back to the Lua prompt: ask a running agent for it
   * (`agent.repl`, which the agent refuses unless its TETHER_ALLOW_REPL is true), and start
   * the uploaded agent (and the init.lua written) with TETHER_ALLOW_REPL = true so that the
   * next flash can do the same. Without it a running agent stops the flash with a clear error.
   * @default false
   */
  allowRepl?: boolean;
  /** Milliseconds init.lua waits before starting the agent (type `TETHER_NOSTART=true` meanwhile to stay in the REPL). @default 2000 */
  initDelayMs?: number;
  /** Start the agent after the upload and check that it answers hello. @default true */
  start?: boolean;
  /** Upload even when the module has an identical file. @default false */
  force?: boolean;
  /** Drop comment-only lines and indentation before upload (smaller file, less heap to load). @default true */
  minify?: boolean;
  /**
   * Baud rate for the upload: the module (`uart.setup`) and the port (`Transport.setBaudRate`)
   * switch to it after the prompt is found and back to {@link currentBaud} before the agent
   * starts; when the module does not answer at it within 1.5 s both fall back (the module by
   * its own 2 s timer). 0 or equal to `currentBaud`: no switch. NodeMCU's rates:
   * app/driver/uart.c (docs/firmware/nodemcu.md, uart.setup).
   * @default 0 (`tether flash` passes {@link DEFAULT_UPLOAD_BAUD} for serial ports and rfc2217://)
   */
  baudRate?: number;
  /** Baud rate the module's UART runs at now (the port's). @default 115200 */
  currentBaud?: number;
  /** Time to get a Lua prompt (ms). @default 15000 */
  syncTimeoutMs?: number;
  /** Time for one REPL line to come back with its prompt (ms). @default 5000 */
  lineTimeoutMs?: number;
  onProgress?: (p: FlashProgress) => void;
  /** Diagnostic lines (what was sent and received), for --verbose. */
  trace?: (line: string) => void;
}

/** What {@link flashNodemcu} did. */
export interface FlashResult {
  /** The agent file was written (false: an identical one was there). */
  uploaded: boolean;
  /** init.lua was written. */
  initWritten: boolean;
  /** Bytes of the agent file on the module. */
  bytes: number;
  /** The files loaded on first use (FlashOptions.files): name, bytes on the module, written (false: identical). */
  files: Array<{ name: string; bytes: number; uploaded: boolean }>;
  /** Baud rate the file(s) went over (the starting rate when no switch happened or it fell back). */
  baud: number;
  name: string;
  /** The agent was started (and answered the sync frame). */
  started: boolean;
  /** Free heap the module reported before the upload (bytes). */
  heapBefore?: number;
  /** An agent was running when the tool connected and gave the prompt back. */
  agentWasRunning: boolean;
  ms: number;
}

/** Adler-32 of `b` as its two halves (what the module's helper prints). */
export function adler(b: Uint8Array): { a: number; b: number } {
  let x = 1;
  let y = 0;
  for (const c of b) {
    x = (x + c) % 65521;
    y = (y + x) % 65521;
  }
  return { a: x, b: y };
}

/**
 * Shrink Lua source without changing its meaning: drop comment-only lines, blank lines and
 * indentation. Text with long strings/comments (`[[`, `[=`) or line continuations is only
 * trimmed at line ends.
 */
export function minifyLua(src: string): string {
  const lines = src.replace(/\r\n/g, '\n').split('\n');
  if (/\[=*\[|\\$/m.test(src)) return lines.map((l) => l.replace(/\s+$/, '')).join('\n') + '\n';
  const out: string[] = [];
  for (const raw of lines) {
    const l = raw.trim();
    if (l === '' || (l.startsWith('--') && !l.startsWith('--['))) continue;
    out.push(l);
  }
  return out.join('\n') + '\n';
}

/** The init.lua `tether flash --init` writes. */
export function initLua(name: string, delayMs: number, allowRepl = false): string {
  return [
    `-- tether: start the agent ${delayMs} ms after boot; typing TETHER_NOSTART=true at the prompt before that keeps the REPL`,
    `tmr.create():alarm(${delayMs}, tmr.ALARM_SINGLE, function() if not TETHER_NOSTART and file.open(${JSON.stringify(name)}) then file.close() ${allowRepl ? 'TETHER_ALLOW_REPL = true ' : ''}dofile(${JSON.stringify(name)}) end end)`,
    '',
  ].join('\n');
}

/** The REPL side of one session: bytes in, lines out, prompt detection. */
class Repl {
  private rx = '';
  private waiters = new Set<() => void>();
  private closedErr?: Error;
  /** A tether agent started meanwhile (its boot frame was seen). */
  agentBoot = false;

  constructor(
    private readonly t: Transport,
    private readonly trace?: (line: string) => void,
  ) {
    t.onData((chunk) => {
      const s = Buffer.from(chunk).toString('latin1');
      this.rx += s;
      if (this.rx.length > 1 << 20) this.rx = this.rx.slice(-65536);
      if (/(^|\n)~B\d+ \d+ [0-9A-F]{8}\r?\n/.test(this.rx)) this.agentBoot = true;
      this.wake();
    });
    t.onClose((e) => {
      this.closedErr = new TetherError('DISCONNECTED', `the port closed during the upload${e ? `: ${e.message}` : ''}`, { cause: e });
      this.wake();
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Everything received from `from` on. */
  since(from: number): string {
    return this.rx.slice(from);
  }

  get mark(): number {
    return this.rx.length;
  }

  async write(text: string): Promise<void> {
    if (this.closedErr) throw this.closedErr;
    this.trace?.(`> ${JSON.stringify(text)}`);
    await this.t.write(Buffer.from(text, 'latin1'));
  }

  /** Write raw bytes (a loader block); traced by size only. */
  async writeRaw(data: Buffer): Promise<void> {
    if (this.closedErr) throw this.closedErr;
    this.trace?.(`> [${data.length} raw bytes]`);
    await this.t.write(data);
  }

  /** Wait until `pred(received since from)` holds, or `ms` passed (false). */
  wait(from: number, pred: (s: string) => boolean, ms: number): Promise<boolean> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.closedErr) {
          done();
          reject(this.closedErr);
          return;
        }
        if (pred(this.since(from))) {
          done();
          resolve(true);
        }
      };
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const timer = setTimeout(() => {
        done();
        resolve(false);
      }, ms);
      this.waiters.add(check);
      check();
    });
  }

  /** Serial number of the completion marker of the next {@link exec}. */
  private seq = 0;

  /**
   * Run one line at the prompt and return what it printed (echo, marker and prompt removed).
   * A complete line gets a completion marker appended (` print("@T".."Z<k>")`: its echo cannot
   * contain `@TZ<k>`); the marker followed by the prompt ends it, without waiting for the line
   * to go quiet. A Lua error (`Lua error: ...` then the prompt) ends it too and is returned as output.
   * With `continuation` the line opens or continues a chunk: it ends at the `>> ` prompt.
   * @throws TimeoutError when neither comes back within `ms`.
   */
  async exec(line: string, ms: number, continuation = false): Promise<string> {
    const k = ++this.seq;
    const full = continuation ? line : `${line} print("@T".."Z${k}")`;
    if (full.length > MAX_REPL_LINE) throw new TetherError('INVALID_ARGUMENT', `internal: REPL line of ${full.length} characters`);
    const from = this.mark;
    await this.write(full + '\n');
    const norm = (s: string) => s.replace(/\r\n/g, '\n');
    const done = continuation
      ? (s: string) => /(^|\n)>>? $/.test(norm(s))
      : (s: string) => new RegExp(`(^|\n)@TZ${k}\n> $`).test(norm(s)) || /(^|\n)Lua error:[\s\S]*\n> $/.test(norm(s));
    const ok = await this.wait(from, done, ms);
    const got = norm(this.since(from));
    if (!ok) {
      throw new TimeoutError(`no Lua prompt within ${ms} ms after ${JSON.stringify(line.slice(0, 60))}${got ? `; the module said ${JSON.stringify(got.slice(-200))}` : '; the module said nothing'}`, { ms, line: line.slice(0, 60) });
    }
    // drop the echo (the line as typed, then a newline), the marker and what follows it
    const echo = full + '\n';
    let s = got;
    const at = s.indexOf(echo);
    if (at >= 0 && at < 4) s = s.slice(at + echo.length);
    const m = new RegExp(`(^|\n)@TZ${k}\n`).exec(s);
    if (m) s = s.slice(0, m.index + m[1].length);
    else s = s.replace(/(^|\n)>>? $/, '$1');
    this.trace?.(`< ${JSON.stringify(s)}`);
    return s.replace(/\n$/, '');
  }

  /**
   * Wait for the `n`-th byte `ch` received since `from` (the loader's per-chunk
   * acknowledgement), or for a line starting with `stop` (its abort/finish report).
   * @returns the position after that byte, or -1 when `stop` came first.
   */
  async waitByte(from: number, ch: string, n: number, stop: RegExp, ms: number): Promise<number> {
    let pos = -1;
    let stopped = false;
    const ok = await this.wait(
      from,
      (s) => {
        let c = 0;
        for (let i = 0; i < s.length; i++) {
          if (s[i] === ch && ++c === n) {
            pos = from + i + 1;
            return true;
          }
        }
        if (stop.test(s)) {
          stopped = true;
          return true;
        }
        return false;
      },
      ms,
    );
    if (stopped) return -1;
    if (!ok) throw new TimeoutError(`no acknowledgement from the module within ${ms} ms (chunk ${n})`, { ms, chunk: n });
    return pos;
  }

  /** Lines starting with a marker in some output. */
  static field(out: string, marker: string): string[] | undefined {
    for (const l of out.split('\n')) {
      if (l.startsWith(marker)) return l.slice(marker.length).trim().split(/\s+/);
    }
    return undefined;
  }
}

/**
 * Bytes that open a fresh protocol-v2 session with a running agent and make one call
 * (docs/protocol.md sections 3, 9): a newline, `S` with a new nonce, then the call as
 * sequenced frame 0. Enough to reach a running agent without a whole RpcClient, which
 * would take the UART over.
 */
function sessionCall(id: number, fn: string, args: Parameters<typeof callMessage>[2]): string {
  const nonce = 1 + Math.floor(Math.random() * 2147483645);
  const lines = [Buffer.from('\n'), encodeFrame(`S${nonce} ${BASE_MAX_FRAME}`), ...fragment(callMessage(id, fn, args), BASE_MAX_FRAME, 0, 0)];
  return Buffer.concat(lines).toString('latin1');
}

/** The reply (`R` or `X`) to call `id` among the agent's frames in `text` (sequenced frames, in order). */
function findReply(text: string, id: number): { type: string; values?: unknown[] } | undefined {
  let parts: Buffer[] = [];
  for (const raw of text.split('\n')) {
    const c = parseLine(Buffer.from(raw, 'latin1'));
    if (c.kind !== 'frame' || c.frame.type !== 'seq') continue;
    const f = c.frame;
    let whole: Buffer | undefined;
    if (f.kind === '&') parts.push(f.body);
    else if (f.kind === '$') {
      parts.push(f.body);
      whole = Buffer.concat(parts);
      parts = [];
    } else whole = Buffer.concat([Buffer.from(f.kind, 'latin1'), f.body]);
    if (!whole) continue;
    try {
      const m = decodeMessage(whole);
      if ((m.type === 'R' || m.type === 'X') && m.id === id) return { type: m.type, values: m.type === 'R' ? m.values : [m.code, m.message] };
    } catch {
      /* not ours */
    }
  }
  return undefined;
}

/** Default baud rate of the upload when the port can switch (4x 115200; every ESP8266 USB bridge in common use takes it). */
export const DEFAULT_UPLOAD_BAUD = 460800;

/** Rates NodeMCU's `uart.setup` takes (app/driver/uart.c; others silently become 9600). */
export const NODEMCU_BAUDS = [300, 600, 1200, 2400, 4800, 9600, 19200, 31250, 38400, 57600, 74880, 115200, 230400, 256000, 460800, 921600, 1843200, 3686400];

/** Block size of the loader: the largest count `uart.on("data", n)` takes (n < 256, app/modules/uart.c). */
export const LOADER_BLOCK = 255;

/**
 * The session's helpers, typed at the prompt (text, opens/continues a chunk):
 * `__tc(name)` prints `@TC size a b` (Adler-32 halves of the file read back from flash, -1 when
 * missing); `__tl(name, size, block)` opens `name` for writing and takes `size` raw bytes in
 * `block`-byte blocks (the last one padded), one `K` per block, `@TF size` at the end,
 * `@TW reason` when it gives up (write failure, no data for 2-4 s: the file is removed);
 * `__tb(rate, fallback)` switches UART 0 to `rate` 20 ms after it ran and back to `fallback`
 * after 2 s unless the host confirms by stopping `__tx`. The 20 ms must cover what the UART still
 * has to send at the old rate when the timer fires: the echo of the `__tb` line, `@TB`, the marker
 * and the prompt, about 60 bytes, 5.2 ms at 115200: a `uart.setup` in the middle of them loses the
 * rest, since it resets the TX FIFO (app/driver/uart.c:69-71 at 0069f00; with 5 ms the prompt was
 * lost on a busy simulated module).
 */
const LOADER: Array<[string, boolean]> = [
  ['function __tc(n) local f=file.open(n,"r") if not f then print("@T".."C -1 0 0") return end', true],
  ['local a,b,s=1,0,0 while true do local d=f:read(256) if not d then break end', true],
  ['for i=1,#d do a=(a+d:byte(i))%65521 b=(b+a)%65521 end s=s+#d end', true],
  ['f:close() print("@T".."C",s,a,b) end', false],
  ['function __tl(n,z,c) local f=file.open(n,"w") if not f then print("@T".."L0") return end', true],
  ['local g,h,w,t=0,0,-1,tmr.create() local function q(m,x) t:unregister() f:close() uart.on("data") if x then file.remove(n) end print("@T"..m) end', true],
  ['t:alarm(2000,tmr.ALARM_AUTO,function() if h==w then q("W no data for 2 s",1) end w=h end)', true],
  ['uart.on("data",c,function(d) h=h+1 uart.write(0,"K") local r=z-g if #d>r then d=d:sub(1,r) end', true],
  ['if not f:write(d) then q("W file.write failed",1) return end g=g+#d if g>=z then q("F "..g) end end,0) print("@T".."L1") end', false],
  ['function __tb(r,o) print("@T".."B") tmr.create():alarm(20,tmr.ALARM_SINGLE,function() uart.setup(0,r,8,0,1,1)', true],
  ['__tx=tmr.create() __tx:alarm(2000,tmr.ALARM_SINGLE,function() __tx=nil uart.setup(0,o,8,0,1,1) end) end) end', false],
];

const hex32 = (x: { a: number; b: number }) => ((x.b * 65536 + x.a) >>> 0).toString(16).padStart(8, '0');

/** Send `content` to the module's loader as raw blocks, one acknowledged block at a time. */
async function sendRaw(repl: Repl, tmp: string, content: Buffer, lineMs: number, onDone: (done: number) => void): Promise<void> {
  if (content.length === 0) throw new TetherError('INVALID_ARGUMENT', `refusing to upload an empty ${tmp}`);
  const opened = await repl.exec(`__tl(${JSON.stringify(tmp)},${content.length},${LOADER_BLOCK})`, lineMs);
  if (!/(^|\n)@TL1/.test(opened)) throw new TetherError('PROTOCOL', `cannot create ${tmp} on the module (file.open returned nil: file system full or not formatted?)${opened.trim() ? `; it said ${JSON.stringify(opened.trim().slice(0, 200))}` : ''}`);
  const aborted = /(^|\n)@TW([^\n]*)\n/;
  let from = repl.mark;
  for (let off = 0; off < content.length; off += LOADER_BLOCK) {
    let block = content.subarray(off, off + LOADER_BLOCK);
    // the counted data mode calls back only on a full block: pad the last one (the loader cuts it)
    if (block.length < LOADER_BLOCK) block = Buffer.concat([block, Buffer.alloc(LOADER_BLOCK - block.length)]);
    await repl.writeRaw(block);
    const pos = await repl.waitByte(from, 'K', 1, aborted, lineMs);
    if (pos < 0) throw new TetherError('PROTOCOL', `the module stopped the upload of ${tmp} at byte ${off}: ${aborted.exec(repl.since(from).replace(/\r\n/g, '\n'))?.[2].trim() ?? '?'}`);
    from = pos;
    onDone(Math.min(off + LOADER_BLOCK, content.length));
  }
  const fin = /(^|\n)@TF (\d+)\n/;
  const ok = await repl.wait(from, (s) => fin.test(s.replace(/\r\n/g, '\n')) || aborted.test(s.replace(/\r\n/g, '\n')), lineMs);
  const said = repl.since(from).replace(/\r\n/g, '\n');
  const m = fin.exec(said);
  if (!ok || !m) throw new TetherError('PROTOCOL', `the module did not finish ${tmp}: ${ok ? said.trim().slice(0, 200) : `nothing within ${lineMs} ms`}`);
  if (Number(m[2]) !== content.length) throw new TetherError('PROTOCOL', `the module wrote ${m[2]} of ${content.length} bytes of ${tmp}`);
}

/** Ms the host waits after switching its port before its first marker at the new rate: the module switches 20 ms after `__tb` ran. */
const BAUD_SETTLE_MS = 40;

/**
 * Switch both ends to `want` baud (the module first, 20 ms after `__tb` ran; then the port),
 * confirmed by a marker at the new rate; when none comes within 1.5 s the port goes back to
 * `fallback`, which the module returns to by its own 2 s timer.
 * @returns the rate both ends run at afterwards.
 * @throws TetherError HANDSHAKE when the module answers at neither rate.
 */
async function switchBaud(repl: Repl, t: Transport, want: number, fallback: number, lineMs: number, progress: (p: FlashProgress) => void): Promise<number> {
  progress({ phase: 'baud', message: `switching to ${want} baud` });
  const out = await repl.exec(`__tb(${want},${fallback})`, lineMs);
  if (!/(^|\n)@TB/.test(out)) throw new TetherError('PROTOCOL', `the module did not take the baud switch: ${JSON.stringify(out.trim().slice(0, 200))}`);
  await t.setBaudRate!(want);
  await new Promise((r) => setTimeout(r, BAUD_SETTLE_MS)); // a marker sent before the module switched would be garbled
  if (await syncAt(repl, 1500, 'if __tx then __tx:unregister() __tx=nil end ')) return want;
  await t.setBaudRate!(fallback);
  if (await syncAt(repl, 4000, '')) {
    progress({ phase: 'baud', message: `the module did not answer at ${want} baud: staying at ${fallback}` });
    return fallback;
  }
  throw new TetherError('HANDSHAKE', `after a switch to ${want} baud the module answers neither at ${want} nor at ${fallback}: reset it (it boots at 115200)`);
}

/** Retry a marker line (every 200 ms, up to `ms`) until its output and a prompt come back. */
async function syncAt(repl: Repl, ms: number, pre: string): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (let k = 1; Date.now() < deadline; k++) {
    const from = repl.mark;
    await repl.write(`\n${pre}print("@T".."Y${k}")\n`);
    const ok = await repl.wait(from, (s) => new RegExp(`@TY${k}\\n[\\s\\S]*> $`).test(s.replace(/\r\n/g, '\n')), Math.min(200, Math.max(1, deadline - Date.now())));
    if (ok) return true;
    // a chunk left open (`>>`, e.g. by line noise after a reset) swallows the marker: a syntax error ends it
    if (/>> $/.test(repl.since(from))) await repl.write(')\n');
  }
  return false;
}

/**
 * Upload the agent over the stock REPL of the module on `transport` (see the file header).
 * Leaves the transport open; when `start` is set the agent runs on it afterwards.
 */
export async function flashNodemcu(transport: Transport, o: FlashOptions): Promise<FlashResult> {
  const t0 = Date.now();
  const name = o.name ?? 'tether.lua';
  if (!/^[A-Za-z0-9_.-]{1,27}\.lua$/.test(name)) throw new TetherError('INVALID_ARGUMENT', `--name must be a .lua file name of at most 31 characters (letters, digits, _ . -), got "${name}"`);
  const files = o.files ?? [...readLazyAgentFiles('nodemcu')].map(([n, text]) => ({ name: n, text }));
  for (const f of files) {
    if (!/^[A-Za-z0-9_.-]{1,27}\.lua$/.test(f.name) || f.name === name || f.name === 'init.lua') throw new TetherError('INVALID_ARGUMENT', `agent file name "${f.name}" must be a .lua file name of at most 31 characters, other than ${name} and init.lua`);
  }
  const tmpName = name.replace(/\.lua$/, '.tmp');
  const lineMs = o.lineTimeoutMs ?? 5000;
  const progress = o.onProgress ?? (() => {});
  const repl = new Repl(transport, o.trace);
  const result: FlashResult = { uploaded: false, initWritten: false, bytes: 0, files: [], baud: o.currentBaud ?? 115200, name, started: false, agentWasRunning: false, ms: 0 };

  // 1. A running agent owns the UART: ask it for the prompt.
  // The prompt's marker line goes along (an agent counts it as line noise), so a module
  // already at its prompt answers at once instead of after the agent's 700 ms.
  progress({ phase: 'sync', message: 'looking for a running agent' });
  const atPrompt = (s: string) => /@TS0\n[\s\S]*> $/.test(s.replace(/\r\n/g, '\n'));
  let synced = false;
  {
    const from = repl.mark;
    await repl.write(sessionCall(1, 'hello', [PROTOCOL_VERSION, HOST_MAX_FRAME]) + '\nTETHER_NOSTART=true print("@T".."S0")\n');
    const got = (await repl.wait(from, (s) => findReply(s, 1) !== undefined || atPrompt(s), 700)) && findReply(repl.since(from), 1) !== undefined;
    synced = !got && atPrompt(repl.since(from));
    if (got) {
      result.agentWasRunning = true;
      const hello = findReply(repl.since(from), 1)?.values?.[0];
      const ver = toText(field(hello as never, 'agent'));
      if (!o.allowRepl) {
        throw new TetherError('UNSUPPORTED', `tether agent ${ver ?? '?'} is running and owns the UART: pass --allow-repl to ask it for the Lua prompt (it must run with TETHER_ALLOW_REPL = true, as tether flash --allow-repl starts it), or reset the module and type TETHER_NOSTART=true at the prompt before init.lua starts the agent`);
      }
      progress({ phase: 'sync', message: `tether agent ${ver ?? '?'} is running: asking it for the Lua prompt` });
      const from2 = repl.mark;
      await repl.write(sessionCall(2, 'agent.repl', []));
      const r = await repl.wait(from2, (s) => findReply(s, 2) !== undefined, 3000);
      if (!r) throw new TetherError('HANDSHAKE', 'a tether agent answered hello but not agent.repl: restart the module and try again');
      const reply = findReply(repl.since(from2), 2);
      if (reply && reply.type === 'X') {
        throw new TetherError('UNSUPPORTED', `the running tether agent refused agent.repl (${String((reply.values ?? [])[1] ?? '')}): reset the module and type TETHER_NOSTART=true at the prompt before init.lua starts it, then flash with --allow-repl`);
      }
    }
  }

  // 2. Get a prompt: a marker only the command's output contains, retried.
  const deadline = Date.now() + (o.syncTimeoutMs ?? 15000);
  for (let k = 1; !synced && Date.now() < deadline; k++) {
    const from = repl.mark;
    // end a half-typed line; TETHER_NOSTART keeps an init.lua from starting the agent under us
    await repl.write(`\nTETHER_NOSTART=true print("@T".."S${k}")\n`);
    // the output may follow the empty line's prompt on the same line: `> @TS3`
    synced = await repl.wait(from, (s) => new RegExp(`@TS${k}\\n[\\s\\S]*> $`).test(s.replace(/\r\n/g, '\n')), Math.min(1000, Math.max(1, deadline - Date.now())));
    if (!synced && />> $/.test(repl.since(from))) await repl.write(')\n'); // leave a >> continuation
    if (!synced && repl.agentBoot && o.allowRepl) {
      repl.agentBoot = false;
      await repl.write(sessionCall(3, 'agent.repl', []));
      await new Promise((res) => setTimeout(res, 300));
    }
  }
  if (!synced) {
    const heard = repl.since(0);
    throw new TetherError(
      'HANDSHAKE',
      `no Lua prompt from the module within ${o.syncTimeoutMs ?? 15000} ms: is it a NodeMCU board, on this port, at this baud rate (115200 after boot)?` +
        (heard.length ? ` It sent ${heard.length} bytes, the last: ${JSON.stringify(heard.slice(-120))}` : ' It sent nothing.'),
    );
  }

  // 3. What the firmware has.
  progress({ phase: 'probe' });
  const probe = Repl.field(await repl.exec('print("@T".."P", node.heap())', lineMs), '@TP');
  if (!probe) throw new TetherError('PROTOCOL', 'the module did not answer the firmware probe (print of node.heap)');
  result.heapBefore = Number(probe[0]) || undefined;

  // helpers, defined for this session only (NodeMCU-Tool #83: a helper cached from an older session gave 0-byte files)
  for (const [line, cont] of LOADER) {
    const out = await repl.exec(line, lineMs, cont);
    if (out.trim()) throw new TetherError('PROTOCOL', `defining the upload helpers failed: the module said ${JSON.stringify(out.trim())}`);
  }

  // 4. A faster line for the upload, when both ends can change it (esptool's way, with a fallback)
  const fromBaud = o.currentBaud ?? 115200;
  const wantBaud = o.baudRate ?? 0;
  let baud = fromBaud;
  if (wantBaud && wantBaud !== fromBaud) {
    if (!transport.setBaudRate) throw new TetherError('UNSUPPORTED', `${transport.description} cannot change its baud rate: leave --baud out (or 0) to upload at ${fromBaud}`);
    baud = await switchBaud(repl, transport, wantBaud, fromBaud, lineMs, progress);
  }
  result.baud = baud;

  const checksum = async (file: string) => {
    const f = Repl.field(await repl.exec(`__tc(${JSON.stringify(file)})`, lineMs * 4), '@TC');
    if (!f || f.length < 3) throw new TetherError('PROTOCOL', `checksum of ${file} on the module failed`);
    return { size: Number(f[0]), a: Number(f[1]), b: Number(f[2]) };
  };

  const upload = async (file: string, content: Buffer): Promise<boolean> => {
    const tmp = file === name ? tmpName : file.replace(/\.lua$/, '.tmp');
    progress({ phase: 'check', file });
    const have = await checksum(file);
    const want = adler(content);
    if (!o.force && have.size === content.length && have.a === want.a && have.b === want.b) {
      progress({ phase: 'check', file, message: `${file} on the module is identical (${content.length} bytes): not uploaded again` });
      return false;
    }
    try {
      await sendRaw(repl, tmp, content, lineMs, (done) => progress({ phase: 'upload', file, done, total: content.length }));
      // verify: the module reads the file back from its flash and computes size + Adler-32 itself
      progress({ phase: 'verify', file, done: 0, total: content.length });
      const got = await checksum(tmp);
      if (got.size !== content.length || got.a !== want.a || got.b !== want.b) {
        throw new TetherError('PROTOCOL', `verification of ${tmp} failed: the module has ${got.size} bytes with Adler-32 ${hex32(got)}, expected ${content.length} bytes with ${hex32(want)}`, { context: { file: tmp, got, want: { size: content.length, ...want } } });
      }
      progress({ phase: 'verify', file, done: content.length, total: content.length });
    } catch (e) {
      // best effort: leave no partial file behind. The module may have reset meanwhile (its boot
      // noise and the rest of a block arrive at its prompt): find the prompt again first.
      await repl.write('\n').catch(() => undefined);
      if (await syncAt(repl, Math.max(lineMs * 2, 8000), "").catch(() => false)) {
        await repl.exec(`file.remove(${JSON.stringify(tmp)})`, Math.max(lineMs, 2000)).catch(() => undefined);
      }
      throw e;
    }
    progress({ phase: 'rename', file });
    const ren = Repl.field(await repl.exec(`file.remove(${JSON.stringify(file)}) print("@T".."R",file.rename(${JSON.stringify(tmp)},${JSON.stringify(file)}))`, lineMs), '@TR');
    if (!ren || ren[0] !== 'true') throw new TetherError('PROTOCOL', `renaming ${tmp} to ${file} failed (${ren?.join(' ') ?? 'no answer'}); ${tmp} is complete and verified on the module`);
    return true;
  };

  const agent = Buffer.from(o.minify === false ? o.agentSource : minifyLua(o.agentSource), 'latin1');
  result.bytes = agent.length;
  result.uploaded = await upload(name, agent);
  for (const f of files) {
    const body = Buffer.from(o.minify === false ? f.text : minifyLua(f.text), 'latin1');
    const written = await upload(f.name, body);
    if (written) await repl.exec(`file.remove(${JSON.stringify(f.name.replace(/\.lua$/, '.lc'))})`, lineMs);
    result.files.push({ name: f.name, bytes: body.length, uploaded: written });
  }
  if (o.init) result.initWritten = await upload('init.lua', Buffer.from(initLua(name, o.initDelayMs ?? 2000, o.allowRepl === true), 'latin1'));
  if (baud !== fromBaud) await switchBaud(repl, transport, fromBaud, fromBaud, lineMs, progress);
  await repl.exec('__tc,__tl,__tb=nil', lineMs).catch(() => undefined);

  if (o.start !== false) {
    progress({ phase: 'start', message: `dofile("${name}")` });
    const from = repl.mark;
    await repl.write(`${o.allowRepl ? 'TETHER_ALLOW_REPL = true ' : ''}dofile(${JSON.stringify(name)})\n`);
    const ok = await repl.wait(from, (s) => /(^|\n)~B\d+ \d+ [0-9A-F]{8}\r?\n/.test(s) || /(^|\n)> $/.test(s.replace(/\r\n/g, '\n')), lineMs * 3);
    const said = repl.since(from).replace(/\r\n/g, '\n');
    if (!ok || !/(^|\n)~B\d+/.test(said)) {
      throw new TetherError('HANDSHAKE', `the agent did not start: ${ok ? `the module said ${JSON.stringify(said.slice(0, 400))}` : `nothing within ${lineMs * 3} ms`}`);
    }
    result.started = true;
  }
  result.ms = Date.now() - t0;
  return result;
}

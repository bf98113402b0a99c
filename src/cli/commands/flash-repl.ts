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
 *   sent only after the previous prompt: the 256-byte RX ring never overflows.
 * - Base64 chunks when the firmware has `encoder`, hex otherwise (probed, never assumed);
 *   the write helper is defined anew in every session (NodeMCU-Tool #83: a cached helper
 *   after a reset gave 0-byte files).
 * - Written to a temporary name, read back byte by byte, only then renamed: a reset or a
 *   failure never leaves a 0-byte or partial agent under the real name.
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
  phase: 'sync' | 'probe' | 'check' | 'upload' | 'verify' | 'rename' | 'start';
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
   * firmware-shim/nodemcu/agent.lua `HAL.group`), uploaded next to it the same way (checked,
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
  /** Use this transfer encoding instead of probing for `encoder`. */
  encoding?: 'base64' | 'hex';
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
  encoding: 'base64' | 'hex';
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

  /** Quiet for `ms` (no new bytes). */
  async settle(ms: number): Promise<void> {
    for (;;) {
      const m = this.mark;
      await new Promise((r) => setTimeout(r, ms));
      if (this.mark === m) return;
    }
  }

  /**
   * Run one line and return what it printed (echo and prompt removed). Waits for the
   * `> ` prompt (or `>> ` when `continuation`), then a short quiet period.
   * @throws TimeoutError when no prompt comes back.
   */
  async exec(line: string, ms: number, continuation = false): Promise<string> {
    if (line.length > MAX_REPL_LINE) throw new TetherError('INVALID_ARGUMENT', `internal: REPL line of ${line.length} characters`);
    const from = this.mark;
    await this.write(line + '\n');
    const prompt = continuation ? /(^|\n)>> $/ : /(^|\n)> $/;
    for (;;) {
      const ok = await this.wait(from, (s) => prompt.test(s) || (continuation && /(^|\n)> $/.test(s)), ms);
      if (!ok) {
        const got = this.since(from);
        throw new TimeoutError(`no Lua prompt within ${ms} ms after ${JSON.stringify(line.slice(0, 60))}${got ? `; the module said ${JSON.stringify(got.slice(-200))}` : '; the module said nothing'}`, { ms, line: line.slice(0, 60) });
      }
      await this.settle(15);
      const s = this.since(from);
      if (prompt.test(s) || (continuation && /(^|\n)> $/.test(s))) break;
    }
    let s = this.since(from).replace(/\r\n/g, '\n');
    s = s.replace(/(^|\n)>>? $/, '$1');
    const echo = line + '\n';
    const at = s.indexOf(echo);
    if (at >= 0 && at < 4) s = s.slice(at + echo.length);
    this.trace?.(`< ${JSON.stringify(s)}`);
    return s.replace(/\n$/, '');
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
  const result: FlashResult = { uploaded: false, initWritten: false, bytes: 0, files: [], encoding: 'hex', name, started: false, agentWasRunning: false, ms: 0 };

  // 1. A running agent owns the UART: ask it for the prompt.
  progress({ phase: 'sync', message: 'looking for a running agent' });
  {
    const from = repl.mark;
    await repl.write(sessionCall(1, 'hello', [PROTOCOL_VERSION, HOST_MAX_FRAME]));
    const got = await repl.wait(from, (s) => findReply(s, 1) !== undefined, 700);
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
      await new Promise((res) => setTimeout(res, 200));
    }
  }

  // 2. Get a prompt: a marker only the command's output contains, retried.
  const deadline = Date.now() + (o.syncTimeoutMs ?? 15000);
  let synced = false;
  for (let k = 1; !synced && Date.now() < deadline; k++) {
    const from = repl.mark;
    // end a half-typed line; TETHER_NOSTART keeps an init.lua from starting the agent under us
    await repl.write(`\nTETHER_NOSTART=true print("@T".."S${k}")\n`);
    // the output may follow the empty line's prompt on the same line: `> @TS3`
    synced = await repl.wait(from, (s) => new RegExp(`@TS${k}\\n[\\s\\S]*> $`).test(s.replace(/\r\n/g, '\n')), Math.min(1000, Math.max(1, deadline - Date.now())));
    if (!synced && /(^|\n)>> $/.test(repl.since(from).replace(/\r\n/g, '\n'))) await repl.write(')\n'); // leave a >> continuation
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
  await repl.settle(50);

  // 3. What the firmware has.
  progress({ phase: 'probe' });
  const probe = Repl.field(await repl.exec('print("@T".."P", encoder and encoder.fromBase64 and 1 or 0, node.heap())', lineMs), '@TP');
  if (!probe) throw new TetherError('PROTOCOL', 'the module did not answer the firmware probe (print of encoder / node.heap)');
  const encoding = o.encoding ?? (probe[0] === '1' ? 'base64' : 'hex');
  result.encoding = encoding;
  result.heapBefore = Number(probe[1]) || undefined;

  // helpers, defined for this session only
  const helpers = [
    ['function __tc(n) local f=file.open(n,"r") if not f then print("@T".."C -1 0 0") return end', true],
    ['local a,b,s=1,0,0 while true do local d=f:read(256) if not d then break end', true],
    ['for i=1,#d do a=(a+d:byte(i))%65521 b=(b+a)%65521 end s=s+#d end', true],
    ['f:close() print("@T".."C",s,a,b) end', false],
    ['function __td(n,o) local f=file.open(n,"r") if not f then print("@T".."E") return end f:seek("set",o)', true],
    ['for k=1,8 do local d=f:read(128) if not d then break end', true],
    ['print("@T".."D"..(d:gsub(".",function(c) return string.format("%02X",c:byte()) end))) end f:close() print("@T".."E") end', false],
    encoding === 'base64'
      ? ['function __tw(s) if not __tf:write(encoder.fromBase64(s)) then error("write failed") end end', false]
      : ['function __tw(h) if not __tf:write((h:gsub("%x%x",function(x) return string.char(tonumber(x,16)) end))) then error("write failed") end end', false],
  ] as Array<[string, boolean]>;
  for (const [line, cont] of helpers) {
    const out = await repl.exec(line, lineMs, cont);
    if (out.trim()) throw new TetherError('PROTOCOL', `defining the upload helpers failed: the module said ${JSON.stringify(out.trim())}`);
  }

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
    const open = Repl.field(await repl.exec(`file.remove(${JSON.stringify(tmp)}) __tf=file.open(${JSON.stringify(tmp)},"w") print("@T".."O",__tf and 1 or 0)`, lineMs), '@TO');
    if (!open || open[0] !== '1') throw new TetherError('PROTOCOL', `cannot create ${tmp} on the module (file.open returned nil: file system full or not formatted?)`);
    try {
      const per = encoding === 'base64' ? 180 : 120;
      for (let off = 0; off < content.length; off += per) {
        const piece = content.subarray(off, off + per);
        const text = encoding === 'base64' ? piece.toString('base64') : piece.toString('hex');
        const out = await repl.exec(`__tw("${text}")`, lineMs);
        if (out.trim()) throw new TetherError('PROTOCOL', `writing ${tmp} failed at byte ${off}: the module said ${JSON.stringify(out.trim().slice(0, 300))}`);
        progress({ phase: 'upload', file, done: Math.min(off + per, content.length), total: content.length });
      }
      const closed = await repl.exec('__tf:close() __tf=nil', lineMs);
      if (closed.trim()) throw new TetherError('PROTOCOL', `closing ${tmp} failed: ${closed.trim()}`);
      // read back every byte
      const back: Buffer[] = [];
      for (let off = 0; off < content.length; off += 1024) {
        const out = await repl.exec(`__td(${JSON.stringify(tmp)},${off})`, lineMs * 2);
        for (const l of out.split('\n')) if (l.startsWith('@TD')) back.push(Buffer.from(l.slice(3).trim(), 'hex'));
        if (!out.includes('@TE')) throw new TetherError('PROTOCOL', `reading ${tmp} back failed at byte ${off}`);
        progress({ phase: 'verify', file, done: Math.min(off + 1024, content.length), total: content.length });
      }
      const got = Buffer.concat(back);
      if (!got.equals(content)) {
        let at = 0;
        while (at < got.length && got[at] === content[at]) at++;
        throw new TetherError('PROTOCOL', `verification of ${tmp} failed: read back ${got.length} of ${content.length} bytes, first difference at byte ${at}`, { context: { file: tmp, got: got.length, want: content.length, at } });
      }
    } catch (e) {
      // best effort: leave no partial file behind
      await repl.exec(`__tf=nil file.remove(${JSON.stringify(tmp)})`, lineMs).catch(() => undefined);
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
  await repl.exec('__tc,__td,__tw,__tf=nil', lineMs).catch(() => undefined);

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

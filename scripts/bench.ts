/**
 * npm run bench: protocol v2 efficiency and speed, printed as ONE table, every
 * figure set against a baseline measured in the same run (nothing is asserted;
 * unit tests never assert timing).
 *
 * 1. Goodput host→module and module→host through the simulated LuatOS module's UART
 *    (src/sim/uart-wire.ts, 8N1, the agent's `uart.setup` at the same rate) at 115200 and
 *    921600 baud, each direction's payload rate as a ratio of the line's baud/10 bytes/s
 *    (goal ≥ 0.90), measured two ways:
 *    - each direction alone: the payload sent through a module socket to a local TCP sink
 *      (payload / time until the last `socket.tx` was accepted, the sink's sha256 checked), and
 *      read from a local TCP server that sends it (bytes after the first chunk / time from it to
 *      the last byte, sha256 checked);
 *    - both at once, a TCP echo (the stricter case: each direction's acks share the line with the
 *      other direction's bulk frames): host→module as above, module→host from the first echoed
 *      chunk to the last byte.
 * 2. The same at 115200 with 1e-3 faults (flip, drop, dup per byte, plus garbage
 *    lines; src/transport/faulty.ts) as a ratio of the clean run (goal ≥ 0.50), and the
 *    time of that session's handshake against the clean one's (goal ≤ 2 s).
 * 3. Minimal call (`socket.sntp_port()` → 123): bytes and frames both ways, counted
 *    by the host link and the simulated UART, against the physical minimum: one
 *    byte of call id, one of function index and one of framing for the call; one
 *    byte of call id, one for the value 123 and one of framing for the reply
 *    (6 bytes; nothing shorter can name the call, the function and the answer and
 *    delimit them). Latency through a 115200 link against the line time of
 *    those 6 bytes (0.52 ms) and of the bytes actually sent.
 * 4. Calls/s to one in-process simulated module on its USB virtual port (`uart.VUART_0`, no
 *    baud, so no pacing: the call machinery, not the line), pipelined and
 *    sequential (goals 20,000 and 5,000), against the host-only rate of 5.
 * 5. Host-only calls/s against a minimal stub agent (test/helpers/v2-stub.ts,
 *    frame level, no Lua) (goal ≥ 100,000), against the codec alone (encode and
 *    decode of the same call and reply, both sides, no I/O).
 *
 * 6. The NodeMCU agent's Lua heap, idle and at peak while a socket receives 1460 bytes and
 *    the host sends 1460 (scripts/heap-nodemcu.ts: i386 lua5.1, `luac -s` bytecode, C modules
 *    stubbed outside the count), against the ~40 KB an ESP8266 has free after boot (goals
 *    ≤ 16 KB idle, ≤ 24 KB peak); "i386 lua5.1 not available" when it is missing. Then the
 *    same for a firmware with LFS holding the agent (an estimate: less the prototypes alive).
 *
 * 7. Goodput module→host through the stream layer's Duplex (`mod.createConnection`, src/streams)
 *    and through `tether proxy`'s SOCKS5 server (src/proxy, module dialer: a Duplex per CONNECT),
 *    in-process LuatOS sim on its USB virtual port (no pacing), each as a ratio of the raw facade path (`socket.tx` and
 *    `socket.rx` on every EVENT, a window of two reads in flight) fetching the same bytes from the same local
 *    server in the same run.
 *
 * 8. Agent upload: `tether flash` (raw blocks, 460800 baud for the upload, verified by the
 *    module's checksum) against NodeMCU-Tool's method (hex lines, stop-and-wait) uploading the
 *    same NodeMCU agent files to the same simulated ESP8266 paced at 115200 baud (goal ≥ 3x).
 *
 * Parts 1 and 2 run each transfer `--runs` times (default 3, 1 with `--quick`), each on a new
 * simulated module, and print the median rate with the range of the runs' ratios: one transfer
 * on the simulated line at 921600 varies by several hundredths between runs.
 *
 * Options: `--quick` (smaller transfers), `--seed N` (fault seed), `--runs N` (repeats of parts 1
 * and 2), `--only PARTS` (a comma
 * list of parts to run, by number or name: 1 `goodput`, 2 `faults` (runs 1 at 115200 for its
 * baseline), 3 `minimal`, 4 `sim`, 5 `host`, 6 `heap`, 7 `streams` (or `proxy`), 8 `flash`; part 4 runs
 * part 5 for its baseline). Every part runs by default.
 */
import { connect } from '../src/api/connect.js';
import { VUART_0 } from '../src/sim/luatos/env.js';
import { openSocket } from '../src/streams/drivers/luatos-conn.js';
import { startEchoServers, type EchoServers } from '../src/diag/echo-servers.js';
import { callMessage, decodeMessage, encodeFrame, encodeMessage, LineSplitter, parseLine, seqHead } from '../src/codec/frame.js';
import { RpcClient } from '../src/rpc/client.js';
import { createMemoryPair } from '../src/transport/memory.js';
import { faultRates } from '../src/transport/faulty.js';
import { filter, firstValueFrom } from 'rxjs';
import { SocketEvent } from '../src/api/luatos/constants.js';
import { ZBuff, type LuatosSocket, type SocketCtrl } from '../src/api/luatos/socket.js';
import '../src/streams/index.js'; // mod.createConnection
import { openFaultySim } from '../test/helpers/fault-sim.js';
import { echoSha256, seededPayload } from '../test/helpers/fault-echo.js';
import { startStubAgent } from '../test/helpers/v2-stub.js';
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createServer as createTcpServer, connect as tcpConnect, type AddressInfo } from 'node:net';
import { lastValueFrom } from 'rxjs';
import { SocksServer } from '../src/proxy/server.js';
import { withTimeout } from '../src/util/with-timeout.js';
import { moduleDialer } from '../src/proxy/module-dialer.js';
import { AuthMethod, Command, encodeGreeting, encodeRequest, parseMethodSelection, parseReply } from '../src/proxy/socks5.js';

const PART_NAMES = ['', 'goodput', 'faults', 'minimal', 'sim', 'host', 'heap', 'proxy', 'flash'];
const USAGE = `Usage: npm run bench -- [--quick] [--seed N] [--runs N] [--only PARTS]

Measures tether against baselines run in the same process and prints ratios; asserts nothing.

  --quick        smaller transfers and fewer calls
  --seed N       seed of the fault injection (a positive integer) [default: 1]
  --runs N       how many times parts 1 and 2 run each transfer, each on a new
                 simulated module; the median is printed with the range of the
                 runs (a positive integer) [default: 3, 1 with --quick]
  --only PARTS   a comma list of parts, by number or name:
                 1 goodput, 2 faults (runs 1 at 115200 for its baseline), 3 minimal,
                 4 sim (runs 5 for its baseline), 5 host, 6 heap, 7 streams (or proxy), 8 flash
                 [default: every part]
  -h, --help     this text

Exit codes: 0 done (whatever the figures), 2 usage error, 1 a part failed. Docs: docs/bench.md`;

/** The command line, checked: unknown options, a bad seed or run count or an unknown part are usage errors (exit 2). */
function parseBenchArgs(argv: string[]): { quick: boolean; seed: number; runs: number; only?: Set<string> } {
  const fail = (msg: string): never => {
    process.stderr.write(`bench: ${msg}\n\n${USAGE}\n`);
    process.exit(2);
  };
  let v: { quick?: boolean; seed?: string; runs?: string; only?: string; help?: boolean };
  try {
    v = parseArgs({ args: argv, options: { quick: { type: 'boolean' }, seed: { type: 'string' }, runs: { type: 'string' }, only: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (e) {
    return fail((e as Error).message);
  }
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const seed = v.seed === undefined ? 1 : Number(v.seed);
  if (!Number.isInteger(seed) || seed < 1) fail(`--seed must be a positive integer, got ${JSON.stringify(v.seed)}`);
  const runs = v.runs === undefined ? (v.quick ? 1 : 3) : Number(v.runs);
  if (!Number.isInteger(runs) || runs < 1) fail(`--runs must be a positive integer, got ${JSON.stringify(v.runs)}`);
  let only: Set<string> | undefined;
  if (v.only !== undefined) {
    only = new Set(v.only.split(',').map((x) => x.trim()).filter(Boolean));
    const known = new Set([...PART_NAMES.slice(1), 'streams', '1', '2', '3', '4', '5', '6', '7', '8']);
    const bad = [...only].filter((p) => !known.has(p));
    if (only.size === 0 || bad.length > 0) fail(`--only: unknown part ${bad.length ? bad.map((b) => JSON.stringify(b)).join(', ') : '(none given)'}`);
  }
  return { quick: v.quick === true, seed, runs, only };
}

const ARGS = parseBenchArgs(process.argv.slice(2));
const QUICK = ARGS.quick;
const SEED = ARGS.seed;
/** Runs of each transfer in parts 1 and 2 (`--runs`). */
const RUNS = ARGS.runs;
const KiB = 1024;
/** Parts picked with `--only` (numbers or names), or undefined for all of them. */
const ONLY = ARGS.only;
/** True when part `n` (1..8) was asked for itself (every part is when `--only` is absent). */
const asked = (n: number): boolean => !ONLY || ONLY.has(String(n)) || ONLY.has(PART_NAMES[n]) || (n === 7 && ONLY.has('streams'));
/** True when part `n` (1..8) was asked for, directly or as the baseline of another part. */
const wants = (n: number): boolean => {
  if (asked(n)) return true;
  if (n === 1 && asked(2)) return true; // the fault run's baseline: the clean one
  if (n === 5 && asked(4)) return true; // the simulator's baseline: host-only
  return false;
};

type Row = { measure: string; value: string; baseline: string; ratio: string; goal: string };
const rows: Row[] = [];
const row = (measure: string, value: string, baseline: string, ratio: string, goal = '') => rows.push({ measure, value, baseline, ratio, goal });
const fmtRate = (bps: number) => (bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} MB/s` : `${(bps / 1e3).toFixed(2)} kB/s`);
const fmtN = (n: number) => Math.round(n).toLocaleString('en-US');
/**
 * A ratio with 2 decimals; 3 when `goal` is given, `x` is below it and 2 decimals would show the
 * goal itself (0.8996 shows as 0.900, not as a 0.90 marked NOT met).
 */
const r2 = (x: number, goal?: number) => (!Number.isFinite(x) ? 'n/a' : goal !== undefined && x < goal && Number(x.toFixed(2)) >= goal ? x.toFixed(3) : x.toFixed(2));
const meets = (ok: boolean, goal: string) => `${goal} ${ok ? '(met)' : '(NOT met)'}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The median of `xs` (the mean of the middle two for an even count). */
const median = (xs: number[]) => {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
/**
 * `fn` run {@link RUNS} times, one after the other; each field of the result is the median of
 * the runs, and `runs` keeps every run's figures.
 */
async function repeated<T extends object>(fn: () => Promise<T>): Promise<T & { runs: T[] }> {
  const runs: T[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await fn());
  const out = { ...runs[0] } as Record<string, unknown>;
  for (const k of Object.keys(out)) if (typeof out[k] === 'number') out[k] = median(runs.map((r) => (r as Record<string, number>)[k]));
  return { ...(out as T), runs };
}
/** "; 3 runs 0.88-0.94" (how many runs and the range of their ratios of field `k` to `base`), or "" for one run. */
const spread = <T,>(runs: T[], k: keyof T, base: number) => {
  if (runs.length < 2) return '';
  const xs = runs.map((r) => (r[k] as number) / base);
  return `; ${runs.length} runs ${r2(Math.min(...xs))}-${r2(Math.max(...xs))}`;
};

/** Run a section; on failure print rows saying why, and go on. */
async function section(name: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    row(name, 'n/a', `failed: ${(e as Error).message.split('\n')[0].slice(0, 90)}`, '', '');
  }
}

interface Goodput {
  up: number; // bytes/s host→module
  down: number; // bytes/s module→host
  handshakeMs: number; // the session's handshake (hello), ms
}

/** TCP echo of `size` bytes through the simulated LuatOS module over a paced (optionally faulty) link. */
async function pacedEcho(echo: EchoServers, baud: number, size: number, faultP: number): Promise<Goodput> {
  const s = await openFaultySim('luatos', {
    pace: { baud },
    faults: faultP > 0 ? { seed: SEED, both: faultRates(faultP) } : { seed: SEED },
    rpc: { timeoutMs: 60000, handshakeTimeoutMs: 60000 },
  });
  try {
    const conn = await firstValueFrom(openSocket(s.mod.socket, echo.tcp.host, echo.tcp.port, { timeoutMs: 60000 }));
    try {
      const payload = seededPayload(size, SEED);
      const r = await echoSha256(conn, payload, Math.max(120000, ((size * 10) / baud) * 1000 * 20));
      if (r.backSha256 !== r.sentSha256) throw new Error('echo differs from what was sent');
      return {
        handshakeMs: s.mod.rpc.stats.handshakeMs,
        up: size / (r.sendDoneMs / 1000),
        down: (size - r.firstChunkBytes) / ((r.lastByteMs - r.firstByteMs) / 1000),
      };
    } finally {
      await conn.close().catch(() => {});
    }
  } finally {
    await s.close();
  }
}

/**
 * Each direction alone through the simulated LuatOS module over a paced (optionally faulty) link:
 * `size` bytes sent to a local TCP sink, then `size` bytes read from a local TCP server that sends
 * them and closes. Both are checked byte-exact by sha256 (a mismatch throws).
 * @param faultP per-byte rate of each fault (flip, drop, duplicate; {@link faultRates}), 0 for none.
 * @returns bytes/s each way.
 */
async function pacedOneWay(baud: number, size: number, faultP = 0): Promise<{ up: number; down: number }> {
  const payload = seededPayload(size, SEED);
  const want = createHash('sha256').update(payload).digest('hex');
  const sunk = createHash('sha256');
  let sunkBytes = 0;
  let sunkDone: () => void = () => {};
  const allSunk = new Promise<void>((r) => (sunkDone = r));
  const sink = createTcpServer((c) => {
    c.on('error', () => {});
    c.on('data', (b) => {
      sunk.update(b);
      sunkBytes += b.length;
      if (sunkBytes >= size) sunkDone();
    });
  });
  const source = createTcpServer((c) => {
    c.on('error', () => {});
    c.end(payload);
  });
  const listen = (srv: typeof sink) => new Promise<number>((r) => srv.listen(0, '127.0.0.1', () => r((srv.address() as AddressInfo).port)));
  const [sinkPort, sourcePort] = [await listen(sink), await listen(source)];
  const s = await openFaultySim('luatos', {
    pace: { baud },
    faults: faultP > 0 ? { seed: SEED, both: faultRates(faultP) } : { seed: SEED },
    rpc: { timeoutMs: 60000, handshakeTimeoutMs: 60000 },
  });
  const limitMs = Math.max(120000, ((size * 10) / baud) * 1000 * 20);
  try {
    const up = await firstValueFrom(openSocket(s.mod.socket, '127.0.0.1', sinkPort, { timeoutMs: 60000 }));
    let upRate: number;
    try {
      const t0 = performance.now();
      await lastValueFrom(up.send(payload));
      upRate = size / ((performance.now() - t0) / 1000);
      // withTimeout clears its timer once the sink has it all: a timer left running kept the
      // process alive for limitMs (2 minutes) after the last part had printed
      await withTimeout(allSunk, limitMs, () => new Error(`the sink got ${sunkBytes} of ${size} bytes`));
      if (sunkBytes !== size || sunk.digest('hex') !== want) throw new Error('the sink got other bytes than were sent');
    } finally {
      await up.close().catch(() => {});
    }
    const down = await firstValueFrom(openSocket(s.mod.socket, '127.0.0.1', sourcePort, { timeoutMs: 60000 }));
    try {
      const got = createHash('sha256');
      let n = 0;
      let first = -1;
      let firstBytes = 0;
      let last = 0;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`read ${n} of ${size} bytes in ${limitMs} ms`)), limitMs);
        const sub = down.data().subscribe({
          next: (b) => {
            if (first < 0) {
              first = performance.now();
              firstBytes = b.length;
            }
            last = performance.now();
            got.update(b);
            n += b.length;
            if (n >= size) {
              clearTimeout(timer);
              sub.unsubscribe();
              resolve();
            }
          },
          error: (e) => {
            clearTimeout(timer);
            reject(e);
          },
          complete: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
      if (n !== size || got.digest('hex') !== want) throw new Error(`read ${n} bytes, not the ${size} the server sent`);
      return { up: upRate, down: (size - firstBytes) / ((last - first) / 1000) };
    } finally {
      await down.close().catch(() => {});
    }
  } finally {
    await s.close();
    sink.close();
    source.close();
  }
}

/**
 * A simulated Air780E whose agent talks over its USB virtual port (`uart.VUART_0`, 32): a USB CDC
 * port has no baud, so the simulator does not pace it (docs/fidelity.md, "UART pacing"). Parts 3,
 * 4 and 7 measure the protocol and the simulator, not the line.
 */
const USB_SIM = { sim: { agentSettings: { TETHER_UART: VUART_0 } } };

/** Line time (ms) of `bytes` at `baud`, 8N1 (10 bits a byte). */
const lineTimeMs = (bytes: number, baud: number) => (bytes * 10 * 1000) / baud;

/**
 * CPU time (user + system, µs) per call of the last {@link callRate}: on a busy machine the
 * wall-clock rate drops with the CPU share this process gets, the CPU time per call much less.
 */
let lastCpuUs = NaN;
const cpuNote = (us: number) => `cpu ${us.toFixed(1)} µs/call`;

/** Make `n` calls, `inFlight` at a time (1 = sequential); resolves when all have settled. */
async function runCalls(call: () => Promise<unknown>, n: number, inFlight: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      await call();
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, worker));
}

/** Calls/s: `n` calls, `inFlight` at a time (1 = sequential). Sets {@link lastCpuUs}. */
async function callRate(call: () => Promise<unknown>, n: number, inFlight: number): Promise<number> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await runCalls(call, n, inFlight);
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  lastCpuUs = (c.user + c.system) / n;
  return n / (ms / 1000);
}

/**
 * The agent's work per call: Lua and C function calls and VM instructions, averaged over `n`
 * calls (`inFlight` at a time: 1 sequential, more pipelined, when they travel in bundles),
 * counted by a call hook and a count hook of 1 in the simulator's VM. Unlike a rate this does not
 * depend on the machine's load. The hooks replace the simulator's own (its heap checks): measure
 * last, then close the module.
 */
async function agentWork(mod: Awaited<ReturnType<typeof connect>>, call: () => Promise<unknown>, n: number, inFlight = 1): Promise<{ calls: number; instructions: number }> {
  const vm = mod.simulator?.currentVm;
  if (!vm) throw new Error('no simulated module');
  const run = (code: string) => {
    const e = vm.runString(code, '=bench');
    if (e) throw new Error(e);
  };
  run('BENCH_C, BENCH_I = 0, 0 debug.sethook(function(ev) if ev == "count" then BENCH_I = BENCH_I + 1 else BENCH_C = BENCH_C + 1 end end, "c", 1)');
  await runCalls(call, n, inFlight);
  run('debug.sethook() function BENCH_GET() return BENCH_C, BENCH_I end');
  const r = vm.callGlobal('BENCH_GET');
  if (r.error !== undefined || !r.values) throw new Error(`agent work: ${r.error}`);
  const [c, ins] = r.values.map(Number);
  return { calls: c / n, instructions: ins / n };
}

/** Calls/s of the codec alone: one call and its reply encoded, split, parsed and decoded on both sides. */
function codecRate(n: number): number {
  const hostLines = new LineSplitter(4096);
  const agentLines = new LineSplitter(4096);
  let sink = 0;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const id = (i % 65535) + 1;
    const c = callMessage(id, 23, []);
    const cl = encodeFrame(seqHead('C', i % 4096, i % 4096), c.subarray(1));
    agentLines.push(cl, (line) => {
      const f = parseLine(line);
      if (f.kind === 'frame' && f.frame.type === 'seq') {
        const m = decodeMessage(f.frame.body, f.frame.kind.charCodeAt(0));
        if (m.type === 'C') {
          const r = encodeMessage({ type: 'R', id: m.id, values: [123] });
          const rl = encodeFrame(seqHead('R', i % 4096, i % 4096), r.subarray(1));
          hostLines.push(rl, (l2) => {
            const g = parseLine(l2);
            if (g.kind === 'frame' && g.frame.type === 'seq') {
              const mm = decodeMessage(g.frame.body, g.frame.kind.charCodeAt(0));
              if (mm.type === 'R') sink += mm.values.length;
            }
          });
        }
      }
    });
  }
  if (sink !== n) throw new Error('codec loop lost calls');
  return n / ((performance.now() - t0) / 1000);
}

/**
 * Read `size` bytes from `ctrl` with the raw facade: `socket.rx` on every EVENT, keeping two reads
 * in flight (a sliding window) while they come back full, until a short one took all that was pending.
 */
function rawFacadeRead(socket: LuatosSocket, ctrl: SocketCtrl, size: number): Promise<void> {
  const limit = socket.readLimit();
  return new Promise<void>((resolve, reject) => {
    let n = 0;
    let running = false;
    let again = false;
    let finished = false;
    const done = (e?: Error) => {
      if (finished) return;
      finished = true;
      sub.unsubscribe();
      if (e) reject(e);
      else resolve();
    };
    const read = () => {
      const b = new ZBuff(0);
      const p = firstValueFrom(socket.rx(ctrl, b, { limit })).then((r) => ({ r, b }));
      p.catch(() => undefined);
      return p;
    };
    const drain = async (): Promise<void> => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          const q = [read()];
          let more = true;
          while (q.length > 0) {
            if (more && q.length < 2) q.push(read());
            const { r, b } = await q.shift()!;
            if (!r.ok) return done(new Error(`raw: rx failed after ${n} of ${size} bytes`));
            n += b.used;
            if (n >= size) return done();
            if (b.used < limit) more = false; // all that was pending was taken: the next EVENT drains again
          }
        } while (again && !finished);
      } catch (e) {
        done(e as Error);
      } finally {
        running = false;
      }
    };
    const sub = socket.events(ctrl).subscribe({
      next: (e) => {
        if (e.event === SocketEvent.EVENT) void drain();
      },
      error: (e) => done(e),
    });
    void drain();
  });
}

/**
 * 7: bytes/s module→host fetching `size` bytes from a local server (it sends them on the first
 * byte received and keeps the connection open) through one in-process simulated LuatOS module:
 * the raw facade path (`socket.create/config/linkup/connect`, then `socket.tx` and `socket.rx` on
 * every EVENT, the baseline), the stream layer's Duplex (`mod.createConnection`), and the SOCKS5
 * server with the module dialer (a Duplex per CONNECT).
 */
async function streamGoodput(size: number): Promise<{ raw: number; duplex: number; proxy: number }> {
  const payload = seededPayload(size, SEED);
  const src = createTcpServer((s) => {
    s.on('error', () => undefined);
    s.once('data', () => s.write(payload));
  });
  await new Promise<void>((r) => src.listen(0, '127.0.0.1', () => r()));
  const port = (src.address() as AddressInfo).port;
  const mod = await connect('sim:luatos', { timeoutMs: 60000, ...USB_SIM });
  const socks = new SocksServer({ dialer: moduleDialer(mod), port: 0 });
  try {
    /** One fetch through the raw facade calls; bytes/s. */
    const rawOnce = async (): Promise<number> => {
      const socket = mod.socket;
      const ctrl = await firstValueFrom(socket.create(null));
      if (!ctrl) throw new Error('raw: socket.create returned nil');
      try {
        await firstValueFrom(socket.config(ctrl, {}));
        await firstValueFrom(socket.linkup(ctrl));
        const online = firstValueFrom(socket.events(ctrl).pipe(filter((e) => e.event === SocketEvent.ON_LINE)));
        await firstValueFrom(socket.connect(ctrl, '127.0.0.1', port));
        if ((await online).param !== 0) throw new Error('raw: connect failed');
        const t0 = performance.now();
        const got = rawFacadeRead(socket, ctrl, size);
        await firstValueFrom(socket.tx(ctrl, Buffer.from('g')));
        await got;
        return size / ((performance.now() - t0) / 1000);
      } finally {
        await lastValueFrom(socket.close(ctrl), { defaultValue: undefined }).catch(() => undefined);
        await lastValueFrom(socket.release(ctrl), { defaultValue: undefined }).catch(() => undefined);
      }
    };
    /** One fetch through `mod.createConnection` (the Duplex); bytes/s. */
    const duplexOnce = async (): Promise<number> => {
      const s = mod.createConnection(port, '127.0.0.1');
      await new Promise<void>((resolve, reject) => s.once('connect', () => resolve()).once('error', reject));
      const t0 = performance.now();
      let n = 0;
      await new Promise<void>((resolve, reject) => {
        s.on('data', (d: Buffer) => {
          n += d.length;
          if (n >= size) resolve();
        });
        s.once('error', reject);
        s.once('end', () => reject(new Error(`duplex: ended after ${n} of ${size} bytes`)));
        s.write('g');
      });
      const rate = size / ((performance.now() - t0) / 1000);
      s.destroy();
      await new Promise((r) => s.once('close', r));
      return rate;
    };
    /** One fetch through the SOCKS5 server and the module dialer; bytes/s. */
    const proxyOnce = async (): Promise<number> => {
      const c = tcpConnect({ host: '127.0.0.1', port: sp });
      await new Promise<void>((r) => c.once('connect', () => r()));
      let buf = Buffer.alloc(0);
      let stage = 0;
      let m = 0;
      let t1 = 0;
      await new Promise<void>((resolve, reject) => {
        c.on('error', reject);
        c.on('close', () => reject(new Error(`proxy: closed after ${m} of ${size} bytes`)));
        c.on('data', (d: Buffer) => {
          if (stage === 2) {
            m += d.length;
            if (m >= size) resolve();
            return;
          }
          buf = Buffer.concat([buf, d]);
          if (stage === 0) {
            const r = parseMethodSelection(buf);
            if (!r) return;
            buf = buf.subarray(r.length);
            stage = 1;
            c.write(encodeRequest(Command.CONNECT, '127.0.0.1', port));
          }
          if (stage === 1) {
            const r = parseReply(buf);
            if (!r) return;
            if (r.value.reply !== 0) return reject(new Error(`proxy: REP ${r.value.reply}`));
            m = buf.length - r.length;
            stage = 2;
            t1 = performance.now();
            c.write('g');
          }
        });
        c.write(encodeGreeting([AuthMethod.NO_AUTHENTICATION_REQUIRED]));
      });
      const rate = size / ((performance.now() - t1) / 1000);
      c.removeAllListeners('close');
      c.destroy();
      return rate;
    };
    const { port: sp } = await socks.listen();
    // a warm-up fetch (simulator, JIT), then the three paths in turn twice; the best of each counts
    await rawOnce();
    let raw = 0;
    let duplex = 0;
    let proxy = 0;
    for (let round = 0; round < 2; round++) {
      raw = Math.max(raw, await rawOnce());
      duplex = Math.max(duplex, await duplexOnce());
      proxy = Math.max(proxy, await proxyOnce());
    }
    return { raw, duplex, proxy };
  } finally {
    await socks.close();
    await mod.close();
    await new Promise((r) => src.close(r));
  }
}

async function main(): Promise<void> {
  const echo = wants(1) ? await startEchoServers() : undefined;
  const sizes: Record<number, number> = QUICK ? { 115200: 16 * KiB, 921600: 64 * KiB } : { 115200: 64 * KiB, 921600: 256 * KiB };

  // 1 + 2. goodput through paced links
  const clean: Record<number, Goodput> = {};
  const cleanOneWay: Record<number, { up: number; down: number }> = {};
  for (const baud of [115200, 921600]) {
    if (!echo || (baud !== 115200 && !asked(1))) continue;
    const line = baud / 10;
    // each direction alone: part 1's rows, and at 115200 part 2's baseline too
    await section(`goodput @${baud}, each direction alone`, async () => {
      const g = await repeated(() => pacedOneWay(baud, sizes[baud]));
      cleanOneWay[baud] = g;
      row(`goodput host→module @${baud} (${sizes[baud] / KiB} KiB to a TCP sink)`, fmtRate(g.up), `line ${fmtRate(line)}`, r2(g.up / line, 0.9), meets(g.up / line >= 0.9, '≥ 0.90') + spread(g.runs, 'up', line));
      row(`goodput module→host @${baud} (${sizes[baud] / KiB} KiB from a TCP server)`, fmtRate(g.down), `line ${fmtRate(line)}`, r2(g.down / line, 0.9), meets(g.down / line >= 0.9, '≥ 0.90') + spread(g.runs, 'down', line));
    });
    await section(`goodput @${baud}`, async () => {
      const g = await repeated(() => pacedEcho(echo, baud, sizes[baud], 0));
      clean[baud] = g;
      row(`goodput host→module @${baud}, both directions at once (${sizes[baud] / KiB} KiB echo)`, fmtRate(g.up), `line ${fmtRate(line)}`, r2(g.up / line, 0.9), meets(g.up / line >= 0.9, '≥ 0.90') + spread(g.runs, 'up', line));
      row(`goodput module→host @${baud}, both directions at once`, fmtRate(g.down), `line ${fmtRate(line)}`, r2(g.down / line, 0.9), meets(g.down / line >= 0.9, '≥ 0.90') + spread(g.runs, 'down', line));
    });
  }
  // each direction alone at 1e-3 against the same transfer clean, then the echo against the clean echo
  if (echo && wants(2)) await section('goodput @115200 at 1e-3, each direction alone', async () => {
    const g = await repeated(() => pacedOneWay(115200, sizes[115200], 1e-3));
    const c = cleanOneWay[115200];
    if (!c) throw new Error('no clean run to compare with');
    const kib = sizes[115200] / KiB;
    row(`goodput host→module @115200, 1e-3 faults (${kib} KiB to a TCP sink)`, fmtRate(g.up), `clean ${fmtRate(c.up)}`, r2(g.up / c.up, 0.5), meets(g.up / c.up >= 0.5, '≥ 0.50') + spread(g.runs, 'up', c.up));
    row(`goodput module→host @115200, 1e-3 faults (${kib} KiB from a TCP server)`, fmtRate(g.down), `clean ${fmtRate(c.down)}`, r2(g.down / c.down, 0.5), meets(g.down / c.down >= 0.5, '≥ 0.50') + spread(g.runs, 'down', c.down));
  });
  if (echo && wants(2)) await section('goodput @115200 at 1e-3', async () => {
    const g = await repeated(() => pacedEcho(echo, 115200, sizes[115200], 1e-3));
    const c = clean[115200];
    if (!c) throw new Error('no clean run to compare with');
    row('goodput host→module @115200, both directions at once, 1e-3 faults', fmtRate(g.up), `clean ${fmtRate(c.up)}`, r2(g.up / c.up, 0.5), meets(g.up / c.up >= 0.5, '≥ 0.50') + spread(g.runs, 'up', c.up));
    row('goodput module→host @115200, both directions at once, 1e-3 faults', fmtRate(g.down), `clean ${fmtRate(c.down)}`, r2(g.down / c.down, 0.5), meets(g.down / c.down >= 0.5, '≥ 0.50') + spread(g.runs, 'down', c.down));
    row('handshake @115200, 1e-3 faults', `${(g.handshakeMs / 1000).toFixed(2)} s`, `clean ${(c.handshakeMs / 1000).toFixed(2)} s`, `${r2(g.handshakeMs / c.handshakeMs)}x`, meets(g.handshakeMs <= 2000, '≤ 2 s'));
  });

  // 3. minimal call: bytes and frames (in-process sim on its USB port, no pacing), latency at 115200
  const PHYS_MIN = 6; // (id + fn + framing) + (id + value + framing)
  if (wants(3)) await section('minimal call bytes', async () => {
    const mod = await connect('sim:luatos', USB_SIM);
    try {
      const sim = mod.simulator!;
      await mod.rpc.call('socket.sntp_port');
      await sleep(50); // let trailing acks go
      const h0 = mod.rpc.stats;
      const w0 = { ...sim.wire.stats };
      const [port] = await mod.rpc.call('socket.sntp_port');
      await sleep(50);
      const h1 = mod.rpc.stats;
      const w1 = sim.wire.stats;
      if (port !== 123) throw new Error(`sntp_port answered ${String(port)}`);
      const out = h1.bytesOut - h0.bytesOut;
      const inn = w1.txBytes - w0.txBytes;
      const seqOut = h1.framesOut - h0.framesOut;
      const ackOut = h1.acksOut - h0.acksOut + (h1.polls - h0.polls);
      const seqIn = h1.framesIn - h0.framesIn;
      const ackIn = h1.acksIn - h0.acksIn;
      row(
        'minimal call bytes (socket.sntp_port → 123)',
        `${out} B →, ${inn} B ← = ${out + inn} B`,
        `physical minimum ${PHYS_MIN} B`,
        `${r2((out + inn) / PHYS_MIN)}x`,
        `frames → ${seqOut} seq + ${ackOut} ack, ← ${seqIn} seq + ${ackIn} ack`,
      );
    } finally {
      await mod.close();
    }
  });
  if (wants(3)) await section('minimal call latency @115200', async () => {
    const s = await openFaultySim('luatos', { pace: { baud: 115200 } });
    try {
      await s.mod.rpc.call('socket.sntp_port');
      const n = QUICK ? 20 : 100;
      const b0 = s.mod.rpc.stats;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await s.mod.rpc.call('socket.sntp_port');
      const ms = (performance.now() - t0) / n;
      const b1 = s.mod.rpc.stats;
      const perCall = (b1.bytesOut - b0.bytesOut + b1.bytesIn - b0.bytesIn) / n;
      const minLine = lineTimeMs(PHYS_MIN, 115200);
      row(
        'minimal call latency @115200 (sequential)',
        `${ms.toFixed(2)} ms`,
        `line time of ${PHYS_MIN} B ${minLine.toFixed(2)} ms`,
        `${r2(ms / minLine)}x`,
        `line time of the ${perCall.toFixed(0)} B sent per call: ${lineTimeMs(perCall, 115200).toFixed(2)} ms (${r2(ms / lineTimeMs(perCall, 115200))}x)`,
      );
    } finally {
      await s.close();
    }
  });

  // pipelined small calls on a paced line: what bundles (protocol.md section 2) save on the wire
  if (wants(3)) await section('pipelined calls @115200', async () => {
    const s = await openFaultySim('luatos', { pace: { baud: 115200 }, rpc: { timeoutMs: 60000 } });
    try {
      const call = () => s.mod.rpc.call('socket.sntp_port');
      await call();
      const n = QUICK ? 200 : 1000;
      const b0 = s.mod.rpc.stats;
      const rate = await callRate(call, n, 100);
      const b1 = s.mod.rpc.stats;
      const out = (b1.bytesOut - b0.bytesOut) / n;
      const inn = (b1.bytesIn - b0.bytesIn) / n;
      const bundled = b1.bundledOut - b0.bundledOut;
      const frames = b1.framesOut - b0.framesOut;
      // the line limit: each direction carries half the physical minimum per call
      const limit = 115200 / 10 / (PHYS_MIN / 2);
      row(
        'pipelined calls @115200 (100 in flight)',
        `${fmtN(rate)}/s`,
        `line limit at ${PHYS_MIN / 2} B a way ${fmtN(limit)}/s`,
        r2(rate / limit),
        `${out.toFixed(1)} B → + ${inn.toFixed(1)} B ← a call; ${bundled} of ${n} calls in ${frames} frames (bundles)`,
      );
    } finally {
      await s.close();
    }
  });

  // 5 first: host-only baseline (stub agent), and the codec alone
  let hostPipelined = NaN;
  let hostSequential = NaN;
  let cpuP = NaN;
  let cpuS = NaN;
  if (wants(5)) await section('host-only calls/s', async () => {
    const [h, d] = createMemoryPair('stub');
    const stub = startStubAgent(d, { fns: { 'socket.sntp_port': () => [123] } });
    const rpc = await RpcClient.open(h, { timeoutMs: 60000 });
    try {
      const call = () => rpc.call('socket.sntp_port');
      await callRate(call, 2000, 500); // warm up
      hostPipelined = await callRate(call, QUICK ? 20000 : 100000, 1000);
      cpuP = lastCpuUs;
      hostSequential = await callRate(call, QUICK ? 2000 : 10000, 1);
      cpuS = lastCpuUs;
    } finally {
      stub.stop();
      await rpc.close();
    }
    const codec = codecRate(QUICK ? 20000 : 100000);
    row('host-only calls/s, pipelined (stub agent)', `${fmtN(hostPipelined)}/s`, `codec alone ${fmtN(codec)}/s`, r2(hostPipelined / codec), `${meets(hostPipelined >= 100000, '≥ 100,000/s')}; ${cpuNote(cpuP)}`);
    row('host-only calls/s, sequential (stub agent)', `${fmtN(hostSequential)}/s`, `codec alone ${fmtN(codec)}/s`, r2(hostSequential / codec), cpuNote(cpuS));
  });

  // 4. calls/s to the in-process simulated module, on its USB port (no line to wait for)
  if (wants(4)) await section('calls/s to the simulated module', async () => {
    const mod = await connect('sim:luatos', { timeoutMs: 60000, ...USB_SIM });
    try {
      const call = () => mod.rpc.call('socket.sntp_port');
      await callRate(call, 1000, 200); // warm up
      const pipelined = await callRate(call, QUICK ? 5000 : 40000, 1000);
      const simP = lastCpuUs;
      const sequential = await callRate(call, QUICK ? 1000 : 5000, 1);
      const simS = lastCpuUs;
      row('calls/s pipelined (in-process LuatOS sim, USB port)', `${fmtN(pipelined)}/s`, `host-only ${fmtN(hostPipelined)}/s`, r2(pipelined / hostPipelined), `${meets(pipelined >= 20000, '≥ 20,000/s')}; ${cpuNote(simP)}`);
      row('calls/s sequential (in-process LuatOS sim, USB port)', `${fmtN(sequential)}/s`, `host-only ${fmtN(hostSequential)}/s`, r2(sequential / hostSequential), `${meets(sequential >= 5000, '≥ 5,000/s')}; ${cpuNote(simS)}`);
      // what bounds the two rates above: the agent's Lua work per call (docs/protocol-performance.md)
      const w = await agentWork(mod, call, QUICK ? 200 : 1000);
      row('agent work per sequential call (Lua debug hooks in the sim)', `${w.calls.toFixed(1)} function calls`, `${w.instructions.toFixed(0)} VM instructions`, '', 'info');
      const wp = await agentWork(mod, call, QUICK ? 2000 : 4000, 1000);
      row('agent work per pipelined call (1,000 in flight, in bundles)', `${wp.calls.toFixed(1)} function calls`, `${wp.instructions.toFixed(0)} VM instructions`, '', 'info');
    } finally {
      await mod.close();
    }
  });

  // 6. NodeMCU agent Lua heap (issue 8): i386 lua5.1, the agent as luac -s bytecode, the
  // firmware's C modules stubbed outside the count (scripts/heap-nodemcu.ts)
  if (wants(6)) await section('NodeMCU agent heap', async () => {
    const { measureNodemcuHeap } = await import('./heap-nodemcu.js');
    const FREE = 40; // KB free on a default-build ESP8266 after boot (issue 8: ~40-44 KB)
    let h;
    try {
      h = measureNodemcuHeap();
    } catch (e) {
      if (!/not available/.test((e as Error).message)) throw e;
      row('NodeMCU agent heap, idle', 'n/a', 'i386 lua5.1 not available (node dist/scripts/heap-nodemcu.js --fetch)', '', '≤ 16 KB');
      return;
    }
    row('NodeMCU agent heap, idle (i386 lua5.1, luac -s)', `${h.idleKB.toFixed(1)} KB`, `free after boot ~${FREE} KB`, r2(h.idleKB / FREE), meets(h.idleKB <= 16, '≤ 16 KB'));
    row('NodeMCU agent heap, peak rx+tx 1460 B', `${h.peakKB.toFixed(1)} KB`, `free after boot ~${FREE} KB`, r2(h.peakKB / FREE), meets(h.peakKB <= 24 && h.sentBytes === 1460 && h.forwardedBytes === 1460, '≤ 24 KB'));
    // the same run for a firmware with LFS (the agent's files there: tether agent --lfs), an
    // estimate: less the prototypes and constant strings alive, which LFS keeps in flash
    const l = measureNodemcuHeap({ lfs: true });
    const ok = l.sentBytes === 1460 && l.forwardedBytes === 1460;
    row('NodeMCU agent heap in LFS, idle (estimate)', `${l.idleKB.toFixed(1)} KB`, `free after boot ~${FREE} KB`, r2(l.idleKB / FREE), `info: ≤ 16 KB ${l.idleKB <= 16 ? 'with' : 'NOT even with'} LFS`);
    row('NodeMCU agent heap in LFS, peak rx+tx 1460 B (estimate)', `${l.peakKB.toFixed(1)} KB`, `free after boot ~${FREE} KB`, r2(l.peakKB / FREE), `info: ≤ 24 KB ${l.peakKB <= 24 && ok ? 'with' : 'NOT even with'} LFS`);
  });

  // 7. goodput through the Duplex (src/streams) and tether proxy (SOCKS5) against the raw facade path
  if (wants(7)) await streamsSection();

  // 8. agent upload: tether flash against NodeMCU-Tool's method, the same files, the same simulated module
  if (wants(8)) await flashSection();

  await echo?.close();
  printRows();
}

/** 7. goodput through the Duplex and the SOCKS5 proxy against the raw facade path, in the same run. */
async function streamsSection(): Promise<void> {
  const size = QUICK ? 256 * KiB : 1024 * KiB;
  await section('goodput through the Duplex and the SOCKS5 proxy', async () => {
    const g = await streamGoodput(size);
    row(`goodput module→host through the Duplex (mod.createConnection, ${size / KiB} KiB, LuatOS sim, USB port)`, fmtRate(g.duplex), `raw facade ${fmtRate(g.raw)}`, r2(g.duplex / g.raw), 'info');
    row(`goodput module→host through tether proxy (SOCKS5 CONNECT, ${size / KiB} KiB, LuatOS sim, USB port)`, fmtRate(g.proxy), `raw facade ${fmtRate(g.raw)}`, r2(g.proxy / g.raw), 'info');
  });
}

/**
 * 8. `tether flash` (raw blocks, upload baud 460800, verified by the module) against NodeMCU-Tool's
 * method (scripts/nodemcu-tool-upload.ts: hex lines, stop-and-wait, no verification), both
 * uploading the NodeMCU agent's files to a simulated ESP8266 at its prompt, its UART paced at
 * 115200 baud (the rate both start at); best of 2 runs each.
 */
async function flashSection(): Promise<void> {
  await section('agent upload', async () => {
    const { SimulatedModule } = await import('../src/sim/module.js');
    const { nodemcuFamily, nodemcuAgentSource } = await import('../src/sim/nodemcu/family.js');
    const { flashNodemcu, minifyLua } = await import('../src/cli/commands/flash-repl.js');
    const { readLazyAgentFiles } = await import('../src/util/repo-root.js');
    const { nodemcuToolUpload } = await import('./nodemcu-tool-upload.js');
    const files: Array<[string, Buffer]> = [['tether.lua', Buffer.from(minifyLua(nodemcuAgentSource()), 'latin1')]];
    for (const [n, text] of readLazyAgentFiles('nodemcu')) files.push([n, Buffer.from(minifyLua(text), 'latin1')]);
    const total = files.reduce((a, [, b]) => a + b.length, 0);
    const atPrompt = async () => {
      const fam = nodemcuFamily({ boot: 'repl' });
      const sim = await SimulatedModule.start(fam, { baud: 115200 });
      return { fam, sim, t: sim.connect() };
    };
    const best = async (run: () => Promise<number>) => Math.min(await run(), await run());
    const tool = await best(async () => {
      const { fam, sim, t } = await atPrompt();
      try {
        let ms = 0;
        for (const [n, b] of files) ms += await nodemcuToolUpload(t, n, b);
        for (const [n, b] of files) if (!fam.files.get(n)?.equals(b)) throw new Error(`NodeMCU-Tool method: ${n} differs on the module`);
        return ms;
      } finally {
        await sim.stop();
      }
    });
    const ours = async (baudRate: number) =>
      best(async () => {
        const { fam, sim, t } = await atPrompt();
        try {
          const r = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), start: false, force: true, baudRate, currentBaud: 115200 });
          for (const [n, b] of files) if (!fam.files.get(n)?.equals(b)) throw new Error(`tether flash: ${n} differs on the module`);
          if (baudRate && r.baud !== baudRate) throw new Error(`tether flash fell back to ${r.baud} baud`);
          return r.ms;
        } finally {
          await sim.stop();
        }
      });
    const fast = await ours(460800);
    const same = await ours(0);
    const base = `NodeMCU-Tool method ${(tool / 1000).toFixed(2)} s`;
    row(`agent upload, ${files.length} files ${total} B, 115200 start (tether flash, 460800 for the upload)`, `${(fast / 1000).toFixed(2)} s`, base, `${r2(tool / fast)}x faster`, meets(tool / fast >= 3, '≥ 3x faster'));
    row('agent upload, no baud switch (tether flash --upload-baud 0)', `${(same / 1000).toFixed(2)} s`, base, `${r2(tool / same)}x faster`, 'info: raw blocks alone');
  });
}

function printRows(): void {
  const cols: Array<keyof Row> = ['measure', 'value', 'baseline', 'ratio', 'goal'];
  const head: Row = { measure: 'measure', value: 'value', baseline: 'baseline (this run)', ratio: 'ratio', goal: 'goal / note' };
  const w = Object.fromEntries(cols.map((c) => [c, Math.max(head[c].length, ...rows.map((r) => r[c].length))])) as Record<keyof Row, number>;
  const fmt = (r: Row) => cols.map((c) => (c === 'goal' ? r[c] : r[c].padEnd(w[c]))).join('  ');
  console.log(`tether bench, protocol v2${QUICK ? ' (--quick)' : ''}: ratios against baselines measured in this run; nothing is asserted`);
  console.log(fmt(head));
  console.log(cols.map((c) => '-'.repeat(c === 'goal' ? head.goal.length : w[c])).join('  '));
  for (const r of rows) console.log(fmt(r));
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});

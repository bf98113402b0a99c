import type { CommandModule } from 'yargs';
import type { Subscription } from 'rxjs';
import type { CliContext } from './index.js';
import { ExitCode, reportError, type CommonArgs } from '../output.js';
import { numberOption, portArg } from '../validate.js';
import { Handle, Float, toPlain, type WireValue } from '../../codec/values.js';
import { InvalidArgumentError } from '../../errors.js';
import type { AgentEvent, AgentPublish, RpcClient } from '../../rpc/client.js';
import { eventName } from '../../api/luatos/constants.js';

interface CallArgs extends CommonArgs {
  port: string;
  fn: string;
  args: Array<string | number>;
  follow?: number;
}

/** Longest `--follow` (seconds): one day. */
export const MAX_FOLLOW_SECONDS = 86400;

/** `--follow SECONDS`: a positive number of seconds, at most {@link MAX_FOLLOW_SECONDS}. */
export function followSeconds(raw: unknown): number {
  const v = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  const s = typeof v === 'number' ? String(v) : typeof v === 'string' ? v.trim() : '';
  const n = /^[+]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(s) ? Number(s) : NaN;
  if (!Number.isFinite(n) || n <= 0 || n > MAX_FOLLOW_SECONDS) throw new Error(`--follow must be a positive number of seconds (at most ${MAX_FOLLOW_SECONDS}), got ${JSON.stringify(v === undefined ? '' : String(v))}`);
  return n;
}

/**
 * One thing the agent sent on its own, as `call --follow` and `tether shell` print it.
 * - `event`: an `E` message: `handle` (socket / object / request id), `name` (LuatOS: the event
 *   constant's name, e.g. `ON_LINE`; NodeMCU: the callback, e.g. `dns`, `recv`; Luat: the message,
 *   e.g. `CONN_CNF`; null when the first value names nothing), `values` (the rest, plain JSON).
 * - `topic`: a forwarded `sys.publish` (`P` message): `topic`, `values`.
 * - `reset`: the module restarted (`epoch` is its new boot epoch).
 */
export type FollowItem =
  | { type: 'event'; handle: number; name: string | null; values: unknown[] }
  | { type: 'topic'; topic: string; values: unknown[] }
  | { type: 'reset'; previousEpoch: number; epoch: number };

/** Decode an agent event for printing (see {@link FollowItem}). */
export function eventItem(e: AgentEvent, family: string): FollowItem {
  const [first, ...rest] = e.values;
  if (family === 'luatos' && typeof first === 'number') {
    const name = eventName(first);
    if (name) return { type: 'event', handle: e.handle, name, values: rest.map(toPlain) };
  }
  const name = first instanceof Uint8Array || typeof first === 'string' ? String(toPlain(first)) : null;
  return { type: 'event', handle: e.handle, name, values: (name === null ? e.values : rest).map(toPlain) };
}

/** Decode a forwarded topic for printing. */
export function topicItem(p: AgentPublish): FollowItem {
  return { type: 'topic', topic: p.topic, values: p.values.map(toPlain) };
}

/** One line of text (no newline): `event h3 ON_LINE 0`, `topic NTP_UPDATE`, `reset epoch 1 -> 2`. */
export function itemText(i: FollowItem): string {
  const vals = (v: unknown[]) => v.map((x) => '\t' + JSON.stringify(x)).join('');
  if (i.type === 'event') return `event h${i.handle}${i.name === null ? '' : ` ${i.name}`}${vals(i.values)}`;
  if (i.type === 'topic') return `topic ${i.topic}${vals(i.values)}`;
  return `reset epoch ${i.previousEpoch} -> ${i.epoch}`;
}

/**
 * Print every event, topic and reset of `rpc` as it arrives (text lines, or one JSON object a line
 * with `json`) until the returned subscription is unsubscribed.
 */
export function followModule(rpc: RpcClient, family: string, json: boolean, write: (line: string) => void): Subscription {
  const out = (i: FollowItem) => write(json ? JSON.stringify(i) : itemText(i));
  const sub = rpc.events.subscribe((e) => out(eventItem(e, family)));
  sub.add(rpc.publishes.subscribe((p) => out(topicItem(p))));
  sub.add(rpc.resets.subscribe((r) => out({ type: 'reset', previousEpoch: r.previousEpoch, epoch: r.epoch })));
  return sub;
}

/**
 * Wait `seconds`, or less when the process gets SIGINT (Ctrl-C) or the link closes.
 * Resolves with `interrupted` true on SIGINT.
 */
function waitFollow(rpc: RpcClient, seconds: number): Promise<{ interrupted: boolean }> {
  return new Promise((resolve) => {
    let closedSub: Subscription | undefined;
    const done = (interrupted: boolean) => {
      clearTimeout(timer);
      process.off('SIGINT', onInt);
      closedSub?.unsubscribe();
      resolve({ interrupted });
    };
    const onInt = () => done(true);
    const timer = setTimeout(() => done(false), seconds * 1000);
    process.on('SIGINT', onInt);
    closedSub = rpc.events.subscribe({ complete: () => done(false) });
  });
}

/** socket.* functions whose first argument is a socket (a plain integer there means a handle). */
const CTRL_FIRST = new Set(['debug', 'config', 'linkup', 'connect', 'discon', 'close', 'tx', 'rx', 'read', 'wait', 'listen', 'accept', 'state', 'release', 'remoteIP']);

/**
 * Parse one command-line argument into a Lua value:
 * nil, true, false, integers (also 0x..), floats (with a dot), h<N> handles,
 * "quoted" or 'quoted' strings, anything else as a string.
 */
export function parseArg(raw: string | number): WireValue {
  const s = String(raw);
  if (s === 'nil') return null;
  if (s === 'true') return true;
  if (s === 'false') return false;
  if (/^-?\d+$/.test(s)) return Number(s);
  if (/^0x[0-9a-f]+$/i.test(s)) return parseInt(s, 16);
  if (/^-?\d*\.\d+(e-?\d+)?$/i.test(s)) return new Float(Number(s));
  if (/^h\d+$/.test(s)) return new Handle(Number(s.slice(1)));
  if (/^(".*"|'.*')$/s.test(s)) return s.slice(1, -1);
  return s;
}

/**
 * The wire arguments of `fn` from command-line words ({@link parseArg}); a plain integer first
 * argument of a function that takes a socket or net object first (`socket.state 1`,
 * `tcpsocket.send 2 hi`, `agent.release 3`) becomes that handle.
 */
export function callArgs(fn: string, words: ReadonlyArray<string | number>): WireValue[] {
  const args = words.map(parseArg);
  const m = /^socket\.(\w+)$/.exec(fn);
  if (m && CTRL_FIRST.has(m[1]) && typeof args[0] === 'number') args[0] = new Handle(args[0]);
  // NodeMCU: every method of a net object, and agent.release, take the object's handle first
  if (/^(tcpsocket|tcpserver|udpsocket)\.\w+$|^agent\.release$/.test(fn) && typeof args[0] === 'number') args[0] = new Handle(args[0]);
  return args;
}

/** One line of call output: the values as JSON, tab separated, or `(no values)`. */
export function valuesText(values: WireValue[]): string {
  return values.length ? values.map((v) => JSON.stringify(toPlain(v))).join('\t') : '(no values)';
}

/**
 * `tether call --port URL socket.state 1`: one raw call, values printed in order. With
 * `--follow SECONDS`, then every event, topic and reset the agent sends, for that long
 * (`--json`: one JSON object a line, see {@link FollowItem}).
 */
export const callCommand = (ctx: CliContext): CommandModule<object, CallArgs> => ({
  command: 'call <fn> [args..]',
  describe: 'Call one agent function with raw Lua arguments and print every return value',
  builder: (y) =>
    y
      .positional('fn', { type: 'string', describe: 'Function name as on the module, e.g. socket.state, socket.adapter, mobile.csq' })
      .positional('args', { type: 'string', array: true, describe: 'Arguments: nil true false 12 0x1F 1.5 h1 "text"; for socket.* functions taking a socket, a plain number is its handle' })
      .option('port', { alias: 'p', type: 'string', demandOption: true, requiresArg: true, coerce: portArg, describe: 'Serial device, tcp://HOST:PORT, or sim' })
      .option('follow', numberOption(`After the call, print the agent's events, topics and resets as they arrive, for SECONDS (0 < SECONDS <= ${MAX_FOLLOW_SECONDS}; Ctrl-C stops early)`, followSeconds))
      .example('$0 call --port /dev/ttyUSB0 socket.adapter', 'is a network adapter ready?')
      .example('$0 call --port sim:nodemcu net.dns.resolve localhost --follow 2', 'the request id, then the "dns" callback with the address')
      .example('$0 call --port tcp://127.0.0.1:7000 socket.state 1', 'state of socket handle 1') as never,
  handler: async (argv) => {
    const { openModule } = await import('./open.js');
    let mod;
    try {
      const args = callArgs(argv.fn, argv.args ?? []);
      mod = await openModule(argv.port, argv);
      if (!mod.hello.caps.includes(argv.fn)) {
        throw new InvalidArgumentError(`${argv.fn} is not a function of this agent; it has: ${mod.hello.caps.join(' ')}`);
      }
      // subscribed before the call: an event can arrive in the same chunk as the reply
      const buffered: string[] = [];
      const print = (l: string) => void process.stdout.write(l + '\n');
      let sink = (l: string) => void buffered.push(l);
      const following = argv.follow === undefined ? undefined : followModule(mod.rpc, mod.family, !!argv.json, (l) => sink(l));
      let values;
      try {
        values = await mod.rpc.call(argv.fn, args, { timeoutMs: argv.timeout });
      } catch (e) {
        following?.unsubscribe();
        throw e;
      }
      if (argv.json) process.stdout.write(JSON.stringify({ fn: argv.fn, count: values.length, values: values.map(toPlain) }) + '\n');
      else process.stdout.write(valuesText(values) + '\n');
      if (following && argv.follow !== undefined) {
        // what arrived before the reply was printed, then the rest as it comes
        for (const l of buffered.splice(0)) print(l);
        sink = print;
        const { interrupted } = await waitFollow(mod.rpc, argv.follow);
        following.unsubscribe();
        if (interrupted) ctx.setExit(ExitCode.INTERRUPTED);
      }
    } catch (e) {
      ctx.setExit(reportError(e, !!argv.json));
    } finally {
      await mod?.close();
    }
  },
});

import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import { reportError, type CommonArgs } from '../output.js';
import { portArg } from '../validate.js';
import { Handle, Float, toPlain, type WireValue } from '../../codec/values.js';
import { InvalidArgumentError } from '../../errors.js';

interface CallArgs extends CommonArgs {
  port: string;
  fn: string;
  args: Array<string | number>;
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

/** `tether call --port URL socket.state 1`: one raw call, values printed in order. */
export const callCommand = (ctx: CliContext): CommandModule<object, CallArgs> => ({
  command: 'call <fn> [args..]',
  describe: 'Call one agent function with raw Lua arguments and print every return value',
  builder: (y) =>
    y
      .positional('fn', { type: 'string', describe: 'Function name as on the module, e.g. socket.state, socket.adapter, mobile.csq' })
      .positional('args', { type: 'string', array: true, describe: 'Arguments: nil true false 12 0x1F 1.5 h1 "text"; for socket.* functions taking a socket, a plain number is its handle' })
      .option('port', { alias: 'p', type: 'string', demandOption: true, requiresArg: true, coerce: portArg, describe: 'Serial device, tcp://HOST:PORT, or sim' })
      .example('$0 call --port /dev/ttyUSB0 socket.adapter', 'is a network adapter ready?')
      .example('$0 call --port tcp://127.0.0.1:7000 socket.state 1', 'state of socket handle 1') as never,
  handler: async (argv) => {
    const { openModule } = await import('./open.js');
    let mod;
    try {
      const args = (argv.args ?? []).map(parseArg);
      const m = /^socket\.(\w+)$/.exec(argv.fn);
      if (m && CTRL_FIRST.has(m[1]) && typeof args[0] === 'number') args[0] = new Handle(args[0]);
      // NodeMCU: every method of a net object, and agent.release, take the object's handle first
      if (/^(tcpsocket|tcpserver|udpsocket)\.\w+$|^agent\.release$/.test(argv.fn) && typeof args[0] === 'number') args[0] = new Handle(args[0]);
      mod = await openModule(argv.port, argv);
      if (!mod.hello.caps.includes(argv.fn)) {
        throw new InvalidArgumentError(`${argv.fn} is not a function of this agent; it has: ${mod.hello.caps.join(' ')}`);
      }
      const values = await mod.rpc.call(argv.fn, args, { timeoutMs: argv.timeout });
      if (argv.json) process.stdout.write(JSON.stringify({ fn: argv.fn, count: values.length, values: values.map(toPlain) }) + '\n');
      else process.stdout.write((values.length ? values.map((v) => JSON.stringify(toPlain(v))).join('\t') : '(no values)') + '\n');
    } catch (e) {
      ctx.setExit(reportError(e, !!argv.json));
    } finally {
      await mod?.close();
    }
  },
});

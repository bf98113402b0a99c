/**
 * `tether shell --port P`: an interactive session on one module connection, like mpremote's
 * REPL: many calls on the same connection (so handles created by one call are usable by the
 * next), line history, Tab completion of the agent's functions, and the agent's events, topics
 * and resets printed as they arrive. Built on node:readline.
 */
import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import { ExitCode, errorJson, reportError, type CommonArgs } from '../output.js';
import { portArg } from '../validate.js';
import { InvalidArgumentError, isTetherError } from '../../errors.js';

interface ShellArgs extends CommonArgs {
  port: string;
  history?: string;
  'force-terminal'?: boolean;
}

/** Words the shell itself understands (not agent functions). */
export const SHELL_COMMANDS = ['.help', '.caps', '.info', '.exit'] as const;

const HELP = `Type an agent function and its arguments, as with \`tether call\`:
  socket.create            net.dns.resolve localhost      socket.state 1
Arguments: nil true false 12 0x1F 1.5 h1 "text with spaces"; for functions that take a
socket or net object first, a plain number there is its handle.
Events, topics and resets are printed as they arrive (event h<handle> <name> <values>).
  .caps [PREFIX]   the agent's functions      .info   the module (family, agent, limits)
  .help            this text                  .exit   leave (or Ctrl-D; Ctrl-C twice)
Tab completes function names; Up/Down walk the history.`;

/**
 * Split a shell line into words: whitespace separates, `"..."` and `'...'` keep spaces and keep
 * their quotes (so `parseArg` reads them as strings).
 * @throws InvalidArgumentError for an unterminated quote.
 */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i])) i++;
    if (i >= line.length) break;
    let w = '';
    while (i < line.length && !/\s/.test(line[i])) {
      const q = line[i];
      if (q === '"' || q === "'") {
        const end = line.indexOf(q, i + 1);
        if (end < 0) throw new InvalidArgumentError(`unterminated ${q} quote`);
        w += line.slice(i, end + 1);
        i = end + 1;
      } else w += line[i++];
    }
    words.push(w);
  }
  return words;
}

/**
 * The readline completer of the shell: the first word completes among the agent's functions
 * (`caps`) and the shell's own commands; later words are not completed.
 */
export function shellCompleter(caps: readonly string[]): (line: string) => [string[], string] {
  const names = [...SHELL_COMMANDS, ...[...caps].sort()];
  return (line) => {
    if (/^\s*\S+\s/.test(line)) return [[], line];
    const word = line.trimStart();
    const hits = names.filter((n) => n.startsWith(word));
    return [hits, word];
  };
}

/** `tether shell --port P`. */
export const shellCommand = (ctx: CliContext): CommandModule<object, ShellArgs> => ({
  command: 'shell',
  describe: 'Interactive session on one module connection: calls, history, Tab completion, events as they arrive',
  builder: (y) =>
    y
      .option('port', { alias: 'p', type: 'string', demandOption: true, requiresArg: true, coerce: portArg, describe: 'Serial device, tcp://HOST:PORT, or sim' })
      .option('history', { type: 'string', requiresArg: true, describe: 'Keep the line history in this file (read at start, appended to) [default: this session only]' })
      .option('force-terminal', { type: 'boolean', hidden: true, describe: 'Line editing even when stdin is not a terminal (tests)' })
      .example('$0 shell --port sim', 'then: socket.create, socket.state 1, .exit')
      .example('printf "net.dns.resolve localhost\\n" | $0 shell --port sim:nodemcu', 'a script on stdin: one call a line') as never,
  handler: async (argv) => {
    ctx.setExit(await runShell(argv));
  },
});

async function runShell(argv: ShellArgs): Promise<number> {
  const { openModule } = await import('./open.js');
  const { createInterface } = await import('node:readline');
  const { appendFileSync, readFileSync } = await import('node:fs');
  const { callArgs, followModule, valuesText } = await import('./call.js');
  const { toPlain } = await import('../../codec/values.js');
  const json = !!argv.json;
  const terminal = !!argv['force-terminal'] || (process.stdin.isTTY === true && process.stdout.isTTY === true);

  let history: string[] = [];
  if (argv.history !== undefined) {
    try {
      history = readFileSync(argv.history, 'utf8').split('\n').filter((l) => l.trim() !== '').reverse().slice(0, 1000);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return reportError(new InvalidArgumentError(`--history ${argv.history}: ${(e as Error).message}`), json);
    }
  }

  let mod;
  try {
    mod = await openModule(argv.port, argv);
  } catch (e) {
    return reportError(e, json);
  }
  const rpc = mod.rpc;
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal, completer: shellCompleter(rpc.hello.caps), history, historySize: 1000, prompt: `${mod.family}> ` });
  /** Print a line without breaking the prompt the user is typing on. */
  const print = (line: string) => {
    if (terminal) {
      process.stdout.write('\r\x1b[K' + line + '\n');
      if (!busy) rl.prompt(true);
    } else process.stdout.write(line + '\n');
  };
  let busy = false;
  let inFlight: AbortController | undefined;
  let exitCode: number = ExitCode.OK;
  let interrupts = 0;

  const h = rpc.hello;
  process.stderr.write(`tether shell: ${h.family} agent ${h.agent} (protocol ${h.proto}) on ${argv.port}, ${h.caps.length} functions; .help for help, .exit or Ctrl-D to leave\n`);
  const following = followModule(rpc, mod.family, json, print);
  const linkClosed = rpc.events.subscribe({
    complete: () => {
      print(json ? JSON.stringify({ type: 'closed' }) : 'the link to the module closed');
      exitCode = ExitCode.ERROR;
      rl.close();
    },
  });
  rl.on('SIGINT', () => {
    if (inFlight) {
      inFlight.abort();
      return;
    }
    if (++interrupts >= 2) {
      rl.close();
      return;
    }
    process.stdout.write('\n(To exit, press Ctrl-C again, Ctrl-D or type .exit)\n');
    rl.prompt();
  });

  const showError = (e: unknown) => print(json ? JSON.stringify(errorJson(e)) : `! ${e instanceof Error ? e.message : String(e)}${isTetherError(e) ? ` [${e.code}]` : ''}`);

  async function run(line: string): Promise<boolean> {
    const words = splitWords(line);
    if (words.length === 0) return true;
    const [fn, ...rest] = words;
    if (fn === '.exit') return false;
    if (fn === '.help') {
      print(HELP);
      return true;
    }
    if (fn === '.caps') {
      const caps = rpc.hello.caps.filter((c) => c.startsWith(rest[0] ?? '')).sort();
      print(json ? JSON.stringify({ caps }) : caps.join(' '));
      return true;
    }
    if (fn === '.info') {
      const x = rpc.hello;
      const info = { family: x.family, firmware: x.fw, bsp: x.bsp, agent: x.agent, protocol: x.proto, epoch: x.epoch, limits: { maxFrame: x.maxframe, window: x.window, maxMessage: x.maxmsg } };
      print(json ? JSON.stringify(info) : Object.entries(info).map(([k, v]) => `${k.padEnd(9)} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join('\n'));
      return true;
    }
    if (fn.startsWith('.')) throw new InvalidArgumentError(`unknown shell command ${fn} (${SHELL_COMMANDS.join(' ')})`);
    if (!rpc.hello.caps.includes(fn)) {
      const common = (c: string) => {
        let i = 0;
        while (i < c.length && c[i] === fn[i]) i++;
        return i;
      };
      const near = rpc.hello.caps
        .filter((c) => common(c) > fn.indexOf('.') + 1)
        .sort((a, b) => common(b) - common(a))
        .slice(0, 3);
      throw new InvalidArgumentError(`${fn} is not a function of this agent${near.length ? `; did you mean one of: ${near.join(' ')}` : ' (.caps lists them)'}`);
    }
    const args = callArgs(fn, rest);
    inFlight = new AbortController();
    try {
      const values = await rpc.call(fn, args, { timeoutMs: argv.timeout, signal: inFlight.signal });
      print(json ? JSON.stringify({ fn, count: values.length, values: values.map(toPlain) }) : valuesText(values));
    } finally {
      inFlight = undefined;
    }
    return true;
  }

  try {
    if (terminal) rl.prompt();
    for await (const line of rl) {
      interrupts = 0;
      if (argv.history !== undefined && line.trim() !== '') {
        try {
          appendFileSync(argv.history, line + '\n');
        } catch {
          // history is a convenience: a full disk does not end the session
        }
      }
      busy = true;
      let more = true;
      try {
        more = await run(line);
      } catch (e) {
        showError(e);
      }
      busy = false;
      if (!more) break;
      if (terminal) rl.prompt();
    }
  } finally {
    rl.close();
    following.unsubscribe();
    linkClosed.unsubscribe();
    await mod.close();
  }
  return exitCode;
}

/**
 * The `tether` command line: `tetherCli(argv)` builds the yargs parser and runs
 * one command, resolving with the process exit code (it never calls process.exit
 * itself, so tests can drive it).
 *
 * Usage errors (unknown command or option, bad value, missing option) never run the
 * command: the yargs `.fail()` handler throws a {@link UsageError}, which stops yargs
 * before the handler, and tetherCli prints the relevant usage and the one error on
 * stderr and resolves with exit code 2.
 */
import yargs, { type Argv } from 'yargs';
import { Parser } from 'yargs/helpers';
import { makeCommands, type CliContext } from './commands/index.js';
import { ExitCode } from './output.js';
import { MAX_BAUD, intInRange, numberOption, positiveMs } from './validate.js';

/** A command-line usage error: `message` is the one error, `usage` the help of the command concerned. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

const EPILOGUE = 'Exit codes: 0 ok, 1 error or failed check, 2 usage, 3 protocol version mismatch, 4 timeout, 5 diag passed but incomplete (checks skipped), 130 interrupted. Docs: docs/cli.md';

/** Options every command takes (also used to find the command name before yargs runs). */
function globalOptions(y: Argv): Argv {
  return y
    .option('json', { type: 'boolean', describe: 'Print machine-readable JSON on stdout', default: false })
    .option('timeout', numberOption('Timeout of each call and of the handshake (ms) [default: 5000 per call, 10000 for the handshake]', positiveMs('timeout')))
    .option('baud', numberOption(`Serial baud rate (1..${MAX_BAUD})`, intInRange('baud', 1, MAX_BAUD, 'baud'), 115200))
    .option('verbose', { alias: 'v', type: 'boolean', describe: 'Print UART log lines and agent notices on stderr', default: false });
}

/** Build the parser. */
export function buildCli(argv: string[], setExit: (code: number) => void): Argv {
  let cli = globalOptions(
    yargs(argv)
      .scriptName('tether')
      .usage("$0 <command> [options]\n\nDrive a LuatOS / NodeMCU / Luat module's own network stack over its UART, through the tether agent.\nPorts: a serial device (/dev/ttyUSB0, COM3, /dev/ttyUSB0@921600), tcp://HOST:PORT (ser2net raw, tether sim), or sim / sim:luat / sim:nodemcu (built-in simulated modules)."),
  )
    .epilogue(EPILOGUE)
    .strict()
    .demandCommand(1, 'Name a command: diag, sim, ports, info, call, shell, flash, agent or proxy (see --help).')
    .exitProcess(false)
    .fail((msg, err, y) => {
      // A command handler's own failure (yargs passes no message): not a usage error.
      if (!msg && err && !isYargsError(err)) throw err;
      throw new UsageError(msg || err?.message || 'usage error', helpText(y));
    })
    .help()
    .version();
  const ctx: CliContext = { setExit };
  for (const c of makeCommands(ctx)) cli = cli.command(c as never);
  return cli;
}

function isYargsError(e: Error): boolean {
  return e.name === 'YError';
}

/** The help text of the usage instance yargs hands the fail handler (the current command's). */
function helpText(y: unknown): string {
  try {
    const h = (y as { help?: () => unknown }).help?.();
    return typeof h === 'string' ? h : '';
  } catch {
    return '';
  }
}

/** Names of the commands (the first word of each command string). */
function commandNames(): string[] {
  return makeCommands({ setExit: () => undefined }).map((c) => String(c.command).split(/\s+/)[0]);
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  }
  return d[a.length][b.length];
}

/**
 * The command word of `argv` when it is not a tether command (yargs would print the
 * top-level help for `tether open --help` as if `open` existed, and two errors for
 * `tether bogus`). Parsed with the same parser and global options as yargs uses.
 */
function unknownCommand(argv: string[]): string | undefined {
  const parsed = Parser(argv, { boolean: ['json', 'verbose', 'help', 'version'], alias: { verbose: ['v'] }, configuration: { 'parse-numbers': false } });
  const word = parsed._[0];
  if (word === undefined) return undefined;
  return commandNames().includes(String(word)) ? undefined : String(word);
}

function topLevelHelp(): Promise<string> {
  return buildCli([], () => undefined).getHelp();
}

/** Run the CLI with `argv` (without node and script); resolves with the exit code. */
export async function tetherCli(argv: string[]): Promise<number> {
  let code: number = ExitCode.OK;
  const setExit = (c: number) => {
    code = c;
  };
  try {
    const bad = unknownCommand(argv);
    if (bad !== undefined) {
      const names = commandNames();
      const near = names.filter((n) => distance(n, bad) <= Math.max(1, Math.floor(n.length / 3)));
      throw new UsageError(`unknown command "${bad}"${near.length ? `: did you mean ${near.join(' or ')}?` : ''} (commands: ${names.join(', ')})`, await topLevelHelp());
    }
    await buildCli(argv, setExit).parseAsync();
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${e.usage ? `${e.usage.trimEnd()}\n\n` : ''}tether: ${e.message}\n`);
    return ExitCode.USAGE;
  }
  return code;
}

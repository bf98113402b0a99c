/**
 * The `tether` command line: `tetherCli(argv)` builds the yargs parser and runs
 * one command, resolving with the process exit code (it never calls process.exit
 * itself, so tests can drive it).
 */
import yargs, { type Argv } from 'yargs';
import { makeCommands, type CliContext } from './commands/index.js';
import { ExitCode } from './output.js';

/** Build the parser (tests pass `exitProcess(false)` behaviour through here). */
export function buildCli(argv: string[], setExit: (code: number) => void): Argv {
  let cli = yargs(argv)
    .scriptName('tether')
    .usage('$0 <command> [options]\n\nDrive a LuatOS / NodeMCU / Luat module\'s own network stack over its UART, through the tether agent.\nPorts: a serial device (/dev/ttyUSB0, COM3, /dev/ttyUSB0@921600), tcp://HOST:PORT (ser2net raw, tether sim), or sim / sim:luat / sim:nodemcu (built-in simulated modules).')
    .option('json', { type: 'boolean', describe: 'Print machine-readable JSON on stdout', default: false })
    .option('timeout', { type: 'number', describe: 'Per-call timeout (ms)', default: 5000 })
    .option('baud', { type: 'number', describe: 'Serial baud rate', default: 115200 })
    .option('verbose', { alias: 'v', type: 'boolean', describe: 'Print UART log lines and agent notices on stderr', default: false })
    .epilogue('Exit codes: 0 ok, 1 error or failed check, 2 usage, 3 protocol version mismatch, 4 timeout. Docs: docs/cli.md')
    .strict()
    .demandCommand(1, 'Name a command: diag, sim, ports, info, call or flash (see --help).')
    .recommendCommands()
    .exitProcess(false)
    .fail((msg, err, y) => {
      if (err) throw err;
      void y;
      process.stderr.write(`tether: ${msg}\nRun "tether --help" for usage.\n`);
      setExit(ExitCode.USAGE);
    })
    .help()
    .version();
  const ctx: CliContext = { setExit };
  for (const c of makeCommands(ctx)) cli = cli.command(c as never);
  return cli;
}

/** Run the CLI with `argv` (without node and script); resolves with the exit code. */
export async function tetherCli(argv: string[]): Promise<number> {
  let code: number = ExitCode.OK;
  const setExit = (c: number) => {
    code = c;
  };
  await buildCli(argv, setExit).parseAsync();
  return code;
}


import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import { reportError, type CommonArgs } from '../output.js';
import { portArg } from '../validate.js';

interface ResetSocketsArgs extends CommonArgs {
  port: string;
}

/**
 * `tether reset-sockets --port P`: the agent releases every socket/ctrl/server it made, for
 * any host session (`agent.release_all`), and the command prints how many.
 */
export const resetSocketsCommand = (ctx: CliContext): CommandModule<object, ResetSocketsArgs> => ({
  command: 'reset-sockets',
  describe: 'Release every socket the agent made (any host session) and print how many',
  builder: (y) =>
    y
      .option('port', { alias: 'p', type: 'string', demandOption: true, requiresArg: true, coerce: portArg, describe: 'Serial device, tcp://HOST:PORT, or sim' })
      .example('$0 reset-sockets --port /dev/ttyUSB0', 'free the sockets earlier runs left open') as never,
  handler: async (argv) => {
    const { openModule } = await import('./open.js');
    let mod;
    try {
      mod = await openModule(argv.port, argv);
      const atOpen = mod.releasedAtOpen;
      const released = await mod.resetSockets({ timeoutMs: argv.timeout });
      if (argv.json) process.stdout.write(JSON.stringify({ family: mod.family, releasedAtOpen: atOpen, released }) + '\n');
      else {
        if (atOpen > 0) process.stdout.write(`opening this session released ${atOpen} object(s) an earlier session left\n`);
        process.stdout.write(`released ${released} socket(s)\n`);
      }
    } catch (e) {
      ctx.setExit(reportError(e, !!argv.json));
    } finally {
      await mod?.close({ release: false });
    }
  },
});

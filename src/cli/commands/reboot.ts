import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import { reportError, type CommonArgs } from '../output.js';
import { numberOption, portArg, positiveMs } from '../validate.js';

interface RebootArgs extends CommonArgs {
  port: string;
  bootTimeout: number;
}

/** Default of `--boot-timeout` (ms): the library's {@link DEFAULT_REBOOT_TIMEOUT_MS}. */
const DEFAULT_BOOT_TIMEOUT_MS = 30000;

/**
 * `tether reboot --port P`: reboot the module with its family's call (LuatOS `rtos.reboot`,
 * Luat `sys.restart`, NodeMCU `node.restart`; off unless the agent's TETHER_ALLOW_RESTART =
 * true), wait for its new boot (new epoch, new handshake) and print the time it took.
 */
export const rebootCommand = (ctx: CliContext): CommandModule<object, RebootArgs> => ({
  command: 'reboot',
  describe: 'Reboot the module (agent setting TETHER_ALLOW_RESTART = true) and wait for its new boot',
  builder: (y) =>
    y
      .option('port', { alias: 'p', type: 'string', demandOption: true, requiresArg: true, coerce: portArg, describe: 'Serial device, tcp://HOST:PORT, or sim' })
      .option('boot-timeout', numberOption('Time for the reboot and the new handshake (ms)', positiveMs('boot-timeout'), DEFAULT_BOOT_TIMEOUT_MS))
      .example('$0 reboot --port /dev/ttyUSB0', 'reboot and print how long the new boot took') as never,
  handler: async (argv) => {
    const { openModule } = await import('./open.js');
    let mod;
    try {
      mod = await openModule(argv.port, argv);
      const r = await mod.reboot({ timeoutMs: argv.bootTimeout });
      if (argv.json) process.stdout.write(JSON.stringify({ family: mod.family, ...r }) + '\n');
      else process.stdout.write(`rebooted (${r.fn}): boot epoch ${r.previousEpoch} -> ${r.epoch}, back after ${r.ms} ms\n`);
    } catch (e) {
      ctx.setExit(reportError(e, !!argv.json));
    } finally {
      await mod?.close();
    }
  },
});

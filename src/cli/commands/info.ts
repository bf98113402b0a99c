import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import { reportError, type CommonArgs } from '../output.js';
import { portArg } from '../validate.js';

interface InfoArgs extends CommonArgs {
  port: string;
}

/** `tether info --port URL`: module and agent facts. */
export const infoCommand = (ctx: CliContext): CommandModule<object, InfoArgs> => ({
  command: 'info',
  describe: 'Show the module: family, firmware, agent, heap, IMEI/CSQ/registration, limits',
  builder: (y) => y.option('port', { alias: 'p', type: 'string', demandOption: true, requiresArg: true, coerce: portArg, describe: 'Serial device, tcp://HOST:PORT, or sim' }) as never,
  handler: async (argv) => {
    const { openModule } = await import('./open.js');
    let mod;
    try {
      mod = await openModule(argv.port, argv);
      const info = await mod.info();
      if (argv.json) process.stdout.write(JSON.stringify(info) + '\n');
      else {
        const rows: Array<[string, unknown]> = [
          ['family', info.family],
          ['firmware', `${info.firmware ?? '?'} (${info.bsp ?? '?'})`],
          ['agent', `${info.agent} (protocol ${info.protocol})`],
          ['lua', `${info.lua ?? '?'}, ${info.intBits ?? '?'}-bit integers`],
          ['agent heap', `${info.heapKB ?? '?'} KB`],
          ['imei', info.imei],
          ['signal', info.csq === undefined ? undefined : `CSQ ${info.csq}`],
          ['registration', info.registrationText],
          ['inverted bool', info.invertedBool === undefined ? undefined : info.invertedBool ? 'yes (firmware before 2023-01-31)' : 'no'],
          ['limits', `frame ${info.limits.maxFrame} B, window ${info.limits.window} B, message ${info.limits.maxMessage} B`],
          ['functions', info.capabilities.join(' ')],
        ];
        for (const [k, v] of rows) if (v !== undefined) process.stdout.write(`${k.padEnd(14)} ${String(v)}\n`);
      }
    } catch (e) {
      ctx.setExit(reportError(e, !!argv.json));
    } finally {
      await mod?.close();
    }
  },
});

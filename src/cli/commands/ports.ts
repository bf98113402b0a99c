import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';
import { reportError } from '../output.js';

/** `tether ports`: serial ports with VID/PID, USB serial number and a friendly chip name. */
export const portsCommand = (ctx: CliContext): CommandModule<object, CommonArgs> => ({
  command: 'ports',
  describe: 'List serial ports with USB VID:PID, USB serial number (for --port serial:SERIALNO) and the chip behind them',
  handler: async (argv) => {
    try {
      const { listPorts } = await import('../../transport/ports.js');
      const ports = await listPorts();
      if (argv.json) {
        process.stdout.write(JSON.stringify(ports) + '\n');
        return;
      }
      if (ports.length === 0) {
        process.stderr.write('no serial ports found\n');
        return;
      }
      const { formatPorts } = await import('./ports-format.js');
      for (const l of formatPorts(ports)) process.stdout.write(l + '\n');
    } catch (e) {
      ctx.setExit(reportError(e, !!argv.json));
    }
  },
});

import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';
import { reportError } from '../output.js';

/** `tether ports`: serial ports with VID/PID and a friendly chip name. */
export const portsCommand = (ctx: CliContext): CommandModule<object, CommonArgs> => ({
  command: 'ports',
  describe: 'List serial ports with USB VID:PID and the chip behind them',
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
      for (const p of ports) {
        const id = p.vendorId ? `${p.vendorId}:${p.productId ?? '????'}` : '-';
        process.stdout.write(`${p.path.padEnd(20)} ${id.padEnd(10)} ${p.chip ?? p.manufacturer ?? ''}${p.family ? ` (${p.family})` : ''}\n`);
      }
    } catch (e) {
      ctx.setExit(reportError(e, !!argv.json));
    }
  },
});

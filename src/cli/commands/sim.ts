import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';
import { SIM_FAMILIES, simFamilyNames } from '../../sim/families.js';
import { intInRange, numberOption, portNumber } from '../validate.js';

export interface SimArgs extends CommonArgs {
  family: string;
  'tcp-port': number;
  pty: boolean;
  link?: string;
  net: 'loopback' | 'host';
  /** The global --baud: the simulated line's rate (host side and the agent's TETHER_BAUD). */
  baud?: number;
  /** Lua heap budget of the simulated module (bytes). */
  heap?: number;
  /** Wire the host to the module's USB port (no baud, not paced) instead of UART1. */
  usb: boolean;
  /** nodemcu: a firmware with the Lua Flash Store holding the agent (it starts from there). */
  lfs: boolean;
}

/** `tether sim`: start a simulated module, print its port URLs, run until Ctrl-C. */
export const simCommand = (ctx: CliContext): CommandModule<object, SimArgs> => ({
  command: 'sim',
  describe: 'Start a simulated module (runs the real agent), print its port URLs, run until Ctrl-C',
  builder: (y) =>
    y
      .option('family', { type: 'string', choices: simFamilyNames(), default: 'luatos', describe: `Firmware family to simulate (${simFamilyNames().map((n) => `${n} = ${SIM_FAMILIES[n].moduleName}`).join(', ')})` })
      .option('tcp-port', numberOption('Serve the UART as raw TCP on 127.0.0.1:PORT, 0..65535 (0 = any free port)', portNumber('tcp-port', true), 0))
      .option('pty', { type: 'boolean', default: true, describe: 'Also serve the UART on a pseudo-terminal (needs python3); --no-pty to skip' })
      .option('link', { type: 'string', requiresArg: true, describe: 'Create a symlink to the pty at this path' })
      .option('net', {
        choices: ['loopback', 'host'] as const,
        default: 'loopback' as const,
        describe: 'What the simulated module reaches: loopback = only 127.0.0.0/8, names only from its hosts table and localhost; host = the host\'s resolver and network',
      })
      .option('usb', {
        type: 'boolean',
        default: false,
        describe: "Wire the host to the module's USB port instead of UART1: LuatOS uart.VUART_0 (32), Luat uart.USB (129). A USB port has no baud, so bytes are not paced and --baud does not apply (NodeMCU: the ESP8266 has no USB port of its own)",
      })
      .option('lfs', { type: 'boolean', default: false, describe: "nodemcu: a firmware built with the Lua Flash Store, the agent's files in it (tether agent --lfs): the agent starts from LFS and its code costs no heap" })
      .check((a) => {
        if (a.lfs && a.family !== 'nodemcu') throw new Error('--lfs is for --family nodemcu (the Lua Flash Store is NodeMCU\'s)');
        if (a.usb && a.family === 'nodemcu') throw new Error('--usb: the ESP8266 has no USB port of its own (its USB-serial chip is wired to UART0); use --family luatos or luat');
        return true;
      })
      .option('heap', numberOption("Lua heap budget of the simulated module in bytes (default: the real module's free Lua heap after boot, docs/fidelity.md)", intInRange('heap', 4096, 1 << 30, 'bytes')))
      .example('$0 sim', 'start a simulated Air780E, its UART paced at 115200 baud')
      .example('$0 sim --baud 921600', 'the agent sets its UART up at 921600 and the line is paced at it')
      .example('$0 sim --usb', 'the agent on the USB virtual port: not paced, as fast as the simulator runs')
      .example('$0 sim --family nodemcu --lfs', 'an ESP8266 whose firmware has LFS, the agent in it')
      .example('$0 sim --net host', 'one that may resolve names and connect beyond this machine')
      .example('$0 diag --port tcp://127.0.0.1:7000', 'then, in another terminal, check it') as never,
  handler: async (argv) => (await import('./sim-impl.js')).runSim(argv, ctx),
});

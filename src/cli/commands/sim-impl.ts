import { SimulatedModule } from '../../sim/module.js';
import { SIM_FAMILIES, simFamilyNames } from '../../sim/families.js';
import { InvalidArgumentError } from '../../errors.js';
import { reportError } from '../output.js';
import { VUART_0 } from '../../sim/luatos/env.js';
import { UART_USB } from '../../sim/luat/env.js';
import type { CliContext } from './index.js';
import type { SimArgs } from './sim.js';

/** The USB port's id in each family's `uart` library (TETHER_UART). */
const USB_PORT: Record<string, number> = { luatos: VUART_0, luat: UART_USB };

export async function runSim(argv: SimArgs, ctx: CliContext): Promise<void> {
  let sim: SimulatedModule | undefined;
  try {
    if (!Object.hasOwn(SIM_FAMILIES, argv.family)) throw new InvalidArgumentError(`no simulator for family "${argv.family}" (available: ${simFamilyNames().join(', ')})`);
    const famOpts: Record<string, unknown> = { network: { net: argv.net }, baud: argv.baud };
    // the agent's TETHER_UART picks the simulated port (LuatOS uart.VUART_0, Luat uart.USB): no baud
    if (argv.usb) famOpts.agentSettings = { TETHER_UART: USB_PORT[argv.family] };
    if (argv.lfs) famOpts.lfs = true; // NodemcuSimOptions.lfs: the agent's files in LFS
    if (argv.heap !== undefined) {
      famOpts.heapBytes = argv.heap;
      famOpts.enforceHeap = true; // a budget given is a budget enforced (every family's default too)
    }
    sim = await SimulatedModule.start(SIM_FAMILIES[argv.family].create(famOpts), { log: argv.verbose ? (l) => process.stderr.write(`[module] ${l}\n`) : undefined });
    const urls: Record<string, string> = { tcp: await sim.serveTcp(argv['tcp-port']) };
    if (argv.pty) {
      try {
        urls.pty = await sim.servePty(argv.link);
      } catch (e) {
        process.stderr.write(`tether: no pseudo-terminal: ${(e as Error).message}\n`);
      }
    }
    const baud = sim.wire.paced ? sim.wire.hostLine.baud : null;
    if (argv.json) process.stdout.write(JSON.stringify({ family: sim.family.name, module: sim.family.moduleName, baud, usb: argv.usb === true, lfs: argv.lfs === true, ports: urls }) + '\n');
    else {
      process.stdout.write(`simulated ${sim.family.moduleName} (${sim.family.name}) running the agent ${sim.family.agentFile}${argv.lfs ? ' from LFS' : ''}, ${baud === null ? 'on its USB port (no baud, not paced)' : `UART at ${baud} baud`}\n`);
      for (const [k, v] of Object.entries(urls)) process.stdout.write(`  ${k.padEnd(4)} ${v}\n`);
      process.stdout.write(`try: tether diag --port ${urls.tcp}\nCtrl-C to stop.\n`);
    }
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
  } catch (e) {
    ctx.setExit(reportError(e, !!argv.json));
  } finally {
    await sim?.stop();
  }
}

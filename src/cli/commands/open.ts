import { connect, type TetherModule } from '../../api/connect.js';
import type { CommonArgs } from '../output.js';

/** Open the module named by `--port` with the common options; with --verbose, UART log lines go to stderr. */
export async function openModule(port: string, argv: CommonArgs): Promise<TetherModule> {
  const mod = await connect(port, {
    baudRate: argv.baud,
    timeoutMs: argv.timeout,
    sim: argv.verbose ? { log: (l) => process.stderr.write(`[module] ${l}\n`) } : undefined,
  });
  if (argv.verbose) {
    mod.rpc.logs.subscribe((l) => process.stderr.write(`[${l.source}] ${l.text}\n`));
  }
  return mod;
}

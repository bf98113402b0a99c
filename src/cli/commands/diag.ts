import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';

export interface DiagArgs extends CommonArgs {
  port?: string;
  tcp?: string;
  udp?: string;
  tls?: string;
  'tls-ca'?: string;
  dns?: string;
  'check-timeout': number;
  'echo-bytes': number;
}

/** `tether diag`: handshake, adapter + IP, DNS, TCP echo, UDP echo, TLS, each timed. */
export const diagCommand = (ctx: CliContext): CommandModule<object, DiagArgs> => ({
  command: 'diag',
  describe: 'Check a module end to end: handshake, adapter + local IP, DNS, TCP echo, UDP echo, TLS (each timed)',
  builder: (y) =>
    y
      .option('port', { alias: 'p', type: 'string', describe: 'Serial device, tcp://HOST:PORT, or sim. Omitted: a built-in simulated Air780E' })
      .option('tcp', { type: 'string', describe: 'TCP echo server HOST:PORT the module can reach' })
      .option('udp', { type: 'string', describe: 'UDP echo server HOST:PORT' })
      .option('tls', { type: 'string', describe: 'TLS echo server HOST:PORT' })
      .option('tls-ca', { type: 'string', describe: 'PEM file of the CA the module verifies the TLS server against' })
      .option('dns', { type: 'string', describe: 'Host name to resolve (connects to it on the --tcp port). Default: the --tcp host' })
      .option('check-timeout', { type: 'number', default: 15000, describe: 'Timeout of each check (ms)' })
      .option('echo-bytes', { type: 'number', default: 1024, describe: 'Bytes echoed by the TCP/TLS checks' })
      .example('$0 diag', 'check the built-in simulated module against loopback echo services')
      .example('$0 diag --port /dev/ttyUSB0 --tcp echo.example.net:7 --udp echo.example.net:7', 'check a real module') as never,
  handler: async (argv) => (await import('./diag-impl.js')).runDiagCommand(argv, ctx),
});

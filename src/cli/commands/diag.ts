import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';
import { ECHO_BYTES_MAX, ECHO_BYTES_MIN, hostPort, intInRange, numberOption, portArg, positiveMs, type HostPort } from '../validate.js';

export interface DiagArgs extends CommonArgs {
  port?: string;
  tcp?: HostPort;
  udp?: HostPort;
  tls?: HostPort;
  'tls-ca'?: string;
  dns?: string;
  'check-timeout': number;
  'echo-bytes': number;
}

/** `--dns NAME`: a host name (or address) without spaces or a port. */
function dnsName(raw: unknown): string {
  const v = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  const s = typeof v === 'string' ? v.trim() : '';
  if (!/^[^\s:/]+$/.test(s) && !/^\[?[0-9a-f:.]+\]?$/i.test(s)) throw new Error(`--dns must be a host name such as echo.example.net, got ${JSON.stringify(String(v ?? ''))}`);
  return s.replace(/^\[(.*)\]$/, '$1');
}

/** `tether diag`: handshake, adapter + IP, DNS, TCP echo, UDP echo, TLS, each timed. */
export const diagCommand = (ctx: CliContext): CommandModule<object, DiagArgs> => ({
  command: 'diag',
  describe: 'Check a module end to end: handshake, adapter + local IP, DNS, TCP echo, UDP echo, TLS (each timed)',
  builder: (y) =>
    y
      .option('port', { alias: 'p', type: 'string', requiresArg: true, coerce: portArg, describe: 'Serial device, tcp://HOST:PORT, or sim. Omitted: a built-in simulated Air780E' })
      .option('tcp', { type: 'string', requiresArg: true, coerce: hostPort('tcp'), describe: 'TCP echo server HOST:PORT the module can reach' })
      .option('udp', { type: 'string', requiresArg: true, coerce: hostPort('udp'), describe: 'UDP echo server HOST:PORT' })
      .option('tls', { type: 'string', requiresArg: true, coerce: hostPort('tls'), describe: 'TLS echo server HOST:PORT' })
      .option('tls-ca', { type: 'string', requiresArg: true, describe: 'PEM file of the CA the module verifies the TLS server against' })
      .option('dns', { type: 'string', requiresArg: true, coerce: dnsName, describe: 'Host name the module resolves (the DNS check connects to it on the --tcp port). Without it the DNS check is skipped' })
      .option('check-timeout', numberOption('Timeout of each check (ms)', positiveMs('check-timeout'), 15000))
      .option('echo-bytes', numberOption(`Bytes echoed by the TCP/TLS checks (${ECHO_BYTES_MIN}..${ECHO_BYTES_MAX}; the LuatOS TLS check echoes at most 1024, the Luat SSL check at most 4096, and says so)`, intInRange('echo-bytes', ECHO_BYTES_MIN, ECHO_BYTES_MAX, 'bytes'), 1024))
      .example('$0 diag', 'check the built-in simulated module against loopback echo services')
      .example('$0 diag --port /dev/ttyUSB0 --tcp echo.example.net:7 --udp echo.example.net:7 --tls echo.example.net:7443 --dns echo.example.net', 'check a real module (every check; exit 5 if any is skipped)') as never,
  handler: async (argv) => (await import('./diag-impl.js')).runDiagCommand(argv, ctx),
});

import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';
import { ECHO_BYTES_MAX, ECHO_BYTES_MIN, hostPort, intInRange, numberOption, portArg, positiveMs, type HostPort } from '../validate.js';

/** `--port P` once or more: every port checked as `--port` is (the order kept). */
function portsArg(raw: unknown): string[] {
  return (Array.isArray(raw) ? raw : [raw]).map((v) => portArg(v));
}

/**
 * `--bench FILE`: a non-empty path. The file itself is read and validated when the command
 * runs (lazily, to keep `--help` fast), still before anything is opened: a bad file exits 2.
 */
function benchArg(raw: unknown): string {
  const v = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  if (typeof v !== 'string' || v.trim() === '') throw new Error(`--bench must name a bench file (YAML or JSON, docs/bench.md), got ${JSON.stringify(String(v ?? ''))}`);
  return v;
}

export interface DiagArgs extends CommonArgs {
  /** Every `--port` given, in order (one: the single-module diag; several: in parallel). */
  port?: string[];
  /** `--bench FILE`: the bench file's path (loaded and validated by the command, before anything is opened). */
  bench?: string;
  /** Bench module names (positional), with `--bench`. */
  names?: string[];
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

/**
 * `tether diag`: handshake, adapter + IP, DNS, TCP echo, UDP echo, TLS, each timed; for one
 * module, or for several in parallel (`--port A --port B`, `--bench FILE [NAME...]`) with
 * one summary table.
 */
export const diagCommand = (ctx: CliContext): CommandModule<object, DiagArgs> => ({
  command: 'diag [names..]',
  describe: 'Check modules end to end: handshake, adapter + local IP, DNS, TCP echo, UDP echo, TLS (each timed); several in parallel with --port A --port B or --bench FILE',
  builder: (y) =>
    y
      .positional('names', { type: 'string', array: true, describe: 'With --bench: the modules to check (default: all of them)' })
      .option('port', { alias: 'p', type: 'string', requiresArg: true, coerce: portsArg, describe: 'Serial device, serial:SERIALNO, tcp://HOST:PORT, or sim; give it again for more modules, checked in parallel. Omitted: a built-in simulated Air780E' })
      .option('bench', { type: 'string', requiresArg: true, coerce: benchArg, describe: 'Bench file (YAML or JSON, docs/bench.md): check its modules (or the NAMEs given) in parallel' })
      .option('tcp', { type: 'string', requiresArg: true, coerce: hostPort('tcp'), describe: 'TCP echo server HOST:PORT the module can reach' })
      .option('udp', { type: 'string', requiresArg: true, coerce: hostPort('udp'), describe: 'UDP echo server HOST:PORT' })
      .option('tls', { type: 'string', requiresArg: true, coerce: hostPort('tls'), describe: 'TLS echo server HOST:PORT' })
      .option('tls-ca', { type: 'string', requiresArg: true, describe: 'PEM file of the CA the module verifies the TLS server against' })
      .option('dns', { type: 'string', requiresArg: true, coerce: dnsName, describe: 'Host name the module resolves (the DNS check connects to it on the --tcp port). Without it the DNS check is skipped' })
      .option('check-timeout', numberOption('Timeout of each check (ms)', positiveMs('check-timeout'), 15000))
      .option('echo-bytes', numberOption(`Bytes echoed by the TCP/TLS checks (${ECHO_BYTES_MIN}..${ECHO_BYTES_MAX}; the LuatOS TLS check echoes at most 1024, the Luat SSL check at most 4096, and says so)`, intInRange('echo-bytes', ECHO_BYTES_MIN, ECHO_BYTES_MAX, 'bytes'), 1024))
      .check((a) => {
        const names = (a.names ?? []) as string[];
        if (a.bench && a.port) throw new Error('give either --bench FILE [NAME...] or --port, not both');
        if (names.length && !a.bench) throw new Error(`unexpected argument ${JSON.stringify(String(names[0]))}: module names need --bench FILE`);
        return true;
      })
      .example('$0 diag', 'check the built-in simulated module against loopback echo services')
      .example('$0 diag --port sim --port sim:luat --port sim:nodemcu', 'check three simulated modules in parallel: one summary table')
      .example('$0 diag --bench bench.yaml air780e', 'check the module named air780e of a bench file')
      .example('$0 diag --port /dev/ttyUSB0 --tcp echo.example.net:7 --udp echo.example.net:7 --tls echo.example.net:7443 --dns echo.example.net', 'check a real module (every check; exit 5 if any is skipped)') as never,
  handler: async (argv) => (await import('./diag-impl.js')).runDiagCommand(argv, ctx),
});

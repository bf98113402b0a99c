/**
 * Which modules the hardware-in-the-loop suite (hil/, `npm run test:hil`) runs against,
 * from the environment:
 *
 * - `TETHER_TEST_BENCH=FILE`: the modules of a bench file (docs/bench.md); with
 *   `TETHER_TEST_MODULES=a,b` only those. Each module's family, port, baud, echo endpoints
 *   and timeouts come from the file.
 * - `TETHER_TEST_PORT=PORT`: one module. Its family is the one a `sim:` port names, else
 *   `TETHER_TEST_FAMILY` (required then: the suite checks the module runs that family).
 *   `TETHER_BAUD` (baud), `TETHER_ECHO_TCP`, `TETHER_ECHO_UDP`, `TETHER_ECHO_TLS`
 *   (HOST:PORT) and `TETHER_ECHO_TLS_CA` (PEM file) give the rest.
 *
 * Every problem is an InvalidArgumentError saying what to set: the suite fails with it
 * rather than skipping anything.
 */
import { resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { BENCH_FAMILIES, loadBench, selectModules, validateBench, type BenchModule } from './bench-file.js';

/** One module the HIL suite checks (a {@link BenchModule}: from the bench file, or from TETHER_TEST_PORT). */
export type HilTarget = BenchModule;

/** The environment variables {@link hilTargets} reads. */
export const HIL_ENV = ['TETHER_TEST_BENCH', 'TETHER_TEST_MODULES', 'TETHER_TEST_PORT', 'TETHER_TEST_FAMILY', 'TETHER_BAUD', 'TETHER_ECHO_TCP', 'TETHER_ECHO_UDP', 'TETHER_ECHO_TLS', 'TETHER_ECHO_TLS_CA'] as const;

/**
 * The modules to test, from `env` (default `process.env`).
 * @throws InvalidArgumentError when neither TETHER_TEST_BENCH nor TETHER_TEST_PORT is set
 *   (`TETHER_TEST_PORT is not set: ...`), both are, a value is malformed, the family of a
 *   non-simulated port is missing, or the bench file is invalid.
 */
export function hilTargets(env: Record<string, string | undefined> = process.env): HilTarget[] {
  const benchFile = env.TETHER_TEST_BENCH?.trim();
  const port = env.TETHER_TEST_PORT?.trim();
  if (benchFile && port) throw new InvalidArgumentError('set TETHER_TEST_BENCH or TETHER_TEST_PORT, not both (a bench file names its modules\' ports)');
  if (benchFile) {
    const names = (env.TETHER_TEST_MODULES ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    return selectModules(loadBench(benchFile), names);
  }
  if (env.TETHER_TEST_MODULES) throw new InvalidArgumentError('TETHER_TEST_MODULES selects modules of a bench file: set TETHER_TEST_BENCH too');
  if (!port) {
    throw new InvalidArgumentError(
      'TETHER_TEST_PORT is not set: point it at the module (/dev/ttyUSB0, serial:SERIALNO, tcp://HOST:PORT, sim, sim:luat or sim:nodemcu; TETHER_TEST_FAMILY=luatos|luat|nodemcu for a real module), or set TETHER_TEST_BENCH to a bench file (docs/bench.md)',
    );
  }
  // The same validation as a bench file entry, so both ways report problems alike.
  const label = 'the environment';
  const entry: Record<string, unknown> = { port };
  if (env.TETHER_TEST_FAMILY) entry.family = env.TETHER_TEST_FAMILY.trim();
  if (env.TETHER_BAUD) entry.baud = /^\d+$/.test(env.TETHER_BAUD.trim()) ? Number(env.TETHER_BAUD.trim()) : env.TETHER_BAUD;
  const echo: Record<string, unknown> = {};
  if (env.TETHER_ECHO_TCP) echo.tcp = env.TETHER_ECHO_TCP.trim();
  if (env.TETHER_ECHO_UDP) echo.udp = env.TETHER_ECHO_UDP.trim();
  if (env.TETHER_ECHO_TLS) echo.tls = env.TETHER_ECHO_TLS.trim();
  if (env.TETHER_ECHO_TLS_CA) echo['tls-ca'] = resolve(env.TETHER_ECHO_TLS_CA.trim());
  if (Object.keys(echo).length) entry.echo = echo;
  try {
    return validateBench({ modules: { module: entry } }, label, process.cwd()).modules;
  } catch (e) {
    // name the variables, not bench paths
    const msg = (e as Error).message
      .replace(/modules\.module\.port/g, 'TETHER_TEST_PORT')
      .replace(/modules\.module\.family: required for a port that is not sim:\.\.\.; expected one of [a-z, ]+/g, `TETHER_TEST_FAMILY: required for a port that is not sim:...; set it to ${BENCH_FAMILIES.join(', ')}`)
      .replace(/modules\.module\.family/g, 'TETHER_TEST_FAMILY')
      .replace(/modules\.module\.baud/g, 'TETHER_BAUD')
      .replace(/modules\.module\.echo\.tls-ca/g, 'TETHER_ECHO_TLS_CA')
      .replace(/modules\.module\.echo\.(tcp|udp|tls)/g, (_m, k: string) => `TETHER_ECHO_${k.toUpperCase()}`)
      .replace(/bench file the environment is not valid/, 'the HIL environment is not valid');
    throw new InvalidArgumentError(msg, { env: true });
  }
}

/**
 * What a module of `family` needs to reach for the suite, that `t` does not give:
 * TCP and UDP echo servers always, a TLS echo server for LuatOS and Luat (the default
 * NodeMCU build has no TLS). Empty when nothing is missing.
 */
export function missingEcho(t: HilTarget): string[] {
  const need: Array<'tcp' | 'udp' | 'tls'> = t.family === 'nodemcu' ? ['tcp', 'udp'] : ['tcp', 'udp', 'tls'];
  return need.filter((k) => !t.echo[k]);
}

import { readFileSync } from 'node:fs';
import { ExitCode, reportError } from '../output.js';
import { openModule } from './open.js';
import { runDiag, summarize, type DiagCheck, type DiagOptions, type DiagReport, type Endpoint } from '../../diag/diag.js';
import { startEchoServers, type EchoServers } from '../../diag/echo-servers.js';
import { fixturePath } from '../../diag/fixtures.js';
import { InvalidArgumentError } from '../../errors.js';
import { isSimPort, type TetherModule } from '../../api/connect.js';
import { hostPort } from '../validate.js';
import type { CliContext } from './index.js';
import type { DiagArgs } from './diag.js';

/** Parse HOST:PORT (IPv6 as [addr]:port). */
export function parseEndpoint(s: string, what: string): Endpoint {
  try {
    return hostPort(what)(s);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

const STATUS_WORD = { pass: 'PASS', fail: 'FAIL', skip: 'SKIP', interrupted: 'INTR' } as const;

/** The exit code of a diag report: 0 complete and passed, 1 a check failed, 5 passed but incomplete, 130 interrupted. */
export function diagExitCode(r: DiagReport): number {
  if (r.interrupted) return ExitCode.INTERRUPTED;
  if (r.failed > 0) return ExitCode.ERROR;
  if (r.skipped > 0) return ExitCode.INCOMPLETE;
  return ExitCode.OK;
}

/** The closing line of the text output. */
export function diagSummary(r: DiagReport): string {
  const total = r.checks.length;
  const skippedNames = r.checks.filter((c) => c.status === 'skip').map((c) => c.name);
  const notTested = skippedNames.length ? ` (not tested: ${skippedNames.join(', ')})` : '';
  if (r.interrupted) return `interrupted: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped before Ctrl-C; the report is partial`;
  if (r.failed > 0) return `${r.failed} of ${total} checks failed; ${r.passed} passed, ${r.skipped} skipped${notTested}`;
  if (r.skipped > 0) return `${r.passed} passed, ${r.skipped} skipped: incomplete${notTested}`;
  return `all ${total} checks passed`;
}

/**
 * Run `tether diag`: one module (no `--port`, or one) with one line per check, or several
 * (`--port` more than once, `--bench`) in parallel with one summary table (diag-multi.ts).
 */
export async function runDiagCommand(argv: DiagArgs, ctx: CliContext): Promise<void> {
  if (argv.bench || (argv.port?.length ?? 0) > 1) {
    const multi = await import('./diag-multi.js');
    if (argv.bench) {
      const { loadBench, selectModules } = await import('../../bench/bench-file.js');
      let modules;
      try {
        modules = selectModules(loadBench(argv.bench), (argv.names ?? []).map(String));
      } catch (e) {
        ctx.setExit(reportError(e, !!argv.json));
        return;
      }
      return multi.runMultiDiag(modules, argv, ctx, argv.bench);
    }
    let targets;
    try {
      targets = multi.targetsFromPorts(argv.port ?? []);
    } catch (e) {
      ctx.setExit(reportError(e, !!argv.json));
      return;
    }
    return multi.runMultiDiag(targets, argv, ctx);
  }
  return runSingleDiag(argv.port?.[0], argv, ctx);
}

async function runSingleDiag(givenPort: string | undefined, argv: DiagArgs, ctx: CliContext): Promise<void> {
  let mod: TetherModule | undefined;
  let echo: EchoServers | undefined;
  const json = !!argv.json;
  // Text mode: the lines are the output (stdout). --json: stdout holds only the JSON document.
  const out = (line: string) => {
    if (!json) process.stdout.write(line + '\n');
  };
  const abort = new AbortController();
  const checks: DiagCheck[] = [];
  let reported = false;
  const onSigint = () => {
    if (abort.signal.aborted) process.exit(ExitCode.INTERRUPTED); // a second Ctrl-C: stop at once
    abort.abort();
    // The partial report goes out at once; should closing a stuck device hang, exit anyway.
    setTimeout(() => process.exit(ExitCode.INTERRUPTED), 3000).unref();
  };
  process.on('SIGINT', onSigint);
  /** Print the partial report of an interruption (once). */
  const reportInterrupted = (port: string) => {
    if (reported) return;
    reported = true;
    const r = summarize(port, checks, true);
    if (json) process.stdout.write(JSON.stringify(r) + '\n');
    out(diagSummary(r));
    ctx.setExit(ExitCode.INTERRUPTED);
  };
  const port = givenPort ?? 'sim:luatos';
  try {
    const { tcp, udp, tls } = argv;
    const ca = readTlsCa(argv['tls-ca']);
    out(`tether diag: opening ${port}${givenPort ? '' : ' (built-in simulated Air780E; use --port for a real module)'}`);
    const opening = openModule(port, argv);
    const interrupted = new Promise<undefined>((resolve) => abort.signal.addEventListener('abort', () => resolve(undefined), { once: true }));
    mod = await Promise.race([opening, interrupted]);
    if (!mod) {
      // Ctrl-C during the handshake: close the module when (if) it opens
      opening.then((m) => m.close(), () => undefined).catch(() => undefined);
      reportInterrupted(port);
      return;
    }
    const simulated = isSimPort(port) || /-sim$/.test(mod.hello.fw ?? '');
    let targets: Pick<DiagOptions, 'tcp' | 'udp' | 'tls' | 'dnsName'> = { tcp, udp, tls: tls ? { ...tls, ca } : undefined, dnsName: argv.dns };
    if (!tcp && !udp && !tls && simulated) {
      ({ echo, targets } = await loopbackEchoTargets(mod.family, argv.dns));
      out(`loopback echo services: tcp ${echo.tcp.port}, udp ${echo.udp.port}${echo.tls ? `, tls ${echo.tls.port}` : ''} on 127.0.0.1`);
    }
    const report = await runDiag(mod, {
      ...targets,
      timeoutMs: argv['check-timeout'],
      echoBytes: argv['echo-bytes'],
      signal: abort.signal,
      onProgress: (c: DiagCheck, phase) => {
        if (phase !== 'end') return;
        checks.push(c);
        out(`${STATUS_WORD[c.status]}  ${c.name.padEnd(44)} ${String(c.ms).padStart(6)} ms  ${c.detail}`);
      },
    });
    if (report.interrupted) {
      reported = true;
      if (json) process.stdout.write(JSON.stringify(report) + '\n');
      out(diagSummary(report));
      ctx.setExit(ExitCode.INTERRUPTED);
      return;
    }
    if (json) process.stdout.write(JSON.stringify(report) + '\n');
    out(diagSummary(report));
    ctx.setExit(diagExitCode(report));
  } catch (e) {
    if (abort.signal.aborted) reportInterrupted(mod?.port ?? port);
    else ctx.setExit(reportError(e, json));
  } finally {
    await mod?.close().catch(() => {});
    await echo?.close();
    process.off('SIGINT', onSigint);
  }
}

/**
 * `--tls-ca FILE` read as PEM text (undefined when not given).
 * @throws InvalidArgumentError when the file cannot be read (a usage error: nothing was opened).
 */
export function readTlsCa(path: string | undefined): string | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new InvalidArgumentError(`--tls-ca: cannot read ${path}: ${(e as Error).message}`);
  }
}

/**
 * Loopback echo services for a simulated module given no servers: TCP and UDP, and TLS with the
 * fixture certificate (fixtures/tls/) except for NodeMCU, whose default build has no TLS.
 * `dnsName` defaults to `localhost`. The caller closes `echo`.
 */
export async function loopbackEchoTargets(family: string, dnsName: string | undefined): Promise<{ echo: EchoServers; targets: Pick<DiagOptions, 'tcp' | 'udp' | 'tls' | 'dnsName'> }> {
  const cert = fixturePath('tls', 'server.crt');
  const withTls = family !== 'nodemcu';
  const echo = await startEchoServers(withTls ? { tls: { key: readFileSync(fixturePath('tls', 'server.key')), cert: readFileSync(cert) } } : {});
  return { echo, targets: { tcp: echo.tcp, udp: echo.udp, tls: echo.tls ? { ...echo.tls, host: 'localhost', ca: readFileSync(cert, 'utf8') } : undefined, dnsName: dnsName ?? 'localhost' } };
}

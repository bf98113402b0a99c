import { readFileSync } from 'node:fs';
import { ExitCode, reportError } from '../output.js';
import { openModule } from './open.js';
import { runDiag, type DiagCheck, type Endpoint } from '../../diag/diag.js';
import { startEchoServers, type EchoServers } from '../../diag/echo-servers.js';
import { fixturePath } from '../../diag/fixtures.js';
import { InvalidArgumentError } from '../../errors.js';
import { isSimPort, type TetherModule } from '../../api/connect.js';
import type { CliContext } from './index.js';
import type { DiagArgs } from './diag.js';

/** Parse HOST:PORT (IPv6 as [addr]:port). */
export function parseEndpoint(s: string, what: string): Endpoint {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) throw new InvalidArgumentError(`--${what} must be HOST:PORT (port 1..65535), got "${s}"`);
  return { host: m[1] ?? m[2], port };
}

export async function runDiagCommand(argv: DiagArgs, ctx: CliContext): Promise<void> {
  let mod: TetherModule | undefined;
  let echo: EchoServers | undefined;
  const out = (line: string) => (argv.json ? process.stderr : process.stdout).write(line + '\n');
  try {
    const port = argv.port ?? 'sim:luatos';
    const tcp = argv.tcp ? parseEndpoint(argv.tcp, 'tcp') : undefined;
    const udp = argv.udp ? parseEndpoint(argv.udp, 'udp') : undefined;
    const tls = argv.tls ? parseEndpoint(argv.tls, 'tls') : undefined;
    const ca = argv['tls-ca'] ? readFileSync(argv['tls-ca'], 'utf8') : undefined;
    out(`tether diag: opening ${port}${argv.port ? '' : ' (built-in simulated Air780E; use --port for a real module)'}`);
    mod = await openModule(port, argv);
    const simulated = isSimPort(port) || /-sim$/.test(mod.hello.fw ?? '');
    let targets = { tcp, udp, tls: tls ? { ...tls, ca } : undefined, dnsName: argv.dns };
    if (!tcp && !udp && !tls && simulated) {
      const cert = fixturePath('tls', 'server.crt');
      echo = await startEchoServers({ tls: { key: readFileSync(fixturePath('tls', 'server.key')), cert: readFileSync(cert) } });
      targets = { tcp: echo.tcp, udp: echo.udp, tls: { ...echo.tls!, host: 'localhost', ca: readFileSync(cert, 'utf8') }, dnsName: argv.dns ?? 'localhost' };
      out(`loopback echo services: tcp ${echo.tcp.port}, udp ${echo.udp.port}, tls ${echo.tls!.port} on 127.0.0.1`);
    }
    const report = await runDiag(mod, {
      ...targets,
      timeoutMs: argv['check-timeout'],
      echoBytes: argv['echo-bytes'],
      onProgress: (c: DiagCheck, phase) => {
        if (phase === 'end') out(`${c.skipped ? 'SKIP' : c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(44)} ${String(c.ms).padStart(6)} ms  ${c.detail}`);
      },
    });
    const failed = report.checks.filter((c) => !c.ok).length;
    if (argv.json) process.stdout.write(JSON.stringify(report) + '\n');
    out(failed === 0 ? `all ${report.checks.length} checks passed` : `${failed} of ${report.checks.length} checks failed`);
    if (failed > 0) ctx.setExit(ExitCode.ERROR);
  } catch (e) {
    ctx.setExit(reportError(e, !!argv.json));
  } finally {
    await mod?.close().catch(() => {});
    await echo?.close();
  }
}

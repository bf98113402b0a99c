/**
 * `tether diag` over many modules at once (`--port A --port B ...` or `--bench FILE
 * [NAME...]`): every module is opened and diagnosed in parallel, and the run ends with one
 * summary table (module × check: PASS / FAIL / SKIP / INTR, time) or, with `--json`, one
 * JSON document ({@link MultiDiagReport}). Exit codes: {@link multiDiagExitCode}.
 */
import { readFileSync } from 'node:fs';
import { connect, isSimPort, type TetherModule } from '../../api/connect.js';
import { runDiag, summarize, type DiagCheck, type DiagOptions, type DiagReport } from '../../diag/diag.js';
import type { EchoServers } from '../../diag/echo-servers.js';
import { InvalidArgumentError, isTetherError } from '../../errors.js';
import type { BenchModule } from '../../bench/bench-file.js';
import { ExitCode, reportError } from '../output.js';
import { checkPort, explainOpenError, DEFAULT_CALL_TIMEOUT_MS, DEFAULT_HANDSHAKE_TIMEOUT_MS } from './open.js';
import type { CliContext } from './index.js';
import type { DiagArgs } from './diag.js';
import { loopbackEchoTargets, readTlsCa } from './diag-impl.js';

/** One module to diagnose: a bench module, or a `--port` (named by its port string). */
export type DiagTarget = Omit<BenchModule, 'family'> & { family?: BenchModule['family'] };

/** One module's part of a {@link MultiDiagReport}: its name, family and the single-module report. */
export interface ModuleDiagReport extends DiagReport {
  /** Bench name, or the port string for `--port`. */
  name: string;
  /** The family the module reported in its hello (absent when it could not be opened). */
  family?: string;
  /** Wall time of this module, open to close (ms). */
  ms: number;
  /** Why the module could not be opened (the report then holds one failed `open + handshake` check). */
  error?: { code: string; message: string };
}

/** The `--json` document of a many-module diag. */
export interface MultiDiagReport {
  /** No check of any module failed, every module opened, and the run was not interrupted. */
  ok: boolean;
  /** Every check of every module ran (none skipped, not interrupted). A gate wants `ok && complete`. */
  complete: boolean;
  /** Stopped by Ctrl-C: the modules' reports are partial. */
  interrupted?: boolean;
  /** Totals over all modules. */
  passed: number;
  failed: number;
  skipped: number;
  /** Wall time of the whole run (ms). */
  ms: number;
  /** The bench file, for `--bench`. */
  bench?: string;
  /** One report per module, in the order given. */
  modules: ModuleDiagReport[];
}

/**
 * The exit code of a many-module run: 130 when interrupted; else 1 when any check failed
 * or any module could not be opened (whatever the reason: timeout, version); else 5 when
 * any check was skipped; else 0.
 */
export function multiDiagExitCode(r: MultiDiagReport): number {
  if (r.interrupted) return ExitCode.INTERRUPTED;
  if (!r.ok) return ExitCode.ERROR;
  if (!r.complete) return ExitCode.INCOMPLETE;
  return ExitCode.OK;
}

/**
 * The run's report from its modules' reports: totals summed, `ok` / `complete` true only
 * when true of every module, `interrupted` when any module was interrupted.
 * @param modules The module reports, in the order given. @param ms Wall time of the run (ms).
 * @param bench The bench file, for `--bench`.
 */
export function combineReports(modules: ModuleDiagReport[], ms: number, bench?: string): MultiDiagReport {
  const sum = (k: 'passed' | 'failed' | 'skipped') => modules.reduce((n, m) => n + m[k], 0);
  const interrupted = modules.some((m) => m.interrupted);
  return {
    ok: !interrupted && modules.every((m) => m.ok),
    complete: !interrupted && modules.every((m) => m.complete),
    ...(interrupted ? { interrupted: true } : {}),
    passed: sum('passed'),
    failed: sum('failed'),
    skipped: sum('skipped'),
    ms,
    ...(bench ? { bench } : {}),
    modules,
  };
}

const WORD = { pass: 'PASS', fail: 'FAIL', skip: 'SKIP', interrupted: 'INTR' } as const;

/**
 * The summary table: a header, one row per module × check (`MODULE CHECK STATUS MS
 * DETAIL`), then one total row per module and the closing line. Details are cut to
 * `detailWidth` characters (default 100).
 */
export function formatMultiTable(r: MultiDiagReport, detailWidth = 100): string[] {
  const rows: string[][] = [];
  for (const m of r.modules) for (const c of m.checks) rows.push([m.name, c.name, WORD[c.status], String(c.ms), cut(c.detail, detailWidth)]);
  const head = ['MODULE', 'CHECK', 'STATUS', 'MS', 'DETAIL'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const line = (x: string[]) => [x[0].padEnd(w[0]), x[1].padEnd(w[1]), x[2].padEnd(w[2]), x[3].padStart(w[3]), x[4]].join('  ').trimEnd();
  const out = [line(head), ...rows.map(line), ''];
  const sw = Math.max(6, ...r.modules.map((m) => m.name.length));
  out.push(['MODULE'.padEnd(sw), 'FAMILY  ', 'RESULT     ', 'PASS', 'FAIL', 'SKIP', '    MS'].join('  '));
  for (const m of r.modules) {
    const result = m.interrupted ? 'INTERRUPTED' : !m.ok ? 'FAIL' : !m.complete ? 'INCOMPLETE' : 'PASS';
    out.push([m.name.padEnd(sw), (m.family ?? '-').padEnd(8), result.padEnd(11), String(m.passed).padStart(4), String(m.failed).padStart(4), String(m.skipped).padStart(4), String(m.ms).padStart(6)].join('  '));
  }
  out.push(multiSummary(r));
  return out;
}

function cut(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 3)}...`;
}

/** The closing line of a many-module run. */
export function multiSummary(r: MultiDiagReport): string {
  const n = r.modules.length;
  const bad = r.modules.filter((m) => !m.ok).map((m) => m.name);
  const incomplete = r.modules.filter((m) => m.ok && !m.complete).map((m) => m.name);
  const counts = `${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped`;
  if (r.interrupted) return `interrupted: ${counts} over ${n} modules before Ctrl-C; the report is partial`;
  if (!r.ok) return `${bad.length} of ${n} modules failed (${bad.join(', ')}); ${counts}`;
  if (!r.complete) return `${n} modules passed, but ${incomplete.join(', ')} skipped checks: incomplete; ${counts}`;
  return `all ${n} modules passed all ${r.passed} checks in ${r.ms} ms`;
}

/**
 * The targets of `--port A --port B ...`: each named by its port, sharing the command's
 * options. A `sim` port given twice is two simulated modules, named `sim#1`, `sim#2`.
 * @throws InvalidArgumentError when another port is given twice (one module per port).
 */
export function targetsFromPorts(ports: readonly string[]): DiagTarget[] {
  return ports.map((port, i) => {
    if (!isSimPort(port) && ports.indexOf(port) !== i) throw new InvalidArgumentError(`--port ${port} is given twice: one module per port`, { port });
    const twice = ports.filter((p) => p === port).length > 1;
    return { name: twice ? `${port}#${i + 1}` : port, port, echo: {}, timeouts: {} };
  });
}

/** Run a many-module diag and print its table or JSON; sets the exit code. */
export async function runMultiDiag(targets: DiagTarget[], argv: DiagArgs, ctx: CliContext, bench?: string): Promise<void> {
  const json = !!argv.json;
  const out = (line: string) => {
    if (!json) process.stdout.write(line + '\n');
  };
  const abort = new AbortController();
  const onSigint = () => {
    if (abort.signal.aborted) process.exit(ExitCode.INTERRUPTED);
    abort.abort();
    setTimeout(() => process.exit(ExitCode.INTERRUPTED), 3000).unref();
  };
  process.on('SIGINT', onSigint);
  try {
    // Usage errors first, for every module, before any is opened.
    for (const t of targets) checkPort(t.port);
    const ca = readTlsCa(argv['tls-ca']);
    const caOf = (t: DiagTarget): string | undefined => {
      if (!t.echo.tlsCa) return ca;
      try {
        return readFileSync(t.echo.tlsCa, 'utf8');
      } catch (e) {
        throw new InvalidArgumentError(`${bench ?? 'bench'}: modules.${t.name}.echo.tls-ca: cannot read ${t.echo.tlsCa}: ${(e as Error).message}`);
      }
    };
    const cas = targets.map(caOf);
    out(`tether diag: ${targets.length} modules in parallel${bench ? ` from ${bench}` : ''}: ${targets.map((t) => `${t.name}${t.name === t.port ? '' : ` (${t.port})`}`).join(', ')}`);
    const t0 = performance.now();
    const reports = await Promise.all(targets.map((t, i) => diagnoseOne(t, cas[i], argv, abort.signal, (line) => !json && process.stderr.write(line + '\n'))));
    const r = combineReports(reports, Math.round(performance.now() - t0), bench);
    if (json) process.stdout.write(JSON.stringify(r) + '\n');
    else for (const l of formatMultiTable(r)) out(l);
    ctx.setExit(multiDiagExitCode(r));
  } catch (e) {
    ctx.setExit(reportError(e, json));
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Open, diagnose and close one module; never rejects (a failure to open is in the report). */
async function diagnoseOne(t: DiagTarget, ca: string | undefined, argv: DiagArgs, signal: AbortSignal, note: (line: string) => void): Promise<ModuleDiagReport> {
  const t0 = performance.now();
  let mod: TetherModule | undefined;
  let echo: EchoServers | undefined;
  const done = (report: DiagReport, extra: Partial<ModuleDiagReport> = {}): ModuleDiagReport => {
    const m: ModuleDiagReport = { name: t.name, ...(mod ? { family: mod.family } : {}), ...report, port: t.port, ms: Math.round(performance.now() - t0), ...extra };
    note(`[${t.name}] ${m.interrupted ? 'interrupted' : m.ok ? (m.complete ? 'passed' : 'passed, incomplete') : 'FAILED'}: ${m.passed} passed, ${m.failed} failed, ${m.skipped} skipped in ${m.ms} ms`);
    return m;
  };
  const checks: DiagCheck[] = [];
  try {
    const opening = connect(t.port, {
      baudRate: t.baud ?? argv.baud,
      timeoutMs: t.timeouts.call ?? argv.timeout ?? DEFAULT_CALL_TIMEOUT_MS,
      handshakeTimeoutMs: t.timeouts.handshake ?? argv.timeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      // --verbose: the module's log and UART lines on stderr, each line prefixed with the module's name
      sim: argv.verbose ? { log: (l) => process.stderr.write(`[${t.name}] [module] ${l}\n`) } : undefined,
    }).catch((e: unknown) => {
      throw explainOpenError(t.port, e);
    });
    const interrupted = new Promise<undefined>((resolve) => {
      if (signal.aborted) resolve(undefined);
      else signal.addEventListener('abort', () => resolve(undefined), { once: true });
    });
    mod = await Promise.race([opening, interrupted]);
    if (!mod) {
      opening.then((m) => m.close(), () => undefined).catch(() => undefined);
      return done(summarize(t.port, [{ name: 'open + handshake', ok: false, status: 'interrupted', ms: Math.round(performance.now() - t0), detail: 'interrupted before it finished', code: 'ABORTED' }], true));
    }
    if (argv.verbose) mod.rpc.logs.subscribe((l) => process.stderr.write(`[${t.name}] [${l.source}] ${l.text}\n`));
    if (t.family && mod.family !== t.family) {
      checks.push({ name: 'family', ok: false, status: 'fail', ms: 0, detail: `the module runs ${mod.family}; the bench file says ${t.family}`, code: 'FAMILY_MISMATCH' });
      return done(summarize(t.port, checks, false));
    }
    const simulated = isSimPort(t.port) || /-sim$/.test(mod.hello.fw ?? '');
    const given = { tcp: t.echo.tcp ?? argv.tcp, udp: t.echo.udp ?? argv.udp, tls: t.echo.tls ?? argv.tls, dns: t.echo.dns ?? argv.dns };
    let targets: Pick<DiagOptions, 'tcp' | 'udp' | 'tls' | 'dnsName'> = { tcp: given.tcp, udp: given.udp, tls: given.tls ? { ...given.tls, ca } : undefined, dnsName: given.dns };
    if (!given.tcp && !given.udp && !given.tls && simulated) {
      // as single-module diag: loopback echo services for a simulated module given none (no TLS for NodeMCU)
      ({ echo, targets } = await loopbackEchoTargets(mod.family, given.dns));
    }
    const report = await runDiag(mod, {
      ...targets,
      timeoutMs: t.timeouts.check ?? argv['check-timeout'],
      echoBytes: t.echoBytes ?? argv['echo-bytes'],
      signal,
      onProgress: (c, phase) => {
        if (phase === 'end') checks.push(c);
      },
    });
    return done(report);
  } catch (e) {
    if (signal.aborted) return done(summarize(t.port, checks, true));
    const code = isTetherError(e) ? e.code : 'ERROR';
    const message = e instanceof Error ? e.message : String(e);
    const failed: DiagCheck = { name: mod ? 'diag' : 'open + handshake', ok: false, status: 'fail', ms: Math.round(performance.now() - t0), detail: message, code };
    return done(summarize(t.port, [...checks, failed], false), { error: { code, message } });
  } finally {
    await mod?.close().catch(() => undefined);
    await echo?.close();
  }
}

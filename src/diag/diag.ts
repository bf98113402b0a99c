/**
 * `tether diag`: a field check of one module's network stack, through the agent. The
 * connections of the checks are the stream layer's (src/streams: `createConnection`,
 * `createSocket`), so a pass also means that layer works on the module.
 * Each check runs with a timeout and reports ok/fail, its duration (ms) and details.
 */
import { firstValueFrom } from 'rxjs';
import type { TetherModule } from '../api/connect.js';
import { isTetherError, TetherError, TimeoutError } from '../errors.js';
import { cappedEcho, closeStream, echoBytes, openStream, TLS_ECHO_MAX, udpEcho } from './echo.js';
import { runLuatChecks } from './luat-diag.js';
import { runNodemcuChecks } from './nodemcu-diag.js';

/** Where the echo checks connect to. */
export interface Endpoint {
  host: string;
  port: number;
}

/** Options of {@link runDiag}. */
export interface DiagOptions {
  /** TCP echo server (host, port) the module can reach. Omit to skip the TCP checks. */
  tcp?: Endpoint;
  /** UDP echo server. Omit to skip. */
  udp?: Endpoint;
  /** TLS echo server. Omit to skip. */
  tls?: Endpoint & { ca?: string };
  /**
   * Host name the DNS check resolves (LuatOS and Luat: by connecting to it on the TCP echo
   * port; NodeMCU: net.dns.resolve). Without it the DNS check is skipped: it never
   * defaults to the echo host, which may be an address.
   */
  dnsName?: string;
  /** Per-check timeout (ms). @default 15000 */
  timeoutMs?: number;
  /**
   * Bytes echoed by the TCP and TLS checks. @default 1024. The LuatOS TLS check echoes at
   * most {@link TLS_ECHO_MAX.luatos} and the Luat SSL check at most {@link TLS_ECHO_MAX.luat};
   * their detail says so when it capped the count.
   */
  echoBytes?: number;
  /** Called when a check starts and when it ends (progress). */
  onProgress?: (check: DiagCheck, phase: 'start' | 'end') => void;
  /**
   * Stops the diagnosis (Ctrl-C): the running check ends as interrupted, no further check
   * starts, and runDiag resolves with the partial report (`interrupted: true`).
   */
  signal?: AbortSignal;
}

export { TLS_ECHO_MAX, cappedEcho } from './echo.js';

/** One check's outcome. */
export interface DiagCheck {
  name: string;
  /** The check ran and passed. False for a failed and for a skipped check. */
  ok: boolean;
  /**
   * `pass`; `fail`; `skip` (not run: its server or name was not given, or an earlier step
   * failed); `interrupted` (the run was stopped while this check ran, code `ABORTED`).
   */
  status: 'pass' | 'fail' | 'skip' | 'interrupted';
  /** Duration in milliseconds. */
  ms: number;
  detail: string;
  /** Error code when it failed (`TIMEOUT`, `SOCKET`, `ABORTED` when interrupted, ...). */
  code?: string;
  /** The check did not run (see `detail` for why). */
  skipped?: boolean;
}

/** Whole report. */
export interface DiagReport {
  port: string;
  /** No check failed (and the run was not interrupted). Skipped checks do not make it false: see `complete`. */
  ok: boolean;
  /** Every check ran: none skipped, not interrupted. A gate wants `ok && complete`. */
  complete: boolean;
  /** Stopped early (Ctrl-C, {@link DiagOptions.signal}): `checks` holds what ran until then. */
  interrupted?: boolean;
  passed: number;
  failed: number;
  skipped: number;
  checks: DiagCheck[];
  module?: Record<string, unknown>;
}

/** The report of `checks` (counts, `ok`, `complete`). */
export function summarize(port: string, checks: DiagCheck[], interrupted: boolean, module?: Record<string, unknown>): DiagReport {
  const passed = checks.filter((c) => c.status === 'pass').length;
  const failed = checks.filter((c) => c.status === 'fail').length;
  const skipped = checks.filter((c) => c.status === 'skip').length;
  return {
    port,
    ok: failed === 0 && !interrupted,
    complete: skipped === 0 && !interrupted,
    ...(interrupted ? { interrupted: true } : {}),
    passed,
    failed,
    skipped,
    checks,
    ...(module ? { module } : {}),
  };
}

/**
 * Run the checks on an open module. Never throws for a failing check: the failure is in
 * the report (and `ok` is false); a skipped check makes `complete` false.
 */
export async function runDiag(mod: TetherModule, o: DiagOptions = {}): Promise<DiagReport> {
  const checks: DiagCheck[] = [];
  const timeoutMs = o.timeoutMs ?? 15000;
  const signal = o.signal;
  let interrupted = !!signal?.aborted;
  const aborted = new Promise<never>((_, reject) => {
    if (!signal) return;
    const fire = () => reject(new TetherError('ABORTED', 'interrupted'));
    if (signal.aborted) fire();
    else signal.addEventListener('abort', fire, { once: true });
  });
  aborted.catch(() => undefined);
  /** Run one check; `measuredMs` reports a duration measured elsewhere (the handshake happened at open). */
  const run = async (name: string, fn: () => Promise<string>, measuredMs?: number): Promise<boolean> => {
    if (interrupted || signal?.aborted) {
      interrupted = true;
      return false;
    }
    const c: DiagCheck = { name, ok: false, status: 'fail', ms: 0, detail: '' };
    o.onProgress?.(c, 'start');
    const t0 = performance.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const work = fn();
      work.catch(() => undefined); // it may settle after an interruption
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TimeoutError(`${name}: no result within ${timeoutMs} ms`, { ms: timeoutMs })), timeoutMs);
      });
      c.detail = await Promise.race([work, timedOut, aborted]);
      c.ok = true;
      c.status = 'pass';
    } catch (e) {
      if (signal?.aborted) {
        interrupted = true;
        c.status = 'interrupted';
        c.detail = 'interrupted before it finished';
        c.code = 'ABORTED';
      } else {
        c.detail = (e as Error).message;
        c.code = isTetherError(e) ? e.code : 'ERROR';
      }
    }
    clearTimeout(timer);
    c.ms = measuredMs ?? Math.round(performance.now() - t0);
    checks.push(c);
    o.onProgress?.(c, 'end');
    return c.ok;
  };
  const skip = (name: string, why: string) => {
    if (interrupted || signal?.aborted) return;
    const c: DiagCheck = { name, ok: false, status: 'skip', ms: 0, detail: `skipped: ${why}`, skipped: true };
    checks.push(c);
    o.onProgress?.(c, 'end');
  };
  const report = (info?: unknown) => summarize(mod.port, checks, interrupted || !!signal?.aborted, info as Record<string, unknown> | undefined);

  const info = await Promise.race([mod.info().catch(() => undefined), aborted.catch(() => undefined)]);
  await run('handshake', async () => {
    const h = mod.hello;
    return `${h.family} agent ${h.agent}, firmware ${h.fw ?? '?'} (${h.bsp ?? '?'}), ${h.lua ?? 'Lua ?'}, heap ${h.heap ?? '?'} KB, frame ${h.maxframe} B, window ${h.window} B`;
  }, mod.rpc.stats.handshakeMs);
  if (mod.family === 'luat') {
    await runLuatChecks(mod, { ...o, timeoutMs }, { run, skip });
    return report(info);
  }
  if (mod.family === 'nodemcu') {
    await runNodemcuChecks(mod, { ...o, timeoutMs }, { run, skip });
    return report(info);
  }
  if (mod.family !== 'luatos') {
    skip('network', `no diag checks for family ${mod.family} yet`);
    return report(info);
  }
  const socket = mod.socket;
  const netOk = await run('adapter ready + local IP', async () => {
    const [ready, index] = await firstValueFrom(socket.adapter());
    if (!ready) throw new Error(`no network adapter is ready (socket.adapter() = false, ${index})`);
    const ip = await firstValueFrom(socket.localIP(index));
    if (ip.length === 0) throw new Error(`adapter ${index} is ready but has no IP`);
    const reg = info?.registrationText ? `, cellular ${info.registrationText}, CSQ ${info.csq}` : '';
    return `adapter ${index} ready, IP ${ip[0]} mask ${ip[1]} gw ${ip[2]}${reg}`;
  });

  if (!netOk) {
    for (const n of ['DNS', 'TCP connect + echo + close', 'UDP echo', 'TLS connect + echo']) skip(n, 'network not ready');
  } else {
    const dnsName = o.dnsName;
    if (!dnsName) skip('DNS', 'no --dns NAME given');
    else if (!o.tcp) skip(`DNS (${dnsName})`, 'needs --tcp: the check connects to the name on the TCP echo port');
    if (o.tcp) {
      const tcp = o.tcp;
      if (dnsName) await run(`DNS (${dnsName})`, async () => {
        const conn = await openStream(mod, { host: dnsName, port: tcp.port, connectTimeoutMs: timeoutMs });
        try {
          // the LuatOS driver fills remoteAddress from socket.remoteIP once a name was resolved
          if (!conn.remoteAddress || conn.remoteAddress === dnsName) throw new Error(`connected, but socket.remoteIP gave no address for ${dnsName}`);
          return `${dnsName} -> ${conn.remoteAddress}`;
        } finally {
          await closeStream(conn);
        }
      });
      await run(`TCP connect + echo + close (${tcp.host}:${tcp.port})`, async () => {
        const t0 = performance.now();
        const conn = await openStream(mod, { host: tcp.host, port: tcp.port, connectTimeoutMs: timeoutMs });
        const tConn = Math.round(performance.now() - t0);
        let r: string;
        try {
          r = await echoBytes(conn, o.echoBytes ?? 1024);
        } catch (e) {
          conn.destroy();
          throw e;
        }
        const t1 = performance.now();
        await closeStream(conn);
        return `connected in ${tConn} ms, ${r}, closed in ${Math.round(performance.now() - t1)} ms`;
      });
    } else skip('TCP connect + echo + close', 'no --tcp echo server given');
    if (o.udp) {
      const udp = o.udp;
      await run(`UDP echo (${udp.host}:${udp.port})`, async () => {
        const from = await udpEcho(mod, udp.host, udp.port, 64, Math.floor(timeoutMs * 0.8));
        return `64-byte datagram echoed from ${from.address}:${from.port}`;
      });
    } else skip('UDP echo', 'no --udp echo server given');
    if (o.tls) {
      const tls = o.tls;
      await run(`TLS connect + echo (${tls.host}:${tls.port})`, async () => {
        const conn = await openStream(mod, { host: tls.host, port: tls.port, tls: true, ca: tls.ca, connectTimeoutMs: timeoutMs });
        try {
          const { size, note } = cappedEcho(o.echoBytes ?? 1024, TLS_ECHO_MAX.luatos, 'TLS');
          const r = await echoBytes(conn, size);
          return `${tls.ca ? 'server certificate verified, ' : 'no CA given (not verified), '}${r}${note}`;
        } finally {
          await closeStream(conn);
        }
      });
    } else skip('TLS connect + echo', 'no --tls echo server given');
  }
  return report(info);
}


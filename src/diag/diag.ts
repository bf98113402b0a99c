/**
 * `tether diag`: a field check of one module's network stack, through the agent.
 * Each check runs with a timeout and reports ok/fail, its duration (ms) and details.
 */
import { firstValueFrom, lastValueFrom, take, timeout } from 'rxjs';
import { randomBytes } from 'node:crypto';
import type { TetherModule } from '../api/connect.js';
import { openSocket, type LuatosConnection } from '../api/luatos/connection.js';
import { isTetherError, TimeoutError } from '../errors.js';
import { withTimeout } from '../util/with-timeout.js';
import { echoBytes } from './echo.js';
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
  /** Host name the DNS check resolves (by connecting to it on the TCP echo port). @default the TCP host */
  dnsName?: string;
  /** Per-check timeout (ms). @default 15000 */
  timeoutMs?: number;
  /** Bytes echoed by the TCP and TLS checks. @default 1024 */
  echoBytes?: number;
  /** Called when a check starts and when it ends (progress). */
  onProgress?: (check: DiagCheck, phase: 'start' | 'end') => void;
}

/** One check's outcome. */
export interface DiagCheck {
  name: string;
  ok: boolean;
  /** Duration in milliseconds. */
  ms: number;
  detail: string;
  /** Error code when it failed (`TIMEOUT`, `SOCKET`, ...). */
  code?: string;
  skipped?: boolean;
}

/** Whole report. */
export interface DiagReport {
  port: string;
  ok: boolean;
  checks: DiagCheck[];
  module?: Record<string, unknown>;
}

/**
 * Run the checks on an open LuatOS module. Never throws for a failing check: the
 * failure is in the report (and `ok` is false).
 */
export async function runDiag(mod: TetherModule, o: DiagOptions = {}): Promise<DiagReport> {
  const checks: DiagCheck[] = [];
  const timeoutMs = o.timeoutMs ?? 15000;
  /** Run one check; `measuredMs` reports a duration measured elsewhere (the handshake happened at open). */
  const run = async (name: string, fn: () => Promise<string>, measuredMs?: number): Promise<boolean> => {
    const c: DiagCheck = { name, ok: false, ms: 0, detail: '' };
    o.onProgress?.(c, 'start');
    const t0 = performance.now();
    try {
      c.detail = await withTimeout(fn(), timeoutMs, () => new TimeoutError(`${name}: no result within ${timeoutMs} ms`, { ms: timeoutMs }));
      c.ok = true;
    } catch (e) {
      c.detail = (e as Error).message;
      c.code = isTetherError(e) ? e.code : 'ERROR';
    }
    c.ms = measuredMs ?? Math.round(performance.now() - t0);
    checks.push(c);
    o.onProgress?.(c, 'end');
    return c.ok;
  };
  const skip = (name: string, why: string) => {
    const c: DiagCheck = { name, ok: true, ms: 0, detail: `skipped: ${why}`, skipped: true };
    checks.push(c);
    o.onProgress?.(c, 'end');
  };

  const info = await mod.info().catch(() => undefined);
  await run('handshake', async () => {
    const h = mod.hello;
    return `${h.family} agent ${h.agent}, firmware ${h.fw ?? '?'} (${h.bsp ?? '?'}), ${h.lua ?? 'Lua ?'}, heap ${h.heap ?? '?'} KB, frame ${h.maxframe} B, window ${h.window} B`;
  }, mod.rpc.stats.handshakeMs);
  if (mod.family === 'luat') {
    await runLuatChecks(mod, { ...o, timeoutMs }, { run, skip });
    return { port: mod.port, ok: checks.every((c) => c.ok), checks, module: info as unknown as Record<string, unknown> };
  }
  if (mod.family === 'nodemcu') {
    await runNodemcuChecks(mod, { ...o, timeoutMs }, { run, skip });
    return { port: mod.port, ok: checks.every((c) => c.ok), checks, module: info as unknown as Record<string, unknown> };
  }
  if (mod.family !== 'luatos') {
    skip('network', `no diag checks for family ${mod.family} yet`);
    return { port: mod.port, ok: checks.every((c) => c.ok), checks, module: info as unknown as Record<string, unknown> };
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

  const echo = (conn: LuatosConnection, size: number) => echoBytes(conn, size);

  if (!netOk) {
    for (const n of ['DNS', 'TCP connect + echo + close', 'UDP echo', 'TLS connect + echo']) skip(n, 'network not ready');
  } else {
    if (o.tcp) {
      const tcp = o.tcp;
      const dnsName = o.dnsName ?? tcp.host;
      await run(`DNS (${dnsName})`, async () => {
        const conn = await firstValueFrom(openSocket(socket, dnsName, tcp.port, { timeoutMs }));
        try {
          const ips = (await firstValueFrom(socket.remoteIP(conn.ctrl))).filter((x) => x);
          if (ips.length === 0) throw new Error(`connected, but socket.remoteIP gave no address for ${dnsName}`);
          return `${dnsName} -> ${ips.join(', ')}`;
        } finally {
          await conn.close();
        }
      });
      await run(`TCP connect + echo + close (${tcp.host}:${tcp.port})`, async () => {
        const t0 = performance.now();
        const conn = await firstValueFrom(openSocket(socket, tcp.host, tcp.port, { timeoutMs }));
        const tConn = Math.round(performance.now() - t0);
        const r = await echo(conn, o.echoBytes ?? 1024);
        const t1 = performance.now();
        await conn.close();
        return `connected in ${tConn} ms, ${r}, closed in ${Math.round(performance.now() - t1)} ms`;
      });
    } else {
      skip('DNS', 'no --tcp echo server given');
      skip('TCP connect + echo + close', 'no --tcp echo server given');
    }
    if (o.udp) {
      const udp = o.udp;
      await run(`UDP echo (${udp.host}:${udp.port})`, async () => {
        const conn = await firstValueFrom(openSocket(socket, udp.host, udp.port, { udp: true, timeoutMs }));
        try {
          const payload = randomBytes(64);
          const reply = firstValueFrom(conn.datagrams().pipe(take(1), timeout(timeoutMs)));
          await lastValueFrom(conn.send(payload));
          const d = await reply;
          if (!Buffer.from(d.data).equals(payload)) throw new Error('the datagram came back different');
          return `64-byte datagram echoed from ${d.ip}:${d.port}`;
        } finally {
          await conn.close();
        }
      });
    } else skip('UDP echo', 'no --udp echo server given');
    if (o.tls) {
      const tls = o.tls;
      await run(`TLS connect + echo (${tls.host}:${tls.port})`, async () => {
        const conn = await firstValueFrom(openSocket(socket, tls.host, tls.port, { tls: true, ca: tls.ca, timeoutMs }));
        try {
          const r = await echo(conn, Math.min(o.echoBytes ?? 1024, 1024));
          return `${tls.ca ? 'server certificate verified, ' : 'no CA given (not verified), '}${r}`;
        } finally {
          await conn.close();
        }
      });
    } else skip('TLS connect + echo', 'no --tls echo server given');
  }
  return { port: mod.port, ok: checks.every((c) => c.ok), checks, module: info as unknown as Record<string, unknown> };
}


/**
 * `tether diag` checks for the Luat family (socketcore): registration, signal and IMEI,
 * data-link readiness, DNS, TCP echo, UDP echo, SSL echo. Called by runDiag (diag.ts)
 * after the handshake check; every check goes through the `socketcore` facade and its
 * helpers, so a pass also means the core's rules (one send in flight, every RECV_IND
 * drained, close/CLOSE_CNF/destroy) held.
 */
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { randomBytes } from 'node:crypto';
import type { TetherModule } from '../api/connect.js';
import { openConnection, waitReady, type LuatConnection } from '../api/luat/connection.js';
import type { DiagOptions } from './diag.js';
import { cappedEcho, echoBytes, TLS_ECHO_MAX } from './echo.js';

/** How the checks report (provided by runDiag). */
export interface CheckRunner {
  run(name: string, fn: () => Promise<string>): Promise<boolean>;
  skip(name: string, why: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Bytes echoed byte-exact through `conn`; returns a detail line. */
async function echo(conn: LuatConnection, size: number): Promise<string> {
  const detail = await echoBytes(conn, size);
  const st = conn.stats;
  return `${detail} (${st.sends} sock_send, at most ${st.maxSendsInFlight} in flight; ${st.recvInds} RECV_IND drained, largest ${st.maxRecvLen} B)`;
}

/** Run the Luat checks on an open module (family `luat`). */
export async function runLuatChecks(mod: TetherModule, o: DiagOptions, r: CheckRunner): Promise<void> {
  const sc = mod.socketcore;
  const timeoutMs = o.timeoutMs ?? 15000;
  const h = mod.hello;
  await r.run('registration + signal + IMEI', async () => {
    const deadline = Date.now() + Math.floor(timeoutMs * 0.8); // inside the runner's own timeout
    let [state] = await firstValueFrom(sc.getState());
    while (state !== 'REGISTERED' && Date.now() < deadline) {
      await sleep(500);
      [state] = await firstValueFrom(sc.getState());
    }
    if (state !== 'REGISTERED') throw new Error(`net.getState() is ${state} after ${timeoutMs} ms (not registered)`);
    let [imei] = await firstValueFrom(sc.getImei());
    while (imei === '' && Date.now() < deadline) {
      await sleep(200);
      [imei] = await firstValueFrom(sc.getImei());
    }
    let [rssi] = await firstValueFrom(sc.getRssi());
    if (rssi === 0 && h.caps.includes('net.csqQueryPoll')) {
      // RSSI is cached: ask for a fresh CSQ query and read it back
      await firstValueFrom(sc.csqQueryPoll());
      await sleep(500);
      [rssi] = await firstValueFrom(sc.getRssi());
    }
    const core = `${h.fw ?? '?'} (${h.raw.get('float') === false ? 'integer-only' : 'float'} core)`;
    return `REGISTERED, RSSI ${rssi}/31, IMEI ${imei || '(not read yet)'}, ${core}`;
  });
  const ready = await r.run('data link ready (IP_READY_IND)', async () => {
    const t0 = Date.now();
    await waitReady(sc, timeoutMs);
    return `link.isReady() true${Date.now() - t0 > 50 ? ` after ${Date.now() - t0} ms` : ''}`;
  });
  const names = ['DNS', 'TCP connect + echo + close', 'UDP echo', 'SSL connect + echo'];
  if (!ready) {
    for (const n of names) r.skip(n, 'the data link is not up');
    return;
  }
  const common = { timeoutMs, waitReady: false };
  const dnsName = o.dnsName;
  if (!dnsName) r.skip('DNS', 'no --dns NAME given');
  else if (!o.tcp) r.skip(`DNS (${dnsName})`, 'needs --tcp: the check connects to the name on the TCP echo port');
  if (o.tcp) {
    const tcp = o.tcp;
    if (dnsName) await r.run(`DNS (${dnsName})`, async () => {
      const conn = await firstValueFrom(openConnection(sc, dnsName, tcp.port, common));
      await conn.close();
      return `${dnsName} resolved by the module and connected (CONN_CNF 0, socket ${conn.index})`;
    });
    await r.run(`TCP connect + echo + close (${tcp.host}:${tcp.port})`, async () => {
      const t0 = performance.now();
      const conn = await firstValueFrom(openConnection(sc, tcp.host, tcp.port, common));
      const tConn = Math.round(performance.now() - t0);
      try {
        const detail = await echo(conn, o.echoBytes ?? 1024);
        const t1 = performance.now();
        await conn.close();
        return `connected in ${tConn} ms, ${detail}, closed (close, CLOSE_CNF, destroy) in ${Math.round(performance.now() - t1)} ms`;
      } finally {
        await conn.close();
      }
    });
  } else r.skip('TCP connect + echo + close', 'no --tcp echo server given');
  if (o.udp) {
    const udp = o.udp;
    await r.run(`UDP echo (${udp.host}:${udp.port})`, async () => {
      const conn = await firstValueFrom(openConnection(sc, udp.host, udp.port, { ...common, type: 'udp' }));
      try {
        const payload = randomBytes(64);
        const reply = firstValueFrom(conn.datagrams());
        await lastValueFrom(conn.send(payload));
        const wait = Math.floor(timeoutMs * 0.6); // inside the runner's timeout, so the slot is freed before the report
        let timer: NodeJS.Timeout | undefined;
        const d = await Promise.race([reply, new Promise<undefined>((res) => (timer = setTimeout(res, wait, undefined)))]).finally(() => clearTimeout(timer));
        if (!d) throw new Error(`no datagram back within ${wait} ms`);
        if (!Buffer.from(d).equals(payload)) throw new Error('the datagram came back different');
        return '64-byte datagram echoed';
      } finally {
        await conn.close();
      }
    });
  } else r.skip('UDP echo', 'no --udp echo server given');
  if (o.tls) {
    const tls = o.tls;
    await r.run(`SSL connect + echo (${tls.host}:${tls.port})`, async () => {
      const conn = await firstValueFrom(openConnection(sc, tls.host, tls.port, { ...common, type: 'ssl', cert: tls.ca ? { caCert: tls.ca } : undefined, strictCert: !!tls.ca }));
      try {
        const { size, note } = cappedEcho(o.echoBytes ?? 1024, TLS_ECHO_MAX.luat, 'SSL');
        const detail = await echo(conn, size);
        return `${tls.ca ? 'server certificate verified (insist 0), ' : 'no CA given (not verified), '}${detail}${note}`;
      } finally {
        await conn.close();
      }
    });
  } else r.skip('SSL connect + echo', 'no --tls echo server given');
}

/**
 * `tether diag` checks for the Luat family (socketcore): registration, signal and IMEI,
 * data-link readiness, DNS, TCP echo, UDP echo, SSL echo. Called by runDiag (diag.ts)
 * after the handshake check; every connection is the stream layer's (src/streams, on the
 * `socketcore` facade through the Luat driver), so a pass also means the core's rules (one send in flight, every RECV_IND
 * drained, close/CLOSE_CNF/destroy) held.
 */
import { firstValueFrom } from 'rxjs';
import type { TetherModule } from '../api/connect.js';
import { waitReady } from '../streams/drivers/luat-conn.js';
import type { SocketStream } from '../streams/index.js';
import type { DiagOptions } from './diag.js';
import { cappedEcho, closeStream, echoBytes, openStream, TLS_ECHO_MAX, udpEcho } from './echo.js';

/** How the checks report (provided by runDiag). */
export interface CheckRunner {
  run(name: string, fn: () => Promise<string>): Promise<boolean>;
  skip(name: string, why: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Bytes echoed byte-exact through `conn`; returns a detail line with the driver's socketcore counters. */
async function echo(conn: SocketStream, size: number): Promise<string> {
  const detail = await echoBytes(conn, size);
  const st = conn.driverStats ?? {};
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
  const common = { connectTimeoutMs: timeoutMs };
  const dnsName = o.dnsName;
  if (!dnsName) r.skip('DNS', 'no --dns NAME given');
  else if (!o.tcp) r.skip(`DNS (${dnsName})`, 'needs --tcp: the check connects to the name on the TCP echo port');
  if (o.tcp) {
    const tcp = o.tcp;
    if (dnsName) await r.run(`DNS (${dnsName})`, async () => {
      const conn = await openStream(mod, { ...common, host: dnsName, port: tcp.port });
      await closeStream(conn);
      return `${dnsName} resolved by the module and connected (CONN_CNF 0)`;
    });
    await r.run(`TCP connect + echo + close (${tcp.host}:${tcp.port})`, async () => {
      const t0 = performance.now();
      const conn = await openStream(mod, { ...common, host: tcp.host, port: tcp.port });
      const tConn = Math.round(performance.now() - t0);
      try {
        const detail = await echo(conn, o.echoBytes ?? 1024);
        const t1 = performance.now();
        await closeStream(conn);
        return `connected in ${tConn} ms, ${detail}, closed (close, CLOSE_CNF, destroy) in ${Math.round(performance.now() - t1)} ms`;
      } finally {
        conn.destroy();
      }
    });
  } else r.skip('TCP connect + echo + close', 'no --tcp echo server given');
  if (o.udp) {
    const udp = o.udp;
    await r.run(`UDP echo (${udp.host}:${udp.port})`, async () => {
      // the reply wait stays inside the runner's timeout, so the slot is freed before the report
      await udpEcho(mod, udp.host, udp.port, 64, Math.floor(timeoutMs * 0.6));
      return '64-byte datagram echoed';
    });
  } else r.skip('UDP echo', 'no --udp echo server given');
  if (o.tls) {
    const tls = o.tls;
    await r.run(`SSL connect + echo (${tls.host}:${tls.port})`, async () => {
      // an SSL socket; with a CA the core verifies the server (insist 0: strictCert)
      const conn = await openStream(mod, { ...common, host: tls.host, port: tls.port, tls: true, ca: tls.ca });
      try {
        const { size, note } = cappedEcho(o.echoBytes ?? 1024, TLS_ECHO_MAX.luat, 'SSL');
        const detail = await echo(conn, size);
        return `${tls.ca ? 'server certificate verified (insist 0), ' : 'no CA given (not verified), '}${detail}${note}`;
      } finally {
        await closeStream(conn);
      }
    });
  } else r.skip('SSL connect + echo', 'no --tls echo server given');
}

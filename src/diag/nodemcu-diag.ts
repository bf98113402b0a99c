/**
 * `tether diag` checks for the NodeMCU family (ESP8266 `net`): WiFi station status and
 * IP, DNS, TCP echo, UDP echo (port and ip of the reply), ping. Called by runDiag
 * (diag.ts) after the handshake check. Everything goes through the `net` facade (the TCP
 * connection through the stream layer's NodeMCU driver on it), so a pass also means the firmware rules held (one send in flight until
 * "sent", chunks within the 2920-byte buffer, host-side connect timeout).
 * The default build has no TLS: a TLS target is skipped with that reason.
 */
import { firstValueFrom, lastValueFrom, take, timeout, toArray } from 'rxjs';
import { randomBytes } from 'node:crypto';
import type { TetherModule } from '../api/connect.js';
import { NodeMcuWifi } from '../api/nodemcu/net.js';
import type { DiagOptions } from './diag.js';
import { closeStream, echoBytes, openStream } from './echo.js';

/** How the checks report (provided by runDiag). */
export interface NodemcuCheckRunner {
  run(name: string, fn: () => Promise<string>): Promise<boolean>;
  skip(name: string, why: string): void;
}

export async function runNodemcuChecks(mod: TetherModule, o: DiagOptions & { timeoutMs: number }, r: NodemcuCheckRunner): Promise<void> {
  const net = mod.net;
  const timeoutMs = o.timeoutMs;
  let gateway: string | undefined;
  const wifiOk = await r.run('WiFi station status + IP', async () => {
    const st = await firstValueFrom(net.wifi.status());
    const ip = await firstValueFrom(net.wifi.getip());
    const heap = await firstValueFrom(net.node.heap()).catch(() => undefined);
    const text = `wifi.sta.status() = ${st} (${NodeMcuWifi.STATUS[st] ?? '?'})`;
    if (st !== 5 || !ip) throw new Error(`${text}: the station has no IP address`);
    gateway = ip.gateway;
    return `${text}, IP ${ip.ip} mask ${ip.netmask} gw ${ip.gateway}${heap !== undefined ? `, free heap ${heap} B` : ''}`;
  });
  if (!wifiOk) {
    for (const n of ['DNS', 'TCP connect + echo + close', 'UDP echo', 'ping']) r.skip(n, 'WiFi not connected');
    return;
  }
  const tcp = o.tcp;
  const dnsName = o.dnsName;
  if (dnsName) {
    await r.run(`DNS (${dnsName})`, async () => {
      const ip = await firstValueFrom(net.dns.resolve(dnsName));
      if (!ip) throw new Error(`net.dns.resolve("${dnsName}") gave no address`);
      const server = await firstValueFrom(net.dns.getdnsserver(0)).catch(() => null);
      return `${dnsName} -> ${ip}${server ? ` (DNS server ${server})` : ''}`;
    });
  } else r.skip('DNS', 'no --dns NAME given');
  if (tcp) {
    await r.run(`TCP connect + echo + close (${tcp.host}:${tcp.port})`, async () => {
      const t0 = performance.now();
      const conn = await openStream(mod, { host: tcp.host, port: tcp.port, connectTimeoutMs: timeoutMs });
      const tConn = Math.round(performance.now() - t0);
      try {
        const res = await echoBytes(conn, o.echoBytes ?? 1024);
        return `connected in ${tConn} ms, ${res} (sends of <= 1460 bytes, one in flight until "sent")`;
      } finally {
        await closeStream(conn);
      }
    });
  } else r.skip('TCP connect + echo + close', 'no --tcp echo server given');
  if (o.udp) {
    const udp = o.udp;
    await r.run(`UDP echo (${udp.host}:${udp.port})`, async () => {
      const ip = /^\d+\.\d+\.\d+\.\d+$/.test(udp.host) ? udp.host : await firstValueFrom(net.dns.resolve(udp.host));
      if (!ip) throw new Error(`cannot resolve ${udp.host}`);
      const u = await firstValueFrom(net.createUDPSocket());
      try {
        await lastValueFrom(u.on('receive'), { defaultValue: undefined });
        await lastValueFrom(u.listen(0), { defaultValue: undefined });
        const payload = randomBytes(64);
        const reply = firstValueFrom(u.receive$.pipe(take(1), timeout(timeoutMs)));
        await lastValueFrom(u.send(udp.port, ip, payload), { defaultValue: undefined });
        const d = await reply;
        if (!Buffer.from(d.data).equals(payload)) throw new Error('the datagram came back different');
        return `64-byte datagram echoed from ${d.ip}:${d.port} (receive gives port, then ip)`;
      } finally {
        await lastValueFrom(u.release(), { defaultValue: undefined }).catch(() => undefined);
      }
    });
  } else r.skip('UDP echo', 'no --udp echo server given');
  const target = tcp?.host && /^\d+\.\d+\.\d+\.\d+$/.test(tcp.host) ? tcp.host : gateway;
  if (target) {
    await r.run(`ping (${target})`, async () => {
      const evs = await lastValueFrom(net.ping(target, 2).pipe(toArray()));
      const replies = evs.filter((e) => e.type === 'reply' && e.bytes > 0);
      if (replies.length === 0) throw new Error(`no answer from ${target}`);
      const rtts = replies.map((e) => (e.type === 'reply' ? e.rtt ?? 0 : 0));
      return `${replies.length} of 2 answered, rtt ${Math.min(...rtts)}..${Math.max(...rtts)} ms`;
    });
  } else r.skip('ping', 'no target (no gateway, no --tcp IP)');
  if (o.tls) r.skip('TLS connect + echo', 'the default NodeMCU build has no TLS (tls module)');
}

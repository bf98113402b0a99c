/**
 * Hardware-in-the-loop conformance for LuatOS (Air780E), Luat (Air724UG) and NodeMCU
 * (ESP8266) modules (npm run test:hil). The same checks run against a real module, a
 * ser2net port, or the simulators. Which modules (src/bench/hil-env.ts, README "Test a real module"):
 *
 *   TETHER_TEST_BENCH    a bench file (docs/bench.md): every module in it, or those named in
 *                        TETHER_TEST_MODULES=a,b
 *   TETHER_TEST_PORT     one module: /dev/ttyUSB0, serial:SERIALNO, tcp://host:port, sim,
 *                        sim:luat or sim:nodemcu
 *   TETHER_TEST_FAMILY   luatos | luat | nodemcu: the family of a TETHER_TEST_PORT that is
 *                        not sim:... (the suite checks the module runs it)
 *   TETHER_BAUD          serial baud rate (default 115200)
 *   TETHER_ECHO_TCP      HOST:PORT of a TCP echo server the module can reach
 *   TETHER_ECHO_UDP      HOST:PORT of a UDP echo server
 *   TETHER_ECHO_TLS      HOST:PORT of a TLS echo server (LuatOS, Luat); TETHER_ECHO_TLS_CA = PEM file to verify it
 *
 * Per module: hello (family, protocol, the family's functions), the network is up, TCP
 * echo of 64 KiB byte-exact, a UDP datagram echoed, TLS connect + echo (LuatOS, Luat;
 * the default NodeMCU build has no TLS), no message lost by the link.
 * For a simulated module the echo servers default to loopback services started here.
 * Nothing is skipped: a missing setting fails with what to set.
 */
import { PROTOCOL_VERSION } from '../src/codec/constants.js';
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { firstValueFrom, lastValueFrom, take, timeout } from 'rxjs';
import { connect, isSimPort, type TetherModule } from '../src/api/connect.js';
import { waitReady } from '../src/streams/drivers/luat-conn.js';
import { startEchoServers, type EchoServers } from '../src/diag/echo-servers.js';
import { closeStream, echoBytes, openStream, udpEcho } from '../src/diag/echo.js';
import { fixturePath } from '../src/diag/fixtures.js';
import { hilTargets, missingEcho, type HilTarget } from '../src/bench/hil-env.js';

/** Functions each family's agent must expose (its firmware's own names). */
const FAMILY_CAPS: Record<string, string[]> = {
  luatos: ['create', 'debug', 'config', 'linkup', 'connect', 'discon', 'close', 'tx', 'rx', 'read', 'wait', 'listen', 'accept', 'state', 'release', 'setDNS', 'sslLog', 'localIP', 'adapter', 'remoteIP', 'sntp', 'ntptm', 'sntp_port'].map((f) => `socket.${f}`),
  luat: ['sock_conn', 'sock_send', 'sock_close', 'sock_recv', 'sock_destroy'].map((f) => `socketcore.${f}`),
  nodemcu: ['net.createConnection', 'net.createServer', 'net.createUDPSocket', 'net.dns.resolve', 'tcpsocket.send', 'udpsocket.send', 'wifi.sta.status', 'wifi.sta.getip'],
};

/** Bytes of the TCP echo. */
const TCP_ECHO_BYTES = 64 * 1024;
/** Bytes of the TLS echo (within the Luat SSL check's 4096). */
const TLS_ECHO_BYTES = 2048;

let targets: HilTarget[] = [];
let configError: Error | undefined;
try {
  targets = hilTargets();
} catch (e) {
  configError = e as Error;
}

if (configError) {
  test('HIL configuration', () => {
    throw configError;
  });
}

for (const t of targets) {
  describe(`${t.name} (${t.family}, ${t.port})`, () => {
    let mod: TetherModule;
    let echo: EchoServers | undefined;
    let tcp: { host: string; port: number };
    let udp: { host: string; port: number };
    let tls: { host: string; port: number; ca?: string } | undefined;
    const stepMs = t.timeouts.check ?? 30000;

    before(async () => {
      mod = await connect(t.port, { baudRate: t.baud ?? 115200, timeoutMs: t.timeouts.call ?? 15000, handshakeTimeoutMs: t.timeouts.handshake ?? 15000 });
      const simulated = isSimPort(t.port) || /-sim$/.test(mod.hello.fw ?? '');
      if (simulated && !t.echo.tcp && !t.echo.udp && !t.echo.tls) {
        const cert = readFileSync(fixturePath('tls', 'server.crt'), 'utf8');
        echo = await startEchoServers({ tls: { key: readFileSync(fixturePath('tls', 'server.key')), cert } });
        tcp = echo.tcp;
        udp = echo.udp;
        tls = { host: 'localhost', port: echo.tls!.port, ca: cert };
        return;
      }
      const missing = missingEcho(t);
      assert.deepEqual(missing, [], `${t.name}: a real module needs echo servers it can reach: set ${missing.map((k) => `TETHER_ECHO_${k.toUpperCase()}`).join(', ')} (HOST:PORT), or echo.${missing.join('/echo.')} in the bench file`);
      tcp = t.echo.tcp!;
      udp = t.echo.udp!;
      tls = t.echo.tls ? { ...t.echo.tls, ca: t.echo.tlsCa ? readFileSync(t.echo.tlsCa, 'utf8') : undefined } : undefined;
    });

    after(async () => {
      await mod?.close();
      await echo?.close();
    });

    test(`hello: ${t.family} agent, protocol ${PROTOCOL_VERSION}, the family's functions`, () => {
      assert.equal(mod.family, t.family, `the module runs ${mod.family}, expected ${t.family}`);
      assert.equal(mod.hello.proto, PROTOCOL_VERSION);
      for (const f of FAMILY_CAPS[t.family]) assert.ok(mod.hello.caps.includes(f), f);
    });

    if (t.family === 'luatos') {
      test('a network adapter is ready and has an IP', async () => {
        const [ready, index] = await firstValueFrom(mod.socket.adapter());
        assert.equal(ready, true, `socket.adapter() = (false, ${index}): the module is not online`);
        const ip = await firstValueFrom(mod.socket.localIP(index));
        assert.equal(ip.length, 4);
      });
      test('TCP: 64 KiB echoed byte-exact', async () => {
        const conn = await openStream(mod, { host: tcp.host, port: tcp.port, connectTimeoutMs: stepMs });
        try {
          await echoBytes(conn, TCP_ECHO_BYTES);
        } finally {
          await closeStream(conn);
        }
      });
      test('UDP: a datagram comes back with the server address', async () => {
        const from = await udpEcho(mod, udp.host, udp.port, 64, 10000);
        assert.equal(from.port, udp.port);
      });
      test('TLS: connect (certificate verified when a CA is given) and echo', async () => {
        const s = tls!;
        const conn = await openStream(mod, { host: s.host, port: s.port, tls: true, ca: s.ca, connectTimeoutMs: stepMs });
        try {
          await echoBytes(conn, TLS_ECHO_BYTES);
        } finally {
          await closeStream(conn);
        }
      });
    }

    if (t.family === 'luat') {
      test('registered, and the data link is up (IP_READY_IND)', async () => {
        const sc = mod.socketcore;
        const deadline = Date.now() + stepMs;
        let [state] = await firstValueFrom(sc.getState());
        while (state !== 'REGISTERED' && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 500));
          [state] = await firstValueFrom(sc.getState());
        }
        assert.equal(state, 'REGISTERED', `net.getState() is ${state}: the module is not registered`);
        await waitReady(sc, stepMs);
      });
      test('TCP: 64 KiB echoed byte-exact (one sock_send in flight, every RECV_IND drained)', async () => {
        const conn = await openStream(mod, { host: tcp.host, port: tcp.port, connectTimeoutMs: stepMs });
        try {
          await echoBytes(conn, TCP_ECHO_BYTES);
          assert.equal(conn.driverStats?.maxSendsInFlight, 1);
          assert.equal(conn.driverStats?.recvCalls, conn.driverStats?.recvInds);
        } finally {
          await closeStream(conn);
        }
      });
      test('UDP: a datagram comes back', async () => {
        await udpEcho(mod, udp.host, udp.port, 64, 10000);
      });
      test('SSL: connect (certificate verified when a CA is given) and echo', async () => {
        const s = tls!;
        const conn = await openStream(mod, { host: s.host, port: s.port, tls: true, ca: s.ca, connectTimeoutMs: stepMs });
        try {
          await echoBytes(conn, TLS_ECHO_BYTES);
        } finally {
          await closeStream(conn);
        }
      });
    }

    if (t.family === 'nodemcu') {
      test('the WiFi station has an IP (wifi.sta.status() = 5)', async () => {
        const st = await firstValueFrom(mod.net.wifi.status());
        assert.equal(st, 5, `wifi.sta.status() = ${st}: the station has no IP`);
        const ip = await firstValueFrom(mod.net.wifi.getip());
        assert.ok(ip && /^\d+\.\d+\.\d+\.\d+$/.test(ip.ip), `wifi.sta.getip() = ${JSON.stringify(ip)}`);
      });
      test('TCP: 64 KiB echoed byte-exact (one send in flight until "sent")', async () => {
        const conn = await openStream(mod, { host: tcp.host, port: tcp.port, connectTimeoutMs: stepMs });
        try {
          await echoBytes(conn, TCP_ECHO_BYTES);
        } finally {
          await closeStream(conn);
        }
      });
      test('UDP: a datagram comes back with the server port and ip', async () => {
        const ip = /^\d+\.\d+\.\d+\.\d+$/.test(udp.host) ? udp.host : await firstValueFrom(mod.net.dns.resolve(udp.host));
        assert.ok(ip, `cannot resolve ${udp.host}`);
        const u = await firstValueFrom(mod.net.createUDPSocket());
        try {
          await lastValueFrom(u.on('receive'), { defaultValue: undefined });
          await lastValueFrom(u.listen(0), { defaultValue: undefined });
          const got = firstValueFrom(u.receive$.pipe(take(1), timeout(10000)));
          await lastValueFrom(u.send(udp.port, ip, 'tether hil'), { defaultValue: undefined });
          const d = await got;
          assert.equal(Buffer.from(d.data).toString(), 'tether hil');
          assert.equal(d.port, udp.port);
          assert.equal(d.ip, ip);
        } finally {
          await lastValueFrom(u.release(), { defaultValue: undefined }).catch(() => undefined);
        }
      });
    }

    test('the link delivered every message: none lost to size limits', () => {
      // a real UART may corrupt frames (counted in badFrames, repaired by retransmission); none may be lost
      assert.equal(mod.rpc.stats.droppedMessages, 0);
    });
  });
}

/**
 * Hardware-in-the-loop conformance for a LuatOS module (npm run test:hil).
 * The same checks run against a real Air780E, a ser2net port, or the simulator:
 *
 *   TETHER_TEST_PORT   the module: /dev/ttyUSB0, tcp://host:port, or sim   (required)
 *   TETHER_BAUD        serial baud rate (default 115200)
 *   TETHER_ECHO_TCP    HOST:PORT of a TCP echo server the module can reach
 *   TETHER_ECHO_UDP    HOST:PORT of a UDP echo server
 *   TETHER_ECHO_TLS    HOST:PORT of a TLS echo server; TETHER_ECHO_TLS_CA = PEM file to verify it
 *
 * For a simulated module the echo servers default to loopback services started here.
 * Nothing is skipped: a missing setting fails with what to set.
 */
import { PROTOCOL_VERSION } from '../src/codec/constants.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { firstValueFrom, lastValueFrom, take, timeout } from 'rxjs';
import { connect, isSimPort, type TetherModule } from '../src/api/connect.js';
import { openSocket } from '../src/api/luatos/connection.js';
import { startEchoServers, type EchoServers } from '../src/diag/echo-servers.js';
import { echoBytes } from '../src/diag/echo.js';
import { fixturePath } from '../src/diag/fixtures.js';

const port = process.env.TETHER_TEST_PORT;
let mod: TetherModule;
let echo: EchoServers | undefined;
let tcp: { host: string; port: number };
let udp: { host: string; port: number };
let tls: { host: string; port: number; ca?: string };

function endpoint(name: string): { host: string; port: number } | undefined {
  const v = process.env[name];
  if (!v) return undefined;
  const m = /^(.+):(\d+)$/.exec(v);
  assert.ok(m, `${name} must be HOST:PORT, got "${v}"`);
  return { host: m[1], port: Number(m[2]) };
}

before(async () => {
  assert.ok(port, 'TETHER_TEST_PORT is not set: point it at the module (/dev/ttyUSB0, tcp://HOST:PORT or sim)');
  mod = await connect(port, { baudRate: Number(process.env.TETHER_BAUD ?? 115200), timeoutMs: 15000 });
  const simulated = isSimPort(port) || /-sim$/.test(mod.hello.fw ?? '');
  if (simulated && !process.env.TETHER_ECHO_TCP) {
    const cert = readFileSync(fixturePath('tls', 'server.crt'), 'utf8');
    echo = await startEchoServers({ tls: { key: readFileSync(fixturePath('tls', 'server.key')), cert } });
    tcp = echo.tcp;
    udp = echo.udp;
    tls = { host: 'localhost', port: echo.tls!.port, ca: cert };
    return;
  }
  const t = endpoint('TETHER_ECHO_TCP');
  const u = endpoint('TETHER_ECHO_UDP');
  const s = endpoint('TETHER_ECHO_TLS');
  assert.ok(t && u && s, 'a real module needs echo servers it can reach: set TETHER_ECHO_TCP, TETHER_ECHO_UDP and TETHER_ECHO_TLS (HOST:PORT)');
  tcp = t;
  udp = u;
  tls = { ...s, ca: process.env.TETHER_ECHO_TLS_CA ? readFileSync(process.env.TETHER_ECHO_TLS_CA, 'utf8') : undefined };
});

after(async () => {
  await mod?.close();
  await echo?.close();
});

test('hello: LuatOS agent, protocol 2, the 23 socket functions', () => {
  assert.equal(mod.family, 'luatos');
  assert.equal(mod.hello.proto, PROTOCOL_VERSION);
  for (const f of ['create', 'debug', 'config', 'linkup', 'connect', 'discon', 'close', 'tx', 'rx', 'read', 'wait', 'listen', 'accept', 'state', 'release', 'setDNS', 'sslLog', 'localIP', 'adapter', 'remoteIP', 'sntp', 'ntptm', 'sntp_port']) {
    assert.ok(mod.hello.caps.includes(`socket.${f}`), `socket.${f}`);
  }
});

test('a network adapter is ready and has an IP', async () => {
  const [ready, index] = await firstValueFrom(mod.socket.adapter());
  assert.equal(ready, true, `socket.adapter() = (false, ${index}): the module is not online`);
  const ip = await firstValueFrom(mod.socket.localIP(index));
  assert.equal(ip.length, 4);
});

test('TCP: 64 KiB echoed byte-exact', async () => {
  const conn = await firstValueFrom(openSocket(mod.socket, tcp.host, tcp.port, { timeoutMs: 30000 }));
  try {
    await echoBytes(conn, 64 * 1024);
  } finally {
    await conn.close();
  }
});

test('UDP: a datagram comes back with the server address', async () => {
  const conn = await firstValueFrom(openSocket(mod.socket, udp.host, udp.port, { udp: true, timeoutMs: 30000 }));
  try {
    const got = firstValueFrom(conn.datagrams().pipe(take(1), timeout(10000)));
    await lastValueFrom(conn.send('tether hil'));
    const d = await got;
    assert.equal(Buffer.from(d.data).toString(), 'tether hil');
    assert.equal(d.port, udp.port);
  } finally {
    await conn.close();
  }
});

test('TLS: connect (certificate verified when a CA is given) and echo', async () => {
  const conn = await firstValueFrom(openSocket(mod.socket, tls.host, tls.port, { tls: true, ca: tls.ca, timeoutMs: 30000 }));
  try {
    await echoBytes(conn, 2048);
  } finally {
    await conn.close();
  }
});

test('the link delivered every message: none lost to size limits', () => {
  // a real UART may corrupt frames (counted in badFrames, repaired by retransmission); none may be lost
  assert.equal(mod.rpc.stats.droppedMessages, 0);
});

/**
 * Simulated modules are hermetic by default (src/sim/network.ts): a name that is not in the
 * simulation's hosts table does not resolve, and a connection or datagram to an address outside
 * 127.0.0.0/8 never leaves this machine; the module sees its firmware's own failure.
 *
 * This process guards itself: every connect, datagram and host lookup aimed outside loopback is
 * refused and recorded here, so even a broken policy cannot send a packet out, and the test
 * proves that none was even attempted. 192.0.2.1 is TEST-NET-1 (RFC 5737).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import dgram from 'node:dgram';
import dns from 'node:dns';
import { syncBuiltinESMExports } from 'node:module';
import { once } from 'node:events';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { connect } from '../src/api/connect.js';
import { openSocket } from '../src/streams/drivers/luatos-conn.js';
import { openConnection } from '../src/streams/drivers/luat-conn.js';
import { connectTcp } from '../src/streams/drivers/nodemcu-conn.js';
import { isLoopbackAddress, mayReach, simResolve } from '../src/sim/network.js';

const attempts: string[] = [];
const restore: Array<() => void> = [];

function guard<T extends object>(obj: T, key: keyof T, check: (...args: unknown[]) => string | undefined): void {
  const orig = obj[key] as unknown as (...args: unknown[]) => unknown;
  (obj as Record<string, unknown>)[key as string] = function (this: unknown, ...args: unknown[]) {
    const bad = check(...args);
    if (bad) {
      attempts.push(bad);
      throw new Error(`test guard: ${bad} refused`);
    }
    return orig.apply(this, args);
  };
  restore.push(() => ((obj as Record<string, unknown>)[key as string] = orig));
}

const outside = (host: unknown) => typeof host === 'string' && net.isIP(host) !== 0 && !isLoopbackAddress(host);

before(() => {
  guard(net.Socket.prototype, 'connect', (o) => {
    const h = typeof o === 'object' && o !== null ? (o as { host?: string }).host : undefined;
    return h !== undefined && (outside(h) || (net.isIP(h) === 0 && h !== 'localhost')) ? `tcp connect to ${h}` : undefined;
  });
  guard(dgram.Socket.prototype, 'send', (...a) => {
    const host = a.find((x, i) => i > 0 && typeof x === 'string');
    return outside(host) ? `udp send to ${String(host)}` : undefined;
  });
  guard(dns, 'lookup', (name) => (name !== 'localhost' && !net.isIP(String(name)) ? `dns lookup of ${String(name)}` : undefined));
  guard(dns.promises, 'lookup', (name) => (name !== 'localhost' && !net.isIP(String(name)) ? `dns lookup of ${String(name)}` : undefined));
  syncBuiltinESMExports();
});

after(() => {
  for (const r of restore) r();
  syncBuiltinESMExports();
});

test('the policy: loopback only by default; hosts, localhost and literals resolve; other names do not', async () => {
  assert.equal(isLoopbackAddress('127.0.0.1'), true);
  assert.equal(isLoopbackAddress('127.255.0.9'), true);
  assert.equal(isLoopbackAddress('::1'), true);
  assert.equal(isLoopbackAddress('::ffff:127.0.0.1'), true);
  assert.equal(isLoopbackAddress('192.0.2.1'), false);
  assert.equal(isLoopbackAddress('128.0.0.1'), false);
  assert.equal(mayReach({}, '192.0.2.1'), false);
  assert.equal(mayReach({ net: 'host' }, '192.0.2.1'), true);
  assert.deepEqual(await simResolve({}, '127.0.0.5'), ['127.0.0.5']);
  assert.deepEqual(await simResolve({}, 'LocalHost'), ['127.0.0.1']);
  assert.deepEqual(await simResolve({ hosts: { 'echo.example.net': '127.0.0.2' } }, 'ECHO.example.net'), ['127.0.0.2']);
  await assert.rejects(simResolve({}, 'example.com'), (e: NodeJS.ErrnoException) => e.code === 'ENOTFOUND' && /tether sim --net host/.test(e.message));
  // a non-loopback DNS server given to the simulation is not asked either
  await assert.rejects(simResolve({}, 'example.com', ['192.0.2.53']), /not in the simulation's hosts table/);
  assert.deepEqual(attempts, []);
});

async function localServer(): Promise<{ port: number; close: () => void }> {
  const s = net.createServer((c) => c.end('hi\n')).listen(0, '127.0.0.1');
  await once(s, 'listening');
  return { port: (s.address() as net.AddressInfo).port, close: () => s.close() };
}

test('LuatOS: a name outside the hosts table and an address outside loopback fail on the module; localhost works', async () => {
  const srv = await localServer();
  const mod = await connect('sim', { sim: { network: { hosts: { 'echo.test': '127.0.0.1' } } } });
  try {
    await assert.rejects(firstValueFrom(openSocket(mod.socket, 'tether-hermetic.example', 80, { timeoutMs: 5000 })));
    await assert.rejects(firstValueFrom(openSocket(mod.socket, '192.0.2.1', 80, { timeoutMs: 5000 })));
    for (const host of ['localhost', 'echo.test']) {
      const conn = await firstValueFrom(openSocket(mod.socket, host, srv.port));
      assert.equal(Buffer.concat(await lastValueFrom(conn.data().pipe(toArray()))).toString(), 'hi\n');
      await conn.close();
    }
    // a datagram outside loopback is accepted by the module and goes nowhere
    const udp = await firstValueFrom(openSocket(mod.socket, '192.0.2.1', 9, { udp: true }));
    await lastValueFrom(udp.send('x'));
    await udp.close();
  } finally {
    await mod.close();
    srv.close();
  }
  assert.deepEqual(attempts, []);
});

test('Luat: the same through socketcore (CONN_CNF failure)', async () => {
  const mod = await connect('sim:luat');
  try {
    await assert.rejects(firstValueFrom(openConnection(mod.socketcore, 'tether-hermetic.example', 80, { timeoutMs: 5000 })), /CONN_CNF|DNS/);
    await assert.rejects(firstValueFrom(openConnection(mod.socketcore, '192.0.2.1', 80, { timeoutMs: 5000 })), /CONN_CNF result 1/);
    const udp = await firstValueFrom(openConnection(mod.socketcore, '192.0.2.1', 9, { type: 'udp' }));
    await lastValueFrom(udp.send('x'));
    await udp.close();
  } finally {
    await mod.close();
  }
  assert.deepEqual(attempts, []);
});

test('NodeMCU: the same through net (DNS failure, reconnection ERR_ABRT)', async () => {
  const mod = await connect('sim:nodemcu');
  try {
    await assert.rejects(firstValueFrom(connectTcp(mod.net, 'tether-hermetic.example', 80, { timeoutMs: 5000 })));
    await assert.rejects(firstValueFrom(connectTcp(mod.net, '192.0.2.1', 80, { timeoutMs: 5000 })), /-8|ABRT|abort/i);
  } finally {
    await mod.close();
  }
  assert.deepEqual(attempts, []);
});

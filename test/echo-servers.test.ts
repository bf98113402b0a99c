import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { fixturePath } from '../src/diag/fixtures.js';
import { startEchoServers } from '../src/diag/echo-servers.js';
import { isTetherError } from '../src/errors.js';

const key = readFileSync(fixturePath('tls', 'server.key'));
const cert = readFileSync(fixturePath('tls', 'server.crt'));

/** Write `data`, half-close, and resolve with everything received until the server closes. */
function exchange(sock: Socket, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    sock.on('data', (c: Buffer) => parts.push(c));
    sock.on('error', reject);
    sock.on('end', () => resolve(Buffer.concat(parts)));
    sock.end(data);
  });
}

function waitClosed(sock: Socket): Promise<void> {
  return new Promise((r) => (sock.destroyed ? r() : sock.once('close', () => r())));
}

test('TCP echo returns every byte and counts them', async () => {
  const echo = await startEchoServers();
  try {
    assert.equal(echo.tcp.host, '127.0.0.1');
    assert.ok(echo.tcp.port > 0);
    assert.equal(echo.tls, undefined, 'no TLS service without tls options');
    const data = randomBytes(200_000);
    const sock = connect(echo.tcp.port, echo.tcp.host);
    const back = await exchange(sock, data);
    assert.ok(back.equals(data));
    assert.equal(echo.stats().tcpBytes, data.length);
  } finally {
    await echo.close();
  }
});

test('UDP echo sends each datagram back to its sender', async () => {
  const echo = await startEchoServers();
  const client = createSocket('udp4');
  try {
    const msgs = [Buffer.from('hello'), randomBytes(1200), Buffer.from([0, 1, 2, 255])];
    const got: Buffer[] = [];
    const all = new Promise<void>((resolve) =>
      client.on('message', (m) => {
        got.push(m);
        if (got.length === msgs.length) resolve();
      }),
    );
    await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
    for (const m of msgs) {
      await new Promise<void>((r, j) => client.send(m, echo.udp.port, echo.udp.host, (e) => (e ? j(e) : r())));
    }
    await all;
    // Loopback UDP keeps order and never drops at this rate; compare as a set anyway.
    assert.deepEqual(got.map((b) => b.toString('hex')).sort(), msgs.map((b) => b.toString('hex')).sort());
    assert.equal(echo.stats().udpDatagrams, 3);
  } finally {
    client.close();
    await echo.close();
  }
});

test('TLS echo works with the fixture certificate (ca: cert, servername localhost)', async () => {
  const echo = await startEchoServers({ tls: { key, cert } });
  try {
    assert.ok(echo.tls);
    const sock = tlsConnect({ host: echo.tls.host, port: echo.tls.port, ca: cert, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      sock.once('secureConnect', () => resolve());
      sock.once('error', reject);
    });
    assert.equal(sock.authorized, true);
    const data = randomBytes(50_000);
    const back = await exchange(sock, data);
    assert.ok(back.equals(data));
    assert.equal(echo.stats().tlsBytes, data.length);
    assert.equal(echo.stats().tcpBytes, 0, 'TLS traffic is not counted as plain TCP');
  } finally {
    await echo.close();
  }
});

test('a TLS client that does not trust the certificate is refused', async () => {
  const echo = await startEchoServers({ tls: { key, cert } });
  try {
    const sock = tlsConnect({ host: echo.tls!.host, port: echo.tls!.port, servername: 'localhost' });
    await assert.rejects(
      new Promise((resolve, reject) => {
        sock.once('secureConnect', resolve);
        sock.once('error', reject);
      }),
      /self[- ]signed/i,
    );
    sock.destroy();
  } finally {
    await echo.close();
  }
});

test('close() drops open connections and releases every port', async () => {
  const echo = await startEchoServers({ tls: { key, cert } });
  const tcpClient = connect(echo.tcp.port, echo.tcp.host);
  const tlsClient = tlsConnect({ host: echo.tls!.host, port: echo.tls!.port, ca: cert, servername: 'localhost' });
  tcpClient.on('error', () => undefined);
  tlsClient.on('error', () => undefined);
  await new Promise<void>((r) => tcpClient.once('connect', () => r()));
  await new Promise<void>((r) => tlsClient.once('secureConnect', () => r()));
  // The server has accepted the TCP connection once it echoes.
  await new Promise<void>((r) => {
    tcpClient.once('data', () => r());
    tcpClient.write('x');
  });

  const started = Date.now();
  await echo.close();
  assert.ok(Date.now() - started < 1000, 'close() does not wait for clients to hang up');
  await Promise.all([waitClosed(tcpClient), waitClosed(tlsClient)]);
  await echo.close(); // idempotent

  // Nothing listens any more: TCP is refused and the UDP port can be bound again.
  await assert.rejects(
    new Promise((resolve, reject) => {
      const s = connect(echo.tcp.port, echo.tcp.host);
      s.once('connect', () => {
        s.destroy();
        resolve(undefined);
      });
      s.once('error', reject);
    }),
    /ECONNREFUSED/,
  );
  const rebind = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    rebind.once('error', reject);
    rebind.bind(echo.udp.port, echo.udp.host, () => resolve());
  });
  rebind.close();
});

test('bad options raise typed errors and start nothing', async () => {
  await assert.rejects(startEchoServers({ host: '' }), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(startEchoServers({ tls: { key: '', cert } }), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(startEchoServers({ tls: { key: 'not a key', cert: 'not a cert' } }), (e: unknown) => isTetherError(e, 'TRANSPORT'));
  // 192.0.2.1 (TEST-NET-1) is not an address of this machine.
  await assert.rejects(startEchoServers({ host: '192.0.2.1' }), (e: unknown) => {
    assert.ok(isTetherError(e, 'TRANSPORT'), String(e));
    assert.match(e.message, /cannot listen on 192\.0\.2\.1/);
    return true;
  });
});

test('fixturePath resolves inside fixtures/ and rejects escapes', () => {
  assert.match(fixturePath('tls', 'server.crt'), /[\\/]fixtures[\\/]tls[\\/]server\.crt$/);
  assert.throws(() => fixturePath('..', 'package.json'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  assert.throws(() => fixturePath('/etc/passwd'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
});

/**
 * The SOCKS5 server (src/proxy/server.ts) with a dialer over node:net / node:dgram against
 * servers started here on 127.0.0.1, driven by a SOCKS client built from the codec.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { SocksServer, replyForError, isLoopback, type ConnectionRecord, type Dialer, type SocksServerOptions } from '../src/proxy/server.js';
import {
  AuthMethod,
  Command,
  Reply,
  encodeGreeting,
  encodeRequest,
  encodeUdpDatagram,
  encodeUserPassRequest,
  parseMethodSelection,
  parseReply,
  parseUdpDatagram,
  parseUserPassReply,
  type Parsed,
  type SocksReply,
} from '../src/proxy/socks5.js';

const LOOP = '127.0.0.1';

/** A dialer over node:net (and node:dgram bound to 127.0.0.1) that records what it was asked. */
function netDialer(asked: string[] = []): Dialer {
  return {
    connect: (host, port) =>
      new Promise<Duplex>((resolve, reject) => {
        asked.push(`${host}:${port}`);
        const s = netConnect({ host, port, allowHalfOpen: true });
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      }),
    udp: async () => {
      const u = createSocket('udp4');
      await new Promise<void>((r) => u.bind(0, LOOP, () => r()));
      return u;
    },
  };
}

const servers: Array<{ close(): unknown }> = [];
after(async () => {
  for (const s of servers) await s.close();
});

async function startSocks(o: Partial<SocksServerOptions> = {}): Promise<{ server: SocksServer; port: number; closed: ConnectionRecord[] }> {
  const server = new SocksServer({ dialer: netDialer(), host: LOOP, port: 0, ...o });
  const closed: ConnectionRecord[] = [];
  server.on('connectionClose', (r: ConnectionRecord) => closed.push(r));
  const a = await server.listen();
  servers.push(server);
  return { server, port: a.port, closed };
}

/** A TCP server on 127.0.0.1 running `onConn` for each connection. */
async function tcpServer(onConn: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const conns = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    onConn(s);
  });
  await new Promise<void>((r) => server.listen(0, LOOP, () => r()));
  servers.push({
    close: () => {
      for (const c of conns) c.destroy();
      return new Promise((r) => server.close(r));
    },
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** Reads exact messages off a socket with the codec's incremental parsers. */
class Reader {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  ended = false;
  constructor(readonly s: Socket) {
    s.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    s.on('end', () => {
      this.ended = true;
      this.wake();
    });
    s.on('close', () => {
      this.ended = true;
      this.wake();
    });
    s.on('error', () => undefined);
  }
  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }
  async take<T>(parse: (b: Uint8Array) => Parsed<T> | undefined): Promise<T> {
    for (;;) {
      const r = parse(this.buf);
      if (r) {
        this.buf = this.buf.subarray(r.length);
        return r.value;
      }
      if (this.ended) throw new Error(`the server closed the connection (${this.buf.length} bytes unparsed)`);
      await new Promise<void>((w) => this.waiters.push(w));
    }
  }
  async bytes(n: number): Promise<Buffer> {
    return this.take((b) => (b.length >= n ? { value: Buffer.from(b.subarray(0, n)), length: n } : undefined));
  }
  /** Everything until the peer's FIN. */
  async rest(): Promise<Buffer> {
    while (!this.ended) await new Promise<void>((w) => this.waiters.push(w));
    const b = this.buf;
    this.buf = Buffer.alloc(0);
    return b;
  }
}

async function open(port: number): Promise<{ s: Socket; r: Reader }> {
  const s = netConnect({ host: LOOP, port, allowHalfOpen: true });
  const r = new Reader(s);
  await once(s, 'connect');
  return { s, r };
}

/** Greeting (no auth) + request; resolves with the reply. */
async function request(port: number, cmd: number, host: string, dport: number): Promise<{ s: Socket; r: Reader; reply: SocksReply }> {
  const c = await open(port);
  c.s.write(encodeGreeting([AuthMethod.NO_AUTHENTICATION_REQUIRED]));
  assert.equal(await c.r.take(parseMethodSelection), AuthMethod.NO_AUTHENTICATION_REQUIRED);
  c.s.write(encodeRequest(cmd as 1, host, dport));
  return { ...c, reply: await c.r.take(parseReply) };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('CONNECT relays 1 MiB each way byte-exact, passes FINs on, and counts bytes and live connections', async () => {
  const echo = await tcpServer((s) => s.pipe(s));
  const { server, port, closed } = await startSocks();
  const { s, r, reply } = await request(port, Command.CONNECT, LOOP, echo.port);
  assert.equal(reply.reply, Reply.SUCCEEDED);
  assert.equal(server.stats.live, 1);
  const payload = randomBytes(1 << 20);
  s.end(payload); // our FIN must reach the echo server, whose FIN must come back after the data
  const back = await r.rest();
  assert.ok(back.equals(payload), `echoed ${back.length} bytes, byte-exact: ${back.equals(payload)}`);
  await until(() => closed.length === 1, 'the close record');
  assert.equal(closed[0].bytesUp, payload.length);
  assert.equal(closed[0].bytesDown, payload.length);
  assert.equal(closed[0].target, `${LOOP}:${echo.port}`);
  assert.equal(closed[0].errorCode, undefined);
  assert.equal(typeof closed[0].durationMs, 'number');
  assert.deepEqual({ live: server.stats.live, total: server.stats.total, failed: server.stats.failed }, { live: 0, total: 1, failed: 0 });
  assert.equal(server.stats.bytesDown, payload.length);
});

test('a client that writes byte by byte, and data sent right behind the request, both work', async () => {
  const echo = await tcpServer((s) => s.pipe(s));
  const { port } = await startSocks();
  const { s, r } = await open(port);
  const all = Buffer.concat([encodeGreeting([AuthMethod.NO_AUTHENTICATION_REQUIRED]), encodeRequest(Command.CONNECT, LOOP, echo.port), Buffer.from('early bytes')]);
  for (const b of all) {
    s.write(Buffer.from([b]));
    await new Promise((res) => setImmediate(res));
  }
  assert.equal(await r.take(parseMethodSelection), 0);
  assert.equal((await r.take(parseReply)).reply, Reply.SUCCEEDED);
  assert.equal((await r.bytes(11)).toString(), 'early bytes');
  s.destroy();
});

test('a DOMAINNAME reaches the dialer as the name (the module resolves it)', async () => {
  const asked: string[] = [];
  const echo = await tcpServer((s) => s.end('hi'));
  const { port } = await startSocks({ dialer: netDialer(asked) });
  const { r, reply } = await request(port, Command.CONNECT, 'localhost', echo.port);
  assert.deepEqual(asked, [`localhost:${echo.port}`]);
  if (reply.reply === Reply.SUCCEEDED) assert.equal((await r.rest()).toString(), 'hi');
  else assert.equal(reply.reply, Reply.CONNECTION_REFUSED); // localhost resolved to ::1 first, where nothing listens
});

test('a refused connection answers REP 5 and is counted as failed, with its error code', async () => {
  const gone = await tcpServer(() => undefined);
  const deadPort = gone.port;
  await new Promise((r) => gone.server.close(r));
  const { server, port, closed } = await startSocks();
  const { r, reply } = await request(port, Command.CONNECT, LOOP, deadPort);
  assert.equal(reply.reply, Reply.CONNECTION_REFUSED);
  await r.rest(); // and the server closes
  await until(() => closed.length === 1, 'the close record');
  assert.equal(closed[0].errorCode, 'ECONNREFUSED');
  assert.equal(closed[0].reply, Reply.CONNECTION_REFUSED);
  assert.equal(server.stats.failed, 1);
});

test('dialer error codes map to REP codes as documented', () => {
  const rep = (code?: string) => replyForError(Object.assign(new Error('x'), code === undefined ? {} : { code }));
  assert.equal(rep('ECONNREFUSED'), 5);
  assert.equal(rep('ENETUNREACH'), 3);
  assert.equal(rep('EHOSTUNREACH'), 4);
  assert.equal(rep('ENOTFOUND'), 4);
  assert.equal(rep('ETIMEDOUT'), 4);
  assert.equal(rep('TIMEOUT'), 4);
  assert.equal(rep('EACCES'), 2);
  assert.equal(rep('SOCKET'), 1);
  assert.equal(rep('RESET'), 1);
  assert.equal(rep(), 1);
  assert.equal(replyForError('not an error'), 1);
});

test('BIND answers REP 7, an unknown ATYP REP 8, UDP ASSOCIATE without a UDP dialer REP 7', async () => {
  const { port } = await startSocks({ dialer: { connect: netDialer().connect } });
  const bind = await request(port, Command.BIND, LOOP, 1);
  assert.equal(bind.reply.reply, Reply.COMMAND_NOT_SUPPORTED);
  const udp = await request(port, Command.UDP_ASSOCIATE, '0.0.0.0', 0);
  assert.equal(udp.reply.reply, Reply.COMMAND_NOT_SUPPORTED);
  const c = await open(port);
  c.s.write(Buffer.concat([encodeGreeting([0]), Buffer.from([5, 1, 0, 9, 1, 2, 3, 4, 0, 80])]));
  assert.equal(await c.r.take(parseMethodSelection), 0);
  assert.equal((await c.r.take(parseReply)).reply, Reply.ADDRESS_TYPE_NOT_SUPPORTED);
});

test('a client offering no acceptable method gets X\'FF\' and is closed; so is a non-SOCKS5 client', async () => {
  const { port } = await startSocks();
  const c = await open(port);
  c.s.write(encodeGreeting([AuthMethod.USERNAME_PASSWORD]));
  assert.equal(await c.r.take(parseMethodSelection), AuthMethod.NO_ACCEPTABLE_METHODS);
  await c.r.rest();
  const v4 = await open(port);
  v4.s.write(Buffer.from([4, 1, 0, 80, 127, 0, 0, 1, 0]));
  assert.equal((await v4.r.rest()).length, 0);
});

test('RFC 1929: the right username/password connects, a wrong one gets STATUS 1 and is closed, no-auth is refused', async () => {
  const echo = await tcpServer((s) => s.pipe(s));
  const { port, server } = await startSocks({ auth: { username: 'alice', password: 's3cret' } });
  const ok = await open(port);
  ok.s.write(encodeGreeting([AuthMethod.NO_AUTHENTICATION_REQUIRED, AuthMethod.USERNAME_PASSWORD]));
  assert.equal(await ok.r.take(parseMethodSelection), AuthMethod.USERNAME_PASSWORD);
  ok.s.write(encodeUserPassRequest('alice', 's3cret'));
  assert.equal(await ok.r.take(parseUserPassReply), true);
  ok.s.write(encodeRequest(Command.CONNECT, LOOP, echo.port));
  assert.equal((await ok.r.take(parseReply)).reply, Reply.SUCCEEDED);
  ok.s.write('ping');
  assert.equal((await ok.r.bytes(4)).toString(), 'ping');
  ok.s.destroy();

  for (const [u, p] of [
    ['alice', 'wrong'],
    ['bob', 's3cret'],
    ['alice', 's3cret!'],
  ]) {
    const bad = await open(port);
    bad.s.write(encodeGreeting([AuthMethod.USERNAME_PASSWORD]));
    assert.equal(await bad.r.take(parseMethodSelection), AuthMethod.USERNAME_PASSWORD);
    bad.s.write(encodeUserPassRequest(u, p));
    assert.equal(await bad.r.take(parseUserPassReply), false, `${u}/${p}`);
    await bad.r.rest();
  }
  const none = await open(port);
  none.s.write(encodeGreeting([AuthMethod.NO_AUTHENTICATION_REQUIRED]));
  assert.equal(await none.r.take(parseMethodSelection), AuthMethod.NO_ACCEPTABLE_METHODS);
  assert.equal(server.stats.total, 1, 'only the authenticated client reached the dialer');
});

test('a non-loopback listen address is refused without allowRemote, and with it but without auth', () => {
  const dialer = netDialer();
  for (const host of ['0.0.0.0', '::', '192.168.1.10']) {
    assert.throws(() => new SocksServer({ dialer, host }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /allow-remote/.test(e.message));
    assert.throws(() => new SocksServer({ dialer, host, allowRemote: true }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /authentication/.test(e.message));
    // allowed with both (constructing does not bind anything)
    assert.equal(new SocksServer({ dialer, host, allowRemote: true, auth: { username: 'u', password: 'p' } }).host, host);
  }
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopback(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com']) assert.equal(isLoopback(h), false, h);
  assert.throws(() => new SocksServer({ dialer, port: 70000 }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT');
  assert.throws(() => new SocksServer({ dialer, auth: { username: '', password: 'p' } }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT');
});

test('the target resetting the connection destroys the client side and records the error', async () => {
  const rst = await tcpServer((s) => s.once('data', () => s.resetAndDestroy()));
  const { port, closed } = await startSocks();
  const { s, r, reply } = await request(port, Command.CONNECT, LOOP, rst.port);
  assert.equal(reply.reply, Reply.SUCCEEDED);
  s.write('x');
  await r.rest();
  await until(() => closed.length === 1, 'the close record');
  assert.equal(closed[0].errorCode, 'ECONNRESET');
});

test('the client resetting its connection destroys the target side', async () => {
  let target: Socket | undefined;
  const held = await tcpServer((s) => {
    target = s;
    s.on('error', () => undefined);
  });
  const { port, closed } = await startSocks();
  const { s } = await request(port, Command.CONNECT, LOOP, held.port);
  await until(() => target !== undefined, 'the target connection');
  s.resetAndDestroy(); // RST (a plain FIN would be a half-close, passed on as one)
  await once(target!, 'end'); // the proxy closed its outbound connection
  await until(() => closed.length === 1, 'the close record');
});

test('a client that sends no complete request within handshakeTimeoutMs is closed', async () => {
  const { port } = await startSocks({ handshakeTimeoutMs: 200 });
  const c = await open(port);
  c.s.write(Buffer.from([5, 1]));
  assert.equal((await c.r.rest()).length, 0);
});

test('UDP ASSOCIATE relays datagrams both ways with the RFC 1928 header and drops fragments', async () => {
  const echo: UdpSocket = createSocket('udp4');
  echo.on('message', (m, ri) => echo.send(Buffer.concat([Buffer.from('echo:'), m]), ri.port, ri.address));
  await new Promise<void>((r) => echo.bind(0, LOOP, () => r()));
  servers.push({ close: () => new Promise<void>((r) => echo.close(() => r())) });
  const echoPort = echo.address().port;
  const { port, closed } = await startSocks();
  const { s, reply } = await request(port, Command.UDP_ASSOCIATE, '0.0.0.0', 0);
  assert.equal(reply.reply, Reply.SUCCEEDED);
  assert.equal(reply.address.host, LOOP);
  assert.ok(reply.address.port > 0);
  const client = createSocket('udp4');
  await new Promise<void>((r) => client.bind(0, LOOP, () => r()));
  const got: Buffer[] = [];
  client.on('message', (m) => got.push(m));
  client.send(encodeUdpDatagram(LOOP, echoPort, Buffer.from('frag'), 1), reply.address.port, LOOP);
  client.send(encodeUdpDatagram(LOOP, echoPort, Buffer.from('whole')), reply.address.port, LOOP);
  await until(() => got.length >= 1, 'the echoed datagram');
  const d = parseUdpDatagram(got[0]);
  assert.deepEqual(d.address, { type: 'ipv4', host: LOOP, port: echoPort });
  assert.equal(d.data.toString(), 'echo:whole', 'the fragment (FRAG 1) was dropped, the whole datagram relayed');
  s.destroy(); // the association ends with its TCP connection
  await until(() => closed.length === 1, 'the close record');
  assert.equal(closed[0].command, 'udp');
  assert.equal(closed[0].bytesUp, 5);
  assert.equal(closed[0].bytesDown, 10);
  client.close();
});

/**
 * The SOCKS5 server with the module dialer (src/proxy/module-dialer.ts) on each simulated
 * family, in-process: UDP ASSOCIATE relays a datagram to a UDP echo server on 127.0.0.1 and
 * back through the module's UDP; a CONNECT to a port where nothing listens answers REP 5 (Connection refused).
 * (CONNECT byte-exactness through the module: test/proxy-cli.test.ts, with curl.)
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createSocket } from 'node:dgram';
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net';
import { connect } from '../src/api/connect.js';
import { SocksServer, type ConnectionRecord } from '../src/proxy/server.js';
import { moduleDialer } from '../src/proxy/module-dialer.js';
import { AuthMethod, Command, Reply, encodeGreeting, encodeRequest, encodeUdpDatagram, parseMethodSelection, parseReply, parseUdpDatagram, type Parsed } from '../src/proxy/socks5.js';

const LOOP = '127.0.0.1';
const cleanup: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

/** Read one parsed message off `s`, keeping the rest in `st.buf`. */
async function take<T>(s: Socket, st: { buf: Buffer }, parse: (b: Uint8Array) => Parsed<T> | undefined): Promise<T> {
  for (;;) {
    const r = parse(st.buf);
    if (r) {
      st.buf = st.buf.subarray(r.length);
      return r.value;
    }
    const [d] = (await once(s, 'data')) as [Buffer];
    st.buf = Buffer.concat([st.buf, d]);
  }
}

async function socksRequest(port: number, cmd: 1 | 3, host: string, dport: number) {
  const s = netConnect({ host: LOOP, port });
  s.on('error', () => undefined);
  await once(s, 'connect');
  const st = { buf: Buffer.alloc(0) };
  s.write(encodeGreeting([AuthMethod.NO_AUTHENTICATION_REQUIRED]));
  assert.equal(await take(s, st, parseMethodSelection), 0);
  s.write(encodeRequest(cmd, host, dport));
  return { s, reply: await take(s, st, parseReply) };
}

const echo = createSocket('udp4');
echo.on('message', (m, ri) => echo.send(Buffer.concat([Buffer.from('echo:'), m]), ri.port, ri.address));
const echoReady = new Promise<void>((r) => echo.bind(0, LOOP, () => r()));
cleanup.push(() => new Promise<void>((r) => echo.close(() => r())));

for (const port of ['sim', 'sim:luat', 'sim:nodemcu']) {
  test(`${port}: UDP ASSOCIATE through the module's UDP; a refused CONNECT answers REP 5`, async () => {
    await echoReady;
    const mod = await connect(port);
    const server = new SocksServer({ dialer: moduleDialer(mod, { connectTimeoutMs: 5000 }), port: 0 });
    const closed: ConnectionRecord[] = [];
    server.on('connectionClose', (r: ConnectionRecord) => closed.push(r));
    try {
      const sp = (await server.listen()).port;
      const { s, reply } = await socksRequest(sp, Command.UDP_ASSOCIATE, '0.0.0.0', 0);
      assert.equal(reply.reply, Reply.SUCCEEDED);
      const client = createSocket('udp4');
      await new Promise<void>((r) => client.bind(0, LOOP, () => r()));
      try {
        const got = once(client, 'message') as Promise<[Buffer]>;
        client.send(encodeUdpDatagram(LOOP, echo.address().port, Buffer.from(`hello ${port}`)), reply.address.port, reply.address.host);
        const [m] = await got;
        const d = parseUdpDatagram(m);
        assert.equal(d.data.toString(), `echo:hello ${port}`);
        assert.deepEqual(d.address, { type: 'ipv4', host: LOOP, port: echo.address().port });
      } finally {
        client.close();
        s.destroy();
      }
      // nothing listens on this port: the module's connect fails
      const dead = createServer();
      await new Promise<void>((r) => dead.listen(0, LOOP, () => r()));
      const deadPort = (dead.address() as AddressInfo).port;
      await new Promise((r) => dead.close(r));
      const c = await socksRequest(sp, Command.CONNECT, LOOP, deadPort);
      // the stream layer tells a refused connect (SOCKET, reason ECONNREFUSED) on every family
      assert.equal(c.reply.reply, Reply.CONNECTION_REFUSED, 'a refused connect is REP 5');
      c.s.destroy();
      const t0 = Date.now();
      while (closed.length < 2 && Date.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 20));
      const failed = closed.find((r) => r.command === 'connect');
      assert.ok(failed?.errorCode, 'the failed CONNECT is recorded with its error code');
      assert.equal(failed?.reply, c.reply.reply);
    } finally {
      await server.close();
      await mod.close();
    }
  });
}

/**
 * Real clients through a module's stream (src/streams), for each simulated family, against real
 * servers this test starts on 127.0.0.1:
 * - node:http GET of a large body, byte-exact (sha256), through an `http.Agent` whose
 *   `createConnection` opens the module's socket, and through `http.request({ createConnection })`;
 * - TLS on the host over the stream (`tls.connect({ socket })`) against a node:tls server with the
 *   committed certificate of fixtures/stream-tls/, and module-side TLS (`tls: true`) where the family has it;
 * - mqtt.js publishing and subscribing through the module, against mosquitto (Debian package
 *   `mosquitto`, started here with its own config on a free loopback port).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import tls from 'node:tls';
import mqtt from 'mqtt';
import { connect, type TetherModule } from '../src/api/connect.js';
import '../src/streams/index.js';
import { isTetherError } from '../src/errors.js';
import { startMosquitto, type Broker } from './helpers/mosquitto.js';

const root = new URL('../../', import.meta.url);
const CERT = readFileSync(new URL('fixtures/stream-tls/cert.pem', root), 'utf8');
const KEY = readFileSync(new URL('fixtures/stream-tls/key.pem', root), 'utf8');

/**
 * Body size per family (bytes): 1 MiB each. The NodeMCU agent holds the ESP8266's TCP window
 * (`sock:hold()`) while its backlog for the host is high, so a local server's burst waits in TCP
 * instead of being dropped on the module.
 */
const BODY: Record<string, number> = { sim: 1 << 20, 'sim:luat': 1 << 20, 'sim:nodemcu': 1 << 20 };
const FAMILIES = ['sim', 'sim:luat', 'sim:nodemcu'];

/**
 * Line rate of the simulated UART in the bulk tests (the simulators pace bytes at the baud; 1 MiB
 * at 115200 would take 91 s each way): rates each module really supports, given to the simulator
 * (`baud`), which also makes the agent set its UART up at it (TETHER_BAUD). LuatOS (EC618; the baud
 * table of luat_lib_uart.c's uart.setup goes up to 2000000) and Luat (8910 l_uart.c): 2000000;
 * NodeMCU (app/platform/platform.c platform_uart_setup): 921600.
 */
const BULK_BAUD: Record<string, number> = { sim: 2000000, 'sim:luat': 2000000, 'sim:nodemcu': 921600 };


const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

let httpServer: http.Server;
let httpPort: number;
const bodies = new Map<number, Buffer>();
let tlsServer: tls.Server;
let tlsPort: number;
let broker: Broker;

before(async () => {
  for (const n of new Set(Object.values(BODY))) bodies.set(n, crypto.randomBytes(n));
  httpServer = http.createServer((req, res) => {
    const n = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('n'));
    const body = bodies.get(n);
    if (!body) {
      res.statusCode = 404;
      res.end();
      return;
    }
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-length', body.length);
    res.end(body);
  });
  httpServer.keepAliveTimeout = 60000;
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
  httpPort = (httpServer.address() as net.AddressInfo).port;
  // TLS echo: greets, then echoes every byte
  tlsServer = tls.createServer({ key: KEY, cert: CERT }, (s) => {
    s.write('hello over tls\n');
    s.pipe(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
  tlsPort = (tlsServer.address() as net.AddressInfo).port;
  broker = await startMosquitto();
});

after(async () => {
  httpServer?.closeAllConnections();
  await new Promise((r) => httpServer?.close(r));
  await new Promise((r) => tlsServer?.close(r));
  await broker?.close();
});

/** GET `path` with `opts`; resolves with status and body. */
function get(opts: http.RequestOptions): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: httpPort, ...opts }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Read from `s` until `want` bytes came (or it ends / fails). */
function readN(s: NodeJS.ReadableStream, want: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    const onData = (d: Buffer) => {
      parts.push(d);
      n += d.length;
      if (n >= want) {
        s.off('data', onData);
        resolve(Buffer.concat(parts));
      }
    };
    s.on('data', onData);
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}

for (const fam of FAMILIES) {
  describe(`real clients through ${fam}`, () => {
    let mod: TetherModule;
    before(async () => {
      mod = await connect(fam, { baudRate: BULK_BAUD[fam] });
    });
    after(async () => {
      await mod?.close();
    });

    // NodeMCU's paced line at 921600 carries ~50 KB/s of payload here (hold/unhold rounds, 255-byte
    // frames): its 1 MiB needs about 25 s on an idle machine, so it gets a bound with room for a busy one
    it(`node:http GET of ${BODY[fam]} bytes is byte-exact through an http.Agent`, { timeout: fam === 'sim:nodemcu' ? 90000 : 30000 }, async () => {
      const n = BODY[fam];
      const m = mod;
      class ModuleAgent extends http.Agent {
        override createConnection(o: http.ClientRequestArgs): net.Socket {
          return m.createConnection({ port: Number(o.port), host: String(o.host) }) as unknown as net.Socket;
        }
      }
      const agent = new ModuleAgent({ keepAlive: true, maxSockets: 1 });
      try {
        const r = await get({ path: `/file?n=${n}`, agent });
        assert.equal(r.status, 200);
        assert.equal(r.body.length, n);
        assert.equal(sha(r.body), sha(bodies.get(n)!));
        // the same socket again (keep-alive): a second request on the module's connection
        const r2 = await get({ path: '/missing', agent });
        assert.equal(r2.status, 404);
      } finally {
        agent.destroy();
      }
    });

    it('node:http through http.request({ createConnection }) counts bytes and closes', { timeout: 20000 }, async () => {
      const n = 3000;
      if (!bodies.has(n)) bodies.set(n, crypto.randomBytes(n));
      let sock: import('../src/streams/socket.js').SocketStream | undefined;
      const r = await get({
        path: `/file?n=${n}`,
        createConnection: () => {
          sock = mod.createConnection(httpPort, '127.0.0.1');
          return sock as unknown as net.Socket;
        },
      });
      assert.equal(sha(r.body), sha(bodies.get(n)!));
      assert.ok(sock);
      await new Promise<void>((resolve) => (sock!.destroyed ? resolve() : sock!.once('close', () => resolve())));
      assert.ok(sock.bytesRead > n, `bytesRead ${sock.bytesRead} counts the head and the body`);
      assert.ok(sock.bytesWritten > 20, `bytesWritten ${sock.bytesWritten} counts the request`);
      assert.equal(sock.remotePort, httpPort);
      assert.equal(sock.remoteAddress, '127.0.0.1');
    });

    it('TLS on the host over the stream: tls.connect({ socket }) verifies the server and echoes', { timeout: 20000 }, async () => {
      const raw = mod.createConnection({ port: tlsPort, host: '127.0.0.1' });
      const t = tls.connect({ socket: raw as unknown as net.Socket, ca: CERT, servername: 'localhost' });
      await new Promise<void>((resolve, reject) => {
        t.once('secureConnect', resolve);
        t.once('error', reject);
      });
      assert.equal(t.authorized, true, String(t.authorizationError));
      const greeting = await readN(t, 15);
      assert.equal(greeting.toString(), 'hello over tls\n');
      const msg = crypto.randomBytes(700);
      const echoed = readN(t, msg.length);
      t.write(msg);
      assert.equal(sha(await echoed), sha(msg));
      t.end();
      await new Promise<void>((r) => (raw.destroyed ? r() : raw.once('close', () => r())));
    });

    it('mqtt.js publishes and subscribes through the module (mosquitto on 127.0.0.1)', { timeout: 20000 }, async () => {
      const topic = `tether/${fam}/${crypto.randomUUID()}`;
      const viaModule = new mqtt.MqttClient(() => mod.createConnection(broker.port, '127.0.0.1') as never, { clientId: `mod-${crypto.randomUUID().slice(0, 8)}`, reconnectPeriod: 0, keepalive: 30, protocolVersion: 4 });
      const direct = mqtt.connect(`mqtt://127.0.0.1:${broker.port}`, { reconnectPeriod: 0 });
      try {
        await Promise.all([
          new Promise<void>((resolve, reject) => {
            viaModule.once('connect', () => resolve());
            viaModule.once('error', reject);
          }),
          new Promise<void>((resolve, reject) => {
            direct.once('connect', () => resolve());
            direct.once('error', reject);
          }),
        ]);
        await viaModule.subscribeAsync(`${topic}/down`, { qos: 1 });
        await direct.subscribeAsync(`${topic}/up`, { qos: 1 });
        const down = new Promise<Buffer>((r) => viaModule.once('message', (_t, p) => r(p)));
        const up = new Promise<Buffer>((r) => direct.once('message', (_t, p) => r(p)));
        const a = crypto.randomBytes(300);
        const b = crypto.randomBytes(300);
        await direct.publishAsync(`${topic}/down`, a, { qos: 1 });
        await viaModule.publishAsync(`${topic}/up`, b, { qos: 1 });
        assert.equal(sha(await down), sha(a), 'the module client received what the host client published');
        assert.equal(sha(await up), sha(b), 'the host client received what the module client published');
      } finally {
        await viaModule.endAsync();
        await direct.endAsync();
      }
    });

    if (fam !== 'sim:nodemcu') {
      it('module-side TLS (tls: true, ca) emits secureConnect and echoes', { timeout: 60000 }, async () => {
        const s = mod.createConnection({ port: tlsPort, host: '127.0.0.1', tls: true, ca: CERT });
        let secure = false;
        s.once('secureConnect', () => (secure = true));
        const greeting = await readN(s, 15);
        assert.equal(secure, true);
        assert.equal(greeting.toString(), 'hello over tls\n');
        s.write('ping');
        assert.equal((await readN(s, 4)).toString(), 'ping');
        s.destroy();
      });
    } else {
      it('module-side TLS is UNSUPPORTED on NodeMCU (its net module has none)', { timeout: 10000 }, async () => {
        const s = mod.createConnection({ port: tlsPort, tls: true });
        const e = await new Promise<Error>((r) => s.once('error', r));
        assert.ok(isTetherError(e, 'UNSUPPORTED'), String(e));
      });
    }
  });
}

/**
 * The stream layer plugs into `https` and undici (issue 10, item 3), for all three families:
 * - `https.request({ createConnection })` where the connection is `tls.connect({ socket })` over
 *   the module's Duplex (TLS on the host, so it works on NodeMCU too, whose `net` has no TLS):
 *   a GET from a node:https server on 127.0.0.1 with the committed certificate of
 *   fixtures/stream-tls/ (verified: SAN IP 127.0.0.1 / localhost), body byte-exact;
 * - undici (the npm package, the HTTP client behind Node's `fetch`) with an `Agent` whose
 *   `connect` option hands it the module's Duplex: two GETs from a node:http server, byte-exact.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import tls from 'node:tls';
import { Agent as UndiciAgent, request as undiciRequest, type buildConnector } from 'undici';
import { connect, type TetherModule } from '../src/api/connect.js';
import '../src/streams/index.js';

const root = new URL('../../', import.meta.url);
const CERT = readFileSync(new URL('fixtures/stream-tls/cert.pem', root), 'utf8');
const KEY = readFileSync(new URL('fixtures/stream-tls/key.pem', root), 'utf8');

/** Body size (bytes): several TCP windows of each module, small enough to stay quick. */
const SIZE = 64 * 1024;
const FAMILIES = ['sim', 'sim:luat', 'sim:nodemcu'];
/** UART baud per family: rates each module supports (see test/stream-clients.test.ts). */
const BAUD: Record<string, number> = { sim: 2000000, 'sim:luat': 2000000, 'sim:nodemcu': 921600 };

const body = crypto.randomBytes(SIZE);
const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
  res.setHeader('content-type', 'application/octet-stream');
  res.setHeader('content-length', body.length);
  res.end(body);
};
let httpsServer: https.Server;
let httpServer: http.Server;
let httpsPort = 0;
let httpPort = 0;

before(async () => {
  httpsServer = https.createServer({ key: KEY, cert: CERT }, handler);
  httpServer = http.createServer(handler);
  await new Promise<void>((r) => httpsServer.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
  httpsPort = (httpsServer.address() as net.AddressInfo).port;
  httpPort = (httpServer.address() as net.AddressInfo).port;
});

after(async () => {
  httpsServer.closeAllConnections();
  httpServer.closeAllConnections();
  await new Promise((r) => httpsServer.close(r));
  await new Promise((r) => httpServer.close(r));
});

for (const fam of FAMILIES) {
  describe(`https and undici through ${fam}`, () => {
    let mod: TetherModule;
    before(async () => {
      mod = await connect(fam, { baudRate: BAUD[fam] });
    });
    after(async () => {
      await mod?.close();
    });

    it(`https.request({ createConnection: tls.connect({ socket }) }) GETs ${SIZE} bytes byte-exact, the server verified`, { timeout: 60000 }, async () => {
      let authorized: boolean | undefined;
      const res = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        const req = https.request(
          {
            host: '127.0.0.1',
            port: httpsPort,
            path: '/file',
            createConnection: (o: { port?: number | string | null; host?: string | null }) => {
              const raw = mod.createConnection({ port: Number(o.port), host: o.host ?? '127.0.0.1' });
              const t = tls.connect({ socket: raw as unknown as net.Socket, ca: CERT, servername: 'localhost' });
              t.once('secureConnect', () => (authorized = t.authorized));
              return t;
            },
          },
          (r) => {
            const parts: Buffer[] = [];
            r.on('data', (d: Buffer) => parts.push(d));
            r.on('end', () => resolve({ status: r.statusCode ?? 0, body: Buffer.concat(parts) }));
            r.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end();
      });
      assert.equal(res.status, 200);
      assert.equal(authorized, true, 'the certificate was verified against fixtures/stream-tls/cert.pem');
      assert.equal(res.body.length, SIZE);
      assert.ok(res.body.equals(body), 'byte-exact');
    });

    it(`undici with connect: the module's Duplex GETs ${SIZE} bytes, twice`, { timeout: 60000 }, async () => {
      let opened = 0;
      const connector: buildConnector.connector = (o, cb) => {
        opened++;
        const s = mod.createConnection({ port: Number(o.port), host: o.hostname });
        const onError = (e: Error) => cb(e, null);
        s.once('error', onError);
        s.once('connect', () => {
          s.off('error', onError);
          cb(null, s as unknown as net.Socket);
        });
        return s as unknown as net.Socket;
      };
      const dispatcher = new UndiciAgent({ connect: connector });
      try {
        for (let i = 0; i < 2; i++) {
          const r = await undiciRequest(`http://127.0.0.1:${httpPort}/file`, { dispatcher });
          assert.equal(r.statusCode, 200);
          const got = Buffer.from(await r.body.arrayBuffer());
          assert.equal(got.length, SIZE);
          assert.ok(got.equals(body), `request ${i + 1} byte-exact`);
        }
        // undici's pool opens a second connection for the second request here, with a net.Socket
        // from net.connect as well: what counts is that every connection was the module's
        assert.ok(opened >= 1, 'the requests went through the module');
      } finally {
        await dispatcher.close();
      }
    });
  });
}

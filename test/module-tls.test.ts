/**
 * Module-side TLS robustness (issue #10 known gaps 2 and 3), against node:tls servers this test
 * starts on 127.0.0.1 with the committed certificate of fixtures/stream-tls/:
 * - Luat (`socketcore`): a CONN_CNF and the slot's first RECV_IND decoded from ONE read of the UART
 *   (a server that greets at once, on a busy machine) must not lose the RECV_IND: the core posts the
 *   next one only after the announced bytes were read (CSDK platform_socket.c, as cited in
 *   src/sim/luat/socketcore.ts), so a lost one stalls the socket for good. The test makes the two
 *   messages arrive in one synchronous turn on purpose (a view of the real message stream that holds
 *   each CONN_CNF back until the slot's next message), for TCP and SSL;
 * - LuatOS (`socket`, hello `rxdrain`) and Luat: a TLS server writes a body and closes at once
 *   (close_notify, then FIN), on the paced simulated UART. One record unread at the FIN: every byte,
 *   then 'end' on both. 256 KiB: every byte on Luat; on LuatOS the records still unread at the FIN are
 *   lost (firmware: one read after the FIN, at most one record per read on a TLS socket), the stream
 *   ends with an exact prefix (docs/module-tls.md).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { Observable, firstValueFrom, share } from 'rxjs';
import { connect, type TetherModule } from '../src/api/connect.js';
import '../src/streams/index.js';
import { SimulatedModule } from '../src/sim/module.js';
import { luatFamily } from '../src/sim/luat/family.js';
import { RpcClient } from '../src/rpc/client.js';
import { LuatSocketcore, type SocketMessage } from '../src/api/luat/socketcore.js';
import { openConnection, waitReady, type LuatConnection } from '../src/streams/drivers/luat-conn.js';
import { until } from './helpers/until.js';

const root = new URL('../../', import.meta.url);
const CERT = readFileSync(new URL('fixtures/stream-tls/cert.pem', root), 'utf8');
const KEY = readFileSync(new URL('fixtures/stream-tls/key.pem', root), 'utf8');
const GREETING = 'hello at once\n';
const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

/** A server on 127.0.0.1 (TLS with the fixture certificate, or plain TCP) that runs `onConn` for each connection. */
async function serve(secure: boolean, onConn: (s: net.Socket) => void): Promise<{ port: number; close(): Promise<void> }> {
  const conns = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => {});
    onConn(s);
  };
  const srv = secure ? tls.createServer({ key: KEY, cert: CERT }, track) : net.createServer(track);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of conns) s.destroy();
      await new Promise((r) => srv.close(r));
    },
  };
}

/**
 * `sc.messages` as a module on a busy machine can deliver them: each successful CONN_CNF is held
 * back until the next message of its slot and then both are emitted in one synchronous turn (the
 * way two frames of one UART read are decoded).
 */
function coalesced(src: Observable<SocketMessage>): Observable<SocketMessage> {
  return new Observable<SocketMessage>((sub) => {
    const held = new Map<number, SocketMessage>();
    return src.subscribe({
      next: (m) => {
        if (m.name === 'CONN_CNF' && m.result === 0) {
          held.set(m.socket_index, m);
          return;
        }
        const h = held.get(m.socket_index);
        held.delete(m.socket_index);
        if (h) sub.next(h);
        sub.next(m);
      },
      error: (e) => sub.error(e),
      complete: () => sub.complete(),
    });
  }).pipe(share());
}

describe('Luat: a RECV_IND in the same UART read as its CONN_CNF', () => {
  let sim: SimulatedModule;
  let rpc: RpcClient;
  let sc: LuatSocketcore;
  let greeter: { port: number; close(): Promise<void> };
  let tlsGreeter: { port: number; close(): Promise<void> };
  before(async () => {
    sim = await SimulatedModule.start(luatFamily({}), {});
    rpc = await RpcClient.open(sim.connect(), { timeoutMs: 20000 });
    sc = new LuatSocketcore(rpc);
    await waitReady(sc, 20000);
    greeter = await serve(false, (s) => s.end(GREETING));
    tlsGreeter = await serve(true, (s) => s.end(GREETING));
  });
  after(async () => {
    await rpc?.close();
    await sim?.stop();
    await greeter?.close();
    await tlsGreeter?.close();
  });

  for (const kind of ['tcp', 'ssl'] as const) {
    it(`${kind}: the greeting is read and the stream ends`, { timeout: 60000 }, async () => {
      const view = Object.create(sc, { messages: { value: coalesced(sc.messages) } }) as LuatSocketcore;
      const port = kind === 'tcp' ? greeter.port : tlsGreeter.port;
      const conn: LuatConnection = await firstValueFrom(openConnection(view, '127.0.0.1', port, kind === 'ssl' ? { type: 'ssl', cert: { caCert: CERT, hostName: 'localhost' }, strictCert: true } : {}));
      const parts: Uint8Array[] = [];
      let ended = false;
      let failure: Error | undefined;
      const sub = conn.data().subscribe({ next: (d) => parts.push(d), complete: () => (ended = true), error: (e) => (failure = e) });
      try {
        await until(() => ended || failure !== undefined, 'the stream to end', { detail: () => `read ${Buffer.concat(parts).length} bytes; stats ${JSON.stringify(conn.stats)}` });
        assert.equal(failure, undefined);
        assert.equal(Buffer.concat(parts).toString(), GREETING);
        assert.ok(conn.stats.recvInds >= 1, 'the first RECV_IND was handled');
      } finally {
        sub.unsubscribe();
        await conn.close();
      }
    });
  }
});

/** The large body (bytes): many TLS records. */
const TAIL = 256 * 1024;
/** A body that travels as one TLS record (node:tls puts one write of up to 2^14 bytes in one record). */
const ONE_RECORD = 12 * 1024;

/**
 * A module on a paced simulated UART (the simulator paces at the baud): 2000000 is in both modules'
 * baud tables (see test/stream-clients.test.ts). Luat: CLOSE_IND 5000 ms after the FIN instead of
 * 500 (a completed read restarts it), room for a busy machine: the timer is not what these tests are about.
 */
async function pacedModule(fam: string): Promise<TetherModule> {
  const mod = await connect(fam, { baudRate: 2000000, sim: fam === 'sim:luat' ? { network: { closeIndDelayMs: 5000 } } : undefined });
  assert.equal(mod.simulator?.wire.paced, true);
  return mod;
}

/** Open a module-side TLS stream to `port` and collect it until 'end' or 'error'. */
async function readAll(mod: TetherModule, port: number, want: number): Promise<{ got: Buffer; failure?: Error }> {
  const s = mod.createConnection({ port, host: '127.0.0.1', tls: true, ca: CERT });
  const parts: Buffer[] = [];
  let ended = false;
  let failure: Error | undefined;
  s.on('data', (d: Buffer) => parts.push(d));
  s.on('end', () => (ended = true));
  s.on('error', (e: Error) => (failure = e));
  try {
    await until(() => ended || failure !== undefined, 'the TLS stream to end', { timeoutMs: 50000, detail: () => `read ${Buffer.concat(parts).length} of ${want} bytes` });
    return { got: Buffer.concat(parts), failure };
  } finally {
    s.destroy();
  }
}

for (const fam of ['sim', 'sim:luat']) {
  describe(`${fam}: module-side TLS, the server writes and closes at once (close_notify, FIN)`, () => {
    let mod: TetherModule;
    const big = crypto.randomBytes(TAIL);
    const small = crypto.randomBytes(ONE_RECORD);
    let bigServer: { port: number; close(): Promise<void> };
    let smallServer: { port: number; close(): Promise<void> };
    before(async () => {
      mod = await pacedModule(fam);
      bigServer = await serve(true, (s) => s.end(big));
      smallServer = await serve(true, (s) => s.end(small));
    });
    after(async () => {
      await mod?.close();
      await bigServer?.close();
      await smallServer?.close();
    });

    it(`a ${ONE_RECORD}-byte body (one record, unread at the FIN): every byte, then end`, { timeout: 60000 }, async () => {
      const { got, failure } = await readAll(mod, smallServer.port, ONE_RECORD);
      assert.equal(failure, undefined, String(failure));
      assert.equal(got.length, ONE_RECORD);
      assert.equal(sha(got), sha(small));
    });

    if (fam === 'sim:luat') {
      it(`a ${TAIL}-byte body: every byte, then end`, { timeout: 60000 }, async () => {
        // the core keeps reading after the FIN until CLOSE_IND, and a completed read restarts its timer
        const { got, failure } = await readAll(mod, bigServer.port, TAIL);
        assert.equal(failure, undefined, String(failure));
        assert.equal(got.length, TAIL);
        assert.equal(sha(got), sha(big));
      });
    } else {
      it(`a ${TAIL}-byte body: the stream ends, and what it delivered is the body's exact beginning`, { timeout: 60000 }, async (t) => {
        // KNOWN GAP (issue #10, docs/module-tls.md): after the FIN LuatOS allows one read, and on a TLS
        // socket a read takes at most the record being read (network_rx answers in_msglen): records
        // still unread on the module at the FIN are lost on the firmware, and so in the simulator
        const { got, failure } = await readAll(mod, bigServer.port, TAIL);
        assert.equal(failure, undefined, String(failure));
        assert.ok(got.length > 0 && got.length <= TAIL, `${got.length} bytes`);
        assert.equal(sha(got), sha(big.subarray(0, got.length)), 'an exact prefix: nothing reordered, duplicated or corrupted');
        t.diagnostic(`delivered ${got.length} of ${TAIL} bytes; ${TAIL - got.length} were unread on the module at the FIN`);
      });
    }
  });
}

/**
 * The stream layer (src/streams) itself, for each simulated family, against servers this test
 * starts on 127.0.0.1: net.Socket behaviour (connect, end on the peer's FIN, close, destroy
 * releasing the module socket, setTimeout, addresses and byte counts, write backpressure),
 * typed errors (ECONNREFUSED-like, RESET within 1 s of a module reset, INVALID_ARGUMENT before
 * anything is sent), the module's socket limit as EMFILE and the queue option, servers and UDP.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { firstValueFrom, map } from 'rxjs';
import { connect, type TetherModule } from '../src/api/connect.js';
import { createConnection, createServer, createSocket, isSocketError, type SocketStream } from '../src/streams/index.js';
import { InvalidArgumentError, isTetherError, TetherError } from '../src/errors.js';
import { freePort } from './helpers/mosquitto.js';

const FAMILIES = ['sim', 'sim:luat', 'sim:nodemcu'];
const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

/** A TCP server on 127.0.0.1 that records what each connection sent, and lets the test drive it. */
interface Peer {
  port: number;
  conns: net.Socket[];
  received: Map<net.Socket, Buffer[]>;
  connected: (n: number) => Promise<void>;
  close(): Promise<void>;
}

async function startPeer(onConn?: (s: net.Socket) => void): Promise<Peer> {
  const conns: net.Socket[] = [];
  const received = new Map<net.Socket, Buffer[]>();
  const waiters: Array<() => void> = [];
  const srv = net.createServer((s) => {
    conns.push(s);
    received.set(s, []);
    s.on('data', (d) => received.get(s)!.push(d));
    s.on('error', () => {});
    onConn?.(s);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    conns,
    received,
    connected: async (n) => {
      while (conns.length < n) await new Promise<void>((r) => waiters.push(r));
    },
    close: async () => {
      for (const c of conns) c.destroy();
      await new Promise((r) => srv.close(r));
    },
  };
}

function opened(s: SocketStream): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve());
    s.once('error', reject);
  });
}

function failed(s: SocketStream | { once(ev: 'error', l: (e: Error) => void): unknown }): Promise<Error> {
  return new Promise((resolve) => (s as SocketStream).once('error', resolve));
}

function closed(s: SocketStream): Promise<void> {
  return new Promise((resolve) => (s.destroyed && s.closed ? resolve() : s.once('close', () => resolve())));
}

for (const fam of FAMILIES) {
  describe(`streams on ${fam}`, () => {
    let mod: TetherModule;
    let peer: Peer;
    before(async () => {
      // the simulated UART is paced: a rate the modules support, so the 48 KiB backpressure test
      // fills the stream's buffer within its waits (4.3 s of line time at 115200)
      mod = await connect(fam, { baudRate: 921600 });
      peer = await startPeer();
    });
    after(async () => {
      await peer?.close();
      await mod?.close();
    });

    it('rejects bad arguments with INVALID_ARGUMENT before anything is sent', async () => {
      const before = mod.rpc.stats.framesOut;
      assert.throws(() => createConnection(mod, 0), InvalidArgumentError);
      assert.throws(() => createConnection(mod, 70000), InvalidArgumentError);
      assert.throws(() => createConnection(mod, { port: 'x' as never }), InvalidArgumentError);
      assert.throws(() => createConnection(mod, { port: 80, host: '' }), InvalidArgumentError);
      assert.throws(() => createConnection(mod, { port: 80, tls: 'yes' as never }), InvalidArgumentError);
      assert.throws(() => createConnection(mod, { port: 80, queue: 3 as never }), InvalidArgumentError);
      assert.throws(() => createConnection({} as never, 80), InvalidArgumentError);
      assert.throws(() => createSocket(mod, 'udp6' as never), InvalidArgumentError);
      assert.throws(() => createServer(mod, 'x' as never), InvalidArgumentError);
      assert.throws(() => createServer(mod).listen(-1), InvalidArgumentError);
      await new Promise((r) => setImmediate(r)); // the link pumps its queue in a microtask (bundles)
      assert.equal(mod.rpc.stats.framesOut, before, 'nothing was sent');
    });

    it('connect, addresses, byte counts, end on the peer FIN, then close', { timeout: 15000 }, async () => {
      const n0 = peer.conns.length;
      const s = mod.createConnection(peer.port, '127.0.0.1');
      assert.equal(s.connecting, true);
      assert.equal(s.readyState, 'opening');
      await opened(s);
      assert.equal(s.connecting, false);
      assert.equal(s.remotePort, peer.port);
      assert.equal(s.remoteAddress, '127.0.0.1');
      await peer.connected(n0 + 1);
      const srvSide = peer.conns[n0];
      const out = crypto.randomBytes(2000);
      await new Promise<void>((r, j) => s.write(out, (e) => (e ? j(e) : r())));
      assert.equal(s.bytesWritten, out.length);
      const back = crypto.randomBytes(1500);
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      const ended = new Promise<void>((r) => s.once('end', () => r()));
      srvSide.end(back); // data, then FIN
      await ended;
      await closed(s);
      assert.equal(sha(Buffer.concat(got)), sha(back));
      assert.equal(s.bytesRead, back.length);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(sha(Buffer.concat(peer.received.get(srvSide)!)), sha(out));
    });

    it('write backpressure: write() returns false past the module send buffer, drain follows, bytes arrive exactly', { timeout: 25000 }, async () => {
      const n0 = peer.conns.length;
      const s = mod.createConnection({ port: peer.port });
      await opened(s);
      await peer.connected(n0 + 1);
      const srvSide = peer.conns[n0];
      s.resume(); // like a net.Socket, it ends (and closes) once its readable side is consumed
      const data = crypto.randomBytes(fam === 'sim:nodemcu' ? 12000 : 40000);
      let falses = 0;
      for (let off = 0; off < data.length; off += 1000) {
        if (!s.write(data.subarray(off, off + 1000))) {
          falses++;
          assert.ok(s.writableLength >= s.writableHighWaterMark, 'false once the module send buffer is full');
          await new Promise<void>((r) => s.once('drain', () => r()));
        }
      }
      assert.ok(falses >= 1, 'write() returned false, and drain followed');
      assert.ok(s.writableHighWaterMark <= 11200, `high-water mark ${s.writableHighWaterMark} is the module send buffer`);
      await new Promise<void>((r) => s.end(() => r()));
      assert.equal(s.bytesWritten, data.length);
      const deadline = Date.now() + 10000;
      while (Buffer.concat(peer.received.get(srvSide)!).length < data.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(sha(Buffer.concat(peer.received.get(srvSide)!)), sha(data));
      await closed(s);
    });

    if (fam === 'sim:luat' || fam === 'sim') {
      it('read backpressure: an unread stream stops taking bytes from the module, then gets them all', { timeout: 30000 }, async () => {
        const total = 48 * 1024;
        const data = crypto.randomBytes(total);
        let sent = 0;
        const paced = await startPeer((c) => {
          const t = setInterval(() => {
            if (sent >= total) return clearInterval(t);
            c.write(data.subarray(sent, sent + 1024));
            sent += 1024;
          }, 10);
          c.on('close', () => clearInterval(t));
        });
        try {
          const s = mod.createConnection(paced.port);
          await opened(s);
          // nobody reads: the stream buffers up to its high-water mark, then the module stops taking bytes
          const deadline = Date.now() + 8000;
          while (sent < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
          assert.equal(sent, total, 'the server wrote everything (into its socket buffers)');
          await new Promise((r) => setTimeout(r, 500));
          const stalled = s.bytesRead;
          assert.ok(stalled < total, `the module stopped taking bytes while nobody read (${stalled} of ${total})`);
          assert.ok(s.readableLength >= s.readableHighWaterMark, 'the stream buffer is full');
          // reading again resumes the module
          const parts: Buffer[] = [];
          let n = 0;
          await new Promise<void>((resolve, reject) => {
            s.once('error', reject);
            s.once('end', () => reject(new Error(`ended after ${n} of ${total} bytes`)));
            s.on('data', (d: Buffer) => {
              parts.push(d);
              n += d.length;
              if (n >= total) resolve();
            });
          });
          assert.equal(sha(Buffer.concat(parts)), sha(data));
          s.destroy();
          await closed(s);
        } finally {
          await paced.close();
        }
      });
    }

    it('a peer that sends 100 KiB and closes at once: every byte, then end', { timeout: 20000 }, async () => {
      const data = crypto.randomBytes(100 * 1024);
      const burst = await startPeer((c) => c.end(data));
      try {
        const s = mod.createConnection(burst.port);
        const parts: Buffer[] = [];
        s.on('data', (d: Buffer) => parts.push(d));
        const how = await new Promise<{ end?: true; error?: Error }>((resolve) => {
          s.once('end', () => resolve({ end: true }));
          s.once('error', (error) => resolve({ error }));
        });
        // LuatOS: the agent's rx takes all the socket holds in the one read the firmware allows
        // after the FIN (hello rxdrain); Luat reads everything before CLOSE_IND
        assert.ok(how.end, String(how.error));
        assert.equal(sha(Buffer.concat(parts)), sha(data), 'ended: with every byte');
        await closed(s);
      } finally {
        await burst.close();
      }
    });

    it('destroy() releases the module socket, setTimeout emits timeout, setNoDelay/setKeepAlive are accepted', { timeout: 15000 }, async () => {
      const n0 = peer.conns.length;
      const s = mod.createConnection({ port: peer.port, host: '127.0.0.1' });
      await opened(s);
      await peer.connected(n0 + 1);
      assert.equal(s.setNoDelay(true), s);
      assert.equal(s.setKeepAlive(true, 1000), s);
      const t0 = Date.now();
      await new Promise<void>((r) => s.setTimeout(150, () => r()));
      assert.ok(Date.now() - t0 >= 140);
      const srvSide = peer.conns[n0];
      const peerClosed = new Promise<void>((r) => (srvSide.closed ? r() : srvSide.once('close', () => r())));
      s.destroy();
      await closed(s);
      srvSide.end();
      await peerClosed; // the module closed its side: the server saw the FIN
    });

    it('a refused connect errors with SOCKET / ECONNREFUSED, then close', { timeout: 20000 }, async () => {
      const port = await freePort();
      const s = createConnection(mod, { port, host: '127.0.0.1', connectTimeoutMs: 10000 });
      const e = await failed(s);
      assert.ok(isSocketError(e, 'ECONNREFUSED'), `${(e as TetherError).code} ${(e as Error).message}`);
      assert.equal((e as TetherError).code, 'SOCKET');
      await closed(s);
    });

    it('a module reset errors every open Duplex with RESET within 1 s', { timeout: 20000 }, async () => {
      // a server that keeps streaming, so bytes are in flight when the module resets; slowly:
      // on the simulated ESP8266 (its heap budget enforced) two sockets at 10 KB/s each plus a
      // 20000-byte write can run the agent out of memory ("not enough memory") while this host
      // is starved of CPU, which is then not the reset this test is about
      const streaming = await startPeer((c) => {
        const t = setInterval(() => c.write(crypto.randomBytes(200)), 100);
        c.on('close', () => clearInterval(t));
      });
      // every reset and every line the module printed, from the start: a reset before the
      // restart below fails the test with what the module said, instead of leaving it waiting
      const resets: string[] = [];
      const lines: string[] = [];
      const watch = [mod.rpc.resets.subscribe((r) => resets.push(r.reason)), mod.rpc.logs.subscribe((l) => lines.push(l.text))];
      try {
        const socks = [mod.createConnection(streaming.port), mod.createConnection(streaming.port), mod.createConnection(peer.port)];
        // listeners from the start: an error emitted early is seen, never lost
        const errors = socks.map((s) => new Promise<{ e: Error; at: number }>((r) => s.once('error', (e) => r({ e, at: performance.now() }))));
        await Promise.all(socks.map(opened));
        for (const s of socks) s.on('data', () => {});
        const writing = socks[2];
        writing.write(crypto.randomBytes(20000)); // a write in flight too
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(resets.length, 0, `the module reset (${resets.join(', ')}) before the test restarted it; it printed:\n${lines.join('\n')}`);
        const seenAt = firstValueFrom(mod.rpc.resets.pipe(map(() => performance.now())));
        await mod.simulator!.restart('test');
        const seen = await seenAt;
        const got = await Promise.all(errors);
        for (const [i, g] of got.entries()) {
          assert.ok(isTetherError(g.e, 'RESET'), `socket ${i}: ${String(g.e)}`);
          // the host's part: from the moment it saw the reset (how soon the module shows it,
          // by its boot frame or its next ack, is the link's: test/v2-reliability.test.ts)
          assert.ok(g.at - seen < 1000, `socket ${i} errored ${Math.round(g.at - seen)} ms after the host saw the reset`);
        }
        await Promise.all(socks.map(closed));
        // the module works again after the reset
        const again = mod.createConnection(peer.port);
        await opened(again);
        again.destroy();
      } finally {
        for (const w of watch) w.unsubscribe();
        await streaming.close();
      }
    });

    it('UDP: createSocket("udp4") sends and receives datagrams', { timeout: 15000 }, async () => {
      const echo = dgram.createSocket('udp4');
      echo.on('message', (m, r) => echo.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
      await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
      const port = echo.address().port;
      try {
        const u = mod.createSocket('udp4');
        const msgs: Array<{ m: Buffer; port: number; address: string }> = [];
        const first = new Promise<void>((r) =>
          u.on('message', (m, rinfo) => {
            msgs.push({ m, port: rinfo.port, address: rinfo.address });
            r();
          }),
        );
        const payload = crypto.randomBytes(600);
        await new Promise<void>((r, j) => u.send(payload, port, '127.0.0.1', (e) => (e ? j(e) : r())));
        await first;
        assert.equal(sha(msgs[0].m), sha(Buffer.concat([Buffer.from('echo:'), payload])));
        assert.equal(msgs[0].port, port);
        assert.throws(() => u.send(Buffer.alloc(1500), port, '127.0.0.1'), InvalidArgumentError);
        await new Promise<void>((r) => u.close(() => r()));
      } finally {
        echo.close();
      }
    });

    if (fam === 'sim:luat') {
      it('createServer: listen errors with UNSUPPORTED (socketcore cannot listen)', { timeout: 10000 }, async () => {
        const srv = mod.createServer();
        srv.listen(await freePort());
        const e = await failed(srv as never);
        assert.ok(isTetherError(e, 'UNSUPPORTED'), String(e));
      });
    } else {
      it('createServer: a host client reaches a server listening on the module; echo and end', { timeout: 20000 }, async () => {
        const accepted: SocketStream[] = [];
        const srv = createServer(mod, (s) => {
          accepted.push(s);
          s.pipe(s);
        });
        const port = fam === 'sim:nodemcu' ? 0 : await freePort();
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen(port, () => resolve());
        });
        const addr = srv.address();
        assert.ok(addr && addr.port > 0);
        for (let i = 0; i < 2; i++) {
          const c = net.connect(addr.port, '127.0.0.1');
          const msg = crypto.randomBytes(1000);
          const back: Buffer[] = [];
          c.on('data', (d) => back.push(d));
          await new Promise<void>((r) => c.once('connect', () => r()));
          c.write(msg);
          const deadline = Date.now() + 8000;
          while (Buffer.concat(back).length < msg.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
          assert.equal(sha(Buffer.concat(back)), sha(msg), `client ${i} got its bytes back`);
          const ended = new Promise<void>((r) => accepted[i].once('end', () => r()));
          c.end();
          await ended; // the module-side stream saw the host's FIN
          await closed(accepted[i]);
          c.destroy();
        }
        assert.equal(accepted.length, 2);
        assert.equal(accepted[0].remoteAddress, '127.0.0.1');
        await new Promise<void>((r) => srv.close(() => r()));
      });
    }
  });
}

describe('module socket limits: a typed EMFILE error and the queue option, never a hang', () => {
  for (const [fam, limit] of [
    ['sim', 8],
    ['sim:luat', 10],
  ] as const) {
    it(`${fam}: ${limit} sockets, then EMFILE; queued connects wait for a free socket or time out`, { timeout: 30000 }, async () => {
      const mod = await connect(fam);
      const peer = await startPeer();
      try {
        const socks: SocketStream[] = [];
        for (let i = 0; i < limit; i++) socks.push(mod.createConnection(peer.port));
        await Promise.all(socks.map(opened));
        const over = mod.createConnection(peer.port);
        const e = await failed(over);
        assert.ok(isSocketError(e, 'EMFILE'), String(e));
        // the queue times out when nothing frees
        const late = mod.createConnection({ port: peer.port, queue: { timeoutMs: 400, retryMs: 100 } });
        const te = await failed(late);
        assert.ok(isTetherError(te, 'TIMEOUT'), String(te));
        // a queued connect goes through once a socket is released
        const queued = mod.createConnection({ port: peer.port, queue: { timeoutMs: 10000 } });
        let up = false;
        queued.once('connect', () => (up = true));
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(up, false, 'it waits while every socket is taken');
        socks[0].destroy();
        await opened(queued).catch(() => undefined);
        assert.equal(up, true, 'it connected once a socket was free');
        queued.destroy();
        for (const s of socks) s.destroy();
        await Promise.all([queued, ...socks].map(closed));
      } finally {
        await peer.close();
        await mod.close();
      }
    });
  }

  it('sim:nodemcu: a third listener is EMFILE ("cannot allocate PCB": 2 listeners at most)', { timeout: 15000 }, async () => {
    const mod = await connect('sim:nodemcu');
    try {
      const a = mod.createServer().listen(0);
      const b = mod.createServer().listen(0);
      await Promise.all([a, b].map((s) => new Promise<void>((r, j) => (s.once('listening', () => r()), s.once('error', j)))));
      const c = mod.createServer().listen(0);
      const e = await failed(c as never);
      assert.ok(isSocketError(e, 'EMFILE'), String(e));
      await Promise.all([a, b].map((s) => new Promise<void>((r) => s.close(() => r()))));
    } finally {
      await mod.close();
    }
  });
});

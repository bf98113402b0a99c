/**
 * Issue 9 item 10: every bad argument of the public facades (LuatOS `socket`, Luat `socketcore`,
 * NodeMCU `net`) is an InvalidArgumentError (code INVALID_ARGUMENT), thrown when the method is
 * called, and NOTHING reaches the transport: the test counts the bytes written on the transport
 * under the RpcClient of a simulated module, case by case, and once more after a quiet period.
 * A valid call afterwards proves the counter counts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { firstValueFrom, lastValueFrom, type Observable } from 'rxjs';
import { SimulatedModule } from '../src/sim/module.js';
import { SIM_FAMILIES } from '../src/sim/families.js';
import { RpcClient } from '../src/rpc/client.js';
import type { Transport } from '../src/transport/transport.js';
import { LuatosSocket, ZBuff, checkOpenSocketArgs, type SocketCtrl } from '../src/api/luatos/socket.js';
import { LuatSocketcore, checkOpenConnectionArgs } from '../src/api/luat/socketcore.js';
import { NodeMcuNet, checkConnectTcpArgs, type TcpServer, type TcpSocket, type UdpSocket } from '../src/api/nodemcu/net.js';
import { connectTcp } from '../src/streams/drivers/nodemcu-conn.js';
import { InvalidArgumentError, isTetherError } from '../src/errors.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A transport that counts the bytes the host writes. */
class CountingTransport implements Transport {
  written = 0;
  writes = 0;
  constructor(private readonly inner: Transport) {}
  get description(): string {
    return `counting(${this.inner.description})`;
  }
  get isOpen(): boolean {
    return this.inner.isOpen;
  }
  write(data: Uint8Array): Promise<void> {
    this.written += data.length;
    this.writes++;
    return this.inner.write(data);
  }
  onData(l: (c: Uint8Array) => void): void {
    this.inner.onData(l);
  }
  onClose(l: (e?: Error) => void): void {
    this.inner.onClose(l);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

interface Session {
  sim: SimulatedModule;
  rpc: RpcClient;
  t: CountingTransport;
}

async function open(family: string): Promise<Session> {
  const sim = await SimulatedModule.start(SIM_FAMILIES[family].create());
  const t = new CountingTransport(sim.connect());
  // no keepalive during the test: every byte written is one a call caused
  const rpc = await RpcClient.open(t, { timeoutMs: 5000, keepaliveMs: 3_600_000 });
  return { sim, rpc, t };
}

/** Wait until nothing has been written for `quietMs` (acks of the setup calls have gone out). */
async function quiet(t: CountingTransport, quietMs = 150): Promise<void> {
  let last = t.written;
  for (let i = 0; i < 100; i++) {
    await sleep(quietMs);
    if (t.written === last) return;
    last = t.written;
  }
  assert.fail('the transport never went quiet');
}

/** One bad call: `run` returns the facade's observable (or throws). */
type Case = [name: string, run: () => Observable<unknown> | unknown];

/**
 * Run every case: each must throw InvalidArgumentError synchronously (or, at the latest, error on
 * subscribe with INVALID_ARGUMENT) with zero bytes written; then a quiet period with zero bytes.
 */
async function expectNoBytes(s: Session, cases: Case[]): Promise<void> {
  await quiet(s.t);
  const start = s.t.written;
  for (const [name, run] of cases) {
    const before = s.t.written;
    let err: unknown;
    try {
      const o = run();
      if (o && typeof (o as Observable<unknown>).subscribe === 'function') await lastValueFrom(o as Observable<unknown>, { defaultValue: undefined });
    } catch (e) {
      err = e;
    }
    assert.ok(err !== undefined, `${name}: no error`);
    assert.ok(isTetherError(err, 'INVALID_ARGUMENT') && err instanceof InvalidArgumentError, `${name}: expected InvalidArgumentError, got ${(err as Error)?.name}: ${(err as Error)?.message}`);
    await new Promise((r) => setImmediate(r));
    assert.equal(s.t.written, before, `${name}: ${s.t.written - before} bytes reached the transport`);
  }
  await sleep(200);
  assert.equal(s.t.written, start, `${s.t.written - start} bytes reached the transport after the bad calls`);
}

const bad = (timeoutMs: unknown) => ({ timeoutMs }) as { timeoutMs: number };
const BAD_TIMEOUTS: unknown[] = [-1, 0, NaN, 'x', Infinity, 2 ** 31];

describe('bad arguments never reach the wire (INVALID_ARGUMENT, zero bytes)', () => {
  describe('LuatOS socket', () => {
    let s: Session;
    let sock: LuatosSocket;
    let c: SocketCtrl;
    before(async () => {
      s = await open('luatos');
      sock = new LuatosSocket(s.rpc);
      const ctrl = await firstValueFrom(sock.create());
      assert.ok(ctrl);
      c = ctrl;
    });
    after(async () => {
      await s.rpc.close();
      await s.sim.stop();
    });

    it('every case of item 10 and the rest of the socket surface', async () => {
      const other = new LuatosSocket(s.rpc);
      const cases: Case[] = [
        ['connect(c, -1, 7): IPv4 integer below 0', () => sock.connect(c, -1, 7)],
        ['connect(c, 2^32, 7): IPv4 integer above 0xFFFFFFFF', () => sock.connect(c, 2 ** 32, 7)],
        ['connect(c, 1.5, 7)', () => sock.connect(c, 1.5, 7)],
        ['connect(c, "", 80)', () => sock.connect(c, '', 80)],
        ['connect(c, undefined, 80)', () => sock.connect(c, undefined as never, 80)],
        ['connect(c, "h", 70000): LS:486 keeps a uint16', () => sock.connect(c, 'h', 70000)],
        ['connect(c, "h", 0)', () => sock.connect(c, 'h', 0)],
        ['connect(c, "h", NaN)', () => sock.connect(c, 'h', NaN)],
        ['connect(c, "h", "80")', () => sock.connect(c, 'h', '80' as never)],
        ['connect ipv6Dns "yes"', () => sock.connect(c, 'h', 80, { ipv6Dns: 'yes' as never })],
        ['connect(c, "h", 80, null)', () => sock.connect(c, 'h', 80, null as never)],
        ['config udp: "yes": LS:316 reads it with lua_isboolean', () => sock.config(c, { udp: 'yes' as never })],
        ['config tls: 1', () => sock.config(c, { tls: 1 as never })],
        ['config(c, null)', () => sock.config(c, null as never)],
        ['config(c, "tcp")', () => sock.config(c, 'tcp' as never)],
        ['config localPort 70000', () => sock.config(c, { localPort: 70000 })],
        ['config keepIdle -1', () => sock.config(c, { keepIdle: -1 })],
        ['config serverCert as a buffer', () => sock.config(c, { serverCert: Buffer.from('x') as never })],
        ["rx(c, 'str'): checked before the rx goes out", () => sock.rx(c, 'str' as never)],
        ["rx(c, '')", () => sock.rx(c, '' as never)],
        ['rx(c, {used: 0})', () => sock.rx(c, { used: 0 } as never)],
        ['rx limit 0', () => sock.rx(c, new ZBuff(), { limit: 0 })],
        ['rx limit NaN', () => sock.rx(c, new ZBuff(), { limit: NaN })],
        ['rx(c, zbuff, null)', () => sock.rx(c, new ZBuff(), null as never)],
        ['tx(c, 42)', () => sock.tx(c, 42 as never)],
        ['tx(c, null)', () => sock.tx(c, null as never)],
        ['tx port 70000', () => sock.tx(c, 'x', { ip: '127.0.0.1', port: 70000 })],
        ['tx ip -5', () => sock.tx(c, 'x', { ip: -5, port: 9 })],
        ['tx flag -1', () => sock.tx(c, 'x', { flag: -1 })],
        ['tx resume "yes"', () => sock.tx(c, 'x', { resume: 'yes' as never })],
        ['read limit -1', () => sock.read(c, -1)],
        ['listen backlog -1', () => sock.listen(c, -1)],
        ['debug(c, "on")', () => sock.debug(c, 'on' as never)],
        ['create(19): adapter above 18', () => sock.create(19)],
        ['create(-1)', () => sock.create(-1)],
        ['state of a fake ctrl', () => sock.state({ id: 1 } as never)],
        ['release of a ctrl of another facade', () => other.release(c)],
        ['setDNS index 0', () => sock.setDNS(null, 0, '8.8.8.8')],
        ['setDNS ip undefined', () => sock.setDNS(null, 1, undefined as never)],
        ['sslLog(-1)', () => sock.sslLog(-1)],
        ['localIP(99)', () => sock.localIP(99)],
        ['adapter(1.5)', () => sock.adapter(1.5)],
        ['sntp([1])', () => sock.sntp([1] as never)],
        ['sntp_port(0)', () => sock.sntp_port(0)],
        ['events(fake ctrl)', () => sock.events({} as never)],
        ...BAD_TIMEOUTS.map((t): Case => [`state timeoutMs ${String(t)}`, () => sock.state(c, bad(t))]),
        ['create opts null', () => sock.create(1, null as never)],
        ['linkup signal "x"', () => sock.linkup(c, { signal: 'x' as never })],
      ];
      await expectNoBytes(s, cases);
      // openSocket (the LuatOS driver's, src/streams/drivers/luatos-conn.ts) calls checkOpenSocketArgs first
      for (const [h, p, o] of [['h', 70000, {}], [undefined, 80, {}], ['h', 80, null], ['h', 80, { udp: 'yes' }], ['h', 80, { timeoutMs: -1 }]] as const) {
        assert.throws(() => checkOpenSocketArgs(h, p, o), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'), `openSocket(${String(h)}, ${p}, ${JSON.stringify(o)})`);
      }
      assert.doesNotThrow(() => checkOpenSocketArgs('127.0.0.1', 80, { udp: true, timeoutMs: 1000 }));
      // the counter counts: a valid call writes bytes
      const [state] = await firstValueFrom(sock.state(c));
      assert.equal(typeof state, 'number');
      assert.ok(s.t.written > 0);
      await quiet(s.t, 50);
      const w = s.t.written;
      await firstValueFrom(sock.state(c));
      assert.ok(s.t.written > w, 'a valid call writes bytes');
    });
  });

  describe('Luat socketcore', () => {
    let s: Session;
    let sc: LuatSocketcore;
    before(async () => {
      s = await open('luat');
      sc = new LuatSocketcore(s.rpc);
    });
    after(async () => {
      await s.rpc.close();
      await s.sim.stop();
    });

    it('every case of item 10 and the rest of the socketcore surface', async () => {
      const cases: Case[] = [
        ['sock_conn type 99', () => sc.sock_conn(99, 'h', 80)],
        ['sock_conn type 3 (SMS in openSocketType)', () => sc.sock_conn(3, 'h', 80)],
        ['sock_conn type "0"', () => sc.sock_conn('0' as never, 'h', 80)],
        ['sock_conn addr undefined', () => sc.sock_conn(0, undefined as never, 80)],
        ['sock_conn addr of 101 characters', () => sc.sock_conn(0, 'a'.repeat(101), 80)],
        ['sock_conn port 70000', () => sc.sock_conn(0, 'h', 70000)],
        ['sock_conn port -1', () => sc.sock_conn(0, 'h', -1)],
        ['sock_conn options null', () => sc.sock_conn(0, 'h', 80, null as never)],
        ['sock_conn localPort 70000', () => sc.sock_conn(0, 'h', 80, { localPort: 70000 })],
        ['sock_conn insist 2', () => sc.sock_conn(2, 'h', 443, { insist: 2 as never })],
        ['sock_conn cert "pem"', () => sc.sock_conn(2, 'h', 443, { cert: 'pem' as never })],
        ['sock_conn_ext type 99', () => sc.sock_conn_ext(99, 'h', 80)],
        ['sock_send(-1)', () => sc.sock_send(-1, 'x')],
        ['sock_send(10): slots are 0..9', () => sc.sock_send(10, 'x')],
        ['sock_send(0.5)', () => sc.sock_send(0.5, 'x')],
        ['sock_send of 70000 bytes (uint16 length)', () => sc.sock_send(0, Buffer.alloc(70000))],
        ['sock_send(0, 5)', () => sc.sock_send(0, 5 as never)],
        ['sock_recv(len 1e9)', () => sc.sock_recv(0, 1e9)],
        ['sock_recv(len 2049): one RECV_IND is at most 2048', () => sc.sock_recv(0, 2049)],
        ['sock_recv(len 0)', () => sc.sock_recv(0, 0)],
        ['sock_recv(-1, 10)', () => sc.sock_recv(-1, 10)],
        ['sock_close("0")', () => sc.sock_close('0' as never)],
        ['sock_destroy(NaN)', () => sc.sock_destroy(NaN)],
        ['sock_setopt value "1"', () => sc.sock_setopt(0, 0xfff, 8, '1' as never)],
        ['sock_getremainbuf(-1)', () => sc.sock_getremainbuf(-1)],
        ['csqQueryPoll(-5)', () => sc.csqQueryPoll(-5)],
        ...BAD_TIMEOUTS.map((t): Case => [`getState timeoutMs ${String(t)}`, () => sc.getState(bad(t))]),
        ['isReady opts "fast"', () => sc.isReady('fast' as never)],
      ];
      await expectNoBytes(s, cases);
      for (const [h, p, o] of [['h', 70000, {}], [undefined, 80, {}], ['h', 80, null], ['h', 80, { type: 'raw' }], ['h', 80, { timeoutMs: NaN }]] as const) {
        assert.throws(() => checkOpenConnectionArgs(h, p, o), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'), `openConnection(${String(h)}, ${p}, ${JSON.stringify(o)})`);
      }
      assert.doesNotThrow(() => checkOpenConnectionArgs('127.0.0.1', 80, { type: 'udp', timeoutMs: 1000 }));
      await quiet(s.t, 50);
      const w = s.t.written;
      assert.match((await firstValueFrom(sc.getState()))[0], /^[A-Z]+$/);
      assert.ok(s.t.written > w, 'a valid call writes bytes');
    });
  });

  describe('NodeMCU net', () => {
    let s: Session;
    let n: NodeMcuNet;
    let tcp: TcpSocket;
    let udp: UdpSocket;
    let srv: TcpServer;
    before(async () => {
      s = await open('nodemcu');
      n = new NodeMcuNet(s.rpc);
      tcp = await firstValueFrom(n.createConnection());
      udp = await firstValueFrom(n.createUDPSocket());
      srv = await firstValueFrom(n.createServer(30));
    });
    after(async () => {
      await s.rpc.close();
      await s.sim.stop();
    });

    it('every case of item 10 and the rest of the net surface', async () => {
      const cases: Case[] = [
        ['udp.send of 2000 bytes (limit 1472)', () => udp.send(9, '127.0.0.1', Buffer.alloc(2000))],
        ['udp.send of 1473 bytes', () => udp.send(9, '127.0.0.1', Buffer.alloc(1473))],
        ['udp.send of 0 bytes ("no data to send")', () => udp.send(9, '127.0.0.1', '')],
        ['udp.send port 0 ("need port")', () => udp.send(0, '127.0.0.1', 'x')],
        ['udp.send to a name ("invalid IP address")', () => udp.send(9, 'example.com', 'x')],
        ['udp.send ip 256.1.1.1', () => udp.send(9, '256.1.1.1', 'x')],
        ['udp.send data 42', () => udp.send(9, '127.0.0.1', 42 as never)],
        ['udp.send sentCallback "yes"', () => udp.send(9, '127.0.0.1', 'x', { sentCallback: 'yes' as never })],
        ['udp.listen port 70000', () => udp.listen(70000)],
        ['udp.listen ip "any"', () => udp.listen(0, 'any')],
        ['udp.on("connection")', () => udp.on('connection' as never)],
        ['udp.ttl(256)', () => udp.ttl(256)],
        ['udp.dns("")', () => udp.dns('')],
        ['createServer(-5)', () => n.createServer(-5)],
        ['createServer(0)', () => n.createServer(0)],
        ['createServer(28801)', () => n.createServer(28801)],
        ['createServer("30")', () => n.createServer('30' as never)],
        ['createServer(1, 1.5)', () => n.createServer(1, 1.5)],
        ['createConnection("tcp")', () => n.createConnection('tcp' as never)],
        ['connectTcp host undefined (would look up "undefined")', () => connectTcp(n, undefined as never, 80)],
        ['connectTcp host ""', () => connectTcp(n, '', 80)],
        ['connectTcp port 70000', () => connectTcp(n, '127.0.0.1', 70000)],
        ['connectTcp timeoutMs -1', () => connectTcp(n, '127.0.0.1', 80, { timeoutMs: -1 })],
        ['connectTcp timeoutMs NaN', () => connectTcp(n, '127.0.0.1', 80, { timeoutMs: NaN })],
        ['connectTcp timeoutMs "x"', () => connectTcp(n, '127.0.0.1', 80, { timeoutMs: 'x' as never })],
        ['connectTcp options null', () => connectTcp(n, '127.0.0.1', 80, null as never)],
        ['tcp.connect port 0', () => tcp.connect(0, '127.0.0.1')],
        ['tcp.connect host ""', () => tcp.connect(80, '')],
        ['tcp.send("")', () => tcp.send('')],
        ['tcp.send({})', () => tcp.send({} as never)],
        ['tcp.send(x, null)', () => tcp.send('x', null as never)],
        ['tcp.on("bogus")', () => tcp.on('bogus' as never)],
        ['tcp.on("receive", "yes")', () => tcp.on('receive', 'yes' as never)],
        ['tcp.ttl(-1)', () => tcp.ttl(-1)],
        ['tcp.dns(undefined)', () => tcp.dns(undefined as never)],
        ['srv.listen(-1)', () => srv.listen(-1)],
        ['srv.listen(0, "localhost")', () => srv.listen(0, 'localhost')],
        ['srv.listen events ["bogus"]', () => srv.listen(0, undefined, { events: ['bogus' as never] })],
        ['dns.resolve(undefined)', () => n.dns.resolve(undefined as never)],
        ['dns.resolve("")', () => n.dns.resolve('')],
        ['dns.getdnsserver(2)', () => n.dns.getdnsserver(2)],
        ['dns.setdnsserver("0.0.0.0")', () => n.dns.setdnsserver('0.0.0.0')],
        ['dns.setdnsserver("dns.google")', () => n.dns.setdnsserver('dns.google')],
        ['ifinfo(-1)', () => n.ifinfo(-1)],
        ['multicastJoin("x", "224.0.0.1")', () => n.multicastJoin('x', '224.0.0.1')],
        ['multicastLeave("any", "nope")', () => n.multicastLeave('any', 'nope')],
        ['ping(undefined)', () => n.ping(undefined as never)],
        ['ping("h", 0)', () => n.ping('127.0.0.1', 0)],
        ...BAD_TIMEOUTS.map((t): Case => [`node.heap timeoutMs ${String(t)}`, () => n.node.heap(bad(t))]),
        ['dns.resolve timeoutMs -1', () => n.dns.resolve('localhost', bad(-1))],
        ['ping timeoutMs NaN', () => n.ping('127.0.0.1', 1, bad(NaN))],
        ['tcp.getpeer timeoutMs "x"', () => tcp.getpeer(bad('x'))],
        ['release signal {}', () => tcp.release({ signal: {} as never })],
      ];
      await expectNoBytes(s, cases);
      // connectTcp (the NodeMCU driver's, src/streams/drivers/nodemcu-conn.ts) calls this check first
      for (const [h, p, o] of [[undefined, 80, {}], ['h', 0, {}], ['h', 80, null], ['h', 80, { timeoutMs: 'x' }]] as const) {
        assert.throws(() => checkConnectTcpArgs(h, p, o), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'), `connectTcp(${String(h)}, ${p}, ${JSON.stringify(o)})`);
      }
      assert.doesNotThrow(() => checkConnectTcpArgs('127.0.0.1', 80, { timeoutMs: 1000 }));
      await quiet(s.t, 50);
      const w = s.t.written;
      // 0 today: the agent's Lua heap (~45 KB) is more than the 44000 bytes the ESP8266 has free (docs/fidelity.md, Heap)
      assert.ok((await firstValueFrom(n.node.heap())) >= 0);
      assert.ok(s.t.written > w, 'a valid call writes bytes');
    });
  });
});

// One rule for every timeout (src/util/timer.ts): a finite number of ms, > 0, at most 2^31-1 (a
// longer one, Infinity included, would fire after 1 ms in Node). The stream layer and the RPC
// client follow it as the facades above do; 0 is "off" where net.Socket allows it.
describe('timeouts follow one rule in every layer', () => {
  let s: Session;
  before(async () => {
    s = await open('luatos');
  });
  after(async () => {
    await s.rpc.close();
    await s.sim.stop();
  });

  it('createConnection, setTimeout and RpcClient.open refuse what a Node timer cannot honour, before a byte is sent', async () => {
    const { connect } = await import('../src/api/connect.js');
    const { createConnection } = await import('../src/streams/index.js');
    const mod = await connect('sim');
    try {
      const before = mod.rpc.stats.framesOut;
      const refused = (name: string, f: () => unknown) =>
        assert.throws(f, (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'), `${name} was accepted`);
      for (const t of BAD_TIMEOUTS) {
        refused(`connectTimeoutMs ${String(t)}`, () => createConnection(mod, { port: 80, connectTimeoutMs: t as number }));
        refused(`queue.timeoutMs ${String(t)}`, () => createConnection(mod, { port: 80, queue: { timeoutMs: t as number } }));
        refused(`queue.retryMs ${String(t)}`, () => createConnection(mod, { port: 80, queue: { retryMs: t as number } }));
        if (t !== 0) refused(`timeout ${String(t)}`, () => createConnection(mod, { port: 80, timeout: t as number }));
      }
      await new Promise((r) => setImmediate(r)); // the link pumps its queue in a microtask (bundles)
      assert.equal(mod.rpc.stats.framesOut, before, 'nothing was sent');
      // a valid idle timeout, then setTimeout's own checks on the stream
      const sock = createConnection(mod, { port: 1, timeout: 0 });
      sock.on('error', () => {});
      for (const t of [-1, NaN, Infinity, 2 ** 31, 'x']) refused(`setTimeout(${String(t)})`, () => sock.setTimeout(t as number));
      assert.doesNotThrow(() => sock.setTimeout(0));
      sock.destroy();
      for (const t of [Infinity, 2 ** 31, -5, NaN]) {
        await assert.rejects(RpcClient.open(s.t, { timeoutMs: t }), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'), `RpcClient.open timeoutMs ${t}`);
      }
    } finally {
      await mod.close();
    }
  });
});

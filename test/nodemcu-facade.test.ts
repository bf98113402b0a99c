/**
 * The NodeMCU `net` facade through the real agent running in the simulated ESP8266:
 * every function, method and event of docs/firmware/nodemcu.md, API at a glance with its
 * result asserted; 64 KiB byte-exact over TCP with the send helper; UDP echo with port
 * and ip; a server on the module accepting a Node client; DNS; an error in a user-level
 * callback path; the 256-byte RX ring overflowing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { firstValueFrom, lastValueFrom, take, toArray } from 'rxjs';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily, type NodemcuFamily } from '../src/sim/nodemcu/family.js';
import { RpcClient } from '../src/rpc/client.js';
import { NodeMcuNet, NET_TCP, NET_UDP, TcpSocket, TcpServer, UdpSocket } from '../src/api/nodemcu/net.js';
import { connectTcp, sendAll } from '../src/streams/drivers/nodemcu-conn.js';
import { NetError, isNetError } from '../src/api/nodemcu/errors.js';
import { startEchoServers, type EchoServers } from '../src/diag/echo-servers.js';
import { encodeFrame } from '../src/codec/frame.js';
import { Handle } from '../src/codec/values.js';
import { isTetherError } from '../src/errors.js';
import { TetherModule, connect } from '../src/api/connect.js';
import '../src/streams/index.js'; // mod.createConnection

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const done = <T>(o: import('rxjs').Observable<T>) => lastValueFrom(o, { defaultValue: undefined as T });
const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');

async function rejectsWith(p: Promise<unknown>, reason: string, message?: RegExp): Promise<NetError> {
  try {
    await p;
  } catch (e) {
    assert.ok(isNetError(e, reason as never), `expected NetError ${reason}, got ${(e as Error).name}: ${(e as Error).message}`);
    if (message) assert.match((e as NetError).remoteMessage, message);
    return e as NetError;
  }
  assert.fail(`expected NetError ${reason}, the call succeeded`);
}

describe('NodeMCU net facade through the agent', () => {
  let fam: NodemcuFamily;
  let sim: SimulatedModule;
  let rpc: RpcClient;
  let n: NodeMcuNet;
  let echo: EchoServers;

  before(async () => {
    echo = await startEchoServers();
    // heapBytes: this board keeps every object the tests below make (sockets, servers, UDP
    // sockets, with their callbacks) in one session; with four of them open, a call whose reply
    // loads tether_enc.lua needs ~44.4 KB, over the 44000 bytes an ESP8266 has free, and the
    // simulated module fails as the firmware would ("not enough memory"). The board has more
    // room so these tests exercise the facade; the 44000-byte default is enforced in the
    // connect("sim:nodemcu") test below, test/nodemcu-bulk.test.ts, test/sessions.test.ts and
    // the NodeMCU streams of test/stream-socket.test.ts (docs/fidelity.md, "Heap").
    fam = nodemcuFamily({ heapBytes: 56000, network: { hosts: { localhost: '127.0.0.1', 'echo.test': '127.0.0.1' }, pingIntervalMs: 50 }, agentSettings: { TETHER_ALLOW_REPL: true, TETHER_ALLOW_RESTART: true } });
    sim = await SimulatedModule.start(fam);
    rpc = await RpcClient.open(sim.connect(), { timeoutMs: 5000 });
    n = new NodeMcuNet(rpc);
  });
  after(async () => {
    await rpc.close();
    await sim.stop();
    await echo.close();
  });

  it('hello: family nodemcu, frames within the 256-byte ring, node.heap and the Lua heap', () => {
    const h = rpc.hello;
    assert.equal(h.family, 'nodemcu');
    assert.equal(h.bsp, 'ESP8266');
    assert.match(h.fw ?? '', /-sim$/);
    assert.equal(h.maxframe, 255);
    assert.ok(h.window <= 255);
    assert.equal(typeof h.heap, 'number');
    assert.ok((h.raw.get('nodeheap') as number) > 0, 'node.heap() in hello');
  });

  it('module functions: constructors (with their quirks), ifinfo, multicast, dns.*, ping, wifi and node status', async () => {
    const s = await firstValueFrom(n.createConnection());
    assert.ok(s instanceof TcpSocket);
    const legacy = await firstValueFrom(n.createConnection(NET_UDP));
    assert.ok(legacy instanceof TcpSocket, 'createConnection(net.UDP) is still a TCP socket');
    assert.deepEqual(await firstValueFrom(legacy.getpeer()), [null, null]);
    const srv = await firstValueFrom(n.createServer(NET_TCP, 30));
    assert.ok(srv instanceof TcpServer);
    assert.ok((await firstValueFrom(n.createUDPSocket())) instanceof UdpSocket);
    const i0 = await firstValueFrom(n.ifinfo(0));
    assert.deepEqual(i0, { hwaddr: '5c:cf:7f:00:00:01', ip: '127.0.0.1', netmask: '255.0.0.0', gateway: '127.0.0.1', dhcp: { server_ip: '127.0.0.1', client_ip: '127.0.0.1', ntp_server: undefined } });
    assert.equal(await firstValueFrom(n.ifinfo(7)), null);
    assert.equal(await done(n.multicastJoin('any', '239.1.2.3')), undefined);
    assert.equal(await done(n.multicastLeave('', '239.1.2.3')), undefined);
    assert.throws(() => n.multicastJoin('1.2', '239.1.2.3'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
    await rejectsWith(done(n.invoke('net.multicastJoin', ['1.2', '239.1.2.3'], (v) => v)), 'INVALID_IF_IP');
    assert.equal(await firstValueFrom(n.dns.resolve('localhost')), '127.0.0.1');
    assert.deepEqual(await firstValueFrom(n.dns.resolveRaw('10.0.0.1')), [null, '10.0.0.1'], 'the callback gets nil first');
    assert.equal(await firstValueFrom(n.dns.resolve('no-such-host.invalid')), null);
    assert.equal(await firstValueFrom(n.dns.getdnsserver(0)), '208.67.222.222');
    assert.equal(await firstValueFrom(n.dns.getdnsserver(1)), null);
    await done(n.dns.setdnsserver('8.8.4.4', 1));
    assert.equal(await firstValueFrom(n.dns.getdnsserver(1)), '8.8.4.4');
    // the facade refuses these before sending (INVALID_ARGUMENT); the simulated firmware still raises its own errors
    assert.throws(() => n.dns.getdnsserver(2), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
    assert.throws(() => n.dns.setdnsserver('0.0.0.0'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
    await rejectsWith(firstValueFrom(n.invoke('net.dns.getdnsserver', [2], (v) => v)), 'DNS_INDEX');
    await rejectsWith(done(n.invoke('net.dns.setdnsserver', ['0.0.0.0', 0], (v) => v)), 'INVALID_DNS_SERVER');
    const ping = await lastValueFrom(n.ping('127.0.0.1', 2).pipe(toArray()));
    assert.equal(ping.length, 3);
    assert.deepEqual(ping[0], { type: 'reply', bytes: 32, ip: '127.0.0.1', seq: ping[0].type === 'reply' ? ping[0].seq : 0, rtt: 1 });
    assert.deepEqual({ ...ping[2], ms: 0 }, { type: 'summary', ip: '127.0.0.1', total: 2, timeouts: 0, bytes: 64, ms: 0 });
    assert.deepEqual(await lastValueFrom(n.ping('no-such-host.invalid').pipe(toArray())), [{ type: 'reply', bytes: 0, ip: undefined, seq: undefined, rtt: undefined }]);
    assert.equal(await firstValueFrom(n.wifi.status()), 5);
    assert.deepEqual(await firstValueFrom(n.wifi.getip()), { ip: '127.0.0.1', netmask: '255.0.0.0', gateway: '127.0.0.1' });
    assert.equal(await firstValueFrom(n.wifi.getmode()), 1);
    assert.ok((await firstValueFrom(n.node.heap())) > 1000);
    assert.equal(await firstValueFrom(n.node.chipid()), 1193046);
    for (const o of [s, legacy, srv]) await done(o.release());
    await assert.rejects(firstValueFrom(s.getpeer()), (e) => isTetherError(e, 'REMOTE') && /BADHANDLE/.test((e as Error).message), 'a released handle is refused');
  });

  it('tcpsocket: on, connect, connection$, getpeer/getaddr (port first), ttl, hold/unhold, dns, send + sent$, receive$, close, errors', async () => {
    const s = await firstValueFrom(n.createConnection());
    const evs: string[] = [];
    const sub = s.events.subscribe((e) => evs.push(e.name));
    for (const ev of ['connection', 'receive', 'sent', 'disconnection', 'reconnection', 'dns'] as const) await done(s.on(ev));
    assert.throws(() => s.on('bogus' as never), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
    await rejectsWith(done(n.invoke('tcpsocket.on', [new Handle(s.id), 'bogus', true], (v) => v)), 'INVALID_CALLBACK_NAME');
    await rejectsWith(done(s.send('x')), 'NOT_CONNECTED');
    await rejectsWith(firstValueFrom(s.ttl()), 'NOT_OPEN');
    const connected = firstValueFrom(s.connection$);
    const dnsEv = firstValueFrom(s.dns$);
    await done(s.connect(echo.tcp.port, 'echo.test'));
    assert.equal(await dnsEv, '127.0.0.1', '"dns" fires for a connect by name');
    await connected;
    await rejectsWith(done(s.connect(echo.tcp.port)), 'ALREADY_CONNECTED');
    assert.deepEqual(await firstValueFrom(s.getpeer()), [echo.tcp.port, '127.0.0.1']);
    const [lport, lip] = await firstValueFrom(s.getaddr());
    assert.ok(typeof lport === 'number' && lport > 0);
    assert.equal(lip, '127.0.0.1');
    assert.equal(await firstValueFrom(s.ttl()), 255);
    assert.equal(await firstValueFrom(s.ttl(64)), 64);
    await done(s.hold());
    await done(s.unhold());
    assert.equal(await firstValueFrom(s.dns('localhost')), '127.0.0.1');
    const sent = firstValueFrom(s.sent$);
    const recv = firstValueFrom(s.receive$);
    await done(s.send(Buffer.from([0, 1, 2, 10, 13, 255])));
    await sent;
    assert.deepEqual(Buffer.from(await recv), Buffer.from([0, 1, 2, 10, 13, 255]));
    const oom = await rejectsWith(done(s.send(Buffer.alloc(2921))), 'OUT_OF_MEMORY');
    assert.equal(oom.lwipCode, -1);
    assert.equal(oom.remoteMessage, 'out of memory');
    await done(s.close());
    await sleep(100);
    assert.ok(!evs.includes('disconnection') && !evs.includes('reconnection'), 'a local close fires no disconnection');
    const again = await rejectsWith(done(s.close()), 'NOT_CONNECTED');
    assert.equal(again.lwipCode, -11);
    sub.unsubscribe();
    await done(s.release());
  });

  it('64 KiB of random bytes round-trip byte-exact over TCP with sendAll: at most two sends in flight until "sent", chunks within 2920 bytes', async () => {
    const conn = await firstValueFrom(connectTcp(n, '127.0.0.1', echo.tcp.port));
    const payload = randomBytes(64 * 1024);
    // watch the wire: the order of send calls and "sent" events
    const order: string[] = [];
    const sizes: number[] = [];
    const evSub = conn.socket.sent$.subscribe(() => order.push('sent'));
    const orig = rpc.call$.bind(rpc);
    (rpc as unknown as { call$: RpcClient['call$'] }).call$ = (fn, args = [], opts) => {
      if (fn === 'tcpsocket.send') {
        order.push('send');
        sizes.push((args[1] as Uint8Array).length);
      }
      return orig(fn, args, opts);
    };
    const got: Buffer[] = [];
    let total = 0;
    const back = new Promise<void>((resolve, reject) => {
      conn.data().subscribe({
        next: (b) => {
          got.push(Buffer.from(b));
          total += b.length;
          if (total >= payload.length) resolve();
        },
        error: reject,
      });
    });
    try {
      const progress = await lastValueFrom(conn.send(payload).pipe(toArray()));
      assert.equal(progress.at(-1), payload.length);
      await back;
    } finally {
      (rpc as unknown as { call$: RpcClient['call$'] }).call$ = orig;
      evSub.unsubscribe();
    }
    assert.ok(Buffer.concat(got).equals(payload), 'byte-exact');
    assert.ok(sizes.every((x) => x <= 2920), 'every chunk fits the 2920-byte send buffer');
    // at most two sends without a "sent" between them: TCP_SND_BUF is 2 x 1460 (net.c / lwipopts)
    for (let i = 2; i < order.length; i++) {
      assert.ok(!(order[i] === 'send' && order[i - 1] === 'send' && order[i - 2] === 'send'), `three sends in flight at ${i}: ${order.slice(Math.max(0, i - 3), i + 2).join(',')}`);
    }
    // the window keeps the 256-byte ring from overflowing; the simulated ring gets bytes in bursts with no
    // baud pacing (docs/fidelity.md), and a rare overflow still happens here (known issue, noted on
    // issue 7): protocol v2 repairs it (the echo above is byte-exact). It must stay rare.
    assert.ok(fam.esp!.rxDropped < payload.length / 100, `the ring dropped ${fam.esp!.rxDropped} bytes: flow control failed`);
    await conn.close();
    await assert.rejects(firstValueFrom(conn.socket.getpeer()), /BADHANDLE/, 'close() released the handle');
  });

  it('reconnection$ / disconnection$ carry the lwIP error of a refused connect; connectTcp turns it into a SOCKET error', async () => {
    const refused = await new Promise<number>((r) => {
      const tmp = net.createServer();
      tmp.listen(0, '127.0.0.1', () => {
        const p = (tmp.address() as net.AddressInfo).port;
        tmp.close(() => r(p));
      });
    });
    const a = await firstValueFrom(n.createConnection());
    await done(a.on('reconnection'));
    await done(a.on('disconnection'));
    const recon = firstValueFrom(a.reconnection$);
    await done(a.connect(refused, '127.0.0.1'));
    assert.equal(await recon, -9, 'connection refused = ERR_RST, to "reconnection" when registered');
    const b2 = await firstValueFrom(n.createConnection());
    await done(b2.on('disconnection'));
    const disc = firstValueFrom(b2.disconnection$);
    await done(b2.connect(refused, '127.0.0.1'));
    assert.equal(await disc, -9, 'without a reconnection handler the error goes to "disconnection"');
    await assert.rejects(firstValueFrom(connectTcp(n, '127.0.0.1', refused)), (e) => isTetherError(e, 'SOCKET') && (e as { context?: { err?: number } }).context?.err === -9);
    // net.c net_dns_cb connects to 255.255.255.255 after a failed lookup: it ends in ERR_ABRT (-8), not silence
    await assert.rejects(
      firstValueFrom(connectTcp(n, 'no-such-host.invalid', 80, { timeoutMs: 5000 })),
      (e) => isTetherError(e, 'SOCKET') && (e as { context?: { err?: number } }).context?.err === -8,
      'a failed lookup ends in reconnection/disconnection -8',
    );
    for (const o of [a, b2]) await done(o.release());
  });

  it('sendAll refuses chunks over the send buffer before sending anything', async () => {
    const s = await firstValueFrom(n.createConnection());
    assert.throws(() => sendAll(s, 'x', { chunkSize: 2921 }), (e) => isTetherError(e, 'INVALID_ARGUMENT'));
    await done(s.release());
  });

  it('udpsocket: on, listen, getaddr, send, receive$ with port and ip, sent$, ttl, dns, close', async () => {
    const u = await firstValueFrom(n.createUDPSocket());
    await done(u.on('receive'));
    await done(u.on('sent'));
    await done(u.listen(0));
    await sleep(20);
    const [port, ip] = await firstValueFrom(u.getaddr());
    assert.ok(typeof port === 'number' && port > 0);
    assert.equal(ip, '0.0.0.0');
    await rejectsWith(done(u.listen(0)), 'ALREADY_LISTENING');
    const dgram = firstValueFrom(u.receive$);
    const sentEv = firstValueFrom(u.sent$);
    await done(u.send(echo.udp.port, '127.0.0.1', 'udp payload \x00\xff', { sentCallback: true }));
    await sentEv;
    const d = await dgram;
    assert.deepEqual({ data: text(d.data), port: d.port, ip: d.ip }, { data: 'udp payload \x00\xc3\xbf', port: echo.udp.port, ip: '127.0.0.1' });
    assert.throws(() => u.send(0, '127.0.0.1', 'x'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
    assert.throws(() => u.send(9, 'example.com', 'x'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
    await rejectsWith(done(n.invoke('udpsocket.send', [new Handle(u.id), 0, '127.0.0.1', 'x', false], (v) => v)), 'NEED_PORT');
    await rejectsWith(done(n.invoke('udpsocket.send', [new Handle(u.id), 9, 'example.com', 'x', false], (v) => v)), 'INVALID_IP');
    assert.equal(await firstValueFrom(u.ttl(10)), 10);
    assert.equal(await firstValueFrom(u.dns('localhost')), '127.0.0.1');
    await done(u.close());
    await rejectsWith(done(u.close()), 'NOT_CONNECTED');
    await done(u.release());
  });

  it('tcpserver: listen, getaddr, accept$ of a Node client with early data kept, send back, close keeps the connection, release', async () => {
    const srv = await firstValueFrom(n.createServer(30));
    await done(srv.listen(0));
    await sleep(20);
    const [port, ip] = await firstValueFrom(srv.getaddr());
    assert.equal(ip, '0.0.0.0');
    assert.ok(port && port > 0);
    const accepted = firstValueFrom(srv.accept$);
    const client = net.connect(port!, '127.0.0.1');
    client.write('first bytes');
    let got = '';
    client.on('data', (d) => (got += d.toString()));
    const sock = await accepted;
    const recv = await firstValueFrom(sock.receive$);
    assert.equal(text(recv), 'first bytes', 'data right after accept reaches the host (the agent registered receive in the accept callback)');
    assert.deepEqual((await firstValueFrom(sock.getpeer()))[1], '127.0.0.1');
    await done(sock.send('from the module'));
    await done(srv.close());
    assert.deepEqual(await firstValueFrom(srv.getaddr()), [null, null]);
    await rejectsWith(done(srv.close()), 'NOT_CONNECTED');
    client.write('after close');
    assert.equal(text(await firstValueFrom(sock.receive$)), 'after close');
    const disc = firstValueFrom(sock.disconnection$);
    client.end();
    assert.equal(await disc, 0, 'remote close: disconnection(0)');
    for (let i = 0; i < 50 && got !== 'from the module'; i++) await sleep(10);
    assert.equal(got, 'from the module');
    await done(sock.release());
    await done(srv.release());
    client.destroy();
  });

  it('an error raised in a user-level callback path (tether_hook on the module) is logged; the agent and the data flow go on', async () => {
    const logs: string[] = [];
    const ls = rpc.logs.subscribe((l) => logs.push(`${l.level} ${l.text}`));
    const boots = sim.boots;
    const epoch = rpc.currentEpoch;
    assert.equal(sim.currentVm!.runString('function tether_hook(h, ev) if ev == "receive" then error("user hook failed") end end', '=user'), undefined);
    try {
      const conn = await firstValueFrom(connectTcp(n, '127.0.0.1', echo.tcp.port));
      const chunk = firstValueFrom(conn.data());
      await lastValueFrom(conn.send('through the failing hook'));
      assert.equal(text(await chunk), 'through the failing hook', 'the event still reached the host');
      for (let i = 0; i < 50 && !logs.some((l) => /user hook failed/.test(l)); i++) await sleep(10);
      assert.ok(logs.some((l) => /^1 .*user hook failed/.test(l)), `an L1 notice carries the error: ${logs.join(' | ')}`);
      assert.equal(sim.boots, boots, 'no reboot');
      assert.equal(rpc.currentEpoch, epoch, 'same agent instance');
      assert.deepEqual(await firstValueFrom(n.dns.resolve('127.0.0.2')), '127.0.0.2', 'the agent still answers');
      await conn.close();
    } finally {
      sim.currentVm!.runString('tether_hook = nil', '=user');
      ls.unsubscribe();
    }
  });

  it('a 256-byte RX ring overflow is detected (CRC), never turns into corrupt data, and the link recovers what it destroyed', async () => {
    const raw = sim.connect(); // a second endpoint on the same UART that ignores the window
    const stats = async () => (await rpc.call('agent.stats', []))[0] as Map<string, number>;
    const seen = (m: Map<string, number>) => m.get('bad')! + m.get('dup')! + m.get('ahead')!;
    const before = seen(await stats());
    const dropsBefore = fam.esp!.rxDropped;
    // noise frames (valid-looking lines the ring overflow cuts into pieces) blasted at once
    const noise = Array.from({ length: 12 }, (_, i) => encodeFrame(`C${4000 + i}.0`, `1 agent.ping b60:${'N'.repeat(60)}`));
    const payloads = Array.from({ length: 8 }, (_, i) => Buffer.alloc(60, 65 + i));
    const calls = payloads.map((p) => rpc.call('agent.ping', [p]));
    // faster than the agent's input task drains (at 115200 on the paced line it keeps up unless Lua
    // holds the VM): the burst goes unpaced
    sim.wire.paced = false;
    await raw.write(Buffer.concat(noise));
    await sleep(5);
    sim.wire.paced = true;
    const answered = await Promise.all(calls);
    assert.ok(fam.esp!.rxDropped > dropsBefore, 'the ring overflowed');
    answered.forEach((r, i) => assert.ok(Buffer.from(r[1] as Uint8Array).equals(payloads[i]), `call ${i} carries its own payload`));
    // noise alone: the lines that survive the overflow whole are counted (duplicates: out of sequence),
    // the cut ones starting with ~ too (bad CRC)
    await raw.write(Buffer.concat(noise));
    await sleep(100);
    assert.ok(seen(await stats()) > before, 'the agent counted the noise it received');
    // the regular session is unaffected
    const big = randomBytes(1500);
    const r = await rpc.call('agent.ping', [big]);
    assert.ok(Buffer.from(r[1] as Uint8Array).equals(big));
    await raw.close();
  });

  it('node.restart resets the module: calls on old handles fail with RESET, the client re-handshakes', async () => {
    const s = await firstValueFrom(n.createConnection());
    const reset = firstValueFrom(rpc.resets);
    await done(n.node.restart());
    const ev = await reset;
    assert.notEqual(ev.epoch, ev.previousEpoch);
    await sleep(100);
    await assert.rejects(firstValueFrom(s.getpeer()), (e) => isTetherError(e, 'RESET'));
    assert.equal(await firstValueFrom(n.wifi.status()), 5, 'the new agent answers');
  });

  it('agent.repl gives the Lua prompt back (the agent stops answering)', async () => {
    const logs: string[] = [];
    rpc.logs.subscribe((l) => logs.push(l.text));
    await done(n.node.repl());
    for (let i = 0; i < 50 && !logs.includes('tether agent stopped'); i++) await sleep(10);
    assert.ok(logs.includes('tether agent stopped'), 'the REPL printed on the UART');
    assert.equal(fam.esp!.uartTaken, false, 'the interpreter owns the UART again');
    await assert.rejects(rpc.call('wifi.sta.status', [], { timeoutMs: 300 }), (e) => isTetherError(e, 'TIMEOUT'));
  });
});

describe('TetherModule for NodeMCU', () => {
  it('connect("sim:nodemcu") gives .net; .socket refuses; close stops the simulator', async () => {
    const mod: TetherModule = await connect('sim:nodemcu');
    try {
      assert.equal(mod.family, 'nodemcu');
      assert.equal(await firstValueFrom(mod.net.dns.resolve('127.0.0.1')), '127.0.0.1');
      assert.throws(() => mod.socket, (e) => isTetherError(e, 'INVALID_ARGUMENT'));
      const info = await mod.info();
      assert.equal(info.family, 'nodemcu');
      assert.equal(info.bsp, 'ESP8266');
      assert.ok(info.capabilities.includes('net.createConnection'));
      assert.equal((await lastValueFrom(mod.net.ping('127.0.0.1', 1).pipe(take(1)))).type, 'reply');
      // a byte stream from the module object: mod.createConnection (src/streams, on the net facade)
      const echo = await startEchoServers();
      try {
        const conn = mod.createConnection(echo.tcp.port, '127.0.0.1');
        const back = new Promise<Buffer>((resolve, reject) => conn.once('data', resolve).once('error', reject));
        conn.write('via the module object');
        assert.equal(text(await back), 'via the module object');
        await new Promise((r) => conn.end(r));
      } finally {
        await echo.close();
      }
    } finally {
      await mod.close();
    }
  });
});

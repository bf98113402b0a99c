/**
 * The simulated ESP8266 (NodeMCU 3.0) without the agent: Lua code typed into its VM
 * exercises the emulated firmware against real sockets on 127.0.0.1, and the UART is
 * driven byte by byte. Each assertion names the firmware fact it checks
 * (docs/firmware/nodemcu.md).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import dgram from 'node:dgram';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily, type NodemcuFamily } from '../src/sim/nodemcu/family.js';
import type { NodemcuSimOptions } from '../src/sim/nodemcu/options.js';
import type { LuaOut } from '../src/sim/lua-vm.js';
import type { Transport } from '../src/transport/transport.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Val = null | boolean | number | string | Val[] | { [k: string]: Val };
function conv(v: LuaOut): Val {
  if (v === undefined) return null;
  if (v instanceof Uint8Array) return Buffer.from(v).toString('latin1');
  if (v instanceof Map) {
    const o: Record<string, Val> = {};
    for (const [k, x] of v) o[String(k)] = conv(x as LuaOut);
    return o;
  }
  if (typeof v === 'object') return 'userdata';
  return v as boolean | number;
}

/** A booted module (stock firmware, no agent) with a recorder `rec(...)` in Lua and the UART captured. */
class Board {
  sim!: SimulatedModule;
  fam!: NodemcuFamily;
  uart!: Transport;
  rx = '';
  recs: Val[][] = [];
  static async boot(opts: NodemcuSimOptions = {}): Promise<Board> {
    const b = new Board();
    b.fam = nodemcuFamily({ boot: 'repl', ...opts });
    b.sim = await SimulatedModule.start(b.fam, { bootNoise: true });
    b.uart = b.sim.connect();
    b.uart.onData((d) => (b.rx += Buffer.from(d).toString('latin1')));
    b.install();
    // the UART is paced at 115200: let the boot banner and prompt finish on the line
    while (b.sim.wire.txInFlight > 0) await sleep(5);
    await sleep(5);
    return b;
  }
  install(): void {
    this.sim.currentVm!.registerGlobal('rec', (a) => {
      const row: Val[] = [];
      for (let i = 1; i <= a.count; i++) row.push(conv(a.value(i)));
      this.recs.push(row);
    });
  }
  /** Run Lua; returns the error message or undefined. */
  lua(code: string): string | undefined {
    return this.sim.currentVm!.runString(code, '=test');
  }
  ok(code: string): void {
    const e = this.lua(code);
    assert.equal(e, undefined, e);
  }
  named(name: string): Val[][] {
    return this.recs.filter((r) => r[0] === name).map((r) => r.slice(1));
  }
  async until(pred: () => boolean, what: string, ms = 4000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timeout waiting for ${what}; recs=${JSON.stringify(this.recs).slice(0, 800)}`);
      await sleep(5);
    }
  }
  async type(text: string): Promise<void> {
    await this.uart.write(Buffer.from(text, 'latin1'));
  }
  async stop(): Promise<void> {
    await this.sim.stop();
  }
}

describe('simulated ESP8266: boot, REPL and UART', () => {
  it('boots with ROM noise and the NodeMCU banner, then the "> " prompt; the REPL echoes, runs lines, reports errors, continues chunks', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam, { bootDelayMs: 60 });
    // a client attached at power-on sees everything: start a second module with the pty-like wire attached early
    await sim.stop();
    const fam2 = nodemcuFamily({ boot: 'repl' });
    let rx = '';
    const simP = SimulatedModule.start(fam2, { bootDelayMs: 40 });
    const sim2 = await simP;
    const t = sim2.connect();
    t.onData((d) => (rx += Buffer.from(d).toString('latin1')));
    await sim2.restart('test');
    // the UART is paced at 115200: wait for the banner and the prompt to be through
    const rxUntil = async (pred: () => boolean, what: string) => {
      const end = Date.now() + 4000;
      while (!pred()) {
        if (Date.now() > end) throw new Error(`timeout waiting for ${what}: ${JSON.stringify(rx)}`);
        await sleep(5);
      }
    };
    await rxUntil(() => rx.endsWith('> '), 'the prompt after boot');
    assert.match(rx, /[\x80-\xff]/, 'ROM output at 74880 baud is garbage at 115200');
    assert.match(rx, /NodeMCU 3\.0\.0\.0 built/);
    assert.match(rx, /modules: .*net.*/);
    // issue 8 C5: a Lua 5.3 build is int32 + float32, reported as "float"; "Lua 5.3 + integer" does not exist
    assert.match(rx, /build type: float\r?\n/);
    assert.match(rx, /powered by Lua 5\.3\.5/);
    assert.ok(rx.endsWith('> '), `prompt after boot: ${JSON.stringify(rx.slice(-20))}`);
    rx = '';
    await t.write(Buffer.from('print("a\\nb", 1+1)\r\n'));
    await rxUntil(() => rx.endsWith('> '), 'the prompt');
    assert.equal(rx, 'print("a\\nb", 1+1)\r\na\r\nb\t2\r\n> ', 'echo, then output with \\n -> \\r\\n, then the prompt');
    rx = '';
    await t.write(Buffer.from('for i=1,2 do\nprint(i) end\n'));
    await rxUntil(() => rx.endsWith('\r\n> '), 'the prompt after the chunk');
    assert.match(rx, />> /, 'continuation prompt for an incomplete chunk');
    assert.match(rx, /1\r\n2\r\n> $/);
    rx = '';
    await t.write(Buffer.from('error("boom")\n'));
    await rxUntil(() => rx.endsWith('> '), 'the prompt after the error');
    assert.match(rx, /Lua error: stdin:1: boom/);
    assert.ok(rx.endsWith('> '), 'an error does not reboot: the prompt comes back');
    assert.equal(sim2.boots, 2);
    rx = '';
    // LUA_MAXINPUT: at the 256th character the line buffer is discarded
    // (paced: a burst over 256 bytes would overflow the RX ring first, see the ring test)
    await t.write(Buffer.from('x'.repeat(200)));
    await sleep(20);
    await t.write(Buffer.from('x'.repeat(56) + 'print("tail")\n'));
    await rxUntil(() => rx.endsWith('> '), 'the prompt after the long line');
    assert.match(rx, /\r\ntail\r\n> $/, 'only what followed the 256th character ran');
    await sim2.stop();
  });

  it('uart.on("data", "\\n", fn, 0): binary-safe lines in pieces of at most 255 bytes, no echo; uart.on("data") gives the REPL back', async () => {
    const b = await Board.boot();
    try {
      b.ok('uart.on("data", "\\n", function(d) rec("line", d) end, 0)');
      b.rx = '';
      await b.type('ab\x00\xff\r\n' + 'y'.repeat(150));
      await sleep(20); // paced like a UART at 115200 would be: no ring overflow
      await b.type('y'.repeat(150) + '\n');
      await b.until(() => b.named('line').length >= 3, 'lines');
      const lines = b.named('line').map((r) => r[0] as string);
      assert.equal(lines[0], 'ab\x00\xff\r\n', 'the terminator is included; bytes are untouched');
      assert.equal(lines[1].length, 255, 'a longer line arrives in 255-byte pieces');
      assert.equal(lines[2], 'y'.repeat(45) + '\n');
      assert.equal(b.rx, '', 'no echo while the callback owns the UART');
      b.ok('uart.on("data")');
      await b.type('print("back")\n');
      await b.until(() => b.rx.includes('back\r\n> '), 'the REPL');
    } finally {
      await b.stop();
    }
  });

  it('the 256-byte RX ring drops the OLDEST bytes silently when more arrives than the firmware drains', async () => {
    const b = await Board.boot();
    try {
      b.ok('uart.on("data", "\\n", function(d) rec("line", d) end, 0)');
      const burst = Array.from({ length: 10 }, (_, i) => `line-${i}-${'z'.repeat(44)}\n`).join(''); // 530 bytes at once
      // the UART is paced: the input task keeps up at 115200 unless Lua holds the VM, here a
      // 1200-byte uart.write (~93 ms) while the 530 bytes (~46 ms) arrive
      b.ok('uart.write(0, string.rep("-", 1200))');
      await b.type(burst);
      await b.until(() => b.recs.length > 0, 'lines');
      await sleep(30);
      const got = b.named('line').map((r) => r[0] as string).join('');
      assert.equal(b.fam.esp!.rxDropped, burst.length - 256);
      assert.equal(got, burst.slice(burst.length - 256), 'what is left is the newest 256 bytes, the front of the first line is gone');
      assert.doesNotMatch(got, /line-0-/);
    } finally {
      await b.stop();
    }
  });

  it('node.output sends print output to the callback pipe, not the UART; node.input feeds the interpreter', async () => {
    const b = await Board.boot();
    try {
      b.ok('node.output(function(p) rec("out", p:read(1000)) return false end, 0)');
      b.rx = '';
      b.ok('print("to the pipe", 42)');
      await b.until(() => b.named('out').length > 0, 'output callback');
      assert.equal(b.named('out')[0][0], 'to the pipe\t42\n');
      assert.equal(b.rx, '', 'serial_debug 0: nothing on the UART');
      b.ok('node.output() node.input("print(7*6)")');
      await b.until(() => b.rx.includes('42\r\n> '), 'input line ran');
    } finally {
      await b.stop();
    }
  });

  it('errors: tmr callbacks are protected (node.setonerror, default restart), net callbacks are not (PANIC, reboot)', async () => {
    const b = await Board.boot({ onErrorRestartMs: 50 });
    try {
      b.ok('node.setonerror(function(m) rec("onerror", m) end) tmr.create():alarm(5, tmr.ALARM_SINGLE, function() error("in timer") end)');
      await b.until(() => b.named('onerror').length > 0, 'onerror');
      assert.match(String(b.named('onerror')[0][0]), /in timer/);
      await sleep(100);
      assert.equal(b.sim.boots, 1, 'a handled error does not restart');
      // default handler: print, restart after the delay
      b.ok('node.setonerror() tmr.create():alarm(5, tmr.ALARM_SINGLE, function() error("unhandled") end)');
      let booted = b.sim.nextBoot();
      await booted;
      assert.equal(b.sim.boots, 2, 'the default onerror restarts the chip');
      b.install();
      // an error inside a net callback: PANIC, the chip resets
      const udp = dgram.createSocket('udp4');
      await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
      b.ok(`u = net.createUDPSocket() u:on("receive", function() error("in net callback") end) u:listen(0)`);
      await sleep(30);
      const port = b.lua('rec("port", u:getaddr())') ?? (b.named('port')[0][0] as number);
      booted = b.sim.nextBoot();
      udp.send('x', port as number, '127.0.0.1');
      await booted;
      assert.equal(b.sim.boots, 3);
      assert.match(b.rx, /PANIC: unprotected error in call to Lua API \(.*in net callback/);
      assert.match(b.sim.fatalErrors.at(-1) ?? '', /PANIC/);
      udp.close();
    } finally {
      await b.stop();
    }
  });

  it('file: "w" creates the file empty at once, data lands on close; rename refuses an existing target; names over 31 characters are invalid', async () => {
    const b = await Board.boot();
    try {
      b.ok('f = file.open("a.lua", "w") f:write("hello") rec("mid", file.getcontents("a.lua")) f:close() rec("end", file.getcontents("a.lua"))');
      assert.deepEqual(b.named('mid')[0], ['']);
      assert.deepEqual(b.named('end')[0], ['hello']);
      b.ok('file.putcontents("b.lua", "x") rec("ren", file.rename("a.lua", "b.lua"), file.rename("a.lua", "c.lua"), file.exists("a.lua"))');
      assert.deepEqual(b.named('ren')[0], [false, true, false]);
      assert.match(b.lua(`file.open("${'n'.repeat(32)}", "w")`) ?? '', /filename invalid/);
      b.ok('rec("missing", file.open("nope.lua", "r"))');
      assert.deepEqual(b.named('missing')[0], [null]);
      await b.sim.restart('power cycle');
      b.install();
      b.ok('rec("after", file.getcontents("c.lua"))');
      assert.deepEqual(b.named('after')[0], ['hello'], 'SPIFFS survives a reset');
    } finally {
      await b.stop();
    }
  });
});

describe('simulated ESP8266: net', () => {
  let b: Board;
  let echo: net.Server;
  let echoPort = 0;
  const serverSockets = new Set<net.Socket>();
  before(async () => {
    b = await Board.boot({ network: { ackDelayMs: 5, hosts: { localhost: '127.0.0.1', 'fresh.test': '127.0.0.2' } } });
    echo = net.createServer({ allowHalfOpen: true }, (s) => {
      serverSockets.add(s);
      s.on('data', (d) => s.write(d));
      s.on('end', () => s.end());
      s.on('error', () => {});
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    echoPort = (echo.address() as net.AddressInfo).port;
  });
  after(async () => {
    await b.stop();
    for (const s of serverSockets) s.destroy();
    await new Promise<void>((r) => echo.close(() => r()));
  });

  it('constructors: createConnection(net.UDP) is still TCP; createServer(net.TCP, 30) has a 1 s timeout; createServer("x") is a type error', () => {
    b.ok('rec("types", tostring(getmetatable(net.createConnection(net.UDP)).__name), tostring(getmetatable(net.createUDPSocket()).__name))');
    assert.deepEqual(b.named('types')[0], ['net.tcpsocket', 'net.udpsocket']);
    // issue 8 C5: the LUA=53 build has 32-bit integers and reports number_type "float" (int32 + float32)
    b.ok('rec("numbers", node.info("build_config").number_type, math.maxinteger, _VERSION)');
    assert.deepEqual(b.named('numbers')[0], ['float', 2147483647, 'Lua 5.3']);
    assert.match(b.lua('net.createServer("x")') ?? '', /bad argument #1 to 'createServer' \(number expected, got string\)/);
    assert.deepEqual([b.recs.length > 0], [true]);
  });

  it('TCP client: connection, receive per <= 1460-byte segment, sent on ACK, 2920-byte buffer, error strings, getpeer port first', async () => {
    b.recs = [];
    b.ok(`s = net.createConnection()
      for _, ev in ipairs({"connection","receive","sent","disconnection","reconnection"}) do
        s:on(ev, function(sk, a) rec(ev, sk == s, a) end)
      end
      rec("e1", pcall(s.send, s, "early"))
      s:connect(${echoPort}, "127.0.0.1")
      rec("e2", pcall(s.connect, s, ${echoPort}, "127.0.0.1"))
      rec("e2port", pcall(s.connect, s, 0, "127.0.0.1"))`);
    assert.deepEqual(b.named('e1')[0], [false, 'not connected']);
    assert.deepEqual(b.named('e2')[0], [false, 'already connected']);
    // net.c:428-432 (nodemcu-firmware 06c8a47): "already connected" is checked before the port
    assert.deepEqual(b.named('e2port')[0], [false, 'already connected'], 'not "specify port"');
    await b.until(() => b.named('connection').length === 1, 'connection');
    assert.deepEqual(b.named('connection')[0], [true, null], 'the callback gets the same socket object');
    b.ok('rec("peer", s:getpeer()) rec("addr", s:getaddr())');
    assert.deepEqual(b.named('peer')[0], [echoPort, '127.0.0.1'], 'getpeer returns port, then ip');
    assert.equal(typeof b.named('addr')[0][0], 'number');
    b.ok(`rec("big", pcall(s.send, s, string.rep("x", 2921)))
      rec("empty", pcall(s.send, s, "", function() rec("wrongcb") end))
      s:send(string.rep("a", 2000))
      rec("over", pcall(s.send, s, string.rep("b", 1000)))`);
    assert.deepEqual(b.named('big')[0], [false, 'out of memory'], 'a send over the 2920-byte buffer');
    assert.deepEqual(b.named('empty')[0], [false, 'no data to send']);
    assert.deepEqual(b.named('over')[0], [false, 'out of memory'], 'only 920 bytes are free until the ACK');
    await b.until(() => b.named('sent').length >= 1, 'sent');
    // net.c:535-541 (06c8a47): "no data to send" is raised before the call's sent callback is registered
    assert.equal(b.named('wrongcb').length, 0, 'send("", fn) did not replace the sent callback');
    b.ok('rec("ok", pcall(s.send, s, string.rep("c", 2920)))');
    assert.deepEqual(b.named('ok')[0], [true], 'after "sent" the whole buffer is free again');
    await b.until(() => b.named('receive').reduce((n, r) => n + String(r[1]).length, 0) >= 4920, 'echo');
    for (const r of b.named('receive')) assert.ok(String(r[1]).length <= 1460, 'receive is called once per segment of at most 1460 bytes');
    assert.ok(b.named('receive').length >= 4, 'no coalescing');
    // local close: FIN, no "disconnection" ever, a second close is "not connected"
    b.recs = [];
    b.ok('s:close() rec("c2", pcall(s.close, s)) rec("peer2", s:getpeer())');
    assert.deepEqual(b.named('c2')[0], [false, 'not connected']);
    assert.deepEqual(b.named('peer2')[0], [null, null]);
    await sleep(150);
    assert.equal(b.named('disconnection').length + b.named('reconnection').length, 0, 'a local close fires no callback');
  });

  it('TCP client: remote close is disconnection(0); refused is reconnection(-9) when registered, else disconnection(-9)', async () => {
    const closer = net.createServer((s) => s.end('bye'));
    await new Promise<void>((r) => closer.listen(0, '127.0.0.1', () => r()));
    const port = (closer.address() as net.AddressInfo).port;
    const refusedPort = await new Promise<number>((r) => {
      const tmp = net.createServer();
      tmp.listen(0, '127.0.0.1', () => {
        const p = (tmp.address() as net.AddressInfo).port;
        tmp.close(() => r(p));
      });
    });
    b.recs = [];
    b.ok(`a = net.createConnection() a:on("receive", function(_, d) rec("a.recv", d) end) a:on("disconnection", function(_, e) rec("a.disc", e) rec("a.close", pcall(a.close, a)) end) a:connect(${port})
      r1 = net.createConnection() r1:on("reconnection", function(_, e) rec("r1.recon", e) end) r1:on("disconnection", function(_, e) rec("r1.disc", e) end) r1:connect(${refusedPort}, "127.0.0.1")
      r2 = net.createConnection() r2:on("disconnection", function(_, e) rec("r2.disc", e) end) r2:connect(${refusedPort}, "127.0.0.1")`);
    await b.until(() => b.named('a.disc').length > 0 && b.named('r1.recon').length > 0 && b.named('r2.disc').length > 0, 'endings');
    assert.deepEqual(b.named('a.recv')[0], ['bye']);
    assert.deepEqual(b.named('a.disc')[0], [0]);
    assert.deepEqual(b.named('a.close')[0], [false, 'not connected'], 'after a remote close there is no pcb');
    assert.deepEqual(b.named('r1.recon')[0], [-9]);
    assert.equal(b.named('r1.disc').length, 0, 'with a reconnection handler, errors do not go to disconnection');
    assert.deepEqual(b.named('r2.disc')[0], [-9]);
    await new Promise<void>((r) => closer.close(() => r()));
  });

  // nodemcu-firmware app/lwip/core/dns.c (02294955) dns_gethostbyname: ERR_ARG for "" or >= 256
  // characters (971-975), ERR_OK only for IP literals (the table lookup is commented out, 985-989);
  // app/modules/net.c (06c8a47) net_connect calls net_dns_cb at once on ERR_OK (447-449), and after a
  // failed lookup net_dns_cb connects to 255.255.255.255, which ends in ERR_ABRT (-8)
  it('TCP: "dns" fires inside connect() for an IP literal; names are async; a failed lookup ends in reconnection -8; "" and 256 characters are illegal', async () => {
    b.recs = [];
    b.ok(`d = net.createConnection() for _, ev in ipairs({"dns","connection","disconnection","reconnection"}) do d:on(ev, function(_, a) rec("d." .. ev, a) end) end
      d:connect(${echoPort}, "localhost")
      rec("d.after")
      l = net.createConnection() for _, ev in ipairs({"dns","connection"}) do l:on(ev, function(_, a) rec("l." .. ev, a) end) end
      l:connect(${echoPort}, "127.0.0.1")
      rec("l.after")
      n = net.createConnection() for _, ev in ipairs({"dns","connection","disconnection","reconnection"}) do n:on(ev, function(_, a) rec("n." .. ev, a) end) end
      n:connect(80, "no-such-host.invalid")
      rec("nocb", pcall(n.dns, net.createConnection(), "x"))
      n2 = net.createConnection() n2:dns("10.1.2.3", function(sk, ip) rec("lit", sk == n2, ip) end) rec("after")
      e = net.createConnection()
      rec("empty", pcall(e.connect, e, 80, ""))
      rec("long", pcall(e.connect, e, 80, string.rep("a", 256)))
      rec("dnsempty", pcall(e.dns, e, "", function() end))
      rec("free", pcall(e.connect, e, ${echoPort}, "127.0.0.1"))`);
    assert.deepEqual(b.named('nocb')[0], [false, 'no callback specified']);
    assert.deepEqual(b.recs.filter((r) => r[0] === 'lit' || r[0] === 'after').map((r) => r[0]), ['lit', 'after'], 'the callback ran inside dns()');
    assert.deepEqual(b.named('lit')[0], [true, '10.1.2.3']);
    assert.deepEqual(b.recs.filter((r) => r[0] === 'l.dns' || r[0] === 'l.after').map((r) => r[0]), ['l.dns', 'l.after'], 'the dns callback ran inside connect()');
    assert.deepEqual(b.named('l.dns')[0], ['127.0.0.1']);
    const dAfter = b.recs.findIndex((r) => r[0] === 'd.after');
    assert.ok(dAfter >= 0 && b.recs.findIndex((r) => r[0] === 'd.dns') === -1, 'a name ("localhost" too: no loopback interface) never answers inside connect()');
    assert.deepEqual(b.named('empty')[0], [false, 'illegal argument']);
    assert.deepEqual(b.named('long')[0], [false, 'illegal argument'], '256 characters');
    assert.deepEqual(b.named('dnsempty')[0], [false, 'illegal argument']);
    assert.deepEqual(b.named('free')[0], [true], 'the failed connect left no pcb behind');
    await b.until(() => b.named('d.connection').length > 0 && b.named('l.connection').length > 0 && b.named('n.reconnection').length > 0, 'lookups and connects');
    assert.deepEqual(b.named('d.dns')[0], ['127.0.0.1']);
    assert.deepEqual(b.named('n.dns')[0], [null]);
    assert.deepEqual(b.named('n.reconnection')[0], [-8], 'not silence: the SYN to 255.255.255.255 is never answered');
    assert.equal(b.named('n.connection').length + b.named('n.disconnection').length, 0);
    b.ok('d:close() l:close() e:close()');
  });

  it('net.dns: resolve calls back (nil, ip), synchronously for IP literals; 4 lookups at most; server index and ip checks', async () => {
    b.recs = [];
    b.ok(`net.dns.resolve("192.168.7.7", function(sk, ip) rec("lit", sk, ip) end) rec("ret")
      net.dns.resolve("fresh.test", function(sk, ip) rec("name", sk, ip) end)`);
    assert.deepEqual(b.recs.map((r) => r[0]), ['lit', 'ret']);
    assert.deepEqual(b.named('lit')[0], [null, '192.168.7.7']);
    await b.until(() => b.named('name').length > 0, 'resolve');
    assert.deepEqual(b.named('name')[0], [null, '127.0.0.2']);
    b.ok('net.dns.resolve("fresh.test", function(sk, ip) rec("again", ip) end) rec("ret2")');
    assert.equal(b.recs[b.recs.length - 1][0], 'ret2', 'no DNS cache (dns.c:985-989): a name resolved before is asked again, asynchronously');
    await b.until(() => b.named('again').length > 0, 'second lookup');
    assert.deepEqual(b.named('again')[0], ['127.0.0.2']);
    b.ok(`for i = 1, 4 do net.dns.resolve("h" .. i .. ".invalid", function() end) end rec("fifth", pcall(net.dns.resolve, "h5.invalid", function() end))`);
    assert.deepEqual(b.named('fifth')[0], [false, 'out of memory'], 'DNS_TABLE_SIZE = 4');
    assert.match(b.lua('net.dns.resolve("x")') ?? '', /bad argument #2 to 'resolve' \(function expected, got no value\)/);
    b.ok(`rec("srv", net.dns.getdnsserver(0), net.dns.getdnsserver(1)) net.dns.setdnsserver("8.8.8.8", 1) rec("srv2", net.dns.getdnsserver(1))
      rec("e1", pcall(net.dns.getdnsserver, 2)) rec("e2", pcall(net.dns.setdnsserver, "0.0.0.0")) rec("e3", pcall(net.dns.setdnsserver, "1.1.1.1", 5))`);
    assert.deepEqual(b.named('srv')[0], ['208.67.222.222', null]);
    assert.deepEqual(b.named('srv2')[0], ['8.8.8.8']);
    assert.deepEqual(b.named('e1')[0], [false, 'server index out of range [0-1]']);
    assert.deepEqual(b.named('e2')[0], [false, 'invalid dns server ip']);
    assert.deepEqual(b.named('e3')[0], [false, 'server index out of range [0-1]']);
    await sleep(100);
  });

  it('TCP server: listen callback first, then "connection"; keepalive timeout (createServer(net.TCP, 30) = 1 s) never drops a live peer; close leaves connections up', async () => {
    b.recs = [];
    b.ok(`srv = net.createServer(net.TCP, 30)
      srv:listen(0, function(c) rec("accept") c:on("connection", function() rec("conn") end) c:on("receive", function(sk, d) rec("recv", d) sk:send("echo:" .. d) end) c:on("disconnection", function(_, e) rec("disc", e) end) end)
      rec("e", pcall(srv.listen, srv, 0, function() end))`);
    assert.deepEqual(b.named('e')[0], [false, 'already listening']);
    await sleep(20);
    b.ok('rec("addr", srv:getaddr())');
    const [port, ip] = b.named('addr')[0] as [number, string];
    assert.equal(ip, '0.0.0.0', 'getaddr: port first, then the ip it listens on');
    const client = net.connect(port, '127.0.0.1');
    let got = '';
    client.on('data', (d) => (got += d.toString()));
    await b.until(() => b.named('conn').length > 0, 'accept');
    assert.deepEqual(b.recs.filter((r) => r[0] === 'accept' || r[0] === 'conn').map((r) => r[0]), ['accept', 'conn'], 'the listen callback runs first, then "connection"');
    await sleep(2500);
    assert.equal(b.named('disc').length, 0, 'a live, idle peer is not disconnected after the 1 s keepalive time');
    client.write('ping');
    await b.until(() => got === 'echo:ping', 'echo from the module');
    b.ok('srv:close() rec("c2", pcall(srv.close, srv)) rec("addr2", srv:getaddr())');
    assert.deepEqual(b.named('c2')[0], [false, 'not connected']);
    assert.deepEqual(b.named('addr2')[0], [null, null]);
    client.write('still');
    await b.until(() => got.endsWith('echo:still'), 'the accepted connection survives server:close()');
    client.end();
    await b.until(() => b.named('disc').length > 0, 'remote close');
    assert.deepEqual(b.named('disc')[0], [0]);
  });

  it('UDP: receive is (sock, data, port, ip); "sent" fires inside send(); send auto-binds, so listen() then says "already listening"; argument errors', async () => {
    const peer = dgram.createSocket('udp4');
    await new Promise<void>((r) => peer.bind(0, '127.0.0.1', () => r()));
    const peerPort = peer.address().port;
    peer.on('message', (m, ri) => peer.send(Buffer.concat([Buffer.from('re:'), m]), ri.port, ri.address));
    b.recs = [];
    b.ok(`u = net.createUDPSocket() u:on("receive", function(sk, d, port, ip) rec("recv", sk == u, d, port, ip) end)
      u:on("sent", function(sk) rec("sent", sk == u) end)
      u:send(${peerPort}, "127.0.0.1", "hi") rec("returned")
      rec("e1", pcall(u.listen, u, 0)) rec("e2", pcall(u.send, u, 0, "127.0.0.1", "x")) rec("e3", pcall(u.send, u, 9, "example.com", "x"))
      rec("e4", pcall(u.send, u, 9, "127.0.0.1", "")) rec("e5", pcall(u.on, u, "connection", function() end))`);
    assert.deepEqual(b.recs.slice(0, 2).map((r) => r[0]), ['sent', 'returned'], '"sent" before send() returns');
    assert.deepEqual(b.named('e1')[0], [false, 'already listening']);
    assert.deepEqual(b.named('e2')[0], [false, 'need port']);
    assert.deepEqual(b.named('e3')[0], [false, 'invalid IP address'], 'no DNS in udpsocket:send');
    assert.deepEqual(b.named('e4')[0], [false, 'no data to send']);
    assert.deepEqual(b.named('e5')[0], [false, 'invalid callback name']);
    await b.until(() => b.named('recv').length > 0, 'datagram');
    assert.deepEqual(b.named('recv')[0], [true, 're:hi', peerPort, '127.0.0.1']);
    b.ok('rec("addr", u:getaddr()) u:close() rec("c2", pcall(u.close, u))');
    assert.equal(typeof b.named('addr')[0][0], 'number');
    assert.deepEqual(b.named('c2')[0], [false, 'not connected']);
    peer.close();
  });

  it('net.ifinfo, multicast checks, ping (replies then summary), ttl, hold/unhold', async () => {
    b.recs = [];
    b.ok(`local i = net.ifinfo(0) rec("if0", i.ip, i.netmask, i.gateway, #i.hwaddr, i.dhcp.server_ip) rec("if2", net.ifinfo(2))
      rec("m1", pcall(net.multicastJoin, "any", "239.1.2.3")) rec("m2", pcall(net.multicastJoin, 1, "239.1.2.3")) rec("m3", pcall(net.multicastLeave, "", "1.2"))
      net.ping("127.0.0.1", 2, function(b, ip, sq, rtt) rec("pr", b, ip, sq, rtt) end, function(ip, n, lost, bytes, ms) rec("ps", ip, n, lost, bytes) end)
      net.ping("no-such-host.invalid", function(...) rec("pdns", select("#", ...), ...) end)
      rec("pe", pcall(net.ping, "127.0.0.1"))
      t = net.createConnection() rec("ttl", pcall(t.ttl, t))`);
    assert.deepEqual(b.named('if0')[0], ['127.0.0.1', '255.0.0.0', '127.0.0.1', 6, '127.0.0.1']);
    assert.deepEqual(b.named('if2')[0], []);
    assert.deepEqual(b.named('m1')[0], [true]);
    assert.deepEqual(b.named('m2')[0], [false, 'wrong arg type']);
    assert.deepEqual(b.named('m3')[0], [false, 'invalid multicast ip']);
    assert.match(String(b.named('pe')[0][1]), /no received callback specified/);
    assert.deepEqual(b.named('ttl')[0], [false, 'socket is not open/bound yet']);
    await b.until(() => b.named('ps').length > 0 && b.named('pdns').length > 0, 'ping', 5000);
    assert.equal(b.named('pr').length, 2);
    assert.deepEqual(b.named('pr')[0].slice(0, 2), [32, '127.0.0.1']);
    assert.deepEqual(b.named('ps')[0], ['127.0.0.1', 2, 0, 64]);
    assert.deepEqual(b.named('pdns')[0], [1, 0], 'DNS failure: cb_recv(0) alone');
  });
});

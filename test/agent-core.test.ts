/**
 * The shared Lua agent core (firmware-shim/common/core.lua) against the TypeScript v2
 * codec (docs/protocol.md): the real Lua code runs in the simulator's Lua VM with a HAL
 * whose write() captures the frames the agent sends; the test plays the host at frame
 * level (test/helpers/agent-host.ts) and drives the agent's timer by hand.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LuaRaise, LuaVm } from '../src/sim/lua-vm.js';
import { crc32, encodeFrame, fragment, callMessage } from '../src/codec/frame.js';
import type { WireValue } from '../src/codec/values.js';
import { Handle } from '../src/codec/values.js';
import { HOST_MAX_FRAME } from '../src/codec/constants.js';
import { repoRoot } from '../src/util/repo-root.js';
import { AgentHost, txt } from './helpers/agent-host.js';
import { stripFastBlocks } from '../scripts/gen-lua.js';

interface AgentOpts {
  maxframe?: number;
  maxmsg?: number;
  txwin?: number;
  outmax?: number;
  /** Makes the CRC of the n-th fragment frame (`~&`) from now raise "not enough memory" (once). */
  fragCrcFail?: { n: number };
  /** HAL.hold: bytes of host frames kept ahead of a gap it may add to its window (host flag 2). */
  hold?: number;
  /** Bytes a frame written now waits behind in the UART (a constant here): HAL.txq(n) gives their line time in ticks. */
  txq?: number;
  /** The core as a split family (NodeMCU) has it: without its `-- @fast` and `-- @unsplit` blocks. */
  split?: boolean;
  /**
   * string.sub and string.match (and string.gsub, string.char, string.rep, table.concat) as the core takes them raise "not enough memory" at the n-th call
   * after `failn(n)` (once), as the allocation of the string they make would; `fired()` says
   * whether it did.
   */
  strFail?: boolean;
}

function agent(opts: AgentOpts = {}) {
  const vm = new LuaVm();
  const out: Buffer[] = [];
  vm.registerLib('hal_js', {
    write: (a) => void out.push(Buffer.from(a.bytes(1))),
    crc32: (a) => {
      const b = a.bytes(1);
      const f = opts.fragCrcFail;
      if (f && b[1] === 0x26 && f.n > 0 && --f.n === 0) throw new LuaRaise('not enough memory');
      return [crc32(b)]; // unsigned (the firmwares give signed: both must work)
    },
  });
  const root = repoRoot();
  const src = [
    opts.strFail
      ? `local sub, match = string.sub, string.match
         local n, hit = 0, false
         local function f() if n > 0 then n = n - 1 if n == 0 then hit = true error("not enough memory", 0) end end end
         string.sub = function(...) f() return sub(...) end
         string.match = function(...) f() return match(...) end
         local gsub, char, concat, find, rep = string.gsub, string.char, table.concat, string.find, string.rep
         string.gsub = function(...) f() return gsub(...) end
         string.char = function(...) f() return char(...) end
         string.rep = function(...) f() return rep(...) end
         table.concat = function(...) f() return concat(...) end
         function failn(k) n, hit = k, false end
         function fired() return hit end`
      : '',
    readFileSync(join(root, 'firmware-shim/common/protocol.lua'), 'utf8'),
    (opts.split ? stripFastBlocks : (t: string) => t)(readFileSync(join(root, 'firmware-shim/common/core.lua'), 'utf8')),
    `HAL.write = hal_js.write HAL.crc32 = hal_js.crc32
     HAL.maxframe = ${opts.maxframe ?? 255} HAL.outmax = ${opts.outmax ?? 1024} HAL.window = 240
     HAL.txwin = ${opts.txwin ?? 1024} HAL.maxmsg = ${opts.maxmsg ?? 2048} HAL.baud = 115200
     HAL.heap = function() return 12 end HAL.epoch = function() return 4242 end
     HAL.info = function(t) t.family = "test" end
     ${opts.hold !== undefined ? `HAL.hold = ${opts.hold}` : ''}
     ${opts.txq !== undefined ? `HAL.txq = function(n) return (${opts.txq} + n) * 200 / HAL.baud end` : ''}
     local runs = 0
     A.reg("echo", function(...) runs = runs + 1 return ... end)
     A.reg("count", function() return runs end)
     A.reg("boom", function() error("kaboom") end)
     A.reg("tboom", function() error({ "BADARG", "my own code" }) end)
     -- raises after the call ran, outside the core's pcall around it (as an out-of-memory error in
     -- a family hook would): HAL.called, once
     A.reg("trap", function() HAL.called = function() HAL.called = nil error("trapped") end end)
     -- out of memory before a function started (loading it: memfn) and while it ran (oom)
     HAL.lazy = "memfn " HAL.load = function() error("not enough memory", 0) end
     A.reg("oom", function() runs = runs + 1 error("not enough memory", 0) end)
     A.reg("new", function() local o = setmetatable({}, {}) A.newHandle(o) return o end)
     A.reg("free", function(o) A.release(A.hid[o]) end)
     A.reg("big", function(n) return string.rep("x", n) end)
     A.reg("emit", function(h, n) for i = 1, n do A.event(h, "ev", i) end return n end)
     A.start()
     function feed(s) A.feed(s) end
     function tick(n) for _ = 1, n or 1 do A.tick() end end
     function stat(k) return A.stats[k] end
     -- the backlog (L.out) cannot take its next n messages: storing one raises "not enough
     -- memory", as a heap with no room for the queue to grow does
     function failq(n)
       setmetatable(A.K.L.out, { __newindex = function(t, k, v)
         if n > 0 then n = n - 1 error("not enough memory", 0) end
         rawset(t, k, v)
       end })
     end`,
  ].join('\n');
  const err = vm.runString(src, '=agent');
  assert.equal(err, undefined, err);
  const host = new AgentHost();
  /** Bytes the agent wrote since the last call. */
  const take = () => Buffer.concat(out.splice(0));
  const feed = (b: Buffer | string) => {
    const r = vm.callGlobal('feed', typeof b === 'string' ? Buffer.from(b, 'latin1') : b);
    assert.equal(r.error, undefined, r.error);
    return take();
  };
  const tick = (n = 1) => {
    const r = vm.callGlobal('tick', n);
    assert.equal(r.error, undefined, r.error);
    return take();
  };
  const stat = (k: string) => vm.callGlobal('stat', k).values?.[0] as number;
  /** Feed bytes and let the host parse the answer. */
  const exchange = (b: Buffer | string) => {
    const before = host.frames.length;
    host.receive(feed(b));
    host.assertClean();
    return host.frames.slice(before);
  };
  return { vm, host, take, feed, tick, stat, exchange };
}

/** An agent with a session open (its boot frame and the session's A consumed). */
function session(opts: AgentOpts = {}, size = 255) {
  const a = agent(opts);
  a.host.receive(a.take());
  a.exchange(a.host.start(size));
  return a;
}

test('the agent announces its boot epoch; without a session every sequenced frame gets an A with nonce 0', () => {
  const a = agent();
  a.host.receive(a.take());
  assert.deepEqual(a.host.frames, [{ type: 'B', epoch: 4242, proto: 2 }]);
  const got = a.exchange(Buffer.concat([a.host.call(1, 'echo', [1]), a.host.call(2, 'echo', [2])]));
  assert.deepEqual(got, [
    { type: 'A', ack: 0, epoch: 4242, size: 240, nonce: 0 },
    { type: 'A', ack: 0, epoch: 4242, size: 240, nonce: 0 },
  ]);
  assert.equal(a.tick(10).length, 0, 'nothing to retransmit');
  assert.equal(a.stat('calls'), 0, 'nothing ran without a session');
});

test('S opens a session (answered by A with the nonce and the window); a duplicate S is answered again', () => {
  const a = agent();
  a.host.receive(a.take());
  assert.deepEqual(a.exchange(a.host.start()), [{ type: 'A', ack: 0, epoch: 4242, size: 240, nonce: 1234567 }]);
  assert.deepEqual(a.exchange(a.host.start()), [{ type: 'A', ack: 0, epoch: 4242, size: 240, nonce: 1234567 }]);
  assert.deepEqual(a.exchange(a.host.poll()), [{ type: 'A', ack: 0, epoch: 4242, size: 240, nonce: 1234567, probe: 1 }], 'Y is answered by an A that echoes its token');
});

test('a call returns every value, trailing nils included; the reply carries the ack, no extra A', () => {
  const a = session();
  const got = a.exchange(a.host.call(5, 'echo', [1, null, true, Buffer.from([0, 10, 16, 13, 255, 32]), 'a b', -7, null, null]));
  assert.equal(got.length, 1, `one frame: ${JSON.stringify(got)}`);
  assert.deepEqual({ ...got[0], body: undefined }, { type: 'seq', kind: 'R', seq: 0, ack: 1, body: undefined });
  const v = a.host.values(5);
  assert.equal(v.length, 8);
  assert.deepEqual(v.slice(0, 3), [1, null, true]);
  assert.deepEqual(Buffer.from(v[3] as Uint8Array), Buffer.from([0, 10, 16, 13, 255, 32]));
  assert.equal(txt(v[4]), 'a b');
  assert.deepEqual(v.slice(5), [-7, null, null]);
});

test('hello is the small table of section 9; agent.caps pages the capability list; calls by index', () => {
  const a = session();
  a.exchange(a.host.call(1, 'hello', [2, 4096]));
  const h = a.host.values(1)[0] as Map<string, unknown>;
  const get = (k: string) => h.get(k);
  assert.equal(get('proto'), 2);
  assert.equal(txt(get('agent') as Uint8Array), '0.2.0');
  assert.equal(txt(get('family') as Uint8Array), 'test');
  for (const [k, v] of Object.entries({ maxframe: 255, outmax: 1024, window: 240, txwin: 1024, maxmsg: 2048, heap: 12, epoch: 4242, intbits: 32 })) assert.equal(get(k), v, k);
  assert.equal(h.has('caps'), false, 'no caps list in hello');
  const ncaps = get('ncaps') as number;
  a.exchange(a.host.call(2, 'agent.caps', [1, 3]));
  assert.deepEqual(a.host.values(2).map(txt), ['hello', 'agent.caps', 'agent.stats']);
  a.exchange(a.host.call(3, 'agent.caps', [1, 1000]));
  assert.equal(a.host.values(3).length, Math.min(ncaps, 24), 'at most a page of 24 names, whatever the count');
  const caps: string[] = [];
  let pages = 0;
  for (let id = 30; caps.length < ncaps; id++, pages++) {
    a.exchange(a.host.call(id, 'agent.caps', [caps.length + 1, 24]));
    const page = a.host.values(id).map(txt);
    assert.ok(page.length > 0, `page from ${caps.length + 1}`);
    caps.push(...page);
  }
  assert.equal(caps.length, ncaps);
  a.exchange(a.host.call(4, 'agent.caps', [ncaps + 1, 5]));
  assert.deepEqual(a.host.values(4), []);
  a.exchange(a.host.call(5, String(caps.indexOf('echo') + 1), ['via index']));
  assert.equal(txt(a.host.values(5)[0]), 'via index');
  a.exchange(a.host.call(6, 'agent.stats'));
  const st = a.host.values(6)[0] as Map<string, number>;
  for (const k of ['calls', 'bad', 'dup', 'ahead', 'retx', 'queued', 'heap']) assert.equal(typeof st.get(k), 'number', k);
  assert.equal(st.get('calls'), 6 + pages);
});

test('errors: Lua error, table error, unknown function, bad token, unknown and released handles', () => {
  const a = session();
  a.exchange(
    a.host.calls([
      [1, 'boom'],
      [2, 'nope'],
      [3, 'echo', [new Handle(99)]],
      [4, 'new'],
      [7, 'tboom'],
    ]),
  );
  assert.equal(a.host.code(1), 'ERR');
  assert.match((a.host.reply(1) as { message: string }).message, /kaboom/);
  assert.equal(a.host.code(2), 'NOFN');
  assert.equal(a.host.code(3), 'BADHANDLE');
  assert.equal(a.host.code(7), 'BADARG');
  const h = a.host.values(4)[0] as Handle;
  assert.ok(h instanceof Handle);
  a.exchange(a.host.calls([[5, 'free', [h]], [6, 'echo', [h]]]));
  assert.equal(a.host.code(6), 'BADHANDLE');
  assert.match((a.host.reply(6) as { message: string }).message, /released/);
  // a token the agent cannot decode
  const msg = Buffer.from('C8 echo 1 ?what', 'latin1');
  a.exchange(Buffer.concat(fragment(msg, 255, a.host.seq, a.host.rx)));
  a.host.seq++;
  assert.equal(a.host.code(8), 'BADARG');
  const msg2 = Buffer.from('C9 echo b5:abc', 'latin1');
  a.exchange(Buffer.concat(fragment(msg2, 255, a.host.seq, a.host.rx)));
  a.host.seq++;
  assert.equal(a.host.code(9), 'BADARG', 'a b token longer than the message');
});

test('garbage, bad CRC, bad escape, unknown type: counted and dropped, and the next call works', () => {
  const a = session();
  const good = a.host.call(7, 'echo', [42]);
  const corrupt = Buffer.from(good.toString('latin1').replace('42', '43'), 'latin1');
  const raw = '~C0.0 7 echo \x10\x41';
  const badEsc = Buffer.from(`${raw} ${crc32(raw).toString(16).toUpperCase().padStart(8, '0')}\n`, 'latin1');
  const unknown = encodeFrame('Q0.0', '7 echo 1');
  a.exchange(Buffer.concat([Buffer.from('boot noise line\r\n\x00\xff\x01\n~nonsense\n', 'latin1'), corrupt, badEsc, unknown]));
  assert.equal(a.stat('bad'), 4);
  assert.equal(a.stat('calls'), 0);
  a.exchange(Buffer.from(good.toString('latin1').replace(/\n$/, '\r\n'), 'latin1'));
  assert.deepEqual(a.host.values(7), [42], 'a \\r before the \\n is ignored');
});

test('fragmented calls are reassembled, byte by byte too; replies are cut to the session frame size, escapes never split', () => {
  const a = session({}, 100);
  const payload = Buffer.alloc(900, 0x10);
  const wire = a.host.call(8, 'echo', [payload]);
  for (const b of wire) a.host.receive(a.feed(Buffer.from([b])));
  a.host.assertClean();
  assert.deepEqual(Buffer.from(a.host.values(8)[0] as Uint8Array), payload);
  const lines = a.host.frames.filter((f) => f.type === 'seq');
  assert.ok(lines.length > 10, 'the reply was fragmented');
  assert.ok(lines.every((f) => f.type === 'seq' && f.body.length <= 100));
  // the host raises the size with an A: the next reply uses it
  a.exchange(a.host.ack(a.host.rx, 1024));
  const before = a.host.frames.length;
  a.exchange(a.host.call(9, 'big', [900]));
  assert.equal(a.host.frames.length - before, 1, 'one frame of ~930 bytes');
  assert.equal(txt(a.host.values(9)[0]), 'x'.repeat(900));
  // never below MIN_FRAME
  a.exchange(a.host.ack(a.host.rx, 10));
  a.exchange(a.host.call(10, 'big', [100]));
  assert.equal(txt(a.host.values(10)[0]), 'x'.repeat(100));
});

test('a reply is cut and escaped (whole, or piece by piece as NodeMCU does): every line within the session size, at least half full, and the host gets it whole', () => {
  for (const [every, split] of [3, 16, 128].flatMap((e) => [[e, false], [e, true]] as const)) {
    const a = session({ maxmsg: 4096, split }, 255);
    // one byte in `every` is \n or DLE (escaped: two bytes on the line), the rest plain
    const payload = Buffer.alloc(2000, 0).map((_, i) => (i % every === 0 ? (i % (2 * every) === 0 ? 0x0a : 0x10) : 0x41 + (i % 26)));
    a.host.receive(a.take());
    const raw = a.feed(a.host.call(3, 'echo', [payload]));
    a.host.receive(raw);
    a.host.assertClean();
    assert.deepEqual(Buffer.from(a.host.values(3)[0] as Uint8Array), payload, `1 in ${every}, split ${split}: the reply whole`);
    const lines = raw.toString('latin1').split('\n').slice(0, -1).filter((l) => /^~[&$]/.test(l));
    assert.ok(lines.length >= 8, `1 in ${every}, split ${split}: fragmented (${lines.length} frames)`);
    for (const [k, l] of lines.entries()) {
      assert.ok(l.length + 1 <= 255, `1 in ${every}, split ${split}: frame ${k} is ${l.length + 1} bytes on the line`);
      if (k < lines.length - 1) assert.ok(l.length + 1 >= 128, `1 in ${every}, split ${split}: frame ${k} is only ${l.length + 1} bytes`);
    }
  }
});

test('an overlong line is dropped once and counted; a message over maxmsg is refused with TOOBIG', () => {
  const a = session({ maxmsg: 600 });
  a.feed('x'.repeat(200));
  a.feed('~' + 'x'.repeat(300));
  a.feed('still the same line\n');
  assert.equal(a.stat('bad'), 1, 'a line growing past maxframe is dropped once');
  a.exchange(a.host.call(9, 'echo', [Buffer.alloc(700, 1)]));
  assert.equal(a.host.code(9), 'TOOBIG');
  a.exchange(a.host.call(10, 'echo', [1]));
  assert.deepEqual(a.host.values(10), [1]);
});

test('selective repeat: frames ahead of a gap are kept and the hole is listed; duplicates dropped; no call runs twice', () => {
  const a = session();
  const c1 = a.host.call(1, 'echo', ['one']);
  const c2 = a.host.call(2, 'echo', ['two']);
  const c3 = a.host.call(3, 'echo', ['three']);
  // c2 lost: c3 arrives ahead and is kept; the A lists seq 1 as missing
  let got = a.exchange(Buffer.concat([c1, c3]));
  assert.equal(a.stat('ahead'), 1);
  assert.deepEqual(got.map((f) => f.type), ['seq', 'A'], 'R1, then an A listing the hole');
  assert.deepEqual(got[1], { type: 'A', ack: 1, epoch: 4242, size: 240, nonce: 1234567, miss: [1] });
  assert.equal(a.host.repliesTo(3), 0, 'call 3 waits for call 2');
  // the host repeats only c2 (and a stray copy of c1): both calls run, in order, once
  got = a.exchange(Buffer.concat([c1, c2]));
  assert.equal(a.stat('dup'), 1);
  assert.ok(a.host.repliesTo(2) === 1 && a.host.repliesTo(3) === 1);
  a.exchange(a.host.call(4, 'count'));
  assert.deepEqual(a.host.values(4), [3], 'echo ran exactly three times');
  // an old duplicate alone is answered with an A carrying the current ack
  got = a.exchange(c2);
  assert.deepEqual(got, [{ type: 'A', ack: 4, epoch: 4242, size: 240, nonce: 1234567 }]);
  // a corrupt line lists the frame after the highest received (a loss at the tail)
  const c5 = Buffer.from(a.host.call(5, 'echo', [5]));
  c5[8] ^= 1;
  got = a.exchange(c5);
  assert.deepEqual(got, [{ type: 'A', ack: 4, epoch: 4242, size: 240, nonce: 1234567, miss: [4] }]);
  // a stray "~" line (line noise) names no frame: no repair of a frame that may be on its way
  a.tick(1);
  got = a.exchange(Buffer.from('~x9 noise, not a frame\n', 'latin1'));
  assert.deepEqual(got, [], 'no A for a line that does not start like a host frame');
});

test('a Y is answered after its batch, with the holes (the list just sent too); lines kept unread withhold its token', () => {
  const a = session();
  const c1 = a.host.call(1, 'echo', ['one']);
  const c2 = a.host.call(2, 'echo', ['two']);
  const c3 = a.host.call(3, 'echo', ['three']);
  let got = a.exchange(Buffer.concat([c1, c3]));
  assert.deepEqual(got[1], { type: 'A', ack: 1, epoch: 4242, size: 240, nonce: 1234567, miss: [1] });
  // the same list again in the same tick: a plain A would not repeat it, the answer to a Y does
  // (the host then repeats at once what it sent before the Y and is still listed)
  got = a.exchange(a.host.poll());
  assert.deepEqual(got, [{ type: 'A', ack: 1, epoch: 4242, size: 240, nonce: 1234567, probe: 1, miss: [1] }]);
  // a frame and a Y in one batch: the replies carry the ack, then one A answers the Y
  got = a.exchange(Buffer.concat([c2, a.host.poll()]));
  assert.deepEqual(got.map((f) => f.type), ['seq', 'seq', 'A']);
  assert.deepEqual(got[2], { type: 'A', ack: 3, epoch: 4242, size: 240, nonce: 1234567, probe: 1 });
  // a full retransmit queue: the next call's line waits unread, so the answer to a Y cannot
  // show it as received; it comes without the token (the host would take the call for lost)
  const b = session({ txwin: 1024 }, 255);
  b.exchange(b.host.calls([[1, 'big', [900]], [2, 'big', [900]], [3, 'echo', ['after']]]));
  assert.equal(b.host.reply(3), undefined, 'the third call waits');
  got = b.exchange(b.host.poll());
  assert.deepEqual(got, [{ type: 'A', ack: 2, epoch: 4242, size: 240, nonce: 1234567 }]);
  b.exchange(b.host.ack());
  assert.deepEqual(b.host.values(3).map(txt), ['after'], 'acks freed room: the kept call ran');
  assert.deepEqual(b.exchange(b.host.poll()).at(-1), { type: 'A', ack: 3, epoch: 4242, size: 240, nonce: 1234567, probe: 1 }, 'nothing kept: the token again');
});

test('retransmission: the oldest unacknowledged frame on timeout (backing off); listed holes at once, a repair again only after a timeout', () => {
  const a = session();
  a.exchange(a.host.calls([[1, 'echo', [1]], [2, 'echo', [2]]]));
  assert.equal(a.host.messages.length, 2);
  // no ack: RTO_TICKS (4) + line time (a fraction) ticks, then the oldest frame (seq 0) again
  assert.equal(a.tick(4).length, 0);
  const again = a.tick(1);
  a.host.receive(again);
  assert.equal(a.host.dups, 1);
  assert.match(again.toString('latin1'), /^~R0\.1 /);
  assert.equal(a.tick(8).length, 0, 'backoff: twice as long next');
  assert.match(a.tick(1).toString('latin1'), /^~R0\.1 /);
  assert.equal(a.stat('retx'), 2);
  // the host lists seq 1 as missing (it acknowledges 0): seq 1 goes again at once, not again in the same tick
  assert.match(a.feed(a.host.ack(1, 255, undefined, [1])).toString('latin1'), /^~R1\.2 /);
  assert.equal(a.feed(a.host.ack(1, 255, undefined, [1])).length, 0, 'a repair is not repeated at once');
  a.tick(1);
  assert.equal(a.feed(a.host.ack(1, 255, undefined, [1])).length, 0, 'nor a tick later (it may still be on its way)');
  // its own timer (RTO_TICKS + line time, counted from the ack of frame 0) repeats it next
  assert.equal(a.tick(3).length, 0);
  assert.match(a.tick(1).toString('latin1'), /^~R1\.2 /, 'the timer repeats the oldest frame');
  assert.equal(a.feed(a.host.ack(1, 255, undefined, [1])).length, 0, 'a miss list right after that repair adds nothing');
  assert.equal(a.feed(a.host.ack(1, 255, undefined, [7, 900])).length, 0, 'holes it never sent are ignored');
  // everything acknowledged: the timer stops
  assert.equal(a.feed(a.host.ack(2)).length, 0);
  assert.equal(a.tick(100).length, 0);
  a.exchange(a.host.call(3, 'agent.stats'));
  const st = a.host.values(3)[0] as Map<string, number>;
  assert.equal(st.get('retx'), 4);
  // an A with another nonce, or an ack outside the window, changes nothing
  assert.equal(a.feed(a.host.ack(3, 255, 99)).length, 0);
  assert.equal(a.feed(a.host.ack(77)).length, 0);
  assert.match(a.tick(5).toString('latin1'), /^~R2\.3 /, 'frame 2 is still unacknowledged');
});

test('a listed repair goes again at once when the host holds a frame written after it (top); else after REPAIR_TICKS', () => {
  const a = session();
  a.exchange(a.host.calls([[1, 'echo', [1]], [2, 'echo', [2]]]));
  // the host lost frame 0 and holds 1: frame 0 goes again at once (never repeated)
  assert.match(a.feed(a.host.ack(0, 255, undefined, [0], 2)).toString('latin1'), /^~R0\.1 /);
  // listed again with the same top (frame 1 was written before the repair): it may be on its way
  assert.equal(a.feed(a.host.ack(0, 255, undefined, [0], 2)).length, 0, 'a repair is not repeated at once');
  // a reply written after the repair (frame 2); the host holds it and still lacks 0: lost for sure
  a.host.rx = 0; // its call acknowledges nothing (the host still lacks frame 0)
  assert.match(a.feed(a.host.call(3, 'echo', [3])).toString('latin1'), /^~R2\./);
  assert.match(a.feed(a.host.ack(0, 255, undefined, [0], 3)).toString('latin1'), /^~R0\.1 /, 'the repair was lost: again at once');
  assert.equal(a.feed(a.host.ack(0, 255, undefined, [0], 3)).length, 0, 'that proof holds once: the new repair was written after frame 2');
  // without such proof, REPAIR_TICKS (2) ticks after the repair
  a.tick(1);
  assert.equal(a.feed(a.host.ack(0, 255, undefined, [0], 3)).length, 0, 'a tick later: it may still be on its way');
  a.tick(1);
  assert.match(a.feed(a.host.ack(0, 255, undefined, [0], 3)).toString('latin1'), /^~R0\.1 /, 'REPAIR_TICKS later it goes again');
  assert.equal(a.stat('retx'), 3);
});

test('a repair listed again after the ack moved: kept while it may be on its way, again at once when the frame the host received last is a later repair', () => {
  const a = session();
  a.exchange(a.host.calls([[1, 'echo', [1]], [2, 'echo', [2]], [3, 'echo', [3]], [4, 'echo', [4]]]));
  // the host lost frames 0, 1 and 2 and holds 3: the three go again at once, in the order listed
  const r = a.feed(a.host.ack(0, 255, undefined, [0, 1, 2], 4)).toString('latin1');
  assert.match(r, /^~R0\.[^\n]*\n~R1\.[^\n]*\n~R2\./);
  // the repair of 0 came (the ack moves to 1) and the host lists 1 and 2 again at once, naming
  // frame 0 as the one it received last (top 1): both repairs went after it and may be on their way
  assert.equal(a.feed(a.host.ack(1, 255, undefined, [1, 2], 1)).length, 0, 'repairs still on their way are not repeated');
  // the repair of 2 came, that of 1 did not: 1 went on the line before 2, so it is lost for sure
  assert.match(a.feed(a.host.ack(1, 255, undefined, [1], 3)).toString('latin1'), /^~R1\./);
  assert.equal(a.stat('retx'), 4);
});

test('with HAL.txq, a listed repair goes again only REPAIR_TICKS after it is on the line, behind what the UART still holds', () => {
  const run = (txq?: number) => {
    const a = session(txq === undefined ? {} : { txq });
    a.exchange(a.host.calls([[1, 'echo', [1]], [2, 'echo', [2]]]));
    assert.match(a.feed(a.host.ack(0, 255, undefined, [0], 2)).toString('latin1'), /^~R0\./);
    // the same list every tick (a host whose list timer is short); which tick repeats the repair?
    for (let t = 1; t <= 4; t++) {
      a.tick(1);
      if (a.feed(a.host.ack(0, 255, undefined, [0], 2)).length > 0) return t;
    }
    return 0;
  };
  assert.equal(run(), 2, 'no UART queue: REPAIR_TICKS (2) after the repair');
  // 576 bytes ahead of it at 115200 (HAL.baud): on the line about 1.1 ticks after it was written
  assert.equal(run(576), 4, 'REPAIR_TICKS after it is on the line');
});

test('host flag 2: the A window grows by the bytes kept ahead of a gap (at most HAL.hold), and is the window alone once the gap is filled', () => {
  const body = (frame: Buffer) => {
    const l = frame.toString('latin1');
    return l.slice(l.indexOf(' ') + 1, l.lastIndexOf(' ')).length;
  };
  const withFlags = (hold: number, features: number) => {
    const a = session({ hold });
    a.exchange(a.host.call(1, 'hello', [2, 4096, features]));
    const c2 = a.host.call(2, 'echo', ['two']);
    const c3 = a.host.call(3, 'echo', ['three three three']);
    const held = a.exchange(c3).filter((f) => f.type === 'A');
    const filled = a.exchange(Buffer.concat([c2, a.host.poll()])).filter((f) => f.type === 'A');
    assert.equal(a.host.repliesTo(2) + a.host.repliesTo(3), 2, 'both calls ran once the gap was filled');
    return { hello: a.host.values(1)[0] as Map<string, unknown>, held, filled, c3: body(c3) };
  };
  const w = withFlags(4096, 3);
  assert.equal(w.hello.get('hold'), 4096, 'hello says how much it may add');
  assert.deepEqual(w.held.map((f) => [f.size, f.miss]), [[240 + w.c3, [1]]], 'the window plus the kept frame\'s bytes, with the hole');
  assert.deepEqual(w.filled.map((f) => f.size), [240], 'nothing kept: the window alone');
  assert.deepEqual(withFlags(10, 3).held.map((f) => f.size), [250], 'at most HAL.hold');
  assert.deepEqual(withFlags(4096, 1).held.map((f) => f.size), [240], 'a host without flag 2: the window alone');
});

test('an error part way through cutting a message (out of memory in a fragment\'s CRC) pauses it: the host still gets it whole, then the next', () => {
  const fail = { n: 0 };
  const a = session({ fragCrcFail: fail }, 100);
  fail.n = 3; // the third fragment of the 900-byte reply: two pieces are out, the rest waits
  a.exchange(a.host.call(1, 'big', [900]));
  assert.equal(a.host.reply(1), undefined, 'cut short for now');
  assert.equal(a.stat('ferr'), 1, 'agent.stats ferr counts it');
  // the next message: the cut goes on where it stopped, and the second reply follows it whole
  a.exchange(a.host.call(2, 'echo', ['next']));
  assert.equal(txt(a.host.values(1)[0]), 'x'.repeat(900));
  assert.deepEqual(a.host.values(2).map(txt), ['next']);
  a.host.assertClean();
});

test('a full retransmit queue stops call handling (no reply, no new frame) until acks free room', () => {
  const a = session({ txwin: 1024 }, 255);
  // two replies of ~1 KB each: the first fits, the second goes out, the third call waits
  a.exchange(a.host.calls([[1, 'big', [900]], [2, 'big', [900]], [3, 'echo', ['after']]]));
  assert.ok(a.host.reply(1) && a.host.reply(2));
  assert.equal(a.host.reply(3), undefined, 'the third call waits');
  const st = a.vm.callGlobal('stat', 'calls').values?.[0];
  assert.equal(st, 2);
  // events produced meanwhile wait too
  a.exchange(a.host.ack());
  assert.deepEqual(a.host.values(3).map(txt), ['after'], 'acks freed room: the kept call ran');
  a.exchange(a.host.call(4, 'count'));
  assert.deepEqual(a.host.values(4), [1]);
});

test('events wait in order behind a full queue; a new S resets the link (seq 0 again)', () => {
  const a = session({ txwin: 256 }, 255);
  a.exchange(a.host.call(1, 'emit', [7, 20]));
  const evs = () => a.host.messages.filter((m) => m.type === 'E').length;
  const sent = evs();
  assert.ok(sent < 20, `the queue limits what goes out (${sent} events)`);
  for (let i = 0; i < 30 && evs() < 20; i++) a.exchange(a.host.ack());
  assert.equal(evs(), 20);
  const seqs = a.host.messages.filter((m) => m.type === 'E').map((m) => (m as { values: unknown[] }).values[1]);
  assert.deepEqual(seqs, Array.from({ length: 20 }, (_, i) => i + 1), 'in order, each once');
  // a new session
  const h2 = new AgentHost(777);
  h2.receive(a.feed(h2.start()));
  assert.deepEqual(h2.acks.at(-1), { type: 'A', ack: 0, epoch: 4242, size: 240, nonce: 777 });
  h2.receive(a.feed(h2.call(1, 'echo', ['new session'])));
  const last = h2.frames.at(-1) as { type: string; kind: string; seq: number };
  assert.deepEqual([last.type, last.kind, last.seq], ['seq', 'R', 0]);
  assert.equal(txt(h2.values(1)[0]), 'new session');
});

test('bundles (section 2): hello with features turns them on; the calls of an M frame run once each, in order; their replies share a frame', () => {
  const a = session();
  // before the host said it reads them: one frame per reply, even for calls that came together
  const before = a.exchange(a.host.calls([[1, 'echo', ['a']], [2, 'echo', ['b']]]));
  assert.deepEqual(before.filter((f) => f.type === 'seq').map((f) => (f as { kind: string }).kind), ['R', 'R']);
  a.exchange(a.host.call(3, 'hello', [2, 4096, 1]));
  assert.equal((a.host.values(3)[0] as Map<string, unknown>).get('bundle'), 1, 'hello says the agent reads M frames');
  const got = a.exchange(a.host.bundle([[4, 'echo', ['x y']], [5, 'echo', [Buffer.from([10, 16, 0])]], [6, 'count'], [7, 'boom']]));
  const seqs = got.filter((f) => f.type === 'seq') as Array<{ kind: string; ack: number }>;
  assert.deepEqual(seqs.map((f) => f.kind), ['M'], `one frame for the four replies: ${JSON.stringify(got)}`);
  assert.equal(seqs[0].ack, a.host.seq, 'it acknowledges the bundle');
  assert.equal(txt(a.host.values(4)[0]), 'x y');
  assert.deepEqual([...(a.host.values(5)[0] as Uint8Array)], [10, 16, 0], 'escaped bytes inside a bundle');
  assert.deepEqual(a.host.values(6), [4], 'echo ran 4 times: a, b, x y and the bytes, each once');
  assert.equal(a.host.code(7), 'ERR');
  assert.deepEqual(a.host.messages.slice(-4).map((m) => (m as { id: number }).id), [4, 5, 6, 7], 'in order');
  // the same bundle again (a retransmission): dropped as a duplicate, nothing runs twice
  a.host.seq = (a.host.seq + 4095) % 4096;
  a.exchange(a.host.bundle([[4, 'echo', ['x y']], [5, 'echo', ['again']], [6, 'count'], [7, 'boom']]));
  a.exchange(a.host.call(8, 'count'));
  assert.deepEqual(a.host.values(8), [4], 'a repeated bundle runs nothing');
  assert.equal(a.host.repliesTo(5), 1);
  // calls in frames of their own: replies in frames of their own (the agent bundles a bundle's)
  const single = a.exchange(a.host.calls([[12, 'echo', [1]], [13, 'echo', [2]]]));
  assert.deepEqual(single.filter((f) => f.type === 'seq').map((f) => (f as { kind: string }).kind), ['R', 'R']);
  // a hello without features (a diagnostic's) leaves them on; a new session turns them off
  a.exchange(a.host.call(9, 'hello', [2, 4096]));
  const on = a.exchange(a.host.bundle([[10, 'echo', [1]], [11, 'echo', [2]]]));
  assert.deepEqual(on.filter((f) => f.type === 'seq').map((f) => (f as { kind: string }).kind), ['M']);
  const h2 = new AgentHost(778);
  h2.receive(a.feed(h2.start()));
  h2.receive(a.feed(h2.bundle([[1, 'echo', [1]], [2, 'echo', [2]]])));
  assert.deepEqual(h2.frames.filter((f) => f.type === 'seq').map((f) => (f as { kind: string }).kind), ['R', 'R'], 'a new session: it reads bundles, but sends none until its hello');
  assert.deepEqual(h2.values(2), [2]);
});

test('bundles: a body that stops being one is counted, the calls before it run; replies held for a bundle never exceed a frame', () => {
  const a = session();
  a.exchange(a.host.call(1, 'hello', [2, 4096, 1]));
  const bad = (body: string) => {
    const f = encodeFrame(`M${a.host.seq}.${a.host.rx}`, body);
    a.host.seq = (a.host.seq + 1) % 4096;
    return f;
  };
  const c = (id: number, v: string) => callMessage(id, 'echo', [v]).toString('latin1');
  const m2 = c(2, 'ok');
  const badBefore = a.stat('bad');
  a.exchange(bad(`${m2.length} ${m2}12 C3 echo`)); // the second length runs past the end
  assert.equal(txt(a.host.values(2)[0]), 'ok', 'the call before it ran');
  assert.equal(a.stat('bad'), badBefore + 1);
  for (const body of ['', 'x', '0 ', `${m2.length}${m2}`, '12345678 C4', `${m2.length + 1} ${m2}`]) a.exchange(bad(body));
  assert.equal(a.stat('bad'), badBefore + 7, 'each counted once (the empty body too)');
  const r3 = c(3, 'R3'); // a bundled message must be a call: an R from the host is counted
  a.exchange(bad(`5 R1 23${r3.length} ${r3}`));
  assert.equal(a.stat('bad'), badBefore + 8);
  assert.equal(txt(a.host.values(3)[0]), 'R3', 'the call after it still runs');
  // 30 calls whose replies are ~50 bytes, 6 to a bundle, a bundle at a time (the agent's window
  // is 240 bytes): the replies to one bundle (~300 bytes) go out in frames within the session size
  const host = a.host;
  const out: Buffer[] = [];
  for (let g = 0; g < 5; g++) {
    const list: Array<[number, string, WireValue[]]> = [];
    for (let i = 0; i < 6; i++) list.push([100 + g * 6 + i, 'big', [40]]);
    out.push(a.feed(host.bundle(list)));
    host.receive(out.at(-1)!);
    for (let i = 0; i < 5 && list.some(([id]) => !host.reply(id)); i++) {
      out.push(a.feed(host.ack()));
      host.receive(out.at(-1)!);
    }
    for (const [id] of list) assert.equal(txt(host.values(id)[0]).length, 40, `reply ${id}`);
  }
  host.assertClean();
  const lines = Buffer.concat(out).toString('latin1').split('\n').filter(Boolean);
  assert.ok(lines.every((l) => l.length + 1 <= 255), `frames within 255 bytes: ${Math.max(...lines.map((l) => l.length + 1))}`);
  assert.ok(host.frames.some((f) => f.type === 'seq' && f.kind === 'M'), 'replies were bundled');
});

/**
 * With {@link AgentOpts.strFail}: feed `input` while the `k`-th string call fails (an error out of
 * A.feed itself is what the family's UART callback catches, A.guard, and logs), then `repeat()`
 * (the host sending again), and check that every call in `ids` was answered once and that `count`
 * (call id 7) grew by the `echoes` answered with a value, from `runs`: none ran twice.
 * @returns whether the failure fired
 */
function answeredOnceUnderFailure(a: ReturnType<typeof session>, k: number, input: Buffer, repeat: () => void, ids: number[], echoes: number[], runs: number, label: string): boolean {
  a.vm.callGlobal('failn', k);
  a.vm.callGlobal('feed', input);
  a.host.receive(a.take());
  const fired = a.vm.callGlobal('fired').values?.[0] === true;
  a.vm.callGlobal('failn', 0);
  repeat();
  for (const id of ids) assert.equal(a.host.repliesTo(id), 1, `${label}: call ${id} answered once`);
  const ran = echoes.filter((id) => a.host.reply(id)?.type === 'R').length;
  a.exchange(a.host.call(7, 'count'));
  assert.equal(Number(a.host.values(7)[0]), runs + ran, `${label}: each echo that answered ran once, none twice`);
  a.host.assertClean();
  return fired;
}

test('bundles: the heap running out anywhere while an M frame is taken: every call in it is answered once, none runs twice', () => {
  let fired = 0;
  for (let k = 1; k <= 24; k++) {
    const a = session({ strFail: true });
    a.exchange(a.host.call(1, 'hello', [2, 4096, 1]));
    a.exchange(a.host.call(2, 'count'));
    const runs = Number(a.host.values(2)[0]);
    const frame = a.host.bundle([[3, 'echo', ['a']], [4, 'echo', ['b']], [5, 'count'], [6, 'echo', ['c']]]);
    // the host repeats the frame (as after a lost or withheld ack): taken already, it is a duplicate
    const again = () => {
      a.exchange(frame);
      a.exchange(frame);
      a.host.receive(a.tick(2));
    };
    if (answeredOnceUnderFailure(a, k, frame, again, [3, 4, 5, 6], [3, 4, 6], runs, `k ${k}`)) fired++;
  }
  assert.ok(fired >= 8, `the failure hit inside the bundle's handling in ${fired} of 24 cases`);
});

test('the heap running out at any string the core makes while calls come in whole and in fragments: each is answered once, none runs twice', () => {
  for (const split of [false, true]) {
    let fired = 0;
    for (let k = 1; k <= 80; k++) {
      const a = session({ strFail: true, split }, 100);
      a.exchange(a.host.call(1, 'count'));
      const runs = Number(a.host.values(1)[0]);
      const lines = Buffer.concat([a.host.call(2, 'echo', ['w']), a.host.call(3, 'echo', ['y'.repeat(300)], 100), a.host.call(4, 'big', [250])]);
      // the host repeats what is not acknowledged (here: all of it, the agent drops the copies)
      const again = () => {
        for (let i = 0; i < 3; i++) {
          a.vm.callGlobal('feed', lines);
          a.host.receive(a.take());
          a.host.receive(a.tick(3));
          a.host.receive(a.feed(a.host.ack()));
        }
      };
      if (answeredOnceUnderFailure(a, k, lines, again, [2, 3, 4], [2, 3], runs, `split ${split}, k ${k}`)) fired++;
    }
    assert.ok(fired >= 30, `split ${split}: the failure hit in ${fired} cases`);
  }
});

test('bundles: an error raised past a call (outside its pcall) answers it ERR; the messages after it still run, each once', () => {
  const a = session();
  a.exchange(a.host.call(1, 'hello', [2, 4096, 1]));
  a.exchange(a.host.call(2, 'count'));
  const runs = Number(a.host.values(2)[0]);
  a.exchange(a.host.bundle([[3, 'echo', ['a']], [4, 'trap'], [5, 'echo', ['b']], [6, 'count']]));
  assert.equal(txt(a.host.values(3)[0]), 'a');
  assert.equal(txt(a.host.values(5)[0]), 'b', 'the call after the error ran');
  assert.deepEqual(a.host.values(6), [runs + 2], 'each echo ran once');
  assert.equal(a.host.repliesTo(4), 1, 'the call the error cut short is answered once');
  assert.equal(a.host.code(4), 'ERR', 'ERR: its function had run');
  assert.match(String((a.host.reply(4) as { message: string }).message), /trapped/);
});

test('out of memory before a call\'s function started is NOMEM (it did not run); while it ran, ERR', () => {
  const a = session();
  a.exchange(a.host.call(1, 'hello', [2, 4096, 1]));
  a.exchange(a.host.call(2, 'count'));
  const runs = Number(a.host.values(2)[0]);
  a.exchange(a.host.call(3, 'memfn'));
  assert.equal(a.host.code(3), 'NOMEM', 'its load ran out of memory');
  a.exchange(a.host.call(4, 'oom'));
  assert.equal(a.host.code(4), 'ERR', 'it ran, then ran out of memory');
  a.exchange(a.host.call(5, 'count'));
  assert.deepEqual(a.host.values(5), [runs + 1], 'only oom ran');
  assert.equal(a.host.repliesTo(3) + a.host.repliesTo(4), 2, 'one answer each');
});

/** The agent's backlog cannot take its next `n` messages (failq in {@link agent}). */
function failQueue(vm: LuaVm, n: number): void {
  const r = vm.callGlobal('failq', n);
  assert.equal(r.error, undefined, r.error);
}

test('a call whose reply and error reply find no room is still answered: the error is owed and sent at the next tick', () => {
  const a = session();
  a.exchange(a.host.call(1, 'count'));
  const runs = Number(a.host.values(1)[0]);
  // it ran; its reply and then its ERR have no room
  failQueue(a.vm, 2);
  a.exchange(a.host.call(2, 'echo', ['x']));
  assert.equal(a.host.repliesTo(2), 0, 'no room for any answer yet');
  a.host.receive(a.tick());
  assert.equal(a.host.repliesTo(2), 1, 'the owed answer, once');
  assert.equal(a.host.code(2), 'ERR', 'ERR: its function had run');
  a.host.receive(a.tick(3));
  assert.equal(a.host.repliesTo(2), 1, 'and only once');
  // it did not run (loading it ran out of memory), and its NOMEM finds no room, nor again as the
  // call's error, nor at the first tick: it goes at the second
  failQueue(a.vm, 3);
  a.exchange(a.host.call(3, 'memfn'));
  assert.equal(a.host.repliesTo(3), 0);
  a.host.receive(a.tick());
  assert.equal(a.host.repliesTo(3), 0, 'still no room at the first tick');
  a.host.receive(a.tick());
  assert.equal(a.host.code(3), 'NOMEM', 'NOMEM: it did not run');
  a.exchange(a.host.call(4, 'count'));
  assert.deepEqual(a.host.values(4), [runs + 1], 'echo ran once, memfn never');
  assert.equal(a.stat('lost'), 0);
  a.host.assertClean();
});

test('a message over maxmsg is answered TOOBIG at once, with the limit, even while four error replies are owed', () => {
  const a = session({ maxmsg: 600 }, 100);
  // four calls whose reply and error reply find no room: all four owed slots are taken
  failQueue(a.vm, 8);
  for (let id = 1; id <= 4; id++) a.exchange(a.host.call(id, 'echo', [id]));
  for (let id = 1; id <= 4; id++) assert.equal(a.host.repliesTo(id), 0, `call ${id} owed`);
  // room again: the call over maxmsg is answered in the same batch, not owed (no slot is free)
  a.exchange(a.host.call(5, 'echo', [Buffer.alloc(700, 1)], 100));
  assert.equal(a.host.code(5), 'TOOBIG');
  const x = a.host.reply(5);
  assert.ok(x?.type === 'X' && x.message === 'message over 600 bytes', JSON.stringify(x));
  assert.equal(a.stat('lost'), 0, 'nothing lost');
  // the owed ones go at the next tick
  a.host.receive(a.tick());
  for (let id = 1; id <= 4; id++) assert.equal(a.host.code(id), 'ERR', `call ${id}: its owed ERR`);
  a.host.assertClean();
});

test('the heap running out while a call is reassembled drops its pieces: the call is answered NOMEM and never runs', () => {
  const fail = { n: 0 };
  const a = session({ fragCrcFail: fail }, 100);
  a.exchange(a.host.call(1, 'count'));
  const runs = Number(a.host.values(1)[0]);
  const lines = a.host.call(2, 'echo', ['y'.repeat(600)], 100).toString('latin1').split('\n').slice(0, -1).map((l) => l + '\n');
  assert.ok(lines.length >= 4, `fragments: ${lines.length}`);
  fail.n = 2; // checking the second fragment's CRC runs out of memory: it is not taken
  a.exchange(lines.join(''));
  assert.equal(a.host.repliesTo(2), 0);
  // the host sends it again, and those after it the agent had no room to keep ahead of the gap
  a.exchange(lines.slice(1).join(''));
  assert.equal(a.host.repliesTo(2), 1, 'answered once');
  assert.equal(a.host.code(2), 'NOMEM');
  a.exchange(a.host.call(3, 'count'));
  assert.deepEqual(a.host.values(3), [runs], 'echo never ran');
  a.exchange(a.host.call(4, 'echo', ['z'.repeat(300)], 100));
  assert.equal(txt(a.host.values(4)[0]), 'z'.repeat(300), 'the next fragmented call runs');
  a.host.assertClean();
});

test('a host frame can be as long as maxframe; the agent never sends a line over the host limit', () => {
  const a = session({ maxframe: 1024, outmax: 1024 }, 1024);
  a.exchange(a.host.call(1, 'echo', [Buffer.alloc(2000, 0x0a)], 1024));
  assert.equal((a.host.values(1)[0] as Uint8Array).length, 2000);
  assert.ok(a.host.frames.every((f) => f.type !== 'seq' || f.body.length < HOST_MAX_FRAME));
  // fragments of a call in several frames and a whole one in the same batch
  const m = callMessage(2, 'echo', [Buffer.alloc(1500, 0x41)]);
  const lines = fragment(m, 1024, a.host.seq, a.host.rx);
  a.host.seq += lines.length;
  a.exchange(Buffer.concat([...lines, a.host.call(3, 'count')]));
  assert.equal((a.host.values(2)[0] as Uint8Array).length, 1500);
  assert.equal(a.host.reply(3), undefined, 'the 1.5 KB reply filled the queue: call 3 waits for the ack');
  a.exchange(a.host.ack());
  assert.deepEqual(a.host.values(3), [2]);
});

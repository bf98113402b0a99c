/**
 * The shared Lua agent core (firmware-shim/common/core.lua) against the TypeScript
 * codec: the real Lua code runs in the simulator's Lua VM with a HAL whose
 * write() captures the frames the agent sends.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LuaVm } from '../src/sim/lua-vm.js';
import { checkLine, callContent, crc16, decodeFrame, encodeFrame, Reassembler, type Frame } from '../src/codec/frame.js';
import { Handle, type WireValue } from '../src/codec/values.js';
import { parseHello } from '../src/rpc/client.js';
import { repoRoot } from '../src/util/repo-root.js';

function agent(opts: { maxframe?: number; maxmsg?: number } = {}) {
  const vm = new LuaVm();
  const out: string[] = [];
  vm.registerLib('hal_js', {
    write: (a) => void out.push(a.str(1)),
    crc16: (a) => [crc16(a.bytes(1))],
    b64e: (a) => [Buffer.from(a.bytes(1)).toString('base64')],
    b64d: (a) => [Uint8Array.from(Buffer.from(a.str(1), 'base64'))],
  });
  const root = repoRoot();
  const src = [
    readFileSync(join(root, 'firmware-shim/common/protocol.lua'), 'utf8'),
    readFileSync(join(root, 'firmware-shim/common/core.lua'), 'utf8'),
    `HAL.write = hal_js.write HAL.crc16 = hal_js.crc16 HAL.b64e = hal_js.b64e HAL.b64d = hal_js.b64d
     HAL.maxframe = ${opts.maxframe ?? 255} HAL.window = 240 HAL.maxmsg = ${opts.maxmsg ?? 2048}
     HAL.heap = function() return 12 end HAL.epoch = function() return 4242 end
     HAL.info = function(t) t.family = "test" end
     local objs = {}
     A.reg("echo", function(...) return ... end)
     A.reg("boom", function() error("kaboom") end)
     A.reg("mk", function() local o = {} return o end)
     A.reg("new", function() local o = setmetatable({}, {}) local id = A.newHandle(o) return o end)
     A.reg("free", function(o) A.release(A.hid[o]) end)
     A.reg("big", function(n) return string.rep("x", n) end)
     A.start()
     function feed(s) A.feed(s) end
     function bad() return A.bad end`,
  ].join('\n');
  const err = vm.runString(src, '=agent');
  assert.equal(err, undefined, err);
  const frames = (): Frame[] => {
    const r = new Reassembler();
    const got: Frame[] = [];
    for (const chunk of out.splice(0)) {
      for (const line of chunk.split('\n').filter(Boolean)) {
        const c = checkLine(Buffer.from(line, 'latin1'));
        assert.equal(c.kind, 'frame', `agent sent a bad frame: ${line}`);
        const whole = r.push((c as { content: string }).content);
        if (whole) got.push(decodeFrame(whole));
      }
    }
    return got;
  };
  const feed = (s: string) => {
    const r = vm.callGlobal('feed', Buffer.from(s, 'latin1'));
    assert.equal(r.error, undefined, r.error);
  };
  const call = (id: number, fn: string, args: WireValue[], maxFrame = 255) => feed(encodeFrame(callContent(id, fn, args), maxFrame).join(''));
  return { vm, frames, feed, call, bad: () => vm.callGlobal('bad').values?.[0] as number };
}

test('the agent announces its boot epoch', () => {
  const a = agent();
  assert.deepEqual(a.frames(), [{ type: 'B', epoch: 4242, proto: 1 }]);
});

test('a call returns every value, trailing nils included, and a credit frame follows', () => {
  const a = agent();
  a.frames();
  a.call(5, 'echo', [1, null, true, Buffer.from([0, 255]), null, null]);
  const fs = a.frames();
  const r = fs.find((f) => f.type === 'R') as Extract<Frame, { type: 'R' }>;
  assert.equal(r.id, 5);
  assert.equal(r.values.length, 6);
  assert.deepEqual(r.values.slice(0, 3), [1, null, true]);
  assert.deepEqual(Buffer.from(r.values[3] as Uint8Array), Buffer.from([0, 255]));
  assert.ok(fs.some((f) => f.type === 'K'));
});

test('hello lists capabilities and limits; functions are callable by index', () => {
  const a = agent();
  a.frames();
  a.call(1, 'hello', [1, 4096]);
  const r = a.frames().find((f) => f.type === 'R') as Extract<Frame, { type: 'R' }>;
  const h = parseHello(r.values[0]);
  assert.equal(h.family, 'test');
  assert.equal(h.epoch, 4242);
  assert.equal(h.maxframe, 255);
  const idx = h.caps.indexOf('echo') + 1;
  a.call(2, String(idx), ['via index']);
  const r2 = a.frames().find((f) => f.type === 'R') as Extract<Frame, { type: 'R' }>;
  assert.equal(Buffer.from(r2.values[0] as Uint8Array).toString(), 'via index');
});

test('errors: Lua error, unknown function, unknown and released handles', () => {
  const a = agent();
  a.frames();
  a.call(1, 'boom', []);
  a.call(2, 'nope', []);
  a.call(3, 'echo', [new Handle(99)]);
  a.call(4, 'new', []);
  const fs = a.frames().filter((f) => f.type === 'X' || f.type === 'R');
  const x1 = fs.find((f) => f.type === 'X' && f.id === 1) as Extract<Frame, { type: 'X' }>;
  assert.equal(x1.code, 'ERR');
  assert.match(x1.message, /kaboom/);
  assert.equal((fs.find((f) => f.type === 'X' && f.id === 2) as Extract<Frame, { type: 'X' }>).code, 'NOFN');
  assert.equal((fs.find((f) => f.type === 'X' && f.id === 3) as Extract<Frame, { type: 'X' }>).code, 'BADHANDLE');
  const made = fs.find((f) => f.type === 'R' && f.id === 4) as Extract<Frame, { type: 'R' }>;
  const h = made.values[0] as Handle;
  assert.ok(h instanceof Handle);
  a.call(5, 'free', [h]);
  a.call(6, 'echo', [h]);
  const x6 = a.frames().find((f) => f.type === 'X' && f.id === 6) as Extract<Frame, { type: 'X' }>;
  assert.equal(x6.code, 'BADHANDLE');
  assert.match(x6.message, /released/);
});

test('garbage and corrupt frames are counted and dropped; the next call works', () => {
  const a = agent();
  a.frames();
  const good = encodeFrame(callContent(7, 'echo', [42]), 255)[0];
  const corrupt = good.replace('42', '43');
  a.feed('boot noise line\r\n' + corrupt + '~nonsense\n' + '\x00\xff\x01\n');
  assert.equal(a.bad(), 2);
  a.feed(good);
  const r = a.frames().find((f) => f.type === 'R') as Extract<Frame, { type: 'R' }>;
  assert.deepEqual(r.values, [42]);
});

test('fragmented requests are reassembled, byte by byte too; long replies are fragmented', () => {
  const a = agent();
  a.frames();
  const payload = Buffer.alloc(900, 7);
  const wire = encodeFrame(callContent(8, 'echo', [payload]), 255).join('');
  for (const ch of wire) a.feed(ch);
  const fs = a.frames();
  const r = fs.find((f) => f.type === 'R') as Extract<Frame, { type: 'R' }>;
  assert.deepEqual(Buffer.from(r.values[0] as Uint8Array), payload);
  const credits = fs.filter((f) => f.type === 'K') as Array<Extract<Frame, { type: 'K' }>>;
  assert.equal(credits[credits.length - 1].count, wire.length, 'credit counts every byte consumed');
});

test('an overlong line is dropped and counted, and a message over maxmsg is refused with TOOBIG', () => {
  const a = agent({ maxmsg: 600 });
  a.frames();
  a.feed('x'.repeat(200));
  a.feed('~' + 'x'.repeat(200));
  a.feed('still the same line\n');
  assert.equal(a.bad(), 1, 'a line growing past maxframe is dropped once');
  a.call(9, 'echo', [Buffer.alloc(700, 1)]);
  const x = a.frames().find((f) => f.type === 'X') as Extract<Frame, { type: 'X' }>;
  assert.equal(x.code, 'TOOBIG');
  a.call(10, 'echo', [1]);
  assert.ok(a.frames().some((f) => f.type === 'R' && f.id === 10));
});

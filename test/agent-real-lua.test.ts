/**
 * The agents under the stock Lua interpreters the modules' VMs descend from (PUC-Rio Lua
 * 5.1.5 and 5.3.6 compiled to WebAssembly, test/helpers/lua.ts: Node is all they need):
 * syntax of every bundled agent, the Lua 5.1 parser limits of NodeMCU (at most 50 active
 * locals per function; we keep 40), and the shared protocol core speaking protocol v2 with
 * the TS codec through firmware-shim/test/core-driver.lua (pure-arithmetic CRC-32).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { maxActiveLocals } from '../src/sim/lua-vm.js';
import { families } from '../scripts/gen-lua.js';
import { encodeFrame, encodeShortAck, type LinkFrame } from '../src/codec/frame.js';
import { AgentHost, runCoreDriver, txt } from './helpers/agent-host.js';
import { dumpChunk51, luacCheck, type LuaVersion } from './helpers/lua.js';
import { parseLua51Chunk } from './helpers/lua51-bytecode.js';

const root = repoRoot();

test('every bundled agent compiles under Lua 5.3 and Lua 5.1 (luac -p)', () => {
  for (const f of families()) {
    const file = join(root, 'dist/agents', f, 'main.lua');
    for (const v of ['5.1', '5.3'] as const) {
      assert.equal(luacCheck(v, readFileSync(file), `@${file}`), undefined, `Lua ${v} ${f}/main.lua`);
    }
  }
  for (const p of ['firmware-shim/common/protocol.lua', 'firmware-shim/common/core.lua']) {
    assert.equal(luacCheck('5.1', readFileSync(join(root, p)), `@${p}`), undefined, p);
  }
  // the check can fail: Lua 5.3's integer division is no Lua 5.1 syntax
  assert.match(luacCheck('5.1', 'local x = 7 // 2\n') ?? '', /^stdin:1: unexpected symbol near '\/'/);
  assert.equal(luacCheck('5.3', 'local x = 7 // 2\n'), undefined);
});

/** Per function of a file's Lua 5.1 bytecode: declared locals and the most active at once. */
function localCounts(file: string): Array<{ fn: string; declared: number; active: number }> {
  return parseLua51Chunk(dumpChunk51(readFileSync(file), `@${file}`)).map((f) => ({ fn: f.where, declared: f.locals.length, active: maxActiveLocals(f.locals) }));
}

test('NodeMCU Lua 5.1 parser limits: no function of any bundle has more than 40 active locals', () => {
  for (const f of families()) {
    const counts = localCounts(join(root, 'dist/agents', f, 'main.lua'));
    assert.ok(counts.length > 10);
    for (const c of counts) assert.ok(c.active <= 40, `${f}/main.lua ${c.fn}: ${c.active} active locals (NodeMCU allows 50)`);
  }
});

for (const v of ['5.1', '5.3'] as LuaVersion[]) {
  const lua = `Lua ${v}`;
  test(`the shared protocol core speaks protocol v2 under ${lua}`, () => {
    const h = new AgentHost();
    const payload = Buffer.from(Array.from({ length: 700 }, (_, i) => (i * 37) % 256));
    const early = h.call(99, 'echo', ['before the session']);
    h.seq = 0;
    const head = [Buffer.from('boot noise\r\n'), early, h.start(), h.call(1, 'hello', [2, 4096])];
    head.push(h.call(2, 'echo', [1, -5, null, true, 'text with spaces', payload, null, 2147483647, -2147483647]), h.call(3, 'boom'));
    const c4 = h.call(4, 'echo', [1]);
    const nope = h.call(5, 'nope');
    const corrupt = Buffer.from(c4.toString('latin1').replace(' echo ', ' echO '), 'latin1');
    // C4 is damaged, so `nope` arrives ahead of a gap; the host sends both again (go-back-N)
    const input = Buffer.concat([...head, corrupt, nope, c4, nope, h.call(6, 'agent.stats')]);
    h.receive(runCoreDriver(v, input, { chunk: 37 }));
    h.assertClean(lua);
    assert.deepEqual(h.frames[0], { type: 'B', epoch: 777, proto: 2 });
    assert.deepEqual(h.frames[1], { type: 'A', ack: 0, epoch: 777, size: 240, nonce: 0 }, 'a call before the session: A with nonce 0');
    assert.deepEqual(h.frames[2], { type: 'A', ack: 0, epoch: 777, size: 240, nonce: 1234567 });
    assert.equal(h.reply(99), undefined);
    const hello = h.values(1)[0] as Map<string, unknown>;
    assert.equal(txt(hello.get('family') as Uint8Array), 'driver');
    assert.equal(hello.get('proto'), 2);
    assert.equal(hello.get('intbits'), v === '5.1' ? 53 : 64);
    const echo = h.values(2);
    assert.equal(echo.length, 9, 'trailing nil kept');
    assert.deepEqual(echo.slice(0, 4), [1, -5, null, true]);
    assert.equal(txt(echo[4]), 'text with spaces');
    assert.ok(Buffer.from(echo[5] as Uint8Array).equals(payload), 'binary payload byte-exact as a raw b token');
    assert.deepEqual(echo.slice(6), [null, 2147483647, -2147483647]);
    assert.equal(h.code(3), 'ERR');
    assert.deepEqual(h.values(4), [1]);
    assert.equal(h.repliesTo(4), 1);
    assert.equal(h.code(5), 'NOFN');
    assert.equal(h.repliesTo(5), 1);
    const st = h.values(6)[0] as Map<string, number>;
    assert.equal(st.get('bad'), 1, 'the damaged frame');
    assert.equal(st.get('ahead'), 1, 'the call after it');
    assert.equal(st.get('calls'), 5, 'hello, echo, boom, echo, agent.stats (nope does not exist)');
  });

  test(`under ${lua}: bundles (M frames) both ways once hello carries the host's features`, () => {
    const h = new AgentHost();
    const payload = Buffer.from(Array.from({ length: 40 }, (_, i) => (i * 53) % 256));
    const input = Buffer.concat([
      h.start(),
      h.call(1, 'hello', [2, 4096, 1]),
      h.bundle([[2, 'echo', ['a']], [3, 'echo', [payload]], [4, 'boom'], [5, 'count']]),
      h.calls([[6, 'echo', [6]], [7, 'echo', [7]]]),
    ]);
    h.receive(runCoreDriver(v, input));
    h.assertClean(lua);
    assert.equal((h.values(1)[0] as Map<string, unknown>).get('bundle'), 1);
    assert.equal(txt(h.values(2)[0]), 'a');
    assert.ok(Buffer.from(h.values(3)[0] as Uint8Array).equals(payload));
    assert.equal(h.code(4), 'ERR');
    assert.deepEqual(h.values(5), [2], 'each bundled call ran once');
    assert.deepEqual([h.values(6), h.values(7)], [[6], [7]]);
    const kinds = h.frames.flatMap((f) => (f.type === 'seq' ? [f.kind] : []));
    assert.deepEqual(kinds.slice(-3), ['M', 'R', 'R'], `the bundle's replies in one frame, 6 and 7 in their own: ${kinds.join(' ')}`);
    assert.ok(h.messages.length >= 7);
  });

  test(`under ${lua}: short heads both ways once hello carries the host's feature 4`, () => {
    const h = new AgentHost(1234567, 96);
    // bytes that need escaping (0x0A, 0x10) and a message cut into many 96-byte pieces
    const payload = Buffer.from(Array.from({ length: 600 }, (_, i) => [0x0a, 0x10, (i * 53) % 256][i % 3]));
    const before = Buffer.concat([h.start(), h.call(1, 'hello', [2, 4096, 5])]);
    // a host without feature 4 gets long heads
    const old = new AgentHost(1234567, 96);
    old.receive(runCoreDriver(v, Buffer.concat([old.start(), old.call(1, 'hello', [2, 4096, 3]), old.call(2, 'echo', [1])])));
    old.assertClean(lua);
    assert.deepEqual([old.values(2), old.heads.short, old.heads.long > 1], [[1], 0, true]);
    h.short = true;
    const c2 = h.call(2, 'echo', [payload, 'text with spaces']);
    const c3 = h.call(3, 'echo', [3]);
    const c4 = h.call(4, 'echo', [4]);
    const corrupt = Buffer.from(c3);
    corrupt[corrupt.length - 3] ^= 0x01; // a bit of its CRC flipped
    const input = Buffer.concat([
      before,
      c2,
      corrupt,
      c4, // ahead of the gap C3 left
      c3,
      h.bundle([[5, 'echo', ['a']], [6, 'count']]),
      h.call(7, 'agent.stats'),
    ]);
    const out = new AgentHost(1234567, 96);
    out.receive(runCoreDriver(v, input, { chunk: 41 }));
    out.assertClean(lua);
    const hello = out.values(1)[0] as Map<string, unknown>;
    assert.equal(hello.get('short'), 2, 'the agent offers short heads (and short acks)');
    assert.equal(out.heads.long, 0, 'short heads from the reply to hello on');
    assert.ok(out.heads.short > 600 / 96, `the echo's reply came back in short pieces (${out.heads.short} short frames)`);
    const echo = out.values(2);
    assert.ok(Buffer.from(echo[0] as Uint8Array).equals(payload), 'escaped bytes byte-exact through short frames');
    assert.equal(txt(echo[1]), 'text with spaces');
    assert.deepEqual([out.values(3), out.values(4), out.repliesTo(3), out.repliesTo(4)], [[3], [4], 1, 1]);
    assert.equal(txt(out.values(5)[0]), 'a');
    const st = out.values(7)[0] as Map<string, number>;
    assert.equal(st.get('bad'), 1, 'the short frame with a flipped CRC bit');
    assert.equal(st.get('ahead'), 1, 'the call after it');
    assert.equal(st.get('calls'), 7, 'hello, echo, echo, echo, echo, count, agent.stats: each once');
  });

  test(`under ${lua}: short acknowledgements (~a) both ways once hello carries the host's feature 8`, () => {
    const F = Buffer.from('%%F\n');
    const h = new AgentHost(1234567, 96);
    // a host without feature 8 (short heads only) gets long A frames
    const old = new AgentHost(1234567, 96);
    const oc = old.call(2, 'echo', [1]);
    old.receive(runCoreDriver(v, Buffer.concat([old.start(), old.call(1, 'hello', [2, 4096, 5]), F, oc, F, oc, F]), { chunk: -1 }));
    old.assertClean(lua);
    assert.equal(old.frames.filter((f) => f.type === 'a').length, 0, 'no short acks without feature 8');
    assert.ok(old.acks.some((f) => f.ack === 2), 'the duplicate answered with a long A');

    const hello = Buffer.concat([h.start(), h.call(1, 'hello', [2, 4096, 13]), F]);
    h.short = true;
    const c2 = h.call(2, 'echo', ['x'.repeat(300)]);
    const expect = h.seq; // the next host frame the agent expects once it has c2
    // the agent's frames up to here, learnt from a run without acks (the agent is deterministic)
    const first = new AgentHost(1234567, 96);
    first.receive(runCoreDriver(v, Buffer.concat([hello, c2, F]), { chunk: -1 }));
    const n = first.rx;
    assert.ok(n >= 5, `hello's and the echo's replies came in pieces (${n} frames)`);
    const good = encodeShortAck(n, 64); // acks them all; the agent's frames from now on: 64 bytes
    const flipped = Buffer.from(encodeShortAck(n, 240));
    flipped[flipped.length - 2] ^= 0x01;
    const input = Buffer.concat([hello, c2, F, c2, F, flipped, F, good, F, h.call(3, 'echo', ['y'.repeat(200)]), F, h.call(4, 'agent.stats'), F, h.start(), F, encodeFrame('Y7'), F, Buffer.from('%%T40\n')]);
    const out = new AgentHost(1234567, 96);
    out.receive(runCoreDriver(v, input, { chunk: -1 }));
    out.assertClean(lua);
    assert.equal((out.values(1)[0] as Map<string, unknown>).get('short'), 2, 'the agent offers short heads and short acks');
    // the duplicate c2 is answered with a short ack: the next host seq it expects, its window
    const shortAcks = out.frames.filter((f): f is Extract<LinkFrame, { type: 'a' }> => f.type === 'a');
    assert.ok(shortAcks.some((f) => f.ack === expect), `the duplicate answered with ~a (${JSON.stringify(shortAcks)})`);
    const window = (out.values(1)[0] as Map<string, number>).get('window');
    assert.ok(shortAcks.every((f) => f.size === window), 'its size is the window');
    // the good ~a released frames 0..n-1: none went again in 40 ticks (without it they would)
    const early = out.frames.filter((f) => f.type === 'seq' && f.seq < n);
    assert.equal(early.length, n, 'frames the short ack acknowledged were never retransmitted');
    const noAck = new AgentHost(1234567, 96);
    noAck.receive(runCoreDriver(v, Buffer.concat([hello, c2, F, Buffer.from('%%T40\n')]), { chunk: -1 }));
    assert.ok(noAck.dups > 0, 'without the ack they are retransmitted');
    // its size set the agent's frame size: the second echo's pieces are at most 64 bytes
    const after = out.frames.flatMap((f, i) => (f.type === 'seq' && f.seq >= n ? [out.frameBytes[i]] : []));
    assert.ok(after.length > 200 / 64, `the 200-byte echo in pieces (${after.length})`);
    assert.ok(after.every((b) => b <= 64), `every frame after the short ack is at most 64 bytes: ${after.join(' ')}`);
    assert.equal(txt(out.values(3)[0]), 'y'.repeat(200));
    const st = out.values(4)[0] as Map<string, number>;
    assert.equal(st.get('bad'), 1, 'the ~a with a flipped CRC bit counted and dropped');
    // a Y is answered with a long A: it echoes the probe's token; so is an S, even a repeated
    // one (its host has no session open to read a short one)
    assert.ok(out.acks.some((f) => f.probe === 7), 'the Y answered with a long A carrying its token');
    assert.equal(out.acks.filter((f) => f.probe === undefined && f.nonce === 1234567).length, 2, 'both S frames answered with a long A');
  });

  test(`under ${lua}: a call whose reply and error reply find no room is answered at the next tick that has room`, () => {
    const h = new AgentHost();
    const F = Buffer.from('%%F\n');
    // echo runs; its reply, its ERR and the first tick's try find no room: the second tick sends it
    const input = Buffer.concat([h.start(), F, Buffer.from('%%Q3\n'), h.call(1, 'echo', ['a']), F, Buffer.from('%%T1\n')]);
    const first = new AgentHost();
    first.receive(runCoreDriver(v, input, { chunk: -1 }));
    assert.equal(first.repliesTo(1), 0, 'no room for any answer yet');
    h.receive(runCoreDriver(v, Buffer.concat([input, Buffer.from('%%T1\n'), F, h.call(2, 'count')]), { chunk: -1 }));
    h.assertClean(lua);
    assert.equal(h.repliesTo(1), 1, 'answered once');
    assert.equal(h.code(1), 'ERR', 'ERR: it ran');
    assert.deepEqual(h.values(2), [1], 'and once');
  });

  test(`under ${lua}: without acks the agent retransmits the oldest frame with backoff; duplicates never run a call twice`, () => {
    const h = new AgentHost();
    const calls = [h.call(1, 'echo', ['a']), h.call(2, 'echo', ['b']), h.call(3, 'echo', ['c'])];
    const input = Buffer.concat([h.start(), ...calls, Buffer.from('%%F\n'), ...calls, ...calls, Buffer.from('%%F\n'), h.call(4, 'count')]);
    // 4+1, then 8+1, 16+1 ticks: three retransmissions of R0 within 40 ticks
    const out = runCoreDriver(v, input, { ticks: 40, chunk: -1 });
    h.receive(out);
    h.assertClean(lua);
    assert.deepEqual(h.values(4), [3], 'echo ran three times, not nine');
    for (const id of [1, 2, 3]) assert.equal(h.repliesTo(id), 1);
    const r0 = h.frames.filter((f) => f.type === 'seq' && f.kind === 'R' && f.seq === 0);
    assert.ok(r0.length >= 3, `R0 retransmitted (${r0.length} copies)`);
    const a = h.acks;
    assert.ok(a.some((f) => f.ack === 3), 'the duplicates were answered with an A carrying ack 3');
  });
}

test('the core driver checks its own CRC-32 against the spec vector (pure arithmetic, signed)', () => {
  // a frame whose CRC the driver computes: "~Y" must be accepted, an A comes back
  const h = new AgentHost();
  h.receive(runCoreDriver('5.1', Buffer.concat([h.start(), encodeFrame('Y1')])));
  assert.equal(h.acks.length, 2);
  h.assertClean();
});

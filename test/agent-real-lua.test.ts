/**
 * The agents under the stock Lua interpreters the modules' VMs descend from
 * (Debian lua5.1 and lua5.3; .ci/run installs them): syntax of every bundled
 * agent, the Lua 5.1 parser limits of NodeMCU (at most 50 active locals per
 * function; we keep 40), and the shared protocol core speaking protocol v2 with
 * the TS codec through firmware-shim/test/core-driver.lua (pure-arithmetic CRC-32).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { families } from '../scripts/gen-lua.js';
import { encodeFrame } from '../src/codec/frame.js';
import { AgentHost, needLua, runCoreDriver, txt } from './helpers/agent-host.js';

const root = repoRoot();

test('every bundled agent compiles under luac5.3 and luac5.1', () => {
  needLua('luac5.3');
  needLua('luac5.1');
  for (const f of families()) {
    for (const c of ['luac5.1', 'luac5.3']) {
      const r = spawnSync(c, ['-p', join(root, 'dist/agents', f, 'main.lua')], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${c} ${f}/main.lua: ${r.stderr}`);
    }
  }
  const r = spawnSync('luac5.1', ['-p', join(root, 'firmware-shim/common/protocol.lua'), join(root, 'firmware-shim/common/core.lua')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

/** Per function of a compiled file: declared locals and the most active at once (luac5.1 -l -l). */
function localCounts(file: string): Array<{ fn: string; declared: number; active: number }> {
  const r = spawnSync('luac5.1', ['-l', '-l', '-p', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n');
  const out: Array<{ fn: string; declared: number; active: number }> = [];
  let fn = '';
  for (let i = 0; i < lines.length; i++) {
    const h = /^(main|function) <[^>]+>/.exec(lines[i]);
    if (h) fn = h[0];
    const m = /^locals \((\d+)\)/.exec(lines[i]);
    if (!m) continue;
    const ranges: Array<[number, number]> = [];
    for (let k = 1; k <= Number(m[1]); k++) {
      const p = lines[i + k].trim().split(/\s+/);
      ranges.push([Number(p[2]), Number(p[3])]);
    }
    let active = 0;
    for (const [pc] of ranges) active = Math.max(active, ranges.filter(([s, e]) => s <= pc && pc < e).length);
    out.push({ fn, declared: ranges.length, active });
  }
  return out;
}

test('NodeMCU Lua 5.1 parser limits: no function of any bundle has more than 40 active locals', () => {
  needLua('luac5.1');
  for (const f of families()) {
    const counts = localCounts(join(root, 'dist/agents', f, 'main.lua'));
    assert.ok(counts.length > 10);
    for (const c of counts) assert.ok(c.active <= 40, `${f}/main.lua ${c.fn}: ${c.active} active locals (NodeMCU allows 50)`);
  }
});

for (const lua of ['lua5.1', 'lua5.3']) {
  test(`the shared protocol core speaks protocol v2 under ${lua}`, () => {
    needLua(lua);
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
    h.receive(runCoreDriver(lua, input, { chunk: 37 }));
    h.assertClean(lua);
    assert.deepEqual(h.frames[0], { type: 'B', epoch: 777, proto: 2 });
    assert.deepEqual(h.frames[1], { type: 'A', ack: 0, epoch: 777, size: 240, nonce: 0 }, 'a call before the session: A with nonce 0');
    assert.deepEqual(h.frames[2], { type: 'A', ack: 0, epoch: 777, size: 240, nonce: 1234567 });
    assert.equal(h.reply(99), undefined);
    const hello = h.values(1)[0] as Map<string, unknown>;
    assert.equal(txt(hello.get('family') as Uint8Array), 'driver');
    assert.equal(hello.get('proto'), 2);
    assert.equal(hello.get('intbits'), lua === 'lua5.1' ? 53 : 64);
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

  test(`under ${lua}: without acks the agent retransmits the oldest frame with backoff; duplicates never run a call twice`, () => {
    needLua(lua);
    const h = new AgentHost();
    const calls = [h.call(1, 'echo', ['a']), h.call(2, 'echo', ['b']), h.call(3, 'echo', ['c'])];
    const input = Buffer.concat([h.start(), ...calls, Buffer.from('%%F\n'), ...calls, ...calls, Buffer.from('%%F\n'), h.call(4, 'count')]);
    // 4+1, then 8+1, 16+1 ticks: three retransmissions of R0 within 40 ticks
    const out = runCoreDriver(lua, input, { ticks: 40, chunk: -1 });
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
  needLua('lua5.1');
  // a frame whose CRC the driver computes: "~Y" must be accepted, an A comes back
  const h = new AgentHost();
  h.receive(runCoreDriver('lua5.1', Buffer.concat([h.start(), encodeFrame('Y1')])));
  assert.equal(h.acks.length, 2);
  h.assertClean();
});

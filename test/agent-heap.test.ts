/**
 * scripts/heap-nodemcu.ts, the NodeMCU heap measurement behind `npm run bench`: its driver
 * really runs the agent (stripped bytecode, stubbed C modules) through a session, forwards a
 * 1460-byte receive and sends 1460 bytes, and reports figures; without the i386 tree it says
 * "i386 lua5.1 not available". Uses the stock amd64 lua5.1/luac5.1 (.ci/run installs them):
 * the figures differ from the i386 ones (64-bit pointers), the mechanics are the same.
 * No heap figure is asserted here (measurements belong to the bench).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { measureNodemcuHeap } from '../scripts/heap-nodemcu.js';
import { needLua } from './helpers/agent-host.js';

test('the heap driver runs the stripped agent through a session, a 1460-byte receive and a 1460-byte send', () => {
  needLua('lua5.1');
  needLua('luac5.1');
  const h = measureNodemcuHeap({ lua: ['lua5.1'], luac: ['luac5.1'], interpreter: 'lua5.1' });
  assert.equal(h.sentBytes, 1460, 'tcpsocket.send reached the socket with every byte');
  assert.equal(h.forwardedBytes, 1460, 'the receive callback was forwarded to the host');
  assert.ok(h.bytecodeBytes > 1000);
  assert.ok(h.idleKB > 1, `idle ${h.idleKB}`);
  assert.ok(h.peakKB >= h.idleKB, `peak ${h.peakKB} >= idle ${h.idleKB}`);
});

test('without the i386 tree the measurement says "i386 lua5.1 not available"', () => {
  const old = process.env.TETHER_LUA51_I386;
  process.env.TETHER_LUA51_I386 = '/nonexistent/tether-i386';
  try {
    assert.throws(() => measureNodemcuHeap(), /i386 lua5\.1 not available/);
  } finally {
    if (old === undefined) delete process.env.TETHER_LUA51_I386;
    else process.env.TETHER_LUA51_I386 = old;
  }
});

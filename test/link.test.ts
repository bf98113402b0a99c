/**
 * Protocol v2 link + RPC (docs/protocol.md sections 3-9) against a TS agent written
 * from the spec (test/helpers/v2-stub.ts), clean and through the seeded fault pipe.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMemoryPair } from '../src/transport/memory.js';
import { createFaultyPair, faultRates } from '../src/transport/faulty.js';
import { RpcClient } from '../src/rpc/client.js';
import { encodeFrame, crc16 } from '../src/codec/frame.js';
import { startStubAgent } from './helpers/v2-stub.js';
import type { WireValue } from '../src/codec/values.js';

const text = (v: WireValue) => Buffer.from(v as Uint8Array).toString();

test('handshake reads hello and the capabilities by pages', async () => {
  const [host, dev] = createMemoryPair('t');
  const agent = startStubAgent(dev, { fns: Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`f${i}`, () => [i]])) });
  const rpc = await RpcClient.open(host);
  try {
    assert.equal(rpc.hello.family, 'stub');
    assert.equal(rpc.hello.caps.length, 64);
    assert.equal(rpc.hello.caps[63], 'f59');
    assert.deepEqual(await rpc.call('f59'), [59]);
    assert.equal(agent.runs.get('agent.caps'), 3, '64 names in pages of 24');
  } finally {
    agent.stop();
    await rpc.close();
  }
});

test('1,000 pipelined calls at 1e-3 per byte (flip, drop, dup, garbage) settle once, right, and run once', async () => {
  const [host, dev, faults] = createFaultyPair({ seed: 7, both: faultRates(1e-3) });
  const agent = startStubAgent(dev, { rtoMs: 60 });
  const rpc = await RpcClient.open(host, { handshakeTimeoutMs: 20000 });
  try {
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => rpc.call('echo', [i, `v${i}`], { timeoutMs: 60000 })));
    results.forEach((r, i) => {
      assert.equal(r[0], i);
      assert.equal(text(r[1]), `v${i}`);
    });
    assert.equal(agent.runs.get('echo'), 1000, 'no call ran twice');
    const f = faults.stats;
    assert.ok(f.toDevice.flipped + f.toDevice.dropped + f.toDevice.duplicated > 0, 'faults were injected');
    assert.ok(rpc.stats.retransmits + agent.stats.retx > 0, 'losses were repaired by retransmission');
  } finally {
    agent.stop();
    await rpc.close();
  }
});

test('60 KB arguments and replies cross a 1e-3 link byte-exact (fragments, escaping)', async () => {
  const [host, dev] = createFaultyPair({ seed: 11, both: faultRates(1e-3) });
  const agent = startStubAgent(dev, { rtoMs: 60 });
  const rpc = await RpcClient.open(host, { handshakeTimeoutMs: 20000 });
  try {
    const data = Buffer.alloc(60000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) & 255; // every byte value, \n and DLE included
    const [back] = await rpc.call('echo', [data], { timeoutMs: 60000 });
    assert.ok(Buffer.from(back as Uint8Array).equals(data));
  } finally {
    agent.stop();
    await rpc.close();
  }
});

test('a reset whose B frame is lost is seen through the keepalive, calls in flight fail RESET', async () => {
  const [host, dev] = createMemoryPair('t');
  const agent = startStubAgent(dev, { fns: { never: () => [] } });
  const rpc = await RpcClient.open(host, { keepaliveMs: 100 });
  try {
    const resets: number[] = [];
    rpc.resets.subscribe((r) => resets.push(r.epoch));
    assert.deepEqual((await rpc.call('agent.ping', []))[0], 4242);
    agent.reboot(777, false); // no B frame
    await new Promise((r) => setTimeout(r, 400));
    assert.deepEqual(resets, [777]);
    assert.deepEqual((await rpc.call('agent.ping', []))[0], 777, 'the host handshook again by itself');
  } finally {
    agent.stop();
    await rpc.close();
  }
});

test('a protocol-1 agent is refused with VERSION_MISMATCH and what to do', async () => {
  const [host, dev] = createMemoryPair('t');
  dev.onData(() => {
    const s = '~K12';
    void dev.write(Buffer.from(`${s} ${crc16(s).toString(16).toUpperCase().padStart(4, '0')}\n`));
  });
  await assert.rejects(RpcClient.open(host, { handshakeTimeoutMs: 3000 }), (e: Error & { code?: string }) => e.code === 'VERSION_MISMATCH' && /protocol 1: update it/.test(e.message));
});

test('host memory stays bounded under a flood of fragments and garbage', async () => {
  const [host, dev] = createMemoryPair('t');
  const agent = startStubAgent(dev);
  const rpc = await RpcClient.open(host);
  try {
    // 64 MB of endless `&` fragments in sequence (valid CRC) plus junk lines
    const rss0 = process.memoryUsage().rss;
    let seq = 0;
    const piece = Buffer.alloc(1000, 0x41);
    for (let k = 0; k < 64; k++) {
      const lines: Buffer[] = [];
      for (let i = 0; i < 1000; i++) {
        lines.push(encodeFrame(`&${(seq + 0) % 4096}.0`, piece));
        seq = 0; // always "ahead" or duplicate after the first: the host must not keep them
      }
      lines.push(Buffer.alloc(5000, 0x7e), Buffer.from('\n'));
      await dev.write(Buffer.concat(lines));
      await new Promise((r) => setImmediate(r));
    }
    const grown = (process.memoryUsage().rss - rss0) / 2 ** 20;
    assert.ok(grown < 32, `RSS grew ${grown.toFixed(1)} MB`);
    assert.ok(rpc.stats.overlongLines >= 64);
  } finally {
    agent.stop();
    await rpc.close();
  }
});

test('bad options are INVALID_ARGUMENT before anything is sent', async () => {
  const [host, dev] = createMemoryPair('t');
  const agent = startStubAgent(dev);
  const rpc = await RpcClient.open(host);
  try {
    const before = rpc.stats.bytesOut;
    for (const t of [-1, NaN, 0, Infinity, 'x' as unknown as number]) {
      await assert.rejects(rpc.call('echo', [1], { timeoutMs: t }), { code: 'INVALID_ARGUMENT' });
    }
    await assert.rejects(rpc.call('echo', [Symbol('x') as unknown as WireValue]), { code: 'INVALID_ARGUMENT' });
    assert.equal(rpc.stats.bytesOut, before);
  } finally {
    agent.stop();
    await rpc.close();
  }
});

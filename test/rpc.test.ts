/**
 * RpcClient against the v2 stub agent (test/helpers/v2-stub.ts) on an in-memory pair:
 * every call settles exactly once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstValueFrom } from 'rxjs';
import { createMemoryPair } from '../src/transport/memory.js';
import { RpcClient } from '../src/rpc/client.js';
import { isTetherError } from '../src/errors.js';
import { connect } from '../src/api/connect.js';
import type { WireValue } from '../src/codec/values.js';
import { startStubAgent } from './helpers/v2-stub.js';

const never = { slow: () => {} };

test('a call with no reply times out with TIMEOUT; the next call still works', async () => {
  const [host, dev] = createMemoryPair();
  const agent = startStubAgent(dev, { deferred: never, fns: { fast: () => [1] } });
  const rpc = await RpcClient.open(host);
  await assert.rejects(rpc.call('slow', [], { timeoutMs: 100 }), (e: unknown) => isTetherError(e, 'TIMEOUT') && (e as unknown as { context: { ms: number } }).context.ms === 100);
  assert.deepEqual(await rpc.call('fast'), [1]);
  agent.stop();
  await rpc.close();
});

test('AbortSignal aborts before and after sending; unsubscribing a cold call aborts it', async () => {
  const [host, dev] = createMemoryPair();
  const agent = startStubAgent(dev, { deferred: never });
  const rpc = await RpcClient.open(host);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(rpc.call('slow', [], { signal: ac.signal }), (e: unknown) => isTetherError(e, 'ABORTED'));
  const ac2 = new AbortController();
  const p = rpc.call('slow', [], { signal: ac2.signal });
  setTimeout(() => ac2.abort(), 30);
  await assert.rejects(p, (e: unknown) => isTetherError(e, 'ABORTED'));
  const sub = rpc.call$('slow').subscribe();
  sub.unsubscribe();
  await new Promise((r) => setTimeout(r, 30));
  assert.ok((agent.runs.get('slow') ?? 0) >= 1);
  agent.stop();
  await rpc.close();
});

test('a transport that closes fails pending calls with DISCONNECTED', async () => {
  const [host, dev] = createMemoryPair();
  const agent = startStubAgent(dev, { deferred: never, fns: { fast: () => [1] } });
  const rpc = await RpcClient.open(host);
  const p = rpc.call('slow', [], { timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 20));
  await dev.close();
  await assert.rejects(p, (e: unknown) => isTetherError(e, 'DISCONNECTED'));
  await assert.rejects(rpc.call('fast'), (e: unknown) => isTetherError(e));
  agent.stop();
});

test('an agent speaking another protocol version is refused with VERSION_MISMATCH', async () => {
  const [host, dev] = createMemoryPair();
  const agent = startStubAgent(dev, { proto: 3 });
  await assert.rejects(RpcClient.open(host), (e: unknown) => isTetherError(e, 'VERSION_MISMATCH'));
  agent.stop();
});

test('no agent at all: HANDSHAKE error within the handshake timeout', async () => {
  const [host] = createMemoryPair();
  await assert.rejects(RpcClient.open(host, { handshakeTimeoutMs: 300 }), (e: unknown) => isTetherError(e, 'HANDSHAKE'));
});

test('calls are pipelined: several in flight at once, replies in any order', async () => {
  const [host, dev] = createMemoryPair();
  const held: Array<() => void> = [];
  const agent = startStubAgent(dev, {
    deferred: {
      later: (reply, x) => {
        held.push(() => reply([x as WireValue]));
        if (held.length === 3) for (const h of held.reverse()) h();
      },
    },
  });
  const rpc = await RpcClient.open(host);
  const r = await Promise.all([rpc.call('later', [1]), rpc.call('later', [2]), rpc.call('later', [3])]);
  assert.deepEqual(r, [[1], [2], [3]]);
  agent.stop();
  await rpc.close();
});

test('firmware built before 2023-01-31 (inverted first boolean) is detected and normalised', async () => {
  const mod = await connect('sim:luatos', { sim: { network: { invertedBool: true } } });
  try {
    assert.equal(mod.hello.boolinv, true);
    const c = (await firstValueFrom(mod.socket.create()))!;
    const r = await firstValueFrom(mod.socket.linkup(c));
    assert.equal(r[0], false, 'raw tuple as the old firmware returns it: false = no error');
    assert.equal(r.ok, true, 'normalised success flag');
  } finally {
    await mod.close();
  }
  const cur = await connect('sim:luatos');
  try {
    assert.equal(cur.hello.boolinv, false);
  } finally {
    await cur.close();
  }
});

/**
 * RpcClient against a scripted fake agent on an in-memory pair: every call settles.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstValueFrom } from 'rxjs';
import { createMemoryPair, type MemoryTransport } from '../src/transport/memory.js';
import { RpcClient } from '../src/rpc/client.js';
import { checkLine, decodeFrame, encodeFrame, contentOf, type Frame } from '../src/codec/frame.js';
import { isTetherError } from '../src/errors.js';
import { connect } from '../src/api/connect.js';

/** A fake agent: answers hello; `onCall` decides the rest (return undefined to stay silent). */
function fakeAgent(dev: MemoryTransport, onCall: (f: Extract<Frame, { type: 'C' }>) => Frame | undefined, proto = 1) {
  let buf = '';
  const send = (f: Frame) => void dev.write(Buffer.from(encodeFrame(contentOf(f), 4096).join(''), 'latin1'));
  dev.onData((c) => {
    buf += Buffer.from(c).toString('latin1');
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const r = checkLine(Buffer.from(line, 'latin1'));
      if (r.kind !== 'frame') continue;
      const f = decodeFrame(r.content);
      if (f.type !== 'C') continue;
      if (f.fn === 'hello') {
        const caps = new Map([[1, 'slow'], [2, 'fast']] as Array<[number, string]>);
        send({ type: 'R', id: f.id, values: [new Map<never, never>([['proto', proto], ['agent', '0.0.1'], ['family', 'luatos'], ['epoch', 5], ['maxframe', 255], ['window', 240], ['maxmsg', 1024], ['caps', caps]] as never)] });
        continue;
      }
      const reply = onCall(f);
      if (reply) send(reply);
    }
  });
  return { send };
}

test('a call with no reply times out with TIMEOUT; the next call still works', async () => {
  const [host, dev] = createMemoryPair();
  fakeAgent(dev, (f) => (f.fn === '2' ? { type: 'R', id: f.id, values: [1] } : undefined));
  const rpc = await RpcClient.open(host);
  await assert.rejects(rpc.call('slow', [], { timeoutMs: 100 }), (e: unknown) => isTetherError(e, 'TIMEOUT') && (e as unknown as { context: { ms: number } }).context.ms === 100);
  assert.deepEqual(await rpc.call('fast'), [1]);
  await rpc.close();
});

test('AbortSignal aborts before and after sending; unsubscribing a cold call aborts it', async () => {
  const [host, dev] = createMemoryPair();
  let calls = 0;
  fakeAgent(dev, () => {
    calls++;
    return undefined;
  });
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
  assert.ok(calls >= 1);
  await rpc.close();
});

test('a transport that closes fails pending calls with DISCONNECTED', async () => {
  const [host, dev] = createMemoryPair();
  fakeAgent(dev, () => undefined);
  const rpc = await RpcClient.open(host);
  const p = rpc.call('slow', [], { timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 20));
  await dev.close();
  await assert.rejects(p, (e: unknown) => isTetherError(e, 'DISCONNECTED'));
  await assert.rejects(rpc.call('fast'), (e: unknown) => isTetherError(e));
});

test('an agent speaking another protocol version is refused with VERSION_MISMATCH', async () => {
  const [host, dev] = createMemoryPair();
  fakeAgent(dev, () => undefined, 2);
  await assert.rejects(RpcClient.open(host), (e: unknown) => isTetherError(e, 'VERSION_MISMATCH'));
});

test('no agent at all: HANDSHAKE error within the handshake timeout', async () => {
  const [host] = createMemoryPair();
  await assert.rejects(RpcClient.open(host, { handshakeTimeoutMs: 300, helloAttemptMs: 100 }), (e: unknown) => isTetherError(e, 'HANDSHAKE'));
});

test('calls are pipelined: several in flight at once, replies in any order', async () => {
  const [host, dev] = createMemoryPair();
  const held: Array<Extract<Frame, { type: 'C' }>> = [];
  const agent = fakeAgent(dev, (f) => {
    held.push(f);
    if (held.length === 3) for (const h of held.reverse()) agent.send({ type: 'R', id: h.id, values: [h.args[0] as number] });
    return undefined;
  });
  const rpc = await RpcClient.open(host);
  const r = await Promise.all([rpc.call('fast', [1]), rpc.call('fast', [2]), rpc.call('fast', [3])]);
  assert.deepEqual(r, [[1], [2], [3]]);
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

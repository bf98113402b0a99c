/**
 * Reconnecting network ports: ReconnectingTransport over TCP (lost/restored, writes while
 * down, bounded attempts ending in a typed error, close while reconnecting), and the RPC
 * layer over it against a simulated module: a dropped connection fails calls in flight with
 * RESET (reason `reconnect`), ends reset-guarded streams, re-handshakes, and the boot epoch
 * tells whether the module really reset.
 */
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { test } from 'node:test';
import { firstValueFrom, take, toArray } from 'rxjs';
import { isTetherError, type TetherError } from '../src/errors.js';
import { RpcClient, type ResetEvent } from '../src/rpc/client.js';
import { resetAsError } from '../src/api/reset.js';
import { SimulatedModule } from '../src/sim/module.js';
import { luatosFamily } from '../src/sim/luatos/family.js';
import { openTransport, ReconnectingTransport, TcpTransport } from '../src/transport/index.js';
import { connect as connectModule } from '../src/api/connect.js';
import type { ReconnectEvent } from '../src/transport/transport.js';
import { until, UNTIL_TIMEOUT_MS } from './helpers/until.js';
import { TcpProxy } from './helpers/tcp-proxy.js';

/** An echo server on 127.0.0.1 (stands in for a raw ser2net port). */
async function echoServer(): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port, sockets };
}

function nextEvent(t: ReconnectingTransport, type: ReconnectEvent['type']): Promise<ReconnectEvent> {
  return new Promise((resolve) => {
    t.onReconnect((ev) => {
      if (ev.type === type) resolve(ev);
    });
  });
}

function receive(t: { onData(l: (c: Uint8Array) => void): void }): { text: () => string; wait: (s: string) => Promise<void> } {
  let buf = '';
  const waiters: Array<[string, () => void]> = [];
  t.onData((c) => {
    buf += Buffer.from(c).toString('latin1');
    for (const w of [...waiters]) if (buf.includes(w[0])) (waiters.splice(waiters.indexOf(w), 1), w[1]());
  });
  return {
    text: () => buf,
    wait: (s) =>
      new Promise<void>((resolve, reject) => {
        if (buf.includes(s)) return resolve();
        const t = setTimeout(() => reject(new Error(`no ${JSON.stringify(s)} within ${UNTIL_TIMEOUT_MS} ms (have ${JSON.stringify(buf)})`)), UNTIL_TIMEOUT_MS);
        waiters.push([s, () => (clearTimeout(t), resolve())]);
      }),
  };
}

test('tcp:// reconnects after a drop: lost, writes fail DISCONNECTED while down, restored, bytes flow again', async () => {
  const echo = await echoServer();
  const proxy = new TcpProxy(echo.port);
  await proxy.start();
  const t = (await openTransport(`tcp://127.0.0.1:${proxy.port}`, { reconnect: { initialDelayMs: 50, maxDelayMs: 100 } })) as ReconnectingTransport<TcpTransport>;
  try {
    assert.ok(t instanceof ReconnectingTransport);
    const rx = receive(t);
    await t.write(Buffer.from('one;'));
    await rx.wait('one;');
    const lost = nextEvent(t, 'lost');
    await proxy.stop();
    const ev = await lost;
    assert.ok(ev.type === 'lost' && isTetherError(ev.error, 'DISCONNECTED'));
    assert.equal(t.isOpen, true, 'the wrapper stays open while it reconnects');
    assert.equal(t.connected, false);
    await assert.rejects(t.write(Buffer.from('lost;')), (e: unknown) => isTetherError(e, 'DISCONNECTED') && /reconnecting/.test((e as Error).message));
    const restored = nextEvent(t, 'restored');
    await new Promise((r) => setTimeout(r, 200)); // a few refused attempts
    await proxy.start();
    const r = await restored;
    assert.ok(r.type === 'restored' && r.attempts >= 2, `took ${r.type === 'restored' ? r.attempts : '?'} attempts`);
    assert.equal(t.reconnects, 1);
    await t.write(Buffer.from('two;'));
    await rx.wait('two;');
    assert.equal(rx.text(), 'one;two;', 'nothing written while down arrives later');
    await assert.rejects(t.setBaudRate(9600), (e: unknown) => isTetherError(e, 'UNSUPPORTED'), 'raw TCP cannot set the baud');
  } finally {
    await t.close();
    await proxy.stop();
    echo.server.close();
  }
});

test('reconnecting gives up after maxAttempts with DISCONNECTED (reason RECONNECT_FAILED); close() while down stops it', async () => {
  const echo = await echoServer();
  const proxy = new TcpProxy(echo.port);
  await proxy.start();
  const t = await openTransport(`tcp://127.0.0.1:${proxy.port}`, { reconnect: { initialDelayMs: 10, maxDelayMs: 20, maxAttempts: 3 } });
  const closed = new Promise<Error | undefined>((r) => t.onClose(r));
  await proxy.stop();
  const err = (await closed) as TetherError;
  assert.ok(isTetherError(err, 'DISCONNECTED'));
  assert.equal(err.context?.reason, 'RECONNECT_FAILED');
  assert.equal(err.context?.attempts, 3);
  assert.ok(isTetherError((err as Error).cause, 'TRANSPORT'), 'the cause is the last attempt\'s connect error');
  assert.equal(t.isOpen, false);

  await proxy.start();
  const t2 = (await openTransport(`tcp://127.0.0.1:${proxy.port}`, { reconnect: { initialDelayMs: 100 } })) as ReconnectingTransport;
  const closed2 = new Promise<Error | undefined>((r) => t2.onClose(r));
  const lost = nextEvent(t2, 'lost');
  proxy.drop();
  await lost;
  await t2.close();
  assert.equal(await closed2, undefined, 'closed by the caller: no error');
  const before = proxy.accepted;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(proxy.accepted, before, 'no reconnect attempt after close()');
  await proxy.stop();
  echo.server.close();
});

test('reconnect off (default of openTransport, URL or option) closes on a drop; on in the URL wraps; the first connection is never retried; bad policies are INVALID_ARGUMENT', async () => {
  const echo = await echoServer();
  const on = await openTransport(`tcp://127.0.0.1:${echo.port}?reconnect=on`);
  assert.ok(on instanceof ReconnectingTransport);
  await on.close();
  for (const [url, opts] of [
    [`tcp://127.0.0.1:${echo.port}`, undefined],
    [`tcp://127.0.0.1:${echo.port}?reconnect=off`, { reconnect: true }],
    [`tcp://127.0.0.1:${echo.port}`, { reconnect: false }],
  ] as const) {
    const t = await openTransport(url, opts);
    assert.ok(t instanceof TcpTransport);
    const closed = new Promise<Error | undefined>((r) => t.onClose(r));
    for (const s of echo.sockets) s.destroy();
    assert.ok(isTetherError(await closed, 'DISCONNECTED'));
  }
  echo.server.close();
  await assert.rejects(openTransport(`tcp://127.0.0.1:${echo.port}`, { reconnect: true }), (e: unknown) => isTetherError(e, 'TRANSPORT'));
  await assert.rejects(openTransport('tcp://127.0.0.1:1', { reconnect: { maxAttempts: 0 } }), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(openTransport('tcp://127.0.0.1:1', { reconnect: { initialDelayMs: 500, maxDelayMs: 100 } }), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
});

async function simBehindProxy(policy = { initialDelayMs: 50, maxDelayMs: 200 }) {
  const sim = await SimulatedModule.start(luatosFamily());
  const url = await sim.serveTcp();
  const proxy = new TcpProxy(Number(new URL(url).port));
  await proxy.start();
  const transport = await openTransport(`tcp://127.0.0.1:${proxy.port}`, { reconnect: policy });
  const rpc = await RpcClient.open(transport, { timeoutMs: 3000 });
  return { sim, proxy, rpc };
}

test('RPC over a dropped tcp:// connection: the call in flight fails RESET (reconnect), streams end, the next call works, same epoch', async () => {
  const { sim, proxy, rpc } = await simBehindProxy();
  try {
    const epoch = rpc.currentEpoch;
    const resets: ResetEvent[] = [];
    rpc.resets.subscribe((r) => resets.push(r));
    const stream = firstValueFrom(resetAsError(rpc, 'a test stream'), { defaultValue: undefined });
    proxy.hold = true; // the request is swallowed: the call is surely in flight when the link drops
    const inflight = rpc.call('socket.adapter', []);
    await until(() => /~[Cc]/.test(proxy.held), 'the call frame (~C, or ~c with a short head) swallowed by the proxy');
    proxy.drop();
    proxy.hold = false;
    await assert.rejects(inflight, (e: unknown) => isTetherError(e, 'RESET') && (e as TetherError).context?.reason === 'reconnect' && /connection .* dropped/.test((e as Error).message));
    await assert.rejects(stream, (e: unknown) => isTetherError(e, 'RESET'));
    const [ready] = await rpc.call('socket.adapter', []);
    assert.equal(ready, true, 'the next call works after the reconnect and re-handshake');
    assert.equal(rpc.currentEpoch, epoch, 'the module did not reset: same boot epoch');
    assert.deepEqual(
      resets.map((r) => [r.reason, r.previousEpoch, r.epoch, r.failedCalls]),
      [['reconnect', epoch, epoch, 1]],
    );
    assert.equal(proxy.accepted, 2);
  } finally {
    await rpc.close();
    await proxy.stop();
    await sim.stop();
  }
});

test('RPC: the module reset while the connection was down: the re-handshake sees the new epoch and reports a second reset (reason epoch)', async () => {
  const { sim, proxy, rpc } = await simBehindProxy();
  try {
    const epoch = rpc.currentEpoch;
    const two = firstValueFrom(rpc.resets.pipe(take(2), toArray()));
    const lost = firstValueFrom(rpc.resets);
    await proxy.stop();
    await lost; // the host saw the drop before the module resets
    await sim.restart('test: reset while unplugged');
    await proxy.start();
    // a call made while the link was down belongs to the old boot: it fails RESET, unsent
    await assert.rejects(rpc.call('socket.adapter', []), (e: unknown) => isTetherError(e, 'RESET') && /before the call was sent/.test((e as Error).message));
    const [ready] = await rpc.call('socket.adapter', []);
    assert.equal(ready, true);
    const [a, b] = await two;
    assert.deepEqual([a.reason, a.epoch], ['reconnect', epoch]);
    assert.deepEqual([b.reason, b.previousEpoch], ['epoch', epoch]);
    assert.notEqual(b.epoch, epoch);
    assert.equal(rpc.currentEpoch, b.epoch);
    assert.equal(rpc.hello.epoch, b.epoch);
  } finally {
    await rpc.close();
    await proxy.stop();
    await sim.stop();
  }
});

test('RPC: when reconnecting gives up, calls waiting for it fail DISCONNECTED and the client closes', async () => {
  const { sim, proxy, rpc } = await simBehindProxy({ initialDelayMs: 20, maxDelayMs: 40, maxAttempts: 3 } as never);
  try {
    const lost = firstValueFrom(rpc.resets);
    await proxy.stop();
    assert.equal((await lost).reason, 'reconnect');
    const waiting = rpc.call('socket.adapter', []);
    await assert.rejects(waiting, (e: unknown) => isTetherError(e, 'DISCONNECTED') && ((e as Error).cause as TetherError | undefined)?.context?.reason === 'RECONNECT_FAILED');
    assert.equal(rpc.isClosed, true);
  } finally {
    await rpc.close();
    await sim.stop();
  }
});

test('connect() reconnects network ports by default; reconnect: false or ?reconnect=off opts out', async () => {
  const sim = await SimulatedModule.start(luatosFamily());
  const url = await sim.serveTcp();
  try {
    for (const [port, opts, wraps] of [
      [url, {}, true],
      [url, { reconnect: false }, false],
      [`${url}?reconnect=off`, {}, false],
    ] as const) {
      const mod = await connectModule(port, opts);
      try {
        assert.equal(mod.rpc.transport instanceof ReconnectingTransport, wraps, `${port} ${JSON.stringify(opts)}`);
      } finally {
        await mod.close();
      }
    }
  } finally {
    await sim.stop();
  }
});

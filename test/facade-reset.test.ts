/**
 * The facades of every family (LuatOS `socket`, Luat `socketcore`, NodeMCU `net`) when a step
 * fails or the module resets:
 * - openSocket whose config or linkup fails errors with a typed TetherError and leaves no wait
 *   behind that could reject unhandled later (which would kill the process);
 * - a module reset ends every open stream (data, datagrams, receive, per-socket events) and every
 *   pending wait with RESET, instead of leaving it silent until its timeout.
 * Everything runs against simulated modules and local echo servers on 127.0.0.1.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { firstValueFrom, lastValueFrom, type Observable } from 'rxjs';
import { connect, type TetherModule } from '../src/api/connect.js';
import { openSocket, waitEvent } from '../src/streams/drivers/luatos-conn.js';
import { SocketEvent } from '../src/api/luatos/constants.js';
import { openConnection } from '../src/streams/drivers/luat-conn.js';
import { connectTcp } from '../src/streams/drivers/nodemcu-conn.js';
import { startEchoServers, type EchoServers } from '../src/diag/echo-servers.js';
import { isTetherError, TetherError } from '../src/errors.js';
import { endOnReset, resetAsError } from '../src/api/reset.js';
import { Subject } from 'rxjs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TIMEOUT = { timeout: 5000 };

let echo: EchoServers;
/** Every unhandled rejection while this file runs: each one would have killed a plain Node process. */
const unhandled: unknown[] = [];
const trap = (e: unknown) => void unhandled.push(e);

before(async () => {
  process.on('unhandledRejection', trap);
  echo = await startEchoServers();
});
after(async () => {
  process.off('unhandledRejection', trap);
  await echo.close();
});

/** How a stream ended: its error (or a marker when it completed instead), and when. */
interface Ending {
  error?: unknown;
  completed?: boolean;
  at: number;
}

/** Subscribe now; resolves with how the stream ends. Values are collected into `seen`. */
function ending(stream: Observable<unknown>, seen: unknown[] = []): Promise<Ending> {
  return new Promise((resolve) => {
    stream.subscribe({
      next: (v) => seen.push(v),
      error: (error) => resolve({ error, at: performance.now() }),
      complete: () => resolve({ completed: true, at: performance.now() }),
    });
  });
}

function assertReset(e: Ending, what: string): void {
  assert.ok(!e.completed, `${what} completed instead of failing with RESET`);
  assert.ok(e.error instanceof TetherError, `${what}: expected a TetherError, got ${String(e.error)}`);
  assert.equal((e.error as TetherError).code, 'RESET', `${what}: ${(e.error as Error).message}`);
}

/** Restart the simulated module; resolves with the time the restart began and the reset the client saw. */
async function restart(mod: TetherModule): Promise<{ t0: number }> {
  const reset = firstValueFrom(mod.rpc.resets);
  const t0 = performance.now();
  await mod.simulator!.restart('test');
  await reset;
  return { t0 };
}

describe('src/api/reset.ts', () => {
  it('endOnReset mirrors the source, errors with RESET on a reset, at once for a stale epoch', async () => {
    const resets = new Subject<{ previousEpoch: number; epoch: number }>();
    const rpc = { resets, currentEpoch: 7 };
    const src = new Subject<number>();
    const seen: unknown[] = [];
    const end = ending(src.pipe(endOnReset(rpc, 'test stream', 7)), seen);
    src.next(1);
    resets.next({ previousEpoch: 7, epoch: 8 });
    src.next(2);
    const e = await end;
    assertReset(e, 'the guarded stream');
    assert.deepEqual(seen, [1]);
    assert.match((e.error as Error).message, /test stream: the module reset \(boot epoch 7 -> 8\)/);
    assert.equal(src.observed, false, 'the source was unsubscribed');
    // a stale epoch fails on subscribe, before the source is touched
    assertReset(await ending(src.pipe(endOnReset(rpc, 'stale', 6))), 'stale stream');
    assert.equal(src.observed, false);
    // completion passes through
    const done = ending(src.pipe(endOnReset(rpc, 'completes')));
    src.complete();
    assert.equal((await done).completed, true);
    assert.equal(resets.observed, false, 'nothing stays subscribed to resets');
    assertReset(await ending(resetAsError(rpc, 'x', 1)), 'resetAsError on a stale epoch');
  });
});

describe('LuatOS openSocket: a failing step errors with a typed TetherError and leaves nothing behind', () => {
  it('config refused (TLS with a CA the firmware cannot load): SOCKET, no unhandled rejection, socket released', TIMEOUT, async () => {
    const mod = await connect('sim', { sim: { network: { maxSockets: 2 } } });
    try {
      for (let i = 0; i < 3; i++) {
        await assert.rejects(
          firstValueFrom(openSocket(mod.socket, echo.tcp.host, echo.tcp.port, { tls: true, ca: 'not a certificate', timeoutMs: 150 })),
          (e: unknown) => isTetherError(e, 'SOCKET') && /socket\.config failed/.test((e as Error).message),
        );
      }
      await sleep(400); // well past every wait's timeout: a forgotten wait would reject now
      assert.deepEqual(unhandled, [], 'no unhandled rejection');
      // three failures with 2 sockets: each one released its socket, a good open still works
      const conn = await firstValueFrom(openSocket(mod.socket, echo.tcp.host, echo.tcp.port, { timeoutMs: 3000 }));
      await conn.close();
    } finally {
      await mod.close();
    }
  });

  it('linkup never links (adapter down): TIMEOUT, then no unhandled rejection', TIMEOUT, async () => {
    const mod = await connect('sim', { sim: { network: { adapterReadyDelayMs: 60000 } } });
    try {
      await assert.rejects(firstValueFrom(openSocket(mod.socket, echo.tcp.host, echo.tcp.port, { timeoutMs: 150 })), (e: unknown) => isTetherError(e, 'TIMEOUT'));
      await sleep(400);
      assert.deepEqual(unhandled, [], 'no unhandled rejection');
    } finally {
      await mod.close();
    }
  });

  it('bad adapter: create returns nil, SOCKET', TIMEOUT, async () => {
    const mod = await connect('sim');
    try {
      await assert.rejects(firstValueFrom(openSocket(mod.socket, echo.tcp.host, echo.tcp.port, { adapter: 9, timeoutMs: 150 })), (e: unknown) => isTetherError(e, 'SOCKET') && /create returned nil/.test((e as Error).message));
      await sleep(300);
      assert.deepEqual(unhandled, []);
    } finally {
      await mod.close();
    }
  });

  it('unsubscribing while the adapter is down releases the socket; no unhandled rejection', TIMEOUT, async () => {
    const mod = await connect('sim', { sim: { network: { adapterReadyDelayMs: 60000, maxSockets: 1 } } });
    try {
      const s = openSocket(mod.socket, echo.tcp.host, echo.tcp.port, { timeoutMs: 200 }).subscribe({ error: () => {} });
      await sleep(100);
      s.unsubscribe();
      await sleep(400);
      assert.deepEqual(unhandled, []);
      const c = await firstValueFrom(mod.socket.create());
      assert.ok(c, 'the only socket was released');
    } finally {
      await mod.close();
    }
  });
});

describe('a module reset ends every stream and wait with RESET', () => {
  it('LuatOS (sim): data(), datagrams(), per-socket events and a pending LINK wait', TIMEOUT, async (t) => {
    const mod = await connect('sim');
    try {
      const tcp = await firstValueFrom(openSocket(mod.socket, echo.tcp.host, echo.tcp.port));
      const udp = await firstValueFrom(openSocket(mod.socket, echo.udp.host, echo.udp.port, { udp: true }));
      const got: unknown[] = [];
      const data = ending(tcp.data(), got);
      const dgrams = ending(udp.datagrams());
      const events = ending(tcp.events);
      await lastValueFrom(tcp.send('ping'));
      for (let i = 0; i < 100 && got.length === 0; i++) await sleep(10);
      assert.ok(got.length > 0, 'the stream was live: the echo came back');
      const { t0 } = await restart(mod);
      const [d, g, ev] = await Promise.all([data, dgrams, events]);
      assertReset(d, 'data()');
      assertReset(g, 'datagrams()');
      assertReset(ev, 'events of the socket');
      t.diagnostic(`data() ended ${Math.round(d.at - t0)} ms after the restart began`);
      // streams of a socket from the previous boot fail at once
      assertReset(await ending(tcp.data()), 'data() subscribed after the reset');
      assertReset(await ending(mod.socket.events(tcp.ctrl)), 'socket.events(ctrl) of the previous boot');
      await assert.rejects(waitEvent(mod.socket, tcp.ctrl, [SocketEvent.CLOSED], 3000), (e: unknown) => isTetherError(e, 'RESET'));
      await assert.rejects(lastValueFrom(tcp.send('x')), (e: unknown) => isTetherError(e, 'RESET'));
      await tcp.close(); // after a reset: forgets the socket
      await udp.close();
    } finally {
      await mod.close();
    }
    assert.deepEqual(unhandled, []);
  });

  it('LuatOS (sim): openSocket waiting for LINK fails with RESET, not TIMEOUT', TIMEOUT, async () => {
    const mod = await connect('sim', { sim: { network: { adapterReadyDelayMs: 60000 } } });
    try {
      const opening = ending(openSocket(mod.socket, echo.tcp.host, echo.tcp.port, { timeoutMs: 60000 }));
      await sleep(200); // created, configured, waiting for LINK
      await restart(mod);
      assertReset(await opening, 'openSocket');
    } finally {
      await mod.close();
    }
    assert.deepEqual(unhandled, []);
  });

  it('Luat (sim:luat): data() of openConnection, the messages of its slot, and a pending data-link wait', TIMEOUT, async (t) => {
    const mod = await connect('sim:luat');
    try {
      const sc = mod.socketcore;
      const conn = await firstValueFrom(openConnection(sc, '127.0.0.1', echo.tcp.port));
      const got: unknown[] = [];
      const data = ending(conn.data(), got);
      const messages = ending(conn.messages);
      await lastValueFrom(conn.send('ping'));
      for (let i = 0; i < 100 && got.length === 0; i++) await sleep(10);
      assert.ok(got.length > 0, 'the stream was live: the echo came back');
      const { t0 } = await restart(mod);
      const [d, m] = await Promise.all([data, messages]);
      assertReset(d, 'data()');
      assertReset(m, 'messages of the slot');
      t.diagnostic(`data() ended ${Math.round(d.at - t0)} ms after the restart began`);
      assertReset(await ending(conn.data()), 'data() subscribed after the reset');
      assertReset(await ending(conn.messages), 'messages of a slot of the previous boot');
      await assert.rejects(lastValueFrom(conn.send('x')), (e: unknown) => isTetherError(e, 'RESET'));
      await conn.close();
    } finally {
      await mod.close();
    }
    assert.deepEqual(unhandled, []);
  });

  it('Luat (sim:luat): openConnection waiting for the data link fails with RESET, not TIMEOUT', TIMEOUT, async () => {
    const mod = await connect('sim:luat', { sim: { radio: { ipReadyDelayMs: 60000 } } });
    try {
      const opening = ending(openConnection(mod.socketcore, '127.0.0.1', echo.tcp.port, { timeoutMs: 60000 }));
      await sleep(200);
      await restart(mod);
      assertReset(await opening, 'openConnection');
    } finally {
      await mod.close();
    }
    assert.deepEqual(unhandled, []);
  });

  it('NodeMCU (sim:nodemcu): data() of connectTcp, receive$ of a UDP socket, and a sendAll waiting for "sent"', TIMEOUT, async (t) => {
    const mod = await connect('sim:nodemcu', { sim: { network: { ackDelayMs: 60000 } } });
    try {
      const n = mod.net;
      const conn = await firstValueFrom(connectTcp(n, '127.0.0.1', echo.tcp.port));
      const got: unknown[] = [];
      const data = ending(conn.data(), got);
      const udp = await firstValueFrom(n.createUDPSocket());
      await lastValueFrom(udp.on('receive'), { defaultValue: undefined });
      const received = ending(udp.receive$);
      const sending = ending(conn.send('ping')); // the echo comes back, the "sent" (ACK) does not
      for (let i = 0; i < 100 && got.length === 0; i++) await sleep(10);
      assert.ok(got.length > 0, 'the stream was live: the echo came back');
      const { t0 } = await restart(mod);
      const [d, r, s] = await Promise.all([data, received, sending]);
      assertReset(d, 'data()');
      assertReset(r, 'receive$ of the UDP socket');
      assertReset(s, 'sendAll waiting for "sent"');
      t.diagnostic(`data() ended ${Math.round(d.at - t0)} ms after the restart began`);
      assertReset(await ending(conn.data()), 'data() subscribed after the reset');
      assertReset(await ending(conn.socket.events), 'events of a socket of the previous boot');
      await conn.close();
    } finally {
      await mod.close();
    }
    assert.deepEqual(unhandled, []);
  });
});

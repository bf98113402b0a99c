/**
 * Pipelined bulk transfers: two socket.tx / socket.rx outstanding per socket on LuatOS
 * (with the agent's tx hold keeping the stream in order when the firmware's buffer is
 * full), two sends unACKed on NodeMCU. Through the simulated modules running the real agents.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { Observable, firstValueFrom, lastValueFrom, finalize, tap } from 'rxjs';
import { connect, type TetherModule } from '../src/api/connect.js';
import { openSocket } from '../src/streams/drivers/luatos-conn.js';
import { connectTcp } from '../src/streams/drivers/nodemcu-conn.js';
import { startEchoServers, type EchoServers } from '../src/diag/echo-servers.js';
import type { RpcClient } from '../src/rpc/client.js';
import type { WireValue } from '../src/codec/values.js';
import { echoSha256, seededPayload } from './helpers/fault-echo.js';

let echo: EchoServers;
before(async () => {
  echo = await startEchoServers();
});
after(async () => {
  await echo.close();
});

type CallFn = RpcClient['call$'];
interface TxRecord {
  resume: WireValue | undefined;
  len: number;
  full?: boolean;
}

/** Wrap `rpc.call$`: count calls of `fns` outstanding (max per name) and record every socket.tx. */
function watch(rpc: RpcClient, fns: string[]) {
  const now = new Map<string, number>();
  const max = new Map<string, number>();
  const tx: TxRecord[] = [];
  const orig = rpc.call$.bind(rpc);
  (rpc as unknown as { call$: CallFn }).call$ = (fn, args = [], opts) => {
    const src = orig(fn, args, opts);
    if (!fns.includes(fn)) return src;
    return new Observable<WireValue[]>((sub) => {
      const n = (now.get(fn) ?? 0) + 1;
      now.set(fn, n);
      max.set(fn, Math.max(max.get(fn) ?? 0, n));
      let rec: TxRecord | undefined;
      if (fn === 'socket.tx') tx.push((rec = { resume: args[5], len: (args[1] as Uint8Array).length }));
      return src
        .pipe(
          tap((v) => {
            if (rec) rec.full = v[1] === true;
          }),
          finalize(() => now.set(fn, (now.get(fn) ?? 1) - 1)),
        )
        .subscribe(sub);
    });
  };
  return { max, tx, restore: () => ((rpc as unknown as { call$: CallFn }).call$ = orig) };
}

async function luatosEcho(mod: TetherModule, size: number, seed: number) {
  const w = watch(mod.rpc, ['socket.tx', 'socket.rx']);
  try {
    const conn = await firstValueFrom(openSocket(mod.socket, echo.tcp.host, echo.tcp.port, { timeoutMs: 10000 }));
    try {
      const payload = seededPayload(size, seed);
      const r = await echoSha256(conn, payload, 120000);
      assert.equal(r.bytesBack, size);
      assert.equal(r.backSha256, r.sentSha256, 'byte-exact');
    } finally {
      await conn.close();
    }
  } finally {
    w.restore();
  }
  return w;
}

test('LuatOS: 256 KiB TCP echo byte-exact with 3 socket.tx (the default) and 2 socket.rx outstanding', async () => {
  const mod = await connect('sim', { sim: { network: {} } });
  try {
    const w = await luatosEcho(mod, 256 * 1024, 7);
    assert.equal(w.max.get('socket.tx'), 3, 'three tx outstanding at some point, never more');
    assert.equal(w.max.get('socket.rx'), 2, 'two rx outstanding at some point, never more');
    assert.equal(w.tx[0].resume, true, 'the first chunk clears any hold');
    assert.ok(w.tx.slice(1).some((t) => t.resume === false), 'later chunks go as pipelined (resume false)');
  } finally {
    await mod.close();
  }
});

/** Refusals: every tx behind a refused one is refused too, and the first refused chunk is resent with resume. */
function assertRefusalsResent(tx: TxRecord[]): number {
  let refusals = 0;
  for (let i = 0; i < tx.length; i++) {
    if (!tx[i].full) continue;
    refusals++;
    // the tx already outstanding behind it are refused (hold); the next resume=true is the resend
    let j = i + 1;
    while (j < tx.length && tx[j].resume !== true) {
      assert.equal(tx[j].full, true, `tx #${j} behind the refused #${i} was refused too (the agent's hold)`);
      j++;
    }
    assert.ok(j < tx.length, `the refused chunk #${i} was resent with resume`);
    // the resend starts at the first refused chunk of this run: same size as it
    let first = i;
    while (first > 0 && tx[first - 1].full && tx[first - 1].resume !== true) first--;
    assert.equal(tx[j].len, tx[first].len, 'resent from the first refused chunk');
    i = j - 1;
  }
  return refusals;
}

for (const invertedBool of [false, true]) {
  test(`LuatOS: a small firmware tx buffer refuses chunks as full; the echo stays byte-exact, refused chunks are resent with resume${invertedBool ? ' (pre-2023 firmware, inverted first boolean)' : ''}`, async () => {
    // the UART at 2000000 baud (the simulated line is paced; at 115200 the module's tx buffer never
    // fills and 256 KiB take 22 s each way)
    const mod = await connect('sim', { baudRate: 2000000, sim: { network: { txBufferBytes: 4096, invertedBool } } });
    // the simulated firmware counts bytes as pending until Node's write callback (handed to the
    // kernel); on loopback that is next tick, too soon for a refusal: hold the callbacks of the
    // module's connection to the echo server for a few ms (in order) so the buffer fills up
    // (25 ms: about 5 KB of the paced UART's 200 KB/s)
    const write = Socket.prototype.write;
    Socket.prototype.write = function (this: Socket, ...a: unknown[]) {
      const i = a.findIndex((x) => typeof x === 'function');
      if (this.remotePort === echo.tcp.port && i >= 0) {
        const cb = a[i] as (e?: Error | null) => void;
        a[i] = (e?: Error | null) => setTimeout(() => cb(e), 25);
      }
      return (write as (...x: unknown[]) => boolean).apply(this, a);
    } as typeof write;
    try {
      assert.equal(mod.rpc.hello.boolinv === true, invertedBool);
      const w = await luatosEcho(mod, 256 * 1024, 11);
      const refusals = assertRefusalsResent(w.tx);
      assert.ok(refusals > 0, 'the small buffer made the firmware refuse some tx');
      assert.ok(w.tx.some((t, i) => t.full && i + 1 < w.tx.length && w.tx[i + 1].full && w.tx[i + 1].resume === false), 'a pipelined tx behind a refused one was held');
      assert.equal(w.max.get('socket.tx'), 3);
    } finally {
      Socket.prototype.write = write;
      await mod.close();
    }
  });
}

test('LuatOS: inFlight 1 keeps one tx outstanding', async () => {
  const mod = await connect('sim');
  try {
    const w = watch(mod.rpc, ['socket.tx']);
    const conn = await firstValueFrom(openSocket(mod.socket, echo.tcp.host, echo.tcp.port, { timeoutMs: 10000 }));
    try {
      const payload = seededPayload(32 * 1024, 3);
      const got: Buffer[] = [];
      let n = 0;
      const back = new Promise<void>((resolve, reject) =>
        conn.data().subscribe({
          next: (b) => {
            got.push(Buffer.from(b));
            if ((n += b.length) >= payload.length) resolve();
          },
          error: reject,
        }),
      );
      await lastValueFrom(conn.send(payload, { inFlight: 1 }));
      await back;
      assert.ok(Buffer.concat(got).equals(payload));
      assert.equal(w.max.get('socket.tx'), 1);
    } finally {
      w.restore();
      await conn.close();
    }
  } finally {
    await mod.close();
  }
});

test('NodeMCU: 64 KiB echo byte-exact with 2 sends in flight (unACKed), one send call awaiting its reply', async () => {
  const mod = await connect('sim:nodemcu');
  try {
    const conn = await firstValueFrom(connectTcp(mod.net, echo.tcp.host, echo.tcp.port));
    const order: string[] = [];
    const sizes: number[] = [];
    const evSub = conn.socket.sent$.subscribe(() => order.push('sent'));
    const w = watch(mod.rpc, ['tcpsocket.send']);
    const orig = mod.rpc.call$.bind(mod.rpc);
    (mod.rpc as unknown as { call$: CallFn }).call$ = (fn, args = [], opts) => {
      if (fn === 'tcpsocket.send') {
        order.push('send');
        sizes.push((args[1] as Uint8Array).length);
      }
      return orig(fn, args, opts);
    };
    try {
      const payload = seededPayload(64 * 1024, 5);
      const r = await echoSha256(conn, payload, 120000);
      assert.equal(r.backSha256, r.sentSha256, 'byte-exact');
    } finally {
      (mod.rpc as unknown as { call$: CallFn }).call$ = orig;
      w.restore();
      evSub.unsubscribe();
      await conn.close();
    }
    assert.ok(sizes.every((x) => x <= 1460), 'chunks of one segment: two fit the 2920-byte buffer');
    assert.ok(
      order.some((e, i) => i > 0 && e === 'send' && order[i - 1] === 'send'),
      'a send went out while the previous one had no "sent" yet (two in flight)',
    );
    // never three sends without a "sent" between them
    let run = 0;
    for (const e of order) {
      run = e === 'send' ? run + 1 : 0;
      assert.ok(run <= 2, 'at most two sends unACKed');
    }
    assert.equal(w.max.get('tcpsocket.send'), 1, 'one send call awaiting its reply at a time (a refused send has nothing behind it)');
  } finally {
    await mod.close();
  }
});

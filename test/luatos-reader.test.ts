/**
 * How `LuatosConnection.data()` pipelines `socket.rx` calls, against a scripted socket (no
 * module, no timing): the reads it keeps outstanding after full, short and empty answers.
 * With hello `rxdrain` the agent hands out each firmware read `limit` bytes per call, so a short
 * answer is often only the tail of one firmware read while the read behind it starts the next
 * (firmware-shim/luatos/agent.lua `socket.rx`).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Observable, Subject } from 'rxjs';
import { LuatosConnection } from '../src/streams/drivers/luatos-conn.js';
import { SocketCtrl, ZBuff, type LuatosSocket, type SocketEventInfo } from '../src/api/luatos/socket.js';
import { SocketEvent } from '../src/api/luatos/constants.js';

const LIMIT = 4096;

/** A socket whose `rx` calls wait until the test answers them, in order. */
function scriptedSocket() {
  const events = new Subject<SocketEventInfo>();
  const pending: Array<(n: number) => void> = [];
  let issued = 0;
  const socket = {
    rpc: { hello: { raw: new Map<string, unknown>([['rxdrain', true]]) } },
    events: () => events.asObservable(),
    readLimit: () => LIMIT,
    rx: (_c: SocketCtrl, buf: ZBuff) => {
      issued++;
      return new Observable((sub) => {
        pending.push((n) => {
          if (n > 0) buf.append(Buffer.alloc(n, 0x61));
          sub.next(Object.assign([true, n, null, null], { ok: true }));
          sub.complete();
        });
      });
    },
  } as unknown as LuatosSocket;
  const ctrl = new SocketCtrl(1, 1, socket);
  return {
    conn: new LuatosConnection(socket, ctrl, false),
    events,
    ctrl,
    /** Reads issued so far. */
    issued: () => issued,
    /** Reads not answered yet. */
    outstanding: () => pending.length,
    /** Answer the oldest outstanding read with `n` bytes (0: nothing pending). */
    answer: async (n: number) => {
      const f = pending.shift();
      assert.ok(f, 'no read outstanding to answer');
      f(n);
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    },
  };
}

describe('LuatosConnection.data() read pipelining (hello rxdrain)', () => {
  it('keeps two reads outstanding across a short read that has a read behind it', async () => {
    const s = scriptedSocket();
    const got: number[] = [];
    const sub = s.conn.data().subscribe((b) => got.push(b.length));
    await new Promise((r) => setImmediate(r));
    assert.equal(s.outstanding(), 1, 'a drain starts with one read');
    await s.answer(LIMIT);
    assert.equal(s.outstanding(), 2, 'a full read: two outstanding');
    // the tail of the agent's firmware read, while the read behind it is already on its way
    await s.answer(1920);
    assert.equal(s.outstanding(), 2, 'a short read with a read behind it: still two outstanding (the module is never left without a read to answer)');
    await s.answer(LIMIT);
    assert.equal(s.outstanding(), 2);
    // the bytes are taken: empty answers end the drain
    await s.answer(0);
    assert.equal(s.outstanding(), 1, 'an empty read: no more issued');
    await s.answer(0);
    assert.equal(s.outstanding(), 0);
    assert.deepEqual(got, [LIMIT, 1920, LIMIT]);
    const issued = s.issued();
    // bytes arriving later: the EVENT drains again, with one read
    s.events.next({ ctrl: s.ctrl, event: SocketEvent.EVENT, name: 'EVENT', param: 0 });
    await new Promise((r) => setImmediate(r));
    assert.equal(s.issued(), issued + 1);
    await s.answer(100);
    assert.equal(s.outstanding(), 0, 'a short read with nothing behind it: the drain stops');
    assert.deepEqual(got, [LIMIT, 1920, LIMIT, 100]);
    sub.unsubscribe();
  });
});

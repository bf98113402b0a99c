/**
 * A call the module's Lua heap has no room for (docs/protocol.md section 8, `NOMEM`): on the
 * simulated ESP8266, whose heap is checked exactly, with a budget raised step by step above what
 * the idle agent uses, a call carrying a 3,000-byte payload is always answered:
 * - while the heap has no room to reassemble or decode it, with `NOMEM` (isNoMemory), and the
 *   agent's count of calls run (`agent.stats().calls`) proves it did not run;
 * - once there is room, with its own values, and it ran once;
 * - in between, possibly with ERR "not enough memory": it ran, and its reply (the payload echoed)
 *   had no room.
 * No call is lost to a timeout, and none is answered with another error.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../src/api/connect.js';
import { field, toNumber, type WireValue } from '../src/codec/values.js';
import { isNoMemory, isTetherError, type RemoteError } from '../src/errors.js';
import { sleep } from './helpers/until.js';

/** Every budget check walks the heap (src/sim/nodemcu/family.ts HEAP_CHECK_EXACT). */
const EXACT = { everyInstructions: 100, everyHooks: 1, everyMs: 0 };

describe('a call the heap has no room for', () => {
  it('is answered NOMEM and does not run; with room the same call runs once', { timeout: 120_000 }, async (t) => {
    const m = await connect('sim:nodemcu', { sim: { heapCheck: 'exact' } });
    try {
      const vm = m.simulator!.currentVm!;
      const calls = async () => toNumber(field((await m.rpc.call('agent.stats'))[0], 'calls'))!;
      const payload = Buffer.alloc(3000, 'tether-').toString('latin1');
      // one call first, so the parts it loads from flash have been loaded once
      await m.rpc.call('agent.ping', [0, 'warm', true]);
      await sleep(200);
      const idle = vm.heapUsed();
      const before = await calls();
      const outcome: string[] = [];
      let ran = 0;
      // from 4,000 bytes of room, where a call was once lost (about one run in three): its error
      // reply found no room either (it is now owed and sent at the agent's next tick), or its
      // pieces filled the heap until no line could be read (they are now dropped and the call is
      // answered NOMEM; firmware-shim/common/core.lua K.owe, A.log). With less room the pieces
      // alone fill the budget, and the simulator's check at a callback's entry, outside the
      // agent's pcall, may restart the module (RESET; docs/nodemcu.md)
      for (let room = 4000; room <= 20000; room += 500) {
        vm.setHeapBudget({ limit: idle + room, ...EXACT });
        let r: WireValue[] | undefined;
        try {
          r = await m.rpc.call('agent.ping', [room, payload, true], { timeoutMs: 15000 });
        } catch (e) {
          // ERR "not enough memory": the call ran, and its reply (the 3,000 bytes echoed) had no room
          if (isTetherError(e, 'REMOTE') && (e as RemoteError).remoteCode === 'ERR' && /not enough memory/.test((e as RemoteError).remoteMessage)) {
            outcome.push(`${room}:ran-no-reply`);
            ran++;
            continue;
          }
          assert.ok(isNoMemory(e), `with ${room} bytes of room: ${(e as Error).message}`);
          outcome.push(`${room}:NOMEM`);
        } finally {
          vm.setHeapBudget({ limit: 1 << 30, ...EXACT });
        }
        if (r) {
          assert.equal(r[1], room, 'its own number back');
          assert.equal(Buffer.from(r[2] as Uint8Array).toString('latin1'), payload, 'its own payload back');
          outcome.push(`${room}:ran`);
          ran++;
        }
      }
      const after = await calls();
      t.diagnostic(`idle ${idle} bytes; room: outcome ${outcome.join(' ')}`);
      assert.ok(outcome.some((o) => o.endsWith('NOMEM')), `some budget was too small for the call: ${outcome.join(' ')}`);
      assert.ok(outcome.at(-1)!.endsWith('ran'), `the largest budget had room for it: ${outcome.join(' ')}`);
      // the calls answered NOMEM did not run; the others ran once each (agent.stats counts itself)
      assert.equal(after - before - 1, ran, `calls run on the agent: ${outcome.join(' ')}`);
    } finally {
      await m.close();
    }
  });
});

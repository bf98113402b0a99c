/**
 * The heap budget is also checked inside allocation-heavy library calls (issue #8): once the
 * strings library calls handed into Lua reach `everyBridgeBytes` (16 KiB) since the last walk,
 * the call walks the heap and fails with "not enough memory" over the limit, as the firmware's
 * `lua_pushlstring` of the result would, instead of up to 20 ms / 200k instructions later.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LuaVm, MEMERRMSG } from '../src/sim/lua-vm.js';

function vmWithBig(opts: { everyBridgeBytes?: number } = {}): { vm: LuaVm; out: unknown[] } {
  const vm = new LuaVm();
  const out: unknown[] = [];
  let k = 0;
  // distinct contents (equal strings are one string in Lua)
  vm.registerGlobal('big', () => [new Uint8Array(64 * 1024).fill(65 + (k++ % 26))]);
  vm.registerGlobal('out', (a) => void out.push(a.value(1), a.value(2)));
  vm.setHeapBase();
  vm.setHeapBudget({ limit: 200 * 1024, ...opts });
  return { vm, out };
}

const SCRIPT = `
  T = {} local n = 0
  local ok, err = pcall(function() for i = 1, 10 do T[i] = big() n = i end end)
  out(n, ok and "ok" or tostring(err))`;

describe('heap budget: checked at allocation-heavy library calls', () => {
  it('ten 64 KiB results under a 200 KiB budget: the call that goes over fails with "not enough memory"', () => {
    const { vm, out } = vmWithBig();
    assert.equal(vm.runString(SCRIPT, '=t'), undefined);
    const [n, err] = out;
    assert.equal(err instanceof Uint8Array ? Buffer.from(err).toString() : err, MEMERRMSG);
    // 3 results (192 KiB plus the VM's own) fit at most; the 4th push is over the budget
    assert.ok((n as number) <= 3, `${String(n)} results were kept`);
    assert.ok(vm.heapPeak > 200 * 1024);
  });

  it('with the bridge check off (everyBridgeBytes 0) the same few instructions are not checked in time: the sampled check alone misses them', () => {
    const { vm, out } = vmWithBig({ everyBridgeBytes: 0 });
    assert.equal(vm.runString(SCRIPT, '=t'), undefined);
    assert.deepEqual([out[0], out[1] instanceof Uint8Array ? Buffer.from(out[1]).toString() : out[1]], [10, 'ok']);
    assert.ok(vm.heapUsed() > 600 * 1024, 'the VM holds far more than its budget');
  });
});

/**
 * Heap budgets of the simulated modules (src/sim/lua-vm.ts estimateLua51Heap, setHeapBudget):
 * - the estimate counts Lua 5.1 objects at their 32-bit sizes (exact for strings and tables);
 * - the NodeMCU agent's figure is calibrated against the i386 lua5.1 measurement of
 *   scripts/heap-nodemcu.ts (stripped bytecode): within 25 %;
 * - an agent too big for the budget fails the way the firmware fails: "not enough memory"
 *   (NodeMCU: reported at load and back to the prompt; a callback's error goes to
 *   node.setonerror; LuatOS and Luat: the error escapes, the firmware logs it and reboots).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedModule } from '../src/sim/module.js';
import { luatosFamily, LUATOS_LUA_HEAP } from '../src/sim/luatos/family.js';
import { luatFamily, LUAT_LUA_HEAP } from '../src/sim/luat/family.js';
import { nodemcuFamily, NODEMCU_FREE_HEAP } from '../src/sim/nodemcu/family.js';
import { connect } from '../src/api/connect.js';
import { isTetherError } from '../src/errors.js';
import { measureNodemcuHeap } from '../scripts/heap-nodemcu.js';
import { sleep, until } from './helpers/until.js';


function run(sim: SimulatedModule, code: string): void {
  const e = sim.currentVm!.runString(code, '=test');
  if (e !== undefined) throw new Error(e);
}

describe('the heap estimate counts Lua 5.1 objects at their 32-bit sizes', () => {
  it('a new 1000-byte string costs 16 + 1000 + 1; a 10-slot array 32 + 10 * 12; a 3-key hash 32 + 4 nodes * 28 (each new string once)', async () => {
    const sim = await SimulatedModule.start(luatosFamily(), { bootNoise: false, agentSource: '-- none' });
    try {
      const vm = sim.currentVm!;
      run(sim, 'keep = {}');
      const b0 = vm.heapUsed();
      run(sim, 'keep.s = string.rep("q", 1000)');
      // the key "s" is a new string too (17 + 1), and keep's hash part grows from 0 to 1 node (28)
      assert.equal(vm.heapUsed() - b0, 1017 + 18 + 28);
      const b1 = vm.heapUsed();
      run(sim, 'keep.s = nil keep.a = {1,2,3,4,5,6,7,8,9,10}');
      assert.equal(vm.heapUsed() - b1, -1017 - 18 + (32 + 120) + 18, 'the string is gone; "a" and the array came');
      const b2 = vm.heapUsed();
      run(sim, 'keep.hq1 = { xq1 = true, yq1 = true, zq1 = true }');
      // keep's hash part: 1 -> 2 nodes; the new table: 3 keys -> 4 nodes; 4 new 3-byte strings
      assert.equal(vm.heapUsed() - b2, 28 + (32 + 4 * 28) + 4 * 20);
    } finally {
      await sim.stop();
    }
  });

  it('a Lua function: its closure and, once, its prototype (76 + 4 per instruction + 12 per constant)', async () => {
    const sim = await SimulatedModule.start(luatosFamily(), { bootNoise: false, agentSource: '-- none' });
    try {
      const vm = sim.currentVm!;
      run(sim, 'keep = { 0, 0, 0 }');
      const b0 = vm.heapUsed();
      // load() compiles the prototype; `return 1` has 2 instructions (LOADK/RETURN, RETURN) and 1 constant
      run(sim, 'keep[1] = load("return 1")');
      const one = vm.heapUsed() - b0;
      run(sim, 'keep[2] = load("return 1")');
      assert.equal(vm.heapUsed() - b0, 2 * one, 'a second load compiles a second prototype');
      run(sim, 'local f = keep[1] keep[3] = f');
      assert.equal(vm.heapUsed() - b0, 2 * one, 'the same closure twice costs nothing more');
      assert.ok(one >= 20 + 76 + 2 * 4 + 12, `one function ${one} bytes`);
    } finally {
      await sim.stop();
    }
  });
});

describe('calibration: the NodeMCU agent against the i386 lua5.1 stripped-bytecode measurement', () => {
  it('collectgarbage("count") of the idle agent in the sim is within 25 % of scripts/heap-nodemcu.ts', async () => {
    let ref;
    try {
      ref = measureNodemcuHeap();
    } catch (e) {
      assert.fail(
        `${(e as Error).message}: run "node dist/scripts/heap-nodemcu.js --fetch" (apt-get download of the Debian packages lua5.1:i386, liblua5.1-0:i386, libc6:i386 after "dpkg --add-architecture i386 && apt-get update"; on a kernel without 32-bit support also install qemu-user); .ci/run does this`,
      );
    }
    const m = await connect('sim:nodemcu', { sim: { enforceHeap: false } });
    try {
      await sleep(300);
      const vm = m.simulator!.currentVm!;
      const kb = vm.callGlobal('collectgarbage', 'count').values![0] as number;
      const ratio = kb / ref.idleKB;
      assert.ok(ratio > 0.75 && ratio < 1.25, `sim ${kb.toFixed(1)} KB vs i386 lua5.1 ${ref.idleKB} KB: ratio ${ratio.toFixed(2)}`);
    } finally {
      await m.close();
    }
  });
});

/**
 * What a simulated ESP8266 prints from power-on up to its Lua prompt (after an agent that failed to
 * load). The host is attached first and the module then reset: what it printed before a host
 * listened is gone, as on a UART nobody listens to, and start() may resolve after part of it.
 */
async function untilPrompt(sim: SimulatedModule): Promise<string> {
  const host = sim.connect();
  let out = '';
  host.onData((c) => void (out += Buffer.from(c).toString('latin1')));
  await sim.restart('the test listens from power-on');
  await until(() => out.includes('> '), 'the prompt');
  await host.close();
  return out;
}

describe('an agent too big for the heap fails in the sim the way it fails on the module', () => {
  /** An "agent" whose load keeps about `bytes` of strings alive. */
  const bigAgent = (bytes: number) => `big = {} for i = 1, ${Math.ceil(bytes / 40)} do big[i] = string.format("%030d", i) end`;

  it('NodeMCU: loading reports "not enough memory" and the stock prompt comes up; node.heap() is the budget less the Lua heap', async () => {
    const fam = nodemcuFamily(); // the budget is enforced by default, as on the module
    const sim = await SimulatedModule.start(fam, { bootNoise: false, agentSource: bigAgent(NODEMCU_FREE_HEAP + 8000) });
    try {
      assert.match(await untilPrompt(sim), /not enough memory/);
      assert.equal(sim.boots, 2, 'no reboot: the interpreter goes on to the prompt (boots: the power-on and the reset above)');
    } finally {
      await sim.stop();
    }
    // the same agent with room for it
    const roomy = await SimulatedModule.start(nodemcuFamily({ enforceHeap: true, heapBytes: NODEMCU_FREE_HEAP + 100000 }), { bootNoise: false, agentSource: bigAgent(NODEMCU_FREE_HEAP + 8000) });
    try {
      const vm = roomy.currentVm!;
      const got: number[] = [];
      vm.registerGlobal('rec', (a) => void got.push(a.num(1), a.num(2)));
      run(roomy, 'rec(node.heap(), collectgarbage("count"))');
      const [free, kb] = got;
      assert.ok(kb * 1024 > NODEMCU_FREE_HEAP, `it needs ${kb} KB`);
      assert.ok(Math.abs(free - (NODEMCU_FREE_HEAP + 100000 - kb * 1024)) < 64, `node.heap() ${free} = budget less the Lua heap (${kb} KB)`);
    } finally {
      await roomy.stop();
    }
  });

  it('NodeMCU: the real agent in a 24000-byte heap fails at its load every time, before it takes the UART (the load is checked exactly)', async () => {
    // sampled checks (every 20 ms or 200 000 instructions) let it through now and then: its main
    // chunk ran to the end, took the UART and sent its boot frame
    for (let i = 0; i < 5; i++) {
      const sim = await SimulatedModule.start(nodemcuFamily({ heapBytes: 24000 }), { bootNoise: false });
      try {
        const out = await untilPrompt(sim);
        assert.match(out, /not enough memory/);
        assert.doesNotMatch(out, /~B\d/, 'no boot frame: the agent never started');
      } finally {
        await sim.stop();
      }
    }
  });

  it('NodeMCU: loadfile reads through a small buffer like the firmware: a 60 KB file (comments) loads under the 44000-byte budget', async () => {
    // lauxlib.c getF: the firmware's reader hands the parser one buffer at a time, the file's text
    // never is one Lua string; a 60 KB string alone would be over the budget
    const big = `-- ${'x'.repeat(60000)}\nreturn 42\n`;
    const sim = await SimulatedModule.start(nodemcuFamily({ boot: 'repl', files: { 'big.lua': big } }), { bootNoise: false });
    try {
      const got: unknown[] = [];
      sim.currentVm!.registerGlobal('rec', (a) => void got.push(a.num(1)));
      run(sim, 'rec(dofile("big.lua"))');
      assert.deepEqual(got, [42]);
      assert.ok(sim.currentVm!.heapUsed() < NODEMCU_FREE_HEAP, 'and nothing of it stays');
    } finally {
      await sim.stop();
    }
  });

  it('NodeMCU: a timer callback that allocates past the budget gets "not enough memory" through node.setonerror', async () => {
    const sim = await SimulatedModule.start(nodemcuFamily({ boot: 'repl' }), { bootNoise: false });
    try {
      const errs: string[] = [];
      sim.currentVm!.registerGlobal('rec', (a) => void errs.push(a.str(1)));
      run(sim, `node.setonerror(function(e) rec(e) end)
        tmr.create():alarm(1, tmr.ALARM_SINGLE, function() local t = {} for i = 1, 200000 do t[i] = i end end)`);
      await until(() => errs.length >= 1, 'the error handler');
      assert.match(errs[0], /^not enough memory/);
    } finally {
      await sim.stop();
    }
  });

  for (const [name, family, limit] of [
    ['LuatOS', () => luatosFamily({ heapBytes: 65536 }), 65536],
    ['Luat', () => luatFamily({ heapBytes: 131072 }), 131072],
  ] as const) {
    it(`${name}: main.lua fails with "not enough memory", the firmware logs it and reboots`, async () => {
      const sim = await SimulatedModule.start(family(), { agentSource: bigAgent(limit + 16000), rebootDelayMs: 20 });
      try {
        await until(() => sim.boots >= 2, 'a reboot');
        assert.match(sim.fatalErrors[0], /not enough memory/);
      } finally {
        await sim.stop();
      }
    });
  }

  it('the defaults are the modules\' own figures, and the real agents fit them (LuatOS, Luat)', async () => {
    assert.equal(LUATOS_LUA_HEAP, 200 * 1024);
    assert.equal(LUAT_LUA_HEAP, 1426063);
    assert.equal(NODEMCU_FREE_HEAP, 44000);
    for (const port of ['sim', 'sim:luat']) {
      const m = await connect(port);
      try {
        const vm = m.simulator!.currentVm!;
        assert.ok(vm.heapLimit !== undefined && vm.heapUsed() < vm.heapLimit, `${port}: ${vm.heapUsed()} of ${vm.heapLimit} bytes`);
      } finally {
        await m.close();
      }
    }
  });

  it('a bad heapBytes is an InvalidArgumentError', async () => {
    for (const v of [0, 100, -5, 1.5, '44000', 2 ** 31]) {
      await assert.rejects(connect('sim:nodemcu', { sim: { heapBytes: v } }), (e) => isTetherError(e, 'INVALID_ARGUMENT'));
      assert.throws(() => luatosFamily({ heapBytes: v as number }), (e) => isTetherError(e, 'INVALID_ARGUMENT'));
    }
  });
});

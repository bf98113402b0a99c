/** The emulated LuatOS system libraries, against docs/firmware/luatos.md (agent-side APIs). */
import { test } from 'node:test';
import { until } from './helpers/until.js';
import assert from 'node:assert/strict';
import { SimulatedModule } from '../src/sim/module.js';
import { luatosFamily } from '../src/sim/luatos/family.js';

test('json, crypto.crc32 (signed), string.toHex, rtos.version, 32-bit integers, sys timers', async () => {
  const sim = await SimulatedModule.start(luatosFamily(), {
    bootNoise: false,
    agentSource: `
      local t, one = json.decode('{"a":[1,2],"f":1.5}')
      local n, ok, err = json.decode('{bad')
      R = { t.a[2], one, t.f, n == nil, ok, type(err), json.encode({1, 2, 3}),
            crypto.crc32("123456789"), (string.toHex("\\1\\2\\255")), select(2, string.toHex("ab")),
            rtos.version(), select(3, rtos.version(true)), math.maxinteger, math.maxinteger + 1 == math.mininteger,
            crypto.crc16("MODBUS", "123456789") }
      sys.taskInit(function() sys.wait(20) WAITED = true end)
    `,
  });
  try {
    const vm = sim.currentVm!;
    vm.runString('function getR() return table.unpack(R, 1, 15) end', '=t');
    const r = vm.callGlobal('getR').values!;
    const txt = (v: unknown) => Buffer.from(v as Uint8Array).toString();
    assert.equal(r[0], 2);
    assert.equal(r[1], 1, 'json.decode returns (obj, 1)');
    assert.equal(r[2], 1.5);
    assert.equal(r[3], true, 'failed decode: nil first');
    assert.equal(r[4], false, 'failed decode: false second');
    assert.equal(txt(r[5]), 'string');
    assert.equal(txt(r[6]), '[1,2,3]');
    assert.equal(r[7], -873187034, 'crc32 is signed on 32-bit firmware');
    assert.equal(txt(r[8]), '0102FF');
    assert.equal(r[9], 4, 'toHex also returns 2*len');
    assert.equal(txt(r[10]), 'V1112-sim');
    assert.equal(r[11], 32);
    assert.equal(r[12], 2147483647);
    assert.equal(r[13], true, 'integers wrap at 32 bits');
    assert.equal(r[14], 0x4b37);
    vm.runString('function getW() return WAITED end', '=t');
    await until(() => vm.callGlobal('getW').values![0] === true, 'sys.wait resuming the task (WAITED = true)');
  } finally {
    await sim.stop();
  }
});

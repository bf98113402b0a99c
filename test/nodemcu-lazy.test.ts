/**
 * The NodeMCU agent's files loaded on first use (firmware-shim/nodemcu/agent.lua HAL.part): a
 * call group that fails to load is that call's error reply, never silence (every call settles),
 * and the other calls go on working; a core part that fails to load fails the handshake at once
 * instead of leaving the host waiting. The simulated ESP8266 loads the files from its SPIFFS.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import { RpcClient } from '../src/rpc/client.js';
import { isTetherError } from '../src/errors.js';
import { liveProtoChunks } from '../src/sim/lua-vm.js';

test('a broken tether_net.lua on the module: net.* calls fail with its error, hello and wifi.* still work', async () => {
  const sim = await SimulatedModule.start(nodemcuFamily({ files: { 'tether_net.lua': 'error("tether_net is broken")' } }), { bootNoise: false });
  try {
    const rpc = await RpcClient.open(sim.connect(), { handshakeTimeoutMs: 5000 });
    try {
      assert.equal(rpc.hello.family, 'nodemcu');
      await assert.rejects(rpc.call('net.createConnection', []), (e) => isTetherError(e, 'REMOTE') && /tether_net is broken/.test(e.message));
      const [ip] = await rpc.call('wifi.sta.getip', []);
      assert.equal(Buffer.from(ip as Uint8Array).toString(), '127.0.0.1');
      await assert.rejects(rpc.call('net.createServer', []), (e) => isTetherError(e, 'REMOTE'), 'and again: nothing is left half-loaded');
    } finally {
      await rpc.close();
    }
  } finally {
    await sim.stop();
  }
});

test('a broken tether_call.lua: the handshake fails with an error, it does not wait for its timeout', async () => {
  const sim = await SimulatedModule.start(nodemcuFamily({ files: { 'tether_call.lua': 'error("tether_call is broken")' } }), { bootNoise: false });
  try {
    const t0 = Date.now();
    await assert.rejects(RpcClient.open(sim.connect(), { handshakeTimeoutMs: 20000 }), (e) => isTetherError(e) && /tether_call is broken/.test(String((e as Error).message) + JSON.stringify((e as { context?: unknown }).context ?? '')));
    assert.ok(Date.now() - t0 < 15000, 'answered, not timed out');
  } finally {
    await sim.stop();
  }
});

test('a broken tether_enc.lua (the value encoder): hello (a table in its reply) answers with its error, the handshake fails with it', async () => {
  const sim = await SimulatedModule.start(nodemcuFamily({ files: { 'tether_enc.lua': 'error("tether_enc is broken")' } }), { bootNoise: false });
  try {
    // hello replies with a table: its encoding needs tether_enc.lua, so the handshake gets the error reply
    await assert.rejects(RpcClient.open(sim.connect(), { handshakeTimeoutMs: 20000 }), (e) => isTetherError(e) && /tether_enc is broken/.test(String((e as Error).message) + JSON.stringify((e as { context?: unknown }).context ?? '')));
  } finally {
    await sim.stop();
  }
});

test('a call with a payload runs with tether_call.lua out of the heap; a small call keeps it for the next one', async () => {
  // The agent's calls part (decoder, dispatch) is about 3 KB of prototypes: a call of over 512
  // bytes forgets it before its function runs (HAL.spent) and the core runs the function
  // (K.run) after the part returned, so nothing holds it while a payload is in the heap. A probe
  // wrapped around the firmware's node.heap looks at the live prototypes while the call runs.
  const sim = await SimulatedModule.start(nodemcuFamily(), { bootNoise: false });
  try {
    const rpc = await RpcClient.open(sim.connect(), { handshakeTimeoutMs: 5000 });
    try {
      const vm = sim.currentVm!;
      const seen: boolean[] = [];
      vm.registerGlobal('tether_test_probe', () => {
        seen.push([...liveProtoChunks(vm.L).keys()].some((c) => /tether_call/.test(c)));
      });
      const e = vm.runString('local h = node.heap node.heap = function() tether_test_probe() return h() end', '=test');
      assert.equal(e, undefined, e);
      const [free] = await rpc.call('node.heap', [new Uint8Array(600)]);
      assert.equal(typeof free, 'number');
      await rpc.call('node.heap', []);
      assert.deepEqual(seen, [false, true], 'tether_call.lua live while node.heap ran: [600-byte call, small call]');
    } finally {
      await rpc.close();
    }
  } finally {
    await sim.stop();
  }
});

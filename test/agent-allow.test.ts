/**
 * Remote REPL and restart are off unless enabled (issue 9): the NodeMCU agent refuses
 * `agent.repl` and `node.restart` with a remote error naming the setting to change
 * (TETHER_ALLOW_REPL / TETHER_ALLOW_RESTART, default false), and keeps running; the
 * simulated module's default settings keep them off. `tether flash` asks a running agent for
 * the prompt only with --allow-repl, and says what to do when it may not or the agent refuses.
 * (The LuatOS and Luat agents expose no restart or REPL.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily, nodemcuAgentSource } from '../src/sim/nodemcu/family.js';
import { RpcClient } from '../src/rpc/client.js';
import { RemoteError, isTetherError } from '../src/errors.js';
import { flashNodemcu } from '../src/cli/commands/flash-repl.js';

async function remoteFailure(p: Promise<unknown>): Promise<RemoteError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RemoteError, String(e));
    return e;
  }
  assert.fail('the call succeeded');
}

test('default settings: agent.repl and node.restart are refused with the setting to change; the agent keeps running', async () => {
  const fam = nodemcuFamily();
  const sim = await SimulatedModule.start(fam, { bootNoise: false });
  const rpc = await RpcClient.open(sim.connect(), { timeoutMs: 5000 });
  try {
    const repl = await remoteFailure(rpc.call('agent.repl'));
    assert.equal(repl.remoteCode, 'ERR');
    assert.match(repl.remoteMessage, /agent\.repl .* is off on this module: set TETHER_ALLOW_REPL = true/);
    const restart = await remoteFailure(rpc.call('node.restart'));
    assert.match(restart.remoteMessage, /node\.restart is off on this module: set TETHER_ALLOW_RESTART = true/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(fam.esp!.uartTaken, true, 'the agent still owns the UART');
    assert.equal(sim.boots, 1, 'no restart happened');
    assert.equal((await rpc.call('node.chipid'))[0], 1193046, 'and still answers');
  } finally {
    await rpc.close();
    await sim.stop();
  }
});

test('settings enable them: TETHER_ALLOW_RESTART = true lets node.restart reset the module', async () => {
  const fam = nodemcuFamily({ agentSettings: { TETHER_ALLOW_RESTART: true } });
  const sim = await SimulatedModule.start(fam, { bootNoise: false });
  const rpc = await RpcClient.open(sim.connect(), { timeoutMs: 5000 });
  try {
    assert.match((await remoteFailure(rpc.call('agent.repl'))).remoteMessage, /TETHER_ALLOW_REPL/, 'one setting does not enable the other');
    await rpc.call('node.restart');
    for (let i = 0; i < 100 && sim.boots < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(sim.boots, 2, 'the module restarted');
  } finally {
    await rpc.close();
    await sim.stop();
  }
});

test('tether flash: a running agent is asked for the prompt only with --allow-repl; a refusal says what to do', async () => {
  const fam = nodemcuFamily({ boot: 'repl' });
  const sim = await SimulatedModule.start(fam, { bootNoise: false });
  try {
    let t = sim.connect();
    // upload and start without --allow-repl: the agent runs with the REPL off
    const first = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), start: true, syncTimeoutMs: 5000 });
    assert.equal(first.started, true);
    await t.close();
    t = sim.connect();
    await assert.rejects(flashNodemcu(t, { agentSource: nodemcuAgentSource(), syncTimeoutMs: 3000 }), (e) => isTetherError(e, 'UNSUPPORTED') && /pass --allow-repl/.test(e.message));
    await t.close();
    t = sim.connect();
    await assert.rejects(flashNodemcu(t, { agentSource: nodemcuAgentSource(), allowRepl: true, syncTimeoutMs: 3000 }), (e) => isTetherError(e, 'UNSUPPORTED') && /refused agent\.repl .*TETHER_ALLOW_REPL = true/.test(e.message));
    await t.close();
    assert.equal(fam.esp!.uartTaken, true, 'the agent still runs');
  } finally {
    await sim.stop();
  }
});

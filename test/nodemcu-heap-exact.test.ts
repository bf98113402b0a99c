/**
 * The NodeMCU agent's peaks, checked exactly: a simulated ESP8266 with `heapCheck: 'exact'`
 * walks its heap every 100 instructions and at every callback entry (src/sim/nodemcu/options.ts),
 * so a peak as short as one call that goes over the default 44000 bytes fails with "not enough
 * memory", as it would on the module. The sampled checks of the other tests let such a peak pass
 * now and then: a new session's hello, sweeping two servers a crashed session left, loaded the
 * status calls (tether_sys.lua) and then hello's fields (tether_info.lua) at once, 46.5 KB here,
 * and failed in CI under load. Each test also reads the highest heap the checks saw.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import { SimulatedModule } from '../src/sim/module.js';
import { SIM_FAMILIES } from '../src/sim/families.js';
import { NODEMCU_FREE_HEAP } from '../src/sim/nodemcu/family.js';
import { RpcClient } from '../src/rpc/client.js';
import { TetherModule } from '../src/api/connect.js';
import { releasedAtOpen } from '../src/api/session.js';
import { createConnection } from '../src/streams/index.js';
import { InvalidArgumentError } from '../src/errors.js';
import type { WireValue } from '../src/codec/values.js';

async function exactSim(): Promise<SimulatedModule> {
  return SimulatedModule.start(SIM_FAMILIES.nodemcu.create({ heapCheck: 'exact' }));
}

/** A TCP echo server on 127.0.0.1. */
async function startEcho(): Promise<{ echo: net.Server; port: number }> {
  const echo = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
  await once(echo, 'listening');
  return { echo, port: (echo.address() as net.AddressInfo).port };
}

function peak(sim: SimulatedModule): number {
  const vm = sim.currentVm;
  assert.ok(vm, 'the module is running');
  return vm.heapPeak;
}

describe('NodeMCU agent peaks with the heap checked every 100 instructions (44000 bytes)', () => {
  it('a new session sweeps the two listening servers and the connection a crashed session left', async (t) => {
    const { echo, port } = await startEcho();
    const sim = await exactSim();
    try {
      const t1 = sim.connect();
      const rpc1 = await RpcClient.open(t1);
      for (let i = 0; i < 2; i++) {
        const [srv] = await rpc1.call('net.createServer', [1, 30]);
        await rpc1.call('tcpserver.listen', [srv as WireValue, 0]);
      }
      const [sock] = await rpc1.call('net.createConnection', [1, 0]);
      const connected = new Promise<void>((resolve) => echo.once('connection', () => resolve()));
      await rpc1.call('tcpsocket.connect', [sock as WireValue, port, '127.0.0.1']);
      await connected;
      await t1.close(); // the host crashed: no agent.release_all, no session close
      await rpc1.close();
      const rpc2 = await RpcClient.open(sim.connect());
      assert.equal(releasedAtOpen(rpc2), 3, 'hello released what the crashed session left');
      assert.deepEqual((await rpc2.call('agent.ping', [5])).slice(1), [5], 'the agent still answers');
      t.diagnostic(`highest heap seen: ${peak(sim)} of ${NODEMCU_FREE_HEAP} bytes`);
      assert.ok(peak(sim) <= NODEMCU_FREE_HEAP, `peak ${peak(sim)} bytes`);
      await rpc2.close();
    } finally {
      await sim.stop();
      echo.close();
    }
  });

  it('a page of capability names (the most one reply carries), then 32 KiB echoed through a module socket, byte-exact', async (t) => {
    const { echo, port } = await startEcho();
    const sim = await exactSim();
    try {
      const mod = new TetherModule(await RpcClient.open(sim.connect()), 'sim');
      // as many names as one reply carries (24: the whole list at once was the agent's highest
      // heap, 43.9 KB, and with a stream after it over the 44000 bytes)
      const caps = await mod.rpc.call('agent.caps', [1, 4096]);
      assert.equal(caps.length, 24, 'one page of names');
      t.diagnostic(`highest heap seen (agent.caps): ${peak(sim)} of ${NODEMCU_FREE_HEAP} bytes`);
      assert.ok(peak(sim) <= NODEMCU_FREE_HEAP, `peak ${peak(sim)} bytes`);
      // then a stream: the stack a many-value reply grew stays (Lua 5.1 shrinks it only in a
      // collection, and only when four times larger than its part in use: lgc.c checkstacksizes)
      const data = crypto.randomBytes(32 * 1024);
      const conn = createConnection(mod, port, '127.0.0.1');
      const got: Buffer[] = [];
      let n = 0;
      const all = new Promise<void>((resolve, reject) => {
        conn.on('data', (b: Buffer) => {
          got.push(b);
          n += b.length;
          if (n >= data.length) resolve();
        });
        conn.on('error', reject);
      });
      conn.write(data);
      await all;
      assert.ok(Buffer.concat(got).equals(data), 'byte-exact');
      conn.destroy();
      await once(conn, 'close');
      t.diagnostic(`highest heap seen (echo): ${peak(sim)} of ${NODEMCU_FREE_HEAP} bytes`);
      assert.ok(peak(sim) <= NODEMCU_FREE_HEAP, `peak ${peak(sim)} bytes`);
      await mod.close();
    } finally {
      await sim.stop();
      echo.close();
    }
  });

  it('a heapCheck other than sampled or exact is a typed INVALID_ARGUMENT', () => {
    assert.throws(() => SIM_FAMILIES.nodemcu.create({ heapCheck: 'always' as never }), InvalidArgumentError);
  });
});

/**
 * The NodeMCU agent in the Lua Flash Store (issue 8): on a firmware built with LFS, the agent's
 * files go into the LFS image (`tether agent --lfs`, then luac.cross -f and node.LFS.reload), the
 * agent starts with `node.LFS.get("tether")("lfs")` and loads each group from LFS
 * (firmware-shim/nodemcu/agent.lua HAL.part: node.LFS.get, else node.flashindex, else SPIFFS).
 * Function prototypes and constant strings in LFS live in flash: the heap holds the agent's data
 * only. The simulated ESP8266 with `lfs: true` models that (src/sim/lua-vm.ts markFlash).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { connect } from '../src/api/connect.js';
import { createConnection } from '../src/streams/index.js';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import { RpcClient } from '../src/rpc/client.js';
import { sleep } from './helpers/until.js';

/** A 127.0.0.1 echo server. */
async function echoServer(): Promise<{ port: number; close(): Promise<void> }> {
  const srv = net.createServer((c) => {
    c.on('error', () => {});
    c.pipe(c);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => new Promise((r) => srv.close(() => r())) };
}

/** Echo `size` random bytes through the module's stream; resolves with what came back. */
async function echo(mod: Awaited<ReturnType<typeof connect>>, port: number, size: number): Promise<{ sent: Buffer; got: Buffer }> {
  const sent = crypto.randomBytes(size);
  const s = createConnection(mod, { port, host: '127.0.0.1' });
  const parts: Buffer[] = [];
  let n = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`echo: ${n} of ${size} bytes back after 60 s`)), 60000);
      s.on('data', (d: Buffer) => {
        parts.push(d);
        n += d.length;
        if (n >= size) {
          clearTimeout(t);
          resolve();
        }
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
      s.write(sent);
    });
  } finally {
    s.destroy();
  }
  return { sent, got: Buffer.concat(parts) };
}

describe('the NodeMCU agent in LFS', () => {
  it('starts from LFS with no agent file on SPIFFS, loads its groups from LFS and echoes 16 KiB byte-exact within a 24 KB heap', { timeout: 120000 }, async () => {
    const srv = await echoServer();
    // 24000 bytes of Lua heap: the agent from SPIFFS does not even load in that (test/sim-heap.test.ts)
    const mod = await connect('sim:nodemcu', { baudRate: 921600, sim: { lfs: true, heapBytes: 24000 } as never }).catch(async (e) => {
      await srv.close();
      throw e;
    });
    try {
      const files = [...(mod.simulator!.family as ReturnType<typeof nodemcuFamily>).files.keys()];
      assert.deepEqual(files.filter((f) => f.startsWith('tether')), [], 'nothing of the agent on SPIFFS');
      const { sent, got } = await echo(mod, srv.port, 16 * 1024);
      assert.equal(got.length, sent.length);
      assert.ok(got.equals(sent), 'byte-exact');
      const stats = (await mod.rpc.call('agent.stats'))[0] as Map<unknown, unknown>;
      assert.equal(stats.get('lost'), 0, 'no message refused for want of heap');
    } finally {
      await mod.close();
      await srv.close();
    }
  });

  it('idle, the heap holds the agent\'s data only: under 16 KB in LFS, over 24 KB from SPIFFS', async () => {
    const idle = async (lfs: boolean) => {
      const sim = await SimulatedModule.start(nodemcuFamily({ lfs, enforceHeap: false }), { bootNoise: false });
      try {
        const rpc = await RpcClient.open(sim.connect(), { handshakeTimeoutMs: 5000 });
        await sleep(300); // the groups hello loaded are dropped at the next tick
        const used = sim.currentVm!.heapUsed();
        await rpc.close();
        return used;
      } finally {
        await sim.stop();
      }
    };
    const [inLfs, inRam] = [await idle(true), await idle(false)];
    assert.ok(inLfs < 16 * 1024, `in LFS ${inLfs} bytes`);
    assert.ok(inRam > 24 * 1024, `from SPIFFS ${inRam} bytes`);
  });

  it('an agent started from SPIFFS never takes a group from LFS (an image of another version may be there)', async () => {
    const sim = await SimulatedModule.start(nodemcuFamily({ lfs: { tether_net: 'error("the LFS copy of tether_net")' } }), { bootNoise: false });
    try {
      const rpc = await RpcClient.open(sim.connect(), { handshakeTimeoutMs: 5000 });
      try {
        const [h] = await rpc.call('net.createConnection', []);
        assert.ok(h !== null && typeof h === 'object', 'tether_net from SPIFFS made a socket handle');
      } finally {
        await rpc.close();
      }
    } finally {
      await sim.stop();
    }
  });

  it('node.LFS.get and node.flashindex give an LFS module\'s function, nil for others and without LFS; node.LFS.list names them', async () => {
    const sim = await SimulatedModule.start(nodemcuFamily({ boot: 'repl', lfs: { hello: 'return "hi from flash"' } }), { bootNoise: false });
    const plain = await SimulatedModule.start(nodemcuFamily({ boot: 'repl' }), { bootNoise: false });
    try {
      const vm = sim.currentVm!;
      assert.equal(vm.runString('local f = node.LFS.get("hello") assert(f() == "hi from flash") assert(node.flashindex("hello")() == "hi from flash") assert(node.LFS.get("nope") == nil) local l = node.LFS.list() assert(#l == 1 and l[1] == "hello")', '=test'), undefined);
      assert.equal(plain.currentVm!.runString('assert(node.LFS.get("tether") == nil) assert(node.flashindex("hello") == nil) assert(node.LFS.list() == nil)', '=test'), undefined);
    } finally {
      await sim.stop();
      await plain.stop();
    }
  });
});

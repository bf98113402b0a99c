/**
 * Clean module sessions (issue 9 item 3), on the simulated modules of all three families:
 * - a host session that creates sockets and vanishes (the transport dropped, no close) leaves
 *   nothing behind: the next session's hello says how many objects were released and the
 *   firmware's limit is available in full again (LuatOS 8 ctrls, Luat 10 socketcore slots,
 *   NodeMCU 2 listening servers);
 * - `TetherModule.close()` releases the session's objects itself;
 * - `resetSockets()` (`agent.release_all`) frees every socket and says how many;
 * - reboot is refused by default with a message naming TETHER_ALLOW_RESTART, and reboots
 *   (new boot epoch, new handshake) when the agent's settings enable it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedModule } from '../src/sim/module.js';
import { SIM_FAMILIES } from '../src/sim/families.js';
import { RpcClient } from '../src/rpc/client.js';
import { TetherModule } from '../src/api/connect.js';
import { rebootModule, releasedAtOpen, REBOOT_FUNCTIONS } from '../src/api/session.js';
import { Handle, type WireValue } from '../src/codec/values.js';
import { RemoteError } from '../src/errors.js';

import { sleep, UNTIL_TIMEOUT_MS } from './helpers/until.js';

/** How each family makes one module object, and the firmware's limit of them. */
interface Maker {
  family: string;
  /** How many the firmware allows at once. */
  limit: number;
  /** Make one; true when the firmware gave it, false when it refused (limit reached). */
  make(rpc: RpcClient): Promise<boolean>;
}

const MAKERS: Maker[] = [
  {
    // socket-lib.ts: maxSockets 8 ctrls (socket.create returns nil beyond)
    family: 'luatos',
    limit: 8,
    make: async (rpc) => (await rpc.call('socket.create', [null]))[0] instanceof Handle,
  },
  {
    // socketcore.ts MAX_SOCKETS 10 slots (sock_conn_ext returns -1 beyond); UDP to 127.0.0.1
    family: 'luat',
    limit: 10,
    make: async (rpc) => ((await rpc.call('socketcore.sock_conn_ext', [1, '127.0.0.1', 9]))[0] as number) >= 0,
  },
  {
    // net-lib.ts MAX_LISTENERS 2 (listen raises "cannot allocate PCB" beyond); port 0 = any free port
    family: 'nodemcu',
    limit: 2,
    make: async (rpc) => {
      const [srv] = await rpc.call('net.createServer', [1, 30]);
      try {
        await rpc.call('tcpserver.listen', [srv as WireValue, 0]);
        return true;
      } catch (e) {
        if (e instanceof RemoteError && /cannot allocate PCB/.test(e.remoteMessage)) {
          await rpc.call('agent.release', [srv as WireValue]); // the server that could not listen
          return false;
        }
        throw e;
      }
    },
  },
];

async function start(family: string, opts: Record<string, unknown> = {}): Promise<SimulatedModule> {
  return SimulatedModule.start(SIM_FAMILIES[family].create(opts as never));
}

/** Make objects until the firmware refuses (at most limit + 1 tries); returns how many it gave. */
async function fill(m: Maker, rpc: RpcClient): Promise<number> {
  let n = 0;
  for (let i = 0; i <= m.limit; i++) {
    if (!(await m.make(rpc))) break;
    n++;
  }
  return n;
}

/** fill(), retried for a while: Luat frees a slot only once its CLOSE_CNF came (asynchronous). */
async function fillAgain(m: Maker, rpc: RpcClient): Promise<number> {
  let total = 0;
  // a generous deadline (a busy machine delays the CLOSE_CNFs), not a fixed number of tries
  const end = Date.now() + UNTIL_TIMEOUT_MS;
  while (total < m.limit) {
    total += await fill(m, rpc);
    if (total < m.limit) {
      if (Date.now() > end) break;
      await sleep(25);
    }
  }
  return total;
}

for (const m of MAKERS) {
  describe(`clean sessions: ${m.family}`, () => {
    it('a crashed session (transport dropped, no close) leaves nothing: the next one gets the full limit again', async () => {
      const sim = await start(m.family);
      try {
        const t1 = sim.connect();
        const rpc1 = await RpcClient.open(t1);
        assert.equal(releasedAtOpen(rpc1), 0, 'a fresh boot has nothing to release');
        assert.equal(await fill(m, rpc1), m.limit, `the firmware gives ${m.limit}, then refuses`);
        await t1.close(); // the host crashed: no agent.release_all, no session close
        await rpc1.close();

        const rpc2 = await RpcClient.open(sim.connect());
        try {
          assert.equal(releasedAtOpen(rpc2), m.limit, 'hello says what the new session released');
          if (m.family === 'luatos') {
            // a handle of the crashed session is dead: BADHANDLE "was released", never another ctrl
            await assert.rejects(rpc2.call('socket.state', [new Handle(1)]), (e: unknown) => e instanceof RemoteError && e.remoteCode === 'BADHANDLE' && /handle 1 was released/.test(e.remoteMessage));
          }
          assert.equal(await fillAgain(m, rpc2), m.limit, 'the whole limit is free again');
          assert.equal(await m.make(rpc2), false, 'and the limit still holds');
        } finally {
          await rpc2.close();
        }
      } finally {
        await sim.stop();
      }
    });

    it('close() releases the session objects; resetSockets() frees every socket and says how many', async () => {
      const sim = await start(m.family);
      try {
        const mod1 = new TetherModule(await RpcClient.open(sim.connect()), 'sim');
        assert.equal(await fill(m, mod1.rpc), m.limit);
        await mod1.close();
        const mod2 = new TetherModule(await RpcClient.open(sim.connect()), 'sim');
        assert.equal(mod2.releasedAtOpen, 0, 'the clean close released everything itself');
        assert.equal(await fillAgain(m, mod2.rpc), m.limit);
        assert.equal(await mod2.resetSockets(), m.limit, 'reset-sockets released them all');
        assert.equal(await fillAgain(m, mod2.rpc), m.limit, 'usable again without a power cycle');
        assert.equal(await mod2.resetSockets(), m.limit);
        assert.equal(await mod2.resetSockets(), 0, 'nothing left');
        await mod2.close();
      } finally {
        await sim.stop();
      }
    });

    it('reboot is refused by default, naming TETHER_ALLOW_RESTART', async () => {
      const sim = await start(m.family);
      try {
        const rpc = await RpcClient.open(sim.connect());
        const epoch = rpc.currentEpoch;
        await assert.rejects(rebootModule(rpc, { timeoutMs: 3000 }), (e: unknown) => {
          assert.ok(e instanceof RemoteError, String(e));
          assert.match(e.remoteMessage, new RegExp(`${REBOOT_FUNCTIONS[m.family].replace('.', '\\.')} is off on this module: set TETHER_ALLOW_RESTART = true`));
          return true;
        });
        assert.equal(sim.boots, 1, 'the module did not reboot');
        assert.deepEqual((await rpc.call('agent.ping', [7])).slice(0, 2), [epoch, 7], 'the agent keeps running');
        await rpc.close();
      } finally {
        await sim.stop();
      }
    });

    it('reboot works when the agent settings enable it: new epoch, new handshake, objects gone', async () => {
      const sim = await start(m.family, { agentSettings: { TETHER_ALLOW_RESTART: true } });
      try {
        const rpc = await RpcClient.open(sim.connect());
        assert.equal(await fill(m, rpc), m.limit);
        const before = rpc.currentEpoch;
        const r = await rebootModule(rpc, { timeoutMs: 10000 });
        assert.equal(r.fn, REBOOT_FUNCTIONS[m.family]);
        assert.equal(r.previousEpoch, before);
        assert.notEqual(r.epoch, before);
        assert.equal(rpc.currentEpoch, r.epoch);
        assert.ok(r.ms >= 0);
        assert.equal(sim.boots, 2, 'the module booted once more');
        assert.equal(await fill(m, rpc), m.limit, 'a new boot has every object free');
        await rpc.close();
      } finally {
        await sim.stop();
      }
    });
  });
}

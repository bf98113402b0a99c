/**
 * The simulated UART is a serial line: every byte costs (1 start + data + parity + stop) bits at
 * the sender's baud, in both directions, in every family (src/sim/uart-wire.ts). Only LOWER bounds
 * are asserted (a byte can never arrive before its bits were on the line); no speed is asserted.
 * Also: the line follows the module's own `uart.setup`, a host at another rate reads garbage, and
 * NodeMCU's `uart.write` holds the Lua VM (timers wait) while the TX FIFO is full.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { SimulatedModule } from '../src/sim/module.js';
import { luatosFamily } from '../src/sim/luatos/family.js';
import { luatFamily } from '../src/sim/luat/family.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import { garble } from '../src/sim/uart-wire.js';
import { connect } from '../src/api/connect.js';
import { isTetherError } from '../src/errors.js';
import type { LuaOut } from '../src/sim/lua-vm.js';
import { execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { sleep, until } from './helpers/until.js';


const conv = (v: LuaOut): unknown => (v === undefined ? null : v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : v);

function board(sim: SimulatedModule) {
  const recs: unknown[][] = [];
  sim.currentVm!.registerGlobal('rec', (a) => void recs.push(Array.from({ length: a.count }, (_, i) => conv(a.value(i + 1)))));
  const lua = (code: string) => {
    const e = sim.currentVm!.runString(code, '=test');
    if (e !== undefined) throw new Error(e);
  };
  return { recs, lua };
}

/** Per family: how a script sets the host UART up at `baud` and forwards every received byte to `rec("rx", bytes)`. */
const FAMILIES = {
  luatos: {
    start: (baud?: number) => SimulatedModule.start(luatosFamily(), { bootNoise: false, agentSource: '-- no agent', baud }),
    setup: (baud: number) => `uart.setup(1, ${baud}, 8, 1, uart.None, uart.LSB, 4096)
      uart.on(1, "receive", function(id, len) while true do local s = uart.read(1, 1024) if #s == 0 then break end rec("rx", s) end end)`,
    write: (expr: string) => `uart.write(1, ${expr})`,
  },
  luat: {
    start: (baud?: number) => SimulatedModule.start(luatFamily(), { agentSource: 'PROJECT = "t" VERSION = "1.0.0" require "sys"\n', baud }),
    setup: (baud: number) => `uart.setup(1, ${baud}, 8, uart.PAR_NONE, uart.STOP_1)
      uart.on(1, "receive", function(id) while true do local s = uart.read(1, 1024) if #s == 0 then break end rec("rx", s) end end)`,
    write: (expr: string) => `uart.write(1, ${expr})`,
  },
  nodemcu: {
    start: (baud?: number) => SimulatedModule.start(nodemcuFamily({ boot: 'repl' }), { bootNoise: false, baud }),
    setup: (baud: number) => `uart.setup(0, ${baud}, 8, 0, 1, 0) uart.on("data", 1, function(d) rec("rx", d) end, 0)`,
    write: (expr: string) => `uart.write(0, ${expr})`,
  },
} as const;

const received = (recs: unknown[][]) => recs.filter((r) => r[0] === 'rx').map((r) => r[1]).join('');

for (const [name, f] of Object.entries(FAMILIES)) {
  describe(`${name}: the UART is paced at the baud`, () => {
    it('host -> module: 2000 bytes at 115200 8N1 take at least 2000 * 10 / 115200 s to reach Lua', async () => {
      const sim = await f.start();
      try {
        const { recs, lua } = board(sim);
        lua(f.setup(115200));
        const data = Buffer.alloc(2000);
        for (let i = 0; i < data.length; i++) data[i] = 0x41 + (i % 26);
        const t0 = performance.now();
        sim.wire.fromHost(data);
        await until(() => received(recs).length >= 2000, 'all 2000 bytes in Lua');
        const took = performance.now() - t0;
        assert.equal(received(recs), data.toString('latin1'), 'every byte, in order');
        assert.ok(took >= (2000 * 10 * 1000) / 115200, `took ${took.toFixed(1)} ms, the line needs ${((2000 * 10 * 1000) / 115200).toFixed(1)} ms`);
        assert.ok(recs.filter((r) => r[0] === 'rx').length > 1, 'the bytes arrive piece by piece as on a line, not in one lump');
      } finally {
        await sim.stop();
      }
    });

    it('module -> host: 2000 bytes written by Lua at 115200 reach the host no sooner than the line allows', async () => {
      const sim = await f.start();
      try {
        const { lua } = board(sim);
        lua(f.setup(115200));
        const host = sim.connect();
        const got: Buffer[] = [];
        host.onData((c) => void got.push(Buffer.from(c)));
        await sleep(20);
        got.length = 0; // the NodeMCU prompt
        const t0 = performance.now();
        lua(f.write('string.rep("0123456789", 200)'));
        await until(() => Buffer.concat(got).length >= 2000, 'the host received 2000 bytes');
        const took = performance.now() - t0;
        assert.equal(Buffer.concat(got).toString('latin1'), '0123456789'.repeat(200));
        assert.ok(took >= (2000 * 10 * 1000) / 115200, `took ${took.toFixed(1)} ms`);
        await host.close();
      } finally {
        await sim.stop();
      }
    });

    it("the line follows the module's own uart.setup: a host at another rate reads garbage both ways", async () => {
      const sim = await f.start(921600);
      try {
        const { recs, lua } = board(sim);
        const host = sim.connect();
        const got: Buffer[] = [];
        host.onData((c) => void got.push(Buffer.from(c)));
        // the module still at 115200 (its setup), the host at 921600
        lua(f.setup(115200));
        await sleep(20);
        got.length = 0; // the NodeMCU prompt
        lua(f.write('"hello"'));
        await until(() => Buffer.concat(got).length >= 5, 'five bytes');
        assert.deepEqual([...Buffer.concat(got)], [...Buffer.from('hello')].map(garble), 'garbled: the rates differ');
        assert.equal(sim.wire.moduleLine.baud, 115200);
        sim.wire.fromHost(Buffer.from('abc'));
        await until(() => received(recs).length >= 3, 'three bytes');
        assert.notEqual(received(recs), 'abc');
        // the agent's own switch to 921600: now both ends agree
        recs.length = 0;
        got.length = 0;
        lua(f.setup(921600));
        assert.equal(sim.wire.moduleLine.baud, 921600, 'followed uart.setup');
        lua(f.write('"hello"'));
        await until(() => Buffer.concat(got).length >= 5, 'five bytes');
        assert.equal(Buffer.concat(got).toString('latin1'), 'hello');
        sim.wire.fromHost(Buffer.from('abc'));
        await until(() => received(recs).length >= 3, 'three bytes');
        assert.equal(received(recs), 'abc');
        await host.close();
      } finally {
        await sim.stop();
      }
    });
  });
}

describe('LuatOS: uart.write returns at once; the "sent" event comes when the bytes are out on the line', () => {
  it('2000 bytes at 115200: the write returns, "sent" comes no sooner than 2000 * 10 / 115200 s later', async () => {
    const sim = await FAMILIES.luatos.start();
    try {
      const { recs, lua } = board(sim);
      let t0 = 0;
      sim.currentVm!.registerGlobal('mark', () => void (t0 = performance.now()));
      lua(`${FAMILIES.luatos.setup(115200)}
           uart.on(1, "sent", function(id) rec("sent", id) end)
           mark()
           rec("n", uart.write(1, string.rep("s", 2000)))`);
      assert.deepEqual(recs[0], ['n', 0], 'uart.write returned');
      await until(() => recs.length >= 2, 'the sent event');
      const took = performance.now() - t0;
      assert.deepEqual(recs[1], ['sent', 1]);
      assert.ok(took >= (2000 * 10 * 1000) / 115200 - 1, `"sent" after ${took.toFixed(1)} ms`);
    } finally {
      await sim.stop();
    }
  });
});

describe('a stall of the simulator is not charged to the module as a uart.write hold', () => {
  it('LuatOS: Node busy 250 ms after a 2000-byte write; a 500-byte write then finds the cache free on the module\'s timeline', async () => {
    const sim = await FAMILIES.luatos.start();
    try {
      const { lua } = board(sim);
      lua(`${FAMILIES.luatos.setup(115200)} uart.write(1, string.rep("a", 2000))`);
      // (2000 - 1024) bytes of line time: the first write holds the VM about 85 ms
      const first = sim.longestVmHoldMs;
      assert.ok(first > 60 && first < 110, `first hold ${first.toFixed(1)} ms`);
      // the simulator stalls (a busy host): the line's delivery falls 250 ms behind, while a real
      // UART would have sent the 2000 bytes (174 ms) meanwhile
      const until = performance.now() + 250;
      while (performance.now() < until);
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, 5));
      lua(`uart.write(1, string.rep("b", 500))`);
      // charged by the lagging delivery it would be held about 130 ms; on the module's own
      // timeline the cache is empty and 500 bytes fit
      assert.equal(sim.longestVmHoldMs, first, `a hold of ${sim.longestVmHoldMs.toFixed(1)} ms after the stall`);
    } finally {
      await sim.stop();
    }
  });
});

describe('NodeMCU: uart.write holds the Lua VM while the TX FIFO is full', () => {
  it('a 1-ms timer armed before a 3000-byte uart.write runs only after all but 126 bytes are on the line', async () => {
    const sim = await FAMILIES.nodemcu.start();
    try {
      const { recs, lua } = board(sim);
      const host = sim.connect();
      let t0 = 0;
      sim.currentVm!.registerGlobal('mark', () => void (t0 = performance.now()));
      lua(`uart.on("data", 0, function() end, 0)
           tmr.create():alarm(1, tmr.ALARM_SINGLE, function() rec("tmr") end)
           mark()
           uart.write(0, string.rep("z", 3000))`);
      await until(() => recs.length >= 1, 'the timer callback');
      const waited = performance.now() - t0;
      const lineMs = ((3000 - 126) * 10 * 1000) / 115200;
      assert.ok(waited >= lineMs - 1, `the timer ran after ${waited.toFixed(1)} ms; the write held the VM ${lineMs.toFixed(1)} ms`);
      await host.close();
    } finally {
      await sim.stop();
    }
  });

  it('without the write the same timer is not held', async () => {
    const sim = await FAMILIES.nodemcu.start();
    try {
      const { recs, lua } = board(sim);
      lua('tmr.create():alarm(1, tmr.ALARM_SINGLE, function() rec("tmr") end)');
      await until(() => recs.length >= 1, 'the timer callback');
      assert.equal(sim.wire.txFreeAt <= performance.now(), true, 'the TX line is idle');
    } finally {
      await sim.stop();
    }
  });
});

describe('the agents run the line at the configured baud', () => {
  for (const fam of ['luatos', 'luat', 'nodemcu']) {
    it(`${fam}: sim option baud 921600: the agent sets its UART up at 921600 and the session works`, async () => {
      // (a NodeMCU board with room for today's agent: the heap is test/sim-heap's subject, not this one's)
      const m = await connect(`sim:${fam}`, { sim: { baud: 921600, ...(fam === 'nodemcu' ? { heapBytes: 80000 } : {}) } });
      try {
        assert.equal(m.family, fam);
        assert.equal(m.simulator!.wire.hostLine.baud, 921600);
        assert.equal(m.simulator!.wire.moduleLine.baud, 921600, 'the agent called uart.setup with its TETHER_BAUD');
      } finally {
        await m.close();
      }
    });
  }

  it("the simulated UART tells the link its rate (Transport.lineBaud), and that it has none on the module's USB port", async () => {
    const m = await connect('sim:luatos', { sim: { baud: 460800 } });
    try {
      assert.equal(m.rpc.transport.lineBaud, 460800);
      await m.rpc.transport.setBaudRate!(230400);
      assert.equal(m.rpc.transport.lineBaud, 230400, 'the rate after setBaudRate');
      await m.rpc.transport.setBaudRate!(460800);
    } finally {
      await m.close();
    }
    // the agent on uart.VUART_0 (32): a USB CDC port, not paced, so no rate to pace by
    const u = await connect('sim:luatos', { sim: { agentSettings: { TETHER_UART: 32 } } });
    try {
      assert.equal(u.simulator!.wire.paced, false);
      assert.equal(u.rpc.transport.lineBaud, undefined);
      assert.equal((await u.rpc.call('agent.ping', [7]))[1], 7, 'a call over the USB port');
    } finally {
      await u.close();
    }
  });

  it('a bad baud is an InvalidArgumentError before anything starts', async () => {
    for (const b of [0, -1, 1.5, 5_000_000, '115200']) {
      await assert.rejects(connect('sim', { sim: { baud: b } }), (e) => isTetherError(e, 'INVALID_ARGUMENT'));
      await assert.rejects(SimulatedModule.start(luatosFamily(), { baud: b as number }), (e) => isTetherError(e, 'INVALID_ARGUMENT'));
    }
  });
});

describe('tether sim --baud N --heap BYTES --usb', () => {
  const BIN = join(repoRoot(), 'dist/src/cli/bin.js');
  /** `tether sim ARGS --no-pty --json` in a child process, its first line parsed; `stop()` sends SIGINT and waits. */
  async function startSim<T>(args: string[]): Promise<{ info: T; stop(): Promise<void> }> {
    const child = spawn(process.execPath, [BIN, 'sim', '--no-pty', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const stop = async () => {
      child.kill('SIGINT');
      if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
    };
    try {
      const line = await new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('tether sim printed nothing in 20 s')), 20000);
        createInterface({ input: child.stdout! }).once('line', (l) => {
          clearTimeout(t);
          resolve(l);
        });
      });
      return { info: JSON.parse(line) as T, stop };
    } catch (e) {
      await stop();
      throw e;
    }
  }
  /** `tether ARGS` run to its end: exit code and stderr. */
  const run = (args: string[]) =>
    new Promise<{ code: number | null; err: string }>((resolve) => {
      execFile(process.execPath, [BIN, ...args], { timeout: 20000 }, (e, _o, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, err }));
    });

  it('serves a module whose line and agent run at N, with the heap budget given; a session over its tcp:// URL works', async () => {
    const { info, stop } = await startSim<{ baud: number; ports: { tcp: string } }>(['--baud', '921600', '--heap', '300000']);
    try {
      assert.equal(info.baud, 921600);
      const m = await connect(info.ports.tcp);
      try {
        assert.equal(m.family, 'luatos');
        const [t] = await m.rpc.call('rtos.meminfo', ['lua']);
        assert.equal(t, 300000, 'rtos.meminfo("lua") reports the budget');
      } finally {
        await m.close();
      }
    } finally {
      await stop();
    }
  });

  it('--usb: the agent on the USB port (LuatOS uart.VUART_0): no baud in the JSON, a session over its tcp:// URL works; NodeMCU has none (exit 2)', async () => {
    const { info, stop } = await startSim<{ baud: number | null; usb: boolean; ports: { tcp: string } }>(['--usb']);
    try {
      assert.deepEqual([info.baud, info.usb], [null, true]);
      const m = await connect(info.ports.tcp);
      try {
        const payload = 'v'.repeat(3000);
        const r = await m.rpc.call('agent.ping', [payload]);
        assert.equal(Buffer.from(r[1] as Uint8Array).toString('latin1'), payload);
      } finally {
        await m.close();
      }
    } finally {
      await stop();
    }
    const r = await run(['sim', '--no-pty', '--usb', '--family', 'nodemcu']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--usb: the ESP8266 has no USB port of its own/);
  });

  it('--family nodemcu --lfs: the agent starts from LFS and runs in a 24000-byte heap, most of it left free; --lfs for another family exits 2', async () => {
    const { info, stop } = await startSim<{ lfs: boolean; ports: { tcp: string } }>(['--family', 'nodemcu', '--lfs', '--heap', '24000']);
    try {
      assert.equal(info.lfs, true);
      const m = await connect(info.ports.tcp);
      try {
        const [free] = await m.rpc.call('node.heap', []);
        // from SPIFFS the agent alone needs over 24000 bytes (test/nodemcu-lfs.test.ts)
        assert.ok(typeof free === 'number' && free > 24000 - 16 * 1024, `node.heap() ${free} of 24000`);
      } finally {
        await m.close();
      }
    } finally {
      await stop();
    }
    const r = await run(['sim', '--no-pty', '--lfs']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--lfs is for --family nodemcu/);
  });

  it('a heap below 4096 bytes or a baud the simulator cannot run is refused before anything starts', async () => {
    const h = await run(['sim', '--no-pty', '--heap', '100']);
    assert.equal(h.code, 2);
    assert.match(h.err, /--heap/);
    const b = await run(['sim', '--no-pty', '--baud', '5000000']);
    assert.notEqual(b.code, 0);
    assert.match(b.err, /baud must be an integer from 300 to 4000000/);
  });
});

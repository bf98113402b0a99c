/**
 * UART TX when the app writes faster than the line drains (issue #8). Only LOWER bounds on time
 * are asserted (a busy machine can only make a callback later).
 * - LuatOS (EC618): `uart.write` blocks in the driver (Uart_TxTaskSafe) until all but the
 *   1024-byte TX cache are on the line: a timer due meanwhile waits.
 * - Luat (8910): `uart.write` cuts a string over 65535 bytes to `len & 0xffff` (u16 length in
 *   the platform layer) and refuses a number outside 0..255 ("invalid number").
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { SimulatedModule } from '../src/sim/module.js';
import { luatosFamily } from '../src/sim/luatos/family.js';
import { UART_TX_CACHE } from '../src/sim/luatos/env.js';
import { luatFamily } from '../src/sim/luat/family.js';
import type { LuaOut } from '../src/sim/lua-vm.js';
import { until } from './helpers/until.js';

const conv = (v: LuaOut): unknown => (v === undefined ? null : v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : v);

function board(sim: SimulatedModule) {
  const recs: unknown[][] = [];
  sim.currentVm!.registerGlobal('rec', (a) => void recs.push(Array.from({ length: a.count }, (_, i) => conv(a.value(i + 1)))));
  const lua = (code: string) => sim.currentVm!.runString(code, '=test');
  return { recs, lua };
}

describe('LuatOS uart.write holds the Lua VM until all but the TX cache is on the line', () => {
  it('a 1-ms timer armed before a 6000-byte uart.write at 115200 runs no sooner than (6000 - 1024) bytes of line time', async () => {
    const sim = await SimulatedModule.start(luatosFamily(), { bootNoise: false, agentSource: '-- no agent' });
    const host = sim.connect();
    let got = 0;
    host.onData((c) => void (got += c.length));
    try {
      const { recs, lua } = board(sim);
      let t0 = 0;
      sim.currentVm!.registerGlobal('mark', () => void (t0 = performance.now()));
      assert.equal(
        lua(`uart.setup(1, 115200, 8, 1, uart.None, uart.LSB, 4096)
             sys.timerStart(function() rec("tmr") end, 1)
             mark()
             rec("n", uart.write(1, string.rep("w", 6000)))`),
        undefined,
      );
      assert.deepEqual(recs[0], ['n', 0], 'the write returns');
      await until(() => recs.length >= 2, 'the timer callback');
      const waited = performance.now() - t0;
      const lineMs = ((6000 - UART_TX_CACHE) * 10 * 1000) / 115200;
      assert.ok(waited >= lineMs - 1, `the timer ran after ${waited.toFixed(1)} ms; the write holds the VM ${lineMs.toFixed(1)} ms`);
      await until(() => got >= 6000, 'every byte reaches the host (nothing dropped)');
      assert.equal(got, 6000);
    } finally {
      await host.close();
      await sim.stop();
    }
  });
});

describe('Luat uart.write: u16 lengths, numbers 0..255', () => {
  it('a 70000-byte string sends and reports 70000 & 0xffff bytes; a number over 255 is "invalid number"', async () => {
    const sim = await SimulatedModule.start(luatFamily(), { agentSource: 'PROJECT = "t" VERSION = "1.0.0" require "sys"\n' });
    const host = sim.connect();
    let got = 0;
    host.onData((c) => void (got += c.length));
    try {
      const { recs, lua } = board(sim);
      assert.equal(lua(`uart.setup(1, 921600, 8, uart.PAR_NONE, uart.STOP_1) rec("n", uart.write(1, string.rep("x", 70000), 65))`), undefined);
      assert.deepEqual(recs[0], ['n', (70000 & 0xffff) + 1]);
      await until(() => got >= (70000 & 0xffff) + 1, 'the cut string and the byte reach the host');
      assert.equal(got, (70000 & 0xffff) + 1);
      const err = lua('uart.write(1, 256)');
      assert.match(String(err), /invalid number/);
    } finally {
      await host.close();
      await sim.stop();
    }
  });
});

describe('USB virtual ports have no baud (LuatOS uart.VUART_0, Luat uart.USB)', () => {
  // openLuat/LuatOS demo/usb_uart/EC618/main.lua: VUART_0 is set up at 115200, "the baud does not
  // matter, a purely virtual port". On a UART the same mismatch garbles every byte.
  for (const [family, usb] of [['luatos', 32], ['luat', 129]] as const) {
    it(`${family}: an agent on port ${usb} set up at 921600 answers a host at 9600; on UART1 it does not`, async () => {
      const { connect } = await import('../src/api/connect.js');
      const mod = await connect(`sim:${family}`, { baudRate: 9600, sim: { agentSettings: { TETHER_UART: usb, TETHER_BAUD: 921600 } } });
      try {
        assert.equal(mod.simulator!.wire.paced, false, 'a USB port is not paced');
        const payload = 'u'.repeat(3000);
        const r = await mod.rpc.call('agent.ping', [payload]);
        assert.equal(Buffer.from(r[1] as Uint8Array).toString('latin1'), payload, 'a 3000-byte argument comes back whole');
      } finally {
        await mod.close();
      }
      await assert.rejects(
        connect(`sim:${family}`, { baudRate: 9600, handshakeTimeoutMs: 1500, sim: { agentSettings: { TETHER_BAUD: 921600 } } }),
        (e: Error & { code?: string }) => e.code === 'HANDSHAKE',
      );
    });
  }
});

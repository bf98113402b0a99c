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
import { openFaultySim, type FaultySim } from './helpers/fault-sim.js';
import { echoSha256, openTcp, seededPayload } from './helpers/fault-echo.js';
import { startEchoServers } from '../src/diag/echo-servers.js';
import { openSocket } from '../src/streams/drivers/luatos-conn.js';
import { createServer, type AddressInfo } from 'node:net';
import { firstValueFrom, lastValueFrom, takeWhile } from 'rxjs';

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
      assert.ok(sim.longestVmHoldMs >= lineMs - 1, `longestVmHoldMs ${sim.longestVmHoldMs.toFixed(1)} ms`);
      await until(() => got >= 6000, 'every byte reaches the host (nothing dropped)');
      assert.equal(got, 6000);
    } finally {
      await host.close();
      await sim.stop();
    }
  });
});

/**
 * Read `payload` at 115200 from a local TCP server through a module socket of a simulated Air780E
 * (its `rx` replies are 4 KB); `prepare` runs once the simulator is up, `check` after the read,
 * both before it closes.
 */
async function readThroughModule(payload: Buffer, prepare: (s: FaultySim) => void, check: (s: FaultySim) => void): Promise<void> {
  const server = createServer((c) => {
    c.on('error', () => {});
    c.end(payload);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const s = await openFaultySim('luatos', { pace: { baud: 115200 }, rpc: { timeoutMs: 30000 } });
  try {
    prepare(s);
    const conn = await firstValueFrom(openSocket(s.mod.socket, '127.0.0.1', (server.address() as AddressInfo).port, { timeoutMs: 30000 }));
    let n = 0;
    await lastValueFrom(conn.data().pipe(takeWhile((b) => (n += b.length) < payload.length, true)));
    assert.equal(n, payload.length);
    await conn.close();
    check(s);
  } finally {
    await s.close();
    server.close();
  }
}

describe('the LuatOS agent does not let uart.write hold it (issue 7)', () => {
  it('its frames wait for room in the 1024-byte TX cache: 16 KB read from a module socket at 115200 hold the VM a few ms at most', async () => {
    await readThroughModule(Buffer.alloc(16384, 0x5a), () => {}, (s) => {
      // rx replies of 4 KB: one uart.write each would hold the agent (4096 - 1024) bytes of line
      // time, 267 ms, while host frames pile up unread in its RX buffer. Paced, the only excess
      // over the cache is an acknowledgement written at once (tens of bytes: a few ms).
      const oneReplyMs = ((4096 - UART_TX_CACHE) * 10 * 1000) / 115200;
      assert.ok(s.sim.longestVmHoldMs < 25, `uart.write held the agent ${s.sim.longestVmHoldMs.toFixed(1)} ms (one unpaced 4 KB reply: ${oneReplyMs.toFixed(0)} ms)`);
    });
  });
});

describe('the LuatOS agent keeps its TX cache short, so that acknowledgements are not stuck behind it (issue 7)', () => {
  it('each frame of a 16 KB read at 115200 goes when at most TXLEAD (10 ms) of bytes are left on the line, not a full 1024-byte cache (89 ms)', async () => {
    // every write of the agent: ms of its earlier bytes still ahead on the line (the module's own
    // timeline, which a busy machine does not stretch) and whether it is a sequenced frame
    const ahead: { ms: number; seq: boolean }[] = [];
    const watch = (s: FaultySim) => {
      const wire = s.sim.wire;
      const toHost = wire.toHost.bind(wire);
      wire.toHost = (d: Uint8Array) => {
        const kind = d.length > 1 && d[0] === 0x7e ? String.fromCharCode(d[1]) : '';
        ahead.push({ ms: wire.txIdealFreeAt - performance.now(), seq: kind !== '' && !'ASYB'.includes(kind) });
        toHost(d);
      };
    };
    await readThroughModule(Buffer.alloc(16384, 0x33), watch, () => {
      const frames = ahead.filter((a) => a.seq);
      assert.ok(frames.length >= 16, `only ${frames.length} sequenced frames written`);
      // the agent's clock (mcu.ticks) counts whole ms: its estimate may be up to 1 ms behind
      const worst = Math.max(...frames.map((a) => a.ms));
      assert.ok(worst <= 10 + 1.5, `a frame went with ${worst.toFixed(1)} ms of bytes ahead of it (TXLEAD 10 ms)`);
    });
  });
});

describe('the host never overruns the module UART buffer with acknowledgements (issue 7)', () => {
  it('a 64 KiB echo both ways through the simulated Air780E at 115200, host unpaced (no baud): no byte dropped at the module', async () => {
    // While the agent writes its replies it reads its RX buffer only on the RX idle timeout; the
    // host's window fills that buffer but for a 64-byte reserve, and an `A` every 10 ms or every
    // agent frame overran it (5 bytes dropped in each of two runs before acks were held back).
    const echo = await startEchoServers();
    const s = await openFaultySim('luatos', { rpc: { timeoutMs: 60000 } });
    try {
      const conn = await openTcp(s.mod, echo.tcp, 30000);
      const r = await echoSha256(conn, seededPayload(64 * 1024, 3), 120000);
      assert.equal(r.backSha256, r.sentSha256);
      await conn.close();
      assert.equal(s.sim.wire.stats.rxDropped, 0, `the module's UART dropped ${s.sim.wire.stats.rxDropped} bytes`);
      assert.ok(s.mod.rpc.stats.acksHeld > 0, 'no ack was held back: the case was not exercised');
    } finally {
      await s.close();
      await echo.close();
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

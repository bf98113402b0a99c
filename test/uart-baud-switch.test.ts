/**
 * A baud change on the simulated UART (src/sim/uart-wire.ts) applies to the bytes that are not
 * through yet, in line time: bytes the module wrote before its `uart.setup` and that were through
 * at the old rate arrive intact even when the simulator's pacing timer runs late (a busy host),
 * and bytes still on their way at the change go out at the new rate (a host still at the old rate
 * reads garbage), as a UART's TX FIFO does when its divisor changes. Before, the check was made
 * when the late timer delivered: `tether flash`'s switch to 460800 lost the prompt that had been
 * through 15 ms before the module's 20 ms timer switched (docs/nodemcu.md:15 under load).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { UartWire, garble, line8N1 } from '../src/sim/uart-wire.js';
import { createMemoryPair } from '../src/transport/memory.js';
import { until } from './helpers/until.js';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import { TX_FIFO_SPIN_AT } from '../src/sim/nodemcu/firmware.js';

function wireToHost(): { wire: UartWire; got: Buffer[] } {
  const wire = new UartWire();
  const [device, host] = createMemoryPair('uart');
  wire.attach(device);
  const got: Buffer[] = [];
  host.onData((c) => void got.push(Buffer.from(c)));
  return { wire, got };
}

/** Hold the event loop for `ms` (a busy host: no timer of the simulator runs meanwhile). */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
}

describe('simulated UART: a baud change and the bytes on the line', () => {
  it('bytes through before the change arrive intact although the pacing timer ran late', async () => {
    const { wire, got } = wireToHost();
    const text = Buffer.from('__tb(460800,115200) print("@T".."Z13")\n@TB\n@TZ13\n> '); // 55 bytes, 4.8 ms at 115200
    wire.toHost(text);
    busy(30); // the module's 20 ms timer fires late, and so would the line's own
    wire.moduleLine = line8N1(460800);
    await until(() => Buffer.concat(got).length >= text.length, 'every byte');
    assert.equal(Buffer.concat(got).toString('latin1'), text.toString('latin1'));
    assert.equal(wire.stats.garbled, 0);
  });

  it('bytes not through at the change go out at the new rate: a host at the old one reads garbage', async () => {
    const { wire, got } = wireToHost();
    const text = Buffer.alloc(2000, 0x55); // 174 ms at 115200
    wire.toHost(text);
    busy(20);
    wire.moduleLine = line8N1(460800);
    await until(() => Buffer.concat(got).length >= text.length, 'every byte');
    const all = Buffer.concat(got);
    const intact = all.indexOf(garble(0x55));
    assert.ok(intact > 0 && intact < 1000, `the bytes through by the change (about 230) are intact, then garbage: first garbled at ${intact}`);
    assert.ok(all.subarray(intact).every((b) => b === garble(0x55)), 'everything after the change is garbled');
    assert.equal(wire.stats.garbled, text.length - intact);
  });
});

describe("NodeMCU's uart.setup resets the TX FIFO", () => {
  // platform_uart_setup -> uart_setup -> uart_config sets the divisor and then resets both FIFOs
  // (nodemcu-firmware app/driver/uart.c:61, 69-71 at 0069f00). uart.write spins until all but
  // 126 bytes are in the FIFO (uart.c:123-134), so a uart.setup right after it loses those.
  async function esp() {
    const sim = await SimulatedModule.start(nodemcuFamily({ boot: 'repl' }), { bootNoise: false });
    const host = sim.connect();
    const got: Buffer[] = [];
    host.onData((c) => void got.push(Buffer.from(c)));
    // booted (start() resolves once the firmware ran its boot) and the boot's own output ("> ")
    // through: it may already have gone before connect() attached this host, as on a real UART
    // nobody listened to yet, so the test waits for the line, not for the prompt
    await until(() => sim.currentVm !== undefined && sim.wire.txInFlight === 0, 'the boot output through');
    const count = (ch: string) => Buffer.concat(got).toString('latin1').split(ch).length - 1;
    const lua = (code: string) => assert.equal(sim.currentVm!.runString(code, '=test'), undefined);
    // every byte the module wrote has reached this host: off the line, and out of the in-memory
    // transport, which hands a write over at the next setImmediate (the poll of until() can run
    // in the same timer phase as the line's last delivery)
    const drained = async () => {
      await until(() => sim.wire.txInFlight === 0, 'the line drained');
      await new Promise((r) => setImmediate(r));
    };
    return { sim, host, count, lua, drained };
  }

  it('right after a 1000-byte uart.write: what the FIFO held is lost (126 bytes and the slice in flight)', async () => {
    const { sim, host, count, lua, drained } = await esp();
    try {
      lua('uart.write(0, string.rep("x", 1000)) uart.setup(0, 115200, 8, 0, 1, 0)');
      await drained();
      const lost = 1000 - count('x');
      assert.equal(sim.wire.stats.txDropped, lost);
      assert.ok(lost >= TX_FIFO_SPIN_AT && lost <= TX_FIFO_SPIN_AT + 24, `lost ${lost} bytes: the FIFO's ${TX_FIFO_SPIN_AT} (and part of a 2 ms slice)`);
    } finally {
      await host.close();
      await sim.stop();
    }
  });

  it("20 ms later (tether flash's loader waits that long before it switches) nothing is lost", async () => {
    const { sim, host, count, lua, drained } = await esp();
    try {
      lua('uart.write(0, string.rep("y", 1000)) tmr.create():alarm(20, tmr.ALARM_SINGLE, function() uart.setup(0, 115200, 8, 0, 1, 0) print("@done") end)');
      await until(() => count('@done') === 1, 'the timer ran');
      await drained();
      assert.equal(count('y'), 1000);
      assert.equal(sim.wire.stats.txDropped, 0);
    } finally {
      await host.close();
      await sim.stop();
    }
  });
});

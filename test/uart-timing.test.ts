/**
 * When the simulated modules tell Lua that UART bytes arrived, and with what: the semantics of
 * each firmware's RX path (no timing is asserted, only what the callbacks get and how often).
 * - LuatOS (EC618): `uart.on(id, "receive", fn)` gets `fn(id, len)` once per burst on the RX idle
 *   timeout, `len` = the bytes buffered; a full buffer is reported at once with `len` = -1 (UART1).
 * - Luat (8910): MSG_UART_RXDATA (callback `(id, nil)`) only when the 2 KB ring goes from empty
 *   to non-empty.
 * - NodeMCU (ESP8266): a 256-byte ring that drops the oldest bytes, drained by a task.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedModule } from '../src/sim/module.js';
import { luatosFamily } from '../src/sim/luatos/family.js';
import { UART_RX_BUF_MAX, uartCharBits, uartIdleMs, uartRxBufferSize } from '../src/sim/luatos/env.js';
import { luatFamily } from '../src/sim/luat/family.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import type { LuaOut } from '../src/sim/lua-vm.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `pred` (every 5 ms, up to 3 s): the simulator's callbacks run on the event loop. */
async function until(pred: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 3000;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}`);
    await sleep(5);
  }
}

const conv = (v: LuaOut): unknown => (v === undefined ? null : v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : v);

/** A simulated module running `script` instead of an agent, with `rec(...)` recording into `recs`. */
async function board(sim: SimulatedModule) {
  const recs: unknown[][] = [];
  sim.currentVm!.registerGlobal('rec', (a) => void recs.push(Array.from({ length: a.count }, (_, i) => conv(a.value(i + 1)))));
  const lua = (code: string) => {
    const e = sim.currentVm!.runString(code, '=test');
    if (e !== undefined) throw new Error(e);
  };
  return { recs, lua };
}

/** Drain the LuatOS RX buffer from Lua; returns the bytes read. */
const LUATOS_DRAIN = `function drain(id)
  local t = {}
  while true do local s = uart.read(id, 1024) if #s == 0 then break end t[#t + 1] = s end
  return table.concat(t)
end`;

/**
 * Run `body` against a simulated LuatOS module with no agent whose UART `uart` (default 1) is set
 * up at `baud` 8N1 with an RX buffer of `bufsz` bytes and records each `receive` callback as
 * `['rx', id, len]`; the module is stopped afterwards.
 */
async function withLuatosReceiver(
  o: { uart?: 1 | 2; baud: number; bufsz: number },
  body: (b: { sim: SimulatedModule; recs: unknown[][]; lua: (code: string) => void }) => Promise<void>,
): Promise<void> {
  const id = o.uart ?? 1;
  const sim = await SimulatedModule.start(luatosFamily(), { bootNoise: false, ...(id === 2 ? { uartId: 2 } : {}), agentSource: '-- no agent' });
  try {
    const { recs, lua } = await board(sim);
    lua(`${LUATOS_DRAIN}
         uart.setup(${id}, ${o.baud}, 8, 1, uart.None, uart.LSB, ${o.bufsz})
         uart.on(${id}, "receive", function(id, len) rec("rx", id, len) end)`);
    await body({ sim, recs, lua });
  } finally {
    await sim.stop();
  }
}

describe('LuatOS (EC618) uart "receive" callback', () => {
  it('the idle timeout is 2 character times at the uart.setup line settings (no timing asserted)', () => {
    assert.equal(uartCharBits(), 10, '8N1: start + 8 data + 1 stop');
    assert.equal(uartCharBits(8, 1, 2), 11, 'a parity bit');
    assert.equal(uartCharBits(7, 2, 0), 10);
    assert.ok(Math.abs(uartIdleMs(115200) - 20000 / 115200) < 1e-9, '20 bit times at 115200: below 1 ms, so the next event-loop turn');
    assert.ok(Math.abs(uartIdleMs(9600) - 20000 / 9600) < 1e-9, '2.08 ms at 9600');
    assert.equal(uartIdleMs(0), uartIdleMs(115200), 'a baud below 1 falls back to the default');
  });

  it('UART1: once per burst with len = bytes buffered; a full buffer at once with -1; bytes beyond it are lost', async () => {
    await withLuatosReceiver({ baud: 115200, bufsz: 256 }, async ({ sim, recs, lua }) => {
      const host = sim.connect();
      // one burst in three chunks (back to back): one callback with everything
      for (const s of ['0123456789', 'abcdefghij', 'ABCDEFGHIJ']) await host.write(Buffer.from(s));
      await until(() => recs.length >= 1, 'the receive callback');
      await sleep(30);
      assert.deepEqual(recs, [['rx', 1, 30]], 'once per burst, len = bytes buffered');
      // a second burst while the first is still unread: len counts everything buffered
      sim.wire.fromHost(Buffer.from('xyz'));
      await until(() => recs.length >= 2, 'second callback');
      await sleep(30);
      assert.deepEqual(recs[1], ['rx', 1, 33]);
      lua('rec("read", drain(1))');
      assert.deepEqual(recs[2], ['read', '0123456789abcdefghijABCDEFGHIJxyz']);
      // exactly full (256 of 256): UART_CB_RX_BUFFER_FULL, len -1
      sim.wire.fromHost(Buffer.alloc(256, 0x41));
      await until(() => recs.length >= 4, 'full callback');
      await sleep(30);
      assert.deepEqual(recs[3], ['rx', 1, -1], 'a full buffer reports -1');
      assert.equal(sim.wire.stats.rxDropped, 0, 'nothing lost yet');
      lua('rec("n", #drain(1))');
      assert.deepEqual(recs[4], ['n', 256]);
      // overflow: 300 bytes into 256, one -1 callback, the newest 44 bytes dropped
      const big = Buffer.alloc(300, 0x42);
      big.write('FIRST', 0);
      sim.wire.fromHost(big.subarray(0, 200));
      sim.wire.fromHost(big.subarray(200));
      await until(() => recs.length >= 6, 'overflow callback');
      await sleep(30);
      assert.deepEqual(recs[5], ['rx', 1, -1], 'one callback for the overflowing burst, len -1');
      assert.equal(sim.wire.stats.rxDropped, 44);
      lua('local s = drain(1) rec("over", #s, s:sub(1, 5))');
      assert.deepEqual(recs[6], ['over', 256, 'FIRST'], 'the buffer keeps the oldest bytes; what did not fit is gone');
      // after draining, the next burst is an ordinary idle-timeout report again
      sim.wire.fromHost(Buffer.from('ok'));
      await until(() => recs.length >= 8, 'callback after overflow');
      assert.deepEqual(recs[7], ['rx', 1, 2]);
      assert.equal(recs.length, 8, 'no stray callbacks');
      await host.close();
    });
  });

  it('at 9600 baud (idle timeout above 1 ms) still once per burst with the buffered length', async () => {
    await withLuatosReceiver({ baud: 9600, bufsz: 1024 }, async ({ sim, recs }) => {
      sim.wire.fromHost(Buffer.from('hello '));
      sim.wire.fromHost(Buffer.from('world'));
      await until(() => recs.length >= 1, 'the receive callback');
      await sleep(30);
      assert.deepEqual(recs, [['rx', 1, 11]]);
    });
  });

  it('the idle timeout counts line time: a burst after a quiet gap gets its own report even when the host wrote it before the one before was delivered', async () => {
    // On the module the RX FIFO timeout fires once the line has been quiet for the timeout after
    // the last byte of a burst (UART_CB_RX_TIMEOUT); bytes the host sends later do not hold it back.
    // The simulator delivers the line's bytes on timers: when it runs late, the next burst can be
    // written (with a gap on the line) before the last bytes of this one reach the RX buffer.
    await withLuatosReceiver({ baud: 115200, bufsz: 1024 }, async ({ sim, recs, lua }) => {
      sim.wire.fromHost(Buffer.alloc(200, 0x61)); // 17.4 ms of line at 115200
      // the simulator stalls past the end of that burst (nothing of it is delivered yet) ...
      const stall = performance.now() + 30;
      while (performance.now() < stall) {
        /* busy: the event loop does not run */
      }
      assert.equal(sim.wire.rxInFlight, 200, 'none of the first burst reached the RX buffer yet');
      // ... and the host writes the next burst: it starts on the line about 12 ms after the first ended
      sim.wire.fromHost(Buffer.alloc(100, 0x62));
      await until(() => recs.length >= 2, 'two receive callbacks');
      await sleep(30);
      assert.deepEqual(recs, [
        ['rx', 1, 200],
        ['rx', 1, 300],
      ], 'one report per burst: the first when its line went quiet, the second with everything buffered');
      // back to back on the line (no gap): one burst, one report
      lua('drain(1)');
      sim.wire.fromHost(Buffer.alloc(200, 0x63));
      sim.wire.fromHost(Buffer.alloc(100, 0x64));
      await until(() => recs.length >= 3, 'the third receive callback');
      await sleep(30);
      assert.deepEqual(recs.slice(2), [['rx', 1, 300]]);
    });
  });

  it('UART2: a full buffer has no -1 report (only UART1 has it); the idle timeout reports its length', async () => {
    await withLuatosReceiver({ uart: 2, baud: 115200, bufsz: 128 }, async ({ sim, recs }) => {
      sim.wire.fromHost(Buffer.alloc(200, 0x43));
      await until(() => recs.length >= 1, 'the receive callback');
      await sleep(30);
      assert.deepEqual(recs, [['rx', 2, 128]]);
      assert.equal(sim.wire.stats.rxDropped, 72);
    });
  });

  it('uart.setup gets at most 16384 bytes of RX buffer, and 1024 for a bufsz of 0 (luat_uart_ec618.c luat_uart_setup)', async () => {
    // the stricter of the two drivers: the EC7xx's clamps bufsz to 2048..16384 (luat_uart_ec7xx.c
    // at 6cd6dfa8), the EC618's at 1a4c51c2 passes it on as given with 0 meaning 1024
    for (const [bufsz, room] of [
      [32768, 16384],
      [0, 1024],
      [600, 600],
    ] as const) {
      await withLuatosReceiver({ uart: 2, baud: 115200, bufsz }, async ({ sim, recs }) => {
        sim.wire.paced = false; // one burst, faster than the line: only the buffer's size matters
        sim.wire.fromHost(Buffer.alloc(room + 1000, 0x44));
        await until(() => recs.length >= 1, 'the receive callback');
        await sleep(30);
        assert.deepEqual(recs, [['rx', 2, room]], `bufsz ${bufsz}`);
        assert.equal(sim.wire.stats.rxDropped, 1000, `bufsz ${bufsz}: the bytes beyond ${room} are lost`);
      });
    }
    assert.equal(uartRxBufferSize(-5), 1024);
    assert.equal(uartRxBufferSize(16385), UART_RX_BUF_MAX);
  });
});

describe('Luat (8910) MSG_UART_RXDATA', () => {
  it('only on the empty -> non-empty transition of the 2 KB ring, with no length', async () => {
    const sim = await SimulatedModule.start(luatFamily(), { agentSource: 'PROJECT = "t" VERSION = "1.0.0" require "sys"\n' });
    try {
      const { recs, lua } = await board(sim);
      lua(`uart.setup(1, 115200, 8, uart.PAR_NONE, uart.STOP_1)
           uart.on(1, "receive", function(id, len) rec("rx", id, len) end)`);
      const host = sim.connect();
      for (const s of ['abc', 'def', 'ghi']) await host.write(Buffer.from(s));
      await until(() => recs.length >= 1, 'the RX message');
      await sleep(30);
      assert.deepEqual(recs, [['rx', 1, null]], 'one message for the burst, no length on the 8910');
      sim.wire.fromHost(Buffer.from('jkl'));
      await sleep(30);
      assert.equal(recs.length, 1, 'the ring was not drained: no new message');
      lua('rec("read", uart.read(1, 100), uart.read(1, 100))');
      assert.deepEqual(recs[1], ['read', 'abcdefghijkl', '']);
      sim.wire.fromHost(Buffer.from('m'));
      await until(() => recs.length >= 3, 'the next RX message');
      assert.deepEqual(recs[2], ['rx', 1, null], 'empty -> non-empty again');
      await host.close();
    } finally {
      await sim.stop();
    }
  });
});

describe('NodeMCU (ESP8266) UART RX', () => {
  it('a 256-byte ring drained by a task: uart.on("data", n) gets n bytes per callback, in order; the oldest bytes are dropped when it overflows', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam, { bootNoise: false });
    try {
      const { recs, lua } = await board(sim);
      lua('uart.on("data", 4, function(d) rec("d", d) end, 0)');
      sim.wire.fromHost(Buffer.from('aaaabbbb'));
      sim.wire.fromHost(Buffer.from('cccc'));
      await until(() => recs.length >= 3, 'three callbacks');
      await sleep(30);
      assert.deepEqual(recs, [['d', 'aaaa'], ['d', 'bbbb'], ['d', 'cccc']], 'one delivery per task, in order');
      assert.equal(fam.esp!.ringFill, 0);
      recs.length = 0;
      // 300 bytes in one burst while the VM is held by a 1000-byte uart.write (~76 ms of line time
      // at 115200 less the 126-byte FIFO): the drain task cannot run, the ring keeps the newest 256
      const burst = Buffer.alloc(300);
      for (let i = 0; i < 75; i++) burst.write(String(i % 10).repeat(4), i * 4);
      lua('uart.write(0, string.rep("x", 1000))');
      sim.wire.fromHost(burst);
      await until(() => recs.length >= 64, 'the ring drained');
      await sleep(30);
      assert.equal(fam.esp!.rxDropped, 44);
      assert.equal(recs.map((r) => r[1]).join(''), burst.subarray(44).toString('latin1'), 'the newest 256 bytes, the oldest 44 gone');
    } finally {
      await sim.stop();
    }
  });
});

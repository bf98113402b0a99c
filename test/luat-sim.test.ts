/**
 * The emulated Air724UG libraries on their own (src/sim/luat/*), driven from Lua scripts
 * on the simulated module: the UART ring (2 KB, overwrites the oldest bytes, RX message
 * only on empty -> non-empty, no length), rtos.on / the LuaTask-style sys, crypto, json,
 * the Lua 5.1 and integer-only rules, the flash, the soft watchdog and fatal errors.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedModule } from '../src/sim/module.js';
import { luatFamily, type LuatFamily, type LuatSimOptions } from '../src/sim/luat/family.js';
import { UartRing } from '../src/sim/luat/env.js';
import type { LuaOut } from '../src/sim/lua-vm.js';
import type { Transport } from '../src/transport/transport.js';

import { sleep, until as untilH } from './helpers/until.js';
/** The module's reboot timer is unref'd: keep the event loop alive while waiting for a reboot. */
async function alive<T>(p: Promise<T>, ms = 5000): Promise<T> {
  const t = setTimeout(() => {}, ms);
  try {
    return await p;
  } finally {
    clearTimeout(t);
  }
}
type Rec = Array<Array<string | number | boolean | null>>;

const conv = (v: LuaOut): string | number | boolean | null => (v === undefined ? null : v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : typeof v === 'object' ? 'table' : (v as number | boolean));

/** A module running a tiny script instead of the agent, with `__rec(...)` recording into `rec`. */
async function module(script = '', opts: LuatSimOptions = {}) {
  const fam: LuatFamily = luatFamily(opts);
  const logs: string[] = [];
  const sim = await SimulatedModule.start(fam, { agentSource: 'PROJECT = "t" VERSION = "1.0.0" require "sys"\n' + script, log: (l) => logs.push(l), rebootDelayMs: 20 });
  const rec: Rec = [];
  const install = () => sim.currentVm!.registerGlobal('__rec', (a) => void rec.push(Array.from({ length: a.count }, (_, i) => conv(a.value(i + 1)))));
  install();
  const lua = (code: string) => {
    const e = sim.currentVm!.runString(code, '=test');
    if (e !== undefined) throw new Error(e);
  };
  const until = (pred: () => boolean, what: string) => untilH(pred, what, { detail: () => `rec=${JSON.stringify(rec)}` });
  return { fam, sim, rec, lua, until, logs, install };
}

describe('emulated Luat core libraries', () => {
  it('UartRing: 2048 bytes, overflow overwrites the OLDEST bytes; *l may return a partial line', () => {
    const r = new UartRing();
    assert.equal(r.push(Buffer.from('a')), true, 'empty -> non-empty');
    assert.equal(r.push(Buffer.from('b')), false);
    r.take(2);
    const big = Buffer.alloc(3000);
    for (let i = 0; i < big.length; i++) big[i] = i & 255;
    r.push(big);
    assert.equal(r.length, 2048);
    assert.equal(r.overwritten, 952);
    assert.ok(r.take(2048).equals(big.subarray(952)), 'the newest 2048 bytes survive');
    r.push(Buffer.from('line one\nline t'));
    assert.equal(r.takeLine().toString(), 'line one\n');
    assert.equal(r.takeLine().toString(), 'line t', 'partial line');
    assert.equal(r.takeLine().length, 0);
  });

  it('uart: the receive callback gets (id, nil) and fires only when the ring goes from empty to non-empty; read until ""', async () => {
    const m = await module();
    try {
      m.lua(`uart.setup(1, 115200, 8, uart.PAR_NONE, uart.STOP_1)
             uart.on(1, "receive", function(id, len) __rec("rx", id, len) end)`);
      const host: Transport = m.sim.connect();
      await host.write(Buffer.from('hello\nwor'));
      await m.until(() => m.rec.length === 1, 'first RX event');
      assert.deepEqual(m.rec[0], ['rx', 1, null], 'no length on the 8910');
      await host.write(Buffer.from('ld\n'));
      await m.until(() => m.fam.current!.env.ring.length === 12, 'all 12 bytes in the ring');
      await sleep(50); // a window for a wrong second event
      assert.equal(m.rec.length, 1, 'ring not drained: no new event');
      m.lua('__rec("read", uart.read(1, "*l"), uart.read(1, "*l"), uart.read(1, 100))');
      assert.deepEqual(m.rec[1], ['read', 'hello\n', 'world\n', '']);
      await host.write(Buffer.from('again'));
      await m.until(() => m.rec.length === 3, 'event after draining');
      assert.deepEqual(m.rec[2], ['rx', 1, null]);
      // overflow: 3000 bytes into 2048 overwrite the oldest
      m.lua('uart.read(1, 4096)');
      const big = Buffer.alloc(3000, 0x41);
      big.write('OLDEST', 0);
      big.write('NEWEST', 2994);
      await host.write(big);
      // the UART is paced: 3000 bytes take 260 ms at 115200
      const ring = m.fam.current!.env.ring;
      await m.until(() => m.sim.wire.rxInFlight === 0 && ring.length + ring.overwritten === 3000, 'all 3000 bytes through the paced line into the ring');
      m.lua('local s = uart.read(1, 4096) __rec("big", #s, s:sub(-6), (s:find("OLDEST", 1, true)) ~= nil)');
      assert.deepEqual(m.rec[m.rec.length - 1], ['big', 2048, 'NEWEST', false]);
      assert.equal(m.fam.current!.env.ring.overwritten, 952);
      // uart.setup raises on a baud rate the 8910 does not have; uart.write counts bytes, numbers are single bytes
      assert.throws(() => m.lua('uart.setup(2, 12345, 8, uart.PAR_NONE, uart.STOP_1)'), /baud 12345/);
      m.lua('__rec("w", uart.write(1, "ab", 10))');
      assert.deepEqual(m.rec[m.rec.length - 1], ['w', 3]);
      await host.close();
    } finally {
      await m.sim.stop();
    }
  });

  it('rtos.on keeps one handler per id; timers and the rtos.MSG_* tables', async () => {
    const m = await module();
    try {
      await m.until(() => m.fam.current!.radio.ready(), 'data link up');
      m.lua(`__rec(rtos.MSG_TIMER, rtos.MSG_UART_RXDATA, rtos.MSG_SOCK_RECV_IND, rtos.MSG_SOCK_SEND_CNF, rtos.MSG_SOCK_CLOSE_CNF,
                    rtos.MSG_SOCK_CONN_CNF, rtos.MSG_SOCK_SEND_IND, rtos.MSG_SOCK_CLOSE_IND, rtos.MSG_PDP_ACT_CNF, rtos.MSG_PDP_DEACT_IND, rtos.WAIT_MSG_TIMEOUT)
             rtos.on(rtos.MSG_SOCK_CONN_CNF, function(msg) __rec("first", msg.socket_index) end)
             rtos.on(rtos.MSG_SOCK_CONN_CNF, function(msg) __rec("second", msg.id, msg.socket_index, msg.result) end)
             __rec("idx", socketcore.sock_conn(1, "127.0.0.1", 9))`);
      assert.deepEqual(m.rec[0], [5, 6, 31, 32, 33, 34, 35, 36, 28, 30, 4]);
      await m.until(() => m.rec.length === 3, 'CONN_CNF');
      assert.deepEqual(m.rec.slice(1), [['idx', 0], ['second', 34, 0, 0]], 'the second registration replaced the first; UDP confirms at once');
      m.lua(`__rec("timer", rtos.timer_start(7, 20)) rtos.on(rtos.MSG_TIMER, function() end)`);
      assert.deepEqual(m.rec[3], ['timer', 1]);
    } finally {
      await m.sim.stop();
    }
  });

  it('sys: taskInit/wait/waitUntil/waitUntilExt, publish/subscribe, timerStart/LoopStart/Stop/IsActive', async () => {
    const m = await module();
    try {
      m.lua(`
        sys.taskInit(function(a, b)
          __rec("task", a, b)
          __rec("wait", sys.wait(10))
          __rec("untilOk", sys.waitUntil("TOPIC", 1000))
          __rec("untilTimeout", sys.waitUntil("NEVER", 20))
          __rec("ext", sys.waitUntilExt("TOPIC2", 1000))
        end, "x", 2)
        sys.subscribe("TOPIC", function(...) __rec("sub", ...) end)
        sys.subscribe(42, function() end) -- not a string: ignored with a warning
        sys.timerStart(function() sys.publish("TOPIC", 1, "two") end, 30)
        sys.timerStart(function() sys.publish("TOPIC2", "y") end, 120)
        local f = function(tag) __rec("t", tag) end
        local id1 = sys.timerStart(f, 50, "a")
        local id2 = sys.timerStart(f, 60, "a") -- same fn and args: the first is stopped
        __rec("ids", id1 ~= id2, sys.timerIsActive(id1), sys.timerIsActive(id2), sys.timerIsActive(f, "a"))
        local n = 0
        LOOP = sys.timerLoopStart(function() n = n + 1 __rec("loop", n) if n == 3 then sys.timerStop(LOOP) end end, 10)
      `);
      assert.deepEqual(m.rec.slice(0, 2), [['task', 'x', 2], ['ids', true, false, true, true]]);
      const by = (k: string) => m.rec.filter((r) => r[0] === k);
      await m.until(() => by('ext').length > 0 && by('loop').length >= 3 && by('t').length > 0, 'task done, 3 loops, the timer');
      await sleep(100); // a window for wrong extra timer or loop calls
      assert.deepEqual(by('wait'), [['wait']], 'sys.wait returns nothing on timeout');
      assert.deepEqual(by('sub'), [['sub', 1, 'two']]);
      assert.deepEqual(by('untilOk'), [['untilOk', true, 1, 'two']]);
      assert.deepEqual(by('untilTimeout'), [['untilTimeout', false]]);
      assert.deepEqual(by('ext'), [['ext', 'TOPIC2', 'y']]);
      assert.deepEqual(by('t'), [['t', 'a']], 'one timer fired');
      assert.deepEqual(by('loop'), [['loop', 1], ['loop', 2], ['loop', 3]]);
      assert.ok(m.logs.some((l) => /sys.subscribe invalid parameter/.test(l)));
    } finally {
      await m.sim.stop();
    }
  });

  it('sys.init asserts PROJECT/VERSION; a task error is only logged; an error in an rtos handler reboots (no pcall on the 8910)', async () => {
    const m = await module();
    try {
      assert.throws(() => m.lua('PROJECT = nil sys.init(0, 0)'), /Undefine PROJECT or VERSION/);
      m.lua('PROJECT = "t" sys.taskInit(function() error("task boom") end)');
      await m.until(() => m.logs.some((l) => /task boom/.test(l)), 'the task error in the log');
      assert.equal(m.sim.boots, 1);
      const rebooted = m.sim.nextBoot();
      m.lua('rtos.on(rtos.MSG_SOCK_CONN_CNF, function() error("handler boom") end) socketcore.sock_conn(1, "127.0.0.1", 9)');
      await alive(rebooted);
      assert.equal(m.sim.boots, 2);
      assert.match(m.sim.fatalErrors[0], /handler boom/);
    } finally {
      await m.sim.stop();
    }
  });

  it('the 60 s soft watchdog: opened when sys loads and fed by a sys timer; starving it reboots the module', async () => {
    const m = await module();
    try {
      const rebooted = m.sim.nextBoot();
      // a short watchdog that nobody feeds
      m.lua('sys.timerStopAll(rtos.eatSoftDog) rtos.openSoftDog(60)');
      await alive(rebooted);
      assert.match(m.sim.fatalErrors[0], /soft watchdog/);
    } finally {
      await m.sim.stop();
    }
  });

  it('crypto (length arguments required), json (decode never throws), print to trace, flash survives a reboot', async () => {
    const m = await module();
    try {
      m.lua(`__rec(crypto.base64_encode("hello", 5), crypto.base64_decode("aGVsbG8=", 8), crypto.base64_encode("hello", 2))
             __rec(crypto.crc16("MODBUS", "123456789"), crypto.crc16("CCITT-FALSE", "123456789"), crypto.crc16("XMODEM", "123456789"),
                   crypto.crc16("X25", "123456789"), crypto.crc16("IBM", "123456789"), crypto.crc16("MAXIM", "123456789"),
                   crypto.crc16("USB", "123456789"), crypto.crc16("CCITT", "123456789"), crypto.crc16("DNP", "123456789"))
             __rec(crypto.md5("abc", 3), crypto.crc32("123456789", 9))
             local t, ok = json.decode('{"a":[1,2]}')
             local n, ok2, err = json.decode('{bad')
             __rec(t.a[2], ok, n, ok2, type(err), json.encode({1, 2, 3}))
             __rec(string.toHex("AB"))
             print("to the trace port")
             local f = io.open("/keep.txt", "w") f:write("kept") f:close()`);
      assert.deepEqual(m.rec[0], ['aGVsbG8=', 'hello', 'aGU=']);
      assert.deepEqual(m.rec[1], [0x4b37, 0x29b1, 0x31c3, 0x906e, 0xbb3d, 0x44c2, 0xb4c8, 0x2189, 0xea82]);
      assert.deepEqual(m.rec[2], ['900150983CD24FB0D6963F7D28E17F72', 0xcbf43926 | 0]);
      assert.deepEqual(m.rec[3], [2, true, null, false, 'string', '[1,2,3]']);
      assert.deepEqual(m.rec[4], ['4142', 2], 'utils string.toHex returns (string, count)');
      assert.throws(() => m.lua('crypto.base64_encode("hello")'), /bad argument #2/);
      assert.ok(m.logs.includes('to the trace port'));
      await m.sim.restart();
      m.install();
      m.lua('__rec(io.readFile("/keep.txt"), io.exists("/nope"))');
      assert.deepEqual(m.rec[5], ['kept', false]);
    } finally {
      await m.sim.stop();
    }
  });

  it('Lua 5.1 rules: _VERSION, unpack/loadstring present, 5.2+ functions absent', async () => {
    const m = await module();
    try {
      m.lua(`__rec(_VERSION, type(unpack), type(loadstring), type(table.unpack), type(table.pack), type(math.type), type(utf8),
                    type(string.pack), type(table.getn), type(math.pow), pcall(load, "return 1"))`);
      assert.deepEqual(m.rec[0].slice(0, 11), ['Lua 5.1', 'function', 'function', 'nil', 'nil', 'nil', 'nil', 'nil', 'function', 'function', false]);
    } finally {
      await m.sim.stop();
    }
  });

  it('integer-only core: no math, no float conversions in string.format, integral tonumber and collectgarbage', async () => {
    const m = await module('', { integerOnly: true });
    try {
      m.lua(`__rec(type(math), pcall(string.format, "%5.2f", 1), string.format("%d %04X %s", 7, 255, "x"), tonumber("1.5"), tonumber("42"),
                    collectgarbage("count") % 1, rtos.get_version())`);
      const r = m.rec[0];
      assert.equal(r[0], 'nil');
      assert.equal(r[1], false);
      assert.equal(r[2], '7 00FF x', 'integer conversions still work (a mid-list pcall gives one value)');
      assert.deepEqual(r.slice(3), [null, 42, 0, 'Luat_V0026_RDA8910-sim']);
    } finally {
      await m.sim.stop();
    }
  });

  it('trace redirected to the RPC UART by log.openTrace lands on the wire (the agent refuses that; see luat-agent tests)', async () => {
    const m = await module();
    try {
      const got: Buffer[] = [];
      const host = m.sim.connect();
      host.onData((d) => got.push(Buffer.from(d)));
      m.lua('uart.setup(1, 115200, 8, uart.PAR_NONE, uart.STOP_1) log.openTrace(true, 1, 115200) print("noise")');
      await m.until(() => /noise/.test(Buffer.concat(got).toString()), 'the trace line on the paced UART');
      assert.match(Buffer.concat(got).toString(), /noise/);
      assert.equal(m.fam.current!.env.traceUart(), 1);
      await host.close();
    } finally {
      await m.sim.stop();
    }
  });

  it('the agent refuses to point trace at its RPC UART', async () => {
    const fam = luatFamily();
    const sim = await SimulatedModule.start(fam);
    try {
      const e = sim.currentVm!.runString('log.openTrace(true, 1, 115200) rtos.set_trace(1, 1) print("still off the RPC UART")', '=user');
      assert.equal(e, undefined, e);
      assert.equal(fam.current!.env.traceUart(), undefined);
      sim.currentVm!.runString('log.openTrace(true, 2, 115200)', '=user');
      assert.equal(fam.current!.env.traceUart(), 2, 'another UART is allowed');
    } finally {
      await sim.stop();
    }
  });
});

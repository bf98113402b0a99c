/**
 * NodeMCU never drops `receive` data (issue #10): a TCP server this test starts on 127.0.0.1 pushes
 * 1 MiB as fast as it can and closes; through a simulated NodeMCU (its UART at 921600 baud, host side and agent)
 * the host's stream (src/streams createConnection) gets every byte, in order, then 'end'.
 * The agent holds the socket (`sock:hold()`) while its backlog for the host is above its high-water
 * mark and unholds it once drained; the simulated lwIP closes the TCP window of a held pcb
 * (nodemcu-firmware app/modules/net.c net_tcp_recv_cb / net_unhold), so the server's writes stall.
 * Also: the agent's counter of dropped messages (agent.stats lost) stays 0 and the agent held the
 * socket at least once (its `held` count), so the flow control really ran. And with a backlog limit
 * below one TCP window (TETHER_BACKLOG), the data the agent cannot keep ends the stream with a
 * typed error instead of a short, quiet end.
 *
 * On the paced UART (the default): a peer that writes everything at once and closes, at 115200 and
 * at 921600, through the agent; and, without the agent, a held pcb whose "receive" callback keeps
 * the VM busy with uart.write (NodeMCU's blocking UART TX) gets exactly one TCP window after
 * hold(), the peer's writes stall on the closed window, and unhold() lets the rest through. Before
 * the fix of issue #10's hold gap the simulated lwIP re-opened the window while such a callback
 * still waited for the VM, and the agent's backlog overflowed (err -1 after ~9 KB at 115200).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { connect } from '../src/api/connect.js';
import { createConnection, isSocketError } from '../src/streams/index.js';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import { TCP_MSS, TCP_WND } from '../src/sim/nodemcu/net-lib.js';
import { sleep, until } from './helpers/until.js';

const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

/**
 * A server on 127.0.0.1 that writes `size` random bytes to its client and closes at once, read
 * through a simulated NodeMCU's stream at `baud`: resolves when the stream ends or errors, with
 * the sent bytes, the bytes read, how it ended and the agent's `agent.stats` map.
 */
async function burstThroughModule(
  size: number,
  baud: number,
  sim?: Record<string, unknown>,
): Promise<{ data: Buffer; got: Buffer; how: { end?: true; error?: Error }; stats: Map<unknown, unknown>; paced: boolean }> {
  const data = crypto.randomBytes(size);
  const srv = net.createServer((c) => {
    c.on('error', () => {});
    c.end(data);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  let mod: Awaited<ReturnType<typeof connect>> | undefined;
  try {
    mod = await connect('sim:nodemcu', { baudRate: baud, ...(sim ? { sim: sim as never } : {}) });
    const s = createConnection(mod, { port, host: '127.0.0.1' });
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    const how = await new Promise<{ end?: true; error?: Error }>((resolve) => {
      s.once('end', () => resolve({ end: true }));
      s.once('error', (error) => resolve({ error }));
    });
    const stats = (await mod.rpc.call('agent.stats'))[0] as Map<unknown, unknown>;
    return { data, got: Buffer.concat(parts), how, stats, paced: mod.simulator!.wire.paced };
  } finally {
    await mod?.close();
    await new Promise((r) => srv.close(r));
  }
}

describe('NodeMCU bulk receive (issue #10)', () => {
  it('1 MiB from a 127.0.0.1 server reaches the host byte-exact, then end', { timeout: 90000 }, async () => {
    const { data, got, how, stats } = await burstThroughModule(1024 * 1024, 921600);
    assert.ok(how.end, `stream ended with ${String(how.error)} after ${got.length} of ${data.length} bytes`);
    assert.equal(got.length, data.length);
    assert.equal(sha(got), sha(data));
    assert.equal(stats.get('lost'), 0, 'no message dropped on the module');
    assert.ok(Number(stats.get('held')) > 0, `the agent held the socket (held=${stats.get('held')})`);
  });

  it('data the agent still cannot keep is never dropped silently: the stream errors (err -1), the agent counts it', { timeout: 60000 }, async () => {
    // a backlog limit below one TCP window (TETHER_BACKLOG 2048 < 1 KiB + 5840): after hold() the
    // peer's bytes in flight overflow it; the agent closes that socket and reports reconnection(-1)
    const { data, got, how, stats } = await burstThroughModule(256 * 1024, 921600, { agentSettings: { TETHER_BACKLOG: 2048 } });
    assert.ok(how.error, `the stream must not end quietly after ${got.length} of ${data.length} bytes`);
    assert.ok(isSocketError(how.error, 'ECONNRESET'), String(how.error));
    assert.match(String(how.error), /err -1/);
    assert.ok(got.length < data.length);
    assert.ok(Number(stats.get('lost')) >= 1, 'the refused segment is counted');
  });
});

describe('NodeMCU hold on the paced UART (issue #10 hold gap)', () => {
  for (const [baud, size] of [
    [115200, 48 * 1024],
    [921600, 128 * 1024],
  ] as const) {
    it(`a peer that writes ${size >> 10} KiB at once and closes, at ${baud} baud: every byte, then end`, { timeout: 90000 }, async () => {
      const { data, got, how, stats, paced } = await burstThroughModule(size, baud);
      assert.equal(paced, true, 'the line is paced');
      assert.ok(how.end, `stream ended with ${String(how.error)} after ${got.length} of ${size} bytes`);
      assert.equal(sha(got), sha(data));
      assert.equal(stats.get('lost'), 0, 'no message dropped on the module');
      assert.ok(Number(stats.get('held')) > 0, `the agent held the socket (held=${stats.get('held')})`);
    });
  }

  for (const baud of [115200, 921600]) {
    it(`without the agent at ${baud} baud: a held pcb whose "receive" spins in uart.write gets one window, the peer stalls, unhold() resumes`, { timeout: 60000 }, async () => {
      // 16 MiB: more than loopback's socket buffers take while the module does not read, so the
      // peer's write cannot complete while the window is closed
      const data = crypto.randomBytes(16 * 1024 * 1024);
      let peerWrote = false;
      let peer: net.Socket | undefined;
      const srv = net.createServer((c) => {
        peer = c;
        c.on('error', () => {});
        c.write(data, () => (peerWrote = true));
      });
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      const port = (srv.address() as net.AddressInfo).port;
      const sim = await SimulatedModule.start(nodemcuFamily({ boot: 'repl', baud }));
      try {
        const uart = sim.connect();
        uart.onData(() => {});
        const vm = sim.currentVm!;
        const got: number[] = [];
        vm.registerGlobal('rec', (a) => void got.push(Number(a.value(1))));
        // each "receive": count the bytes, hold on the second one (the first one's uart.write still
        // holds the VM when lwIP has it), then write 400 bytes to UART 0: uart.write blocks the VM
        // while the TX FIFO drains
        const err = vm.runString(
          `uart.setup(0, ${baud}, 8, 0, 1, 0)
          n, calls = 0, 0
          c = net.createConnection()
          c:on("receive", function(s, d)
            calls = calls + 1 n = n + #d rec(n)
            if calls == 2 then s:hold() end
            uart.write(0, string.rep("x", 400))
          end)
          c:connect(${port}, "127.0.0.1")`,
          '=test',
        );
        assert.equal(err, undefined, err);
        const total = () => got.at(-1) ?? 0;
        // net.c net_tcp_recv_cb: tcp_recved(TCP_WND) after the first segment, none after the second
        // (held), which left TCP_WND - TCP_MSS of the window open: TCP_MSS + TCP_WND bytes in all
        const win = TCP_MSS + TCP_WND;
        await until(() => total() >= win, `the window after hold() (${win} bytes in all)`, { detail: () => `got ${total()}` });
        await sleep(500); // nothing more may come (a busy machine can only make this check weaker)
        assert.equal(total(), win, 'a held pcb delivers no more than the window still open');
        assert.ok(got.every((v, i) => v - (got[i - 1] ?? 0) <= TCP_MSS), 'one "receive" per segment of at most TCP_MSS bytes');
        assert.equal(peerWrote, false, 'the peer cannot hand all its bytes to TCP: the window is closed');
        assert.equal(vm.runString('c:unhold()', '=test'), undefined);
        await until(() => total() >= win + 4 * TCP_MSS, 'more bytes after unhold()', { detail: () => `got ${total()}` });
        assert.equal(vm.runString('c:close()', '=test'), undefined);
      } finally {
        peer?.destroy();
        await sim.stop();
        await new Promise((r) => srv.close(r));
      }
    });
  }
});

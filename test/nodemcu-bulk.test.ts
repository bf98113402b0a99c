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
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { connect } from '../src/api/connect.js';
import { createConnection, isSocketError } from '../src/streams/index.js';

const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

describe('NodeMCU bulk receive (issue #10)', () => {
  it('1 MiB from a 127.0.0.1 server reaches the host byte-exact, then end', { timeout: 90000 }, async () => {
    const total = 1024 * 1024;
    const data = crypto.randomBytes(total);
    const srv = net.createServer((c) => {
      c.on('error', () => {});
      c.end(data);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    let mod: Awaited<ReturnType<typeof connect>> | undefined;
    try {
      mod = await connect('sim:nodemcu', { baudRate: 921600 });
      const s = createConnection(mod, { port, host: '127.0.0.1' });
      const parts: Buffer[] = [];
      let n = 0;
      s.on('data', (d: Buffer) => {
        parts.push(d);
        n += d.length;
      });
      const how = await new Promise<string>((resolve) => {
        s.once('end', () => resolve('end'));
        s.once('error', (e) => resolve(`error ${String(e)}`));
      });
      assert.equal(how, 'end', `stream ended with ${how} after ${n} of ${total} bytes`);
      assert.equal(n, total);
      assert.equal(sha(Buffer.concat(parts)), sha(data));
      const stats = (await mod.rpc.call('agent.stats'))[0] as Map<unknown, unknown>;
      assert.equal(stats.get('lost'), 0, 'no message dropped on the module');
      const held = Number(stats.get('held'));
      assert.ok(held > 0, `the agent held the socket (held=${stats.get('held')})`);
    } finally {
      await mod?.close();
      await new Promise((r) => srv.close(r));
    }
  });

  it('data the agent still cannot keep is never dropped silently: the stream errors (err -1), the agent counts it', { timeout: 60000 }, async () => {
    // a backlog limit below one TCP window (TETHER_BACKLOG 2048 < 1 KiB + 5840): after hold() the
    // peer's bytes in flight overflow it; the agent closes that socket and reports reconnection(-1)
    const data = crypto.randomBytes(256 * 1024);
    const srv = net.createServer((c) => {
      c.on('error', () => {});
      c.end(data);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    let mod: Awaited<ReturnType<typeof connect>> | undefined;
    try {
      mod = await connect('sim:nodemcu', { baudRate: 921600, sim: { agentSettings: { TETHER_BACKLOG: 2048 } } as never });
      const s = createConnection(mod, { port, host: '127.0.0.1' });
      let n = 0;
      s.on('data', (d: Buffer) => (n += d.length));
      const how = await new Promise<{ end?: true; error?: Error }>((resolve) => {
        s.once('end', () => resolve({ end: true }));
        s.once('error', (error) => resolve({ error }));
      });
      assert.ok(how.error, `the stream must not end quietly after ${n} of ${data.length} bytes`);
      assert.ok(isSocketError(how.error, 'ECONNRESET'), String(how.error));
      assert.match(String(how.error), /err -1/);
      assert.ok(n < data.length);
      const stats = (await mod.rpc.call('agent.stats'))[0] as Map<unknown, unknown>;
      assert.ok(Number(stats.get('lost')) >= 1, 'the refused segment is counted');
    } finally {
      await mod?.close();
      await new Promise((r) => srv.close(r));
    }
  });
});

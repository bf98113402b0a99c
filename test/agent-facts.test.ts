/**
 * Firmware facts the LuatOS and Luat agents handle themselves, checked through the agent (raw RPC
 * calls and the facades) against the simulated modules, which are as strict as the firmware:
 * - LuatOS, the tail after the peer's FIN (issue 10): network_rx allows ONE more read once the
 *   peer closed (components/network/adapter/luat_network_adapter.c, network_rx); the agent's
 *   `socket.rx` takes everything the socket holds in each firmware read and hands it out in
 *   pieces, so a server that writes 64 KiB and closes at once arrives whole, then `'end'`.
 * - Luat, issue 8 C3: `sock_recv(i, 0)` asserts in the core and reboots the module
 *   (platform_socket.c:827); the agent refuses a len outside 1..65535 with BADARG.
 * - LuatOS, issue 8 C10: the firmware logs the host of `socket.connect` with "%s"
 *   (luat_lib_socket.c:507), NULL for an integer host; the agent passes integer hosts as dotted text.
 * Every server here listens on 127.0.0.1 and is started by the test.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { firstValueFrom } from 'rxjs';
import { connect } from '../src/api/connect.js';
import { SocketEvent } from '../src/api/luatos/constants.js';
import { RemoteError } from '../src/errors.js';
import '../src/streams/index.js'; // mod.createConnection
import { waitEvent } from '../src/streams/drivers/luatos-conn.js';

/** A server on 127.0.0.1 that writes `data` to each client and closes its side at once. */
async function burstServer(data: Buffer): Promise<{ port: number; close(): Promise<void> }> {
  const srv = net.createServer((c) => {
    c.on('error', () => {});
    c.end(data);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => new Promise((r) => srv.close(() => r())) };
}

describe('LuatOS: the tail after the peer FIN', () => {
  it('a server that writes 64 KiB and closes at once: the Duplex gets every byte, byte-exact, then end and close', { timeout: 30000 }, async () => {
    const data = crypto.randomBytes(64 * 1024);
    const srv = await burstServer(data);
    const mod = await connect('sim');
    try {
      assert.equal(mod.hello.raw.get('rxdrain'), true, 'the agent says it drains the socket in each read (hello rxdrain)');
      const s = mod.createConnection(srv.port);
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      const how = await new Promise<string>((resolve) => {
        s.once('end', () => resolve('end'));
        s.once('error', (e) => resolve(`error ${(e as Error).message}`));
      });
      assert.equal(how, 'end');
      const got = Buffer.concat(parts);
      assert.equal(got.length, data.length);
      assert.ok(got.equals(data), 'byte-exact');
      assert.equal(s.bytesRead, data.length);
      await new Promise<void>((r) => (s.closed ? r() : s.once('close', () => r())));
    } finally {
      await mod.close();
      await srv.close();
    }
  });

  it('the simulated firmware is that strict: after the FIN, one read of part of the pending bytes, and the rest is gone', { timeout: 30000 }, async () => {
    // 32 KiB: all of it fits the module's TCP receive window (42880 bytes on the Air780E build,
    // docs/fidelity.md), so the FIN reaches the firmware behind it; with more, the peer keeps the
    // rest and its FIN until the app reads (test/sim-rx-window)
    const data = crypto.randomBytes(32 * 1024);
    const srv = await burstServer(data);
    const mod = await connect('sim');
    const s = mod.socket;
    try {
      const c = (await firstValueFrom(s.create(null)))!;
      assert.ok(c);
      await firstValueFrom(s.config(c, {}));
      await firstValueFrom(s.linkup(c));
      const events: Array<{ event: number; param: number }> = [];
      const sub = s.events(c).subscribe((e) => events.push(e));
      await firstValueFrom(s.connect(c, '127.0.0.1', srv.port));
      // EVENT -1: the peer's FIN reached the firmware (the bytes came before it)
      for (let i = 0; i < 200 && !events.some((e) => e.event === SocketEvent.EVENT && e.param === -1); i++) await new Promise((r) => setTimeout(r, 25));
      sub.unsubscribe();
      assert.ok(events.some((e) => e.event === SocketEvent.ON_LINE && e.param === 0), JSON.stringify(events));
      assert.ok(events.some((e) => e.event === SocketEvent.EVENT && e.param === -1), JSON.stringify(events));
      // socket.read is passed to the firmware as is (the agent's rx is the one that drains):
      // LS socket.read takes 1000 bytes, the one read network_rx allows after the FIN
      const first = await firstValueFrom(s.read(c, 1000));
      assert.equal(first[0], true);
      assert.ok(Buffer.from(first[1]!).equals(data.subarray(0, 1000)));
      const again = await firstValueFrom(s.read(c, 1000));
      assert.equal(again[0], false, 'a second read after the FIN fails: 31 KiB were lost on the module');
      await firstValueFrom(s.close(c));
      await firstValueFrom(s.release(c));
    } finally {
      await mod.close();
      await srv.close();
    }
  });
});

describe('Luat agent: sock_recv length (issue 8 C3)', () => {
  it('len 0, 65536, -1, 1.5 and a string are refused with BADARG before the core sees them; the module does not reboot', { timeout: 20000 }, async () => {
    const mod = await connect('sim:luat');
    try {
      const epoch = mod.hello.epoch;
      for (const len of [0, 65536, -1, 1.5, 'x']) {
        await assert.rejects(mod.rpc.call('socketcore.sock_recv', [0, len]), (e: unknown) => {
          assert.ok(e instanceof RemoteError, String(e));
          assert.equal(e.remoteCode, 'BADARG');
          assert.match(e.remoteMessage, /len must be an integer 1\.\.65535/);
          return true;
        });
      }
      // a valid length on a slot with nothing announced: the core's "" (no reboot, same boot)
      const [r] = await mod.rpc.call('socketcore.sock_recv', [0, 1]);
      assert.equal(Buffer.from(r as Uint8Array).length, 0);
      assert.equal(mod.rpc.currentEpoch, epoch, 'the module did not reset');
    } finally {
      await mod.close();
    }
  });
});

describe('LuatOS agent: integer hosts (issue 8 C10)', () => {
  it('socket.connect with the raw address word 0x0100007F reaches 127.0.0.1; the firmware gets dotted text, never an integer', { timeout: 20000 }, async () => {
    const srv = await burstServer(Buffer.from('hello'));
    const log: string[] = [];
    const mod = await connect('sim', { sim: { log: (l) => log.push(l) } });
    const s = mod.socket;
    try {
      const c = (await firstValueFrom(s.create(null)))!;
      await firstValueFrom(s.debug(c, true)); // the firmware's connect log line (LLOGD "connect to %s,%d")
      await firstValueFrom(s.config(c, {}));
      await firstValueFrom(s.linkup(c));
      const online = waitEvent(s, c, [SocketEvent.ON_LINE], 10000);
      const r = await firstValueFrom(s.connect(c, 0x0100007f, srv.port));
      assert.equal(r.ok, true);
      assert.equal((await online).param, 0, 'connected to the server on 127.0.0.1');
      const line = log.find((l) => l.includes('connect to'));
      assert.ok(line, log.join('\n'));
      assert.match(line, new RegExp(`connect to 127\\.0\\.0\\.1,${srv.port}`));
      assert.doesNotMatch(line, /\(null\)/);
      await firstValueFrom(s.close(c));
      await firstValueFrom(s.release(c));
    } finally {
      await mod.close();
      await srv.close();
    }
  });
});

/**
 * The simulated network's SNTP server (src/sim/sntp-server.ts) against RFC 4330 section 5's
 * reply layout, through a real UDP exchange on 127.0.0.1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { NTP_UNIX_OFFSET, sntpReply, startSntpServer } from '../src/sim/sntp-server.js';

/** A client request: LI 0, VN `vn`, Mode 3, with a transmit timestamp. */
function request(vn: number, poll = 6): Buffer {
  const b = Buffer.alloc(48);
  b[0] = (vn << 3) | 3;
  b[2] = poll;
  b.writeUInt32BE(0x12345678, 40);
  b.writeUInt32BE(0x9abcdef0, 44);
  return b;
}

test('the reply follows RFC 4330 section 5: mode 4, VN copied, originate = the client\'s transmit, times = the clock', () => {
  const now = Date.UTC(2026, 11, 3, 12, 0, 0, 250);
  for (const vn of [3, 4]) {
    const r = sntpReply(request(vn, 10), now)!;
    assert.equal(r.length, 48);
    assert.equal(r[0] >> 6, 0, 'LI 0');
    assert.equal((r[0] >> 3) & 7, vn, 'VN copied');
    assert.equal(r[0] & 7, 4, 'mode 4 (server)');
    assert.equal(r[1], 1, 'stratum 1');
    assert.equal(r[2], 10, 'poll copied');
    assert.equal(r.toString('latin1', 12, 16), 'LOCL');
    assert.equal(r.readUInt32BE(24), 0x12345678, 'originate seconds');
    assert.equal(r.readUInt32BE(28), 0x9abcdef0, 'originate fraction');
    for (const off of [16, 32, 40]) {
      assert.equal(r.readUInt32BE(off), Math.floor(now / 1000) + NTP_UNIX_OFFSET, `seconds at ${off}`);
      assert.equal(Math.round((r.readUInt32BE(off + 4) / 2 ** 32) * 1000), 250, `fraction at ${off}`);
    }
  }
  assert.equal(sntpReply(Buffer.alloc(47, 0x1b), now), undefined, 'short: ignored');
  const server = request(4);
  server[0] = (4 << 3) | 4;
  assert.equal(sntpReply(server, now), undefined, 'not a client request: ignored');
});

test('a real query on 127.0.0.1 gets the reply; close stops it', async () => {
  const srv = await startSntpServer();
  const c = dgram.createSocket('udp4');
  try {
    await new Promise<void>((r) => c.bind(0, '127.0.0.1', r));
    const got = new Promise<Buffer>((r) => c.once('message', (m) => r(m)));
    c.send(request(4), srv.port, '127.0.0.1');
    const m = await got;
    assert.equal(m[0] & 7, 4);
    assert.ok(Math.abs(m.readUInt32BE(40) - NTP_UNIX_OFFSET - Date.now() / 1000) < 2);
    assert.equal(srv.served, 1);
  } finally {
    c.close();
    await srv.close();
    await srv.close();
  }
});

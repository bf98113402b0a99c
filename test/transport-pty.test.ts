import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isTetherError } from '../src/errors.js';
import { createPty, type PtyEndpoint } from '../src/transport/pty.js';
import { SerialTransport } from '../src/transport/serial.js';
import { openTransport } from '../src/transport/index.js';
import type { Transport } from '../src/transport/transport.js';
import { testPty } from './helpers/pty.js';
import { UNTIL_TIMEOUT_MS } from './helpers/until.js';

const skip = process.platform === 'win32' ? 'pseudo-terminals are POSIX only' : false;
const tmp = mkdtempSync(join(tmpdir(), 'tether-pty-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Resolve with exactly the next `n` bytes that arrive on `t` (times out after `ms`). */
function receiver(t: Transport): (n: number, ms?: number) => Promise<Buffer> {
  let buf = Buffer.alloc(0);
  let want: { n: number; resolve: (b: Buffer) => void } | undefined;
  const check = (): void => {
    if (want && buf.length >= want.n) {
      const out = buf.subarray(0, want.n);
      buf = buf.subarray(want.n);
      const w = want;
      want = undefined;
      w.resolve(Buffer.from(out));
    }
  };
  t.onData((chunk) => {
    buf = Buffer.concat([buf, chunk]);
    check();
  });
  return (n, ms = UNTIL_TIMEOUT_MS) =>
    new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${n} bytes (have ${buf.length})`)), ms);
      want = {
        n,
        resolve: (b) => {
          clearTimeout(timer);
          resolve(b);
        },
      };
      check();
    });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('pty: 64 KiB each way through SerialTransport, reopen, and close ends the relay', { skip }, async () => {
  const link = join(tmp, 'sim-uart');
  const dev: PtyEndpoint = await testPty({ link });
  let host: SerialTransport | undefined;
  try {
    assert.match(dev.path, /^\/dev\//);
    assert.equal(dev.link, link);
    assert.equal(readlinkSync(link), dev.path);
    const devRecv = receiver(dev);

    host = await SerialTransport.open(dev.path, { baudRate: 115200 });
    assert.equal(host.description, `serial:${dev.path}@115200`);
    const hostRecv = receiver(host);

    const down = randomBytes(64 * 1024); // device -> host
    const up = randomBytes(64 * 1024); // host -> device
    // Make sure the bytes a tty would translate or swallow are present.
    down.set([0x0a, 0x0d, 0x00, 0x03, 0x04, 0x11, 0x13, 0x1a, 0x7f, 0xff], 0);
    up.set([0x0d, 0x0a, 0x00, 0x03, 0x04, 0x11, 0x13, 0x1a, 0x7f, 0xff], 0);
    const gotDown = hostRecv(down.length);
    const gotUp = devRecv(up.length);
    // Both directions at once, in uneven chunks.
    await Promise.all([
      (async () => {
        for (let i = 0; i < down.length; i += 3000) await dev.write(down.subarray(i, i + 3000));
      })(),
      (async () => {
        for (let i = 0; i < up.length; i += 1000) await host!.write(up.subarray(i, i + 1000));
      })(),
    ]);
    assert.ok((await gotDown).equals(down), 'device -> host bytes differ');
    assert.ok((await gotUp).equals(up), 'host -> device bytes differ');

    // The client closes the slave and opens it again (through the link): still works.
    await host.close();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(dev.isOpen, true, 'a client closing the slave must not close the endpoint');
    host = await SerialTransport.open(link, { baudRate: 115200 });
    const hostRecv2 = receiver(host);
    const ping = Buffer.from('ping\r\n\x00\xff');
    const pong = Buffer.from('pong\n\r\x00\xfe');
    const gotPing = devRecv(ping.length);
    await host.write(ping);
    assert.ok((await gotPing).equals(ping));
    const gotPong = hostRecv2(pong.length);
    await dev.write(pong);
    assert.ok((await gotPong).equals(pong));
    assert.equal(dev.droppedBytes, 0);
  } finally {
    await host?.close();
    const pid = dev.relayPid!;
    let closeErr: Error | undefined = new Error('onClose not called');
    dev.onClose((e) => (closeErr = e));
    await dev.close();
    assert.equal(closeErr, undefined, 'a local close reports no error');
    assert.equal(processAlive(pid), false, 'the relay process is gone after close()');
    assert.equal(existsSync(link), false, 'the link is removed');
    await dev.close(); // idempotent
    await assert.rejects(dev.write(Uint8Array.of(1)), (e: unknown) => isTetherError(e, 'DISCONNECTED'));
  }
});

test('pty: the relay going away reports DISCONNECTED on the endpoint and on the serial client', { skip }, async () => {
  // Repeated because the client sees either EIO or end-of-file depending on timing; stock
  // serialport spins forever on end-of-file, which this catches as a missing onClose.
  const rounds = 8;
  const devs = await Promise.all(Array.from({ length: rounds }, () => testPty()));
  try {
    for (let i = 0; i < rounds; i++) {
      const dev = devs[i];
      const host = await SerialTransport.open(dev.path);
      try {
        const devClosed = new Promise<Error | undefined>((r) => dev.onClose(r));
        const hostClosed = new Promise<Error | undefined>((r) => host.onClose(r));
        if (i % 2 === 0) {
          process.kill(dev.relayPid!, 'SIGKILL');
          const e1 = await devClosed;
          assert.ok(isTetherError(e1, 'DISCONNECTED'), `endpoint: ${String(e1)}`);
          assert.match(e1.message, /relay exited \(signal SIGKILL\)/);
        } else {
          await dev.close(); // the device side closes while the client still has the slave open
          assert.equal(await devClosed, undefined);
        }
        const e2 = await Promise.race([hostClosed, new Promise<string>((r) => setTimeout(() => r(`no onClose within ${UNTIL_TIMEOUT_MS} ms`), UNTIL_TIMEOUT_MS))]);
        assert.ok(isTetherError(e2, 'DISCONNECTED'), `serial client, round ${i}: ${String(e2)}`);
        assert.equal(host.isOpen, false);
        await assert.rejects(host.write(Uint8Array.of(1)), (e: unknown) => isTetherError(e, 'DISCONNECTED'));
      } finally {
        await host.close();
      }
    }
  } finally {
    await Promise.all(devs.map((d) => d.close()));
  }
});

test('pty: writes with nobody reading never hang; beyond 1 MiB the oldest bytes are dropped and counted', { skip }, async () => {
  const dev = await testPty();
  try {
    const total = 3 * 1024 * 1024;
    const started = Date.now();
    for (let i = 0; i < total; i += 65536) await dev.write(new Uint8Array(65536));
    // a guard against a hang, not a speed check (a busy machine is slow, a hang is forever)
    assert.ok(Date.now() - started < UNTIL_TIMEOUT_MS, `3 MiB of writes took ${Date.now() - started} ms`);
    // The relay reports drops on stderr; wait for the count to settle.
    const deadline = Date.now() + UNTIL_TIMEOUT_MS;
    while (dev.droppedBytes < total - 1024 * 1024 - 256 * 1024 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const kept = total - dev.droppedBytes;
    // The relay keeps 1 MiB; the kernel holds a little more (its tty buffers, well under 256 KiB).
    assert.ok(kept >= 1024 * 1024 && kept < 1024 * 1024 + 256 * 1024, `kept ${kept} bytes`);
  } finally {
    await dev.close();
  }
});

test('pty: a missing python3 is a TRANSPORT error that says python3 is required', { skip }, async () => {
  await assert.rejects(createPty({ python: join(tmp, 'no-such-python3') }), (e: unknown) => {
    assert.ok(isTetherError(e, 'TRANSPORT'), String(e));
    assert.match(e.message, /python3 is required for pseudo-terminals/);
    return true;
  });
});

test('pty: a link path taken by a regular file is refused and the file is kept', { skip }, async () => {
  const taken = join(tmp, 'taken');
  writeFileSync(taken, 'keep me');
  await assert.rejects(createPty({ link: taken }), (e: unknown) => {
    assert.ok(isTetherError(e, 'TRANSPORT'), String(e));
    assert.match(e.message, /not a symlink/);
    return true;
  });
  assert.equal(lstatSync(taken).isFile(), true, 'the file was not replaced');
});

test('pty: opening a slave path that does not exist is TRANSPORT naming the path', { skip }, async () => {
  await assert.rejects(SerialTransport.open('/dev/pts/tether-no-such-pty'), (e: unknown) => {
    assert.ok(isTetherError(e, 'TRANSPORT'), String(e));
    assert.match(e.message, /\/dev\/pts\/tether-no-such-pty/);
    assert.equal(e.context?.reason, 'ENOENT');
    return true;
  });
});

test('pty: a second opener of the same slave gets a clear busy error', { skip }, async () => {
  const dev = await testPty();
  const first = await SerialTransport.open(dev.path);
  try {
    await assert.rejects(SerialTransport.open(dev.path), (e: unknown) => {
      assert.ok(isTetherError(e, 'TRANSPORT'), String(e));
      assert.equal(e.context?.reason, 'BUSY');
      assert.match(e.message, /in use by another program/);
      return true;
    });
  } finally {
    await first.close();
    await dev.close();
  }
});

test("pty: the serial transport tells its line rate (lineBaud); a module's own USB port has none", { skip }, async () => {
  const dev = await testPty();
  try {
    // a pty is no module's USB port (its USB id is not in the table): the rate it was opened at
    const host = await SerialTransport.open(dev.path, { baudRate: 57600 });
    try {
      assert.equal(host.lineBaud, 57600);
      await host.setBaudRate(230400);
      assert.equal(host.lineBaud, 230400);
    } finally {
      await host.close();
    }
    const usb = await SerialTransport.open(dev.path, { baudRate: 57600, usb: true });
    try {
      assert.equal(usb.lineBaud, undefined, 'usb: true still has a line rate');
      assert.equal(usb.baudRate, 57600);
    } finally {
      await usb.close();
    }
    // the same from a port string (what the CLI's --port takes): ?usb=on, and ?usb=off wins over the USB id
    const fromUrl = await openTransport(`serial://${dev.path}?baud=57600&usb=on`);
    try {
      assert.equal(fromUrl.lineBaud, undefined, '?usb=on still has a line rate');
    } finally {
      await fromUrl.close();
    }
    const off = await openTransport(`serial://${dev.path}?usb=off`, { baudRate: 9600 });
    try {
      assert.equal(off.lineBaud, 9600);
    } finally {
      await off.close();
    }
  } finally {
    await dev.close();
  }
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import * as net from 'node:net';
import { test } from 'node:test';
import { isTetherError } from '../src/errors.js';
import { TcpTransport, openTransport } from '../src/transport/index.js';

/** A loopback server; `accepted` resolves with the server side of the first connection. */
async function startServer(onConn?: (s: Socket) => void): Promise<{ server: Server; port: number; accepted: Promise<Socket>; close(): Promise<void> }> {
  const conns = new Set<Socket>();
  let accept!: (s: Socket) => void;
  const accepted = new Promise<Socket>((r) => (accept = r));
  const server = createServer((s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    onConn?.(s);
    accept(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    accepted,
    close: () =>
      new Promise<void>((r) => {
        for (const c of conns) c.destroy();
        server.close(() => r());
      }),
  };
}

function collect(t: TcpTransport, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let got = 0;
    t.onData((chunk) => {
      parts.push(Buffer.from(chunk));
      got += chunk.byteLength;
      if (got >= n) resolve(Buffer.concat(parts));
    });
  });
}

test('round trip through an echo server is byte-exact', async () => {
  const srv = await startServer((s) => s.pipe(s));
  const t = await TcpTransport.open('127.0.0.1', srv.port);
  try {
    assert.equal(t.description, `tcp://127.0.0.1:${srv.port}`);
    assert.equal(t.isOpen, true);
    const payload = randomBytes(256 * 1024);
    const back = collect(t, payload.length);
    // Several writes, including a 0..255 byte table, in order.
    const table = Uint8Array.from({ length: 256 }, (_, i) => i);
    await t.write(table);
    await t.write(payload);
    const got = await back;
    assert.equal(got.length, table.length + payload.length);
    assert.deepEqual(got.subarray(0, 256), Buffer.from(table));
    assert.ok(got.subarray(256).equals(payload));
  } finally {
    await t.close();
    await srv.close();
  }
});

test('bytes the server sends before onData is set are not lost', async () => {
  const srv = await startServer((s) => s.write('hello\r\n'));
  const t = await TcpTransport.open('127.0.0.1', srv.port);
  try {
    await new Promise((r) => setTimeout(r, 50));
    const got = await collect(t, 7);
    assert.equal(got.toString(), 'hello\r\n');
  } finally {
    await t.close();
    await srv.close();
  }
});

test('connection refused raises TRANSPORT naming the endpoint', async () => {
  const srv = await startServer();
  const port = srv.port;
  await srv.close(); // the port is now free: nothing listens there
  await assert.rejects(TcpTransport.open('127.0.0.1', port), (e: unknown) => {
    assert.ok(isTetherError(e, 'TRANSPORT'), `got ${String(e)}`);
    assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.match(e.message, /refused/);
    assert.equal(e.context?.reason, 'ECONNREFUSED');
    return true;
  });
  await assert.rejects(openTransport(`tcp://127.0.0.1:${port}`), (e: unknown) => isTetherError(e, 'TRANSPORT'));
});

test('open validates its arguments with INVALID_ARGUMENT', async () => {
  await assert.rejects(TcpTransport.open('', 7000), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(TcpTransport.open('127.0.0.1', 0), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(TcpTransport.open('127.0.0.1', 70000), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(TcpTransport.open('127.0.0.1', 7000, { connectTimeoutMs: -1 }), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
});

test('peer close calls onClose with DISCONNECTED, and later writes fail with DISCONNECTED', async () => {
  const srv = await startServer();
  const t = await openTransport(`tcp://127.0.0.1:${srv.port}`);
  try {
    const server = await srv.accepted;
    const closed = new Promise<Error | undefined>((r) => t.onClose(r));
    server.end();
    const err = await closed;
    assert.ok(isTetherError(err, 'DISCONNECTED'), `got ${String(err)}`);
    assert.match(err.message, /peer closed/);
    assert.equal(t.isOpen, false);
    await assert.rejects(t.write(Uint8Array.of(1)), (e: unknown) => isTetherError(e, 'DISCONNECTED'));
  } finally {
    await t.close();
    await srv.close();
  }
});

test('local close calls onClose without an error, sends FIN, and is idempotent', async () => {
  const srv = await startServer();
  const t = await TcpTransport.open('localhost', srv.port, { connectTimeoutMs: 2000 });
  const server = await srv.accepted;
  const serverSawEnd = new Promise<void>((r) => server.on('end', () => r()));
  server.resume();
  let calls = 0;
  let closeErr: Error | undefined = new Error('not called');
  t.onClose((e) => {
    calls++;
    closeErr = e;
  });
  await t.close();
  await t.close();
  await serverSawEnd;
  assert.equal(calls, 1);
  assert.equal(closeErr, undefined);
  await assert.rejects(t.write(Uint8Array.of(1)), (e: unknown) => isTetherError(e, 'DISCONNECTED'));
  await srv.close();
});

test('setNoDelay: the transport turns Nagle off on its socket before the first write', async () => {
  // With Nagle on, the second small frame of a write-write-read exchange waits for the ACK of
  // the first, which the peer delays (~40 ms on Linux): every call would stall. What is checked
  // here is the cause, not a duration (tests do not assert timing): the transport's socket gets
  // setNoDelay(true) before anything is written on it, and exchanges still work.
  const calls: Array<{ sock: net.Socket; noDelay: boolean | undefined; bytesWritten: number }> = [];
  const orig = net.Socket.prototype.setNoDelay;
  net.Socket.prototype.setNoDelay = function (this: net.Socket, noDelay?: boolean) {
    calls.push({ sock: this, noDelay, bytesWritten: this.bytesWritten });
    return orig.call(this, noDelay);
  };
  const srv = await startServer((s) => {
    let n = 0;
    s.on('data', (chunk: Buffer) => {
      n += chunk.length;
      while (n >= 2) {
        n -= 2;
        s.write(Uint8Array.of(0x55));
      }
    });
  });
  let t: TcpTransport | undefined;
  try {
    t = await TcpTransport.open('127.0.0.1', srv.port);
    const client = calls.filter((c) => c.sock.remotePort === srv.port);
    assert.equal(client.length >= 1, true, 'setNoDelay was called on the transport socket');
    assert.equal(client.at(-1)!.noDelay, true, 'with true');
    assert.equal(client[0].bytesWritten, 0, 'before the first write');
    let resolveByte!: () => void;
    t.onData(() => resolveByte());
    for (let i = 0; i < 10; i++) {
      const got = new Promise<void>((r) => (resolveByte = r));
      await t.write(Uint8Array.of(i));
      await t.write(Uint8Array.of(i));
      await got;
    }
  } finally {
    net.Socket.prototype.setNoDelay = orig;
    await t?.close();
    await srv.close();
  }
});

/**
 * The part of the labgrid recipe (docs/labgrid.md) that runs here: its ser2net
 * configuration, started by this test with a real ser2net (Debian package `ser2net`) on
 * 127.0.0.1, exports a UART (a pseudo-terminal standing in for the module's) as RFC 2217:
 * ser2net asks for the COM-PORT-OPTION (telnet option 44) and bytes flow both ways. The bench
 * entry of that doc is checked by bench-file.test.ts.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PtyEndpoint } from '../src/transport/pty.js';
import { testPty } from './helpers/pty.js';
import { repoRoot } from '../src/util/repo-root.js';

const IAC = 0xff;
const DO = 0xfd;
/** RFC 2217 COM-PORT-OPTION. */
const COM_PORT_OPTION = 44;

let ser2net: ChildProcess | undefined;
let pty: PtyEndpoint | undefined;
let client: Socket | undefined;
after(async () => {
  client?.destroy();
  ser2net?.kill();
  await pty?.close();
});

/** A free TCP port on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

test("docs/labgrid.md's ser2net configuration exports a UART as RFC 2217 (real ser2net on 127.0.0.1)", async () => {
  const which = spawnSync('sh', ['-c', 'command -v ser2net || ls /usr/sbin/ser2net'], { encoding: 'utf8' });
  const bin = which.stdout.trim().split('\n')[0];
  assert.ok(which.status === 0 && bin, 'ser2net is not installed: install the Debian package ser2net (apt-get install ser2net)');

  const doc = readFileSync(join(repoRoot(), 'docs', 'labgrid.md'), 'utf8');
  const config = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]).find((b) => b.startsWith('%YAML 1.1\n'));
  assert.ok(config, 'docs/labgrid.md has the ser2net.yaml block');
  const accepter = /accepter: telnet\(rfc2217\),tcp,(\d+)\n/.exec(config);
  const connector = /connector: serialdev,(\S+),115200n81,local\n/.exec(config);
  assert.ok(accepter && connector, 'the block has an RFC 2217 accepter and a serialdev connector');

  pty = await testPty();
  const port = await freePort();
  // The doc's file with what differs here: listen on 127.0.0.1 only, a free port, the pty as the UART.
  const local = config.replace(accepter[0], `accepter: telnet(rfc2217),tcp,127.0.0.1,${port}\n`).replace(connector[1], pty.path);
  const dir = mkdtempSync(join(tmpdir(), 'tether-ser2net-'));
  const file = join(dir, 'ser2net.yaml');
  writeFileSync(file, local);
  let log = '';
  ser2net = spawn(bin, ['-n', '-d', '-c', file, '-P', join(dir, 'ser2net.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
  ser2net.stdout!.on('data', (b: Buffer) => (log += b.toString()));
  ser2net.stderr!.on('data', (b: Buffer) => (log += b.toString()));

  // connect (retrying while ser2net starts)
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      client = await new Promise<Socket>((resolve, reject) => {
        const s = tcpConnect(port, '127.0.0.1', () => resolve(s));
        s.once('error', reject);
      });
      break;
    } catch (e) {
      assert.ok(Date.now() < deadline, `ser2net does not listen on 127.0.0.1:${port}: ${(e as Error).message}\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const fromNet: Buffer[] = [];
  client.on('data', (b: Buffer) => fromNet.push(b));
  const got = (pred: (all: Buffer) => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      const t0 = Date.now();
      const tick = () => {
        if (pred(Buffer.concat(fromNet))) return resolve();
        if (Date.now() - t0 > 10000) return reject(new Error(`${what}; got ${Buffer.concat(fromNet).toString('hex')}\n${log}`));
        setTimeout(tick, 20);
      };
      tick();
    });

  // RFC 2217: ser2net asks the client to do the COM-PORT-OPTION (IAC DO 44)
  await got((all) => all.includes(Buffer.from([IAC, DO, COM_PORT_OPTION])), 'no IAC DO COM-PORT-OPTION from ser2net');

  // network -> UART
  const fromUart: Buffer[] = [];
  pty.onData((b) => fromUart.push(Buffer.from(b)));
  client.write('to the module\n');
  const t0 = Date.now();
  while (!Buffer.concat(fromUart).includes('to the module\n')) {
    assert.ok(Date.now() - t0 < 10000, `the bytes did not reach the UART: ${Buffer.concat(fromUart).toString('hex')}\n${log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  // UART -> network
  await pty.write(Buffer.from('from the module\n'));
  await got((all) => all.includes('from the module\n'), 'the bytes did not reach the network client');
});

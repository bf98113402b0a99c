/**
 * The CLI and diag for the Luat family: `tether sim --family luat`, then `info`, `call`
 * and `diag` against it (over tcp://) and against the in-process `sim:luat` port.
 * Runs the real bin (dist/src/cli/bin.js) in child processes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot } from '../src/util/repo-root.js';
import { connect } from '../src/api/connect.js';
import { runDiag } from '../src/diag/diag.js';
import { startEchoServers } from '../src/diag/echo-servers.js';

const BIN = join(repoRoot(), 'dist/src/cli/bin.js');

function tether(args: string[], timeoutMs = 60000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test('tether call / info / diag on the in-process sim:luat port', async () => {
  const call = await tether(['call', '--port', 'sim:luat', 'net.getState']);
  assert.equal(call.code, 0, call.stderr);
  assert.equal(call.stdout.trim(), '"REGISTERED"');

  const conn = await tether(['call', '--port', 'sim:luat', '--json', 'socketcore.sock_conn_ext', '0', '127.0.0.1', '1']);
  assert.equal(conn.code, 0, conn.stderr);
  assert.deepEqual(JSON.parse(conn.stdout), { fn: 'socketcore.sock_conn_ext', count: 1, values: [0] });

  const info = await tether(['info', '--port', 'sim:luat', '--json']);
  assert.equal(info.code, 0, info.stderr);
  const i = JSON.parse(info.stdout);
  assert.equal(i.family, 'luat');
  assert.equal(i.lua, 'Lua 5.1');
  assert.equal(i.imei, '866714040000017');
  assert.equal(i.csq, 24);
  assert.equal(i.registrationText, 'registered');
  assert.ok(i.capabilities.includes('socketcore.sock_send'));

  const diag = await tether(['diag', '--port', 'sim:luat', '--json']);
  assert.equal(diag.code, 0, diag.stdout + diag.stderr);
  const report = JSON.parse(diag.stdout.trim().split('\n').pop()!);
  assert.equal(report.ok, true);
  assert.equal(report.complete, true);
  const names = report.checks.map((c: { name: string }) => c.name.replace(/ \(.*\)$/, ''));
  assert.deepEqual(names, ['handshake', 'registration + signal + IMEI', 'data link ready', 'DNS', 'TCP connect + echo + close', 'UDP echo', 'SSL connect + echo']);
  assert.ok(report.checks.every((c: { ok: boolean; skipped?: boolean }) => c.ok && !c.skipped));
  assert.match(report.checks[4].detail, /at most 1 in flight/);
  assert.match(report.checks[6].detail, /server certificate verified/);
});

test('tether sim --family luat serves tcp://, and info/call/diag work through it', async () => {
  const child = spawn(process.execPath, [BIN, 'sim', '--family', 'luat', '--no-pty', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout! });
      rl.once('line', resolve);
      child.once('exit', (c) => reject(new Error(`tether sim exited (${c})`)));
    });
    const started = JSON.parse(line);
    assert.equal(started.family, 'luat');
    assert.equal(started.module, 'Air724UG');
    const url: string = started.ports.tcp;
    assert.match(url, /^tcp:\/\/127\.0\.0\.1:\d+$/);

    const call = await tether(['call', '--port', url, 'rtos.get_version']);
    assert.equal(call.code, 0, call.stderr);
    assert.equal(call.stdout.trim(), '"Luat_V0026_RDA8910_FLOAT-sim"');
    // the simulated module is recognised over tcp:// too, so diag starts its loopback echo services
    const diag = await tether(['diag', '--port', url]);
    assert.equal(diag.code, 0, diag.stdout + diag.stderr);
    assert.match(diag.stdout, /loopback echo services/);
    assert.match(diag.stdout, /all 7 checks passed/);
  } finally {
    child.kill('SIGINT');
    await new Promise((r) => child.once('exit', r));
  }
});

test('runDiag on a Luat module reports each check, and failures without throwing', async () => {
  const echo = await startEchoServers();
  // 921600 baud: 20000 bytes each way take 1.7 s on the paced UART at 115200, too close to the 3 s check timeout
  const mod = await connect('sim:luat', { baudRate: 921600 });
  try {
    const report = await runDiag(mod, { tcp: echo.tcp, udp: { host: '127.0.0.1', port: 9 }, timeoutMs: 3000, echoBytes: 20000 });
    const by = Object.fromEntries(report.checks.map((c) => [c.name.replace(/ \(.*\)$/, ''), c]));
    assert.equal(by['TCP connect + echo + close'].ok, true);
    assert.match(by['TCP connect + echo + close'].detail, /20000 bytes echoed byte-exact/);
    assert.equal(by['UDP echo'].ok, false, 'nothing echoes on the discard port');
    assert.equal(by['SSL connect + echo'].skipped, true);
    assert.equal(by['SSL connect + echo'].ok, false, 'a skipped check is not a pass');
    assert.equal(by.DNS.status, 'skip', 'no --dns name: DNS is not tested against the echo address');
    assert.equal(report.ok, false);
    assert.equal(report.complete, false);
    assert.equal(mod.simulator && (mod.simulator.family as unknown as { current: { socketcore: { slotsInUse(): number } } }).current.socketcore.slotsInUse(), 0, 'every check freed its slot');
  } finally {
    await mod.close();
    await echo.close();
  }
});

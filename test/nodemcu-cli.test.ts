/**
 * The CLI for the NodeMCU family: `tether sim --family nodemcu`, then `info`, `call`
 * (handle-first methods) and `diag` (WiFi status + IP, DNS, TCP echo, UDP echo, ping)
 * through it over tcp://, and on the in-process `sim:nodemcu` port. Real bin, child processes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot } from '../src/util/repo-root.js';

const BIN = join(repoRoot(), 'dist/src/cli/bin.js');

function tether(args: string[], timeoutMs = 60000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test('tether info / call / diag on sim:nodemcu', async () => {
  const info = await tether(['info', '--port', 'sim:nodemcu', '--json']);
  assert.equal(info.code, 0, info.stderr);
  const i = JSON.parse(info.stdout);
  assert.equal(i.family, 'nodemcu');
  assert.equal(i.bsp, 'ESP8266');
  assert.equal(i.firmware, '3.0.0-sim');
  assert.equal(i.limits.maxFrame, 255);
  assert.ok(i.capabilities.includes('tcpsocket.send'));

  const ip = await tether(['call', '--port', 'sim:nodemcu', 'wifi.sta.getip']);
  assert.equal(ip.code, 0, ip.stderr);
  assert.equal(ip.stdout.trim(), '"127.0.0.1"\t"255.0.0.0"\t"127.0.0.1"');
  const st = await tether(['call', '--port', 'sim:nodemcu', '--json', 'wifi.sta.status']);
  assert.deepEqual(JSON.parse(st.stdout), { fn: 'wifi.sta.status', count: 1, values: [5] });
  // a method takes its object's handle first; a plain number there is the handle
  const gp = await tether(['call', '--port', 'sim:nodemcu', '--json', 'tcpsocket.getpeer', '1']);
  assert.equal(gp.code, 1);
  assert.match(JSON.parse(gp.stdout).error.message, /BADHANDLE/);
  const bad = await tether(['call', '--port', 'sim:nodemcu', '--json', 'net.dns.getdnsserver', '2']);
  assert.equal(bad.code, 1);
  assert.match(JSON.parse(bad.stdout).error.message, /server index out of range \[0-1\]/);

  const diag = await tether(['diag', '--port', 'sim:nodemcu', '--json']);
  assert.equal(diag.code, 0, diag.stdout + diag.stderr);
  const report = JSON.parse(diag.stdout.trim().split('\n').pop()!);
  assert.equal(report.ok, true);
  const names = report.checks.map((c: { name: string }) => c.name.replace(/ \(.*\)$/, ''));
  // the default build has no TLS: the loopback run offers none, so every check runs
  assert.deepEqual(names, ['handshake', 'WiFi station status + IP', 'DNS', 'TCP connect + echo + close', 'UDP echo', 'ping']);
  assert.ok(report.checks.every((c: { ok: boolean; skipped?: boolean }) => c.ok && !c.skipped));
  assert.equal(report.complete, true);
  assert.match(report.checks[1].detail, /got IP\), IP 127\.0\.0\.1/);
  assert.match(report.checks[4].detail, /echoed from 127\.0\.0\.1:\d+/);
});

test('tether sim --family nodemcu serves tcp:// and a pty; info and diag work through it', async () => {
  const child = spawn(process.execPath, [BIN, 'sim', '--family', 'nodemcu', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout! });
      rl.once('line', resolve);
      child.once('exit', (c) => reject(new Error(`tether sim exited (${c})`)));
    });
    const started = JSON.parse(line);
    assert.equal(started.family, 'nodemcu');
    assert.equal(started.module, 'ESP8266');
    const url: string = started.ports.tcp;
    assert.match(url, /^tcp:\/\/127\.0\.0\.1:\d+$/);
    assert.match(started.ports.pty, /^\/dev\//);
    const info = await tether(['info', '--port', url]);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /family\s+nodemcu/);
    const diag = await tether(['diag', '--port', started.ports.pty]);
    assert.equal(diag.code, 0, diag.stdout + diag.stderr);
    assert.match(diag.stdout, /loopback echo services/, 'recognised as simulated by its firmware version');
    assert.match(diag.stdout, /all 6 checks passed/);
  } finally {
    child.kill('SIGINT');
    await new Promise((r) => child.once('exit', r));
  }
});

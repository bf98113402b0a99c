/** The tether CLI as a user runs it (child processes of the built bin). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';

const bin = join(repoRoot(), 'dist/src/cli/bin.js');
function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 30000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

test('call prints every return value; --json keeps count and types', async () => {
  const r = await run(['call', '--port', 'sim', 'socket.adapter', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { fn: 'socket.adapter', count: 2, values: [true, 1] });
  const t = await run(['call', '--port', 'sim', 'socket.localIP']);
  assert.equal(t.stdout.trim(), '"127.0.0.1"\t"255.0.0.0"\t"0.0.0.0"\tnull');
});

test('call on a released or unknown socket handle is a REMOTE error with exit code 1', async () => {
  const r = await run(['call', '--port', 'sim', 'socket.state', '7', '--json']);
  assert.equal(r.code, 1);
  const e = JSON.parse(r.stdout).error;
  assert.equal(e.code, 'REMOTE');
  assert.match(e.message, /BADHANDLE/);
});

test('info reports family, firmware, agent, heap and cellular status', async () => {
  const r = await run(['info', '--port', 'sim', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const i = JSON.parse(r.stdout);
  assert.equal(i.family, 'luatos');
  assert.equal(i.bsp, 'EC618');
  assert.equal(i.protocol, 2);
  assert.equal(typeof i.heapKB, 'number');
  assert.match(i.imei, /^\d{15}$/);
  assert.equal(i.registrationText, 'registered');
  assert.ok(i.capabilities.includes('socket.sntp_port'));
  assert.equal(i.capabilities.filter((c: string) => c.startsWith('socket.')).length >= 23, true);
});

test('usage errors exit 2 with help on stderr; an unreachable port is a TRANSPORT error', async () => {
  const u = await run(['nonsense']);
  assert.equal(u.code, 2);
  assert.match(u.stderr, /unknown command "nonsense"/);
  assert.match(u.stderr, /Commands:/);
  const m = await run(['info']);
  assert.equal(m.code, 2);
  const p = await run(['info', '--port', 'tcp://127.0.0.1:1', '--json']);
  assert.equal(p.code, 1);
  assert.equal(JSON.parse(p.stdout).error.code, 'TRANSPORT');
  const h = await run(['--help']);
  assert.equal(h.code, 0);
  for (const c of ['sim', 'ports', 'info', 'call', 'diag']) assert.match(h.stdout, new RegExp(`tether ${c}`));
});

test('diag exits 1 when a check fails, and the report says which', async () => {
  const r = await run(['diag', '--port', 'sim', '--tcp', '127.0.0.1:1', '--check-timeout', '5000', '--json']);
  assert.equal(r.code, 1);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(report.ok, false);
  assert.equal(report.failed, 1);
  const tcp = report.checks.find((c: { name: string }) => c.name.startsWith('TCP connect'));
  assert.equal(tcp.ok, false);
  assert.equal(tcp.code, 'SOCKET');
  assert.ok(report.checks.find((c: { name: string }) => c.name === 'handshake').ok);
});

/**
 * Issue 9 item 8: `tether call --follow SECONDS` prints the agent's asynchronous results
 * (events and topics) as they arrive; `--json` prints one JSON object a line; usage errors
 * exit 2 before anything is opened; Ctrl-C stops early with exit 130.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';

const bin = join(repoRoot(), 'dist/src/cli/bin.js');
function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 30000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}
const jsonLines = (s: string) => s.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

test('net.dns.resolve --follow --json: the request id, then its "dns" callback with the address', async () => {
  const r = await run(['call', '--port', 'sim:nodemcu', 'net.dns.resolve', 'localhost', '--follow', '1', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [result, ...rest] = jsonLines(r.stdout);
  assert.equal(result.fn, 'net.dns.resolve');
  const id = (result.values as number[])[0];
  assert.equal(typeof id, 'number');
  assert.deepEqual(rest, [{ type: 'event', handle: id, name: 'dns', values: [null, '127.0.0.1'] }]);
});

test('net.ping --follow: one "recv" per ping, then the "sent" summary, as text lines', async () => {
  const r = await run(['call', '--port', 'sim:nodemcu', 'net.ping', '127.0.0.1', '2', '--follow', '3']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const id = Number(lines[0]);
  assert.ok(Number.isInteger(id), lines[0]);
  assert.match(lines[1], new RegExp(`^event h${id} recv\\t\\d+\\t"127\\.0\\.0\\.1"\\t1\\t`));
  assert.match(lines[2], new RegExp(`^event h${id} recv\\t\\d+\\t"127\\.0\\.0\\.1"\\t2\\t`));
  assert.match(lines[3], new RegExp(`^event h${id} sent\\t"127\\.0\\.0\\.1"\\t2\\t0\\t`));
  assert.equal(lines.length, 4);
});

test('LuatOS socket.sntp --follow: the NTP topic the agent forwards', async () => {
  const r = await run(['call', '--port', 'sim', 'socket.sntp', '--follow', '1.5', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [result, ...rest] = jsonLines(r.stdout);
  assert.deepEqual(result, { fn: 'socket.sntp', count: 0, values: [] });
  const topics = rest.filter((x) => x.type === 'topic').map((x) => x.topic);
  assert.equal(topics.length, 1, r.stdout);
  assert.equal(topics[0], 'NTP_UPDATE', 'the simulated network has its own SNTP server');
});

test('a bad --follow is a usage error (exit 2) before the port is opened', async () => {
  const values = ['abc', '0', '-1', '1e9'];
  // a port that refuses: opening it would be a TRANSPORT error, exit 1
  const runs = await Promise.all(values.map((v) => run(['call', '--port', 'tcp://127.0.0.1:1', 'socket.adapter', `--follow=${v}`])));
  for (const [i, v] of values.entries()) {
    const r = runs[i];
    assert.equal(r.code, 2, `--follow=${v}: ${r.stderr}`);
    assert.match(r.stderr, /--follow must be a positive number of seconds/, `--follow=${v}`);
    assert.doesNotMatch(r.stderr, /TRANSPORT|refused/);
    assert.equal(r.stdout, '');
  }
  const missing = await run(['call', '--port', 'sim', 'socket.adapter', '--follow']);
  assert.equal(missing.code, 2);
});

test('Ctrl-C ends the follow early with exit 130, the output so far intact', async () => {
  const child = spawn(process.execPath, [bin, 'call', '--port', 'sim:nodemcu', 'net.dns.resolve', 'localhost', '--follow', '600', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (b) => (err += b));
  const code = await new Promise<number | null>((resolve) => {
    child.stdout.on('data', (b) => {
      out += b;
      if (out.trim().split('\n').length >= 2) child.kill('SIGINT');
    });
    child.on('exit', (c) => resolve(c));
  });
  assert.equal(code, 130, err);
  const lines = jsonLines(out);
  assert.equal(lines[1].name, 'dns');
});

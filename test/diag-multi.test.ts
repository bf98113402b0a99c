/**
 * `tether diag` over many modules in one run (src/cli/commands/diag-multi.ts): `--bench
 * FILE [NAME...]` and `--port A --port B`, the modules of the three families in parallel,
 * one summary table or one JSON document, the exit-code rules of docs/cli.md, and usage
 * errors that exit 2 before anything is opened. The built CLI in child processes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot } from '../src/util/repo-root.js';
import { startEchoServers, type EchoServers } from '../src/diag/echo-servers.js';
import type { MultiDiagReport } from '../src/cli/commands/diag-multi.js';
import { fixturePath } from '../src/diag/fixtures.js';
import { tetherCli } from '../src/cli/main.js';

const BIN = join(repoRoot(), 'dist/src/cli/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'tether-diag-multi-'));

function tether(args: string[], timeoutMs = 90000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The bench of docs/bench.md's first example: three simulated modules, one per family (bench-file.test.ts checks the doc shows this file). */
function docBench(): string {
  return fixturePath('bench', 'sim.yaml');
}

/** Run the CLI in this process (fast: usage errors open nothing), capturing stderr. */
async function inProcess(args: string[]): Promise<{ code: number; stderr: string }> {
  const write = process.stderr.write;
  let stderr = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await tetherCli(args), stderr };
  } finally {
    process.stderr.write = write;
  }
}

/** One JSON document: stdout is exactly one line that parses. */
function oneJson(stdout: string): MultiDiagReport {
  const lines = stdout.trim().split('\n');
  assert.equal(lines.length, 1, `one JSON document on stdout, got ${lines.length} lines`);
  return JSON.parse(lines[0]) as MultiDiagReport;
}

let echo: EchoServers;
let sim: ChildProcess | undefined;
before(async () => {
  echo = await startEchoServers();
});
after(async () => {
  await echo.close();
  sim?.kill();
});

test('diag --bench FILE: three simulated modules of the three families in parallel, one summary table', async () => {
  const file = docBench();
  const r = await tether(['diag', '--bench', file]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines[0], `tether diag: 3 modules in parallel from ${file}: air780e (sim), air724ug (sim:luat), esp8266 (sim:nodemcu)`);
  assert.equal(lines.filter((l) => /^MODULE\s+CHECK\s+STATUS\s+MS\s+DETAIL$/.test(l)).length, 1, 'one table');
  const rows = lines.slice(2, lines.indexOf(''));
  const byModule = (n: string) => rows.filter((l) => l.startsWith(`${n} `));
  // module x check: every family's own checks, all PASS with a time
  const checkNames = (n: string) => byModule(n).map((l) => l.split(/\s{2,}/)[1].replace(/ \(.*\)$/, ''));
  assert.deepEqual(checkNames('air780e'), ['handshake', 'adapter ready + local IP', 'DNS', 'TCP connect + echo + close', 'UDP echo', 'TLS connect + echo']);
  assert.deepEqual(checkNames('air724ug'), ['handshake', 'registration + signal + IMEI', 'data link ready', 'DNS', 'TCP connect + echo + close', 'UDP echo', 'SSL connect + echo']);
  assert.deepEqual(checkNames('esp8266'), ['handshake', 'WiFi station status + IP', 'DNS', 'TCP connect + echo + close', 'UDP echo', 'ping']);
  assert.equal(rows.length, byModule('air780e').length + byModule('air724ug').length + byModule('esp8266').length, 'every row names its module');
  for (const row of rows) assert.match(row, /\s{2}PASS\s+\d+\s{2}/, row);
  // the per-module totals and the closing line
  assert.match(r.stdout, /^air780e\s+luatos\s+PASS\s+6\s+0\s+0\s+\d+$/m);
  assert.match(r.stdout, /^air724ug\s+luat\s+PASS\s+7\s+0\s+0\s+\d+$/m);
  assert.match(r.stdout, /^esp8266\s+nodemcu\s+PASS\s+6\s+0\s+0\s+\d+$/m);
  assert.match(lines.at(-1)!, /^all 3 modules passed all 19 checks in \d+ ms$/);
});

test('diag --bench FILE NAME... --json: one JSON document with the named modules in the order given', async () => {
  const r = await tether(['diag', '--bench', docBench(), 'air724ug', 'air780e', '--json']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(r.stderr, '', 'nothing on stderr with --json');
  const j = oneJson(r.stdout);
  assert.deepEqual(j.modules.map((m) => [m.name, m.port, m.family, m.ok, m.complete]), [
    ['air724ug', 'sim:luat', 'luat', true, true],
    ['air780e', 'sim', 'luatos', true, true],
  ]);
  assert.equal(j.ok, true);
  assert.equal(j.complete, true);
  assert.equal(j.passed, j.modules[0].passed + j.modules[1].passed);
  assert.deepEqual([j.failed, j.skipped], [0, 0]);
  for (const m of j.modules) assert.equal(m.checks.length, m.passed);
  assert.match(j.bench!, /fixtures\/bench\/sim\.yaml$/);
});

test('--port A --port B: a module that cannot be opened fails the run (exit 1) but the others are checked', async () => {
  const closed = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const dead = `tcp://127.0.0.1:${closed}`;
  const r = await tether(['diag', '--port', 'sim', '--port', dead, '--json']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const j = oneJson(r.stdout);
  assert.equal(j.ok, false);
  const [good, bad] = j.modules;
  assert.deepEqual([good.name, good.ok, good.complete, good.failed], ['sim', true, true, 0]);
  assert.equal(bad.name, dead);
  assert.equal(bad.error?.code, 'TRANSPORT');
  assert.deepEqual(bad.checks.map((c) => [c.name, c.status, c.code]), [['open + handshake', 'fail', 'TRANSPORT']]);
  assert.equal(j.failed, 1);

  const t = await tether(['diag', '--port', 'sim', '--port', dead]);
  assert.equal(t.code, 1);
  assert.match(t.stdout, new RegExp(`^${dead.replace(/[/.]/g, '\\$&')}\\s+open \\+ handshake\\s+FAIL`, 'm'));
  assert.match(t.stdout.trim().split('\n').pop()!, new RegExp(`^1 of 2 modules failed \\(${dead.replace(/[/.]/g, '\\$&')}\\); 6 passed, 1 failed, 0 skipped$`));
});

test('skipped checks in any module make the run incomplete: exit 5; the same port twice is two simulators only for sim', async () => {
  const r = await tether(['diag', '--port', 'sim', '--port', 'sim', '--tcp', `127.0.0.1:${echo.tcp.port}`, '--json']);
  assert.equal(r.code, 5, r.stdout + r.stderr);
  const j = oneJson(r.stdout);
  assert.deepEqual(j.modules.map((m) => m.name), ['sim#1', 'sim#2']);
  assert.deepEqual([j.ok, j.complete], [true, false]);
  for (const m of j.modules) assert.deepEqual([m.passed, m.failed, m.skipped], [3, 0, 3]);
  assert.deepEqual([j.passed, j.skipped], [6, 6]);
});

test('a bench family the module does not run fails that module (FAMILY_MISMATCH)', async () => {
  sim = spawn(process.execPath, [BIN, 'sim', '--family', 'luat', '--no-pty', '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: sim!.stdout! }).once('line', resolve);
    sim!.once('exit', (c) => reject(new Error(`tether sim exited (${c})`)));
  });
  const url: string = JSON.parse(line).ports.tcp;
  assert.match(url, /^tcp:\/\/127\.0\.0\.1:\d+$/);
  const file = join(dir, 'mismatch.yaml');
  writeFileSync(file, `modules:\n  rack-a: { family: luatos, port: "${url}" }\n`);
  const r = await tether(['diag', '--bench', file, '--json']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const m = oneJson(r.stdout).modules[0];
  assert.equal(m.family, 'luat');
  assert.deepEqual(m.checks.map((c) => [c.name, c.status, c.code, c.detail]), [['family', 'fail', 'FAMILY_MISMATCH', 'the module runs luat; the bench file says luatos']]);
});

test('Ctrl-C: the table of what ran is printed (a module still opening is INTR) and the exit code is 130', async () => {
  // a TCP port that accepts and never answers: that module's handshake never ends
  const silent = createServer((c) => c.on('error', () => undefined));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const url = `tcp://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  try {
    const child = spawn(process.execPath, [BIN, 'diag', '--port', 'sim', '--port', url, '--timeout', '60000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    // the simulated module ends first: its note on stderr; then Ctrl-C
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stderr! }).on('line', (l) => /^\[sim\] passed/.test(l) && resolve());
      exited.then(() => reject(new Error(`diag exited before Ctrl-C: ${stdout}`)));
    });
    child.kill('SIGINT');
    assert.equal(await exited, 130, stdout);
    assert.match(stdout, /^sim\s+handshake\s+PASS/m);
    assert.match(stdout, new RegExp(`^${url.replace(/[/.]/g, '\\$&')}\\s+open \\+ handshake\\s+INTR`, 'm'));
    assert.match(stdout.trim().split('\n').pop()!, /^interrupted: 6 passed, 0 failed, 0 skipped over 2 modules before Ctrl-C; the report is partial$/);
  } finally {
    silent.close();
  }
});

test('usage errors exit 2 before any module is opened', async () => {
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'modules:\n  a: { port: /dev/ttyUSB0, baud: fast }\n');
  const good = docBench();
  const cases: Array<[string[], RegExp]> = [
    [['diag', 'air780e'], /unexpected argument "air780e": module names need --bench FILE/],
    [['diag', '--bench', good, '--port', 'sim'], /give either --bench FILE \[NAME\.\.\.\] or --port, not both/],
    [['diag', '--bench', good, 'nosuch'], /has no module "nosuch"; it has air780e, air724ug, esp8266/],
    [['diag', '--bench', bad], /bad\.yaml: modules\.a\.family: required[\s\S]*bad\.yaml: modules\.a\.baud: expected an integer 1\.\.20000000 \(baud\), got "fast"/],
    [['diag', '--bench', join(dir, 'missing.yaml')], /missing\.yaml: cannot read it: ENOENT/],
    [['diag', '--port', '/dev/ttyUSB7', '--port', '/dev/ttyUSB7'], /--port \/dev\/ttyUSB7 is given twice: one module per port/],
    [['diag', '--port', 'sim', '--port', 'sim:bogus'], /no simulator for family "bogus"/],
    [['diag', '--port', 'sim', '--port', dir], /is not a serial port \(a directory\)/],
  ];
  for (const [args, re] of cases) {
    const r = await inProcess(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /modules in parallel|\[module\]|TRANSPORT|HANDSHAKE/, 'nothing was opened');
  }
});

/**
 * Usage errors never run the command (the built CLI, child processes): an unknown option,
 * a bad choice, an unknown command, a missing option or a bad number exits 2 with one
 * error and the relevant usage on stderr, before any port is opened. A tripwire TCP
 * server stands in for the module: it must see no connection at all.
 */
import { startTripwire, type Tripwire } from './helpers/tripwire.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { checkPort, explainOpenError } from '../src/cli/commands/open.js';
import { progressPrinter } from '../src/cli/commands/flash-impl.js';
import { positiveMs, intInRange, portNumber, hostPort, portArg } from '../src/cli/validate.js';
import { TetherError } from '../src/errors.js';

const BIN = join(repoRoot(), 'dist/src/cli/bin.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}
function tether(args: string[], timeoutMs = 30000): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

let tripwire: Tripwire;
before(async () => {
  tripwire = await startTripwire();
});
after(() => tripwire.close());

/** Exit 2, one `tether:` error line (the last line of stderr), nothing on stdout, nothing opened. */
async function usageError(args: string[], message: RegExp, usage?: RegExp): Promise<Run> {
  const before = tripwire.connections;
  const r = await tether(args);
  const where = `tether ${args.join(' ')}\n${r.stderr}`;
  assert.equal(r.code, 2, where);
  assert.equal(r.stdout, '', `nothing on stdout: ${where}`);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('tether: '));
  assert.equal(errors.length, 1, `exactly one error: ${where}`);
  assert.match(errors[0], message, where);
  assert.match(r.stderr.trimEnd().split('\n').pop()!, message, `the error is the last line: ${where}`);
  if (usage) assert.match(r.stderr, usage, `the relevant usage: ${where}`);
  assert.doesNotMatch(r.stderr, /\[module\]|\[uart\]|TypeError|at .*\.js:\d+|TRANSPORT|HANDSHAKE/, `nothing ran: ${where}`);
  assert.ok(r.ms < 5000, `returns at once (${r.ms} ms): ${where}`);
  await new Promise((res) => setTimeout(res, 50));
  assert.equal(tripwire.connections, before, `the port was not opened: ${where}`);
  return r;
}

const trip = () => tripwire.url;

test('an unknown option stops the command before it opens anything (call --jsn, flash --forse)', async () => {
  await usageError(['call', '--port', trip(), 'node.restart', '--jsn'], /Unknown argument: jsn/, /tether call <fn> \[args\.\.\]/);
  await usageError(['flash', '--port', trip(), '--forse', '--init'], /Unknown argument: forse/, /tether flash/);
  await usageError(['info', '--port', trip(), '--jsonn'], /Unknown argument: jsonn/, /tether info/);
  await usageError(['reboot', '--port', trip(), '--forse'], /Unknown argument: forse/, /tether reboot/);
  await usageError(['reset-sockets', '--port', trip(), '--jsonn'], /Unknown argument: jsonn/, /tether reset-sockets/);
  await usageError(['reboot'], /Missing required argument: port/, /tether reboot/);
  await usageError(['reset-sockets'], /Missing required argument: port/, /tether reset-sockets/);
  await usageError(['reboot', '--port', trip(), '--boot-timeout', 'soon'], /--boot-timeout must be a positive number of milliseconds, got "soon"/);
  // against the in-process simulator: no module starts (no handshake, no log)
  await usageError(['call', '--port', 'sim', 'node.restart', '--jsn', '--verbose'], /Unknown argument: jsn/);
  // against a port that would fail to open: the error is the usage error, not a transport error
  await usageError(['flash', '--port', '/dev/tether-no-such-tty', '--forse'], /Unknown argument: forse/);
});

test('a bad choice, a missing option, an unknown command: one error, exit 2, no crash', async () => {
  await usageError(['sim', '--family', 'bogus'], /Invalid values:|Argument: family, Given: "bogus"/, /tether sim/);
  const r = await tether(['sim', '--family', 'bogus']);
  assert.match(r.stderr, /Argument: family, Given: "bogus", Choices: "luatos", "luat", "nodemcu"/);
  await usageError(['info'], /Missing required argument: port/, /tether info/);
  await usageError(['call', '--port', trip()], /Not enough non-option arguments/, /tether call/);
  await usageError(['bogus'], /unknown command "bogus" \(commands: sim, ports, info, call, shell, diag, flash, agent, proxy, reboot, reset-sockets\)/, /Commands:/);
  await usageError(['pots'], /unknown command "pots": did you mean ports\?/);
  await usageError([], /Name a command/);
});

test('help for a command that does not exist is an error, not the top-level help', async () => {
  const r = await usageError(['open', '--help'], /unknown command "open"/);
  assert.doesNotMatch(r.stderr, /tether open/);
  await usageError(['--json', 'bogus', '--help'], /unknown command "bogus"/);
  const ok = await tether(['call', '--help']);
  assert.equal(ok.code, 0);
  assert.match(ok.stdout, /^tether call <fn> \[args\.\.\]/);
  const top = await tether(['--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /5 diag passed but incomplete/);
});

test('every number is validated: exit 2 with what is wrong, before anything opens', async () => {
  for (const bad of ['abc', '-5', '0', '', '12abc', 'NaN', 'Infinity']) {
    await usageError(['info', '--port', trip(), '--timeout', bad], new RegExp(`--timeout must be a positive number of milliseconds, got "${bad}"`));
  }
  await usageError(['info', '--port', trip(), '--timeout'], /Not enough arguments following: timeout/);
  await usageError(['diag', '--port', trip(), '--timeout', '99999999999'], /--timeout must be at most 2147483647 milliseconds/);
  await usageError(['diag', '--port', trip(), '--check-timeout', 'abc'], /--check-timeout must be a positive number of milliseconds, got "abc"/);
  for (const bad of ['0', '65537', '1.5', 'lots']) await usageError(['diag', '--port', trip(), '--echo-bytes', bad], new RegExp(`--echo-bytes must be an integer 1\\.\\.65536 \\(bytes\\), got "${bad.replace('.', '\\.')}"`));
  for (const bad of ['abc', '-1', '65536', '80.5']) await usageError(['sim', '--tcp-port', bad], new RegExp(`--tcp-port must be an integer 0\\.\\.65535 .* got "${bad.replace('.', '\\.')}"`));
  for (const bad of ['0', '-9600', 'fast', '20000001']) await usageError(['info', '--port', trip(), '--baud', bad], /--baud must be an integer 1\.\.20000000 \(baud\)/);
  for (const bad of ['host', 'host:0', 'host:65536', 'host:http', ':7']) await usageError(['diag', '--port', trip(), '--tcp', bad], /--tcp must be HOST:PORT \(port 1\.\.65535\)/);
  await usageError(['diag', '--port', trip(), '--udp', 'h:99999'], /--udp must be HOST:PORT/);
  await usageError(['flash', '--port', trip(), '--sync-timeout', 'soon'], /--sync-timeout must be a positive number of milliseconds, got "soon"/);
  await usageError(['flash', '--port', trip(), '--line-timeout', '-1'], /--line-timeout must be a positive number of milliseconds/);
  await usageError(['flash', '--port', trip(), '--init-delay', '0'], /--init-delay must be an integer 1\.\.6870947/);
  await usageError(['flash', '--port', trip(), '--name', 'agent.txt'], /--name must be a \.lua file name/);
  await usageError(['flash', '--port', trip(), '--upload-baud', '12345'], /--upload-baud must be 0 or one of 300, 600/);
});

test('sim:constructor and sim:__proto__ are no simulators: a typed usage error, not a TypeError', async () => {
  for (const fam of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'bogus']) {
    await usageError(['info', '--port', `sim:${fam}`], new RegExp(`no simulator for family "${fam}" \\(available: sim:luatos, sim:luat, sim:nodemcu\\)`));
    await usageError(['diag', '--port', `sim:${fam}`, '--json'], /no simulator for family/);
  }
  await usageError(['flash', '--port', 'sim:nodemcu'], /flash talks to a module on a serial port or tcp:\/\//);
  // the same check before connect() for API-level callers of the CLI helpers
  for (const fam of ['constructor', '__proto__']) {
    assert.throws(() => checkPort(`sim:${fam}`), (e: unknown) => e instanceof TetherError && e.code === 'INVALID_ARGUMENT' && /no simulator for family/.test(e.message));
  }
  assert.doesNotThrow(() => checkPort('sim:luat'));
  assert.doesNotThrow(() => checkPort('sim'));
});

test('/dev/null, a file or a directory as a port: "not a serial port", no baud advice', async () => {
  for (const [port, what] of [
    ['/dev/null', /a device, but not a terminal/],
    ['/dev/zero@9600', /a device, but not a terminal/],
    [join(repoRoot(), 'package.json'), /a regular file/],
    ['/tmp', /a directory/],
  ] as const) {
    const r = await tether(['info', '--port', port]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /is not a serial port/);
    assert.match(r.stderr, what);
    assert.doesNotMatch(r.stderr, /baud/i);
    const j = await tether(['call', '--port', port, 'hello', '--json']);
    assert.equal(j.code, 2);
    assert.equal(JSON.parse(j.stdout).error.code, 'INVALID_ARGUMENT');
  }
  const f = await tether(['flash', '--port', '/dev/null']);
  assert.equal(f.code, 2);
  assert.match(f.stderr, /\/dev\/null is not a serial port/);
  // an open failure that is not about a non-terminal stays what it was
  const other = new TetherError('TRANSPORT', 'cannot open serial port /dev/ttyUSB0: busy', { context: { reason: 'BUSY' } });
  assert.equal(explainOpenError('/dev/ttyUSB0', other), other);
});

test('--timeout bounds the handshake too (a module that never answers)', async () => {
  const r = await tether(['info', '--port', trip(), '--timeout', '600', '--json']);
  assert.equal(r.code, 4, r.stdout + r.stderr);
  const e = JSON.parse(r.stdout).error;
  assert.equal(e.code, 'HANDSHAKE');
  assert.match(e.message, /within 600 ms/);
  assert.ok(r.ms < 5000, `gave up after the 600 ms handshake timeout, not 10 s (${r.ms} ms)`);
  // valid values work as before
  const ok = await tether(['call', '--port', 'sim', 'socket.adapter', '--timeout', '3000', '--json']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout).values, [true, 1]);
});

test('validators: values and messages', () => {
  assert.equal(positiveMs('timeout')('250'), 250);
  assert.equal(positiveMs('timeout')(1.5), 1.5);
  assert.equal(positiveMs('timeout')(['100', '200']), 200, 'the last of repeated options wins');
  assert.throws(() => positiveMs('timeout')(Number.NaN), /--timeout must be a positive number of milliseconds, got "NaN"/);
  assert.equal(intInRange('echo-bytes', 1, 65536, 'bytes')('65536'), 65536);
  assert.equal(portNumber('tcp-port', true)(0), 0);
  assert.throws(() => portNumber('port')(0), /--port must be an integer 1\.\.65535/);
  assert.deepEqual(hostPort('tcp')('[::1]:7'), { host: '::1', port: 7 });
  assert.deepEqual(hostPort('tcp')('echo.example.net:7'), { host: 'echo.example.net', port: 7 });
  assert.equal(portArg('sim:nodemcu'), 'sim:nodemcu');
  assert.throws(() => portArg('sim:constructor'), /no simulator for family "constructor"/);
});

test('flash progress: a bar only on a terminal and never with --json; phase messages stay', () => {
  const fake = (isTTY: boolean) => {
    const chunks: string[] = [];
    return { chunks, stream: { isTTY, write: (s: string) => chunks.push(s) } as unknown as NodeJS.WriteStream };
  };
  const steps = [
    { phase: 'probe' as const },
    ...[0, 256, 512, 768, 1024].map((done) => ({ phase: 'upload' as const, file: 'tether.lua', done, total: 1024 })),
    ...[1024].map((done) => ({ phase: 'verify' as const, file: 'tether.lua', done, total: 1024 })),
    { phase: 'start' as const, message: 'dofile("tether.lua")' },
  ];
  const pipe = fake(false);
  const pp = progressPrinter(pipe.stream);
  for (const s of steps) pp(s);
  const text = pipe.chunks.join('');
  assert.doesNotMatch(text, /%/, 'no percentage lines on a pipe');
  assert.match(text, /Lua prompt found/);
  assert.match(text, /dofile\("tether\.lua"\)/);

  const json = fake(true);
  const pj = progressPrinter(json.stream, false); // what runFlash passes with --json
  for (const s of steps) pj(s);
  assert.doesNotMatch(json.chunks.join(''), /%/, 'no bar with --json, even on a terminal');

  const tty = fake(true);
  const pt = progressPrinter(tty.stream);
  for (const s of steps) pt(s);
  const bar = tty.chunks.join('');
  // the bar is redrawn in place (cli-progress moves to column 1 with CSI 1G)
  assert.match(bar, /(?:\r|\x1b\[1G)writing {3}tether\.lua \[#+\] 100% 1\.0\/1\.0 KB/);
  assert.match(bar, /(?:\r|\x1b\[1G)verifying tether\.lua \[#+\] 100%/);
});

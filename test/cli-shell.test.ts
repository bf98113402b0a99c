/**
 * `tether shell`: one module connection for many calls, history, Tab completion of the agent's
 * functions, events printed as they arrive. Driven through stdin/stdout of a child process
 * against the simulated modules.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { shellCompleter, splitWords } from '../src/cli/commands/shell.js';
import { isTetherError } from '../src/errors.js';

const bin = join(repoRoot(), 'dist/src/cli/bin.js');

/** A shell child process; `until(re)` waits for stdout to match. */
class Shell {
  readonly child: ChildProcessWithoutNullStreams;
  out = '';
  err = '';
  private waiters: Array<() => void> = [];
  readonly exited: Promise<number | null>;
  constructor(args: string[]) {
    this.child = spawn(process.execPath, [bin, 'shell', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (b) => {
      this.out += b;
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stderr.on('data', (b) => (this.err += b));
    this.exited = new Promise((r) => this.child.on('exit', (c) => r(c)));
  }
  /** Wait until the output (after `from`) matches `re`; fails after 20 s with the output so far. */
  async until(re: RegExp, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + 20000;
    for (;;) {
      const m = re.exec(this.out.slice(from));
      if (m) return m;
      if (Date.now() > deadline) assert.fail(`no ${re} in ${JSON.stringify(this.out.slice(from))}; stderr ${this.err}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  send(s: string): void {
    this.child.stdin.write(s);
  }
}
const plain = (s: string) => s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');

test('words and completion', () => {
  assert.deepEqual(splitWords('  net.dns.resolve   "my host" x\'a b\'  1 '), ['net.dns.resolve', '"my host"', "x'a b'", '1']);
  assert.deepEqual(splitWords(''), []);
  assert.throws(() => splitWords('f "open'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  const complete = shellCompleter(['socket.state', 'socket.sntp', 'socket.create', 'net.ping']);
  assert.deepEqual(complete('socket.s'), [['socket.sntp', 'socket.state'], 'socket.s']);
  assert.deepEqual(complete('.e'), [['.exit'], '.e']);
  assert.deepEqual(complete('socket.state 1'), [[], 'socket.state 1']);
  assert.deepEqual(complete('zzz'), [[], 'zzz']);
});

test('a script on stdin: one connection for every call (a handle survives), errors go on, events print', async (t) => {
  const sh = new Shell(['--port', 'sim']);
  t.after(() => sh.child.kill());
  sh.send('socket.create\n');
  const [, h] = await sh.until(/^"h(\d+)"$/m);
  sh.send(`socket.state ${h}\n`);
  // a state, not BADHANDLE: the same module session as socket.create's
  await sh.until(/^\d+\t"[^"]*"$/m);
  sh.send('socket.bogus 1\n"unterminated\n.caps socket.st\n');
  await sh.until(/^socket\.state$/m);
  assert.match(sh.out, /^! socket\.bogus is not a function of this agent.*\[INVALID_ARGUMENT\]$/m);
  assert.match(sh.out, /^! unterminated " quote \[INVALID_ARGUMENT\]$/m);
  // an asynchronous topic arrives while the shell waits for the next line
  const mark = sh.out.length;
  sh.send('socket.sntp\n');
  await sh.until(/^topic NTP_(UPDATE|ERROR)$/m, mark);
  sh.child.stdin.end();
  assert.equal(await sh.exited, 0, sh.err);
  assert.match(sh.err, /tether shell: luatos agent/);
});

test('--json: one JSON object a line for results, errors and events', async (t) => {
  const sh = new Shell(['--port', 'sim:nodemcu', '--json']);
  t.after(() => sh.child.kill());
  sh.send('net.dns.resolve localhost\nnode.nothing\n');
  const m = await sh.until(/^\{"type":"event".*\}$/m);
  const ev = JSON.parse(m[0]);
  const res = JSON.parse((await sh.until(/^\{"fn":"net\.dns\.resolve".*\}$/m))[0]);
  assert.deepEqual(ev, { type: 'event', handle: res.values[0], name: 'dns', values: [null, '127.0.0.1'] });
  const err = JSON.parse((await sh.until(/^\{"error".*\}$/m))[0]);
  assert.equal(err.error.code, 'INVALID_ARGUMENT');
  sh.send('.exit\n');
  assert.equal(await sh.exited, 0);
});

test('line editing: Tab completes the agent functions, Up recalls history (also from --history FILE)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-shell-'));
  try {
    const hist = join(dir, 'history');
    writeFileSync(hist, 'node.chipid\n');
    const sh = new Shell(['--port', 'sim:nodemcu', '--force-terminal', '--history', hist]);
    t.after(() => sh.child.kill());
    await sh.until(/nodemcu> /);
    // Up: the line from the history file
    sh.send('\x1b[A');
    await sh.until(/node\.chipid/);
    sh.send('\r');
    await sh.until(/(?:^|\x1b\[K)\d+$/m);
    let mark = sh.out.length;
    // Tab completes a unique function name
    sh.send('net.dns.res');
    await sh.until(/net\.dns\.res/, mark);
    sh.send('\t');
    await sh.until(/net\.dns\.resolve/, mark);
    sh.send(' localhost\r');
    await sh.until(/event h\d+ dns\tnull\t"127\.0\.0\.1"/, mark);
    mark = sh.out.length;
    sh.send('node.he');
    await sh.until(/node\.he/, mark);
    sh.send('\t');
    await sh.until(/node\.heap/, mark);
    sh.send('\r');
    await sh.until(/(?:^|\x1b\[K)\d+$/m, mark);
    mark = sh.out.length;
    // Up recalls the last line of this session (the history file below shows which line ran)
    sh.send('\x1b[A');
    await sh.until(/node\.heap/, mark);
    sh.send('\r');
    await sh.until(/(?:^|\x1b\[K)\d+$/m, mark);
    sh.send('.exit\r');
    assert.equal(await sh.exited, 0, sh.err);
    assert.match(plain(sh.out), /net\.dns\.resolve localhost/);
    assert.deepEqual(readFileSync(hist, 'utf8').trim().split('\n'), ['node.chipid', 'node.chipid', 'net.dns.resolve localhost', 'node.heap', 'node.heap', '.exit']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('usage errors exit 2 before anything is opened', async () => {
  const cases = [[], ['--port', 'sim:bogus'], ['--port', 'sim', '--history']];
  const shells = cases.map((args) => new Shell(args));
  for (const [i, sh] of shells.entries()) {
    sh.child.stdin.end();
    assert.equal(await sh.exited, 2, `${cases[i].join(' ')}: ${sh.err}`);
    assert.doesNotMatch(sh.err, /tether shell: /);
  }
});

/**
 * Real ser2net (Debian package `ser2net`) in front of a simulated module's pseudo-terminal,
 * started by the test on 127.0.0.1 with a config file it writes: the pty exported as
 * RFC 2217 (`telnet(rfc2217)`) and as raw TCP. `tether diag` passes through both; a baud
 * the host asks for reaches the pty's termios; ser2net killed and restarted mid-session
 * is survived (the host reconnects, re-applies its baud, and the next call succeeds).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { firstValueFrom } from 'rxjs';
import { connect } from '../src/api/connect.js';
import { isTetherError } from '../src/errors.js';
import { SimulatedModule } from '../src/sim/module.js';
import { luatosFamily } from '../src/sim/luatos/family.js';
import { openTransport, ReconnectingTransport, Rfc2217Transport, SerialTransport } from '../src/transport/index.js';
import { repoRoot } from '../src/util/repo-root.js';
import { servePty } from './helpers/pty.js';

const BIN = join(repoRoot(), 'dist/src/cli/bin.js');
const tmp = mkdtempSync(join(tmpdir(), 'tether-ser2net-'));

/** The ser2net binary; the test fails (never skips) when it is missing. */
function ser2netPath(): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/local/sbin', '/sbin'])) {
    const p = join(dir, 'ser2net');
    if (dir && existsSync(p)) return p;
  }
  throw new Error('ser2net is not installed: install the Debian package `ser2net` (apt-get install ser2net)');
}

/** A free TCP port on 127.0.0.1. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * Resolves once a socket listens on 127.0.0.1:port (polls /proc/net/tcp for up to 5 s). It
 * does not connect: a probe connection would be a client of ser2net and could take the port
 * from the host under test.
 */
async function listening(port: number): Promise<void> {
  const want = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const until = Date.now() + 5000;
  for (;;) {
    const rows = readFileSync('/proc/net/tcp', 'utf8').split('\n').map((l) => l.trim().split(/\s+/));
    if (rows.some((r) => r[1] === want && r[3] === '0A')) return; // 0A: LISTEN
    if (Date.now() > until) throw new Error(`ser2net is not listening on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** ser2net running a config file written here: `rfc` and `raw` connections to `pty`. */
class Ser2net {
  private child?: ChildProcess;
  /** What ser2net printed (stdout and stderr). */
  log = '';
  readonly config: string;
  constructor(
    readonly pty: string,
    readonly rfcPort: number,
    readonly rawPort: number,
  ) {
    this.config = join(tmp, `ser2net-${rfcPort}.yaml`);
    // ser2net 4 YAML; `local`: no modem control lines (a pty has none); no mDNS advertising
    writeFileSync(
      this.config,
      [
        'connection: &rfc',
        `  accepter: telnet(rfc2217),tcp,127.0.0.1,${rfcPort}`,
        `  connector: serialdev,${pty},115200n81,local`,
        '  options:',
        '    kickolduser: false',
        '    mdns: false',
        'connection: &raw',
        `  accepter: tcp,127.0.0.1,${rawPort}`,
        `  connector: serialdev,${pty},115200n81,local`,
        '  options:',
        '    kickolduser: false',
        '    mdns: false',
        '',
      ].join('\n'),
    );
  }

  async start(): Promise<void> {
    // -n: stay in the foreground, -u: no UUCP lock files (a pty, and /var/lock may not be writable)
    const child = spawn(ser2netPath(), ['-n', '-u', '-c', this.config, '-P', join(tmp, `ser2net-${this.rfcPort}.pid`)], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
    this.child = child;
    const exited = new Promise<never>((_, reject) => child.once('exit', (c) => reject(new Error(`ser2net exited (${String(c)}): ${this.log}`))));
    await Promise.race([Promise.all([listening(this.rfcPort), listening(this.rawPort)]), exited]);
  }

  /** SIGKILL, like a crashed or rebooted exporter; resolves once it is gone. */
  async kill(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
  }
}

/** The pty's line speed (baud) from its termios, read with python3's termios on the slave. */
function ptySpeed(path: string): Promise<number> {
  const script = [
    'import os, sys, termios',
    'fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)',
    'a = termios.tcgetattr(fd)',
    'rates = {getattr(termios, n): int(n[1:]) for n in dir(termios) if n[0] == "B" and n[1:].isdigit()}',
    'print(rates.get(a[5], -1))',
  ].join('\n');
  return new Promise((resolve, reject) =>
    execFile('python3', ['-c', script, path], (err, stdout, stderr) => (err ? reject(new Error(`${err.message} ${stderr}`)) : resolve(Number(stdout.trim())))),
  );
}

function tether(args: string[], timeoutMs = 30000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let sim: SimulatedModule;
let ser2net: Ser2net;
let pty: string;
let ptyClose: (() => Promise<void>) | undefined;

before(async () => {
  ser2netPath();
  execFileSync('python3', ['-c', 'import termios']);
  sim = await SimulatedModule.start(luatosFamily());
  ({ path: pty, close: ptyClose } = await servePty(sim));
  ser2net = new Ser2net(pty, await freePort(), await freePort());
  await ser2net.start();
});

after(async () => {
  await ser2net?.kill();
  await sim?.stop();
  await ptyClose?.();
  rmSync(tmp, { recursive: true, force: true });
});

test('tether diag passes through ser2net as rfc2217:// and as raw tcp://', async () => {
  for (const port of [`rfc2217://127.0.0.1:${ser2net.rfcPort}?baud=921600`, `tcp://127.0.0.1:${ser2net.rawPort}`]) {
    const r = await tether(['diag', '--port', port, '--json']);
    assert.equal(r.code, 0, `${port}: ${r.stdout}${r.stderr}`);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.equal(report.ok, true, port);
    assert.ok(report.checks.length >= 5 && report.checks.every((c: { ok: boolean }) => c.ok), port);
  }
});

test('the baud the host asks for reaches the pty: at open (?baud=, --baud) and when the host switches', async () => {
  const t = (await openTransport(`rfc2217://127.0.0.1:${ser2net.rfcPort}?baud=921600`)) as Rfc2217Transport;
  try {
    assert.ok(t instanceof Rfc2217Transport);
    assert.equal(t.baudRate, 921600, 'ser2net confirmed the baud');
    assert.equal(await ptySpeed(pty), 921600);
    assert.equal(await t.setBaudRate(57600), 57600);
    assert.equal(await ptySpeed(pty), 57600);
    await t.purge('both'); // ser2net answers PURGE-DATA
  } finally {
    await t.close();
  }
  // the library's baudRate option (what `--baud` sets) applies when the URL names none
  const mod = await connect(`rfc2217://127.0.0.1:${ser2net.rfcPort}`, { baudRate: 230400 });
  try {
    assert.equal(await ptySpeed(pty), 230400);
    const [ready] = await mod.rpc.call('socket.adapter', []);
    assert.equal(ready, true);
  } finally {
    await mod.close();
  }
});

test('ser2net killed and restarted mid-session: the host reconnects, re-applies its baud, and the next call succeeds', async () => {
  for (const url of [`rfc2217://127.0.0.1:${ser2net.rfcPort}?baud=460800`, `tcp://127.0.0.1:${ser2net.rawPort}`]) {
    const mod = await connect(url, { reconnect: { initialDelayMs: 50, maxDelayMs: 250 } });
    try {
      assert.ok(mod.rpc.transport instanceof ReconnectingTransport);
      const epoch = mod.rpc.currentEpoch;
      const [before] = await mod.rpc.call('socket.adapter', []);
      assert.equal(before, true);
      if (url.startsWith('rfc2217')) {
        // the host switches speed mid-session; the reconnect must keep it
        assert.equal(await mod.rpc.transport.setBaudRate!(115200 * 2), 230400);
      }
      const lost = firstValueFrom(mod.rpc.resets);
      await ser2net.kill();
      const ev = await lost;
      assert.equal(ev.reason, 'reconnect', url);
      await ser2net.start();
      const [after] = await mod.rpc.call('socket.adapter', []);
      assert.equal(after, true, `${url}: the next call succeeds after ser2net restarted`);
      assert.equal(mod.rpc.currentEpoch, epoch, 'the module did not reset');
      // at least once: a connection accepted while ser2net is still starting up is sometimes
      // closed by it a moment later, and the host then simply reconnects again
      assert.ok((mod.rpc.transport as ReconnectingTransport).reconnects >= 1, ser2net.log);
      if (url.startsWith('rfc2217')) assert.equal(await ptySpeed(pty), 230400, 'the switched baud was applied again after the reconnect');
    } finally {
      await mod.close();
    }
  }
});

test('a raw TCP port is not an RFC 2217 port: opening it as rfc2217:// fails TRANSPORT, not garbage', async () => {
  await assert.rejects(
    openTransport(`rfc2217://127.0.0.1:${ser2net.rawPort}`).then((t) => t.close()),
    (e: unknown) => isTetherError(e, 'TRANSPORT') && /raw TCP port never answers/.test((e as Error).message),
  );
});

test('without ser2net, a local serial port switches speed the same way (SerialTransport.setBaudRate): the pty follows', async () => {
  const local = await SimulatedModule.start(luatosFamily());
  const served = await servePty(local);
  try {
    const { path } = served;
    const t = await SerialTransport.open(path, { baudRate: 115200 });
    try {
      assert.equal(await ptySpeed(path), 115200);
      assert.equal(await t.setBaudRate(921600), 921600);
      assert.equal(t.baudRate, 921600);
      assert.equal(await ptySpeed(path), 921600);
      await assert.rejects(t.setBaudRate(0), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
    } finally {
      await t.close();
    }
    await assert.rejects(t.setBaudRate(9600), (e: unknown) => isTetherError(e, 'DISCONNECTED'));
  } finally {
    await local.stop();
    await served.close();
  }
});

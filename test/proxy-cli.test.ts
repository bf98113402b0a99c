/**
 * `tether proxy` as a user runs it (child processes of the built bin): curl fetches a file
 * from an HTTP server on 127.0.0.1 through `tether proxy --port sim` (and sim:luat,
 * sim:nodemcu), byte-exact; RFC 1929 with curl; --json logs one line per connection; usage
 * errors exit 2 before anything is opened. Needs curl (Debian package `curl`).
 */
import { startTripwire, type Tripwire } from './helpers/tripwire.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot } from '../src/util/repo-root.js';

const BIN = join(repoRoot(), 'dist/src/cli/bin.js');
const LOOP = '127.0.0.1';

/**
 * Bytes fetched per family: 1 MiB each, the size issue 10 asks for. LuatOS and Luat take about
 * 4 s each through the simulators; NodeMCU about 25 s on an idle machine (the agent holds the
 * socket while its UART backlog is full, so lwIP's 5840-byte window paces the server).
 */
const SIZES = { sim: 1 << 20, 'sim:luat': 1 << 20, 'sim:nodemcu': 1 << 20 } as const;
/** curl's --max-time per family (seconds): room for a loaded machine, not a speed assertion. */
const MAX_TIME = { sim: 60, 'sim:luat': 60, 'sim:nodemcu': 150 } as const;
/**
 * Line rate of the simulated UART (the simulators pace bytes at the baud; 1 MiB at 115200 would
 * take 91 s): `--baud`, a rate each module supports, which the agent also sets its UART up at.
 * LuatOS (luat_lib_uart.c's baud table) and Luat (8910 l_uart.c) 2000000, NodeMCU (platform.c) 921600.
 */
const BULK_BAUD = { sim: 2000000, 'sim:luat': 2000000, 'sim:nodemcu': 921600 } as const;

const body = randomBytes(1 << 20);
let http: HttpServer;
let httpPort = 0;
before(async () => {
  // GET /file?n=BYTES: the first BYTES of `body`, with Content-Length (keep-alive)
  http = createHttpServer((req, res) => {
    const n = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('n') ?? body.length);
    res.setHeader('content-length', n);
    res.end(body.subarray(0, n));
  });
  // curl keeps the connection alive; the test closes it (closeIdleConnections) once curl has
  // every byte. (A server FIN while bytes still wait in the LuatOS module is a different case:
  // see docs/proxy.md, "Limits".)
  http.keepAliveTimeout = 60000;
  await new Promise<void>((r) => http.listen(0, LOOP, () => r()));
  httpPort = (http.address() as AddressInfo).port;
});
after(async () => {
  http.closeAllConnections();
  await new Promise((r) => http.close(r));
});

/** curl must be installed: the test fails (never skips) with the Debian package to install. */
async function requireCurl(): Promise<void> {
  const ok = await new Promise<boolean>((resolve) => execFile('curl', ['--version'], (err) => resolve(!err)));
  assert.ok(ok, 'curl is not installed: install the Debian package `curl` (apt-get install -y curl); .ci/run installs it');
}

interface Curl {
  code: number;
  stdout: Buffer;
  stderr: string;
  ms: number;
}
function curl(args: string[], maxTimeS = 60): Promise<Curl> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', String(maxTimeS), ...args], { encoding: 'buffer', maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr: stderr.toString(), ms: Date.now() - t0 });
    });
  });
}

/** A running `tether proxy --json`: its listening port and the JSON lines it printed. */
interface Proxy {
  child: ChildProcess;
  port: number;
  lines: Array<Record<string, unknown>>;
  stderr: () => string;
  /** SIGINT, then the exit code. */
  stop(): Promise<number | null>;
}
async function startProxy(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Proxy> {
  const child = spawn(process.execPath, [BIN, 'proxy', '--listen', `${LOOP}:0`, '--json', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const lines: Array<Record<string, unknown>> = [];
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tether proxy did not start within 20 s: ${err}`)), 20000);
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const o = JSON.parse(l) as Record<string, unknown>;
      lines.push(o);
      if (o.event === 'listening') {
        clearTimeout(t);
        resolve(o.port as number);
      }
    });
    void exited.then((code) => reject(new Error(`tether proxy exited ${code}: ${err}`)));
  });
  return {
    child,
    port,
    lines,
    stderr: () => err,
    stop: async () => {
      child.kill('SIGINT');
      return exited;
    },
  };
}

async function until(cond: () => boolean, what: string, ms = 15000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const [port, size] of Object.entries(SIZES)) {
  test(`curl --socks5-hostname through tether proxy --port ${port} fetches ${size} bytes byte-exact; --json logs the connection`, async () => {
    await requireCurl();
    const p = await startProxy(['--port', port, '--baud', String(BULK_BAUD[port as keyof typeof BULK_BAUD])]);
    try {
      assert.equal(p.lines[0].family, { sim: 'luatos', 'sim:luat': 'luat', 'sim:nodemcu': 'nodemcu' }[port]);
      const r = await curl(['--socks5-hostname', `${LOOP}:${p.port}`, `http://${LOOP}:${httpPort}/file?n=${size}`], MAX_TIME[port as keyof typeof MAX_TIME]);
      assert.equal(r.code, 0, `curl exit ${r.code}: ${r.stderr}\nproxy: ${p.stderr()}`);
      assert.equal(r.stdout.length, size);
      assert.ok(r.stdout.equals(body.subarray(0, size)), 'the fetched bytes are byte-exact');
      process.stderr.write(`# ${port}: ${size} bytes through the proxy in ${r.ms} ms\n`);
      http.closeIdleConnections(); // the server's FIN ends the proxied connection
      await until(() => p.lines.some((l) => l.event === 'close'), 'the close line');
      const open = p.lines.find((l) => l.event === 'open')!;
      const close = p.lines.find((l) => l.event === 'close')!;
      assert.equal(open.target, `${LOOP}:${httpPort}`);
      assert.equal(close.target, `${LOOP}:${httpPort}`);
      assert.equal(close.reply, 0);
      assert.ok((close.bytesDown as number) > size, `bytesDown ${close.bytesDown} counts the body and the headers`);
      assert.ok((close.bytesUp as number) > 0);
      assert.equal(typeof close.durationMs, 'number');
    } finally {
      assert.equal(await p.stop(), 0, `exit code after SIGINT; stderr: ${p.stderr()}`);
    }
  });
}

test('tether proxy --user/--password-env: curl with the right credentials fetches, with wrong ones fails', async () => {
  await requireCurl();
  const p = await startProxy(['--port', 'sim', '--user', 'alice', '--password-env', 'TETHER_TEST_PROXY_PW'], { ...process.env, TETHER_TEST_PROXY_PW: 'pa55word' });
  try {
    assert.equal(p.lines[0].auth, true);
    const url = `http://${LOOP}:${httpPort}/file?n=1000`;
    const ok = await curl(['--socks5-hostname', `${LOOP}:${p.port}`, '--proxy-user', 'alice:pa55word', url]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(ok.stdout.equals(body.subarray(0, 1000)));
    const bad = await curl(['--socks5-hostname', `${LOOP}:${p.port}`, '--proxy-user', 'alice:wrong', url]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /auth|SOCKS/i);
    const none = await curl(['--socks5-hostname', `${LOOP}:${p.port}`, url]);
    assert.notEqual(none.code, 0);
    await until(() => p.lines.filter((l) => l.event === 'refused').length >= 2, 'two refused lines');
    const opened = p.lines.filter((l) => l.event === 'open');
    assert.equal(opened.length, 1, 'only the authenticated request opened a connection on the module');
  } finally {
    assert.equal(await p.stop(), 0);
  }
});

// ---------------------------------------------------------------------------------------
// usage errors: exit 2, nothing opened (a tripwire TCP server stands in for the module)

let tripwire: Tripwire;
before(async () => {
  tripwire = await startTripwire();
});
after(() => tripwire.close());

function tether(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 20000, env }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test('proxy usage errors exit 2 with one error before the module is opened', async () => {
  const mod = tripwire.url;
  const env: NodeJS.ProcessEnv = { ...process.env, TETHER_TEST_PW: 'x' };
  delete env.TETHER_TEST_UNSET;
  const cases: Array<[string[], RegExp]> = [
    [['proxy', '--port', mod, '--listen', '0.0.0.0:1080'], /not a loopback address.*--allow-remote/],
    [['proxy', '--port', mod, '--listen', '0.0.0.0:1080', '--allow-remote'], /--allow-remote requires authentication/],
    [['proxy', '--port', mod, '--user', 'u'], /--user and --password-env go together/],
    [['proxy', '--port', mod, '--user', 'u', '--password-env', 'TETHER_TEST_UNSET'], /TETHER_TEST_UNSET is not set/],
    [['proxy', '--port', mod, '--listen', '127.0.0.1:65536'], /--listen must be HOST:PORT/],
    [['proxy', '--listen', '127.0.0.1:0'], /Missing required argument: port/],
  ];
  const before = tripwire.connections;
  const runs = await Promise.all(cases.map(([args]) => tether(args, env)));
  cases.forEach(([args, message], i) => {
    const r = runs[i];
    const where = `tether ${args.join(' ')}\n${r.stderr}`;
    assert.equal(r.code, 2, where);
    assert.equal(r.stdout, '', where);
    const lines = r.stderr.trimEnd().split('\n');
    assert.match(lines[lines.length - 1], /^tether: /, where);
    assert.match(lines[lines.length - 1], message, where);
  });
  assert.equal(tripwire.connections, before, 'no usage error opened the module');
  // --allow-remote with credentials passes the checks (it is not run here: tests never bind off 127.0.0.1)
  const { checkProxyArgs } = await import('../src/cli/commands/proxy.js');
  assert.equal(checkProxyArgs({ listen: { host: '0.0.0.0', port: 1080 }, 'allow-remote': true, user: 'u', 'password-env': 'P' }, { P: 'pw' }), true);
});

test('--listen and the option checks, in-process', async () => {
  const { listenArg, checkProxyArgs } = await import('../src/cli/commands/proxy.js');
  assert.deepEqual(listenArg('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  assert.deepEqual(listenArg('[::1]:1080'), { host: '::1', port: 1080 });
  assert.deepEqual(listenArg(['127.0.0.1:1', 'localhost:2']), { host: 'localhost', port: 2 });
  for (const bad of ['127.0.0.1', ':1080', '127.0.0.1:x', '127.0.0.1:70000', '::1:1080', ''] as const) assert.throws(() => listenArg(bad), /--listen must be HOST:PORT/, bad);
  const loop = { host: '127.0.0.1', port: 0 };
  assert.equal(checkProxyArgs({ listen: loop }, {}), true);
  assert.equal(checkProxyArgs({ listen: { host: '::1', port: 1 } }, {}), true);
  assert.throws(() => checkProxyArgs({ listen: { host: '::', port: 1 } }, {}), /not a loopback address/);
  assert.throws(() => checkProxyArgs({ listen: loop, 'password-env': 'P' }, { P: 'x' }), /go together/);
  assert.throws(() => checkProxyArgs({ listen: loop, user: 'u', 'password-env': 'P' }, { P: '' }), /not set or empty/);
  assert.throws(() => checkProxyArgs({ listen: loop, user: 'u', 'password-env': 'P' }, { P: 'x'.repeat(256) }), /at most 255 bytes/);
  assert.throws(() => checkProxyArgs({ listen: loop, user: 'u'.repeat(256), 'password-env': 'P' }, { P: 'x' }), /1\.\.255 bytes/);
});

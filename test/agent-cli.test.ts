/**
 * `tether agent --family F --out DIR`: exactly the files that go onto the module plus
 * README.txt; the NodeMCU tether.lua is byte for byte what `tether flash` uploads and it
 * runs on the simulated ESP8266; usage errors exit 2 and write nothing.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentBundlePath, repoRoot } from '../src/util/repo-root.js';
import { minifyLua } from '../src/cli/commands/flash-repl.js';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import { RpcClient } from '../src/rpc/client.js';

const tmp = mkdtempSync(join(tmpdir(), 'tether-agent-cli-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const BIN = join(repoRoot(), 'dist/src/cli/bin.js');

function tether(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30000 });
}

const LAZY = ['tether_bundle.lua', 'tether_call.lua', 'tether_core.lua', 'tether_enc.lua', 'tether_gap.lua', 'tether_info.lua', 'tether_net.lua', 'tether_srv.lua', 'tether_sys.lua', 'tether_tcp.lua', 'tether_udp.lua'];

test('nodemcu: tether.lua and the tether_*.lua it loads on first use (what tether flash uploads) and README.txt; --init adds init.lua; the files run on the simulated ESP8266', async () => {
  const out = join(tmp, 'esp');
  const r = tether('agent', '--family', 'nodemcu', '--out', out, '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readdirSync(out).sort(), ['README.txt', 'tether.lua', ...LAZY]);
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.files.map((f: { name: string }) => f.name), ['tether.lua', ...LAZY, 'README.txt']);
  const lua = readFileSync(join(out, 'tether.lua'), 'latin1');
  // flash-impl uploads minifyLua(readFileSync(agentBundlePath('nodemcu'))) by default
  assert.equal(lua, minifyLua(readFileSync(agentBundlePath('nodemcu'), 'latin1')));
  assert.equal(report.files[0].bytes, Buffer.byteLength(lua, 'latin1'));
  assert.match(readFileSync(join(out, 'README.txt'), 'utf8'), /dofile\("tether\.lua"\)/);

  const withInit = join(tmp, 'esp-init');
  assert.equal(tether('agent', '--family', 'nodemcu', '--out', withInit, '--init', '--init-delay', '3000').status, 0);
  assert.deepEqual(readdirSync(withInit).sort(), ['README.txt', 'init.lua', 'tether.lua', ...LAZY]);
  assert.match(readFileSync(join(withInit, 'init.lua'), 'utf8'), /alarm\(3000, tmr\.ALARM_SINGLE.*dofile\("tether\.lua"\)/);

  // the written files on the simulated SPIFFS (in place of the bundled ones), the agent loads them from there
  const files = Object.fromEntries(LAZY.map((n) => [n, readFileSync(join(out, n), 'latin1')]));
  const sim = await SimulatedModule.start(nodemcuFamily({ files }), { agentSource: lua, bootNoise: false });
  try {
    const rpc = await RpcClient.open(sim.connect());
    try {
      assert.equal(rpc.hello.family, 'nodemcu');
      assert.equal(rpc.hello.fw?.endsWith('-sim'), true, 'hello\'s firmware fields come from tether_info.lua');
      const [h] = await rpc.call('net.createConnection', []);
      assert.ok(h !== null && typeof h === 'object', 'net.createConnection (tether_net.lua) made a socket handle');
    } finally {
      await rpc.close();
    }
  } finally {
    await sim.stop();
  }
});

test('nodemcu --lfs: the same files for an LFS image, README.txt says how to build and load it, init.lua starts the agent from LFS (on the simulated ESP8266 with those files in LFS, nothing of the agent on SPIFFS)', async () => {
  const out = join(tmp, 'esp-lfs');
  const r = tether('agent', '--family', 'nodemcu', '--out', out, '--lfs', '--init', '--init-delay', '100', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readdirSync(out).sort(), ['README.txt', 'init.lua', 'tether.lua', ...LAZY]);
  const readme = readFileSync(join(out, 'README.txt'), 'utf8');
  assert.match(readme, /luac\.cross -f -o lfs\.img tether\.lua tether_\*\.lua/);
  assert.match(readme, /node\.LFS\.reload\("lfs\.img"\)/);
  assert.match(readme, /node\.LFS\.get\("tether"\)\("lfs"\)/);
  // what luac.cross -f would put in the image: each file as the module of its name
  const lfs = Object.fromEntries(['tether.lua', ...LAZY].map((n) => [n.replace(/\.lua$/, ''), readFileSync(join(out, n), 'latin1')]));
  const sim = await SimulatedModule.start(nodemcuFamily({ boot: 'repl', lfs, files: { 'init.lua': readFileSync(join(out, 'init.lua'), 'latin1') } }), { bootNoise: false });
  try {
    const rpc = await RpcClient.open(sim.connect(), { handshakeTimeoutMs: 10000 });
    try {
      assert.equal(rpc.hello.family, 'nodemcu');
      const [h] = await rpc.call('net.createConnection', []);
      assert.ok(h !== null && typeof h === 'object', 'net.createConnection (tether_net from LFS) made a socket handle');
      const names = [...(sim.family as ReturnType<typeof nodemcuFamily>).files.keys()];
      assert.deepEqual(names, ['init.lua'], 'the agent ran from LFS alone');
    } finally {
      await rpc.close();
    }
  } finally {
    await sim.stop();
  }
});

for (const family of ['luatos', 'luat']) {
  test(`${family}: main.lua (the generated bundle, the script to add in Luatools) and README.txt`, () => {
    const out = join(tmp, family);
    const r = tether('agent', '--family', family, '--out', out);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(readdirSync(out).sort(), ['README.txt', 'main.lua']);
    assert.equal(readFileSync(join(out, 'main.lua'), 'utf8'), readFileSync(agentBundlePath(family as 'luat'), 'utf8'));
    assert.match(readFileSync(join(out, 'README.txt'), 'utf8'), /Luatools/);
    assert.match(r.stdout, /main\.lua \(\d+ bytes\)/);
  });
}

test('usage errors exit 2 before anything is written', () => {
  const cases: Array<[string[], RegExp]> = [
    [['agent', '--family', 'bogus', '--out', join(tmp, 'u1')], /Invalid values/],
    [['agent', '--out', join(tmp, 'u2')], /Missing required argument: family/],
    [['agent', '--family', 'nodemcu'], /Missing required argument: out/],
    [['agent', '--family', 'luatos', '--out', join(tmp, 'u3'), '--init'], /--init is for --family nodemcu/],
    [['agent', '--family', 'luat', '--out', join(tmp, 'u6'), '--lfs'], /--lfs is for --family nodemcu/],
    [['agent', '--family', 'nodemcu', '--out', join(tmp, 'u4'), '--init-delay', 'x'], /--init-delay must be an integer/],
    [['agent', '--family', 'nodemcu', '--out', join(tmp, 'u5'), '--bogus'], /Unknown argument: bogus/],
  ];
  for (const [args, msg] of cases) {
    const r = tether(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
  }
  for (const d of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6']) assert.equal(existsSync(join(tmp, d)), false, d);
  // an --out that is a file: a runtime refusal, nothing written
  const file = join(tmp, 'esp', 'tether.lua');
  const r = tether('agent', '--family', 'nodemcu', '--out', file);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /is not a directory/);
});

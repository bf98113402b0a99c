/**
 * `tether reboot` and `tether reset-sockets` (the built CLI, child processes), against
 * simulated modules: in-process (`--port sim`) and served on 127.0.0.1 over TCP (like ser2net)
 * so that the test can hold objects on the module and enable restarts in the agent settings.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { SimulatedModule } from '../src/sim/module.js';
import { luatosFamily } from '../src/sim/luatos/family.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import { RpcClient } from '../src/rpc/client.js';
import { Handle } from '../src/codec/values.js';

const BIN = join(repoRoot(), 'dist/src/cli/bin.js');

function tether(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 60000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test('reboot is refused by default: exit 1, the remote error names TETHER_ALLOW_RESTART (all three families)', async () => {
  for (const [port, fn] of [['sim', 'rtos\\.reboot'], ['sim:luat', 'sys\\.restart'], ['sim:nodemcu', 'node\\.restart']]) {
    const r = await tether(['reboot', '--port', port]);
    assert.equal(r.code, 1, `${port}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${fn} is off on this module: set TETHER_ALLOW_RESTART = true`), port);
    if (port !== 'sim') continue;
    const j = await tether(['reboot', '--port', port, '--json']);
    assert.equal(j.code, 1);
    const out = JSON.parse(j.stdout) as { error: { code: string; message: string } };
    assert.equal(out.error.code, 'REMOTE');
    assert.match(out.error.message, /TETHER_ALLOW_RESTART/);
  }
});

test('reboot with TETHER_ALLOW_RESTART = true: the module boots again, the CLI prints the new epoch and the time', async () => {
  const sim = await SimulatedModule.start(nodemcuFamily({ agentSettings: { TETHER_ALLOW_RESTART: true } }));
  try {
    const url = await sim.serveTcp(0, '127.0.0.1');
    const r = await tether(['reboot', '--port', url, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { family: string; fn: string; previousEpoch: number; epoch: number; ms: number };
    assert.equal(out.family, 'nodemcu');
    assert.equal(out.fn, 'node.restart');
    assert.notEqual(out.epoch, out.previousEpoch);
    assert.equal(typeof out.ms, 'number');
    assert.equal(sim.boots, 2, 'the module booted once more');
    const t = await tether(['reboot', '--port', url]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /^rebooted \(node\.restart\): boot epoch \d+ -> \d+, back after \d+ ms\n$/);
    assert.equal(sim.boots, 3);
  } finally {
    await sim.stop();
  }
});

test('reset-sockets: sockets an earlier session left are released, and counted', async () => {
  const sim = await SimulatedModule.start(luatosFamily());
  try {
    const url = await sim.serveTcp(0, '127.0.0.1');
    // another host (this test) makes 5 ctrls and crashes: its transport drops, no session close
    const line = sim.connect();
    const holder = await RpcClient.open(line);
    for (let i = 0; i < 5; i++) assert.ok((await holder.call('socket.create', [null]))[0] instanceof Handle);
    await line.close();
    const r = await tether(['reset-sockets', '--port', url, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { family: 'luatos', releasedAtOpen: 5, released: 0 });
    await holder.close();
    // all 8 ctrls are free again
    const again = await RpcClient.open(sim.connect());
    for (let i = 0; i < 8; i++) assert.ok((await again.call('socket.create', [null]))[0] instanceof Handle, `ctrl ${i + 1}`);
    await again.close(); // an RpcClient close ends the link only: the 8 ctrls stay until the next session
    const t = await tether(['reset-sockets', '--port', url]);
    assert.equal(t.code, 0, t.stderr);
    assert.equal(t.stdout, 'opening this session released 8 object(s) an earlier session left\nreleased 0 socket(s)\n');
    const s = await tether(['reset-sockets', '--port', 'sim:luat']);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(s.stdout, 'released 0 socket(s)\n');
  } finally {
    await sim.stop();
  }
});

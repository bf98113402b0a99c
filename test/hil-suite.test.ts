/**
 * The hardware-in-the-loop suite (hil/) runs green against the simulators of all three
 * families, so it cannot rot unnoticed: selected by a bench file (TETHER_TEST_BENCH) and by
 * TETHER_TEST_PORT; a missing or contradictory setting fails and says what to set.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';

/** The environment for a nested `node --test` run (without the outer runner's context, which would swallow its report). */
function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  for (const k of ['TETHER_TEST_BENCH', 'TETHER_TEST_MODULES', 'TETHER_TEST_PORT', 'TETHER_TEST_FAMILY', 'TETHER_ECHO_TCP', 'TETHER_ECHO_UDP', 'TETHER_ECHO_TLS', 'TETHER_ECHO_TLS_CA', 'TETHER_BAUD']) delete env[k];
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

function hil(extra: Record<string, string | undefined>, timeout = 120000) {
  return spawnSync(process.execPath, ['--test', join(repoRoot(), 'dist/hil/')], { env: childEnv(extra), encoding: 'utf8', timeout });
}

/** Names of the passing tests, per module (`# Subtest:` lines under each describe). */
function passed(stdout: string): string[] {
  return [...stdout.matchAll(/^\s*ok \d+ - (.*)$/gm)].map((m) => m[1].trim());
}

test('npm run test:hil with a bench of sim, sim:luat and sim:nodemcu passes every check of every family', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-hil-'));
  const bench = join(dir, 'bench.yaml');
  writeFileSync(bench, 'modules:\n  air780e: { port: sim }\n  air724ug: { port: "sim:luat" }\n  esp8266: { port: "sim:nodemcu", family: nodemcu }\n');
  const r = hil({ TETHER_TEST_BENCH: bench });
  assert.equal(r.status, 0, r.stdout.slice(-3000) + r.stderr);
  const ok = passed(r.stdout);
  for (const name of [
    'air780e (luatos, sim)',
    'air724ug (luat, sim:luat)',
    'esp8266 (nodemcu, sim:nodemcu)',
    'TLS: connect (certificate verified when a CA is given) and echo',
    'registered, and the data link is up (IP_READY_IND)',
    'SSL: connect (certificate verified when a CA is given) and echo',
    'the WiFi station has an IP (wifi.sta.status() = 5)',
    'UDP: a datagram comes back with the server port and ip',
    'TCP: 64 KiB echoed byte-exact (one send in flight until "sent")',
  ]) {
    assert.ok(ok.includes(name), `passed: ${name}`);
  }
  // 6 checks for LuatOS, 6 for Luat, 5 for NodeMCU (no TLS in its default build)
  assert.match(r.stdout, /# pass 17\b/);
  assert.match(r.stdout, /# fail 0\b/);
  assert.doesNotMatch(r.stdout, /# skipped [1-9]/);
});

test('TETHER_TEST_PORT=sim:luat alone selects the Luat checks', () => {
  const r = hil({ TETHER_TEST_PORT: 'sim:luat' });
  assert.equal(r.status, 0, r.stdout.slice(-3000) + r.stderr);
  assert.ok(passed(r.stdout).includes('TCP: 64 KiB echoed byte-exact (one sock_send in flight, every RECV_IND drained)'));
  assert.match(r.stdout, /# pass 6\b/);
  assert.match(r.stdout, /# fail 0\b/);
});

test('without TETHER_TEST_PORT the suite fails and says what to set', () => {
  const r = hil({}, 60000);
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /TETHER_TEST_PORT is not set/);
});

test('a real port without TETHER_TEST_FAMILY, or a family the simulator does not run, fails and says so', () => {
  const a = hil({ TETHER_TEST_PORT: '/dev/ttyUSB0' }, 60000);
  assert.notEqual(a.status, 0);
  assert.match(a.stdout, /TETHER_TEST_FAMILY: required for a port that is not sim:\.\.\.; set it to luatos, luat, nodemcu/);
  const b = hil({ TETHER_TEST_PORT: 'sim:nodemcu', TETHER_TEST_FAMILY: 'luat' }, 60000);
  assert.notEqual(b.status, 0);
  assert.match(b.stdout, /TETHER_TEST_FAMILY: the port sim:nodemcu is a simulated nodemcu module, but family says luat/);
});

/** The hardware-in-the-loop suite (hil/) runs green against the simulator, so it cannot rot unnoticed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';

/** The environment for a nested `node --test` run (without the outer runner's context, which would swallow its report). */
function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_TEST_CONTEXT;
  for (const [k, v] of Object.entries(extra)) if (v === undefined) delete env[k];
  return env;
}

test('npm run test:hil with TETHER_TEST_PORT=sim passes every check', () => {
  const root = repoRoot();
  const r = spawnSync(process.execPath, ['--test', join(root, 'dist/hil/')], { env: childEnv({ TETHER_TEST_PORT: 'sim' }), encoding: 'utf8', timeout: 120000 });
  assert.equal(r.status, 0, r.stdout.slice(-2000) + r.stderr);
  assert.match(r.stdout, /# pass 6\b/);
  assert.match(r.stdout, /# fail 0\b/);
});

test('without TETHER_TEST_PORT the suite fails and says what to set', () => {
  const r = spawnSync(process.execPath, ['--test', join(repoRoot(), 'dist/hil/')], { env: childEnv({ TETHER_TEST_PORT: undefined }), encoding: 'utf8', timeout: 60000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /TETHER_TEST_PORT is not set/);
});

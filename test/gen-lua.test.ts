import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { generatedFiles, staleFiles, families, bundleFiles, renderAgent, ROOT } from '../scripts/gen-lua.js';
import { LUA_CONSTANTS } from '../src/codec/constants.js';
import { agentBundlePath } from '../src/util/repo-root.js';

test('the committed protocol.lua matches src/codec/constants.ts (run: node dist/scripts/gen-lua.js)', () => {
  assert.deepEqual(staleFiles(), []);
  const proto = generatedFiles().get('firmware-shim/common/protocol.lua')!;
  for (const [k, v] of LUA_CONSTANTS) assert.match(proto, new RegExp(`\\b${k} = ${typeof v === 'number' ? v : '"'}`), k);
});

test('agent bundles are build outputs: dist/agents/<family>/main.lua is what the sources render, nothing is committed next to them', () => {
  assert.deepEqual(families(), ['luat', 'luatos', 'nodemcu']);
  const bundles = bundleFiles();
  for (const f of families()) {
    const p = `dist/agents/${f}/main.lua`;
    assert.equal(agentBundlePath(f as 'luat'), join(ROOT, p));
    assert.ok(bundles.get(p)!.includes('local TP = {'), f);
    assert.equal(readFileSync(join(ROOT, p), 'utf8'), renderAgent(f), `${p} is stale: run npm run build`);
    assert.equal(existsSync(join(ROOT, 'firmware-shim', f, 'main.lua')), false, `firmware-shim/${f}/main.lua must not exist: bundles live in dist/agents/`);
  }
  // and git tracks none (a stale copy in a checkout would be shipped by the package's files)
  const ls = spawnSync('git', ['ls-files', 'firmware-shim'], { cwd: ROOT, encoding: 'utf8' });
  if (ls.status === 0) assert.ok(!/main\.lua/.test(ls.stdout), ls.stdout);
});

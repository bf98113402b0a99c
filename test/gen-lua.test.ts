import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { generatedFiles, staleFiles, families, bundleFiles, renderAgent, inlineConstants, SPLIT_CORE_FAMILIES, ROOT } from '../scripts/gen-lua.js';
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
    if (SPLIT_CORE_FAMILIES.includes(f)) {
      // the constants are inlined (issue 8): no TP table in the heap, no TP.X lookup left anywhere
      assert.ok(bundles.get(p)!.includes('local TP = {}\n'), f);
      for (const [q, text] of bundles) if (q.startsWith(`dist/agents/${f}/`)) assert.doesNotMatch(text, /\bTP\.[A-Za-z_]/, q);
      assert.match(bundles.get(p)!, /local MOD = 4096\n/, 'TP.SEQ_MOD written as its value');
      // the shortcuts for speed are left out of every file (the heap is the bound there), the
      // long way they skip is in: the capability number is looked up by capname, not A.fns
      for (const [q, text] of bundles) if (q.startsWith(`dist/agents/${f}/`)) assert.doesNotMatch(text, /@fast|A\.fns\[tostring\(#A\.caps\)\]/, q);
      // nor the code for a HAL.txq or HAL.hold, which this family's HAL does not set
      for (const [q, text] of bundles) if (q.startsWith(`dist/agents/${f}/`)) assert.doesNotMatch(text, /@unsplit|HAL\.txq\(\) \+|L\.hw = /, q);
      assert.match(bundles.get(p)!, /string\.gsub\(ssub\(s, 2\), "\\16\(\.\)", UNESC\)/);
    } else {
      assert.ok(bundles.get(p)!.includes('local TP = {'), f);
      // one-file agents keep them
      assert.match(bundles.get(p)!, /-- @fast[^\n]*\n\s*A\.fns\[tostring\(#A\.caps\)\] = fn\n\s*-- @end fast\n/, f);
      assert.match(bundles.get(p)!, /-- @unsplit[^\n]*\n\s*if HAL\.txq then /, f);
    }
    assert.equal(readFileSync(join(ROOT, p), 'utf8'), renderAgent(f), `${p} is stale: run npm run build`);
    assert.equal(existsSync(join(ROOT, 'firmware-shim', f, 'main.lua')), false, `firmware-shim/${f}/main.lua must not exist: bundles live in dist/agents/`);
  }
  // and git tracks none (a stale copy in a checkout would be shipped by the package's files)
  const ls = spawnSync('git', ['ls-files', 'firmware-shim'], { cwd: ROOT, encoding: 'utf8' });
  if (ls.status === 0) assert.ok(!/main\.lua/.test(ls.stdout), ls.stdout);
});

test('inlineConstants writes a protocol constant as its Lua literal and refuses a name that is not one', () => {
  assert.equal(inlineConstants('local m, e = TP.SEQ_MOD, TP.E_HANDLE', 'x.lua'), 'local m, e = 4096, "BADHANDLE"');
  assert.equal(inlineConstants('if sfind(v, TP.SAFE) then', 'x.lua'), 'if sfind(v, "^[%w%._:/%-]*$") then');
  assert.throws(() => inlineConstants('x = TP.NOPE', 'x.lua'), /x\.lua: TP\.NOPE is not a protocol constant/);
});

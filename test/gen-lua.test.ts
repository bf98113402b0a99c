import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generatedFiles, staleFiles, families } from '../scripts/gen-lua.js';
import { LUA_CONSTANTS } from '../src/codec/constants.js';

test('generated Lua files match src/codec/constants.ts and the agent sources (run: node dist/scripts/gen-lua.js)', () => {
  assert.deepEqual(staleFiles(), []);
});

test('every wire constant appears in the generated protocol.lua, and every family is bundled', () => {
  const files = generatedFiles();
  const proto = files.get('firmware-shim/common/protocol.lua')!;
  for (const [k, v] of LUA_CONSTANTS) assert.match(proto, new RegExp(`\\b${k} = ${typeof v === 'number' ? v : '"'}`), k);
  assert.ok(families().includes('luatos'));
  for (const f of families()) assert.ok(files.get(`firmware-shim/${f}/main.lua`)!.includes('local TP = {'), f);
});

/** The incremental build removes compiled files whose source is gone (scripts/prune-dist.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { missingOutputs, pruneDist } from '../scripts/prune-dist.js';

test('pruneDist removes outputs of deleted sources and keeps the rest', () => {
  const root = mkdtempSync(join(tmpdir(), 'tether-prune-'));
  try {
    for (const d of ['src/a', 'test', 'dist/src/a', 'dist/test', 'dist/agents']) mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, 'src/a/kept.ts'), '');
    writeFileSync(join(root, 'test/kept.test.ts'), '');
    const outs = ['dist/src/a/kept.js', 'dist/src/a/kept.d.ts', 'dist/src/a/kept.js.map', 'dist/test/kept.test.js', 'dist/src/a/gone.js', 'dist/src/a/gone.d.ts', 'dist/src/a/gone.d.ts.map', 'dist/test/gone.test.js', 'dist/agents/main.lua', 'dist/.tsbuildinfo'];
    for (const o of outs) writeFileSync(join(root, o), '');
    const removed = pruneDist(root).sort();
    assert.deepEqual(removed, ['dist/src/a/gone.d.ts', 'dist/src/a/gone.d.ts.map', 'dist/src/a/gone.js', 'dist/test/gone.test.js']);
    for (const o of outs) assert.equal(existsSync(join(root, o)), !removed.includes(o), o);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('missingOutputs names the sources whose compiled .js is gone (tsc incremental would not emit it again)', () => {
  const root = mkdtempSync(join(tmpdir(), 'tether-prune-'));
  try {
    for (const d of ['src/a', 'scripts', 'dist/src/a', 'dist/scripts']) mkdirSync(join(root, d), { recursive: true });
    for (const f of ['src/a/x.ts', 'src/a/y.ts', 'src/a/types.d.ts', 'scripts/z.ts', 'dist/src/a/x.js', 'dist/scripts/z.js']) writeFileSync(join(root, f), '');
    assert.deepEqual(missingOutputs(root), ['src/a/y.ts']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

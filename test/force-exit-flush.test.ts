/**
 * `npm test` runs `node --test --test-force-exit`, which could drop the last verdicts of a test
 * file (nodejs/node#64833): test/helpers/flush-on-exit.ts, preloaded, makes each test file's
 * stdout pipe blocking. Here a file of 200 tests with long names (the case that loses most) runs
 * ten times with the preload; every run must report all 200. Without the preload 8 of 20 such
 * runs reported 197-199 on this machine, so ten clean runs by chance are about 1 in 200.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';

test('with the preload, --test-force-exit reports every verdict of a file (ten runs of 200 tests)', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-force-exit-'));
  try {
    const file = join(dir, 'many.test.mjs');
    writeFileSync(file, "import { test } from 'node:test';\nconst name = 'x'.repeat(2000);\nfor (let i = 1; i <= 200; i++) test(`t${i} ${name}`, () => {});\n");
    const preload = join(repoRoot(), 'dist/test/helpers/flush-on-exit.js');
    // the runner marks its children with NODE_TEST_CONTEXT: a nested runner must not inherit it
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const counts: string[] = [];
    for (let run = 0; run < 10; run++) {
      const r = spawnSync(process.execPath, ['--test', '--test-force-exit', '--import', preload, '--test-reporter=tap', file], { env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      assert.equal(r.status, 0, r.stderr);
      counts.push(/^# tests (\d+)$/m.exec(r.stdout)?.[1] ?? 'none');
    }
    assert.deepEqual(counts, Array(10).fill('200'), `tests reported per run: ${counts.join(' ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Every ```js example of docs/streams.md runs as written: each is written to a file inside the
 * package (so `import ... from 'tether-hil'` resolves to this build by the package's self-reference,
 * and `mqtt` to its dev dependency) and run with node; it must exit 0. The examples open simulated
 * modules and start their own servers on 127.0.0.1 (the MQTT one starts mosquitto: Debian package
 * `mosquitto`).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../../', import.meta.url);
const doc = readFileSync(new URL('docs/streams.md', root), 'utf8');
const examples = [...doc.matchAll(/^## ([^\n]+)[\s\S]*?(?=^## |$(?![\s\S]))/gm)].flatMap((sec) => [...sec[0].matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m, i) => ({ title: `${sec[1]}${i ? ` (${i + 1})` : ''}`, code: m[1] })));
const dir = new URL('dist/test/stream-docs/', root);

describe('docs/streams.md examples', () => {
  it('has examples for every section that promises one', () => {
    assert.ok(examples.length >= 8, `found ${examples.length} examples`);
  });
  for (const [i, ex] of examples.entries()) {
    it(`runs: ${ex.title}`, { timeout: 60000 }, async () => {
      if (ex.code.includes("'mqtt'")) assert.ok(existsSync('/usr/sbin/mosquitto'), 'mosquitto is not installed: install the Debian package `mosquitto`');
      mkdirSync(dir, { recursive: true });
      const file = new URL(`example-${i + 1}.mjs`, dir);
      writeFileSync(file, ex.code);
      const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = execFile(process.execPath, [fileURLToPath(file)], { timeout: 55000, cwd: fileURLToPath(root) }, (e, out, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }));
        child.stdin?.end();
      });
      assert.equal(r.code, 0, `example "${ex.title}" failed:\n${r.out}\n${r.err}`);
      assert.ok(r.out.trim().length > 0, 'the example printed its result');
    });
  }
});

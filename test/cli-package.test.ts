/**
 * The npm package: named `tether-hil` (the npm name `tether` is someone else's), bin
 * `tether`, engines that match what the code and its dependencies need, and a clean
 * clone that packs with dist/ built (prepack). The tarball of a clean copy of this tree
 * installs into an empty folder and `npx tether` works there, assets included.
 * Needs npm and the npm registry (or its cache) for the dependencies.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';

const root = repoRoot();
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const tmp = mkdtempSync(join(tmpdir(), 'tether-pack-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
function sh(cmd: string, args: string[], cwd: string, timeoutMs = 180000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test('package.json: name tether-hil, bin tether, honest engines, prepack builds', () => {
  assert.equal(pkg.name, 'tether-hil');
  assert.deepEqual(pkg.bin, { tether: 'dist/src/cli/bin.js' });
  // zlib.crc32 (20.15 / 22.2), require(esm) for CommonJS users (20.19 / 22.12), and yargs 18's own engines
  assert.equal(pkg.engines.node, '^20.19.0 || ^22.12.0 || >=23');
  const yargsEngines = JSON.parse(readFileSync(join(root, 'node_modules/yargs/package.json'), 'utf8')).engines.node;
  assert.equal(pkg.engines.node, yargsEngines, 'no looser than the CLI parser allows');
  assert.match(pkg.scripts.prepack, /clean.*build/);
  assert.equal(pkg.scripts.prepare, undefined, 'no install-time script for those who install the package');
  assert.match(pkg.scripts.test, /^npm run -s build && /);
  assert.match(pkg.scripts.start, /^npm run -s build && node dist\/src\/cli\/bin\.js diag$/);
  for (const f of ['dist/src', 'dist/agents', 'firmware-shim', 'fixtures', 'docs', 'scripts/pty-relay.py']) assert.ok(pkg.files.includes(f), f);
});

test('a clean copy of the tree packs with dist/ built; the tarball installs and `npx tether` works', async () => {
  // a clean clone: the sources without dist/ (node_modules linked, as after `npm install`)
  const clone = join(tmp, 'clone');
  for (const entry of readdirSync(root)) {
    if (['node_modules', 'dist', '.git'].includes(entry)) continue;
    cpSync(join(root, entry), join(clone, entry), { recursive: true });
  }
  symlinkSync(join(root, 'node_modules'), join(clone, 'node_modules'), 'dir');
  assert.equal(existsSync(join(clone, 'dist')), false);
  const packed = await sh(npm, ['pack', '--json', '--pack-destination', tmp], clone);
  assert.equal(packed.code, 0, packed.stderr);
  const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0];
  const files: string[] = info.files.map((f: { path: string }) => f.path);
  for (const want of ['dist/src/cli/bin.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/agents/luatos/main.lua', 'dist/agents/luat/main.lua', 'dist/agents/nodemcu/main.lua', 'fixtures/tls/server.crt', 'docs/cli.md', 'scripts/pty-relay.py', 'package.json', 'README.md']) {
    assert.ok(files.includes(want), `${want} in the tarball`);
  }
  assert.ok(!files.some((f) => f.startsWith('dist/test/') || f.startsWith('src/') || f.startsWith('node_modules/')), 'no tests, sources or dependencies');
  const tgz = join(tmp, info.filename);

  const app = join(tmp, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
  const inst = await sh(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', tgz], app);
  assert.equal(inst.code, 0, `npm install of the tarball (needs the npm registry or its cache): ${inst.stderr}`);

  const help = await sh(npm, ['exec', '--offline', '--', 'tether', '--help'], app);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^tether <command> \[options\]/);
  // the installed copy finds its agent files and TLS fixtures: a full diag of the simulator
  const diag = await sh(process.execPath, [join(app, 'node_modules/tether-hil/dist/src/cli/bin.js'), 'diag', '--json'], app, 60000);
  assert.equal(diag.code, 0, diag.stdout + diag.stderr);
  const report = JSON.parse(diag.stdout.trim().split('\n').pop()!);
  assert.equal(report.complete, true);
  // the library loads from ESM and (Node >= 20.19, require(esm)) from CommonJS
  const esm = await sh(process.execPath, ['--input-type=module', '-e', "import { connect } from 'tether-hil'; console.log(typeof connect)"], app);
  assert.equal(esm.stdout.trim(), 'function', esm.stderr);
  const cjs = await sh(process.execPath, ['-e', "console.log(typeof require('tether-hil').connect)"], app);
  assert.equal(cjs.stdout.trim(), 'function', cjs.stderr);
});

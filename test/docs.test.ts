/**
 * The documentation is self-contained and every example in it runs.
 *
 * - Links: every Markdown link in README.md and docs/ points at a file in this repository
 *   (and at a heading that exists there); nothing links out of the repository, and a
 *   path written in backticks (`docs/x.md`, `src/...`) names a file that exists.
 * - Examples: every fenced block carries a language. `ts`/`js` blocks are compiled and run
 *   with node against the simulated modules (a `// prints: TEXT` comment is checked against
 *   what the example printed); `sh` blocks run under bash, in a folder where `tether-hil` is
 *   installed as a user installs it (so `tether` and `npx tether` are the built command);
 *   `sh ci` blocks are the set-up commands that `.ci/run` itself runs verbatim; `lua` blocks
 *   must compile under stock Lua 5.1 (`luac -p`; the WebAssembly build, test/helpers/lua.ts); `json` and `yaml` blocks must parse; `text` blocks are not code
 *   (a command for another tool or for hardware that is not here).
 * - `sh repo` and `ts repo` blocks run in the repository itself (they name its files or npm scripts).
 *
 * The variables an example may use are set per document by an HTML comment
 * `<!-- example-env: PORT=sim:luat -->` or per block in the fence's info string
 * (```` ```sh PORT=pty:nodemcu-repl ````: a simulated module served on a pseudo-terminal); always set: `PORT` (default `sim`), `ECHO_TCP`,
 * `ECHO_UDP`, `ECHO_TLS` (`127.0.0.1:PORT` of loopback echo services started here) and
 * `ECHO_TLS_CA` (the CA file of that TLS service).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import ts from 'typescript';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from '../src/util/repo-root.js';
import { luacCheck } from './helpers/lua.js';
import { startEchoServers, type EchoServers } from '../src/diag/echo-servers.js';
import { SimulatedModule } from '../src/sim/module.js';
import { SIM_FAMILIES } from '../src/sim/families.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';

const root = repoRoot();

/** README.md and every .md under docs/, as repository-relative paths. */
function markdownFiles(): string[] {
  const out = ['README.md'];
  const walk = (dir: string): void => {
    for (const name of readdirSync(join(root, dir)).sort()) {
      const rel = join(dir, name);
      if (statSync(join(root, rel)).isDirectory()) walk(rel);
      else if (name.endsWith('.md')) out.push(rel);
    }
  };
  walk('docs');
  return out;
}

interface Block {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  flags: string[];
  code: string;
}

/** Fenced blocks (``` at any indentation) and the text outside them. */
function parse(file: string): { blocks: Block[]; prose: { line: number; text: string }[] } {
  const lines = readFileSync(join(root, file), 'utf8').split('\n');
  const blocks: Block[] = [];
  const prose: { line: number; text: string }[] = [];
  let open: { line: number; indent: number; lang: string; flags: string[]; body: string[] } | undefined;
  lines.forEach((l, i) => {
    const fence = /^(\s*)```(.*)$/.exec(l);
    if (open) {
      if (fence && fence[2].trim() === '') {
        blocks.push({ file, line: open.line, lang: open.lang, flags: open.flags, code: open.body.join('\n') + '\n' });
        open = undefined;
      } else open.body.push(l.startsWith(' '.repeat(open.indent)) ? l.slice(open.indent) : l.trimStart());
    } else if (fence) {
      const [lang = '', ...flags] = fence[2].trim().split(/\s+/);
      open = { line: i + 1, indent: fence[1].length, lang, flags, body: [] };
    } else prose.push({ line: i + 1, text: l });
  });
  assert.equal(open, undefined, `${file}:${open?.line}: code block never closed`);
  return { blocks, prose };
}

/** GitHub's heading anchors: lowercase, punctuation dropped, spaces to dashes. */
function anchors(file: string): Set<string> {
  const set = new Set<string>();
  for (const { text } of parse(file).prose) {
    const h = /^#{1,6}\s+(.*)$/.exec(text);
    if (!h) continue;
    let slug = h[1].trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    let n = 0;
    while (set.has(n ? `${slug}-${n}` : slug)) n++;
    set.add(n ? `${slug}-${n}` : slug);
  }
  return set;
}

const files = markdownFiles();

test('docs: no link leaves the repository or points at a missing file or heading', () => {
  const problems: string[] = [];
  for (const file of files) {
    for (const { line, text } of parse(file).prose) {
      const where = `${file}:${line}`;
      if (/\.\.\/shared\b/.test(text)) problems.push(`${where}: refers to ../shared, which a user of this repository does not have`);
      // links outside inline code (`handlers[msg](param)` is code, not a link)
      for (const m of text.replace(/`[^`]*`/g, '').matchAll(/\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
        const target = m[1];
        if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) {
          problems.push(`${where}: links out of the repository: ${target}`);
          continue;
        }
        const [path, anchor] = target.split('#');
        const abs = path === '' ? join(root, file) : resolve(root, dirname(file), path);
        if (relative(root, abs).startsWith('..')) problems.push(`${where}: link leaves the repository: ${target}`);
        else if (!existsSync(abs)) problems.push(`${where}: link to a missing file: ${target}`);
        else if (anchor && abs.endsWith('.md') && !anchors(relative(root, abs)).has(anchor)) problems.push(`${where}: no heading #${anchor} in ${relative(root, abs)}`);
      }
      for (const m of text.matchAll(/`((?:docs|src|test|scripts|firmware-shim|fixtures|hil)\/[\w./-]+\.(?:md|ts|lua|py|json|pem|yaml))`/g)) {
        if (!existsSync(join(root, m[1]))) problems.push(`${where}: names a file that does not exist: ${m[1]}`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test('the project does not depend on files outside the repository (../shared)', () => {
  const hits: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(join(root, dir))) {
      const rel = join(dir, name);
      if (statSync(join(root, rel)).isDirectory()) walk(rel);
      else if (/\.(ts|lua|py|md|json)$/.test(name)) {
        readFileSync(join(root, rel), 'utf8').split('\n').forEach((l, i) => {
          if (/(\.\.|\/work)\/shared\//.test(l)) hits.push(`${rel}:${i + 1}`);
        });
      }
    }
  };
  for (const d of ['src', 'test', 'firmware-shim', 'scripts', 'hil', 'fixtures']) walk(d);
  assert.deepEqual(hits, []);
});

const LANGS = new Set(['ts', 'js', 'sh', 'text', 'lua', 'json', 'yaml']);
const allBlocks = files.flatMap((f) => parse(f).blocks);

test('docs: every code block says what it is', () => {
  const bad = allBlocks.filter((b) => !LANGS.has(b.lang)).map((b) => `${b.file}:${b.line}: \`\`\`${b.lang} (use one of ${[...LANGS].join(', ')})`);
  assert.deepEqual(bad, []);
  assert.ok(allBlocks.some((b) => b.lang === 'ts') && allBlocks.some((b) => b.lang === 'sh'), 'the docs show TypeScript and shell examples');
});

test('docs: the set-up commands (sh ci) are exactly what .ci/run runs', () => {
  const ci = readFileSync(join(root, '.ci/run'), 'utf8').split('\n').map((l) => l.trim());
  const setup = allBlocks.filter((b) => b.lang === 'sh' && b.flags.includes('ci'));
  assert.ok(setup.length >= 2, 'README shows the set-up commands');
  for (const b of setup) {
    for (const cmd of b.code.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))) {
      assert.ok(ci.includes(cmd), `${b.file}:${b.line}: .ci/run does not run \`${cmd}\``);
    }
  }
});

test('docs: lua blocks compile, json and yaml blocks parse', async () => {
  for (const b of allBlocks.filter((x) => x.lang === 'json')) assert.doesNotThrow(() => JSON.parse(b.code), `${b.file}:${b.line}`);
  for (const b of allBlocks.filter((x) => x.lang === 'yaml')) assert.doesNotThrow(() => parseYaml(b.code, { uniqueKeys: false }), `${b.file}:${b.line}`); // ser2net's YAML repeats `connection:`
  for (const b of allBlocks.filter((x) => x.lang === 'lua')) {
    assert.equal(luacCheck('5.1', b.code), undefined, `${b.file}:${b.line}: Lua 5.1 luac -p`);
  }
});

// ---- running the examples ---------------------------------------------------

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run a command in its own process group; when it ends (or times out) the whole group is
 * killed, so an example's background jobs (`server &`) never outlive it.
 */
function run(cmd: string, args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((done) => {
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const killGroup = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    const timer = setTimeout(() => {
      killed = true;
      killGroup();
    }, o.timeoutMs ?? 60000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      done({ code: e.code === 'ENOENT' ? 127 : 1, stdout, stderr: stderr + String(e) });
    });
    // the shell exited: end its background jobs too, so their open stdout cannot hold 'close' back
    child.on('exit', killGroup);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      killGroup();
      done({ code: code ?? (signal ? 128 : 1), stdout, stderr: stderr + (killed ? '\n(killed: took too long)' : '') });
    });
    child.stdin.end(o.input ?? '');
  });
}

let project = '';
let echo: EchoServers;

before(async () => {
  assert.ok(existsSync(join(root, 'dist/src/cli/bin.js')), 'build first (npm run build)');
  // A folder set up as `npm install tether-hil` leaves it: the package, its dependencies, its bin.
  project = mkdtempSync(join(tmpdir(), 'tether-docs-'));
  mkdirSync(join(project, 'node_modules/.bin'), { recursive: true });
  symlinkSync(root, join(project, 'node_modules/tether-hil'), 'dir');
  // what examples import besides the package: its dependency rxjs, and mqtt (a dev dependency) for the MQTT example
  for (const dep of ['rxjs', 'mqtt']) symlinkSync(join(root, 'node_modules', dep), join(project, 'node_modules', dep), 'dir');
  // npm links the bin and makes it executable; a wrapper does the same without touching dist/
  writeFileSync(join(project, 'node_modules/.bin/tether'), `#!/bin/sh\nexec "${process.execPath}" "${join(root, 'dist/src/cli/bin.js')}" "$@"\n`, { mode: 0o755 });
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'docs-examples', private: true, type: 'module' }));
  echo = await startEchoServers({ tls: { key: readFileSync(join(root, 'fixtures/tls/server.key')), cert: readFileSync(join(root, 'fixtures/tls/server.crt')) } });
});

after(async () => {
  await echo?.close();
  for (const sim of ptySims) await sim.stop();
  if (project) rmSync(project, { recursive: true, force: true });
});

/** The `<!-- example-env: K=V ... -->` settings of a document. */
function exampleEnv(file: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of readFileSync(join(root, file), 'utf8').matchAll(/<!--\s*example-env:([^>]*)-->/g)) {
    for (const pair of m[1].trim().split(/\s+/)) {
      const [k, ...v] = pair.split('=');
      env[k] = v.join('=');
    }
  }
  return env;
}

/** Simulated modules served on a pseudo-terminal for `PORT=pty:FAMILY` (stopped after the run). */
const ptySims: SimulatedModule[] = [];

async function envFor(file: string, block?: Block): Promise<NodeJS.ProcessEnv> {
  const hp = (e: { host: string; port: number }) => `${e.host}:${e.port}`;
  const own = exampleEnv(file);
  // a block may set its own, in the fence's info string: ```sh PORT=pty:nodemcu-repl
  for (const f of block?.flags ?? []) if (f.includes('=')) own[f.slice(0, f.indexOf('='))] = f.slice(f.indexOf('=') + 1);
  if (own.PORT?.startsWith('pty:')) {
    // `pty:nodemcu-repl`: a simulated ESP8266 that boots into its stock REPL (what `tether flash` meets)
    const [family, boot] = own.PORT.slice(4).split('-');
    const fam = family === 'nodemcu' ? nodemcuFamily(boot === 'repl' ? { boot: 'repl' } : {}) : SIM_FAMILIES[family]?.create();
    assert.ok(fam, `${file}: unknown simulated family in example-env PORT=${own.PORT}`);
    const sim = await SimulatedModule.start(fam, { bootDelayMs: 50 });
    ptySims.push(sim);
    own.PORT = await sim.servePty();
  }
  return {
    ...process.env,
    PATH: `${join(project, 'node_modules/.bin')}${sep === '/' ? ':' : ';'}${process.env.PATH ?? ''}`,
    PORT: 'sim',
    ECHO_TCP: hp(echo.tcp),
    ECHO_UDP: hp(echo.udp),
    ECHO_TLS: hp(echo.tls!),
    ECHO_TLS_CA: join(root, 'fixtures/tls/server.crt'),
    ECHO_NAME: 'localhost',
    npm_config_yes: 'false',
    npm_config_offline: 'true',
    ...own,
  };
}

/**
 * The fixed loopback ports a shell example listens on as a reader would run it (`--listen
 * 127.0.0.1:1080`, `python3 -m http.server 8000`; port 0 = any free one, not listed).
 */
function fixedPorts(code: string): number[] {
  const ports = [...code.matchAll(/--listen\s+127\.0\.0\.1:(\d+)|http\.server\s+(\d+)/g)].map((m) => Number(m[1] ?? m[2]));
  return ports.filter((p) => p > 0);
}

/** Fails, naming the port and the example, when something already listens on 127.0.0.1:`port`. */
async function assertPortFree(port: number, where: string): Promise<void> {
  const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const srv = createServer();
    srv.once('error', (e) => resolve(e));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(undefined)));
  });
  assert.equal(err, undefined, `${where}: the example listens on 127.0.0.1:${port}, which is ${err?.code === 'EADDRINUSE' ? 'in use by another program' : `not available (${err?.code})`}: stop that program (or run this test file alone) and run again`);
}

let n = 0;
for (const b of allBlocks) {
  if (b.lang === 'ts' || b.lang === 'js') {
    test(`docs example runs: ${b.file}:${b.line} (${b.lang})`, { timeout: 120000 }, async () => {
      const js = b.lang === 'ts'
        ? ts.transpileModule(b.code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 }, reportDiagnostics: true })
        : { outputText: b.code, diagnostics: [] };
      assert.deepEqual((js.diagnostics ?? []).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')), []);
      const path = join(project, `example-${++n}.mjs`);
      writeFileSync(path, js.outputText);
      const r = await run(process.execPath, [path], { cwd: b.flags.includes('repo') ? root : project, env: await envFor(b.file, b), timeoutMs: 90000 });
      assert.equal(r.code, 0, `${b.file}:${b.line} exited ${r.code}\n${r.stderr}\n${r.stdout}`);
      for (const m of b.code.matchAll(/\/\/\s*prints:\s*(.+)$/gm)) {
        assert.ok(r.stdout.includes(m[1].trim()), `${b.file}:${b.line}: should print "${m[1].trim()}", printed:\n${r.stdout}`);
      }
    });
  } else if (b.lang === 'sh' && !b.flags.includes('ci')) {
    test(`docs example runs: ${b.file}:${b.line} (sh)`, { timeout: 180000 }, async () => {
      const cwd = b.flags.includes('repo') ? root : project;
      for (const port of fixedPorts(b.code)) await assertPortFree(port, `${b.file}:${b.line}`);
      const r = await run('bash', ['-e', '-o', 'pipefail', '-c', b.code], { cwd, env: await envFor(b.file, b), timeoutMs: 150000 });
      assert.equal(r.code, 0, `${b.file}:${b.line} exited ${r.code}\n${r.stderr}\n${r.stdout}`);
      for (const m of b.code.matchAll(/#\s*prints:\s*(.+)$/gm)) {
        assert.ok(r.stdout.includes(m[1].trim()), `${b.file}:${b.line}: should print "${m[1].trim()}", printed:\n${r.stdout}`);
      }
    });
  }
}

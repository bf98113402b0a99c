/**
 * NodeMCU's Lua 5.1 core is built with LUAI_MAXVARS 50 (nodemcu-firmware app/lua/luaconf.h:547
 * at 88bd9e01; stock Lua: 200) and LUAI_MAXUPVALUES 60 (:554): a function with more than 50
 * locals active at once does not compile on the module ("main function has more than 50 local
 * variables", lparser.c errorlimit). Debian's lua5.1 allows 200, so only a count catches it.
 *
 * 1. The count: max overlap of the locals' pc ranges in `luac5.1 -l -l` listings, calibrated
 *    against stock luac5.1's own limit (200 accepted, 201 refused, both counted exactly).
 * 2. Every NodeMCU agent source file and the generated bundle: <= 50 locals, <= 60 upvalues.
 * 3. The simulated NodeMCU refuses an agent over the limit with the firmware's message, also
 *    for chunks loaded with load()/dofile() at its Lua prompt.
 * FAILS (never skips) without luac5.1: apt-get install -y lua5.1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { maxActiveLocals, type LocalRange } from '../src/sim/lua-vm.js';
import { lazyAgentFiles, renderAgent } from '../scripts/gen-lua.js';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';

const MAXVARS = 50;
const MAXUPVALUES = 60;

interface FnInfo {
  /** "main" or the function's first line */
  where: string;
  linedefined: number;
  locals: LocalRange[];
  upvalues: number;
}

/** Parse `luac5.1 -p -l -l FILE`: every function with its locals' pc ranges and upvalue count. */
function luacFunctions(file: string): { fns: FnInfo[]; error?: string } {
  const r = spawnSync('luac5.1', ['-p', '-l', '-l', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) assert.fail('luac5.1 is not installed: run "apt-get install -y lua5.1" (.ci/run does this)');
  if (r.status !== 0) return { fns: [], error: r.stderr.trim() };
  const fns: FnInfo[] = [];
  let cur: FnInfo | undefined;
  let inLocals = false;
  for (const line of r.stdout.split('\n')) {
    const h = /^(main|function) <[^>]*:(\d+),(\d+)>/.exec(line);
    if (h) {
      cur = { where: h[1] === 'main' ? 'main' : `line ${h[2]}`, linedefined: Number(h[2]), locals: [], upvalues: 0 };
      fns.push(cur);
      inLocals = false;
      continue;
    }
    if (!cur) continue;
    if (/^locals \(\d+\)/.test(line)) {
      inLocals = true;
      continue;
    }
    const u = /^upvalues \((\d+)\)/.exec(line);
    if (u) {
      cur.upvalues = Number(u[1]);
      inLocals = false;
      continue;
    }
    if (/^constants \(/.test(line)) inLocals = false;
    // "\t<index>\t<name>\t<startpc+1>\t<endpc+1>"
    const l = inLocals ? /^\t\d+\t\S+(?: \S+)*\t(\d+)\t(\d+)$/.exec(line) : null;
    if (l) cur.locals.push({ startpc: Number(l[1]), endpc: Number(l[2]) });
  }
  return { fns };
}

function withTmp<T>(files: Record<string, string>, f: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'tether-locals-'));
  try {
    for (const [k, v] of Object.entries(files)) writeFileSync(join(dir, k), v);
    return f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A chunk whose main function declares n locals that are all active at the end. */
function manyLocals(n: number, prefix = ''): string {
  const names = Array.from({ length: n }, (_, i) => `v${i}`);
  return `${prefix}${names.map((v, i) => `local ${v} = ${i}`).join('\n')}\nreturn ${names.slice(0, 3).join(' + ')}\n`;
}

test('the count matches stock luac5.1: 200 active locals compile and count 200, 201 stop its parser', () => {
  withTmp({ 'ok.lua': manyLocals(200), 'over.lua': manyLocals(201), 'loop.lua': `for i = 1, 2 do local a, b = i, i end\nlocal c\n` }, (dir) => {
    const ok = luacFunctions(join(dir, 'ok.lua'));
    assert.equal(ok.error, undefined);
    assert.equal(maxActiveLocals(ok.fns[0]!.locals), 200);
    const over = luacFunctions(join(dir, 'over.lua'));
    assert.match(over.error ?? '', /main function has more than 200 local variables/);
    // for-loop control variables count ((for index), (for limit), (for step), i): 6 at most, then c alone
    const loop = luacFunctions(join(dir, 'loop.lua'));
    assert.equal(maxActiveLocals(loop.fns[0]!.locals), 6);
  });
});

test('every NodeMCU agent file and the generated bundle: at most 50 active locals and 60 upvalues per function', () => {
  const root = repoRoot();
  const files: Record<string, string> = {};
  const lazy = readdirSync(join(root, 'firmware-shim', 'nodemcu')).filter((n) => /^tether_.*\.lua$/.test(n)).map((n) => `nodemcu/${n}`);
  assert.ok(lazy.length >= 5, 'the files the agent loads on first use are checked too');
  for (const p of ['common/core.lua', 'nodemcu/config.lua', 'nodemcu/agent.lua', ...lazy]) {
    files[p.replace('/', '-')] = readFileSync(join(root, 'firmware-shim', p), 'utf8');
  }
  files['bundle.lua'] = renderAgent('nodemcu', root);
  // and the generated files loaded on first use (tether_call.lua: the core's calls part)
  for (const [n, text] of lazyAgentFiles('nodemcu', root)) files[`lazy-${n}`] = text;
  withTmp(files, (dir) => {
    for (const name of Object.keys(files)) {
      const { fns, error } = luacFunctions(join(dir, name));
      assert.equal(error, undefined, `${name}: ${error}`);
      assert.ok(fns.length > 0, name);
      for (const f of fns) {
        const n = maxActiveLocals(f.locals);
        assert.ok(n <= MAXVARS, `${name}: function at ${f.where} has ${n} active locals (NodeMCU's Lua 5.1 allows ${MAXVARS})`);
        assert.ok(f.upvalues <= MAXUPVALUES, `${name}: function at ${f.where} has ${f.upvalues} upvalues (limit ${MAXUPVALUES})`);
      }
    }
  });
});

test('the count flags a nested function over 50 and passes one at exactly 50', () => {
  const body = (n: number) => `local x = 1\nlocal function f()\n${manyLocals(n)}end\nreturn f\n`;
  withTmp({ 'fifty.lua': body(50), 'over.lua': body(51) }, (dir) => {
    const fifty = luacFunctions(join(dir, 'fifty.lua')).fns;
    assert.equal(Math.max(...fifty.map((f) => maxActiveLocals(f.locals))), 50);
    const over = luacFunctions(join(dir, 'over.lua')).fns;
    const bad = over.filter((f) => maxActiveLocals(f.locals) > MAXVARS);
    assert.deepEqual(bad.map((f) => f.where), ['line 2']);
  });
});

async function bootWith(agentSource: string): Promise<{ sim: SimulatedModule; out: () => string }> {
  const fam = nodemcuFamily();
  const sim = await SimulatedModule.start(fam, { agentSource, bootNoise: false });
  let rx = '';
  const t = sim.connect();
  t.onData((d) => (rx += Buffer.from(d).toString('latin1')));
  return { sim, out: () => rx };
}

test('simulated NodeMCU: an agent with 51 active locals in its main chunk does not load (firmware parser message)', async () => {
  const { sim, out } = await bootWith(manyLocals(51, 'MARK = "ran"\n'));
  try {
    await sim.restart('power cycle with the UART watched'); // the first boot's console went out before we listened
    for (let i = 0; i < 50 && !/local variables/.test(out()); i++) await new Promise((r) => setTimeout(r, 10));
    // what lua.c prints for a failing init.lua / dofile at the prompt, on the UART
    assert.match(out(), /tether\.lua:\d+: main function has more than 50 local variables/);
    const vm = sim.currentVm!;
    // the chunk never ran: its first statement did not set MARK
    assert.equal(vm.runString('assert(MARK == nil, "agent ran")', '=t'), undefined);
    assert.match(vm.runString('error(tostring(MARK))', '=t') ?? '', /nil/);
  } finally {
    await sim.stop();
  }
  const ok = await bootWith(manyLocals(50, 'MARK = "ran"\n'));
  try {
    assert.equal(ok.sim.currentVm!.runString('assert(MARK == "ran")', '=t'), undefined);
  } finally {
    await ok.sim.stop();
  }
});

test('simulated NodeMCU: load() and dofile() refuse a function over 50 locals with the firmware message', async () => {
  const fam = nodemcuFamily({ boot: 'repl', files: { 'big.lua': `local a = 1\nlocal function g()\n${manyLocals(51)}end\n` } });
  const sim = await SimulatedModule.start(fam, { bootNoise: false });
  try {
    const vm = sim.currentVm!;
    let got: string[] = [];
    vm.registerGlobal('rec', (a) => {
      got.push(a.str(1));
    });
    assert.equal(vm.runString(`local f, e = load(${JSON.stringify(manyLocals(51))}, "@x.lua") rec(tostring(f) .. "|" .. tostring(e))`, '=t'), undefined);
    assert.match(got[0]!, /^nil\|x\.lua:\d+: main function has more than 50 local variables$/);
    got = [];
    assert.equal(vm.runString(`local ok, e = pcall(dofile, "big.lua") rec(tostring(ok) .. "|" .. tostring(e))`, '=t'), undefined);
    assert.match(got[0]!, /^false\|big\.lua:\d+: function at line 2 has more than 50 local variables$/);
    got = [];
    assert.equal(vm.runString(`local f = load(${JSON.stringify(manyLocals(50))}) rec(type(f))`, '=t'), undefined);
    assert.deepEqual(got, ['function']);
  } finally {
    await sim.stop();
  }
});

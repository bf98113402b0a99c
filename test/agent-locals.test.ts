/**
 * NodeMCU's Lua 5.1 core is built with LUAI_MAXVARS 50 (nodemcu-firmware app/lua/luaconf.h:547
 * at 88bd9e01; stock Lua: 200) and LUAI_MAXUPVALUES 60 (:554): a function with more than 50
 * locals active at once does not compile on the module ("main function has more than 50 local
 * variables", lparser.c errorlimit). Debian's lua5.1 allows 200, so only a count catches it.
 *
 * 1. The count: max overlap of the locals' pc ranges, read from the Lua 5.1 bytecode of the
 *    chunk (string.dump in the WebAssembly Lua 5.1, test/helpers/lua.ts, parsed by
 *    test/helpers/lua51-bytecode.ts: the locvars and upvalue lists `luac5.1 -l -l` prints),
 *    checked against figures luac5.1 printed for a fixture and calibrated against stock Lua
 *    5.1's own limit (200 accepted, 201 refused, both counted exactly).
 * 2. Every NodeMCU agent source file and the generated bundle: <= 50 locals, <= 60 upvalues.
 * 3. The simulated NodeMCU refuses an agent over the limit with the firmware's message, also
 *    for chunks loaded with load()/dofile() at its Lua prompt.
 * Needs only Node (the Lua is an npm devDependency, lua-wasm-bindings).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { maxActiveLocals, type LocalRange } from '../src/sim/lua-vm.js';
import { lazyAgentFiles, renderAgent } from '../scripts/gen-lua.js';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily } from '../src/sim/nodemcu/family.js';
import { dumpChunk51, luacCheck } from './helpers/lua.js';
import { parseLua51Chunk } from './helpers/lua51-bytecode.js';

const MAXVARS = 50;
const MAXUPVALUES = 60;

interface FnInfo {
  /** "main" or `line N` (the function's first line) */
  where: string;
  linedefined: number;
  locals: LocalRange[];
  upvalues: number;
}

/** Compile `source` with stock Lua 5.1: every function with its locals' pc ranges and upvalue count, or the parser's error. */
function luacFunctions(source: string, name = 'chunk.lua'): { fns: FnInfo[]; error?: string } {
  const error = luacCheck('5.1', source, `@${name}`);
  if (error) return { fns: [], error };
  const fns = parseLua51Chunk(dumpChunk51(source, `@${name}`)).map((f) => ({ where: f.where, linedefined: f.linedefined, locals: f.locals, upvalues: f.upvalues }));
  return { fns };
}

/**
 * A fixture and what Debian's `luac5.1 -p -l -l fixture.lua` (Lua 5.1.5, amd64) printed for it
 * on the development machine: per function, "locals (n)" rows as name, startpc+1, endpc+1 (the
 * listing counts from 1), and "upvalues (n)". Written down by hand from that listing so the
 * test needs no native luac; the bytecode reader must find exactly these.
 */
const FIXTURE = `local a, b = 1, 2
local function outer(x, y, ...)
  local t = { ... }
  for i = 1, #t do
    local v = t[i]
    a = a + v
  end
  for k, v in pairs(t) do b = b + k + v end
  do
    local inner = function(z) return z + x + a end
    y = inner(y)
  end
  return y
end
local c = outer(3, 4, 5, 6)
`;
const FIXTURE_LUAC: Array<{ where: string; locals: Array<[string, number, number]>; upvalues: string[]; active: number }> = [
  { where: 'main', locals: [['a', 3, 12], ['b', 3, 12], ['outer', 6, 12], ['c', 12, 12]], upvalues: [], active: 4 },
  {
    where: 'line 2',
    locals: [
      ['x', 1, 31], ['y', 1, 31], ['arg', 1, 31], ['t', 4, 31],
      ['(for index)', 7, 13], ['(for limit)', 7, 13], ['(for step)', 7, 13], ['i', 8, 12], ['v', 9, 12],
      ['(for generator)', 16, 23], ['(for state)', 16, 23], ['(for control)', 16, 23], ['k', 17, 21], ['v', 17, 21],
      ['inner', 26, 30],
    ],
    upvalues: ['a', 'b'],
    // x y arg t, the three loop control variables, i and v
    active: 9,
  },
  { where: 'line 10', locals: [['z', 1, 6]], upvalues: ['x', 'a'], active: 1 },
];

test('the bytecode reader finds exactly what luac5.1 -l -l listed for the fixture', () => {
  const fns = parseLua51Chunk(dumpChunk51(FIXTURE, '@fixture.lua'));
  assert.deepEqual(
    fns.map((f) => ({ where: f.where, locals: f.locals.map((l): [string, number, number] => [l.name, l.startpc + 1, l.endpc + 1]), upvalues: f.upvalueNames, active: maxActiveLocals(f.locals) })),
    FIXTURE_LUAC,
  );
  assert.deepEqual(fns.map((f) => f.upvalues), [0, 2, 2], 'nups');
});

test('a main chunk with 51 active locals is over NodeMCU\'s limit; 50 is not', () => {
  const over = luacFunctions(manyLocals(51));
  assert.equal(over.error, undefined, 'stock Lua 5.1 (limit 200) compiles it');
  assert.deepEqual(over.fns.filter((f) => maxActiveLocals(f.locals) > MAXVARS).map((f) => f.where), ['main']);
  assert.equal(maxActiveLocals(over.fns[0]!.locals), 51);
  assert.equal(maxActiveLocals(luacFunctions(manyLocals(50)).fns[0]!.locals), 50);
});

/** A chunk whose main function declares n locals that are all active at the end. */
function manyLocals(n: number, prefix = ''): string {
  const names = Array.from({ length: n }, (_, i) => `v${i}`);
  return `${prefix}${names.map((v, i) => `local ${v} = ${i}`).join('\n')}\nreturn ${names.slice(0, 3).join(' + ')}\n`;
}

test('the count matches stock Lua 5.1: 200 active locals compile and count 200, 201 stop its parser', () => {
  const ok = luacFunctions(manyLocals(200), 'ok.lua');
  assert.equal(ok.error, undefined);
  assert.equal(maxActiveLocals(ok.fns[0]!.locals), 200);
  const over = luacFunctions(manyLocals(201), 'over.lua');
  assert.match(over.error ?? '', /^over\.lua:\d+: main function has more than 200 local variables/);
  // for-loop control variables count ((for index), (for limit), (for step), i): 6 at most, then c alone
  const loop = luacFunctions(`for i = 1, 2 do local a, b = i, i end\nlocal c\n`, 'loop.lua');
  assert.equal(maxActiveLocals(loop.fns[0]!.locals), 6);
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
  // and the generated files loaded on first use (tether_call.lua, tether_core.lua: parts of the core)
  for (const [n, text] of lazyAgentFiles('nodemcu', root)) files[`lazy-${n}`] = text;
  for (const name of Object.keys(files)) {
    const { fns, error } = luacFunctions(files[name]!, name);
    assert.equal(error, undefined, `${name}: ${error}`);
    assert.ok(fns.length > 0, name);
    for (const f of fns) {
      const n = maxActiveLocals(f.locals);
      assert.ok(n <= MAXVARS, `${name}: function at ${f.where} has ${n} active locals (NodeMCU's Lua 5.1 allows ${MAXVARS})`);
      assert.ok(f.upvalues <= MAXUPVALUES, `${name}: function at ${f.where} has ${f.upvalues} upvalues (limit ${MAXUPVALUES})`);
    }
  }
});

test('the count flags a nested function over 50 and passes one at exactly 50', () => {
  const body = (n: number) => `local x = 1\nlocal function f()\n${manyLocals(n)}end\nreturn f\n`;
  const fifty = luacFunctions(body(50), 'fifty.lua').fns;
  assert.equal(Math.max(...fifty.map((f) => maxActiveLocals(f.locals))), 50);
  const over = luacFunctions(body(51), 'over.lua').fns;
  const bad = over.filter((f) => maxActiveLocals(f.locals) > MAXVARS);
  assert.deepEqual(bad.map((f) => f.where), ['line 2']);
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

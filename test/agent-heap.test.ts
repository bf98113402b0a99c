/**
 * scripts/heap-nodemcu.ts, the NodeMCU heap measurement behind `npm run bench`: its driver
 * really runs the agent (stripped bytecode, stubbed C modules) through a session, forwards a
 * 1460-byte receive and sends 1460 bytes, and reports figures; without the i386 tree it says
 * "i386 lua5.1 not available". Here it runs under the test suite's stock Lua 5.1 compiled to
 * WebAssembly (test/helpers/lua.ts; `luac -s` is string.dump + stripLua51Chunk): 32-bit
 * pointers like the i386 build, but the bench figures stay the i386 build's.
 * No heap figure is asserted here (measurements belong to the bench).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { measureNodemcuHeap, type LuaExec } from '../scripts/heap-nodemcu.js';
import { dumpChunk51, runLua } from './helpers/lua.js';
import { parseLua51Chunk, stripLua51Chunk } from './helpers/lua51-bytecode.js';

/** `luac5.1 -s -o OUT SRC` */
const luac: LuaExec = (args) => {
  assert.deepEqual(args.slice(0, 2), ['-s', '-o'], 'the measurement asks for stripped bytecode');
  try {
    writeFileSync(args[2], stripLua51Chunk(dumpChunk51(readFileSync(args[3]), `@${args[3]}`)));
    return { status: 0, stderr: '' };
  } catch (e) {
    return { status: 1, stderr: String(e) };
  }
};
/** `lua5.1 SCRIPT ARGS...` */
const lua: LuaExec = (args) => runLua('5.1', args[0], { args: args.slice(1) });

test('stripped bytecode: no debug information left, and it still runs', () => {
  const src = 'local function add(a, b) local s = a + b return s end\nio.write(add(40, 2))\n';
  const full = dumpChunk51(src, '@add.lua');
  const fns = parseLua51Chunk(full);
  assert.deepEqual(fns[1]!.locals.map((l) => l.name), ['a', 'b', 's']);
  const stripped = stripLua51Chunk(full);
  assert.ok(stripped.length < full.length);
  for (const f of parseLua51Chunk(stripped)) {
    assert.deepEqual([f.locals.length, f.lineinfo.length, f.upvalueNames.length], [0, 0, 0], f.where);
  }
  assert.equal(stripped.includes('add.lua'), false, 'source name gone');
  const r = runLua('5.1', '=run', { source: 'local s = io.read("*a") io.write(assert(loadstring(s))())', stdin: Buffer.concat([stripped]) });
  assert.equal(r.stderr, '');
  // the chunk prints 42 itself
  assert.equal(r.stdout.toString(), '42');
});

test('the heap driver runs the stripped agent through a session, a 1460-byte receive and a 1460-byte send', () => {
  const h = measureNodemcuHeap({ lua, luac, interpreter: 'Lua 5.1 (WebAssembly)' });
  assert.equal(h.sentBytes, 1460, 'tcpsocket.send reached the socket with every byte');
  assert.equal(h.forwardedBytes, 1460, 'the receive callback was forwarded to the host');
  assert.ok(h.bytecodeBytes > 1000);
  assert.ok(h.idleKB > 1, `idle ${h.idleKB}`);
  assert.ok(h.peakKB >= h.idleKB, `peak ${h.peakKB} >= idle ${h.idleKB}`);
});

test('the LFS estimate: the same run less the prototypes alive, so lower by at least the resident code', () => {
  const ram = measureNodemcuHeap({ lua, luac, interpreter: 'Lua 5.1 (WebAssembly)' });
  const lfs = measureNodemcuHeap({ lua, luac, interpreter: 'Lua 5.1 (WebAssembly)', lfs: true });
  assert.equal(lfs.sentBytes, 1460);
  assert.equal(lfs.forwardedBytes, 1460);
  // the resident file's prototypes (about its stripped bytecode's size, less the main chunk's
  // own code, freed once it ran) stay in flash with LFS; the data (tables, closures) does not
  const saved = ram.idleKB - lfs.idleKB;
  assert.ok(saved > (ram.bytecodeBytes / 1024) * 0.6 && saved < (ram.bytecodeBytes / 1024) * 1.5, `idle ${ram.idleKB} KB in RAM, ${lfs.idleKB} KB with LFS, resident bytecode ${ram.bytecodeBytes} B`);
  assert.ok(lfs.idleKB > 2, `the agent's data stays in RAM: ${lfs.idleKB} KB`);
  assert.ok(lfs.peakKB >= lfs.idleKB && lfs.peakKB < ram.peakKB, `peak ${lfs.peakKB} KB with LFS, ${ram.peakKB} KB without`);
});

test('without the i386 tree the measurement says "i386 lua5.1 not available"', () => {
  const old = process.env.TETHER_LUA51_I386;
  process.env.TETHER_LUA51_I386 = '/nonexistent/tether-i386';
  try {
    assert.throws(() => measureNodemcuHeap(), /i386 lua5\.1 not available/);
  } finally {
    if (old === undefined) delete process.env.TETHER_LUA51_I386;
    else process.env.TETHER_LUA51_I386 = old;
  }
});

/**
 * test/helpers/lua.ts, the stock Lua 5.1/5.3 (WebAssembly) the suite runs the agents under:
 * it must behave like the `lua` command where the tests rely on it. Byte-exact stdin and
 * stdout (all 256 byte values, NULs included), `arg` and `...`, files named in the arguments
 * readable under their host paths, lua.c's exit statuses (uncaught error: 1 with the message
 * on stderr; os.exit(n): n, with what was written before it kept), the two versions really
 * being 5.1 and 5.3, and no process-wide handlers left behind by the Emscripten glue.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { luacCheck, runLua } from './helpers/lua.js';

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

for (const v of ['5.1', '5.3'] as const) {
  test(`Lua ${v}: stdin to stdout byte-exact, arguments, a file named in the arguments`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-lua-runner-'));
    try {
      const data = join(dir, 'data.bin');
      writeFileSync(data, Buffer.concat([ALL_BYTES, Buffer.from(ALL_BYTES).reverse()]));
      const script = join(dir, 'copy.lua');
      writeFileSync(script, `#!/usr/bin/env lua
local a, b = ...
assert(a == arg[1] and b == arg[2] and arg[0] == ${JSON.stringify(script)})
io.write(io.read("*a"))
local f = assert(io.open(b, "rb"))
io.write(f:read("*a"))
f:close()
print(_VERSION, a)`);
      const r = runLua(v, script, { args: ['x y\n', data], stdin: ALL_BYTES });
      assert.equal(r.stderr, '');
      assert.equal(r.status, 0);
      const tail = Buffer.from(`Lua ${v}\tx y\n\n`);
      assert.ok(r.stdout.subarray(0, 256).equals(ALL_BYTES), 'stdin came back byte for byte');
      assert.equal(r.stdout.length, 256 + 512 + tail.length);
      assert.ok(r.stdout.subarray(768).equals(tail));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`Lua ${v}: exit statuses as lua.c: uncaught error 1 (message on stderr), os.exit(n) n, output kept`, () => {
    const err = runLua(v, 'boom.lua', { source: 'io.write("before")\nerror("kaboom")' });
    assert.equal(err.status, 1);
    assert.equal(err.stdout.toString(), 'before');
    assert.match(err.stderr, /^lua: boom\.lua:2: kaboom\nstack traceback:/);
    const ex = runLua(v, 'exit.lua', { source: 'io.write("partial") os.exit(3)' });
    assert.deepEqual([ex.status, ex.stdout.toString()], [3, 'partial']);
    const missing = runLua(v, join(tmpdir(), 'tether-no-such-script.lua'));
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /cannot open/);
  });
}

test('the two interpreters are Lua 5.1 (doubles only) and Lua 5.3 (integers, //)', () => {
  const src = 'io.write(_VERSION, " ", tostring(2^53 + 1 == 2^53), " ", math.type and math.type(1) or "none")';
  assert.equal(runLua('5.1', 'v.lua', { source: src }).stdout.toString(), 'Lua 5.1 true none');
  assert.equal(runLua('5.3', 'v.lua', { source: src }).stdout.toString(), 'Lua 5.3 true integer');
  assert.match(luacCheck('5.1', 'return 7 // 2', '@d.lua') ?? '', /^d\.lua:1: unexpected symbol near '\/'/);
  assert.equal(luacCheck('5.3', 'return 7 // 2', '@d.lua'), undefined);
  assert.match(luacCheck('5.3', 'return 7 +', '@d.lua') ?? '', /^d\.lua:1: unexpected symbol near <eof>/);
});

test('the Emscripten glue leaves no process-wide handlers behind', () => {
  const before = [process.listenerCount('uncaughtException'), process.listenerCount('unhandledRejection'), process.listenerCount('exit')];
  for (let i = 0; i < 3; i++) runLua(i % 2 ? '5.1' : '5.3', 'x.lua', { source: 'os.exit(0)' });
  assert.deepEqual([process.listenerCount('uncaughtException'), process.listenerCount('unhandledRejection'), process.listenerCount('exit')], before);
});

/**
 * The agents under the stock Lua interpreters the modules' VMs descend from
 * (Debian lua5.1 and lua5.3; .ci/run installs them): syntax of every bundled
 * agent, and the shared protocol core exchanging frames with the TS codec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { families } from '../scripts/gen-lua.js';
import { callContent, checkLine, decodeFrame, encodeFrame, Reassembler, type Frame } from '../src/codec/frame.js';

const root = repoRoot();

function need(bin: string): void {
  const r = spawnSync(bin, ['-v']);
  if (r.error) assert.fail(`${bin} is not installed: run "apt-get install -y lua5.1 lua5.3" (.ci/run does this)`);
}

test('every bundled agent compiles under luac5.3; the shared core also under luac5.1', () => {
  need('luac5.3');
  need('luac5.1');
  for (const f of families()) {
    const r = spawnSync('luac5.3', ['-p', join(root, 'firmware-shim', f, 'main.lua')], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${f}/main.lua: ${r.stderr}`);
  }
  const r = spawnSync('luac5.1', ['-p', join(root, 'firmware-shim/common/protocol.lua'), join(root, 'firmware-shim/common/core.lua')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

for (const lua of ['lua5.1', 'lua5.3']) {
  test(`the shared protocol core speaks protocol v1 under ${lua}`, () => {
    need(lua);
    const payload = Buffer.from(Array.from({ length: 700 }, (_, i) => (i * 37) % 256));
    const input = [
      'boot noise\r\n',
      ...encodeFrame(callContent(1, 'hello', [1, 4096]), 255),
      ...encodeFrame(callContent(2, 'echo', [1, -5, null, true, 'text with spaces', payload, null]), 255),
      ...encodeFrame(callContent(3, 'boom', []), 255),
      encodeFrame(callContent(4, 'echo', [1]), 255)[0].replace('~C4', '~C5'),
      ...encodeFrame(callContent(6, 'nope', []), 255),
    ].join('');
    const r = spawnSync(lua, [join(root, 'firmware-shim/test/core-driver.lua'), join(root, 'firmware-shim/common/protocol.lua'), join(root, 'firmware-shim/common/core.lua')], { input, encoding: 'latin1' });
    assert.equal(r.status, 0, r.stderr);
    const reasm = new Reassembler();
    const frames: Frame[] = [];
    for (const line of r.stdout.split('\n').filter(Boolean)) {
      const c = checkLine(Buffer.from(line, 'latin1'));
      assert.equal(c.kind, 'frame', `bad frame from ${lua}: ${line}`);
      const whole = reasm.push((c as { content: string }).content);
      if (whole) frames.push(decodeFrame(whole));
    }
    assert.deepEqual(frames[0], { type: 'B', epoch: 777, proto: 1 });
    const byId = (id: number) => frames.find((f) => (f.type === 'R' || f.type === 'X') && f.id === id);
    const hello = byId(1) as Extract<Frame, { type: 'R' }>;
    assert.equal((hello.values[0] as Map<unknown, unknown>).get('family') instanceof Uint8Array, true);
    const echo = byId(2) as Extract<Frame, { type: 'R' }>;
    assert.equal(echo.values.length, 7, 'trailing nil kept');
    assert.deepEqual(echo.values.slice(0, 4), [1, -5, null, true]);
    assert.equal(Buffer.from(echo.values[4] as Uint8Array).toString(), 'text with spaces');
    assert.ok(Buffer.from(echo.values[5] as Uint8Array).equals(payload), 'binary payload byte-exact through pure-Lua base64');
    assert.equal((byId(3) as Extract<Frame, { type: 'X' }>).code, 'ERR');
    assert.equal(byId(5), undefined, 'the corrupted call got no answer');
    assert.equal((byId(6) as Extract<Frame, { type: 'X' }>).code, 'NOFN');
    const k = frames.filter((f) => f.type === 'K') as Array<Extract<Frame, { type: 'K' }>>;
    assert.equal(k[k.length - 1].count, Buffer.byteLength(input, 'latin1'));
  });
}

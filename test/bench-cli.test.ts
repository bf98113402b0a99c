/**
 * `npm run bench`'s command line (scripts/bench.ts): --help, and usage errors before anything runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';

const bench = (...args: string[]) => spawnSync(process.execPath, [join(repoRoot(), 'dist', 'scripts', 'bench.js'), ...args], { encoding: 'utf8', timeout: 180000 });

test('bench --help prints the options and the parts, and runs nothing', () => {
  const r = bench('--help');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Usage: npm run bench -- \[--quick\] \[--seed N\] \[--runs N\] \[--only PARTS\]/);
  for (const part of ['goodput', 'faults', 'minimal', 'sim', 'host', 'heap', 'streams', 'flash']) assert.match(r.stdout, new RegExp(`\\d ${part}\\b`));
  assert.doesNotMatch(r.stdout, /ratios against baselines measured in this run/, 'a part ran');
});

test('bench: an unknown option, a bad seed or run count or an unknown part is a usage error (exit 2) naming it', () => {
  for (const [args, msg] of [
    [['--sed', '3'], /Unknown option '--sed'/],
    [['--seed', 'x'], /--seed must be a positive integer, got "x"/],
    [['--runs', '0'], /--runs must be a positive integer, got "0"/],
    [['--only', 'host,nope'], /--only: unknown part "nope"/],
    [['--only', ','], /--only: unknown part \(none given\)/],
  ] as const) {
    const r = bench(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status}`);
    assert.match(r.stderr, msg);
    assert.match(r.stderr, /Usage: npm run bench/);
    assert.equal(r.stdout, '', `${args.join(' ')}: something ran`);
  }
});

test('bench --only sim counts the agent work per sequential and per pipelined call (function calls and VM instructions, not a rate)', () => {
  const r = bench('--quick', '--only', 'sim');
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const m = /agent work per sequential call \(Lua debug hooks in the sim\)\s+([\d.]+) function calls\s+(\d+) VM instructions/.exec(r.stdout);
  assert.ok(m, r.stdout);
  const calls = Number(m[1]);
  const instructions = Number(m[2]);
  // a call is at least: the receive callback, the CRC of the line and of the reply, the header's
  // match, the function itself and the write; and every function call is at least one instruction
  assert.ok(calls >= 10 && calls < 1000, `function calls per call: ${calls}`);
  assert.ok(instructions > calls, `instructions ${instructions} <= calls ${calls}`);
  // pipelined, the calls share frames (bundles): less work per call than one at a time, where
  // every call and every reply is a frame of its own with its own CRC and write
  const p = /agent work per pipelined call \(1,000 in flight, in bundles\)\s+([\d.]+) function calls\s+(\d+) VM instructions/.exec(r.stdout);
  assert.ok(p, r.stdout);
  assert.ok(Number(p[1]) >= 5 && Number(p[1]) < calls, `function calls per pipelined call: ${p[1]} (sequential ${calls})`);
  assert.ok(Number(p[2]) > Number(p[1]) && Number(p[2]) < instructions, `instructions per pipelined call: ${p[2]} (sequential ${instructions})`);
});

test('bench --runs 2: each goodput row gives the median of the two runs and their range, the median within it', () => {
  const r = bench('--quick', '--runs', '2', '--only', 'goodput');
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const rows = r.stdout.split('\n').filter((l) => l.startsWith('goodput '));
  // each direction alone and both at once, at 115200 and 921600
  assert.equal(rows.length, 8, r.stdout);
  for (const l of rows) {
    const m = /\s(\d\.\d\d\d?)\s+≥ 0\.90 \((?:NOT )?met\); 2 runs (\d\.\d\d\d?)-(\d\.\d\d\d?)$/.exec(l);
    assert.ok(m, l);
    const [ratio, lo, hi] = [Number(m[1]), Number(m[2]), Number(m[3])];
    assert.ok(lo <= hi && lo <= ratio + 0.005 && ratio <= hi + 0.005, `median ${ratio} outside ${lo}-${hi}: ${l}`);
  }
});

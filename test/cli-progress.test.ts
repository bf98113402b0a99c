/**
 * src/cli/progress.ts: a cli-progress bar only when enabled (a terminal, no --json), nothing at
 * all otherwise; one bar per label, finished on its own line; stop() ends an unfinished bar.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProgressBar, barWanted } from '../src/cli/progress.js';

const fake = (isTTY: boolean) => {
  const chunks: string[] = [];
  return { chunks, text: () => chunks.join(''), stream: { isTTY, columns: 100, write: (s: string) => chunks.push(s) > 0 } as unknown as NodeJS.WriteStream };
};

test('barWanted: a terminal without --json only', () => {
  assert.equal(barWanted(fake(true).stream, false), true);
  assert.equal(barWanted(fake(true).stream, true), false);
  assert.equal(barWanted(fake(false).stream, false), false);
});

test('disabled (a pipe, or --json): no bar and no percentage lines, log lines only', () => {
  for (const f of [fake(false), fake(true)]) {
    const pb = new ProgressBar({ stream: f.stream, enabled: f.stream.isTTY ? false : undefined });
    for (const d of [0, 100, 200]) pb.update('writing x', d, 200);
    pb.log('done');
    assert.equal(f.text(), 'done\n');
    assert.equal(pb.active, false);
  }
});

test('enabled: KB bar redrawn in place, finished at the total, a new bar for a new label', () => {
  const f = fake(true);
  const pb = new ProgressBar({ stream: f.stream });
  pb.update('writing  a.lua', 0, 2048);
  assert.equal(pb.active, true);
  pb.update('writing  a.lua', 2048, 2048);
  assert.equal(pb.active, false, 'finished at the total');
  pb.update('verifying a.lua', 1024, 2048);
  pb.log('between');
  const t = f.text();
  assert.match(t, /writing {2}a\.lua \[\.{30}\] 0% 0\.0\/2\.0 KB/);
  assert.match(t, /writing {2}a\.lua \[#{30}\] 100% 2\.0\/2\.0 KB/);
  assert.match(t, /verifying a\.lua \[#{15}\.{15}\] 50% 1\.0\/2\.0 KB/);
  assert.ok(t.indexOf('between\n') > t.lastIndexOf('verifying'), 'the log line comes after the finished bar');
  assert.equal(pb.active, false);
});

test('items, and stop() ends an unfinished bar (an error mid-run) so no redraw timer is left', () => {
  const f = fake(true);
  const pb = new ProgressBar({ stream: f.stream, unit: 'items' });
  pb.update('checks', 3, 7);
  pb.stop();
  pb.stop();
  assert.equal(pb.active, false);
  // cli-progress floors the percentage: 3 of 7 is 42%
  assert.match(f.text(), /checks \[#+\.+\] 42% 3\/7 \|/);
  const n = f.chunks.length;
  return new Promise<void>((r) => setTimeout(r, 250)).then(() => assert.equal(f.chunks.length, n, 'nothing drawn after stop'));
});

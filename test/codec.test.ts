import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkLine, crc16, decodeFrame, encodeFrame, Reassembler, contentOf, callContent } from '../src/codec/frame.js';
import { decodeValues, encodeValues, Float, Handle, ValueSyntaxError, type WireValue } from '../src/codec/values.js';
import { BASE_MAX_FRAME } from '../src/codec/constants.js';

const split = (s: string) => (s === '' ? [] : s.split(' '));
const roundTrip = (vals: WireValue[]) => decodeValues(split(encodeValues(vals)));

test('crc16 is CRC-16/MODBUS (check value of "123456789" is 0x4B37)', () => {
  assert.equal(crc16('123456789'), 0x4b37);
  assert.equal(crc16(''), 0xffff);
});

test('values keep type, order and count, trailing nils included', () => {
  const bin = Uint8Array.from([0, 1, 2, 255, 10, 13, 32, 126]);
  const vals: WireValue[] = [true, false, 0, -2147483648, 2147483647, new Float(1.5), new Float(-0.25), bin, new Uint8Array(0), new Handle(7), null, null];
  const back = roundTrip(vals);
  assert.equal(back.length, vals.length);
  assert.equal(back[0], true);
  assert.equal(back[1], false);
  assert.equal(back[3], -2147483648);
  assert.equal(back[4], 2147483647);
  assert.ok(back[5] instanceof Float && back[5].value === 1.5);
  assert.deepEqual(back[7], bin);
  assert.deepEqual(back[8], new Uint8Array(0));
  assert.ok(back[9] instanceof Handle && back[9].id === 7);
  assert.equal(back[10], null);
  assert.equal(back[11], null);
});

test('integers outside int32 travel as floats; inf and nan survive', () => {
  const back = roundTrip([3000000000, new Float(Infinity), new Float(-Infinity), new Float(NaN)]);
  assert.ok(back[0] instanceof Float && back[0].value === 3000000000);
  assert.equal((back[1] as Float).value, Infinity);
  assert.equal((back[2] as Float).value, -Infinity);
  assert.ok(Number.isNaN((back[3] as Float).value));
});

test('compact strings are used only for safe text, and both forms decode', () => {
  assert.equal(encodeValues(['127.0.0.1']), "'127.0.0.1");
  assert.match(encodeValues(['a b']), /^s/);
  assert.deepEqual(decodeValues(["'abc", 'sYWJj']).map((v) => Buffer.from(v as Uint8Array).toString()), ['abc', 'abc']);
});

test('tables (maps, arrays, nested) round-trip', () => {
  const m = new Map<WireValue, WireValue>([
    ['tsec', 123],
    ['vaild', true],
    ['caps', [Buffer.from('socket.tx'), Buffer.from('socket.rx')]],
  ]);
  const [t] = roundTrip([m]);
  assert.ok(t instanceof Map);
  assert.equal(t.get('tsec'), 123);
  assert.equal(t.get('vaild'), true);
  const caps = t.get('caps') as Map<WireValue, WireValue>;
  assert.equal(Buffer.from(caps.get(2) as Uint8Array).toString(), 'socket.rx');
});

test('malformed tokens are rejected', () => {
  for (const bad of [['{'], ['}'], ['s$$$'], ['x1'], ['h'], ['dzz'], ['{', '1']]) {
    assert.throws(() => decodeValues(bad), ValueSyntaxError, bad.join(' '));
  }
});

test('a frame checks out; one flipped byte makes it bad; non-frames are logs', () => {
  const [line] = encodeFrame('R12 5 T', BASE_MAX_FRAME);
  assert.ok(line.endsWith('\n'));
  const ok = checkLine(Buffer.from(line.slice(0, -1)));
  assert.deepEqual(ok, { kind: 'frame', content: 'R12 5 T' });
  const crlf = checkLine(Buffer.from(line.slice(0, -1) + '\r'));
  assert.equal(crlf.kind, 'frame');
  const corrupt = Buffer.from(line.slice(0, -1));
  corrupt[3] ^= 0x01;
  assert.equal(checkLine(corrupt).kind, 'bad');
  assert.equal(checkLine(Buffer.from('[00000.012] I/boot EC618')).kind, 'log');
  assert.equal(checkLine(Buffer.from('~\x01garbage ABCD')).kind, 'bad');
});

test('long frames are fragmented within maxFrame and reassembled, single chunk and byte by byte', () => {
  const payload = Buffer.alloc(3000, 0x5a);
  const content = callContent(9, 'socket.tx', [new Handle(1), payload]);
  const lines = encodeFrame(content, BASE_MAX_FRAME);
  assert.ok(lines.length > 1);
  for (const l of lines) assert.ok(l.length <= BASE_MAX_FRAME, `line of ${l.length} bytes`);
  const r = new Reassembler();
  let whole: string | undefined;
  for (const l of lines) {
    const c = checkLine(Buffer.from(l.slice(0, -1)));
    assert.equal(c.kind, 'frame');
    whole = r.push((c as { content: string }).content) ?? whole;
  }
  assert.equal(whole, content);
  const f = decodeFrame(whole!);
  assert.equal(f.type, 'C');
  assert.deepEqual(Buffer.from((f as { args: WireValue[] }).args[1] as Uint8Array), payload);
});

test('a lost fragment drops the whole logical frame, and the next frame still decodes', () => {
  const lines = encodeFrame(callContent(1, 'f', [Buffer.alloc(600, 1)]), BASE_MAX_FRAME);
  const r = new Reassembler();
  r.push(checkLine(Buffer.from(lines[0].slice(0, -1))).kind === 'frame' ? (checkLine(Buffer.from(lines[0].slice(0, -1))) as { content: string }).content : '');
  r.poison(); // lines[1] arrived corrupt
  let out: string | undefined;
  for (const l of lines.slice(2)) out = r.push((checkLine(Buffer.from(l.slice(0, -1))) as { content: string }).content);
  assert.equal(out, undefined);
  assert.equal(r.dropped, 1);
  assert.equal(r.push('R2 T'), 'R2 T');
});

test('every frame type encodes and decodes', () => {
  const frames = [
    { type: 'R', id: 3, values: [true, null] },
    { type: 'X', id: 4, code: 'ERR', message: 'boom: x' },
    { type: 'E', handle: 2, values: [33554449, -1] },
    { type: 'P', topic: 'NTP_UPDATE', values: [] },
    { type: 'L', level: 1, message: 'callback error' },
    { type: 'B', epoch: 123456, proto: 1 },
    { type: 'K', count: 16777215 },
    { type: 'Y' },
  ] as const;
  for (const f of frames) {
    const d = decodeFrame(contentOf(f as never)) as Record<string, unknown>;
    assert.equal(d.type, f.type);
    if ('id' in f) assert.equal(d.id, f.id);
    if ('message' in f) assert.equal(d.message, f.message);
    if ('epoch' in f) assert.equal(d.epoch, f.epoch);
    if ('count' in f) assert.equal(d.count, f.count);
  }
});

test('a minimal call and its reply take about 40 bytes on the wire', () => {
  const call = encodeFrame(callContent(7, 23, []), BASE_MAX_FRAME)[0];
  const reply = encodeFrame('R7 123', BASE_MAX_FRAME)[0];
  assert.ok(call.length + reply.length <= 40, `${call.length} + ${reply.length}`);
});

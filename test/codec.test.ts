/**
 * Protocol v2 codec (docs/protocol.md sections 1, 2, 7): CRC-32, escaping, line
 * classification, fragments, values. Pure functions: no I/O.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';
import { crc32, crc16, escapeBytes, unescapeBytes, encodeFrame, parseLine, fragment, LineSplitter, decodeMessage, callMessage, encodeMessage, fitPiece, isV1Frame, FrameSyntaxError, bundleBody, bundledSize, unbundle, crc6, shortHead, encodeShortFrame, encodeShortAck, SHORT_ACK_MAX_SIZE } from '../src/codec/frame.js';
import { decodeValues, encodeValues, Float, Handle, ValueSyntaxError, type WireValue } from '../src/codec/values.js';

const noNl = (b: Buffer) => b.subarray(0, b.length - 1);

test('CRC-32/ISO-HDLC check value, and the v1 CRC-16/MODBUS one', () => {
  assert.equal(crc32('123456789'), 0xcbf43926);
  assert.equal(crc16('123456789'), 0x4b37);
});

test('escaping: every byte value survives, no raw \\n or DLE inside a frame', () => {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const esc = escapeBytes(all);
  assert.equal(esc.length, 258);
  assert.ok(!esc.includes(0x0a));
  assert.deepEqual(unescapeBytes(esc), all);
  assert.equal(unescapeBytes(Buffer.from([0x10, 0x41])), undefined, 'a bad escape');
  const line = encodeFrame('C0.0', all);
  assert.equal(line.indexOf(0x0a), line.length - 1, 'the only newline ends the frame');
});

test('lines: logs, frames, and every kind of damage is "bad", never a throw', () => {
  assert.deepEqual(parseLine(Buffer.from('boot: hello\r')), { kind: 'log', text: 'boot: hello' });
  assert.deepEqual(parseLine(noNl(encodeFrame('A3 99 240 7 0'))), { kind: 'frame', frame: { type: 'A', ack: 3, epoch: 99, size: 240, nonce: 7, probe: 0, miss: [] } });
  assert.deepEqual(parseLine(noNl(encodeFrame('A3 99 240 7 12 5 9'))), { kind: 'frame', frame: { type: 'A', ack: 3, epoch: 99, size: 240, nonce: 7, probe: 12, miss: [5, 9] } });
  assert.equal(parseLine(noNl(encodeFrame('A3 99 240 7'))).kind, 'bad', 'an A without its probe field');
  assert.deepEqual(parseLine(noNl(encodeFrame('S5 255'))), { kind: 'frame', frame: { type: 'S', nonce: 5, size: 255 } });
  assert.deepEqual(parseLine(noNl(encodeFrame('Y7'))), { kind: 'frame', frame: { type: 'Y', probe: 7 } });
  assert.equal(parseLine(noNl(encodeFrame('Y'))).kind, 'bad', 'a Y carries its token');
  assert.deepEqual(parseLine(noNl(encodeFrame('B12 2'))), { kind: 'frame', frame: { type: 'B', epoch: 12, proto: 2 } });
  const seq = parseLine(noNl(encodeFrame('R4095.17', Buffer.from('9 T'))));
  assert.equal(seq.kind, 'frame');
  assert.deepEqual(seq.kind === 'frame' && seq.frame, { type: 'seq', kind: 'R', seq: 4095, ack: 17, body: Buffer.from('9 T') });
  const good = noNl(encodeFrame('C1.0', Buffer.from('1 hello 2')));
  for (let i = 1; i < good.length; i++) {
    const flipped = Buffer.from(good);
    flipped[i] ^= 4;
    assert.equal(parseLine(flipped).kind, 'bad', `a flipped bit at ${i} is caught`);
    const dropped = Buffer.concat([good.subarray(0, i), good.subarray(i + 1)]);
    assert.equal(parseLine(dropped).kind, 'bad', `a dropped byte at ${i} is caught`);
  }
  for (const h of ['Q1', 'A1 2 3', 'A1 2 3 4', 'A1 2 3 4 0 5000', 'A1 2 3 4 10000', 'C1', 'S1', 'Y', 'Y0', 'Y3 4', 'C12345.1']) assert.equal(parseLine(noNl(encodeFrame(h))).kind, 'bad', h);
});

test('a protocol-1 frame is recognised as such', () => {
  const v1 = '~K12';
  assert.ok(isV1Frame(Buffer.from(`${v1} ${crc16(v1).toString(16).toUpperCase().padStart(4, '0')}`)));
  assert.ok(!isV1Frame(noNl(encodeFrame('Y1'))));
});

test('bundles (section 2): the M body round-trips through a frame, escapes included; where it stops being one the rest is dropped', () => {
  const ms = [callMessage(7, 23, []), callMessage(8, 'socket.tx', [Buffer.from([10, 16, 0, 255, 32])]), encodeMessage({ type: 'R', id: 9, values: ['a b', 1] })];
  assert.equal(bundleBody(ms.slice(0, 1)).toString('latin1'), '5 C7 23', 'length, space, message');
  const line = encodeFrame('M12.30', bundleBody(ms));
  const body = bundleBody(ms);
  assert.equal(line.length, 1 + 'M12.30'.length + 1 + ms.reduce((n, m) => n + bundledSize(m), 0) + 10, 'bundledSize counts escapes');
  assert.ok(body.length < line.length);
  const p = parseLine(line.subarray(0, -1));
  assert.equal(p.kind, 'frame');
  const f = (p as { frame: { type: string; kind: string; seq: number; ack: number; body: Buffer } }).frame;
  assert.deepEqual([f.type, f.kind, f.seq, f.ack], ['seq', 'M', 12, 30]);
  const u = unbundle(f.body);
  assert.equal(u.ok, true);
  assert.deepEqual(u.messages.map((m) => Buffer.from(m)), ms.map((m) => Buffer.from(m)));
  const bad = (s: string) => unbundle(Buffer.from(s, 'latin1'));
  for (const s of ['', ' ', 'x', '0 ', '5C7 23', '12345678 C', '6 C7 23', '5 C7 237']) assert.equal(bad(s).ok, false, JSON.stringify(s));
  assert.deepEqual(bad('5 C7 239 C8').messages.map(String), ['C7 23'], 'the messages before the bad length');
  assert.deepEqual(bad('5 C7 235 Z1 23').messages.map(String), ['C7 23', 'Z1 23'], 'types are the receiver\'s to check');
});

test('fragments: lines never exceed the frame size, pieces rebuild the message', () => {
  for (const size of [48, 64, 255, 1024]) {
    const msg = callMessage(7, 'socket.tx', [new Handle(1), Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 37) & 255))]);
    const lines = fragment(msg, size, 4090, 3);
    let parts: Buffer[] = [];
    let whole: Buffer | undefined;
    lines.forEach((l, k) => {
      assert.ok(l.length <= size, `line of ${l.length} > ${size}`);
      const r = parseLine(noNl(l));
      assert.ok(r.kind === 'frame' && r.frame.type === 'seq');
      const f = r.frame as Extract<typeof r.frame, { type: 'seq' }>;
      assert.equal(f.seq, (4090 + k) % 4096);
      assert.equal(f.ack, 3);
      parts.push(f.body);
      if (f.kind === '$') whole = Buffer.concat(parts);
    });
    assert.deepEqual(whole, msg);
    parts = [];
  }
  for (const size of [32, 48, 255]) {
    // with short heads too, which take 13 bytes a frame where long ones with 4-digit numbers take 22
    const msg = callMessage(9, 'socket.tx', [new Handle(2), Buffer.from(Array.from({ length: 2000 }, (_, i) => (i * 41) & 255))]);
    const lines = fragment(msg, size, 4094, 4000, true);
    const parts: Buffer[] = [];
    lines.forEach((l, k) => {
      assert.ok(l.length <= size, `short line of ${l.length} > ${size}`);
      const r = parseLine(noNl(l));
      assert.ok(r.kind === 'frame' && r.frame.type === 'seq' && r.frame.seq === (4094 + k) % 4096 && r.frame.ack === 4000);
      parts.push(r.frame.body);
    });
    assert.deepEqual(Buffer.concat(parts), msg);
    const bytes = (ls: Buffer[]) => ls.reduce((n, l) => n + l.length, 0);
    assert.ok(bytes(lines) < bytes(fragment(msg, size, 4094, 4000)) - 7 * (lines.length - 1), 'fewer line bytes than long heads');
  }
  assert.equal(fragment(Buffer.from('R1 5'), 255, 0, 0).length, 1);
  assert.ok(fitPiece(Buffer.alloc(100, 0x0a), 0, 48, '&1.1') * 2 <= 48 - 16);
});

test('short heads (section 1): the spec examples, every kind, escapes, and damage is "bad"', () => {
  // the CRC check value in six base-64 digits: 0xCBF4 = 12·4096 + 47·64 + 52, 0x3926 = 3·4096 + 36·64 + 38
  assert.equal(crc6(0xcbf43926), '<_d3TV');
  assert.equal(shortHead('C', 65, 3), 'c1103');
  assert.equal(shortHead('&', 4095, 0), 'foo00');
  const kinds: Record<string, string> = { C: 'c', R: 'r', X: 'x', E: 'e', P: 'p', L: 'l', M: 'm', '&': 'f', $: 't' };
  for (const [kind, t] of Object.entries(kinds)) {
    const body = Buffer.from([0x41, 0x0a, 0x10, 0x20, 0x7e, 0x00, 0xff]);
    const line = encodeShortFrame(shortHead(kind, 4095, 64), body);
    assert.equal(line[1], t.charCodeAt(0));
    assert.equal(line.indexOf(0x0a), line.length - 1, 'the only newline ends the frame');
    assert.equal(line.length, 13 + body.length + 2, 'thirteen bytes of overhead, two escapes');
    assert.deepEqual(parseLine(noNl(line)), { kind: 'frame', frame: { type: 'seq', kind, seq: 4095, ack: 64, body } });
    // every single-bit flip anywhere in the line is caught, or turns it into a log line
    for (let i = 0; i < line.length - 1; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const d = Buffer.from(line);
        d[i] ^= 1 << bit;
        const r = parseLine(noNl(d));
        assert.ok(r.kind === 'bad' || (i === 0 && r.kind === 'log'), `byte ${i} bit ${bit}: ${r.kind}`);
      }
    }
  }
  // an empty body: the shortest short frame, 12 bytes before its newline
  const empty = encodeShortFrame(shortHead('R', 1, 2));
  assert.equal(empty.length, 13);
  assert.deepEqual(parseLine(noNl(empty)), { kind: 'frame', frame: { type: 'seq', kind: 'R', seq: 1, ack: 2, body: Buffer.alloc(0) } });
  assert.equal(parseLine(noNl(empty).subarray(0, 11)).kind, 'bad', 'too short');
  // a digit outside 0x30..0x6F, with a CRC that matches: a bad head, not a frame
  const head = Buffer.from('~rp000', 'latin1');
  const forged = Buffer.concat([head, Buffer.from(crc6(crc32(head)), 'latin1')]);
  assert.deepEqual(parseLine(forged), { kind: 'bad', reason: 'bad head' });
  assert.equal(parseLine(Buffer.concat([Buffer.from('~r0000\x10A', 'latin1'), Buffer.from(crc6(crc32('~r0000\x10A')), 'latin1')])).kind, 'bad', 'a bad escape');
  // a long frame still parses beside them
  assert.equal(parseLine(noNl(encodeFrame('R1.2 x'))).kind, 'frame');
  // the examples in docs/protocol.md, section 1, "Short heads"
  const doc = readFileSync(join(repoRoot(), 'docs', 'protocol.md'), 'utf8');
  const examples = [...doc.matchAll(/^(~[crf]\S*(?: \S+)*?)\s{2,}(host|agent): seq (\d+)[^,]*, ack (\d+)/gm)];
  assert.equal(examples.length, 3, 'three examples');
  for (const [, line, , seq, ack] of examples) {
    const r = parseLine(Buffer.from(line, 'latin1'));
    assert.ok(r.kind === 'frame' && r.frame.type === 'seq', `${line}: ${JSON.stringify(r)}`);
    assert.deepEqual([r.frame.seq, r.frame.ack], [Number(seq), Number(ack)], line);
  }
});

test('short acknowledgements (section 4): 14 bytes, the spec examples, every value range end, and damage is "bad"', () => {
  for (const [ack, size] of [[0, 0], [4095, SHORT_ACK_MAX_SIZE], [65, 4032], [3, 424]]) {
    const line = encodeShortAck(ack, size);
    assert.equal(line.length, 14);
    assert.equal(line.toString('latin1', 0, 2), '~a');
    assert.deepEqual(parseLine(noNl(line)), { kind: 'frame', frame: { type: 'a', ack, size } });
    // every single-bit flip anywhere in the line is caught, or turns it into a log line
    for (let i = 0; i < line.length - 1; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const d = Buffer.from(line);
        d[i] ^= 1 << bit;
        const r = parseLine(noNl(d));
        assert.ok(r.kind === 'bad' || (i === 0 && r.kind === 'log'), `${ack}/${size} byte ${i} bit ${bit}: ${JSON.stringify(r)}`);
      }
    }
    // a dropped or a doubled byte changes its length: never a frame
    assert.equal(parseLine(Buffer.concat([line.subarray(0, 5), line.subarray(6, 13)])).kind, 'bad');
    assert.equal(parseLine(Buffer.concat([line.subarray(0, 6), line.subarray(5, 13)])).kind, 'bad');
  }
  assert.throws(() => encodeShortAck(4096, 0), RangeError);
  assert.throws(() => encodeShortAck(0, SHORT_ACK_MAX_SIZE + 1), RangeError);
  // a digit outside 0x30..0x6F, with a CRC that matches: not a frame
  const head = Buffer.from('~a00p00', 'latin1');
  assert.equal(parseLine(Buffer.concat([head, Buffer.from(crc6(crc32(head)), 'latin1')])).kind, 'bad');
  // the examples in docs/protocol.md, section 4, "Short acknowledgements"
  const doc = readFileSync(join(repoRoot(), 'docs', 'protocol.md'), 'utf8');
  const examples = [...doc.matchAll(/^(~a\S+)\s{2,}(?:host|agent): ack (\d+)[^,]*, size (\d+)/gm)];
  assert.equal(examples.length, 2, 'two examples');
  for (const [, line, ack, size] of examples) {
    assert.deepEqual(parseLine(Buffer.from(line, 'latin1')), { kind: 'frame', frame: { type: 'a', ack: Number(ack), size: Number(size) } }, line);
  }
});

test('values: every type round-trips; b strings keep spaces, newlines and NULs', () => {
  const vals: WireValue[] = [null, true, false, 0, -2147483648, 2147483647, new Float(1.5), new Float(NaN), new Float(-Infinity), 'socket.tx', Buffer.from(' a b \n\0 '), new Handle(9), new Map<WireValue, WireValue>([['k', new Map<WireValue, WireValue>([[1, 'x']])]]), ''];
  const back = decodeValues(encodeValues(vals));
  assert.equal(back.length, vals.length);
  assert.deepEqual(back.slice(0, 6), [null, true, false, 0, -2147483648, 2147483647]);
  assert.ok(back[7] instanceof Float && Number.isNaN(back[7].value));
  assert.deepEqual(Buffer.from(back[10] as Uint8Array), Buffer.from(' a b \n\0 '));
  assert.deepEqual(back[11], new Handle(9));
  assert.equal(Buffer.from(((back[12] as Map<WireValue, WireValue>).get('k') as Map<WireValue, WireValue>).get(1) as Uint8Array).toString(), 'x');
  assert.deepEqual(decodeValues(encodeValues([3000000000])), [new Float(3000000000)], 'beyond int32 travels as a float');
  for (const bad of ['b5:ab', 'b:x', '{ 1', '}', 'zz', "'a b", 'h-1', 'd', '1  2', '1 ']) {
    assert.throws(() => decodeValues(Buffer.from(bad)), ValueSyntaxError, bad);
  }
});

test('messages: every type encodes and decodes', () => {
  for (const m of [
    { type: 'C', id: 1, fn: 'hello', args: [2, 4096] },
    { type: 'R', id: 65535, values: [] },
    { type: 'X', id: 3, code: 'ERR', message: 'boom' },
    { type: 'E', handle: 4, values: [1, 0] },
    { type: 'P', topic: 'IP_READY', values: ['10.0.0.2'] },
    { type: 'L', level: 2, message: 'uart overflow' },
  ] as const) {
    const content = encodeMessage(m as never);
    const back = decodeMessage(content);
    assert.equal(back.type, m.type);
    assert.equal(JSON.stringify(back, (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString() : v)), JSON.stringify(m));
    // the body alone with its type apart (what the link hands on for a whole-message frame)
    const inPlace = decodeMessage(content.subarray(1), content[0]);
    assert.deepEqual(inPlace, back);
  }
  // a body that is only a view of a bigger line decodes the same, and bad ones still fail
  const line = Buffer.from('~R17.3 42 b3:a b T 0000');
  assert.deepEqual(decodeMessage(line.subarray(7, line.length - 5), 0x52), { type: 'R', id: 42, values: [new Uint8Array(Buffer.from('a b')), true] });
  assert.throws(() => decodeMessage(Buffer.from('R1 2'), 0x52), FrameSyntaxError); // the body starts with the id
  assert.throws(() => decodeMessage(Buffer.from('1 2'), 0x5a), FrameSyntaxError); // Z is no message type
  assert.throws(() => decodeMessage(Buffer.alloc(0)), FrameSyntaxError);
});

test('the line splitter holds at most its limit of a partial line', () => {
  const s = new LineSplitter(64);
  const got: string[] = [];
  s.push(Buffer.from('abc\n' + 'x'.repeat(100)), (l) => got.push(l.toString()));
  s.push(Buffer.from('y'.repeat(1000) + '\nok\n'), (l) => got.push(l.toString()));
  assert.deepEqual(got, ['abc', 'ok']);
  assert.equal(s.overlong, 1);
});

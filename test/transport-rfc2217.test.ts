/**
 * RFC 2217 client: the telnet/COM-PORT-OPTION byte machine checked byte for byte against
 * RFC 854 / 855 / 2217, then Rfc2217Transport against a scripted server on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { test } from 'node:test';
import { isTetherError } from '../src/errors.js';
import { parsePortUrl } from '../src/transport/index.js';
import { baudBytes, comPortCommand, escapeIac, Rfc2217Codec, Rfc2217Transport, type ComPortReply } from '../src/transport/rfc2217.js';
import { until } from './helpers/until.js';

const IAC = 0xff;
const [DONT, DO, WONT, WILL, SB, SE] = [0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf0];

function codec() {
  const data: Buffer[] = [];
  const sent: Buffer[] = [];
  const replies: ComPortReply[] = [];
  const states: boolean[] = [];
  const c = new Rfc2217Codec({ data: (d) => data.push(d), send: (b) => sent.push(b), comPort: (r) => replies.push(r), comPortState: (s) => states.push(s) });
  return { c, data: () => Buffer.concat(data), sent: () => Buffer.concat(sent), replies, states, clearSent: () => sent.splice(0) };
}

test('negotiation opens with WILL/DO BINARY, WILL/DO SGA, WILL COM-PORT-OPTION (RFC 856, 858, 2217)', () => {
  const k = codec();
  k.c.start();
  assert.deepEqual([...k.sent()], [IAC, WILL, 0, IAC, DO, 0, IAC, WILL, 3, IAC, DO, 3, IAC, WILL, 44]);
  k.clearSent();
  // the server agrees to everything we asked: no further answer (no negotiation loop)
  k.c.receive(Buffer.from([IAC, DO, 0, IAC, WILL, 0, IAC, DO, 3, IAC, WILL, 3, IAC, DO, 44]));
  assert.equal(k.sent().length, 0);
  assert.deepEqual(k.states, [true]);
  assert.equal(k.c.comPortEnabled, true);
  assert.equal(k.c.optionState('remote', 0), 'yes');
  // a repeated DO of an enabled option is not answered again
  k.c.receive(Buffer.from([IAC, DO, 44]));
  assert.equal(k.sent().length, 0);
});

test('options we do not support are refused once: DO ECHO -> WONT ECHO, WILL ECHO -> DONT ECHO, DO 24 -> WONT 24', () => {
  const k = codec();
  k.c.start();
  k.clearSent();
  k.c.receive(Buffer.from([IAC, DO, 1, IAC, WILL, 1, IAC, DO, 24]));
  assert.deepEqual([...k.sent()], [IAC, WONT, 1, IAC, DONT, 1, IAC, WONT, 24]);
  assert.equal(k.data().length, 0);
});

test('a server that refuses COM-PORT-OPTION (DONT 44) is reported; one that later disables BINARY gets WONT', () => {
  const k = codec();
  k.c.start();
  k.c.receive(Buffer.from([IAC, DO, 0, IAC, DONT, 44]));
  assert.deepEqual(k.states, [false]);
  assert.equal(k.c.comPortEnabled, false);
  k.clearSent();
  k.c.receive(Buffer.from([IAC, DONT, 0]));
  assert.deepEqual([...k.sent()], [IAC, WONT, 0]);
});

test('0xFF in data: IAC IAC is one 0xFF byte, also when split across chunks; other bytes pass untouched', () => {
  const k = codec();
  k.c.receive(Buffer.from([0x41, IAC]));
  k.c.receive(Buffer.from([IAC, 0x42, 0x00, 0x0d, 0x0a]));
  k.c.receive(Buffer.from([IAC]));
  k.c.receive(Buffer.from([IAC]));
  assert.deepEqual([...k.data()], [0x41, 0xff, 0x42, 0x00, 0x0d, 0x0a, 0xff]);
});

test('a negotiation command split across chunks is answered once complete and removed from data', () => {
  const k = codec();
  k.c.receive(Buffer.from([0x31, IAC]));
  k.c.receive(Buffer.from([DO]));
  assert.equal(k.sent().length, 0);
  k.c.receive(Buffer.from([1, 0x32]));
  assert.deepEqual([...k.sent()], [IAC, WONT, 1]);
  assert.deepEqual([...k.data()], [0x31, 0x32]);
});

test('server subnegotiations: SET-BAUDRATE answer (101), NOTIFY-MODEMSTATE (107) split over chunks, escaped 0xFF in a value', () => {
  const k = codec();
  // IAC SB COM-PORT-OPTION SET-BAUDRATE(101) 0x0001C200 (115200) IAC SE, with data around it
  const baud = [IAC, SB, 44, 101, 0x00, 0x01, 0xc2, 0x00, IAC, SE];
  k.c.receive(Buffer.from([0x61, ...baud.slice(0, 5)]));
  k.c.receive(Buffer.from([...baud.slice(5), 0x62]));
  assert.deepEqual(k.replies, [{ command: 1, value: Buffer.from([0x00, 0x01, 0xc2, 0x00]) }]);
  assert.deepEqual([...k.data()], [0x61, 0x62]);
  // modem state 0xFF arrives escaped: IAC SB 44 107 IAC IAC IAC SE
  k.c.receive(Buffer.from([IAC, SB, 44, 107, IAC]));
  k.c.receive(Buffer.from([IAC, IAC, SE]));
  assert.deepEqual(k.replies[1], { command: 7, value: Buffer.from([0xff]) });
  // a subnegotiation of another option is ignored
  k.c.receive(Buffer.from([IAC, SB, 24, 1, IAC, SE]));
  assert.equal(k.replies.length, 2);
});

test('escapeIac doubles every 0xFF; comPortCommand builds IAC SB 44 cmd value IAC SE with 0xFF doubled', () => {
  assert.deepEqual([...escapeIac(Buffer.from([1, IAC, 2, IAC, IAC]))], [1, IAC, IAC, 2, IAC, IAC, IAC, IAC]);
  assert.deepEqual([...escapeIac(Buffer.from('plain'))], [...Buffer.from('plain')]);
  // SET-BAUDRATE 9600: 00 00 25 80
  assert.deepEqual([...comPortCommand(1, baudBytes(9600))], [IAC, SB, 44, 1, 0x00, 0x00, 0x25, 0x80, IAC, SE]);
  // SET-BAUDRATE 255: the value's 0xFF is doubled
  assert.deepEqual([...comPortCommand(1, baudBytes(255))], [IAC, SB, 44, 1, 0, 0, 0, IAC, IAC, IAC, SE]);
  // PURGE-DATA both
  assert.deepEqual([...comPortCommand(12, [3])], [IAC, SB, 44, 12, 3, IAC, SE]);
});

test('parsePortUrl: rfc2217:// with options, tcp:// with reconnect; bad options are INVALID_ARGUMENT', () => {
  assert.deepEqual(parsePortUrl('rfc2217://127.0.0.1:7001'), { kind: 'rfc2217', host: '127.0.0.1', port: 7001 });
  assert.deepEqual(parsePortUrl('RFC2217://[::1]:7001/?baud=921600&databits=7&parity=even&stopbits=1.5&dtr=off&rts=on&reconnect=off'), {
    kind: 'rfc2217',
    host: '::1',
    port: 7001,
    baudRate: 921600,
    dataBits: 7,
    parity: 'even',
    stopBits: 1.5,
    dtr: false,
    rts: true,
    reconnect: false,
  });
  assert.deepEqual(parsePortUrl('tcp://127.0.0.1:7000?reconnect=off'), { kind: 'tcp', host: '127.0.0.1', port: 7000, reconnect: false });
  for (const [url, why] of [
    ['rfc2217://127.0.0.1', /port is missing/],
    ['rfc2217://127.0.0.1:7001?baud=0', /outside 1\.\./],
    ['rfc2217://127.0.0.1:7001?databits=9', /databits/],
    ['rfc2217://127.0.0.1:7001?parity=weird', /parity/],
    ['rfc2217://127.0.0.1:7001?stopbits=3', /stopbits/],
    ['rfc2217://127.0.0.1:7001?dtr=maybe', /on or off/],
    ['rfc2217://127.0.0.1:7001?baud=9600&baud=9600', /given twice/],
    ['rfc2217://127.0.0.1:7001?speed=9600', /unknown query parameter/],
    ['tcp://127.0.0.1:7000?baud=9600', /unknown query parameter/],
  ] as const) {
    assert.throws(() => parsePortUrl(url), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT') && why.test((e as Error).message), url);
  }
});

/** A scripted RFC 2217 server on 127.0.0.1: records what the client sent, answers like an access server. */
async function fakeServer(behaviour: 'rfc2217' | 'refuse' | 'silent'): Promise<{ server: Server; port: number; received: () => Buffer; socket: () => Socket | undefined }> {
  const chunks: Buffer[] = [];
  let sock: Socket | undefined;
  const server = createServer((s) => {
    sock = s;
    s.on('error', () => undefined);
    if (behaviour === 'rfc2217') s.write(Buffer.from([IAC, WILL, 1, IAC, WILL, 3])); // like ser2net: offer ECHO and SGA first
    s.on('data', (d) => {
      chunks.push(d);
      if (behaviour === 'silent') return;
      const b = [...d];
      for (let i = 0; i + 2 < b.length; i++) {
        if (b[i] !== IAC) continue;
        if (b[i + 1] === WILL && b[i + 2] === 44) s.write(Buffer.from([IAC, behaviour === 'rfc2217' ? DO : DONT, 44]));
        if (b[i + 1] === SB && b[i + 2] === 44) {
          // echo the command back as the server's answer (+100), value unchanged up to IAC SE
          let j = i + 4;
          const value: number[] = [];
          while (j < b.length && !(b[j] === IAC && b[j + 1] === SE)) {
            value.push(b[j]);
            j += b[j] === IAC ? 2 : 1;
          }
          s.write(comPortCommand(b[i + 3] + 100, value));
          // and a line-state notification after the first setting
          if (b[i + 3] === 1) s.write(Buffer.from([IAC, SB, 44, 106, 0x60, IAC, SE]));
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { server, port, received: () => Buffer.concat(chunks), socket: () => sock };
}

const has = (hay: Buffer, needle: number[]) => hay.includes(Buffer.from(needle));

test('Rfc2217Transport: negotiates, sets 921600 7E2 with no flow control and DTR off, escapes 0xFF both ways, setBaudRate, purge, notifications', async () => {
  const f = await fakeServer('rfc2217');
  const t = await Rfc2217Transport.open('127.0.0.1', f.port, { baudRate: 921600, dataBits: 7, parity: 'even', stopBits: 2, dtr: false });
  try {
    const got = f.received();
    assert.ok(has(got, [IAC, SB, 44, 1, 0x00, 0x0e, 0x10, 0x00, IAC, SE]), 'SET-BAUDRATE 921600');
    assert.ok(has(got, [IAC, SB, 44, 2, 7, IAC, SE]), 'SET-DATASIZE 7');
    assert.ok(has(got, [IAC, SB, 44, 3, 3, IAC, SE]), 'SET-PARITY EVEN');
    assert.ok(has(got, [IAC, SB, 44, 4, 2, IAC, SE]), 'SET-STOPSIZE 2');
    assert.ok(has(got, [IAC, SB, 44, 5, 1, IAC, SE]), 'SET-CONTROL no flow control');
    assert.ok(has(got, [IAC, SB, 44, 5, 9, IAC, SE]), 'SET-CONTROL DTR off');
    assert.ok(has(got, [IAC, DONT, 1]), 'ECHO refused');
    assert.equal(t.baudRate, 921600);
    assert.equal(t.lineState, 0x60, 'NOTIFY-LINESTATE exposed');
    // data host -> server: 0xFF doubled
    const before = f.received().length;
    await t.write(Buffer.from([0x01, 0xff, 0x02]));
    await until(() => f.received().length - before >= 4, '4 bytes at the server');
    assert.deepEqual([...f.received().subarray(before)], [0x01, 0xff, 0xff, 0x02]);
    // data server -> host: IAC IAC is one 0xFF; a modem-state notification in between is not data
    const rx: Buffer[] = [];
    const notes: Array<[string, number]> = [];
    t.onData((c) => rx.push(Buffer.from(c)));
    t.onNotify((kind, v) => notes.push([kind, v]));
    f.socket()!.write(Buffer.from([0x10, IAC, IAC, IAC, SB, 44, 107, 0xb0, IAC, SE, 0x11]));
    await until(() => Buffer.concat(rx).length >= 3 && notes.length >= 1, 'the data and the notification at the host');
    assert.deepEqual([...Buffer.concat(rx)], [0x10, 0xff, 0x11]);
    assert.deepEqual(notes, [['modemstate', 0xb0]]);
    assert.equal(t.modemState, 0xb0);
    // baud switch and purge are answered
    assert.equal(await t.setBaudRate(460800), 460800);
    assert.ok(has(f.received(), [IAC, SB, 44, 1, 0x00, 0x07, 0x08, 0x00, IAC, SE]));
    await t.purge('receive');
    assert.ok(has(f.received(), [IAC, SB, 44, 12, 1, IAC, SE]));
    await t.setControlLines({ rts: true });
    assert.ok(has(f.received(), [IAC, SB, 44, 5, 11, IAC, SE]));
    await assert.rejects(t.setBaudRate(0), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  } finally {
    await t.close();
    f.server.close();
  }
  await assert.rejects(t.write(Buffer.from('x')), (e: unknown) => isTetherError(e, 'DISCONNECTED'));
});

test('Rfc2217Transport: a server refusing COM-PORT-OPTION, or never answering, fails open with TRANSPORT', async () => {
  const refuse = await fakeServer('refuse');
  await assert.rejects(Rfc2217Transport.open('127.0.0.1', refuse.port), (e: unknown) => isTetherError(e, 'TRANSPORT') && /not an RFC 2217 port/.test((e as Error).message));
  refuse.server.close();
  const silent = await fakeServer('silent');
  await assert.rejects(Rfc2217Transport.open('127.0.0.1', silent.port, { negotiationTimeoutMs: 200 }), (e: unknown) => isTetherError(e, 'TRANSPORT') && /within 200 ms/.test((e as Error).message));
  silent.server.close();
  await assert.rejects(Rfc2217Transport.open('127.0.0.1', 0), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(Rfc2217Transport.open('127.0.0.1', 7001, { parity: 'sideways' as never }), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
});

test('Rfc2217Transport: the server closing the connection closes the transport with DISCONNECTED', async () => {
  const f = await fakeServer('rfc2217');
  const t = await Rfc2217Transport.open('127.0.0.1', f.port);
  const closed = new Promise<Error | undefined>((r) => t.onClose(r));
  f.socket()!.destroy();
  const err = await closed;
  assert.ok(isTetherError(err, 'DISCONNECTED'));
  assert.equal(t.isOpen, false);
  f.server.close();
});

/**
 * The SOCKS5 codec (src/proxy/socks5.ts) against the byte layouts of RFC 1928 (sections 3-7)
 * and RFC 1929 (section 2). Every parser is fed each message whole, split at every byte
 * position, and followed by the next message's bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AuthMethod,
  Command,
  Reply,
  REPLY_TEXT,
  SocksProtocolError,
  encodeAddress,
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
  encodeUdpDatagram,
  encodeUserPassReply,
  encodeUserPassRequest,
  ipv6Bytes,
  parseGreeting,
  parseMethodSelection,
  parseReply,
  parseRequest,
  parseUdpDatagram,
  parseUserPassReply,
  parseUserPassRequest,
  type Parsed,
} from '../src/proxy/socks5.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Every strict prefix parses to undefined; the whole message parses to `want` with its length; trailing bytes are left. */
function incremental<T>(parse: (b: Uint8Array) => Parsed<T> | undefined, bytes: Buffer, want: T): void {
  for (let i = 0; i < bytes.length; i++) assert.equal(parse(bytes.subarray(0, i)), undefined, `prefix of ${i} of ${bytes.length} bytes`);
  assert.deepEqual(parse(bytes), { value: want, length: bytes.length });
  const more = Buffer.concat([bytes, hex('05 01 00')]);
  assert.deepEqual(parse(more), { value: want, length: bytes.length }, 'trailing bytes belong to the next message');
}

function protocolError(fn: () => unknown, reply: number | undefined, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SocksProtocolError, String(e));
    assert.equal(e.code, 'PROTOCOL');
    assert.equal(e.reply, reply);
    assert.match(e.message, message);
    return true;
  });
}

test('greeting (RFC 1928 section 3): VER NMETHODS METHODS', () => {
  incremental(parseGreeting, hex('05 01 00'), { methods: [0] });
  incremental(parseGreeting, hex('05 03 00 01 02'), { methods: [0, 1, 2] });
  protocolError(() => parseGreeting(hex('04 01 00')), undefined, /not SOCKS5/);
  protocolError(() => parseGreeting(hex('05 00')), undefined, /NMETHODS = 0/);
  assert.deepEqual(encodeGreeting([AuthMethod.NO_AUTHENTICATION_REQUIRED, AuthMethod.USERNAME_PASSWORD]), hex('05 02 00 02'));
  assert.throws(() => encodeGreeting([]), RangeError);
});

test('method selection: VER METHOD, X\'FF\' = no acceptable methods', () => {
  assert.deepEqual(encodeMethodSelection(AuthMethod.USERNAME_PASSWORD), hex('05 02'));
  assert.deepEqual(encodeMethodSelection(AuthMethod.NO_ACCEPTABLE_METHODS), hex('05 ff'));
  incremental(parseMethodSelection, hex('05 ff'), 0xff);
  protocolError(() => parseMethodSelection(hex('01 00')), undefined, /not SOCKS5/);
});

test('request (section 4): CONNECT to an IPv4 address', () => {
  incremental(parseRequest, hex('05 01 00 01 7f 00 00 01 1f 90'), { command: Command.CONNECT, address: { type: 'ipv4', host: '127.0.0.1', port: 8080 } });
  assert.deepEqual(encodeRequest(Command.CONNECT, '127.0.0.1', 8080), hex('05 01 00 01 7f 00 00 01 1f 90'));
});

test('request: CONNECT to a DOMAINNAME (length octet, no NUL)', () => {
  const bytes = Buffer.concat([hex('05 01 00 03 0b'), Buffer.from('example.com'), hex('00 50')]);
  incremental(parseRequest, bytes, { command: Command.CONNECT, address: { type: 'domain', host: 'example.com', port: 80 } });
  assert.deepEqual(encodeRequest(Command.CONNECT, 'example.com', 80), bytes);
});

test('request: UDP ASSOCIATE and BIND with IPv6 addresses (16 octets)', () => {
  const bytes = hex('05 03 00 04 00000000000000000000000000000001 01 bb');
  incremental(parseRequest, bytes, { command: Command.UDP_ASSOCIATE, address: { type: 'ipv6', host: '0:0:0:0:0:0:0:1', port: 443 } });
  assert.deepEqual(encodeRequest(Command.UDP_ASSOCIATE, '::1', 443), bytes);
  const bind = hex('05 02 00 04 20010db8000000000000000000000abc 00 15');
  incremental(parseRequest, bind, { command: Command.BIND, address: { type: 'ipv6', host: '2001:db8:0:0:0:0:0:abc', port: 21 } });
});

test('request errors: unknown CMD answers X\'07\', unknown ATYP or empty name X\'08\', bad VER or RSV just close', () => {
  protocolError(() => parseRequest(hex('05 09')), Reply.COMMAND_NOT_SUPPORTED, /CMD=9/);
  protocolError(() => parseRequest(hex('05 01 00 02')), Reply.ADDRESS_TYPE_NOT_SUPPORTED, /ATYP=2/);
  protocolError(() => parseRequest(hex('05 01 00 03 00 00 50')), Reply.ADDRESS_TYPE_NOT_SUPPORTED, /length 0/);
  protocolError(() => parseRequest(hex('04 01 00 01')), undefined, /not SOCKS5/);
  protocolError(() => parseRequest(hex('05 01 07 01')), undefined, /reserved/);
});

test('reply (section 6): VER REP RSV ATYP BND.ADDR BND.PORT for every REP', () => {
  const codes = Object.values(Reply);
  assert.deepEqual(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  for (const rep of codes) {
    const b = encodeReply(rep);
    assert.deepEqual(b, Buffer.from([5, rep, 0, 1, 0, 0, 0, 0, 0, 0]), `REP ${rep}`);
    incremental(parseReply, b, { reply: rep, address: { type: 'ipv4', host: '0.0.0.0', port: 0 } });
    assert.equal(typeof REPLY_TEXT[rep], 'string');
  }
  assert.deepEqual(encodeReply(Reply.SUCCEEDED, '127.0.0.1', 1080), hex('05 00 00 01 7f000001 0438'));
  const v6 = encodeReply(Reply.SUCCEEDED, 'fe80::1', 53);
  assert.deepEqual(v6, hex('05 00 00 04 fe800000000000000000000000000001 0035'));
  assert.deepEqual(parseReply(v6)?.value.address, { type: 'ipv6', host: 'fe80:0:0:0:0:0:0:1', port: 53 });
  assert.throws(() => encodeReply(256), RangeError);
});

test('addresses: IPv4 / IPv6 (compressed, embedded IPv4) / DOMAINNAME limits, port range', () => {
  assert.deepEqual(ipv6Bytes('::'), Buffer.alloc(16));
  assert.deepEqual(ipv6Bytes('::ffff:1.2.3.4'), hex('00000000000000000000ffff01020304'));
  assert.deepEqual(ipv6Bytes('2001:db8::8:800:200c:417a'), hex('20010db8000000000008 0800200c417a'));
  assert.deepEqual(ipv6Bytes('1::'), hex('00010000000000000000000000000000'));
  assert.deepEqual(encodeAddress('10.0.0.255', 65535), hex('01 0a0000ff ffff'));
  assert.equal(encodeAddress('a'.repeat(255), 1).length, 1 + 1 + 255 + 2);
  assert.throws(() => encodeAddress('a'.repeat(256), 1), RangeError);
  assert.throws(() => encodeAddress('', 1), RangeError);
  assert.throws(() => encodeAddress('host', 65536), RangeError);
  assert.throws(() => encodeAddress('host', -1), RangeError);
});

test('UDP request header (section 7): RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA', () => {
  const bytes = hex('0000 00 01 7f000001 0035 68656c6c6f');
  assert.deepEqual(parseUdpDatagram(bytes), { frag: 0, address: { type: 'ipv4', host: '127.0.0.1', port: 53 }, data: Buffer.from('hello') });
  assert.deepEqual(encodeUdpDatagram('127.0.0.1', 53, Buffer.from('hello')), bytes);
  const frag = encodeUdpDatagram('example.org', 123, Buffer.from([1, 2]), 0x81);
  assert.deepEqual(frag, Buffer.concat([hex('0000 81 03 0b'), Buffer.from('example.org'), hex('007b 0102')]));
  assert.deepEqual(parseUdpDatagram(frag), { frag: 0x81, address: { type: 'domain', host: 'example.org', port: 123 }, data: Buffer.from([1, 2]) });
  // empty DATA is a valid datagram
  assert.deepEqual(parseUdpDatagram(hex('0000 00 01 7f000001 0035')).data, Buffer.alloc(0));
  protocolError(() => parseUdpDatagram(hex('0000 00 01 7f00')), undefined, /shorter/);
  protocolError(() => parseUdpDatagram(hex('00')), undefined, /shorter/);
  protocolError(() => parseUdpDatagram(hex('0100 00 01 7f000001 0035')), undefined, /RSV/);
  protocolError(() => parseUdpDatagram(hex('0000 00 05 7f000001 0035')), Reply.ADDRESS_TYPE_NOT_SUPPORTED, /ATYP=5/);
});

test('username/password (RFC 1929): VER ULEN UNAME PLEN PASSWD, reply VER STATUS', () => {
  const bytes = hex('01 04 75736572 06 736563726574'); // "user" / "secret"
  for (let i = 0; i < bytes.length; i++) assert.equal(parseUserPassRequest(bytes.subarray(0, i)), undefined, `prefix ${i}`);
  const r = parseUserPassRequest(Buffer.concat([bytes, hex('05')]));
  assert.equal(r?.length, bytes.length);
  assert.equal(r?.value.username, 'user');
  assert.equal(r?.value.password, 'secret');
  assert.deepEqual(r?.value.passwordBytes, Buffer.from('secret'));
  assert.deepEqual(encodeUserPassRequest('user', 'secret'), bytes);
  // an empty password (PLEN 0) is well-formed; an empty username is not
  assert.equal(parseUserPassRequest(hex('01 01 61 00'))?.value.password, '');
  protocolError(() => parseUserPassRequest(hex('01 00 00')), undefined, /ULEN = 0/);
  protocolError(() => parseUserPassRequest(hex('05 01 61 00')), undefined, /version 5/);
  assert.deepEqual(encodeUserPassReply(true), hex('01 00'));
  assert.deepEqual(encodeUserPassReply(false), hex('01 01'));
  incremental(parseUserPassReply, hex('01 00'), true);
  incremental(parseUserPassReply, hex('01 01'), false);
  assert.throws(() => encodeUserPassRequest('', 'x'), RangeError);
  assert.throws(() => encodeUserPassRequest('u', 'x'.repeat(256)), RangeError);
});

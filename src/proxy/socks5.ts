/**
 * A pure codec of SOCKS Protocol Version 5 (RFC 1928) and of its Username/Password
 * sub-negotiation (RFC 1929): no sockets, no timers.
 *
 * Parsers are incremental: each `parseX(buf)` looks at the bytes received so far and
 * returns `undefined` while the message is incomplete (bytes may arrive split anywhere),
 * or `{ value, length }` once the whole message is there (`length` = bytes it took; the
 * rest of `buf` belongs to what follows). A message that can never become valid throws a
 * {@link SocksProtocolError} at once, with the REP code the server answers it with when
 * the RFC says to answer (`reply`).
 *
 * Byte layouts (RFC 1928 sections 3-7, RFC 1929 section 2), all numbers big-endian:
 * - greeting (client):          VER=5 | NMETHODS | METHODS[NMETHODS]
 * - method selection (server):  VER=5 | METHOD (0xFF: no acceptable method)
 * - request (client):           VER=5 | CMD | RSV=0 | ATYP | DST.ADDR | DST.PORT(2)
 * - reply (server):             VER=5 | REP | RSV=0 | ATYP | BND.ADDR | BND.PORT(2)
 * - address:                    ATYP 1: 4 bytes; ATYP 3: LEN(1) + LEN bytes of name; ATYP 4: 16 bytes
 * - UDP request header:         RSV(2)=0 | FRAG | ATYP | DST.ADDR | DST.PORT(2) | DATA
 * - username/password request:  VER=1 | ULEN | UNAME[ULEN] | PLEN | PASSWD[PLEN]
 * - username/password reply:    VER=1 | STATUS (0 = success)
 *
 * Written from the RFC texts; no code of another SOCKS implementation is used.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { TetherError } from '../errors.js';

/** VER of every RFC 1928 message. */
export const SOCKS_VERSION = 5;
/** VER of the RFC 1929 sub-negotiation messages. */
export const USERPASS_VERSION = 1;

/** Authentication METHOD values (RFC 1928 section 3). */
export const AuthMethod = {
  NO_AUTHENTICATION_REQUIRED: 0x00,
  GSSAPI: 0x01,
  USERNAME_PASSWORD: 0x02,
  NO_ACCEPTABLE_METHODS: 0xff,
} as const;

/** Request CMD values (RFC 1928 section 4). */
export const Command = { CONNECT: 0x01, BIND: 0x02, UDP_ASSOCIATE: 0x03 } as const;
/** A request CMD value. */
export type CommandCode = (typeof Command)[keyof typeof Command];

/** ATYP values (RFC 1928 section 4). */
export const AddressType = { IPV4: 0x01, DOMAINNAME: 0x03, IPV6: 0x04 } as const;

/** Reply REP values (RFC 1928 section 6). */
export const Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  CONNECTION_NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;
/** A reply REP value (0..8; other values are "unassigned" in RFC 1928). */
export type ReplyCode = (typeof Reply)[keyof typeof Reply];

/** RFC 1928 section 6 text of each REP value. */
export const REPLY_TEXT: Readonly<Record<number, string>> = {
  0: 'succeeded',
  1: 'general SOCKS server failure',
  2: 'connection not allowed by ruleset',
  3: 'Network unreachable',
  4: 'Host unreachable',
  5: 'Connection refused',
  6: 'TTL expired',
  7: 'Command not supported',
  8: 'Address type not supported',
};

/**
 * An address as RFC 1928 carries it. `host` is dotted-quad text (IPV4), the name as sent
 * (DOMAINNAME, bytes read as latin1 so that any octet round-trips), or eight full hex
 * groups joined by ':' (IPV6, e.g. `0:0:0:0:0:0:0:1`). `port` is 0..65535.
 */
export interface SocksAddress {
  type: 'ipv4' | 'domain' | 'ipv6';
  host: string;
  port: number;
}

/** A complete parsed message and the bytes it took from the start of the buffer. */
export interface Parsed<T> {
  value: T;
  /** Bytes of the buffer this message used (bytes). */
  length: number;
}

/**
 * A byte sequence that is not valid SOCKS5 / RFC 1929. `code` is `PROTOCOL`; `reply` is
 * the REP value a server should answer a request with before closing (RFC 1928 section 6:
 * 7 for an unknown CMD, 8 for an unknown ATYP), undefined where the RFC says to just close.
 */
export class SocksProtocolError extends TetherError {
  constructor(
    message: string,
    readonly reply?: ReplyCode,
  ) {
    super('PROTOCOL', message, { context: reply === undefined ? undefined : { reply } });
    this.name = 'SocksProtocolError';
  }
}

// ---------------------------------------------------------------------------------------
// Addresses

/** Encoded length of the address starting at `off` (ATYP included, port included), or undefined when incomplete. */
function addressLength(buf: Uint8Array, off: number): number | undefined {
  if (buf.length <= off) return undefined;
  const atyp = buf[off];
  if (atyp === AddressType.IPV4) return 1 + 4 + 2;
  if (atyp === AddressType.IPV6) return 1 + 16 + 2;
  if (atyp === AddressType.DOMAINNAME) {
    if (buf.length <= off + 1) return undefined;
    const len = buf[off + 1];
    if (len === 0) throw new SocksProtocolError('DOMAINNAME of length 0', Reply.ADDRESS_TYPE_NOT_SUPPORTED);
    return 1 + 1 + len + 2;
  }
  throw new SocksProtocolError(`unknown address type ATYP=${atyp}`, Reply.ADDRESS_TYPE_NOT_SUPPORTED);
}

/** Decode an address at `off` (complete: check with {@link addressLength} first). */
function readAddress(buf: Uint8Array, off: number): Parsed<SocksAddress> {
  const atyp = buf[off];
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (atyp === AddressType.IPV4) {
    return { value: { type: 'ipv4', host: `${b[off + 1]}.${b[off + 2]}.${b[off + 3]}.${b[off + 4]}`, port: b.readUInt16BE(off + 5) }, length: 7 };
  }
  if (atyp === AddressType.IPV6) {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(off + 1 + 2 * i).toString(16));
    return { value: { type: 'ipv6', host: groups.join(':'), port: b.readUInt16BE(off + 17) }, length: 19 };
  }
  const len = b[off + 1];
  return { value: { type: 'domain', host: b.toString('latin1', off + 2, off + 2 + len), port: b.readUInt16BE(off + 2 + len) }, length: 2 + len + 2 };
}

/** The 16 bytes of an IPv6 address in text form (`::` compression and a trailing dotted IPv4 accepted). */
export function ipv6Bytes(text: string): Buffer {
  if (!isIPv6(text)) throw new TypeError(`not an IPv6 address: ${text}`);
  let s = text.replace(/%.*$/, ''); // zone id
  const tail: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    tail.push(...dotted[1].split('.').map(Number));
    s = s.slice(0, -dotted[1].length) + '0:0'; // placeholder groups, replaced below
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const hs = head ? head.split(':') : [];
  const rs = rest === undefined ? [] : rest ? rest.split(':') : [];
  const fill = rest === undefined ? 0 : 8 - hs.length - rs.length;
  const groups = [...hs, ...Array<string>(fill).fill('0'), ...rs].map((g) => parseInt(g, 16));
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, 2 * i));
  if (tail.length) out.set(tail, 12);
  return out;
}

/**
 * Encode an address: IPv4 text → ATYP 1, IPv6 text → ATYP 4, anything else → DOMAINNAME.
 * @throws RangeError for a port outside 0..65535 or a name longer than 255 bytes (or empty).
 */
export function encodeAddress(host: string, port: number): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port must be an integer 0..65535, got ${port}`);
  let head: Buffer;
  if (isIPv4(host)) head = Buffer.from([AddressType.IPV4, ...host.split('.').map(Number)]);
  else if (isIPv6(host)) head = Buffer.concat([Buffer.from([AddressType.IPV6]), ipv6Bytes(host)]);
  else {
    const name = Buffer.from(host, 'latin1');
    if (name.length < 1 || name.length > 255) throw new RangeError(`a DOMAINNAME is 1..255 bytes, got ${name.length}`);
    head = Buffer.concat([Buffer.from([AddressType.DOMAINNAME, name.length]), name]);
  }
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  return Buffer.concat([head, p]);
}

// ---------------------------------------------------------------------------------------
// Method negotiation (section 3)

/** The client's greeting: the METHODs it supports, in its order. */
export interface Greeting {
  methods: number[];
}

/** Parse a greeting. @throws SocksProtocolError when VER is not 5 or NMETHODS is 0. */
export function parseGreeting(buf: Uint8Array): Parsed<Greeting> | undefined {
  if (buf.length < 1) return undefined;
  if (buf[0] !== SOCKS_VERSION) throw new SocksProtocolError(`not SOCKS5: version byte ${buf[0]}`);
  if (buf.length < 2) return undefined;
  const n = buf[1];
  if (n === 0) throw new SocksProtocolError('greeting offers no method (NMETHODS = 0)');
  if (buf.length < 2 + n) return undefined;
  return { value: { methods: [...buf.subarray(2, 2 + n)] }, length: 2 + n };
}

/** Encode a greeting (client side). @throws RangeError for 0 or more than 255 methods. */
export function encodeGreeting(methods: number[]): Buffer {
  if (methods.length < 1 || methods.length > 255) throw new RangeError('a greeting offers 1..255 methods');
  return Buffer.from([SOCKS_VERSION, methods.length, ...methods]);
}

/** Encode the server's METHOD selection (0xFF: no acceptable method; the client then closes). */
export function encodeMethodSelection(method: number): Buffer {
  return Buffer.from([SOCKS_VERSION, method]);
}

/** Parse the server's METHOD selection (client side). @throws SocksProtocolError when VER is not 5. */
export function parseMethodSelection(buf: Uint8Array): Parsed<number> | undefined {
  if (buf.length < 2) return undefined;
  if (buf[0] !== SOCKS_VERSION) throw new SocksProtocolError(`not SOCKS5: version byte ${buf[0]}`);
  return { value: buf[1], length: 2 };
}

// ---------------------------------------------------------------------------------------
// Username/password (RFC 1929)

/** RFC 1929 credentials, as raw bytes read as UTF-8 text. */
export interface Credentials {
  username: string;
  password: string;
  /** The bytes as sent (compare these, not the text, in constant time). */
  usernameBytes: Buffer;
  passwordBytes: Buffer;
}

/** Parse a username/password request. @throws SocksProtocolError when VER is not 1 or ULEN is 0. */
export function parseUserPassRequest(buf: Uint8Array): Parsed<Credentials> | undefined {
  if (buf.length < 1) return undefined;
  if (buf[0] !== USERPASS_VERSION) throw new SocksProtocolError(`username/password sub-negotiation version ${buf[0]}, not 1`);
  if (buf.length < 2) return undefined;
  const ulen = buf[1];
  if (ulen === 0) throw new SocksProtocolError('empty username (ULEN = 0)');
  if (buf.length < 2 + ulen + 1) return undefined;
  const plen = buf[2 + ulen];
  const total = 2 + ulen + 1 + plen;
  if (buf.length < total) return undefined;
  const u = Buffer.from(buf.subarray(2, 2 + ulen));
  const p = Buffer.from(buf.subarray(3 + ulen, total));
  return { value: { username: u.toString('utf8'), password: p.toString('utf8'), usernameBytes: u, passwordBytes: p }, length: total };
}

/** Encode a username/password request (client side). @throws RangeError for a username of 0 or over 255 bytes, a password over 255 bytes. */
export function encodeUserPassRequest(username: string, password: string): Buffer {
  const u = Buffer.from(username, 'utf8');
  const p = Buffer.from(password, 'utf8');
  if (u.length < 1 || u.length > 255) throw new RangeError('a username is 1..255 bytes');
  if (p.length > 255) throw new RangeError('a password is 0..255 bytes');
  return Buffer.concat([Buffer.from([USERPASS_VERSION, u.length]), u, Buffer.from([p.length]), p]);
}

/** Encode the username/password STATUS (0 = success; anything else = failure, and the server closes). */
export function encodeUserPassReply(success: boolean): Buffer {
  return Buffer.from([USERPASS_VERSION, success ? 0 : 1]);
}

/** Parse the username/password STATUS (client side): true on success. */
export function parseUserPassReply(buf: Uint8Array): Parsed<boolean> | undefined {
  if (buf.length < 2) return undefined;
  if (buf[0] !== USERPASS_VERSION) throw new SocksProtocolError(`username/password reply version ${buf[0]}, not 1`);
  return { value: buf[1] === 0, length: 2 };
}

// ---------------------------------------------------------------------------------------
// Requests and replies (sections 4-6)

/** A client request: CMD and DST.ADDR / DST.PORT. */
export interface SocksRequest {
  command: CommandCode;
  address: SocksAddress;
}

/**
 * Parse a request.
 * @throws SocksProtocolError: VER not 5 (no reply), RSV not 0 (no reply), unknown CMD
 *   (`reply` 7), unknown ATYP or empty DOMAINNAME (`reply` 8).
 */
export function parseRequest(buf: Uint8Array): Parsed<SocksRequest> | undefined {
  if (buf.length < 1) return undefined;
  if (buf[0] !== SOCKS_VERSION) throw new SocksProtocolError(`not SOCKS5: version byte ${buf[0]}`);
  if (buf.length < 2) return undefined;
  const cmd = buf[1];
  if (cmd !== Command.CONNECT && cmd !== Command.BIND && cmd !== Command.UDP_ASSOCIATE) throw new SocksProtocolError(`unknown command CMD=${cmd}`, Reply.COMMAND_NOT_SUPPORTED);
  if (buf.length < 3) return undefined;
  if (buf[2] !== 0) throw new SocksProtocolError(`reserved byte is ${buf[2]}, not 0`);
  const alen = addressLength(buf, 3);
  if (alen === undefined || buf.length < 3 + alen) return undefined;
  const a = readAddress(buf, 3);
  return { value: { command: cmd, address: a.value }, length: 3 + a.length };
}

/** Encode a request (client side). @throws RangeError (see {@link encodeAddress}). */
export function encodeRequest(command: CommandCode, host: string, port: number): Buffer {
  return Buffer.concat([Buffer.from([SOCKS_VERSION, command, 0]), encodeAddress(host, port)]);
}

/** A server reply: REP and BND.ADDR / BND.PORT. */
export interface SocksReply {
  reply: number;
  address: SocksAddress;
}

/**
 * Encode a reply. BND defaults to `0.0.0.0:0`, which RFC 1928 allows when the server has no
 * meaningful bound address to report (a failure, or a module whose local address is unknown).
 * @throws RangeError for REP outside 0..255 (see also {@link encodeAddress}).
 */
export function encodeReply(reply: number, host = '0.0.0.0', port = 0): Buffer {
  if (!Number.isInteger(reply) || reply < 0 || reply > 255) throw new RangeError(`REP must be a byte, got ${reply}`);
  return Buffer.concat([Buffer.from([SOCKS_VERSION, reply, 0]), encodeAddress(host, port)]);
}

/** Parse a reply (client side). @throws SocksProtocolError when VER is not 5 or ATYP is unknown. */
export function parseReply(buf: Uint8Array): Parsed<SocksReply> | undefined {
  if (buf.length < 1) return undefined;
  if (buf[0] !== SOCKS_VERSION) throw new SocksProtocolError(`not SOCKS5: version byte ${buf[0]}`);
  if (buf.length < 3) return undefined;
  const alen = addressLength(buf, 3);
  if (alen === undefined || buf.length < 3 + alen) return undefined;
  const a = readAddress(buf, 3);
  return { value: { reply: buf[1], address: a.value }, length: 3 + a.length };
}

// ---------------------------------------------------------------------------------------
// UDP (section 7)

/** A UDP datagram as relayed by a SOCKS server: FRAG, the address and the DATA. */
export interface UdpDatagram {
  /** Fragment number: 0 = a whole datagram; 1..127 a fragment, 0x80 bit = the last one. */
  frag: number;
  address: SocksAddress;
  data: Buffer;
}

/**
 * Parse a UDP request header and its DATA. A datagram arrives whole, so this is not
 * incremental: a short datagram is an error.
 * @throws SocksProtocolError for a datagram shorter than its header, RSV not 0, or an unknown ATYP.
 */
export function parseUdpDatagram(buf: Uint8Array): UdpDatagram {
  if (buf.length < 4) throw new SocksProtocolError(`UDP datagram of ${buf.length} bytes is shorter than its header`);
  if (buf[0] !== 0 || buf[1] !== 0) throw new SocksProtocolError('UDP header RSV is not 0');
  const alen = addressLength(buf, 3);
  if (alen === undefined || buf.length < 3 + alen) throw new SocksProtocolError(`UDP datagram of ${buf.length} bytes is shorter than its header`);
  const a = readAddress(buf, 3);
  return { frag: buf[2], address: a.value, data: Buffer.from(buf.subarray(3 + a.length)) };
}

/** Encode a UDP request header followed by `data`. @throws RangeError for FRAG outside 0..255 (see also {@link encodeAddress}). */
export function encodeUdpDatagram(host: string, port: number, data: Uint8Array, frag = 0): Buffer {
  if (!Number.isInteger(frag) || frag < 0 || frag > 255) throw new RangeError(`FRAG must be a byte, got ${frag}`);
  return Buffer.concat([Buffer.from([0, 0, frag]), encodeAddress(host, port), data]);
}

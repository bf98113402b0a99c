/**
 * Transport entry point: parse a port URL and open the matching transport.
 *
 * Accepted port URLs (see {@link parsePortUrl}):
 * - `/dev/ttyUSB0`, `/dev/ttyUSB0@921600` (absolute device path, optional `@baud`)
 * - `COM3`, `COM3@921600`, `\\.\COM12` (Windows)
 * - `serial:///dev/ttyUSB0`, `serial:///dev/ttyUSB0?baud=921600`, `serial://COM3?baud=921600`
 * - `tcp://127.0.0.1:7000`, `tcp://modem-bench.local:7000`, `tcp://[::1]:7000` (raw TCP: ser2net, `tether sim`)
 * - `serial:SERIALNO`, `serial:SERIALNO?baud=921600`: the USB serial port with that USB serial number
 *   (resolved by {@link openTransport} before parsing; see ./serial-number.ts)
 * - `tcp://127.0.0.1:7000`, `tcp://modem-bench.local:7000`, `tcp://[::1]:7000` (raw TCP: ser2net, `tether sim`),
 *   `tcp://127.0.0.1:7000?reconnect=off`
 * - `rfc2217://127.0.0.1:7001`, `rfc2217://bench:7001?baud=921600&databits=8&parity=none&stopbits=1&dtr=off&rts=off&reconnect=on`
 *   (RFC 2217 telnet serial port: ser2net `telnet(rfc2217)`, labgrid NetworkSerialPort)
 *
 * Network ports (`tcp://`, `rfc2217://`) can reconnect by themselves when the connection drops
 * (see {@link ReconnectingTransport}): `openTransport(url, { reconnect: true })` (what `connect()`
 * does by default) or `?reconnect=on`; `?reconnect=off` in the URL always turns it off.
 */
import { InvalidArgumentError } from '../errors.js';
import { MAX_BAUD_RATE, SerialTransport } from './serial.js';
import { TcpTransport } from './tcp.js';
import { checkLineOptions, PARITY_VALUES, Rfc2217Transport, type Parity, type StopBits } from './rfc2217.js';
import { checkReconnectOptions, ReconnectingTransport, type ReconnectOptions } from './reconnect.js';
import type { Transport } from './transport.js';
import { onOffWord, resolveSerialNumberPort } from './serial-number.js';

export { BaseTransport } from './transport.js';
export type { Transport, ReconnectEvent } from './transport.js';
export { ReconnectingTransport, DEFAULT_RECONNECT, checkReconnectOptions } from './reconnect.js';
export type { ReconnectOptions, ReconnectHint } from './reconnect.js';
export {
  Rfc2217Transport,
  Rfc2217Codec,
  RFC2217_DEFAULTS,
  DEFAULT_NEGOTIATION_TIMEOUT_MS,
  LINESTATE,
  MODEMSTATE,
  PURGE,
  escapeIac,
  comPortCommand,
} from './rfc2217.js';
export type { Rfc2217OpenOptions, Rfc2217LineOptions, Parity, StopBits, PurgeWhich, ComPortReply } from './rfc2217.js';
export { MemoryTransport, createMemoryPair } from './memory.js';
export { SerialTransport, DEFAULT_BAUD_RATE, MAX_BAUD_RATE } from './serial.js';
export type { SerialOpenOptions } from './serial.js';
export { TcpTransport, DEFAULT_CONNECT_TIMEOUT_MS } from './tcp.js';
export type { TcpOpenOptions } from './tcp.js';
export { PtyEndpoint, createPty, ptyRelayScript, PTY_START_TIMEOUT_MS } from './pty.js';
export type { CreatePtyOptions } from './pty.js';
export { listPorts, listPortsFromSysfs, describePort, USB_SERIAL_CHIPS } from './ports.js';
export type { PortInfo, ChipInfo, ModuleFamily } from './ports.js';
export { isSerialNumberPort, parseSerialNumberPort, findBySerialNumber, resolveSerialNumberPort } from './serial-number.js';
export type { SerialNumberPort } from './serial-number.js';

/**
 * A parsed port URL.
 * - `serial`: `path` is the device path (`/dev/ttyUSB0`, `COM3`); `baudRate` (baud) only if the URL named one;
 *   `usb` only if the URL said (`?usb=on|off`) whether the port is a module's own USB port
 *   ({@link SerialOpenOptions.usb}).
 * - `tcp`: `host` without IPv6 brackets (`::1`), `port` 1..65535; `reconnect` only if the URL named it.
 * - `rfc2217`: like `tcp`, plus the line settings the URL named (`baudRate` baud, `dataBits`,
 *   `parity`, `stopBits`, `dtr`, `rts`); absent ones take the defaults of {@link Rfc2217Transport.open}.
 */
export type PortUrl =
  | { kind: 'serial'; path: string; baudRate?: number; usb?: boolean }
  | { kind: 'tcp'; host: string; port: number; reconnect?: boolean }
  | {
      kind: 'rfc2217';
      host: string;
      port: number;
      baudRate?: number;
      dataBits?: 5 | 6 | 7 | 8;
      parity?: Parity;
      stopBits?: StopBits;
      dtr?: boolean;
      rts?: boolean;
      reconnect?: boolean;
    };

const ACCEPTED_FORMS =
  'accepted forms: /dev/ttyUSB0, /dev/ttyUSB0@921600, COM3, COM3@921600, serial:///dev/ttyUSB0?baud=921600, serial:///dev/ttyACM0?usb=on, serial:SERIALNO (USB serial number, see tether ports), tcp://127.0.0.1:7000, tcp://[::1]:7000, ' +
  'tcp://127.0.0.1:7000?reconnect=off, rfc2217://127.0.0.1:7001?baud=921600&databits=8&parity=none&stopbits=1&dtr=off&rts=off&reconnect=on';

function reject(url: string, why: string): never {
  throw new InvalidArgumentError(`unsupported port ${JSON.stringify(url)}: ${why}; ${ACCEPTED_FORMS}`, { url });
}

function parseBaud(url: string, text: string): number {
  if (!/^\d{1,8}$/.test(text)) reject(url, `baud rate ${JSON.stringify(text)} is not a positive integer`);
  const baud = Number(text);
  if (baud < 1 || baud > MAX_BAUD_RATE) reject(url, `baud rate ${baud} is outside 1..${MAX_BAUD_RATE}`);
  return baud;
}

/** Split a URL query into `[name, value]` pairs; each name once, only names in `allowed`. */
function queryPairs(url: string, query: string | undefined, allowed: string[]): Array<[string, string]> {
  if (query === undefined || query === '') return [];
  const seen = new Set<string>();
  const out: Array<[string, string]> = [];
  for (const pair of query.split('&')) {
    const [key, value, ...rest] = pair.split('=');
    if (!allowed.includes(key) || value === undefined || rest.length > 0) {
      reject(url, `unknown query parameter ${JSON.stringify(pair)} (this scheme takes ${allowed.map((a) => `${a}=...`).join(', ')})`);
    }
    if (seen.has(key)) reject(url, `${key} given twice`);
    seen.add(key);
    out.push([key, value]);
  }
  return out;
}

/** `on`/`off` (also `true`/`false`, `1`/`0`). */
function parseOnOff(url: string, key: string, value: string): boolean {
  return onOffWord(value) ?? reject(url, `${key} must be on or off, got ${JSON.stringify(value)}`);
}

/** `COM3`, `com12`, `\\.\COM12`. */
const WINDOWS_COM = /^(?:\\\\\.\\)?COM[1-9]\d{0,2}$/i;

/** A device path: absolute POSIX path or a Windows COM name; `@digits` at the end is a baud rate. */
function parseDevice(url: string, text: string): { kind: 'serial'; path: string; baudRate?: number } {
  let path = text;
  let baudRate: number | undefined;
  const at = /^(.*)@([^@/\\]*)$/.exec(text);
  if (at && at[1] !== '' && (WINDOWS_COM.test(at[1]) || at[1].startsWith('/')) && /^\d*$/.test(at[2])) {
    path = at[1];
    if (at[2] === '') reject(url, 'missing baud rate after "@"');
    baudRate = parseBaud(url, at[2]);
  }
  if (WINDOWS_COM.test(path)) return baudRate === undefined ? { kind: 'serial', path } : { kind: 'serial', path, baudRate };
  if (!path.startsWith('/')) reject(url, 'a serial device must be an absolute path or a COM port name');
  if (path === '/' || path.endsWith('/')) reject(url, 'the device path names a directory');
  return baudRate === undefined ? { kind: 'serial', path } : { kind: 'serial', path, baudRate };
}

/**
 * Parse a port URL into its kind and parts. Pure; touches no device.
 *
 * Forms (scheme names are case-insensitive):
 * - `/dev/ttyUSB0`, `/dev/ttyUSB0@921600`: absolute device path, optional `@<baud>` suffix.
 * - `COM3`, `COM3@921600`, `\\.\COM12`: Windows COM port.
 * - `serial:///dev/ttyUSB0`, `serial:///dev/ttyUSB0?baud=921600`, `serial://COM3?baud=921600`,
 *   `serial:///dev/ttyACM0?usb=on`: query parameters `baud=N` and `usb=on|off` (the port is, or
 *   is not, a module's own USB port, which has no baud: a link over it is not paced; without it
 *   the port's USB id decides: `isModuleUsbPort` in ./ports.ts), each at most once.
 * - `tcp://host:port`: host name, IPv4 address or bracketed IPv6 address (`tcp://[::1]:7000`);
 *   the port (1..65535) is required, a trailing `/` is allowed; the only query parameter is
 *   `reconnect=on|off`.
 * - `rfc2217://host:port?...`: host and port as for tcp; query parameters, each at most once:
 *   `baud=N` (1..20 000 000), `databits=5|6|7|8`, `parity=none|odd|even|mark|space`,
 *   `stopbits=1|1.5|2`, `dtr=on|off`, `rts=on|off`, `reconnect=on|off`
 *   (`on`/`off` may also be written `true`/`false` or `1`/`0`).
 *
 * A baud rate must be an integer 1..20 000 000. `baudRate` is present in the result only when
 * the URL names one (the caller applies its default, normally 115200).
 *
 * @throws InvalidArgumentError for anything else, including `sim:` URLs (the API layer opens
 *   simulators itself), relative paths, a tcp URL without a valid port, unknown query
 *   parameters or a bad baud rate. The message lists the accepted forms.
 */
export function parsePortUrl(url: string): PortUrl {
  if (typeof url !== 'string') {
    throw new InvalidArgumentError(`port must be a string, got ${url === null ? 'null' : typeof url}; ${ACCEPTED_FORMS}`);
  }
  if (url === '' || url.trim() !== url || /[\0\r\n]/.test(url)) reject(url, 'empty, or has surrounding whitespace or control characters');
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'tcp' || scheme === 'rfc2217') {
    const m = /^[a-z0-9]+:\/\/(\[[0-9A-Fa-f:.]+\]|[^\s:/?#@[\]]+)(?::(\d*))?\/?(?:\?([^#]*))?$/i.exec(url);
    if (!m) reject(url, `a ${scheme} URL is ${scheme}://host:port with nothing after the port but ?name=value&... options`);
    const rawHost = m[1];
    const host = rawHost.startsWith('[') ? rawHost.slice(1, -1) : rawHost;
    if (rawHost.startsWith('[') && !host.includes(':')) reject(url, `${rawHost} is not an IPv6 address`);
    if (m[2] === undefined || m[2] === '') reject(url, 'the TCP port is missing');
    if (m[2].length > 5 || Number(m[2]) < 1 || Number(m[2]) > 65535) reject(url, `TCP port ${m[2]} is outside 1..65535`);
    const port = Number(m[2]);
    if (scheme === 'tcp') {
      const out: PortUrl = { kind: 'tcp', host, port };
      for (const [key, value] of queryPairs(url, m[3], ['reconnect'])) out.reconnect = parseOnOff(url, key, value);
      return out;
    }
    const out: Extract<PortUrl, { kind: 'rfc2217' }> = { kind: 'rfc2217', host, port };
    for (const [key, value] of queryPairs(url, m[3], ['baud', 'databits', 'parity', 'stopbits', 'dtr', 'rts', 'reconnect'])) {
      switch (key) {
        case 'baud':
          out.baudRate = parseBaud(url, value);
          break;
        case 'databits':
          if (!/^[5-8]$/.test(value)) reject(url, `databits must be 5, 6, 7 or 8, got ${JSON.stringify(value)}`);
          out.dataBits = Number(value) as 5 | 6 | 7 | 8;
          break;
        case 'parity':
          if (!Object.hasOwn(PARITY_VALUES, value)) reject(url, `parity must be one of ${Object.keys(PARITY_VALUES).join(', ')}, got ${JSON.stringify(value)}`);
          out.parity = value as Parity;
          break;
        case 'stopbits':
          if (!['1', '1.5', '2'].includes(value)) reject(url, `stopbits must be 1, 1.5 or 2, got ${JSON.stringify(value)}`);
          out.stopBits = Number(value) as StopBits;
          break;
        case 'dtr':
        case 'rts':
        case 'reconnect':
          out[key] = parseOnOff(url, key, value);
          break;
      }
    }
    return out;
  }
  if (scheme === 'serial') {
    const m = /^serial:\/\/([^?#]*)(?:\?([^#]*))?$/i.exec(url);
    if (!m) reject(url, 'a serial URL is serial:///dev/ttyUSB0?baud=921600 (or serial:SERIALNO for a USB serial number)');
    const device = m[1];
    if (device.includes('@')) reject(url, 'in a serial:// URL give the baud rate as ?baud=N');
    const parsed: Extract<PortUrl, { kind: 'serial' }> = parseDevice(url, device);
    for (const [key, value] of queryPairs(url, m[2], ['baud', 'usb'])) {
      if (key === 'baud') parsed.baudRate = parseBaud(url, value);
      else parsed.usb = parseOnOff(url, key, value);
    }
    return parsed;
  }
  if (scheme === 'sim') reject(url, 'sim: ports are opened by the API layer (connect), not by openTransport');
  if (scheme !== undefined && scheme.length > 1) reject(url, `unknown scheme "${scheme}:"`);
  // A one-letter "scheme" is a Windows drive (C:\...), not a device.
  return parseDevice(url, url);
}

/** Options of {@link openTransport}. */
export interface OpenTransportOptions {
  /** Line speed in baud when the URL names none (serial and `rfc2217://`). Default 115200. A baud in the URL wins. */
  baudRate?: number;
  /** TCP connect timeout in ms (`tcp://`, `rfc2217://`). Default 5000. */
  connectTimeoutMs?: number;
  /**
   * Network ports only: reconnect when the connection drops. `true` uses {@link DEFAULT_RECONNECT}
   * (100 ms first wait doubling to 2000 ms, at most 30 attempts or 30 000 ms down), an object
   * sets the policy, `false` turns it off (a drop closes the transport with `DISCONNECTED`).
   * A `reconnect=on|off` in the URL wins. Default `false` here: bytes in flight are lost in a
   * reconnect, which only a layer that knows it can handle; `connect()` (the RPC session, which
   * treats a reconnect as a possible module reset) turns it on by default.
   */
  reconnect?: boolean | ReconnectOptions;
}

/**
 * Parse `url` (see {@link parsePortUrl}) and open the transport it names:
 * a {@link SerialTransport} for device paths and `serial://`, a {@link TcpTransport} for `tcp://`,
 * an {@link Rfc2217Transport} for `rfc2217://`. Network ports are wrapped in a
 * {@link ReconnectingTransport} when reconnecting is on (`opts.reconnect` or `?reconnect=on`);
 * the first connection is never retried (a refused connection fails at once).
 * A `serial:SERIALNO` port is first resolved to the device path of the plugged-in port with
 * that USB serial number ({@link resolveSerialNumberPort}).
 *
 * @param url Port URL, e.g. `/dev/ttyUSB0@921600`, `tcp://127.0.0.1:7000`, `rfc2217://127.0.0.1:7001?baud=921600`.
 * @param opts `baudRate` (baud, default 115200, overridden by a baud in the URL),
 *   `connectTimeoutMs` (ms, default 5000), `reconnect` (default off).
 * @throws InvalidArgumentError for a malformed URL or option (before anything is opened).
 * @throws TetherError `TRANSPORT` when the device cannot be opened, the connection fails or
 *   the RFC 2217 negotiation fails, or no port / several ports have the serial number of a
 *   `serial:SERIALNO` port.
 */
export async function openTransport(url: string, opts?: OpenTransportOptions): Promise<Transport> {
  const parsed = parsePortUrl(await resolveSerialNumberPort(url));
  if (parsed.kind === 'serial') return SerialTransport.open(parsed.path, { baudRate: parsed.baudRate ?? opts?.baudRate, ...(parsed.usb !== undefined ? { usb: parsed.usb } : {}) });
  const r = opts?.reconnect ?? false;
  if (typeof r !== 'boolean') checkReconnectOptions(r);
  if (opts?.baudRate !== undefined) checkLineOptions({ baudRate: opts.baudRate });
  const policy = (parsed.reconnect ?? r !== false) ? (typeof r === 'object' ? r : {}) : undefined;
  const connectTimeoutMs = opts?.connectTimeoutMs;
  let factory: (hint: { baudRate?: number }) => Promise<Transport>;
  if (parsed.kind === 'tcp') {
    factory = () => TcpTransport.open(parsed.host, parsed.port, { connectTimeoutMs });
  } else {
    const { kind: _kind, host, port, reconnect: _r, ...line } = parsed;
    const base = { ...line, baudRate: parsed.baudRate ?? opts?.baudRate };
    factory = (hint) => Rfc2217Transport.open(host, port, { ...base, ...(hint.baudRate !== undefined ? { baudRate: hint.baudRate } : {}), connectTimeoutMs });
  }
  if (policy === undefined) return factory({});
  return ReconnectingTransport.open(factory, policy);
}

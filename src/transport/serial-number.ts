/**
 * `serial:SERIALNO` ports: name a USB serial device by its USB serial number (the
 * `iSerialNumber` string descriptor, which `tether ports` shows) instead of by its
 * path, which changes with plug order (`/dev/ttyUSB0` today, `/dev/ttyUSB1` tomorrow).
 *
 * The resolution runs before {@link parsePortUrl} (openTransport): `serial:SERIALNO`
 * becomes the device path of the one plugged-in port whose serial number matches.
 */
import { InvalidArgumentError, TetherError } from '../errors.js';
import { listPorts, type PortInfo } from './ports.js';

/** A parsed `serial:SERIALNO[?baud=N]` port. */
export interface SerialNumberPort {
  /** The USB serial number to look for. */
  serialNumber: string;
  /** Baud rate from `?baud=N`, when given. */
  baudRate?: number;
  /** From `?usb=on|off`, when given: the port is (not) a module's own USB port (`SerialOpenOptions.usb`). */
  usb?: boolean;
}

/**
 * A port option's on/off word (`on`/`off`, also `true`/`false`, `1`/`0`) as a boolean; undefined
 * for any other word. Shared with parsePortUrl (./index.ts), which imports this module.
 */
export function onOffWord(value: string): boolean | undefined {
  if (['on', 'true', '1'].includes(value)) return true;
  if (['off', 'false', '0'].includes(value)) return false;
  return undefined;
}

/**
 * True for `serial:SERIALNO` ports (the scheme `serial:` not followed by `//`;
 * `serial:///dev/ttyUSB0` is a device URL, see parsePortUrl). Case-insensitive scheme.
 */
export function isSerialNumberPort(url: unknown): url is string {
  return typeof url === 'string' && /^serial:(?!\/\/)/i.test(url);
}

/**
 * Parse `serial:SERIALNO`, `serial:SERIALNO?baud=921600` or `serial:SERIALNO?usb=on` (both may be
 * given, `&`-separated, each once). The serial number is 1..126
 * printable ASCII characters without `?`, `/`, `@` or spaces (a USB string descriptor holds
 * at most 126 UTF-16 units; USB-serial chips use letters, digits, `-`, `_`, `.`).
 * @throws InvalidArgumentError for anything else.
 */
export function parseSerialNumberPort(url: string): SerialNumberPort {
  const m = /^serial:([^?]*)(?:\?(.*))?$/is.exec(url);
  const sn = m?.[1] ?? '';
  if (!m || !/^[!-~]{1,126}$/.test(sn) || /[/@?]/.test(sn)) {
    throw new InvalidArgumentError(`unsupported port ${JSON.stringify(url)}: serial:SERIALNO needs a USB serial number (printable, no spaces, "/", "@" or "?") as \`tether ports\` lists it, e.g. serial:A50285BI or serial:A50285BI?baud=921600`, { url });
  }
  const out: SerialNumberPort = { serialNumber: sn };
  if (m[2] !== undefined && m[2] !== '') {
    for (const pair of m[2].split('&')) {
      const b = /^baud=(\d{1,8})$/.exec(pair);
      const u = /^usb=(.*)$/.exec(pair);
      const usb = u ? onOffWord(u[1]) : undefined;
      const twice = (b && out.baudRate !== undefined) || (u && out.usb !== undefined);
      if ((!b && usb === undefined) || twice || (b && (Number(b[1]) < 1 || Number(b[1]) > 20_000_000))) {
        throw new InvalidArgumentError(`unsupported port ${JSON.stringify(url)}: the query parameters are baud=N (an integer 1..20000000) and usb=on|off, each at most once`, { url });
      }
      if (b) out.baudRate = Number(b[1]);
      else out.usb = usb;
    }
  }
  return out;
}

/** One line per port for error messages: `/dev/ttyUSB0 (serial A50285BI, 0403:6001 FT232R)`. */
function describeAll(ports: readonly PortInfo[]): string {
  if (ports.length === 0) return 'no serial ports are plugged in';
  return 'plugged in: ' + ports.map((p) => `${p.path} (${p.serialNumber ? `serial ${p.serialNumber}` : 'no serial number'}${p.vendorId ? `, ${p.vendorId}:${p.productId ?? '????'}` : ''}${p.chip ? ` ${p.chip}` : ''})`).join('; ');
}

/**
 * The device path of the port whose USB serial number is `serialNumber`, among `ports`.
 * An exact match wins; otherwise a match ignoring letter case (some tools print serial
 * numbers in another case) counts, if it is the only one.
 *
 * @throws TetherError `TRANSPORT` (context `reason` `NO_MATCH` or `AMBIGUOUS`, `serialNumber`)
 *   when no port or several ports match; the message lists what is plugged in.
 * @throws InvalidArgumentError for an empty `serialNumber` or a `ports` that is not an array.
 */
export function findBySerialNumber(serialNumber: string, ports: readonly PortInfo[]): string {
  if (typeof serialNumber !== 'string' || serialNumber === '') throw new InvalidArgumentError('findBySerialNumber: serialNumber must be a non-empty string');
  if (!Array.isArray(ports)) throw new InvalidArgumentError('findBySerialNumber: ports must be an array of PortInfo (from listPorts)');
  let hits = ports.filter((p) => p.serialNumber === serialNumber);
  if (hits.length === 0) hits = ports.filter((p) => p.serialNumber !== undefined && p.serialNumber.toLowerCase() === serialNumber.toLowerCase());
  if (hits.length === 1) return hits[0].path;
  if (hits.length === 0) {
    throw new TetherError('TRANSPORT', `no serial port has USB serial number ${JSON.stringify(serialNumber)}; ${describeAll(ports)} (see \`tether ports\`)`, { context: { reason: 'NO_MATCH', serialNumber } });
  }
  throw new TetherError('TRANSPORT', `${hits.length} serial ports have USB serial number ${JSON.stringify(serialNumber)} (${hits.map((p) => p.path).join(', ')}): name the device path instead; ${describeAll(ports)}`, { context: { reason: 'AMBIGUOUS', serialNumber, paths: hits.map((p) => p.path) } });
}

/**
 * Resolve `serial:SERIALNO[?baud=N][&usb=on|off]` to a device port string that parsePortUrl
 * accepts (`/dev/ttyUSB1`, `/dev/ttyUSB1@921600`, `COM3@921600`; with `usb`:
 * `serial:///dev/ttyACM0?usb=on`). Other ports are returned unchanged.
 *
 * @param url A port string.
 * @param list Lists the plugged-in ports; default {@link listPorts}. Tests inject a fixed list.
 * @throws InvalidArgumentError for a malformed `serial:` port (before listing anything).
 * @throws TetherError `TRANSPORT` when no port or several ports match (see {@link findBySerialNumber})
 *   or the ports cannot be listed.
 */
export async function resolveSerialNumberPort(url: string, list: () => Promise<PortInfo[]> = listPorts): Promise<string> {
  if (!isSerialNumberPort(url)) return url;
  const { serialNumber, baudRate, usb } = parseSerialNumberPort(url);
  const path = findBySerialNumber(serialNumber, await list());
  if (usb !== undefined) return `serial://${path}?${baudRate === undefined ? '' : `baud=${baudRate}&`}usb=${usb ? 'on' : 'off'}`;
  return baudRate === undefined ? path : `${path}@${baudRate}`;
}

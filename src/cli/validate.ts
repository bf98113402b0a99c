/**
 * Validation of command-line values, shared by every command. Each validator is a
 * yargs `coerce` function: it returns the parsed value or throws an Error whose
 * message is the whole usage error ("--timeout must be a positive number of
 * milliseconds, got "abc""). yargs turns the throw into a usage failure, which
 * main.ts reports (exit 2) before the command runs.
 *
 * Numeric options are declared without a yargs `type` (yargs's own `number` type
 * turns "abc" into NaN and loses what the user typed) and with `requiresArg`.
 */
import type { Options } from 'yargs';
import { SIM_FAMILIES, simFamilyNames } from '../sim/families.js';

import { MAX_TIMER_MS } from '../util/timer.js';

/** Largest delay a Node timer supports (ms), src/util/timer.ts. */
export { MAX_TIMER_MS };
/** Highest baud rate accepted (the serial transport's limit, src/transport/serial.ts MAX_BAUD_RATE). */
export const MAX_BAUD = 20_000_000;
/** Bounds of `diag --echo-bytes`. */
export const ECHO_BYTES_MIN = 1;
export const ECHO_BYTES_MAX = 65536;
/** Longest NodeMCU timer interval (tmr: 6 870 947 ms), the bound of `flash --init-delay`. */
export const MAX_NODEMCU_TIMER_MS = 6_870_947;

/** The single value of an option given once or more (the last one wins, as usual on command lines). */
function last(v: unknown): unknown {
  return Array.isArray(v) ? v[v.length - 1] : v;
}

/** A finite number from what yargs parsed (a number, or the text the user typed), else undefined. */
function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const s = v.trim();
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(s)) return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

const shown = (v: unknown) => JSON.stringify(v === undefined ? '' : String(v));

/** `--NAME MS`: a positive number of milliseconds, at most {@link MAX_TIMER_MS}. */
export function positiveMs(name: string): (v: unknown) => number {
  return (raw) => {
    const v = last(raw);
    const n = toNumber(v);
    if (n === undefined || n <= 0) throw new Error(`--${name} must be a positive number of milliseconds, got ${shown(v)}`);
    if (n > MAX_TIMER_MS) throw new Error(`--${name} must be at most ${MAX_TIMER_MS} milliseconds, got ${shown(v)}`);
    return n;
  };
}

/** `--NAME N`: an integer in `min..max`; `what` names the unit ("bytes", "baud", ...). */
export function intInRange(name: string, min: number, max: number, what: string): (v: unknown) => number {
  return (raw) => {
    const v = last(raw);
    const n = toNumber(v);
    if (n === undefined || !Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer ${min}..${max} (${what}), got ${shown(v)}`);
    return n;
  };
}

/** `--NAME PORT`: a TCP/UDP port number 1..65535 (0 too when `allowZero`: any free port). */
export function portNumber(name: string, allowZero = false): (v: unknown) => number {
  return intInRange(name, allowZero ? 0 : 1, 65535, allowZero ? 'a TCP port; 0 = any free port' : 'a TCP port');
}

/** Where an echo check connects to. */
export interface HostPort {
  host: string;
  port: number;
}

/** `--NAME HOST:PORT` (IPv6 as `[addr]:port`), port 1..65535. */
export function hostPort(name: string): (v: unknown) => HostPort {
  return (raw) => {
    const v = last(raw);
    const s = typeof v === 'string' ? v : String(v ?? '');
    const m = /^(?:\[([^\]]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(s);
    const port = m ? Number(m[3]) : NaN;
    if (!m || port < 1 || port > 65535) throw new Error(`--${name} must be HOST:PORT (port 1..65535), got ${shown(v)}`);
    return { host: m[1] ?? m[2], port };
  };
}

/**
 * `--port`: a non-empty string; a `sim:FAMILY` port must name a simulator that exists
 * (an own key of SIM_FAMILIES: `sim:constructor` or `sim:__proto__` are not families).
 * The rest of the syntax is checked by connect()/openTransport before anything is opened.
 */
export function portArg(raw: unknown): string {
  const v = last(raw);
  if (typeof v !== 'string' || v.trim() === '') throw new Error(`--port must name a port such as /dev/ttyUSB0, tcp://127.0.0.1:7000 or sim, got ${shown(v)}`);
  const fam = simFamilyOf(v);
  if (fam !== undefined && !isSimFamily(fam)) throw new Error(`--port ${v}: no simulator for family "${fam}" (available: ${simFamilyNames().map((n) => `sim:${n}`).join(', ')})`);
  return v;
}

/** The family a `sim` / `sim:FAMILY` port names, or undefined for other ports. */
export function simFamilyOf(port: string): string | undefined {
  if (port === 'sim') return 'luatos';
  return port.startsWith('sim:') ? port.slice(4) : undefined;
}

/** True when `name` is a simulated family (own property only). */
export function isSimFamily(name: string): boolean {
  return Object.hasOwn(SIM_FAMILIES, name);
}

/** A numeric option: no yargs `type` (see the file header), a value required, checked by `coerce`. */
export function numberOption(describe: string, coerce: (v: unknown) => number, dflt?: number): Options {
  return { describe, coerce, requiresArg: true, ...(dflt === undefined ? {} : { default: dflt }) };
}

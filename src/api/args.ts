/**
 * Argument checks shared by the family facades (src/api/<family>/). Every check throws an
 * {@link InvalidArgumentError} (code `INVALID_ARGUMENT`) synchronously, when the facade
 * method is CALLED, so a bad argument never reaches the wire: nothing is encoded, queued or
 * written to the transport. The limits each facade applies come from the firmware sources;
 * the facade methods cite them.
 */
import { InvalidArgumentError } from '../errors.js';
import { isTimerMs, MAX_TIMER_MS } from '../util/timer.js';

/** True for a safe integer (no NaN, no Infinity, no fraction). */
export const isInt = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n);

/** Short printable form of a bad value for error messages (`"x"`, `NaN`, `null`, `object`). */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (v === null || v === undefined || typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v instanceof Uint8Array) return `<${v.length} bytes>`;
  return typeof v;
}

/**
 * Check per-call options (`{ timeoutMs?, signal? }`, see `CallOptions` in src/rpc/client.ts).
 * `timeoutMs`: a finite number of milliseconds, > 0 and at most 2^31-1 (the longest Node timer).
 * `signal`: an AbortSignal.
 * @throws InvalidArgumentError naming `what`.
 */
export function checkCallOptions(opts: unknown, what: string): void {
  if (opts === undefined) return;
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) throw new InvalidArgumentError(`${what}: options must be an object such as { timeoutMs: 5000 }, got ${show(opts)}`, { fn: what });
  const o = opts as { timeoutMs?: unknown; signal?: unknown };
  checkTimeoutMs(o.timeoutMs, what);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidArgumentError(`${what}: signal must be an AbortSignal, got ${show(o.signal)}`, { fn: what });
}

/** `timeoutMs`, when given: finite, > 0, at most 2^31-1 ms. @throws InvalidArgumentError */
export function checkTimeoutMs(ms: unknown, what: string, name = 'timeoutMs'): void {
  if (ms === undefined) return;
  if (!isTimerMs(ms)) {
    throw new InvalidArgumentError(`${what}: ${name} must be a positive number of milliseconds (at most ${MAX_TIMER_MS}), got ${show(ms)}`, { fn: what, [name]: show(ms) });
  }
}

/** An options object (or undefined, meaning "all defaults"). @throws InvalidArgumentError for null, arrays, primitives. */
export function checkOptionsObject(o: unknown, what: string): void {
  if (o === undefined) return;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new InvalidArgumentError(`${what}: options must be an object, got ${show(o)}`, { fn: what });
}

/** A boolean, when given. @throws InvalidArgumentError */
export function checkBoolean(v: unknown, what: string): void {
  if (v !== undefined && typeof v !== 'boolean') throw new InvalidArgumentError(`${what} must be true or false, got ${show(v)}`);
}

/** An integer in `min..max`. @throws InvalidArgumentError */
export function checkIntRange(v: unknown, min: number, max: number, what: string): void {
  if (!isInt(v) || v < min || v > max) throw new InvalidArgumentError(`${what} must be an integer ${min}..${max}, got ${show(v)}`);
}

/** A TCP/UDP port number `min..65535`. @throws InvalidArgumentError */
export function checkPortNumber(p: unknown, what: string, min = 1): void {
  if (!isInt(p) || p < min || p > 65535) throw new InvalidArgumentError(`${what}: port must be an integer ${min}..65535, got ${show(p)}`);
}

/** A non-empty host name or address of at most `max` characters. @throws InvalidArgumentError */
export function checkHost(h: unknown, what: string, max = 255): void {
  if (typeof h !== 'string' || h.length === 0 || h.length > max) throw new InvalidArgumentError(`${what}: host must be a name or an IP address string of 1..${max} characters, got ${show(h)}`);
}

/** A dotted-quad IPv4 address (`a.b.c.d`, each 0..255). */
export function isIPv4(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  return m !== null && m.slice(1).every((x) => Number(x) <= 255);
}

/** Data to send: a string or bytes; returns its length in bytes. @throws InvalidArgumentError */
export function dataLength(d: unknown, what: string): number {
  if (typeof d === 'string') return Buffer.byteLength(d);
  if (d instanceof Uint8Array) return d.length;
  throw new InvalidArgumentError(`${what}: data must be a string or bytes (Uint8Array), got ${show(d)}`);
}

import { closeSync, constants as fsc, openSync, statSync } from 'node:fs';
import { isatty } from 'node:tty';
import { connect, isSimPort, type TetherModule } from '../../api/connect.js';
import { InvalidArgumentError, isTetherError } from '../../errors.js';
import type { CommonArgs } from '../output.js';
import { isSimFamily, simFamilyOf } from '../validate.js';
import { simFamilyNames } from '../../sim/families.js';

/** Default per-call timeout (ms) when `--timeout` is not given. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** Default handshake timeout (ms) when `--timeout` is not given (the library's default). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10000;

/** Call and handshake timeouts from `--timeout` (which, when given, bounds both). */
export function timeouts(argv: CommonArgs): { timeoutMs: number; handshakeTimeoutMs: number } {
  return { timeoutMs: argv.timeout ?? DEFAULT_CALL_TIMEOUT_MS, handshakeTimeoutMs: argv.timeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS };
}

/**
 * Check a port before opening it: a `sim:` port must name a simulated family (own key
 * only), a device path that exists must be a character device.
 * @throws InvalidArgumentError otherwise.
 */
export function checkPort(port: string): void {
  const fam = simFamilyOf(port);
  if (fam !== undefined) {
    if (!isSimFamily(fam)) throw new InvalidArgumentError(`no simulator for family "${fam}" (available: ${simFamilyNames().join(', ')})`, { port });
    return;
  }
  const path = devicePath(port);
  if (path === undefined) return;
  let st;
  try {
    st = statSync(path);
  } catch {
    return; // does not exist: the transport says so, with advice
  }
  if (!st.isCharacterDevice()) {
    const what = st.isDirectory() ? 'a directory' : st.isFile() ? 'a regular file' : 'not a device';
    throw new InvalidArgumentError(`${path} is not a serial port (${what}); list serial ports with \`tether ports\``, { port });
  }
}

/** The POSIX device path a port string names (`/dev/x`, `/dev/x@921600`, `serial:///dev/x?baud=N`), else undefined. */
function devicePath(port: string): string | undefined {
  const m = /^(?:serial:\/\/)?(\/[^?@]*)/i.exec(port);
  return m ? m[1] : undefined;
}

/**
 * A device that exists but is no terminal (`/dev/null`, `/dev/zero`): serialport fails
 * setting the baud rate with ENOTTY, which reads like baud advice. Explain it instead.
 */
export function explainOpenError(port: string, e: unknown): unknown {
  if (!isTetherError(e, 'TRANSPORT') || isSimPort(port)) return e;
  const reason = e.context?.reason;
  if (reason !== 'BAUD' && reason !== 'ENOTTY' && !/Inappropriate ioctl|ENOTTY/i.test(e.message)) return e;
  const path = devicePath(port);
  if (path === undefined || isTerminal(path) !== false) return e;
  return new InvalidArgumentError(`${path} is not a serial port (a device, but not a terminal: it takes no serial line settings); list serial ports with \`tether ports\``, { port });
}

/** Whether `path` is a terminal device; undefined when it cannot be opened to tell. */
function isTerminal(path: string): boolean | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK | (fsc.O_NOCTTY ?? 0));
    return isatty(fd);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Open the module named by `--port` with the common options; with --verbose, UART log lines go to stderr. */
export async function openModule(port: string, argv: CommonArgs): Promise<TetherModule> {
  checkPort(port);
  let mod: TetherModule;
  try {
    mod = await connect(port, {
      baudRate: argv.baud,
      ...timeouts(argv),
      sim: argv.verbose ? { log: (l) => process.stderr.write(`[module] ${l}\n`) } : undefined,
    });
  } catch (e) {
    throw explainOpenError(port, e);
  }
  if (argv.verbose) {
    mod.rpc.logs.subscribe((l) => process.stderr.write(`[${l.source}] ${l.text}\n`));
  }
  return mod;
}

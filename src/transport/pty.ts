/**
 * Pseudo-terminals for the simulator: a pty whose slave path real serial software
 * (the `serialport` package, minicom, pyserial) can open, while this process plays
 * the device on the other side.
 *
 * Node cannot create ptys without a native addon, so a small stdlib-only python3
 * helper (`scripts/pty-relay.py`) owns the pty pair and relays bytes between the
 * pty master and its stdin/stdout.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve as resolvePath } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { InvalidArgumentError, TetherError } from '../errors.js';
import { repoRoot } from '../util/repo-root.js';
import { BaseTransport } from './transport.js';

/** Default time {@link createPty} waits for the relay to report its pty: 15000 ms (python3 starts slowly on a busy machine). */
export const PTY_START_TIMEOUT_MS = 15000;

/** How long {@link PtyEndpoint.close} waits after SIGTERM before SIGKILL: 2000 ms. */
const KILL_GRACE_MS = 2000;

/** Options of {@link createPty}. */
export interface CreatePtyOptions {
  /**
   * Also create a symlink at this path pointing to the slave (e.g. `/tmp/tether-sim`),
   * removed when the relay exits. A relative path is resolved against `process.cwd()`.
   * An existing symlink there is replaced; an existing regular file is an error.
   */
  link?: string;
  /** Python interpreter to run the relay with. Default `python3` (looked up on PATH). */
  python?: string;
  /** Give up if the relay has not reported its pty after this many ms. Default 15000. */
  startTimeoutMs?: number;
}

type RelayProcess = ChildProcessByStdio<Writable, Readable, Readable>;

/**
 * The device side of a pseudo-terminal. Bytes written here appear to whoever
 * opened {@link PtyEndpoint.path}; bytes that client writes arrive via `onData`.
 *
 * The slave is raw (8 bits, no echo, no CR/LF translation) and stays usable when
 * clients close and reopen it. Writes never block on a missing reader: bytes written
 * while nobody reads the slave queue up in the relay (at most 1 MiB; beyond that the
 * oldest are dropped, like a UART without flow control, and counted in
 * {@link PtyEndpoint.droppedBytes}). Unlike a real UART, a client that opens the slave
 * later still receives that queue (up to 1 MiB of old bytes), minus the few KiB the
 * kernel held, which `serialport` flushes on open.
 *
 * Create with {@link createPty}; the constructor is internal.
 */
export class PtyEndpoint extends BaseTransport {
  /** E.g. `pty:/dev/pts/7`. */
  readonly description: string;
  /** Slave device path for the client side, e.g. `/dev/pts/7`. */
  readonly path: string;
  /** Absolute path of the symlink to {@link path}, if one was requested. */
  readonly link?: string;
  private readonly child: RelayProcess;
  private dropped = 0;
  private lastRelayError?: string;
  private exited = false;
  /** Resolves on the child's 'close' event: it exited and its stdio pipes are closed. */
  private readonly gone: Promise<void>;
  private closing?: Promise<void>;

  /** @internal Use {@link createPty}. */
  constructor(child: RelayProcess, path: string, link: string | undefined, stderrRest: string) {
    super();
    this.child = child;
    this.path = path;
    this.link = link;
    this.description = `pty:${path}`;
    child.stdout.on('data', (chunk: Buffer) => this.emitData(chunk));
    let pendingErr = stderrRest;
    const onLine = (line: string): void => {
      const dropped = /^DROPPED (\d+)$/.exec(line);
      if (dropped) this.dropped += Number(dropped[1]);
      else if (line.startsWith('ERROR ')) this.lastRelayError = line.slice(6);
    };
    const flushLines = (): void => {
      let nl: number;
      while ((nl = pendingErr.indexOf('\n')) >= 0) {
        onLine(pendingErr.slice(0, nl));
        pendingErr = pendingErr.slice(nl + 1);
      }
    };
    flushLines();
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      pendingErr += text;
      flushLines();
    });
    child.stdin.on('error', () => undefined); // EPIPE when the relay is gone; reported via 'close'
    child.on('error', () => undefined); // a failed kill(); the relay's end is handled via 'close'
    this.gone = new Promise<void>((resolve) => child.once('close', () => resolve()));
    child.once('exit', () => {
      this.exited = true;
    });
    // 'close' comes after 'exit' once stdout is drained, so every byte relayed is delivered first.
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      this.exited = true;
      if (this.closing !== undefined) return;
      const how = signal ? `signal ${signal}` : `code ${String(code)}`;
      this.emitClose(
        new TetherError('DISCONNECTED', `${this.description}: the pty relay exited (${how})${this.lastRelayError ? `: ${this.lastRelayError}` : ''}`, {
          context: { path, code, signal },
        }),
      );
    });
  }

  /** Bytes the relay discarded because nobody read the slave (more than 1 MiB was waiting). */
  get droppedBytes(): number {
    return this.dropped;
  }

  /** Process id of the python relay (for diagnostics), or undefined if it never started. */
  get relayPid(): number | undefined {
    return this.child.pid;
  }

  /**
   * Send bytes to the slave client; resolves once they were handed to the relay's pipe.
   *
   * @throws TetherError `DISCONNECTED` if the endpoint is closed or the relay died.
   */
  async write(data: Uint8Array): Promise<void> {
    if (!this.isOpen || this.exited) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('write() expects a Uint8Array');
    if (data.byteLength === 0) return;
    await new Promise<void>((resolve, reject) => {
      this.child.stdin.write(Buffer.from(data), (err?: Error | null) => {
        if (err) reject(new TetherError('DISCONNECTED', `${this.description}: write failed, the pty relay is gone (${err.message})`, { cause: err }));
        else resolve();
      });
    });
  }

  /**
   * Stop the relay (SIGTERM, then SIGKILL after 2000 ms) and wait until it exited and its
   * pipes closed; the slave path and the link disappear. Clients that still have the slave
   * open see a hangup. Idempotent; never rejects.
   */
  async close(): Promise<void> {
    if (this.closing) return this.closing;
    this.emitClose();
    const child = this.child;
    let killTimer: NodeJS.Timeout | undefined;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
    }
    child.stdin.destroy();
    this.closing = this.gone.then(() => clearTimeout(killTimer));
    return this.closing;
  }
}

/** Absolute path of `scripts/pty-relay.py` in this package. */
export function ptyRelayScript(): string {
  return join(repoRoot(), 'scripts', 'pty-relay.py');
}

/**
 * Create a pseudo-terminal and return its device side.
 *
 * Spawns `python3 -I -S scripts/pty-relay.py` and waits for it to report the slave path.
 * The relay ignores SIGINT (Ctrl-C in a terminal) and ends when {@link PtyEndpoint.close}
 * is called or when this process exits (its stdin closes). POSIX only (Linux, macOS).
 *
 * @param opts `link` (symlink path), `python` (interpreter, default `python3`),
 *   `startTimeoutMs` (default 15000 ms).
 * @returns The open endpoint; `path` is the slave path to give to the client.
 * @throws InvalidArgumentError for a bad option.
 * @throws TetherError `TRANSPORT` when python3 is missing (`python3 is required for
 *   pseudo-terminals ...`), the relay script is missing, the relay reports an error
 *   (e.g. the link path is taken by a regular file), or it does not answer in time.
 */
export async function createPty(opts?: CreatePtyOptions): Promise<PtyEndpoint> {
  const python = opts?.python ?? 'python3';
  if (typeof python !== 'string' || python === '') throw new InvalidArgumentError('createPty: python must be a non-empty command name or path');
  const timeoutMs = opts?.startTimeoutMs ?? PTY_START_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1) {
    throw new InvalidArgumentError(`createPty: startTimeoutMs must be a positive integer (ms), got ${String(timeoutMs)}`);
  }
  let link: string | undefined;
  if (opts?.link !== undefined) {
    if (typeof opts.link !== 'string' || opts.link === '' || opts.link.includes('\0')) {
      throw new InvalidArgumentError(`createPty: link must be a non-empty path, got ${JSON.stringify(opts.link)}`);
    }
    link = resolvePath(opts.link);
  }
  if (process.platform === 'win32') {
    throw new TetherError('TRANSPORT', 'pseudo-terminals are not available on Windows; use a tcp:// port (tether sim serves one) or a com0com pair');
  }
  const script = ptyRelayScript();
  if (!existsSync(script)) throw new TetherError('TRANSPORT', `the pty relay script is missing at ${script}; the tether installation is incomplete`);

  // -I: ignore PYTHON* env and user site; -S: skip site import (stdlib only, starts faster).
  const args = ['-I', '-S', script, '--ignore-sigint', ...(link ? ['--link', link] : [])];
  const child: RelayProcess = spawn(python, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const pythonHelp = `python3 is required for pseudo-terminals (install Python 3 and make sure "${python}" is on PATH)`;

  return new Promise<PtyEndpoint>((resolve, reject) => {
    let stderr = '';
    let settled = false;
    const fail = (err: TetherError): void => {
      if (settled) return;
      settled = true;
      cleanup();
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGKILL');
      child.stdin.destroy();
      child.stdout.destroy();
      child.stderr.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new TetherError('TRANSPORT', `the pty relay (${python} ${script}) is running but did not report its pty within ${timeoutMs} ms: the machine may be too busy (give a larger startTimeoutMs)`, { context: { python, timeoutMs } })),
      timeoutMs,
    );
    const onError = (err: NodeJS.ErrnoException): void => {
      const missing = err.code === 'ENOENT' || err.code === 'EACCES';
      fail(new TetherError('TRANSPORT', missing ? `${pythonHelp}: cannot run ${python} (${err.code})` : `cannot start the pty relay: ${err.message}`, { cause: err, context: { python } }));
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      const why = stderr.trim().replace(/^ERROR /m, '') || `exit ${signal ?? String(code)}`;
      fail(new TetherError('TRANSPORT', `the pty relay stopped before creating a pty: ${why}`, { context: { python, code, signal } }));
    };
    const onStderr = (text: string): void => {
      stderr += text;
      const m = /^PTY (\S.*)\n/m.exec(stderr);
      if (!m) return;
      let rest = stderr.slice(m.index + m[0].length);
      if (link !== undefined) {
        // The LINK line follows immediately; wait for it so the link exists when we resolve.
        const l = /^LINK .*\n/m.exec(rest);
        if (!l) return;
        rest = rest.slice(l.index + l[0].length);
      }
      if (settled) return;
      settled = true;
      cleanup();
      resolve(new PtyEndpoint(child, m[1], link, rest));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      child.off('error', onError);
      child.off('exit', onExit);
      child.stderr.off('data', onStderr);
    };
    child.stderr.setEncoding('utf8');
    child.on('error', () => undefined); // keeps late errors (a failed kill) from crashing the process
    child.on('error', onError);
    child.on('exit', onExit);
    child.stderr.on('data', onStderr);
  });
}

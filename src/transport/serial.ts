import { read as fsRead } from 'node:fs';
import { SerialPort, type SerialPortOpenOptions } from 'serialport';
import { InvalidArgumentError, TetherError } from '../errors.js';
import { isModuleUsbPort } from './ports.js';
import { BaseTransport } from './transport.js';

/** Default baud rate of {@link SerialTransport.open}: 115200 baud (8N1). */
export const DEFAULT_BAUD_RATE = 115200;

/** Highest baud rate {@link SerialTransport.open} accepts (20 Mbaud); real UARTs stop well below. */
export const MAX_BAUD_RATE = 20_000_000;

/** Options of {@link SerialTransport.open}. */
export interface SerialOpenOptions {
  /** Line speed in baud (bits per second), an integer 1..20 000 000. Default 115200. Frames are always 8N1, no flow control. */
  baudRate?: number;
  /**
   * The port is a module's own USB port (USB CDC: LuatOS `uart.VUART_0`, Luat `uart.USB`), which
   * has no baud: `lineBaud` is then absent, and a link over it does not pace its frames.
   * @default told from the port's USB id ({@link isModuleUsbPort}); false when it cannot be told
   */
  usb?: boolean;
}

/**
 * A serial device (USB-UART bridge, on-board UART, or a pseudo-terminal slave)
 * opened with the `serialport` package.
 *
 * Line settings: 8 data bits, no parity, 1 stop bit, no hardware or software
 * flow control. The port is opened with an exclusive lock, so a second opener
 * (another tether, a terminal program) fails with `TRANSPORT`. DTR/RTS are never
 * touched (those ioctls fail on a pty, and toggling them resets some boards).
 *
 * Create with {@link SerialTransport.open}; the constructor is internal.
 */
export class SerialTransport extends BaseTransport {
  /** E.g. `serial:/dev/ttyUSB0@115200`. */
  readonly description: string;
  /** Device path as given to {@link SerialTransport.open}. */
  readonly path: string;
  private baud: number;
  /** A module's own USB port: no baud ({@link SerialOpenOptions.usb}). */
  private usb = false;
  private readonly port: SerialPort;
  private closing?: Promise<void>;
  /** Settle functions of writes in flight; failed with DISCONNECTED when the port closes. */
  private readonly pending = new Set<(err?: Error) => void>();

  private constructor(port: SerialPort, path: string, baudRate: number) {
    super();
    this.port = port;
    this.path = path;
    this.baud = baudRate;
    this.description = `serial:${path}@${baudRate}`;
    port.on('data', (chunk: Buffer) => this.emitData(chunk));
    // 'error' events must have a listener or Node throws; failures surface through 'close' or write().
    port.on('error', () => undefined);
    port.on('close', (err?: Error | null) => {
      this.failPending(err ?? new Error('port closed'));
      if (this.closing !== undefined || !this.isOpen) return;
      this.emitClose(
        new TetherError('DISCONNECTED', `${this.description}: the device went away${err ? ` (${err.message})` : ''}; was it unplugged or reset?`, {
          cause: err ?? undefined,
          context: { path },
        }),
      );
    });
  }

  /**
   * Open a serial device.
   *
   * @param path Device path: `/dev/ttyUSB0`, `/dev/ttyACM0`, `/dev/pts/7`, `/dev/cu.usbserial-1410`, `COM3`, ...
   * @param opts `baudRate` in baud, default 115200.
   * @returns The open transport; incoming bytes are buffered until `onData` is set.
   * @throws InvalidArgumentError when `path` is empty or `baudRate` is not an integer 1..20 000 000.
   * @throws TetherError `TRANSPORT` when the device cannot be opened: it does not exist (ENOENT),
   *   permission is denied (EACCES: join the `dialout`/`uucp` group), it is busy (locked by
   *   another program), or the baud rate is refused. The message names the path and what to check.
   */
  static async open(path: string, opts?: SerialOpenOptions): Promise<SerialTransport> {
    if (typeof path !== 'string' || path.trim() === '' || path.includes('\0')) {
      throw new InvalidArgumentError(`serial port path must be a non-empty string such as /dev/ttyUSB0 or COM3, got ${JSON.stringify(path)}`);
    }
    const baudRate = opts?.baudRate ?? DEFAULT_BAUD_RATE;
    if (typeof baudRate !== 'number' || !Number.isInteger(baudRate) || baudRate < 1 || baudRate > MAX_BAUD_RATE) {
      throw new InvalidArgumentError(`baudRate must be an integer 1..${MAX_BAUD_RATE} (baud), got ${String(baudRate)}`, { baudRate });
    }
    let port: SerialPort;
    try {
      const options = { path, baudRate, autoOpen: false, dataBits: 8, parity: 'none', stopBits: 1, rtscts: false, xon: false, xoff: false, binding: hangupSafeBinding() };
      // `binding` is not in the public option type of `SerialPort`, but its constructor honours it.
      port = new SerialPort(options as SerialPortOpenOptions<typeof SerialPort.binding>);
    } catch (e) {
      throw openError(path, baudRate, e);
    }
    await new Promise<void>((resolve, reject) => {
      port.open((err) => (err ? reject(openError(path, baudRate, err)) : resolve()));
    });
    const t = new SerialTransport(port, path, baudRate);
    t.usb = opts?.usb ?? (await isModuleUsbPort(path));
    return t;
  }

  /** Line speed in baud (the one given to {@link open}, or the last {@link setBaudRate}). */
  get baudRate(): number {
    return this.baud;
  }

  /**
   * {@link Transport.lineBaud}: the port's rate (baud), as {@link baudRate}; absent on a module's
   * own USB port ({@link SerialOpenOptions.usb}), which has none.
   */
  get lineBaud(): number | undefined {
    return this.usb ? undefined : this.baud;
  }

  /**
   * Change the line speed of the open port (termios), e.g. after the module's agent switched
   * its UART; `description` keeps the speed it was opened at.
   * @param baud line speed in baud, an integer 1..20 000 000.
   * @returns the new speed (baud).
   * @throws InvalidArgumentError for a bad baud (nothing changed); TetherError `DISCONNECTED`
   *   if the port is closed, `TRANSPORT` if the driver refuses the speed.
   */
  async setBaudRate(baud: number): Promise<number> {
    if (typeof baud !== 'number' || !Number.isInteger(baud) || baud < 1 || baud > MAX_BAUD_RATE) {
      throw new InvalidArgumentError(`baudRate must be an integer 1..${MAX_BAUD_RATE} (baud), got ${String(baud)}`, { baudRate: baud });
    }
    if (!this.isOpen || !this.port.isOpen) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    await new Promise<void>((resolve, reject) => {
      this.port.update({ baudRate: baud }, (err) =>
        err ? reject(new TetherError('TRANSPORT', `${this.description}: the driver refused ${baud} baud: ${err.message}`, { cause: err, context: { baudRate: baud } })) : resolve(),
      );
    });
    this.baud = baud;
    return baud;
  }

  /**
   * Write bytes; resolves once the OS accepted them and drained its output buffer (tcdrain).
   * Writes are sent in call order.
   *
   * @throws TetherError `DISCONNECTED` if the transport is closed or the device went away,
   *   `TRANSPORT` for any other write failure.
   */
  async write(data: Uint8Array): Promise<void> {
    if (!this.isOpen) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('write() expects a Uint8Array');
    if (data.byteLength === 0) return;
    const buf = Buffer.from(data); // a copy: the caller may reuse its array once write() returns
    await new Promise<void>((resolve, reject) => {
      const settle = (err?: Error): void => {
        if (!this.pending.delete(settle)) return;
        if (err) reject(this.writeError(err));
        else resolve();
      };
      this.pending.add(settle);
      // The write callback fires once the binding wrote the bytes to the fd; then tcdrain.
      this.port.write(buf, (err) => {
        if (err) settle(err);
        else this.port.drain((err2) => settle(err2 ?? undefined));
      });
    });
  }

  /** Close the device. Idempotent; resolves when the OS handle is released. Never rejects. */
  async close(): Promise<void> {
    if (this.closing) return this.closing;
    const wasOpen = this.isOpen;
    this.emitClose();
    this.failPending(new Error('closed by the caller'));
    if (!wasOpen || !this.port.isOpen) {
      this.closing = Promise.resolve();
      return this.closing;
    }
    this.closing = new Promise<void>((resolve) => {
      this.port.close(() => resolve());
    });
    return this.closing;
  }

  private failPending(err: Error): void {
    for (const settle of [...this.pending]) settle(err);
  }

  private writeError(err: Error): TetherError {
    if (!this.isOpen || !this.port.isOpen) {
      return new TetherError('DISCONNECTED', `${this.description}: write failed, the port is closed (${err.message})`, { cause: err });
    }
    return new TetherError('TRANSPORT', `${this.description}: write failed: ${err.message}`, { cause: err });
  }
}

/** Map a serialport open failure (its messages carry strerror text, no errno) to a TRANSPORT error with advice. */
function openError(path: string, baudRate: number, e: unknown): TetherError {
  const msg = e instanceof Error ? e.message : String(e);
  let advice: string;
  let reason: string;
  if (/No such file or directory|ENOENT|cannot find the file/i.test(msg)) {
    reason = 'ENOENT';
    advice = `no such device; check the cable and the path (list candidates with \`tether ports\`)`;
  } else if (/Permission denied|EACCES|Access denied|EPERM/i.test(msg)) {
    reason = 'EACCES';
    advice = `permission denied; add your user to the group owning ${path} (usually \`dialout\` or \`uucp\`) and log in again`;
  } else if (/Cannot lock port|Resource temporarily unavailable|Resource busy|EBUSY|EAGAIN/i.test(msg)) {
    reason = 'BUSY';
    advice = `the port is in use by another program (a terminal, another tether, ModemManager); close it and retry`;
  } else if (/baud rate/i.test(msg)) {
    reason = 'BAUD';
    advice = `the driver refused ${baudRate} baud; try a standard rate such as 115200 or 921600`;
  } else if (/Not a typewriter|ENOTTY|Inappropriate ioctl/i.test(msg)) {
    reason = 'ENOTTY';
    advice = `${path} is not a serial device`;
  } else {
    reason = 'OTHER';
    advice = 'check that the device is present and not used by another program';
  }
  return new TetherError('TRANSPORT', `cannot open serial port ${path} at ${baudRate} baud: ${advice} (${msg})`, {
    cause: e,
    context: { path, baudRate, reason },
  });
}

/** The structural bits of the POSIX port bindings (bindings-cpp LinuxPortBinding / DarwinPortBinding) we rely on. */
interface PosixPortBinding {
  fd: number | null;
  readonly isOpen: boolean;
  poller: { once(event: 'readable', cb: (err: Error | null) => void): unknown };
  read(buffer: Buffer, offset: number, length: number): Promise<{ buffer: Buffer; bytesRead: number }>;
}

function isPosixPortBinding(p: unknown): p is PosixPortBinding {
  if (p === null || typeof p !== 'object') return false;
  const o = p as Record<string, unknown>;
  const poller = o.poller as Record<string, unknown> | undefined;
  return typeof o.fd === 'number' && typeof o.read === 'function' && poller !== undefined && typeof poller.once === 'function';
}

let safeBinding: typeof SerialPort.binding | undefined;

/**
 * The platform binding of `serialport`, with one fix on POSIX: a read that returns 0 bytes
 * (end of file: the tty was hung up, e.g. the pty master or the USB device went away) is
 * reported as a disconnect. The stock `unixRead` retries 0-byte reads immediately, forever,
 * which spins a CPU core and grows memory instead of emitting `close`.
 * On other platforms, or if the binding's shape is not the expected one, it is the stock binding.
 */
function hangupSafeBinding(): typeof SerialPort.binding {
  if (safeBinding) return safeBinding;
  const base = SerialPort.binding;
  if (process.platform === 'win32') return (safeBinding = base);
  const wrapped = {
    list: () => base.list(),
    open: async (options: Parameters<typeof base.open>[0]) => {
      const port: unknown = await base.open(options as never);
      if (isPosixPortBinding(port)) port.read = (buffer, offset, length) => hangupSafeRead(port, buffer, offset, length);
      return port;
    },
  };
  return (safeBinding = wrapped as unknown as typeof SerialPort.binding);
}

function readOnce(fd: number, buffer: Buffer, offset: number, length: number): Promise<number> {
  return new Promise((resolve, reject) => fsRead(fd, buffer, offset, length, null, (err, n) => (err ? reject(err) : resolve(n))));
}

/** bindings-cpp `unixRead`, except that end of file is a disconnect instead of an endless retry. */
async function hangupSafeRead(port: PosixPortBinding, buffer: Buffer, offset: number, length: number): Promise<{ buffer: Buffer; bytesRead: number }> {
  const notOpen = (): Error => Object.assign(new Error('Port is not open'), { canceled: true });
  for (;;) {
    if (!port.isOpen || port.fd === null) throw notOpen();
    let bytesRead: number;
    try {
      bytesRead = await readOnce(port.fd, buffer, offset, length);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR') {
        if (!port.isOpen) throw notOpen();
        await new Promise<void>((resolve, reject) => port.poller.once('readable', (err) => (err ? reject(err) : resolve())));
        continue;
      }
      throw e; // any other error: the stream treats it as a disconnect
    }
    if (bytesRead === 0) throw Object.assign(new Error('end of file: the device hung up'), { code: 'EOF', disconnect: true });
    return { buffer, bytesRead };
  }
}

/**
 * RFC 2217 ("Telnet Com Port Control Option") client transport: a remote serial port
 * exported by an access server such as ser2net (`accepter: telnet(rfc2217),tcp,...`),
 * labgrid's NetworkSerialPort, or a terminal server.
 *
 * Two parts:
 * - {@link Rfc2217Codec}: the pure telnet/RFC 2217 byte machine (RFC 854 command parsing and
 *   IAC escaping, RFC 855 option negotiation for BINARY (RFC 856), SUPPRESS-GO-AHEAD
 *   (RFC 858) and COM-PORT-OPTION (44), the RFC 2217 subnegotiations). It touches no socket,
 *   so its behaviour is tested byte for byte.
 * - {@link Rfc2217Transport}: a TCP socket driven by the codec; `write()` takes plain bytes
 *   and `onData` delivers plain bytes (every 0xFF is escaped and unescaped here).
 *
 * Written for tether from the RFC texts (no code taken from other projects).
 */
import { isIP, type Socket } from 'node:net';
import { InvalidArgumentError, TetherError } from '../errors.js';
import { MAX_BAUD_RATE } from './serial.js';
import { BaseTransport } from './transport.js';
import { connectTcpSocket, writeSocket } from './tcp.js';

// ------------------------------------------------------------------ telnet constants (RFC 854)

/** Interpret As Command. */
export const IAC = 255;
export const DONT = 254;
export const DO = 253;
export const WONT = 252;
export const WILL = 251;
/** Subnegotiation begin / end. */
export const SB = 250;
export const SE = 240;

/** Telnet options negotiated by this client. */
export const OPT_BINARY = 0;
export const OPT_ECHO = 1;
export const OPT_SGA = 3;
/** RFC 2217 COM-PORT-OPTION. */
export const OPT_COM_PORT = 44;

/** RFC 2217 client→server subnegotiation commands; the server answers with the same value + 100. */
export const CPO = {
  SIGNATURE: 0,
  SET_BAUDRATE: 1,
  SET_DATASIZE: 2,
  SET_PARITY: 3,
  SET_STOPSIZE: 4,
  SET_CONTROL: 5,
  NOTIFY_LINESTATE: 6,
  NOTIFY_MODEMSTATE: 7,
  FLOWCONTROL_SUSPEND: 8,
  FLOWCONTROL_RESUME: 9,
  SET_LINESTATE_MASK: 10,
  SET_MODEMSTATE_MASK: 11,
  PURGE_DATA: 12,
} as const;
/** Offset of server→client command codes (RFC 2217: "server to client ... plus 100"). */
export const SERVER_OFFSET = 100;

/** Parity names (URL `parity=`) and their RFC 2217 SET-PARITY values. */
export const PARITY_VALUES = { none: 1, odd: 2, even: 3, mark: 4, space: 5 } as const;
export type Parity = keyof typeof PARITY_VALUES;
/** Stop bits (URL `stopbits=`) and their RFC 2217 SET-STOPSIZE values (1.5 is 3). */
export const STOPSIZE_VALUES = { '1': 1, '2': 2, '1.5': 3 } as const;
export type StopBits = 1 | 1.5 | 2;

/** SET-CONTROL values used here (RFC 2217). */
export const CONTROL = {
  FLOW_NONE: 1,
  FLOW_XONXOFF: 2,
  FLOW_HARDWARE: 3,
  BREAK_ON: 5,
  BREAK_OFF: 6,
  DTR_ON: 8,
  DTR_OFF: 9,
  RTS_ON: 11,
  RTS_OFF: 12,
  INBOUND_FLOW_NONE: 14,
} as const;

/** PURGE-DATA values (RFC 2217): which buffers of the access server to discard. */
export const PURGE = { receive: 1, transmit: 2, both: 3 } as const;
export type PurgeWhich = keyof typeof PURGE;

/** NOTIFY-LINESTATE bits (RFC 2217). */
export const LINESTATE = {
  TIMEOUT: 128,
  TSR_EMPTY: 64,
  THR_EMPTY: 32,
  BREAK: 16,
  FRAMING_ERROR: 8,
  PARITY_ERROR: 4,
  OVERRUN_ERROR: 2,
  DATA_READY: 1,
} as const;

/** NOTIFY-MODEMSTATE bits (RFC 2217). */
export const MODEMSTATE = {
  DCD: 128,
  RI: 64,
  DSR: 32,
  CTS: 16,
  DELTA_DCD: 8,
  RI_TRAILING_EDGE: 4,
  DELTA_DSR: 2,
  DELTA_CTS: 1,
} as const;

/** One RFC 2217 reply or notification from the server, decoded. */
export interface ComPortReply {
  /** Client command code this answers (the server's code minus 100), e.g. 1 for SET-BAUDRATE. */
  command: number;
  /** Raw value bytes (IAC unescaped). */
  value: Buffer;
}

/** What the codec tells its owner. */
export interface Rfc2217CodecEvents {
  /** Plain serial data from the remote port (IACs removed). */
  data(chunk: Buffer): void;
  /** Bytes to send to the server (negotiation replies). */
  send(bytes: Buffer): void;
  /** A COM-PORT-OPTION subnegotiation from the server (replies and notifications). */
  comPort?(reply: ComPortReply): void;
  /** The server agreed (`true`) or refused (`false`) COM-PORT-OPTION. */
  comPortState?(enabled: boolean): void;
}

/** Per-option negotiation state (RFC 1143's Q method, without the queue bit). */
type OptState = 'no' | 'yes' | 'wantyes' | 'wantno';

/**
 * Telnet + RFC 2217 byte machine for the client side. Feed it received bytes with
 * {@link Rfc2217Codec.receive}; it calls `events.data` with plain data, `events.send` with
 * negotiation answers and `events.comPort` with RFC 2217 replies. A command split across
 * chunks (even an IAC at the end of a chunk) is kept until the rest arrives.
 *
 * Options: we ask to use BINARY and SGA both ways and offer COM-PORT-OPTION (WILL 44);
 * every other option is refused (DONT / WONT), and a repeated request is not answered
 * again (no negotiation loops, RFC 854 "should not respond to a request to enter a mode
 * it is already in").
 */
export class Rfc2217Codec {
  /** Options we perform (our WILL) and the server performs (its WILL). */
  private readonly local = new Map<number, OptState>();
  private readonly remote = new Map<number, OptState>();
  private state: 'data' | 'iac' | 'cmd' | 'sb' | 'sbiac' = 'data';
  private cmd = 0;
  private sb: number[] = [];
  private static readonly WANT_LOCAL = new Set([OPT_BINARY, OPT_SGA, OPT_COM_PORT]);
  private static readonly WANT_REMOTE = new Set([OPT_BINARY, OPT_SGA]);
  /** Longest subnegotiation kept (bytes); longer ones are cut (a server sending garbage). */
  static readonly MAX_SB = 1024;

  constructor(private readonly events: Rfc2217CodecEvents) {}

  /** The bytes that open the negotiation: WILL BINARY, DO BINARY, WILL SGA, DO SGA, WILL COM-PORT-OPTION. */
  start(): void {
    const out: number[] = [];
    for (const o of [OPT_BINARY, OPT_SGA, OPT_COM_PORT]) {
      this.local.set(o, 'wantyes');
      out.push(IAC, WILL, o);
      if (Rfc2217Codec.WANT_REMOTE.has(o)) {
        this.remote.set(o, 'wantyes');
        out.push(IAC, DO, o);
      }
    }
    this.events.send(Buffer.from(out));
  }

  /** True once the server said DO COM-PORT-OPTION. */
  get comPortEnabled(): boolean {
    return this.local.get(OPT_COM_PORT) === 'yes';
  }

  /** Negotiated state of option `opt` on our side (`local`) or the server's (`remote`). */
  optionState(side: 'local' | 'remote', opt: number): OptState {
    return (side === 'local' ? this.local : this.remote).get(opt) ?? 'no';
  }

  /** Process bytes received from the server. */
  receive(chunk: Uint8Array): void {
    let dataStart = -1;
    const flush = (end: number): void => {
      if (dataStart >= 0 && end > dataStart) this.events.data(Buffer.from(chunk.subarray(dataStart, end)));
      dataStart = -1;
    };
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      switch (this.state) {
        case 'data':
          if (b === IAC) {
            flush(i);
            this.state = 'iac';
          } else if (dataStart < 0) dataStart = i;
          break;
        case 'iac':
          if (b === IAC) {
            // an escaped 0xFF data byte
            this.events.data(Buffer.from([IAC]));
            this.state = 'data';
          } else if (b === DO || b === DONT || b === WILL || b === WONT) {
            this.cmd = b;
            this.state = 'cmd';
          } else if (b === SB) {
            this.sb = [];
            this.state = 'sb';
          } else this.state = 'data'; // NOP, GA, DM, AYT...: two-byte commands carry nothing for us
          break;
        case 'cmd':
          this.negotiate(this.cmd, b);
          this.state = 'data';
          break;
        case 'sb':
          if (b === IAC) this.state = 'sbiac';
          else if (this.sb.length < Rfc2217Codec.MAX_SB) this.sb.push(b);
          break;
        case 'sbiac':
          if (b === IAC) {
            if (this.sb.length < Rfc2217Codec.MAX_SB) this.sb.push(IAC);
            this.state = 'sb';
          } else if (b === SE) {
            this.subnegotiation(this.sb);
            this.sb = [];
            this.state = 'data';
          } else {
            // IAC + anything else ends the subnegotiation badly (RFC 854): drop it, read the command
            this.sb = [];
            this.state = 'iac';
            i--;
          }
          break;
      }
    }
    flush(chunk.length);
  }

  private reply(verb: number, opt: number): void {
    this.events.send(Buffer.from([IAC, verb, opt]));
  }

  private negotiate(verb: number, opt: number): void {
    if (verb === DO || verb === DONT) {
      const st = this.local.get(opt) ?? 'no';
      const want = Rfc2217Codec.WANT_LOCAL.has(opt);
      if (verb === DO) {
        if (st === 'yes') return;
        if (st === 'wantyes') this.local.set(opt, 'yes');
        else if (want) {
          this.local.set(opt, 'yes');
          this.reply(WILL, opt);
        } else if (st !== 'wantno') {
          this.reply(WONT, opt);
          return;
        } else this.local.set(opt, 'no');
        if (opt === OPT_COM_PORT && this.local.get(opt) === 'yes') this.events.comPortState?.(true);
      } else {
        if (st === 'no') {
          // a refusal of an option we never asked for needs no answer; one we asked for is final
          return;
        }
        if (st === 'yes') this.reply(WONT, opt);
        this.local.set(opt, 'no');
        if (opt === OPT_COM_PORT) this.events.comPortState?.(false);
      }
      return;
    }
    const st = this.remote.get(opt) ?? 'no';
    const want = Rfc2217Codec.WANT_REMOTE.has(opt);
    if (verb === WILL) {
      if (st === 'yes') return;
      if (st === 'wantyes') this.remote.set(opt, 'yes');
      else if (want) {
        this.remote.set(opt, 'yes');
        this.reply(DO, opt);
      } else if (st !== 'wantno') this.reply(DONT, opt);
      else this.remote.set(opt, 'no');
    } else {
      if (st === 'no') return;
      if (st === 'yes') this.reply(DONT, opt);
      this.remote.set(opt, 'no');
    }
  }

  private subnegotiation(bytes: number[]): void {
    if (bytes.length < 2 || bytes[0] !== OPT_COM_PORT) return;
    const code = bytes[1];
    if (code < SERVER_OFFSET) return; // client codes are not sent to a client
    this.events.comPort?.({ command: code - SERVER_OFFSET, value: Buffer.from(bytes.slice(2)) });
  }
}

/** Escape data for the wire: every 0xFF byte is doubled (RFC 854). Returns `data` itself when it has none. */
export function escapeIac(data: Uint8Array): Buffer {
  let n = 0;
  for (let i = 0; i < data.length; i++) if (data[i] === IAC) n++;
  if (n === 0) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const out = Buffer.allocUnsafe(data.length + n);
  let j = 0;
  for (let i = 0; i < data.length; i++) {
    out[j++] = data[i];
    if (data[i] === IAC) out[j++] = IAC;
  }
  return out;
}

/** `IAC SB COM-PORT-OPTION command value... IAC SE`, with 0xFF in the value doubled. */
export function comPortCommand(command: number, value: Uint8Array | number[]): Buffer {
  return Buffer.concat([Buffer.from([IAC, SB, OPT_COM_PORT, command]), escapeIac(Uint8Array.from(value)), Buffer.from([IAC, SE])]);
}

/** SET-BAUDRATE value: 4 bytes, network byte order (RFC 2217). */
export function baudBytes(baud: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(baud >>> 0);
  return b;
}

// ------------------------------------------------------------------ transport

/** Default serial settings of {@link Rfc2217Transport.open}: 115200 baud, 8N1. */
export const RFC2217_DEFAULTS = { baudRate: 115200, dataBits: 8, parity: 'none', stopBits: 1 } as const;

/** How long {@link Rfc2217Transport.open} waits for the server's DO COM-PORT-OPTION and each setting's answer: 3000 ms. */
export const DEFAULT_NEGOTIATION_TIMEOUT_MS = 3000;

/** Serial line settings requested from the access server. */
export interface Rfc2217LineOptions {
  /** Line speed in baud, 1..20 000 000. Default 115200. */
  baudRate?: number;
  /** Data bits: 5, 6, 7 or 8. Default 8. */
  dataBits?: 5 | 6 | 7 | 8;
  /** Parity. Default `none`. */
  parity?: Parity;
  /** Stop bits: 1, 1.5 or 2. Default 1. */
  stopBits?: StopBits;
  /** DTR line: `true` on, `false` off, undefined leaves it as the server has it. Default untouched. */
  dtr?: boolean;
  /** RTS line: `true` on, `false` off, undefined leaves it as the server has it. Default untouched. */
  rts?: boolean;
}

/** Options of {@link Rfc2217Transport.open}. */
export interface Rfc2217OpenOptions extends Rfc2217LineOptions {
  /** Give up connecting after this many ms (an integer 1..600 000). Default 5000. */
  connectTimeoutMs?: number;
  /** Wait at most this long (ms) for the server to accept COM-PORT-OPTION and for each setting's answer. Default 3000. */
  negotiationTimeoutMs?: number;
}

/** Validate line options; throws InvalidArgumentError naming the bad one. */
export function checkLineOptions(o: Rfc2217LineOptions): void {
  if (o.baudRate !== undefined && !(Number.isInteger(o.baudRate) && o.baudRate >= 1 && o.baudRate <= MAX_BAUD_RATE)) {
    throw new InvalidArgumentError(`baudRate must be an integer 1..${MAX_BAUD_RATE} (baud), got ${String(o.baudRate)}`, { baudRate: o.baudRate });
  }
  if (o.dataBits !== undefined && ![5, 6, 7, 8].includes(o.dataBits)) {
    throw new InvalidArgumentError(`dataBits must be 5, 6, 7 or 8, got ${String(o.dataBits)}`, { dataBits: o.dataBits });
  }
  if (o.parity !== undefined && !Object.hasOwn(PARITY_VALUES, o.parity)) {
    throw new InvalidArgumentError(`parity must be one of ${Object.keys(PARITY_VALUES).join(', ')}, got ${String(o.parity)}`, { parity: o.parity });
  }
  if (o.stopBits !== undefined && ![1, 1.5, 2].includes(o.stopBits)) {
    throw new InvalidArgumentError(`stopBits must be 1, 1.5 or 2, got ${String(o.stopBits)}`, { stopBits: o.stopBits });
  }
  for (const k of ['dtr', 'rts'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new InvalidArgumentError(`${k} must be true or false, got ${String(o[k])}`);
  }
}

/**
 * A serial port on an RFC 2217 access server (ser2net `telnet(rfc2217)`, labgrid NetworkSerialPort).
 *
 * On open it connects, negotiates BINARY, SUPPRESS-GO-AHEAD and COM-PORT-OPTION, then sets
 * the line (SET-BAUDRATE, SET-DATASIZE, SET-PARITY, SET-STOPSIZE, SET-CONTROL "no flow
 * control" both ways, and DTR/RTS when asked) and waits for the server's answer to each.
 * Data is 8-bit clean: 0xFF is doubled on the wire both ways.
 *
 * The line and modem state the server reports (NOTIFY-LINESTATE / NOTIFY-MODEMSTATE, bit
 * values in {@link LINESTATE} / {@link MODEMSTATE}) are in {@link lineState} / {@link modemState}
 * and go to the {@link onNotify} listener. The connection is never reopened by this class;
 * `openTransport` wraps it in a {@link ReconnectingTransport}.
 *
 * Create with {@link Rfc2217Transport.open}; the constructor is internal.
 */
export class Rfc2217Transport extends BaseTransport {
  /** E.g. `rfc2217://127.0.0.1:7000`. */
  readonly description: string;
  readonly host: string;
  readonly port: number;
  private readonly socket: Socket;
  private readonly codec: Rfc2217Codec;
  private readonly timeoutMs: number;
  private baud: number;
  private settings: Required<Omit<Rfc2217LineOptions, 'dtr' | 'rts'>> & Pick<Rfc2217LineOptions, 'dtr' | 'rts'>;
  private lineState_?: number;
  private modemState_?: number;
  private notify?: (kind: 'linestate' | 'modemstate', value: number) => void;
  /** Waiters for a server answer, by client command code. */
  private readonly waiters = new Map<number, Array<(value: Buffer | Error) => void>>();
  private comPortWaiter?: (ok: boolean | Error) => void;
  private lastError?: Error;
  private closing?: Promise<void>;

  private constructor(socket: Socket, host: string, port: number, opts: Rfc2217OpenOptions) {
    super();
    this.socket = socket;
    this.host = host;
    this.port = port;
    this.description = `rfc2217://${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
    this.timeoutMs = opts.negotiationTimeoutMs ?? DEFAULT_NEGOTIATION_TIMEOUT_MS;
    this.settings = {
      baudRate: opts.baudRate ?? RFC2217_DEFAULTS.baudRate,
      dataBits: opts.dataBits ?? RFC2217_DEFAULTS.dataBits,
      parity: opts.parity ?? RFC2217_DEFAULTS.parity,
      stopBits: opts.stopBits ?? RFC2217_DEFAULTS.stopBits,
      dtr: opts.dtr,
      rts: opts.rts,
    };
    this.baud = this.settings.baudRate;
    this.codec = new Rfc2217Codec({
      data: (c) => this.emitData(c),
      send: (b) => this.rawWrite(b),
      comPort: (r) => this.onComPort(r),
      comPortState: (ok) => {
        const w = this.comPortWaiter;
        this.comPortWaiter = undefined;
        w?.(ok);
      },
    });
    socket.on('data', (chunk: Buffer) => this.codec.receive(chunk));
    socket.on('error', (err) => {
      this.lastError = err;
    });
    socket.on('close', () => {
      const why = this.lastError ? `connection lost (${this.lastError.message})` : 'the server closed the connection';
      const err = new TetherError('DISCONNECTED', `${this.description}: ${why}`, { cause: this.lastError, context: { host, port } });
      this.failWaiters(err);
      if (this.closing !== undefined) return;
      this.emitClose(err);
    });
  }

  /**
   * Connect to an RFC 2217 server and set the serial line.
   *
   * @param host Hostname or IP address (IPv6 without brackets).
   * @param port TCP port 1..65535.
   * @param opts line settings (default 115200 8N1, flow control off, DTR/RTS untouched),
   *   `connectTimeoutMs` (default 5000), `negotiationTimeoutMs` (default 3000).
   * @throws InvalidArgumentError for a bad host, port or option (nothing is sent).
   * @throws TetherError `TRANSPORT` when the connection fails, the server refuses
   *   COM-PORT-OPTION (a plain telnet or raw port), or a setting is not answered in time.
   */
  static async open(host: string, port: number, opts: Rfc2217OpenOptions = {}): Promise<Rfc2217Transport> {
    if (typeof host !== 'string' || host.trim() === '' || /[\s\0]/.test(host)) {
      throw new InvalidArgumentError(`RFC 2217 host must be a non-empty hostname or IP address, got ${JSON.stringify(host)}`);
    }
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InvalidArgumentError(`RFC 2217 port must be an integer 1..65535, got ${String(port)}`, { port });
    }
    checkLineOptions(opts);
    for (const k of ['connectTimeoutMs', 'negotiationTimeoutMs'] as const) {
      const v = opts[k];
      if (v !== undefined && !(typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 600_000)) {
        throw new InvalidArgumentError(`${k} must be an integer 1..600000 (ms), got ${String(v)}`);
      }
    }
    const where = `rfc2217://${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
    const socket = await connectTcpSocket(host, port, opts.connectTimeoutMs ?? 5000, where, 'is ser2net (telnet(rfc2217) accepter) listening on that port?');
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    const t = new Rfc2217Transport(socket, host, port, opts);
    try {
      await t.negotiate();
    } catch (e) {
      await t.close();
      throw e;
    }
    return t;
  }

  private async negotiate(): Promise<void> {
    const accepted = new Promise<boolean | Error>((resolve) => {
      this.comPortWaiter = resolve;
    });
    this.codec.start();
    const ok = await this.withTimeout(accepted, 'the server to accept COM-PORT-OPTION (a raw TCP port never answers: for ser2net `accepter: tcp,...` use tcp://)');
    if (ok instanceof Error) throw ok;
    if (!ok) {
      throw new TetherError('TRANSPORT', `${this.description} refused COM-PORT-OPTION: it is not an RFC 2217 port (for ser2net raw mode use tcp://)`, {
        context: { host: this.host, port: this.port, reason: 'NO_RFC2217' },
      });
    }
    const s = this.settings;
    const steps: Array<Promise<Buffer>> = [
      this.command(CPO.SET_BAUDRATE, baudBytes(s.baudRate)),
      this.command(CPO.SET_DATASIZE, [s.dataBits]),
      this.command(CPO.SET_PARITY, [PARITY_VALUES[s.parity]]),
      this.command(CPO.SET_STOPSIZE, [STOPSIZE_VALUES[String(s.stopBits) as keyof typeof STOPSIZE_VALUES]]),
      this.command(CPO.SET_CONTROL, [CONTROL.FLOW_NONE]),
    ];
    if (s.dtr !== undefined) steps.push(this.command(CPO.SET_CONTROL, [s.dtr ? CONTROL.DTR_ON : CONTROL.DTR_OFF]));
    if (s.rts !== undefined) steps.push(this.command(CPO.SET_CONTROL, [s.rts ? CONTROL.RTS_ON : CONTROL.RTS_OFF]));
    const [baud] = await Promise.all(steps);
    if (baud.length === 4) this.baud = baud.readUInt32BE(0);
  }

  /** Line speed in baud, as the server last confirmed it. */
  get baudRate(): number {
    return this.baud;
  }

  /** {@link Transport.lineBaud}: the rate the server confirmed (baud), as {@link baudRate}. */
  get lineBaud(): number {
    return this.baud;
  }

  /** Last NOTIFY-LINESTATE value (bits in {@link LINESTATE}); undefined until the server sent one. */
  get lineState(): number | undefined {
    return this.lineState_;
  }

  /** Last NOTIFY-MODEMSTATE value (bits in {@link MODEMSTATE}); undefined until the server sent one. */
  get modemState(): number | undefined {
    return this.modemState_;
  }

  /** The current line settings (baud as confirmed by the server). */
  get lineOptions(): Rfc2217LineOptions {
    return { ...this.settings, baudRate: this.baud };
  }

  /** Register the single listener of NOTIFY-LINESTATE / NOTIFY-MODEMSTATE values. */
  onNotify(listener: (kind: 'linestate' | 'modemstate', value: number) => void): void {
    this.notify = listener;
  }

  /**
   * Change the remote line speed (SET-BAUDRATE), e.g. after the agent or a flasher switched
   * the module's UART. Resolves with the baud the server confirmed.
   * @throws InvalidArgumentError for a baud outside 1..20 000 000 (nothing sent).
   * @throws TetherError `TRANSPORT` if the server does not answer within the negotiation
   *   timeout, `DISCONNECTED` if the connection is gone.
   */
  async setBaudRate(baud: number): Promise<number> {
    checkLineOptions({ baudRate: baud });
    const v = await this.command(CPO.SET_BAUDRATE, baudBytes(baud));
    this.settings.baudRate = baud;
    if (v.length === 4) this.baud = v.readUInt32BE(0);
    return this.baud;
  }

  /**
   * Set the DTR and/or RTS line (SET-CONTROL 8/9, 11/12), e.g. to pulse a module's reset
   * or boot pin wired to them. Undefined leaves a line alone.
   * @throws InvalidArgumentError for a non-boolean value; TetherError `TRANSPORT` / `DISCONNECTED` as {@link setBaudRate}.
   */
  async setControlLines(lines: { dtr?: boolean; rts?: boolean }): Promise<void> {
    checkLineOptions(lines);
    const steps: Array<Promise<Buffer>> = [];
    if (lines.dtr !== undefined) steps.push(this.command(CPO.SET_CONTROL, [lines.dtr ? CONTROL.DTR_ON : CONTROL.DTR_OFF]));
    if (lines.rts !== undefined) steps.push(this.command(CPO.SET_CONTROL, [lines.rts ? CONTROL.RTS_ON : CONTROL.RTS_OFF]));
    await Promise.all(steps);
    if (lines.dtr !== undefined) this.settings.dtr = lines.dtr;
    if (lines.rts !== undefined) this.settings.rts = lines.rts;
  }

  /**
   * Discard the access server's buffered data (PURGE-DATA): `receive` (bytes from the
   * device not yet sent to us), `transmit` (bytes from us not yet sent to the device), or `both`.
   * @throws InvalidArgumentError for another value; TetherError `TRANSPORT` / `DISCONNECTED` as {@link setBaudRate}.
   */
  async purge(which: PurgeWhich = 'both'): Promise<void> {
    if (!Object.hasOwn(PURGE, which)) throw new InvalidArgumentError(`purge() takes receive, transmit or both, got ${String(which)}`);
    await this.command(CPO.PURGE_DATA, [PURGE[which]]);
  }

  /** Send a COM-PORT-OPTION command and resolve with the server's answer's value. */
  private command(code: number, value: Uint8Array | number[]): Promise<Buffer> {
    if (!this.isOpen || this.socket.destroyed) return Promise.reject(new TetherError('DISCONNECTED', `${this.description} is closed`));
    const answer = new Promise<Buffer | Error>((resolve) => {
      const list = this.waiters.get(code) ?? [];
      list.push(resolve);
      this.waiters.set(code, list);
    });
    this.rawWrite(comPortCommand(code, value));
    const name = Object.entries(CPO).find(([, v]) => v === code)?.[0].replace(/_/g, '-') ?? `command ${code}`;
    const what =
      code === CPO.SET_CONTROL && value[0] >= CONTROL.DTR_ON && value[0] <= CONTROL.RTS_OFF
        ? `an answer to ${name} ${value[0]} (DTR/RTS: a port without modem control lines, such as a pseudo-terminal, leaves it unanswered)`
        : `an answer to ${name}`;
    return this.withTimeout(answer, what, () => {
      // forget our waiter so a late answer is not taken for the next command's
      const list = this.waiters.get(code);
      list?.shift();
    }).then((v) => {
      if (v instanceof Error) throw v;
      return v;
    });
  }

  private withTimeout<T>(p: Promise<T>, what: string, onTimeout?: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        onTimeout?.();
        reject(new TetherError('TRANSPORT', `${this.description}: no answer from the RFC 2217 server within ${this.timeoutMs} ms waiting for ${what}`, { context: { host: this.host, port: this.port, reason: 'TIMEOUT' } }));
      }, this.timeoutMs);
      p.then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  }

  private onComPort(r: ComPortReply): void {
    if (r.command === CPO.NOTIFY_LINESTATE && r.value.length >= 1) {
      this.lineState_ = r.value[0];
      this.notify?.('linestate', r.value[0]);
      return;
    }
    if (r.command === CPO.NOTIFY_MODEMSTATE && r.value.length >= 1) {
      this.modemState_ = r.value[0];
      this.notify?.('modemstate', r.value[0]);
      return;
    }
    const list = this.waiters.get(r.command);
    const w = list?.shift();
    w?.(r.value);
  }

  private failWaiters(err: Error): void {
    const c = this.comPortWaiter;
    this.comPortWaiter = undefined;
    c?.(err);
    for (const list of this.waiters.values()) for (const w of list.splice(0)) w(err);
  }

  private rawWrite(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  /**
   * Write plain bytes (0xFF is escaped here); resolves once they were handed to the kernel.
   * @throws TetherError `DISCONNECTED` if the transport is closed or the connection broke, `TRANSPORT` otherwise.
   */
  async write(data: Uint8Array): Promise<void> {
    if (!this.isOpen || this.socket.destroyed) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('write() expects a Uint8Array');
    if (data.byteLength === 0) return;
    const wire = escapeIac(data);
    // escapeIac returns a view of the caller's array when nothing needed escaping: copy it
    const buf = wire.buffer === data.buffer ? Buffer.from(wire) : wire;
    await writeSocket(this.socket, buf, this.description, () => this.isOpen);
  }

  /** Close the connection (FIN, then release after at most 1000 ms). Idempotent; never rejects. */
  async close(): Promise<void> {
    if (this.closing) return this.closing;
    this.emitClose();
    this.failWaiters(new TetherError('CLOSED', `${this.description} closed`));
    const s = this.socket;
    this.closing = new Promise<void>((resolve) => {
      if (s.destroyed) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        s.destroy();
        resolve();
      };
      const timer = setTimeout(done, 1000);
      s.once('close', done);
      s.end();
    });
    return this.closing;
  }
}


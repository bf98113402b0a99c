/**
 * A simulated module: runs a family's real agent file (from firmware-shim/,
 * verbatim) in a Lua VM, with that family's firmware libraries emulated.
 * Family-independent: the VM host, the UART wire, the scheduler, boot and
 * reset, and the endpoints (in-process, TCP, pseudo-terminal). The family part
 * (which libraries, which agent file) is a {@link SimFamily}.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { LuaVm, MEMERRMSG } from './lua-vm.js';
import { Scheduler } from './scheduler.js';
import { UartWire, line8N1 } from './uart-wire.js';
import { createMemoryPair } from '../transport/memory.js';
import { BaseTransport, type Transport } from '../transport/transport.js';
import { createPty } from '../transport/pty.js';
import { repoRoot } from '../util/repo-root.js';
import { InvalidArgumentError, TetherError } from '../errors.js';

/** What a family installs for one boot of the module. */
export interface FamilyBoot {
  /** Tear down everything of this boot (sockets, servers, timers outside the scheduler). */
  shutdown(): void;
}

/** Context a family gets at every boot. */
export interface FamilyContext {
  vm: LuaVm;
  scheduler: Scheduler;
  wire: UartWire;
  /** UART id wired to the host. */
  uartId: number;
  /** Module debug log (not the RPC UART). */
  log(line: string): void;
  /** A fatal Lua error: the firmware prints it and reboots. */
  fatal(message: string): void;
  /** Milliseconds since this boot. */
  ticks(): number;
  /** Reboot requested from Lua. */
  reboot(): void;
}

/** A firmware family the simulator can run. */
export interface SimFamily {
  /** `luatos`, `luat`, `nodemcu`. */
  readonly name: string;
  /** Human name of the simulated module, e.g. "Air780E". */
  readonly moduleName: string;
  /** Agent file relative to the package root, e.g. `dist/agents/luatos/main.lua` (a build output of scripts/gen-lua.ts). */
  readonly agentFile: string;
  /** UART id the host is wired to by default. */
  readonly defaultUartId: number;
  /** Lines the firmware prints on the RPC UART at power-on (non-protocol noise). */
  bootNoise(): string[];
  /** Install the emulated libraries into a fresh VM. */
  install(ctx: FamilyContext): FamilyBoot;
  /**
   * Baud rate of the host's serial line given in the family's options (`baud`), which the family
   * also hands to the agent as its `TETHER_BAUD`. {@link SimulatedModuleOptions.baud} wins over it.
   * @default undefined (115200)
   */
  readonly lineBaud?: number;
}

export interface SimulatedModuleOptions {
  /** UART id the host side is wired to. @default the family's default (LuatOS: 1) */
  uartId?: number;
  /** Milliseconds between power-on and the agent starting. @default 20 */
  bootDelayMs?: number;
  /** Print the firmware's boot noise on the UART at power-on. @default true */
  bootNoise?: boolean;
  /** Agent source to run instead of the family's file (tests). */
  agentSource?: string;
  /** Sink for the module's debug log. @default discard */
  log?: (line: string) => void;
  /** Milliseconds from a fatal Lua error to the reboot. @default 50 */
  rebootDelayMs?: number;
  /**
   * Baud rate (bits per second) of the host's side of the UART: every byte the host sends takes
   * (1 start + 8 data + 1 stop) bits at this rate to reach the module; the module's side runs at
   * what its firmware's `uart.setup` set (115200 at boot). Differing rates garble the bytes
   * (docs/fidelity.md, "UART pacing"). To move the agent to another rate too, give the family's
   * `baud` option instead (it sets both). @default the family's `baud` option, else 115200
   */
  baud?: number;
}

/** A running simulated module. Create with {@link SimulatedModule.start}; stop with {@link stop}. */
export class SimulatedModule {
  readonly wire = new UartWire();
  /** Number of times the module booted (1 after start). */
  boots = 0;
  /** Fatal errors seen (messages), newest last. */
  readonly fatalErrors: string[] = [];
  private vm?: LuaVm;
  private scheduler = new Scheduler();
  private familyBoot?: FamilyBoot;
  private bootedAt = 0;
  private stopped = false;
  private servers: Array<{ close(): Promise<void> }> = [];
  private readonly uartId: number;
  private readonly logSink: (line: string) => void;
  private readonly agentText: string;
  private bootWaiters: Array<() => void> = [];

  private constructor(
    readonly family: SimFamily,
    private readonly opts: SimulatedModuleOptions,
  ) {
    this.uartId = opts.uartId ?? family.defaultUartId;
    this.logSink = opts.log ?? (() => {});
    this.agentText = opts.agentSource ?? readFileSync(join(repoRoot(), family.agentFile), 'utf8');
  }

  /** Power the module on. Resolves when the agent file has been started. */
  static async start(family: SimFamily, opts: SimulatedModuleOptions = {}): Promise<SimulatedModule> {
    checkBaud(opts.baud, 'baud');
    const m = new SimulatedModule(family, opts);
    const booted = m.nextBoot();
    m.powerOn();
    await booted;
    return m;
  }

  /** Resolves at the next completed boot. */
  nextBoot(): Promise<void> {
    return new Promise((resolve) => this.bootWaiters.push(resolve));
  }

  private powerOn(): void {
    this.scheduler = new Scheduler();
    this.wire.listening = false;
    this.wire.rxBufferSize = 0;
    this.wire.clear();
    // the host's port keeps its rate; the module's UART starts at the firmware's boot default
    this.wire.hostLine = line8N1(this.opts.baud ?? this.family.lineBaud);
    this.wire.moduleLine = line8N1();
    this.wire.paced = true;
    const sched = this.scheduler;
    if (this.opts.bootNoise ?? true) {
      for (const l of this.family.bootNoise()) this.wire.toHost(Buffer.from(l + '\r\n', 'latin1'));
    }
    sched.after(this.opts.bootDelayMs ?? 20, () => this.runAgent(sched));
  }

  private runAgent(sched: Scheduler): void {
    this.boots++;
    this.bootedAt = Date.now();
    const vm = new LuaVm({ onUncaughtError: (m) => this.fatal(m) });
    this.vm = vm;
    const ctx: FamilyContext = {
      vm,
      scheduler: sched,
      wire: this.wire,
      uartId: this.uartId,
      log: (l) => this.logSink(l),
      fatal: (m) => this.fatal(m),
      ticks: () => Date.now() - this.bootedAt,
      reboot: () => this.restart('rtos.reboot'),
    };
    this.familyBoot = this.family.install(ctx);
    let err = vm.runString(this.agentText, '@main.lua');
    // the budget's count hook may not have walked the heap since the agent's last allocations
    if (err === undefined && !vm.heapLoadHandled && !vm.closed && vm.overBudget()) err = `main.lua: ${MEMERRMSG}`;
    const waiters = this.bootWaiters;
    this.bootWaiters = [];
    for (const w of waiters) w();
    if (err !== undefined) this.fatal(err);
  }

  private fatal(message: string): void {
    if (this.stopped || this.scheduler.isStopped) return;
    this.fatalErrors.push(message);
    this.logSink(`E/main ${message}`);
    this.logSink('Lua VM exit!! reboot');
    this.halt();
    const t = setTimeout(() => {
      if (!this.stopped) this.powerOn();
    }, this.opts.rebootDelayMs ?? 50);
    t.unref?.();
  }

  private halt(): void {
    this.scheduler.stop();
    try {
      this.familyBoot?.shutdown();
    } catch (e) {
      this.logSink(`shutdown error: ${(e as Error).message}`);
    }
    this.familyBoot = undefined;
    this.vm?.close();
    this.vm = undefined;
    this.wire.listening = false;
    this.wire.clear();
  }

  /**
   * Reset the module now (like pulling RESET): everything in flight is lost, the
   * firmware boots again and the agent starts with a new boot epoch.
   * Resolves when the agent has started again.
   */
  async restart(reason = 'reset'): Promise<void> {
    if (this.stopped) throw new TetherError('CLOSED', 'the simulated module was stopped');
    this.logSink(`module reset (${reason})`);
    const booted = this.nextBoot();
    this.halt();
    this.wire.clearTx();
    this.powerOn();
    await booted;
  }

  /**
   * An in-process connection to the module's UART (host end of a memory pair). Its
   * `setBaudRate(baud)` changes the host side of the simulated line, as a USB serial adapter's
   * would (8N1; bytes at a rate the module's UART is not set to arrive garbled, docs/fidelity.md).
   * Its `lineBaud` is the host side's rate while the line is paced (none on the USB port), so a
   * link over it paces and times its frames as over a real serial port.
   */
  connect(): Transport {
    const [host, device] = createMemoryPair(`sim-${this.family.name}`);
    this.wire.attach(device);
    const wire = this.wire;
    Object.defineProperty(host, 'lineBaud', {
      // the host side's rate while the UART is paced; none while the agent is on the USB port
      get: (): number | undefined => (wire.paced ? wire.hostLine.baud : undefined),
      enumerable: true,
    });
    return Object.assign(host, {
      setBaudRate: async (baud: number): Promise<number> => {
        checkBaud(baud, 'baud');
        this.wire.hostLine = line8N1(baud);
        return baud;
      },
    });
  }

  /**
   * Serve the UART as raw TCP (like ser2net's raw mode) on 127.0.0.1.
   * @param port TCP port, 0 = pick a free one. @default 0
   * @returns the `tcp://127.0.0.1:PORT` URL.
   */
  async serveTcp(port = 0, host = '127.0.0.1'): Promise<string> {
    const sockets = new Set<Socket>();
    const server: Server = createServer((sock) => {
      sockets.add(sock);
      sock.setNoDelay(true);
      const t = new SocketDevice(sock);
      this.wire.attach(t);
      sock.on('close', () => sockets.delete(sock));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.servers.push({
      close: () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        }),
    });
    const addr = server.address();
    const p = typeof addr === 'object' && addr ? addr.port : port;
    return `tcp://${host}:${p}`;
  }

  /**
   * Serve the UART on a pseudo-terminal that the `serialport` package can open.
   * @param link optional symlink path to create for the pty.
   * @returns the pty's path (e.g. /dev/pts/5, or `link`).
   */
  async servePty(link?: string): Promise<string> {
    const pty = await createPty(link ? { link } : {});
    this.wire.attach(pty);
    this.servers.push({ close: () => pty.close() });
    return link ?? pty.path;
  }

  /**
   * Longest time a blocking UART write held the module's Lua VM in this boot (ms): the firmware's
   * `uart.write` waits for room in its TX FIFO or cache (docs/fidelity.md, "UART pacing").
   */
  get longestVmHoldMs(): number {
    return this.scheduler.longestHoldMs;
  }

  /** The module's VM for this boot (tests). */
  get currentVm(): LuaVm | undefined {
    return this.vm;
  }

  /** Power off: stop the agent and close every endpoint. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.halt();
    this.wire.detachAll();
    await Promise.all(this.servers.map((s) => s.close()));
    this.servers = [];
  }
}

/** The device side of a TCP connection to the simulated UART. */
class SocketDevice extends BaseTransport {
  readonly description: string;
  constructor(private readonly sock: Socket) {
    super();
    this.description = `tcp-client:${sock.remoteAddress}:${sock.remotePort}`;
    sock.on('data', (d) => this.emitData(d));
    sock.on('close', () => this.emitClose());
    sock.on('error', () => {});
  }
  async write(data: Uint8Array): Promise<void> {
    if (!this.sock.destroyed) this.sock.write(data);
  }
  async close(): Promise<void> {
    this.sock.destroy();
  }
}

/**
 * Check a baud option: undefined, or an integer from 300 to 4000000 bits per second.
 * @throws InvalidArgumentError otherwise.
 */
export function checkBaud(v: unknown, name: string): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 300 || v > 4_000_000) {
    throw new InvalidArgumentError(`${name} must be an integer from 300 to 4000000 (bits per second), got ${String(v)}`);
  }
}

/**
 * Check a heap budget option: undefined, or an integer number of bytes from 4096 to 1 GiB.
 * @throws InvalidArgumentError otherwise.
 */
export function checkHeapBytes(v: unknown, name: string): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 4096 || v > 1 << 30) {
    throw new InvalidArgumentError(`${name} must be an integer number of bytes from 4096 to 1073741824, got ${String(v)}`);
  }
}

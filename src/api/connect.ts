/**
 * Entry point: open a module by port string, handshake, and get its family's API.
 *
 * Port strings:
 * - a serial device: `/dev/ttyUSB0`, `COM3`, `/dev/ttyUSB0@921600`, `serial:///dev/ttyACM0?baud=921600`
 * - raw TCP (ser2net raw mode, `tether sim`): `tcp://127.0.0.1:7000`
 * - RFC 2217 (ser2net `telnet(rfc2217)`, labgrid NetworkSerialPort): `rfc2217://127.0.0.1:7001?baud=115200`
 *   (options in src/transport/index.ts `parsePortUrl`; network ports reconnect, see `ConnectOptions.reconnect`)
 * - an in-process simulated module: `sim` (= `sim:luatos`, an Air780E) or `sim:<family>` (see src/sim/families.ts)
 */
import { firstValueFrom } from 'rxjs';
import { openTransport, type ReconnectOptions } from '../transport/index.js';
import type { Transport } from '../transport/transport.js';
import { RpcClient, type HelloInfo, type RpcClientOptions } from '../rpc/client.js';
import { toNumber, toText } from '../codec/values.js';
import { InvalidArgumentError, isTetherError } from '../errors.js';
import { LuatosSocket } from './luatos/socket.js';
import { NodeMcuNet } from './nodemcu/net.js';
import { LuatSocketcore } from './luat/socketcore.js';
import { SimulatedModule } from '../sim/module.js';
import type { LuatosSimOptions } from '../sim/luatos/family.js';
import { SIM_FAMILIES, simFamilyNames } from '../sim/families.js';
import { rebootModule, releaseAll, releasedAtOpen, type RebootOptions, type RebootResult } from './session.js';

/** How long {@link TetherModule.close} waits for the agent to release the session's objects (ms). */
export const CLOSE_RELEASE_TIMEOUT_MS = 1000;

/** Module facts for `tether info` and diag. */
export interface ModuleInfo {
  family: string;
  /** Firmware version (`rtos.version()`). */
  firmware?: string;
  /** Board support package (`rtos.bsp()`), e.g. EC618. */
  bsp?: string;
  /** Agent version. */
  agent: string;
  protocol: number;
  lua?: string;
  /** Integer width of the module's Lua (bits). */
  intBits?: number;
  /** The agent's Lua heap (KB). */
  heapKB?: number;
  /** Cellular IMEI, where the firmware has it. */
  imei?: string;
  /** Signal quality 0..31 (`mobile.csq()`), where the firmware has it. */
  csq?: number;
  /** Registration: 0 not registered, 1 registered, 2 searching, 3 denied, 4 unknown, 5 roaming. */
  registration?: number;
  registrationText?: string;
  /** LuatOS: firmware returns the first boolean inverted (pre-2023-01-31). */
  invertedBool?: boolean;
  /** Frame size, window and message limits (bytes). */
  limits: { maxFrame: number; window: number; maxMessage: number };
  capabilities: string[];
  epoch: number;
}

const REGISTRATION = ['not registered', 'registered', 'searching', 'denied', 'unknown', 'roaming'];

/** Options of {@link connect}. */
export interface ConnectOptions extends RpcClientOptions {
  /**
   * Serial baud rate. For `sim:` ports the simulated line's rate: the host side and the agent's
   * `TETHER_BAUD` (the family's `baud` option, which `sim.baud` overrides). @default 115200
   */
  baudRate?: number;
  /**
   * Network ports (`tcp://`, `rfc2217://`): reconnect when the connection drops, with this policy
   * (`true`: src/transport/reconnect.ts DEFAULT_RECONNECT, 100 ms doubling to 2000 ms, at most 30
   * attempts or 30 000 ms down), or not (`false`). A drop fails calls in flight with `RESET`;
   * see `RpcClient`. `?reconnect=on|off` in the port URL wins. @default true
   */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Simulator options when the port is `sim:...`: the family's own options
   * (LuatOS: {@link LuatosSimOptions}; see src/sim/<family>/family.ts for the others)
   * plus `log`, a sink for the module's debug log.
   */
  sim?: (LuatosSimOptions | Record<string, unknown>) & { log?: (line: string) => void };
}

/** An open module: the RPC session, its family API, and (for `sim:` ports) the simulator. */
export class TetherModule {
  private socket_?: LuatosSocket;
  private net_?: NodeMcuNet;
  private socketcore_?: LuatSocketcore;
  /** @internal */
  constructor(
    readonly rpc: RpcClient,
    readonly port: string,
    /** The in-process simulated module, when the port was `sim:...`. */
    readonly simulator?: SimulatedModule,
  ) {}

  /** The agent's hello answer. */
  get hello(): HelloInfo {
    return this.rpc.hello;
  }

  /** Firmware family: `luatos`, `luat` or `nodemcu`. */
  get family(): string {
    return this.rpc.hello.family;
  }

  /**
   * The LuatOS `socket` library.
   * @throws InvalidArgumentError when the module is not a LuatOS module.
   */
  get socket(): LuatosSocket {
    if (this.family !== 'luatos') throw new InvalidArgumentError(`the module runs ${this.family}, not LuatOS: it has no socket library`);
    this.socket_ ??= new LuatosSocket(this.rpc);
    return this.socket_;
  }

  /**
   * The NodeMCU `net` module (ESP8266), with `net.wifi` / `net.node` status helpers.
   * @throws InvalidArgumentError when the module is not a NodeMCU module.
   */
  get net(): NodeMcuNet {
    if (this.family !== 'nodemcu') throw new InvalidArgumentError(`the module runs ${this.family}, not NodeMCU: it has no net module`);
    this.net_ ??= new NodeMcuNet(this.rpc);
    return this.net_;
  }

  /**
   * The Luat core's `socketcore` library (Air724UG / Air720 family).
   * @throws InvalidArgumentError when the module is not a Luat module.
   */
  get socketcore(): LuatSocketcore {
    if (this.family !== 'luat') throw new InvalidArgumentError(`the module runs ${this.family}, not Luat: it has no socketcore library`);
    this.socketcore_ ??= new LuatSocketcore(this.rpc);
    return this.socketcore_;
  }

  /** Collect module facts (firmware, agent, heap, IMEI/CSQ/registration where the firmware has them). */
  async info(): Promise<ModuleInfo> {
    const h = this.rpc.hello;
    const info: ModuleInfo = {
      family: h.family,
      firmware: h.fw,
      bsp: h.bsp,
      agent: h.agent,
      protocol: h.proto,
      lua: h.lua,
      intBits: h.intbits,
      heapKB: h.heap,
      invertedBool: h.boolinv,
      limits: { maxFrame: h.maxframe, window: h.window, maxMessage: h.maxmsg },
      capabilities: h.caps,
      epoch: h.epoch,
    };
    const opt = async (fn: string) => {
      if (!h.caps.includes(fn)) return undefined;
      try {
        return (await this.rpc.call(fn))[0];
      } catch (e) {
        if (isTetherError(e, 'REMOTE')) return undefined;
        throw e;
      }
    };
    if (h.family === 'luat') {
      // Luat legacy: misc.getImei ("" until the IMEI is read), net.getRssi (0..31), net.getState (INIT/REGISTERED/UNREGISTER)
      info.imei = toText(await opt('misc.getImei') ?? undefined) || undefined;
      info.csq = toNumber(await opt('net.getRssi') ?? undefined);
      const state = toText(await opt('net.getState') ?? undefined);
      if (state !== undefined) {
        info.registration = state === 'REGISTERED' ? 1 : state === 'UNREGISTER' ? 0 : 2;
        info.registrationText = state === 'REGISTERED' ? 'registered' : state === 'UNREGISTER' ? 'not registered' : `searching (${state})`;
      }
    } else {
      // LuatOS: mobile.imei / mobile.csq / mobile.status
      info.imei = toText(await opt('mobile.imei') ?? undefined) ?? undefined;
      info.csq = toNumber(await opt('mobile.csq') ?? undefined);
      info.registration = toNumber(await opt('mobile.status') ?? undefined);
      if (info.registration !== undefined) info.registrationText = REGISTRATION[info.registration] ?? 'unknown';
    }
    const ping = await this.rpc.call('hello', [h.proto, 4096]).catch(() => undefined);
    if (ping) {
      const heap = toNumber((ping[0] as Map<unknown, unknown>)?.get?.('heap') as number | undefined);
      if (heap !== undefined) info.heapKB = heap;
    }
    return info;
  }

  /**
   * Module objects (sockets, ctrls, servers) the agent released when this session opened:
   * what an earlier host session left (hello `released`; docs/protocol.md section 3).
   */
  get releasedAtOpen(): number {
    return releasedAtOpen(this.rpc);
  }

  /**
   * Release every socket/ctrl/server the agent made, for this session or any other
   * (`agent.release_all`, what `tether reset-sockets` does), each with the family's own calls
   * (LuatOS `socket.close` + `socket.release`; Luat `sock_close`, `sock_destroy` on CLOSE_CNF;
   * NodeMCU `close` and the reference dropped). Handles held on the host become stale.
   * @returns how many objects were released.
   * @throws TetherError `UNSUPPORTED` (an agent without session ownership), `TIMEOUT`, `RESET`, `CLOSED`.
   */
  async resetSockets(opts: { timeoutMs?: number } = {}): Promise<number> {
    return releaseAll(this.rpc, opts);
  }

  /**
   * Reboot the module (LuatOS `rtos.reboot`, Luat `sys.restart`, NodeMCU `node.restart`) and wait
   * for its new boot (new epoch, new handshake). The agent refuses unless its settings say
   * `TETHER_ALLOW_RESTART = true` (default off): a `REMOTE` error naming the setting.
   * @param opts.timeoutMs time for the reboot and the new handshake (ms). @default 30000
   * @throws see {@link rebootModule}.
   */
  async reboot(opts: RebootOptions = {}): Promise<RebootResult> {
    return rebootModule(this.rpc, opts);
  }

  /**
   * Close the session (and stop the simulator, for `sim:` ports). First the agent releases every
   * object it made for this session (`agent.release_all`, at most {@link CLOSE_RELEASE_TIMEOUT_MS}
   * ms; failures ignored: a session left open is released by the next one anyway).
   * @param opts.release release the session's objects first. @default true
   */
  async close(opts: { release?: boolean } = {}): Promise<void> {
    if ((opts.release ?? true) && this.rpc.hello?.caps?.includes('agent.release_all')) {
      await releaseAll(this.rpc, { timeoutMs: CLOSE_RELEASE_TIMEOUT_MS }).catch(() => undefined);
    }
    await this.rpc.close();
    await this.simulator?.stop();
  }
}

/** True for port strings that name the in-process simulator. */
export function isSimPort(port: string): boolean {
  return port === 'sim' || port.startsWith('sim:');
}

/**
 * Open the module at `port` and handshake.
 * @throws InvalidArgumentError (bad port string, unknown simulator family), TetherError `TRANSPORT`
 *   (cannot open the port), `HANDSHAKE` (no agent answered), `VERSION_MISMATCH`.
 */
export async function connect(port: string, opts: ConnectOptions = {}): Promise<TetherModule> {
  if (typeof port !== 'string' || port.length === 0) throw new InvalidArgumentError('port must be a non-empty string such as /dev/ttyUSB0, tcp://127.0.0.1:7000 or sim:luatos');
  let transport: Transport;
  let simulator: SimulatedModule | undefined;
  if (isSimPort(port)) {
    const fam = port === 'sim' ? 'luatos' : port.slice(4);
    const f = Object.hasOwn(SIM_FAMILIES, fam) ? SIM_FAMILIES[fam] : undefined;
    if (!f) throw new InvalidArgumentError(`no simulator for family "${fam}" (available: ${simFamilyNames().join(', ')})`);
    const simOpts = opts.baudRate !== undefined && opts.sim?.baud === undefined ? { ...opts.sim, baud: opts.baudRate } : opts.sim;
    simulator = await SimulatedModule.start(f.create(simOpts as never), { log: opts.sim?.log });
    transport = simulator.connect();
  } else {
    transport = await openTransport(port, { baudRate: opts.baudRate, reconnect: opts.reconnect ?? true });
  }
  try {
    const rpc = await RpcClient.open(transport, opts);
    return new TetherModule(rpc, port, simulator);
  } catch (e) {
    await simulator?.stop();
    throw e;
  }
}

/** Convenience: the first value a cold observable emits. */
export const first = firstValueFrom;

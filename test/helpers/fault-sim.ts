/**
 * Test/bench helper: a simulated module of one family reached through a
 * fault-injecting and/or paced link instead of the plain in-memory pair that
 * `connect('sim:...')` uses.
 *
 *   host RpcClient ── [in-memory pair] ── [fault wrapper] ── sim.wire (a UART paced at `baud`)
 *
 * The simulated UART paces both directions (docs/fidelity.md, "UART pacing"): `pace.baud` sets the
 * family's `baud` option (the host's side and the agent's `uart.setup`), so the line is paced once,
 * by the simulator, as `connect('sim:...')` does. Faults act on the bytes as they leave the line.
 * No side effects on import (node --test also loads this file).
 */
import { TetherModule } from '../../src/api/connect.js';
import { RpcClient, type RpcClientOptions } from '../../src/rpc/client.js';
import { SimulatedModule, type SimulatedModuleOptions } from '../../src/sim/module.js';
import { SIM_FAMILIES } from '../../src/sim/families.js';
import { createMemoryPair } from '../../src/transport/memory.js';
import { FaultyLink, type FaultOptions } from '../../src/transport/faulty.js';
import type { Transport } from '../../src/transport/transport.js';

/** The three simulated families. */
export const FAMILIES = ['luatos', 'luat', 'nodemcu'] as const;
export type Family = (typeof FAMILIES)[number];

/** Options of {@link openFaultySim}. */
export interface FaultySimOptions {
  /** Fault settings (seed, rates per direction). Omit for a clean link (the link still exists, at rate 0, so it can blackhole). */
  faults?: FaultOptions;
  /**
   * The line's speed: the family's `baud` option (a `baud` in `family` wins). Omit for the family's
   * default (115200; a LuatOS/Luat agent on its USB port, `agentSettings.TETHER_UART`, is unpaced).
   */
  pace?: { baud: number };
  /** RPC client options (timeouts, handshake timeout). */
  rpc?: RpcClientOptions;
  /** The family's simulator options (e.g. LuatOS `LuatosSimOptions`). */
  family?: Record<string, unknown>;
  /** Simulator options (boot delay, log sink). */
  sim?: SimulatedModuleOptions;
}

/** What {@link openFaultySim} returns. Call `close()` in a `finally`. */
export interface FaultySim {
  mod: TetherModule;
  sim: SimulatedModule;
  faults: FaultyLink;
  /** The host-side transport the RpcClient uses. */
  hostEnd: Transport;
  close(): Promise<void>;
}

/**
 * Start a simulated module of `family` and connect a host to it through the link.
 * Hook wanted upstream (not ours to edit): `connect('sim:<family>', { simLink: (sim) => hostTransport })`
 * would make this a one-liner; until then this rebuilds what `connect` does for `sim:` ports.
 */
export async function openFaultySim(family: Family, o: FaultySimOptions = {}): Promise<FaultySim> {
  const f = SIM_FAMILIES[family];
  if (!f) throw new Error(`no simulator for ${family}`);
  const famOpts = o.pace ? { baud: o.pace.baud, ...o.family } : o.family;
  const sim = await SimulatedModule.start(f.create(famOpts as never), o.sim ?? {});
  const faults = new FaultyLink({ name: `faulty-${family}`, ...o.faults });
  const [hostEnd, deviceEnd] = createMemoryPair(`sim-${family}`);
  sim.wire.attach(faults.wrapDeviceSide(deviceEnd));
  let rpc: RpcClient;
  try {
    // a paced link tells the client its speed (retransmission timeouts include line time)
    rpc = await RpcClient.open(hostEnd, o.pace ? { baud: o.pace.baud, ...o.rpc } : (o.rpc ?? {}));
  } catch (e) {
    await sim.stop();
    throw e;
  }
  const mod = new TetherModule(rpc, `sim:${family}`, sim);
  return {
    mod,
    sim,
    faults,
    hostEnd,
    close: async () => {
      await mod.close().catch(() => {});
      await sim.stop().catch(() => {});
    },
  };
}

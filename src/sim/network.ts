/**
 * What a simulated module's network may reach.
 *
 * A simulated module is hermetic by default (`'loopback'`): names resolve only through the
 * simulation's `hosts` table, `localhost` and IP literals (and DNS servers the simulation was
 * given, when they are loopback addresses); connections and datagrams go only to 127.0.0.0/8
 * (and `::1`). A lookup of any other name fails the way the firmware reports a DNS failure; a
 * connection elsewhere fails the way it reports an unreachable network; a datagram elsewhere
 * is dropped (UDP gives the sender no error on a real network either). So nothing `npm test`
 * or `npm start` runs ever leaves this machine.
 *
 * `'host'` (`tether sim --net host`, or `network: { net: 'host' }` in the simulator options)
 * lets the simulated module use the host's resolver and reach any address: an explicit opt-in.
 * The difference is listed in docs/fidelity.md.
 */
import { lookup } from 'node:dns/promises';
import { Resolver } from 'node:dns/promises';
import { isIP, isIPv4 } from 'node:net';

/** `'loopback'` (default): only 127.0.0.0/8 and `::1`; `'host'`: the host's resolver and network. */
export type SimNet = 'loopback' | 'host';

/** The default of every simulated family. */
export const DEFAULT_SIM_NET: SimNet = 'loopback';

/** What {@link simResolve} and {@link mayReach} need to know. */
export interface SimNetPolicy {
  /** @default 'loopback' */
  net?: SimNet;
  /** Static names, case-insensitive name -> IPv4 address; checked first in both modes. */
  hosts?: Record<string, string>;
}

/** True for an address in 127.0.0.0/8 or `::1` (and `::ffff:127.x.y.z`). */
export function isLoopbackAddress(ip: string): boolean {
  const v4 = /^(?:::ffff:)?(\d+)\.\d+\.\d+\.\d+$/i.exec(ip);
  if (v4 && isIPv4(ip.replace(/^::ffff:/i, ''))) return v4[1] === '127';
  return ip === '::1' || ip === '0:0:0:0:0:0:0:1';
}

/** True when the policy lets a simulated module send to `ip`. */
export function mayReach(policy: SimNetPolicy, ip: string): boolean {
  return (policy.net ?? DEFAULT_SIM_NET) === 'host' || isLoopbackAddress(ip);
}

/** The message a refused destination is logged with (the module sees its firmware's own failure). */
export function unreachableText(ip: string): string {
  return `${ip} is outside loopback: a simulated module reaches only 127.0.0.0/8 (tether sim --net host to allow more)`;
}

/**
 * Resolve `name` to IPv4 addresses (at most 4) under the policy: an IP literal is itself; then
 * the `hosts` table; then `localhost` (127.0.0.1). In `'loopback'` mode a loopback DNS server
 * from `servers` is asked (a test's own DNS server); anything else rejects with ENOTFOUND.
 * In `'host'` mode: `servers` when given, else the host's resolver.
 * @throws Error with `code` `ENOTFOUND` when the name cannot be resolved under the policy.
 */
export async function simResolve(policy: SimNetPolicy, name: string, servers: string[] = []): Promise<string[]> {
  if (isIP(name)) return [name];
  for (const [k, v] of Object.entries(policy.hosts ?? {})) if (k.toLowerCase() === name.toLowerCase()) return [v];
  if (name.toLowerCase() === 'localhost') return ['127.0.0.1'];
  const host = (policy.net ?? DEFAULT_SIM_NET) === 'host';
  const usable = servers.filter((s) => isIP(s) && (host || isLoopbackAddress(s)));
  if (usable.length) {
    const r = new Resolver({ timeout: 2000, tries: 2 });
    r.setServers(usable);
    return (await r.resolve4(name)).slice(0, 4);
  }
  if (!host) throw Object.assign(new Error(`${name}: not in the simulation's hosts table (a simulated module resolves only those, localhost and IP literals; tether sim --net host to use the host's resolver)`), { code: 'ENOTFOUND' });
  return (await lookup(name, { family: 4, all: true })).map((x) => x.address).slice(0, 4);
}

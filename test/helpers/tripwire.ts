/** A TCP server on 127.0.0.1 that stands in for a module a command must not open: it counts connections and never answers. */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

export interface Tripwire {
  /** Its port on 127.0.0.1. */
  port: number;
  /** `tcp://127.0.0.1:PORT`, a port string for the CLI. */
  url: string;
  /** Connections accepted so far (not counting the probes of {@link settled}). */
  readonly connections: number;
  /**
   * {@link connections} once every connection made before this call was accepted: a probe
   * connects and the count is read when the server accepts the probe (a listening socket
   * accepts in order), so no fixed wait is needed to see a connection that is on its way.
   */
  settled(): Promise<number>;
  /** Destroy every connection and stop listening. */
  close(): Promise<void>;
}

export async function startTripwire(): Promise<Tripwire> {
  /** Remote ports of every accepted connection, probes included. */
  const accepted: number[] = [];
  /** Local ports of the probes of settled(). */
  const probePorts = new Set<number>();
  /** A probe waiting to be accepted: its port and what to do then. */
  const waiting = new Map<number, () => void>();
  const sockets = new Set<Socket>();
  const count = (): number => accepted.filter((p) => !probePorts.has(p)).length;
  const server = createServer((s) => {
    const remote = s.remotePort ?? -1;
    accepted.push(remote);
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    // the server may accept a probe before the probe's own 'connect' callback ran, or after
    waiting.get(remote)?.();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `tcp://127.0.0.1:${port}`,
    get connections() {
      return count();
    },
    settled: () =>
      new Promise<number>((resolve, reject) => {
        const c = connect({ host: '127.0.0.1', port });
        c.on('error', reject);
        c.on('connect', () => {
          const local = c.localPort!;
          probePorts.add(local);
          const done = () => {
            waiting.delete(local);
            c.destroy();
            resolve(count());
          };
          if (accepted.includes(local)) done();
          else waiting.set(local, done);
        });
      }),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

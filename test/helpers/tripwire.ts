/** A TCP server on 127.0.0.1 that stands in for a module a command must not open: it counts connections and never answers. */
import { createServer, type AddressInfo, type Socket } from 'node:net';

export interface Tripwire {
  /** Its port on 127.0.0.1. */
  port: number;
  /** `tcp://127.0.0.1:PORT`, a port string for the CLI. */
  url: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Destroy every connection and stop listening. */
  close(): Promise<void>;
}

export async function startTripwire(): Promise<Tripwire> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `tcp://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A TCP forwarder for tests, on 127.0.0.1 (test/transport-reconnect, test/e2e-luatos). */
import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP forwarder on 127.0.0.1 that tests can cut: `drop()` resets every connection through
 * it, `stop()` also stops listening (connections are refused) until `start()` listens again on
 * the same port, `hold` swallows client→target bytes (a request that never arrives), and
 * `record` keeps every byte forwarded each way (`toTarget`, `toClient`).
 */
export class TcpProxy {
  port = 0;
  /** While true, bytes from clients are discarded instead of forwarded. */
  hold = false;
  /** Connections accepted so far. */
  accepted = 0;
  /** What `hold` swallowed so far (latin1), for tests to wait on instead of sleeping. */
  held = '';
  /** Keep what is forwarded each way in {@link toTarget} and {@link toClient}. @default false */
  record = false;
  /** Bytes forwarded client→target while {@link record} was set. */
  readonly toTarget: Buffer[] = [];
  /** Bytes forwarded target→client while {@link record} was set. */
  readonly toClient: Buffer[] = [];
  private server?: Server;
  private readonly pairs = new Set<[Socket, Socket]>();

  constructor(private readonly targetPort: number) {}

  /** Listen (again) on 127.0.0.1, on the same port as before if there was one. */
  async start(): Promise<void> {
    const server = createServer((client) => {
      this.accepted++;
      const upstream = connect({ host: '127.0.0.1', port: this.targetPort });
      const pair: [Socket, Socket] = [client, upstream];
      this.pairs.add(pair);
      const end = () => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
      client.on('data', (d) => {
        if (this.hold) this.held += d.toString('latin1');
        else {
          if (this.record) this.toTarget.push(d);
          upstream.write(d);
        }
      });
      upstream.on('data', (d) => {
        if (this.record) this.toClient.push(d);
        client.write(d);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as { port: number }).port;
  }

  /** Reset every connection through the proxy (the listener stays). */
  drop(): void {
    for (const [a, b] of [...this.pairs]) {
      a.resetAndDestroy();
      b.destroy();
    }
    this.pairs.clear();
  }

  /** Drop every connection and stop listening. */
  async stop(): Promise<void> {
    this.drop();
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

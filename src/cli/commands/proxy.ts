import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';
import { portArg } from '../validate.js';
import type { ConnectionRecord } from '../../proxy/server.js';

/** Where `tether proxy` listens by default. */
export const DEFAULT_PROXY_LISTEN = '127.0.0.1:1080';

export interface ProxyArgs extends CommonArgs {
  port: string;
  listen: { host: string; port: number };
  user?: string;
  'password-env'?: string;
  'allow-remote': boolean;
  'connect-timeout'?: number;
}

/** `--listen HOST:PORT` (IPv6 as `[addr]:port`), port 0..65535 (0 = any free port). */
export function listenArg(raw: unknown): { host: string; port: number } {
  const v = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  const s = typeof v === 'string' ? v : String(v ?? '');
  const m = /^(?:\[([^\]]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`--listen must be HOST:PORT (port 0..65535, 0 = any free port), got ${JSON.stringify(s)}`);
  return { host: m[1] ?? m[2], port };
}

/**
 * The checks that need several options at once (yargs `.check`): a usage error (exit 2)
 * before anything is opened. Returns true or throws the one error.
 */
export function checkProxyArgs(argv: Partial<ProxyArgs>, env: NodeJS.ProcessEnv = process.env): true {
  const user = argv.user;
  const envName = argv['password-env'];
  if ((user === undefined) !== (envName === undefined)) throw new Error('--user and --password-env go together (RFC 1929 username/password authentication)');
  if (user !== undefined) {
    const u = Buffer.byteLength(user, 'utf8');
    if (u < 1 || u > 255) throw new Error(`--user must be 1..255 bytes (RFC 1929), got ${u}`);
    const pw = env[envName!];
    if (pw === undefined || pw === '') throw new Error(`--password-env ${envName}: the environment variable ${envName} is not set or empty`);
    if (Buffer.byteLength(pw, 'utf8') > 255) throw new Error(`--password-env ${envName}: the password must be at most 255 bytes (RFC 1929)`);
  }
  const listen = typeof argv.listen === 'string' ? listenArg(argv.listen) : argv.listen;
  const host = listen?.host ?? '127.0.0.1';
  if (!isLoopbackHost(host)) {
    if (!argv['allow-remote']) throw new Error(`--listen ${host} is not a loopback address: other machines could use the module's network; add --allow-remote (which also needs --user and --password-env) or listen on 127.0.0.1`);
    if (user === undefined) throw new Error(`--allow-remote requires authentication: give --user NAME --password-env VAR to listen on ${host}`);
  }
  return true;
}

function isLoopbackHost(h: string): boolean {
  const x = h.toLowerCase();
  return x === 'localhost' || x === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(x);
}

/** `tether proxy --port P`: a SOCKS5 server whose connections open on the module's stack. */
export const proxyCommand = (ctx: CliContext): CommandModule<object, ProxyArgs> => ({
  command: 'proxy',
  describe: "Run a SOCKS5 proxy (RFC 1928) whose connections open on the module's network stack, until Ctrl-C",
  builder: (y) =>
    y
      .option('port', { alias: 'p', type: 'string', demandOption: true, requiresArg: true, coerce: portArg, describe: 'Serial device, tcp://HOST:PORT, or sim' })
      .option('listen', { type: 'string', requiresArg: true, default: DEFAULT_PROXY_LISTEN, coerce: listenArg, describe: 'Address the SOCKS server listens on, HOST:PORT (0 = any free port)' })
      .option('user', { type: 'string', requiresArg: true, describe: 'Require RFC 1929 username/password: the username (with --password-env)' })
      .option('password-env', { type: 'string', requiresArg: true, describe: 'Name of the environment variable holding the password (never on the command line)' })
      .option('allow-remote', { type: 'boolean', default: false, describe: 'Allow a non-loopback --listen address (requires --user and --password-env)' })
      .check((a) => checkProxyArgs(a as Partial<ProxyArgs>))
      .example('$0 proxy --port sim', 'SOCKS5 on 127.0.0.1:1080 through a simulated Air780E')
      .example('curl --socks5-hostname 127.0.0.1:1080 http://example.com/', 'then fetch through the module') as never,
  handler: (argv) => runProxy(argv, ctx),
});

/** Human byte count: 1234567 → "1.2 MB". */
function human(n: number): string {
  if (n < 1000) return `${n} B`;
  const u = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < u.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(1)} ${u[i]}`;
}

/**
 * Run the proxy: open the module, listen, log, and stop on SIGINT/SIGTERM (exit 0), or when the
 * module link fails (exit 1). Heavy modules are imported here, when the command runs.
 */
async function runProxy(argv: ProxyArgs, ctx: CliContext): Promise<void> {
  const { openModule } = await import('./open.js');
  const { reportError } = await import('../output.js');
  const { SocksServer } = await import('../../proxy/server.js');
  const { moduleDialer } = await import('../../proxy/module-dialer.js');
  const { REPLY_TEXT } = await import('../../proxy/socks5.js');
  const json = !!argv.json;
  const out = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');
  let mod: Awaited<ReturnType<typeof openModule>> | undefined;
  let server: InstanceType<typeof SocksServer> | undefined;
  let ticker: NodeJS.Timeout | undefined;
  const tty = !json && process.stderr.isTTY === true;
  try {
    const auth = argv.user !== undefined ? { username: argv.user, password: process.env[argv['password-env']!] ?? '' } : undefined;
    mod = await openModule(argv.port, argv);
    const listen = typeof argv.listen === 'string' ? listenArg(argv.listen) : argv.listen; // the default, should yargs not coerce it
    server = new SocksServer({ dialer: moduleDialer(mod), host: listen.host, port: listen.port, allowRemote: argv['allow-remote'], auth });
    const addr = await server.listen();
    const where = addr.family === 'IPv6' ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`;
    if (json) out({ event: 'listening', host: addr.address, port: addr.port, family: mod.family, module: argv.port, auth: !!auth });
    else process.stdout.write(`SOCKS5 proxy on ${where} through the ${mod.family} module at ${argv.port}${auth ? ' (username/password required)' : ''}\ntry: curl --socks5-hostname ${where} ${argv.port.startsWith('sim') ? 'http://127.0.0.1:PORT/ (a simulated module reaches only 127.0.0.1)' : 'http://example.com/'}\nCtrl-C to stop.\n`);
    const status = () => {
      const s = server!.stats;
      process.stderr.write(`\r\x1b[K${s.live} live, ${s.total} total, ${s.failed} failed, up ${human(s.bytesUp)}, down ${human(s.bytesDown)}`);
    };
    server.on('connectionOpen', (r: ConnectionRecord) => {
      if (json) out({ event: 'open', id: r.id, client: r.client, command: r.command, target: r.target });
    });
    server.on('connectionClose', (r: ConnectionRecord) => {
      const reply = r.reply === undefined ? undefined : REPLY_TEXT[r.reply];
      if (json) out({ event: 'close', id: r.id, client: r.client, command: r.command, target: r.target, reply: r.reply, bytesUp: r.bytesUp, bytesDown: r.bytesDown, durationMs: r.durationMs, ...(r.errorCode ? { error: r.errorCode, message: r.errorMessage } : {}) });
      else if (!tty) process.stderr.write(`${r.command} ${r.target}: ${reply}, up ${r.bytesUp} B, down ${r.bytesDown} B, ${r.durationMs} ms${r.errorCode ? ` [${r.errorCode}: ${r.errorMessage}]` : ''}\n`);
    });
    server.on('clientError', (e: Error & { code?: string }, peer: string) => {
      if (json) out({ event: 'refused', client: peer, error: e.code ?? 'ERROR', message: e.message });
      else if (!tty) process.stderr.write(`client ${peer}: ${e.message}\n`);
    });
    if (tty) ticker = setInterval(status, 500);
    const stop = await new Promise<string>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
      const watch = setInterval(() => {
        if (mod!.rpc.isClosed) resolve('link');
      }, 1000);
      watch.unref();
    });
    if (stop === 'link') throw new Error('the link to the module closed');
  } catch (e) {
    ctx.setExit(reportError(e, json));
  } finally {
    if (ticker) {
      clearInterval(ticker);
      process.stderr.write('\n');
    }
    await server?.close();
    await mod?.close();
  }
}

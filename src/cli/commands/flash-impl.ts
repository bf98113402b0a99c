import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { openTransport, parsePortUrl } from '../../transport/index.js';
import type { Transport } from '../../transport/transport.js';
import { RpcClient } from '../../rpc/client.js';
import { InvalidArgumentError, TetherError } from '../../errors.js';
import { agentBundlePath } from '../../util/repo-root.js';
import { reportError } from '../output.js';
import { isSimPort } from '../../api/connect.js';
import { DEFAULT_UPLOAD_BAUD, flashNodemcu, type FlashProgress } from './flash-repl.js';
import { checkPort, explainOpenError, timeouts } from './open.js';
import type { CliContext } from './index.js';
import type { FlashArgs } from './flash.js';
import { ProgressBar, barWanted } from '../progress.js';

/**
 * Progress of `tether flash` on stderr: a cli-progress bar ({@link ProgressBar}) only on a
 * terminal and never with --json (`bar` false); the phase messages ("Lua prompt found",
 * "... is identical") are log lines and always go to stderr. Call `close()` when the run ends
 * (it finishes a bar left unfinished by an error).
 */
export function progressPrinter(stream: NodeJS.WriteStream = process.stderr, bar = barWanted(stream, false)): ((p: FlashProgress) => void) & { close(): void } {
  const pb = new ProgressBar({ stream, enabled: bar, unit: 'bytes' });
  const print = (p: FlashProgress) => {
    if (p.total !== undefined && p.done !== undefined && (p.phase === 'upload' || p.phase === 'verify')) {
      pb.update(`${p.phase === 'upload' ? 'writing  ' : 'verifying'} ${p.file ?? ''}`, p.done, p.total);
      return;
    }
    if (p.message) pb.log(p.message);
    else if (p.phase === 'probe') pb.log('Lua prompt found; probing the firmware');
    else pb.stop();
  };
  return Object.assign(print, { close: () => pb.stop() });
}

/** The baud a port URL names (`/dev/ttyUSB0@921600`, `?baud=`), if any. */
function urlBaud(port: string): number | undefined {
  const u = parsePortUrl(port);
  return u.kind === 'tcp' ? undefined : u.baudRate;
}

export async function runFlash(argv: FlashArgs, ctx: CliContext): Promise<void> {
  let transport: Transport | undefined;
  const onProgress = progressPrinter(process.stderr, barWanted(process.stderr, !!argv.json));
  try {
    if (isSimPort(argv.port)) {
      throw new InvalidArgumentError('flash talks to a module on a serial port or tcp://: start one with "tether sim --family nodemcu" or use a board');
    }
    const path = argv.file ?? agentBundlePath('nodemcu');
    let agentSource: string;
    try {
      agentSource = readFileSync(path, 'latin1');
    } catch (e) {
      throw new InvalidArgumentError(`cannot read ${path}: ${(e as Error).message}`);
    }
    if (agentSource.length === 0) throw new InvalidArgumentError(`${path} is empty: refusing to upload a 0-byte agent`);
    // the files the agent loads on first use: the tether_*.lua next to the agent file (the bundle's,
    // or those `tether agent --out DIR` wrote next to the --file given)
    const files: Array<{ name: string; text: string }> = [];
    for (const n of readdirSync(dirname(path)).filter((x) => /^tether_[a-z0-9]+\.lua$/.test(x)).sort()) {
      files.push({ name: n, text: readFileSync(join(dirname(path), n), 'latin1') });
    }
    checkPort(argv.port);
    try {
      transport = await openTransport(argv.port, { baudRate: argv.baud });
    } catch (e) {
      throw explainOpenError(argv.port, e);
    }
    process.stderr.write(`tether flash: ${transport.description}\n`);
    const r = await flashNodemcu(transport, {
      agentSource,
      files,
      name: argv.name,
      init: argv.init,
      allowRepl: argv['allow-repl'],
      initDelayMs: argv['init-delay'],
      start: argv.start,
      force: argv.force,
      minify: argv.minify,
      baudRate: argv['upload-baud'] ?? (parsePortUrl(argv.port).kind === 'tcp' ? 0 : DEFAULT_UPLOAD_BAUD),
      currentBaud: argv.baud ?? urlBaud(argv.port) ?? 115200,
      syncTimeoutMs: argv['sync-timeout'],
      lineTimeoutMs: argv['line-timeout'],
      onProgress,
      trace: argv.verbose ? (l) => process.stderr.write(`[repl] ${l}\n`) : undefined,
    });
    let hello: Record<string, unknown> | undefined;
    if (r.started) {
      const rpc = await RpcClient.open(transport, timeouts(argv));
      const h = rpc.hello;
      hello = { agent: h.agent, family: h.family, fw: h.fw, lua: h.lua, heapKB: h.heap, epoch: h.epoch };
      if (h.family !== 'nodemcu') throw new TetherError('PROTOCOL', `the started agent reports family ${h.family}, not nodemcu`);
      await rpc.close();
      transport = undefined;
    }
    const summary = {
      port: argv.port,
      file: r.name,
      bytes: r.bytes,
      uploaded: r.uploaded,
      files: r.files,
      init: r.initWritten,
      baud: r.baud,
      started: r.started,
      agentWasRunning: r.agentWasRunning,
      heapBefore: r.heapBefore,
      ms: r.ms,
      hello,
    };
    if (argv.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      process.stdout.write(`${r.uploaded ? `wrote ${r.name} (${r.bytes} bytes at ${r.baud} baud, verified)` : `${r.name} is up to date (${r.bytes} bytes)`}${r.initWritten ? ', init.lua written' : ''} in ${(r.ms / 1000).toFixed(1)} s\n`);
      for (const f of r.files) process.stdout.write(`${f.uploaded ? `wrote ${f.name} (${f.bytes} bytes, verified)` : `${f.name} is up to date (${f.bytes} bytes)`}\n`);
      if (hello) process.stdout.write(`agent ${String(hello.agent)} running: ${String(hello.family)} ${String(hello.fw ?? '')}, ${String(hello.lua ?? '')}, Lua heap ${String(hello.heapKB ?? '?')} KB\n`);
    }
  } catch (e) {
    ctx.setExit(reportError(e, !!argv.json));
  } finally {
    onProgress.close();
    await transport?.close().catch(() => undefined);
  }
}

/**
 * `tether flash` against the simulated ESP8266's stock REPL: boot noise, a pseudo-terminal,
 * the real CLI in a child process; then the engine in-process for the hard cases (reset on
 * open, a REPL left in `>>`, a reset in the middle of the upload, a flipped byte, a host that
 * vanishes, a baud the module does not answer at, no prompt).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimulatedModule } from '../src/sim/module.js';
import { nodemcuFamily, nodemcuAgentSource } from '../src/sim/nodemcu/family.js';
import { RpcClient } from '../src/rpc/client.js';
import { SerialTransport } from '../src/transport/serial.js';
import type { Transport } from '../src/transport/transport.js';
import { readLazyAgentFiles, repoRoot } from '../src/util/repo-root.js';
import { flashNodemcu, minifyLua, adler, type FlashProgress } from '../src/cli/commands/flash-repl.js';
import { isTetherError } from '../src/errors.js';
import { AGENT_VERSION } from '../src/codec/constants.js';

const bin = join(repoRoot(), 'dist/src/cli/bin.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** `inner` with some methods replaced (a line with faults, a bridge with limits). */
function wrap(inner: Transport, over: Partial<Pick<Transport, 'write' | 'setBaudRate'>>): Transport {
  return {
    description: inner.description,
    get isOpen() {
      return inner.isOpen;
    },
    write: over.write ?? ((d) => inner.write(d)),
    onData: (l) => inner.onData(l),
    onClose: (l) => inner.onClose(l),
    close: () => inner.close(),
    ...(over.setBaudRate ? { setBaudRate: over.setBaudRate } : {}),
  };
}

const tmp = mkdtempSync(join(tmpdir(), 'tether-flash-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function cli(args: string[], timeoutMs = 90000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: timeoutMs }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('tether flash over a pseudo-terminal (the CLI as a user runs it)', () => {
  it('the module boots into its REPL with noise; flash uploads, verifies, writes init.lua, starts the agent; hello works; a second run skips; init.lua starts the agent at boot', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam, { bootDelayMs: 50 });
    const pty = await sim.servePty();
    try {
      // power-cycle while the tool is already talking: ROM noise, banner, prompt arrive mid-sync
      const run = cli(['flash', '--port', pty, '--init', '--init-delay', '300', '--allow-repl', '--json']);
      await sleep(300);
      await sim.restart('reset on open');
      const r = await run;
      assert.equal(r.code, 0, `flash failed: ${r.stderr}`);
      const out = JSON.parse(r.stdout);
      assert.equal(out.uploaded, true);
      assert.equal(out.init, true);
      // a pty is a serial port, so the CLI asks for 460800; the pty relay does not carry the port's rate to
      // the simulated UART, so the module does not hear the host at 460800 and both ends fall back
      assert.equal(out.baud, 115200, 'the upload fell back to the starting rate');
      assert.equal(out.started, true);
      assert.equal(out.hello.family, 'nodemcu');
      // --json on a pipe: no progress bar (it is for terminals), only the closing hint
      assert.doesNotMatch(r.stderr, /\d+%/, 'no progress with --json');
      assert.match(r.stderr, /dofile\("tether\.lua"\)/);
      const onModule = fam.files.get('tether.lua')!;
      assert.ok(onModule.equals(Buffer.from(minifyLua(nodemcuAgentSource()), 'latin1')), 'the file on the module is exactly the (minified) agent');
      assert.equal(fam.files.has('tether.tmp'), false, 'no temporary file left');
      // the files the agent loads on first use went up too, each verified, under its own name
      const lazy = readLazyAgentFiles('nodemcu');
      assert.deepEqual(out.files.map((f: { name: string }) => f.name), [...lazy.keys()]);
      assert.ok(lazy.size >= 5, 'the NodeMCU agent has its call groups in files');
      for (const [n, text] of lazy) {
        assert.ok(fam.files.get(n)?.equals(Buffer.from(minifyLua(text), 'latin1')), `${n} on the module is exactly the (minified) file`);
        assert.equal(fam.files.has(n.replace(/\.lua$/, '.tmp')), false);
      }
      assert.equal(fam.esp!.uartTaken, true, 'the agent runs');

      // hello through the same pty, as `tether info` would
      const t = await SerialTransport.open(pty, { baudRate: 115200 });
      const rpc = await RpcClient.open(t, { handshakeTimeoutMs: 5000 });
      assert.equal(rpc.hello.family, 'nodemcu');
      assert.equal(rpc.hello.agent, AGENT_VERSION);
      // hello's firmware fields and net.createConnection come from files loaded from the module's flash
      assert.match(String(rpc.hello.fw), /-sim$/);
      const [h] = await rpc.call('net.createConnection', []);
      assert.ok(h !== null && typeof h === 'object', 'net.createConnection answered with a handle');
      await rpc.close();

      // idempotent: the running agent gives the prompt back, the identical file is not written again
      const again = await cli(['flash', '--port', pty, '--init', '--init-delay', '300', '--allow-repl', '--json']);
      assert.equal(again.code, 0, again.stderr);
      const o2 = JSON.parse(again.stdout);
      assert.equal(o2.uploaded, false);
      assert.equal(o2.init, false);
      assert.ok(o2.files.every((f: { uploaded: boolean }) => !f.uploaded), 'identical agent files are not written again');
      assert.equal(o2.agentWasRunning, true);
      assert.match(again.stderr, /identical/);

      // at boot, init.lua starts the agent after its delay
      await sim.restart('power cycle');
      assert.equal(fam.esp!.uartTaken, false, 'right after boot the REPL has the UART');
      for (let i = 0; i < 100 && !fam.esp!.uartTaken; i++) await sleep(10);
      assert.equal(fam.esp!.uartTaken, true, 'init.lua started the agent');
      const t2 = await SerialTransport.open(pty, { baudRate: 115200 });
      const rpc2 = await RpcClient.open(t2, { handshakeTimeoutMs: 5000 });
      assert.equal(rpc2.hello.family, 'nodemcu');
      await rpc2.close();
    } finally {
      await sim.stop();
    }
  });

  it('every failure is a clear error with a non-zero exit: no prompt (4), an empty agent file (2), a sim: port (2)', async () => {
    const sockets = new Set<Socket>();
    const silent: Server = createServer((s) => {
      sockets.add(s);
      s.write('\x00\xff garbage without a prompt\r\n');
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as { port: number }).port;
    try {
      const r = await cli(['flash', '--port', `tcp://127.0.0.1:${port}`, '--sync-timeout', '1500', '--json']);
      assert.equal(r.code, 4);
      const e = JSON.parse(r.stdout).error;
      assert.equal(e.code, 'HANDSHAKE');
      assert.match(e.message, /no Lua prompt .* garbage without a prompt/);
      const empty = join(tmp, 'empty.lua');
      writeFileSync(empty, '');
      const r2 = await cli(['flash', '--port', `tcp://127.0.0.1:${port}`, '--file', empty]);
      assert.equal(r2.code, 2);
      assert.match(r2.stderr, /empty: refusing to upload a 0-byte agent/);
      const r3 = await cli(['flash', '--port', 'sim:nodemcu']);
      assert.equal(r3.code, 2);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });
});

describe('flash engine (in-process)', () => {
  it('finds the prompt past a half-typed chunk (">>"), sends raw blocks the module acknowledges, verifies by the module\'s own checksum', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam);
    const t = sim.connect();
    try {
      await t.write(Buffer.from('for i = 1, 3 do\n'));
      await sleep(30);
      const phases: FlashProgress[] = [];
      const r = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), minify: false, start: false, onProgress: (p) => phases.push(p) });
      assert.equal(r.uploaded, true);
      assert.equal(r.started, false);
      assert.equal(r.baud, 115200, 'no switch asked');
      assert.ok(fam.files.get('tether.lua')!.equals(Buffer.from(nodemcuAgentSource(), 'latin1')));
      const up = phases.filter((p) => p.phase === 'upload' && p.file === 'tether.lua');
      assert.equal(up.length, Math.ceil(r.bytes / 255), 'one acknowledged 255-byte block per progress step');
      // then the files the agent loads on first use, the same way
      for (const f of r.files) assert.equal(phases.filter((p) => p.phase === 'upload' && p.file === f.name).length, Math.ceil(f.bytes / 255), f.name);
      const verify = phases.filter((p) => p.phase === 'verify');
      assert.equal(verify.at(-1)!.done, verify.at(-1)!.total);
      assert.equal(fam.esp!.rxDropped, 0, 'one block at a time: the RX ring never overflowed');
      assert.equal(fam.esp!.uartTaken, false, 'the REPL has the UART again');
    } finally {
      await sim.stop();
    }
  });

  it('a byte changed on the way is caught by the module\'s checksum, the temporary file is removed, and a second run succeeds', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam);
    const inner = sim.connect();
    let flipAt = -1;
    let sent = 0;
    // a line hit by noise once: one byte of the upload (well past the REPL lines) is flipped
    const t = wrap(inner, {
      write: async (d: Uint8Array) => {
        const b = Buffer.from(d);
        if (flipAt < 0 && b.length === 255) flipAt = sent + 100;
        if (flipAt >= sent && flipAt < sent + b.length) {
          b[flipAt - sent] ^= 0x20;
          flipAt = Number.MAX_SAFE_INTEGER;
        }
        sent += b.length;
        return inner.write(b);
      },
    });
    try {
      const err = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), start: false }).then(() => undefined, (e: unknown) => e);
      assert.ok(isTetherError(err) && err.code === 'PROTOCOL', `a PROTOCOL error, got ${String(err)}`);
      assert.match((err as Error).message, /verification of tether\.tmp failed: the module has \d+ bytes with Adler-32 [0-9a-f]{8}, expected/);
      assert.equal(fam.files.has('tether.tmp'), false, 'the temporary file was removed');
      assert.equal(fam.files.has('tether.lua'), false, 'nothing under the real name');
      const ok = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), start: false });
      assert.equal(ok.uploaded, true);
      assert.ok(fam.files.get('tether.lua')!.equals(Buffer.from(minifyLua(nodemcuAgentSource()), 'latin1')));
    } finally {
      await sim.stop();
    }
  });

  it('the host vanishing mid-upload: the module\'s watchdog ends the data mode, removes the partial file and gives the prompt back', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam);
    const inner = sim.connect();
    let blocks = 0;
    let pulled = false;
    const t = wrap(inner, {
      write: async (d: Uint8Array) => {
        if (pulled || (d.length === 255 && ++blocks > 3)) {
          pulled = true; // the cable is pulled after three blocks: nothing reaches the module any more
          return;
        }
        return inner.write(d);
      },
    });
    try {
      const err = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), start: false, lineTimeoutMs: 1000 }).then(() => undefined, (e: unknown) => e);
      assert.ok(isTetherError(err), String(err));
      for (let i = 0; i < 100 && fam.esp!.uartTaken; i++) await sleep(50);
      assert.equal(fam.esp!.uartTaken, false, 'the watchdog gave the UART back to the REPL');
      assert.equal(fam.files.has('tether.tmp'), false, 'and removed the partial file');
    } finally {
      await sim.stop();
    }
  });

  it('on a paced line: both ends switch to 460800 for the upload and back to 115200 before the agent starts', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam, { baud: 115200 });
    const t = sim.connect();
    try {
      const phases: FlashProgress[] = [];
      const r = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), start: false, baudRate: 460800, currentBaud: 115200, onProgress: (p) => phases.push(p) });
      assert.equal(r.baud, 460800, 'the upload ran at 460800');
      assert.ok(phases.some((p) => p.phase === 'baud' && /switching to 460800/.test(p.message ?? '')));
      assert.equal(sim.wire.moduleLine.baud, 115200, "the module's UART is back at 115200");
      assert.equal(sim.wire.hostLine.baud, 115200, 'and so is the port');
      assert.ok(fam.files.get('tether.lua')!.equals(Buffer.from(minifyLua(nodemcuAgentSource()), 'latin1')));
    } finally {
      await sim.stop();
    }
  });

  it('a faster baud the module does not answer at: both ends fall back to the starting rate and the upload completes', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam);
    const inner = sim.connect();
    let rate = 115200;
    const rates: number[] = [];
    // a USB bridge that cannot do 921600: nothing gets through at that rate
    const t = wrap(inner, {
      write: async (d: Uint8Array) => (rate === 921600 ? undefined : inner.write(d)),
      setBaudRate: async (b: number) => {
        rates.push(b);
        rate = b;
        return b;
      },
    });
    try {
      const phases: FlashProgress[] = [];
      const r = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), start: false, baudRate: 921600, onProgress: (p) => phases.push(p) });
      assert.deepEqual(rates, [921600, 115200]);
      assert.equal(r.baud, 115200);
      assert.ok(phases.some((p) => p.phase === 'baud' && /did not answer at 921600 baud: staying at 115200/.test(p.message ?? '')));
      assert.ok(fam.files.get('tether.lua')!.equals(Buffer.from(minifyLua(nodemcuAgentSource()), 'latin1')));
    } finally {
      await sim.stop();
    }
  });

  it('a reset in the middle of the upload fails loudly and never leaves a 0-byte or partial agent; the next run completes', async () => {
    const fam = nodemcuFamily({ boot: 'repl' });
    const sim = await SimulatedModule.start(fam);
    const t = sim.connect();
    try {
      // an older agent is on the module
      fam.files.set('tether.lua', Buffer.from('-- old agent\n'));
      let reset = false;
      const err = await flashNodemcu(t, {
        agentSource: nodemcuAgentSource(),
        start: false,
        lineTimeoutMs: 600,
        onProgress: (p) => {
          if (!reset && p.phase === 'upload' && (p.done ?? 0) > 3000) {
            reset = true;
            void sim.restart('brown-out');
          }
        },
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(reset);
      assert.ok(isTetherError(err), `a TetherError, got ${String(err)}`);
      assert.match((err as Error).message, /no Lua prompt|no acknowledgement|failed|closed/);
      assert.equal(fam.files.get('tether.lua')!.toString(), '-- old agent\n', 'the agent file under its real name is untouched');
      assert.equal(fam.files.has('tether.tmp'), false, 'the temporary file was removed once the module was back');
      const ok = await flashNodemcu(t, { agentSource: nodemcuAgentSource(), start: true });
      assert.equal(ok.uploaded, true);
      assert.equal(ok.started, true);
      assert.equal(fam.files.has('tether.tmp'), false);
      const want = Buffer.from(minifyLua(nodemcuAgentSource()), 'latin1');
      const have = fam.files.get('tether.lua')!;
      assert.deepEqual(adler(have), adler(want));
    } finally {
      await sim.stop();
    }
  });
});

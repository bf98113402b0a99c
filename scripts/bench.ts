/**
 * npm run bench: protocol efficiency and speed, as ratios against baselines
 * measured in the same run (never asserted in unit tests).
 *
 * 1. Wire size of a minimal call + reply (socket.sntp_port()), against the 40-byte goal.
 * 2. Bulk efficiency: payload bytes / UART bytes host→module while sending 64 KiB,
 *    against base64's 75% ceiling and the 70% goal (at 115200 baud: KB/s on the line).
 * 3. Call rate over the in-process simulator, against a baseline of bare line
 *    round trips over the same in-memory transport.
 * 4. 64 KiB TCP echo through the module, against the same echo done directly from Node.
 */
import { firstValueFrom, lastValueFrom } from 'rxjs';
import { randomBytes } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { connect } from '../src/api/connect.js';
import { openSocket } from '../src/api/luatos/connection.js';
import { startEchoServers } from '../src/diag/echo-servers.js';
import { createMemoryPair } from '../src/transport/memory.js';

const ms = (t0: number) => performance.now() - t0;
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

async function main(): Promise<void> {
  const echo = await startEchoServers();
  const mod = await connect('sim:luatos');
  const sim = mod.simulator!;
  const rows: Array<[string, string, string]> = [];

  // 1. minimal call
  await firstValueFrom(mod.socket.sntp_port());
  const out0 = mod.rpc.stats.bytesOut;
  const in0 = sim.wire.stats.txBytes;
  await firstValueFrom(mod.socket.sntp_port());
  const callBytes = mod.rpc.stats.bytesOut - out0;
  await new Promise((r) => setTimeout(r, 20));
  const replyBytes = sim.wire.stats.txBytes - in0;
  // the module also sends a K credit frame after each batch: count call+reply only
  const creditBytes = `~K${0} XXXX\n`.length;
  rows.push(['minimal call + reply (bytes)', `${callBytes} + ${replyBytes - creditBytes} = ${callBytes + replyBytes - creditBytes}`, `goal 40: ratio ${((callBytes + replyBytes - creditBytes) / 40).toFixed(2)}`]);

  // 2 + 4. bulk send and echo of 64 KiB
  const payload = randomBytes(64 * 1024);
  const conn = await firstValueFrom(openSocket(mod.socket, echo.tcp.host, echo.tcp.port));
  let got = 0;
  const done = new Promise<void>((resolve) => {
    const s = conn.data().subscribe((b) => {
      got += b.length;
      if (got >= payload.length) {
        s.unsubscribe();
        resolve();
      }
    });
  });
  const wireIn0 = sim.wire.stats.rxBytes;
  const t0 = performance.now();
  await lastValueFrom(conn.send(payload));
  await done;
  const tetherMs = ms(t0);
  const wireBytes = sim.wire.stats.rxBytes - wireIn0;
  const eff = payload.length / wireBytes;
  rows.push(['bulk host→module efficiency', `${pct(eff)} of line rate`, `base64 ceiling 75%: ratio ${(eff / 0.75).toFixed(3)}; goal 70%; at 115200 baud ${((11520 * eff) / 1024).toFixed(1)} KiB/s`]);
  await conn.close();

  const direct = await new Promise<number>((resolve) => {
    const s = netConnect(echo.tcp.port, echo.tcp.host, () => {
      let n = 0;
      const t = performance.now();
      s.on('data', (d) => {
        n += d.length;
        if (n >= payload.length) {
          s.destroy();
          resolve(ms(t));
        }
      });
      s.write(payload);
    });
  });
  rows.push(['64 KiB TCP echo via simulated module', `${tetherMs.toFixed(0)} ms`, `direct Node echo ${direct.toFixed(1)} ms: ratio ${(tetherMs / direct).toFixed(1)}x`]);

  // 3. call rate
  const N = 200;
  let t = performance.now();
  for (let i = 0; i < N; i++) await firstValueFrom(mod.socket.sntp_port());
  const callMs = ms(t) / N;
  const [a, b] = createMemoryPair('bench');
  b.onData((c) => void b.write(c));
  let pending: (() => void) | undefined;
  a.onData(() => pending?.());
  t = performance.now();
  for (let i = 0; i < N; i++) {
    await new Promise<void>((r) => {
      pending = r;
      void a.write(Buffer.from('~C7 23 1A2B\n'));
    });
  }
  const baseMs = ms(t) / N;
  rows.push(['call round trip (in-process sim)', `${callMs.toFixed(2)} ms/call`, `bare line round trip ${baseMs.toFixed(3)} ms: ratio ${(callMs / baseMs).toFixed(1)}x`]);

  await mod.close();
  await echo.close();
  const w = Math.max(...rows.map((r) => r[0].length));
  console.log('tether bench (figures as ratios against baselines measured in this run)');
  for (const r of rows) console.log(`${r[0].padEnd(w)}  ${r[1].padEnd(28)}  ${r[2]}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});

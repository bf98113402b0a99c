/**
 * Unit tests of the test infrastructure for protocol v2: the seeded fault pipe
 * (src/transport/faulty.ts) and the UART pacer (src/transport/paced.ts).
 * Deterministic with a seed; pacing asserts only LOWER bounds on time.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createFaultyPair, FaultInjector, FaultyLink, faultRates, insertFaults, mulberry32 } from '../src/transport/faulty.js';
import { createPacedPair, insertPacing, PacedLine } from '../src/transport/paced.js';
import { createMemoryPair } from '../src/transport/memory.js';
import type { Transport } from '../src/transport/transport.js';

const MB = 1 << 20;

/** A reproducible pseudo-random payload. */
function payload(n: number, seed = 7): Uint8Array {
  const r = mulberry32(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** Feed `data` through `inj` in chunks of the given sizes (cycled). */
function feed(inj: FaultInjector, data: Uint8Array, sizes: number[] = [4096]): Uint8Array {
  const out: Uint8Array[] = [];
  let off = 0;
  let k = 0;
  while (off < data.length) {
    const n = sizes[k++ % sizes.length];
    out.push(inj.process(data.subarray(off, off + n)));
    off += n;
  }
  return Buffer.concat(out);
}

/** Collect what arrives on `t` until `n` bytes came (or reject after `ms`). */
function collect(t: Transport, n: number, ms = 20000): Promise<{ data: Buffer; at: number }> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${n} bytes arrived`)), ms);
    t.onData((c) => {
      parts.push(Buffer.from(c));
      got += c.length;
      if (got >= n) {
        clearTimeout(timer);
        resolve({ data: Buffer.concat(parts), at: performance.now() });
      }
    });
  });
}

/** Within `tol` (relative) of `want`. */
function near(got: number, want: number, tol: number, what: string): void {
  assert.ok(Math.abs(got - want) <= tol * want, `${what}: ${got}, expected about ${want.toFixed(1)} (±${(tol * 100).toFixed(0)}%)`);
}

describe('mulberry32', () => {
  it('is deterministic per seed and uniform in [0, 1)', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const xs = Array.from({ length: 1000 }, () => a());
    assert.deepEqual(xs, Array.from({ length: 1000 }, () => b()));
    assert.notDeepEqual(xs, Array.from({ length: 1000 }, () => c()));
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
  });
});

describe('fault injector', () => {
  it('rate 0 passes bytes unchanged', () => {
    const inj = new FaultInjector(1, {});
    const d = payload(100000);
    assert.deepEqual(feed(inj, d), Buffer.from(d));
    assert.equal(inj.stats.bytesIn, d.length);
    assert.equal(inj.stats.bytesOut, d.length);
  });

  it('is deterministic: same seed and stream give the same output, whatever the chunking', () => {
    const d = payload(200000);
    const rates = faultRates(1e-3);
    const a = feed(new FaultInjector(99, rates), d, [4096]);
    const b = feed(new FaultInjector(99, rates), d, [1, 7, 300, 5000, 64]);
    const c = feed(new FaultInjector(100, rates), d, [4096]);
    assert.ok(Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0, 'chunking does not change the faults');
    assert.ok(Buffer.compare(Buffer.from(a), Buffer.from(c)) !== 0, 'another seed gives other faults');
  });

  it('flips: one bit per flipped byte, at the configured rate over 1 MB', () => {
    const d = payload(MB);
    const inj = new FaultInjector(3, { flip: 1e-3 });
    const out = feed(inj, d);
    assert.equal(out.length, d.length);
    let diff = 0;
    for (let i = 0; i < d.length; i++) {
      const x = d[i] ^ out[i];
      if (x !== 0) {
        diff++;
        assert.equal(x & (x - 1), 0, `byte ${i} differs in exactly one bit`);
      }
    }
    assert.equal(diff, inj.stats.flipped);
    near(diff, MB * 1e-3, 0.15, 'flipped bytes');
  });

  it('drops: the output is the input minus dropped bytes, at the configured rate', () => {
    const d = Buffer.alloc(MB);
    for (let i = 0; i < d.length; i++) d[i] = i & 0xff; // a counter makes the holes visible
    const inj = new FaultInjector(4, { drop: 1e-3 });
    const out = feed(inj, d);
    assert.equal(out.length, d.length - inj.stats.dropped);
    near(inj.stats.dropped, MB * 1e-3, 0.15, 'dropped bytes');
    // every output byte appears in order (subsequence)
    let j = 0;
    for (let i = 0; i < out.length; i++) {
      while (j < d.length && d[j] !== out[i]) j++;
      assert.ok(j < d.length, 'output is a subsequence of the input');
      j++;
    }
  });

  it('duplicates: bytes delivered twice at the configured rate', () => {
    const d = payload(MB);
    const inj = new FaultInjector(5, { dup: 1e-3 });
    const out = feed(inj, d);
    assert.equal(out.length, d.length + inj.stats.duplicated);
    near(inj.stats.duplicated, MB * 1e-3, 0.15, 'duplicated bytes');
  });

  it('garbage lines: printable text + CRLF between bytes, some starting with ~, at the configured rate per KB', () => {
    const d = Buffer.alloc(MB); // NUL bytes: never part of a garbage line
    const inj = new FaultInjector(6, { garbagePerKB: 1, garbageTilde: 0.25 });
    const out = Buffer.from(feed(inj, d));
    const text = out.toString('latin1');
    const lines = text.match(/[\x20-\x7e]+\r\n/g) ?? [];
    assert.equal(lines.length, inj.stats.garbageLines);
    assert.equal(lines.join('').length, inj.stats.garbageBytes);
    assert.equal(text.replace(/[\x20-\x7e]+\r\n/g, '').length, d.length, 'removing the garbage leaves the payload');
    near(lines.length, 1024, 0.15, 'garbage lines per MB');
    const tilde = lines.filter((l) => l.startsWith('~')).length;
    near(tilde, lines.length * 0.25, 0.3, 'lines starting with ~');
  });

  it('all faults together: counters add up', () => {
    const d = payload(MB);
    const inj = new FaultInjector(8, faultRates(1e-3, 1));
    const out = feed(inj, d, [1000, 255, 17]);
    const s = inj.stats;
    assert.equal(s.bytesIn, d.length);
    assert.equal(out.length, s.bytesOut);
    assert.equal(s.bytesOut, d.length - s.dropped + s.duplicated + s.garbageBytes);
    for (const [k, v] of [['flipped', s.flipped], ['dropped', s.dropped], ['duplicated', s.duplicated]] as const) near(v, MB * 1e-3, 0.15, k);
  });

  it('rates can change on the fly; invalid rates are refused', () => {
    const inj = new FaultInjector(9, {});
    assert.deepEqual(feed(inj, payload(10000)), Buffer.from(payload(10000)));
    inj.set({ drop: 1 });
    assert.equal(feed(inj, payload(100)).length, 0);
    inj.set({ drop: 0 });
    assert.equal(feed(inj, payload(100)).length, 100);
    assert.throws(() => inj.set({ flip: 2 }), RangeError);
    assert.throws(() => inj.set({ dup: -1 }), RangeError);
  });

  it('blackhole drops everything for a period, then bytes pass again', async () => {
    const link = new FaultyLink({ seed: 1 });
    link.blackhole('toHost', 60);
    assert.equal(link.process('toHost', payload(500)).length, 0);
    assert.equal(link.process('toDevice', payload(500)).length, 500, 'the other direction is untouched');
    assert.equal(link.stats.toHost.blackholed, 500);
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(link.process('toHost', payload(500)).length, 500);
    link.blackhole('toHost', Infinity);
    assert.equal(link.process('toHost', payload(10)).length, 0);
    link.unblock('toHost');
    assert.equal(link.process('toHost', payload(10)).length, 10);
  });

  it('directions have separate settings and streams', () => {
    const link = new FaultyLink({ seed: 11, toDevice: { drop: 0.5 }, toHost: {} });
    assert.equal(link.process('toHost', payload(10000)).length, 10000);
    const n = link.process('toDevice', payload(10000)).length;
    assert.ok(n > 4000 && n < 6000, `about half dropped (${n})`);
    const both = new FaultyLink({ seed: 11, both: { flip: 0.01 }, toHost: { flip: 0 } });
    both.process('toDevice', payload(10000));
    both.process('toHost', payload(10000));
    assert.ok(both.stats.toDevice.flipped > 0);
    assert.equal(both.stats.toHost.flipped, 0, 'toHost overrides both');
  });
});

describe('fault transports', () => {
  it('createFaultyPair: clean at rate 0 in both directions, faulty per direction otherwise', async () => {
    const [h, d] = createFaultyPair({ seed: 1 });
    const data = payload(50000);
    const got = collect(d, data.length);
    const back = collect(h, 1000);
    await h.write(data);
    await d.write(data.subarray(0, 1000));
    assert.deepEqual((await got).data, Buffer.from(data));
    assert.deepEqual((await back).data, Buffer.from(data.subarray(0, 1000)));
    await h.close();

    const [h2, d2, link] = createFaultyPair({ seed: 2, toDevice: { dup: 0.01 } });
    const got2 = collect(d2, 20000);
    for (let i = 0; i < 20; i++) await h2.write(data.subarray(i * 1000, i * 1000 + 1000));
    const r = await got2;
    assert.ok(link.stats.toDevice.duplicated > 0);
    assert.equal(link.stats.toDevice.bytesOut, 20000 + link.stats.toDevice.duplicated);
    assert.ok(r.data.length >= 20000);
    await d2.close();
  });

  it('insertFaults relays between two transports with faults, and closes through', async () => {
    const [hostEnd, a] = createMemoryPair('a');
    const [b, deviceEnd] = createMemoryPair('b');
    const link = insertFaults(a, b, { seed: 5, toHost: { flip: 0.01 } });
    const data = payload(20000);
    const toDev = collect(deviceEnd, data.length);
    const toHost = collect(hostEnd, data.length);
    await hostEnd.write(data);
    await deviceEnd.write(data);
    assert.deepEqual((await toDev).data, Buffer.from(data), 'toDevice clean');
    const r = (await toHost).data;
    assert.equal(r.length, data.length);
    let diff = 0;
    for (let i = 0; i < r.length; i++) if (r[i] !== data[i]) diff++;
    assert.equal(diff, link.stats.toHost.flipped);
    assert.ok(diff > 0);
    const closed = new Promise<Error | undefined>((res) => deviceEnd.onClose(res));
    await hostEnd.close();
    await closed;
    assert.equal(deviceEnd.isOpen, false);
  });
});

describe('paced pipe', () => {
  it('N bytes at B baud take at least N*10/B seconds, arrive intact and in order', async () => {
    for (const [baud, n] of [
      [115200, 5760],
      [921600, 46080],
    ]) {
      const [h, d, link] = createPacedPair({ baud });
      const data = payload(n);
      const got = collect(d, n);
      const t0 = performance.now();
      // many small writes, like a protocol would do
      for (let off = 0; off < n; off += 255) await h.write(data.subarray(off, off + 255));
      const r = await got;
      const elapsed = r.at - t0;
      const lineMs = (n * 10 * 1000) / baud;
      assert.ok(elapsed >= lineMs - 0.01, `${n} bytes at ${baud}: ${elapsed.toFixed(1)} ms >= ${lineMs} ms`);
      assert.deepEqual(r.data, Buffer.from(data));
      assert.equal(link.stats.toDevice.bytes, n);
      assert.equal(link.lineTimeMs(n), lineMs);
      await h.close();
    }
  });

  it('is full duplex: each direction runs at the line rate on its own', async () => {
    const baud = 115200;
    const n = 2880; // 250 ms each way
    const [h, d] = createPacedPair({ baud });
    const data = payload(n);
    const toDev = collect(d, n);
    const toHost = collect(h, n);
    const t0 = performance.now();
    void h.write(data);
    void d.write(data);
    const [a, b] = await Promise.all([toDev, toHost]);
    const lineMs = (n * 10 * 1000) / baud;
    assert.ok(a.at - t0 >= lineMs - 0.01 && b.at - t0 >= lineMs - 0.01);
    assert.deepEqual(a.data, Buffer.from(data));
    assert.deepEqual(b.data, Buffer.from(data));
    await d.close();
  });

  it('bounded buffering: a write resolves only once its bytes fit in the transmit buffer', async () => {
    const delivered: number[] = [];
    let total = 0;
    const line = new PacedLine({ baud: 921600, txBuffer: 100 }, (c) => {
      total += c.length;
      delivered.push(total);
    });
    await line.send(payload(60)); // fits: resolves at once
    assert.equal(total, 0);
    await line.send(payload(1000));
    assert.ok(total >= 960, `1060 queued with a 100-byte buffer: resolved after ${total} delivered (>= 960)`);
    line.close();
    await assert.rejects(line.send(payload(1)), /closed/);
  });

  it('insertPacing relays between two transports at the line rate', async () => {
    const [hostEnd, a] = createMemoryPair('a');
    const [b, deviceEnd] = createMemoryPair('b');
    const link = insertPacing(a, b, { baud: 230400 });
    const n = 2304; // 100 ms
    const data = payload(n);
    const got = collect(deviceEnd, n);
    const t0 = performance.now();
    await hostEnd.write(data);
    const r = await got;
    assert.ok(r.at - t0 >= 100 - 0.01);
    assert.deepEqual(r.data, Buffer.from(data));
    assert.equal(link.stats.toDevice.bytes, n);
    await hostEnd.close();
  });

  it('composes: faults on top of pacing (wrapDeviceSide around a paced device end)', async () => {
    const [h, d, pace] = createPacedPair({ baud: 460800 });
    const faults = new FaultyLink({ seed: 3, toDevice: { drop: 0.01 } });
    const dev = faults.wrapDeviceSide(d);
    const n = 4608; // 100 ms
    const data = payload(n);
    const parts: Buffer[] = [];
    const done = new Promise<number>((resolve) => {
      dev.onData((c) => {
        parts.push(Buffer.from(c));
        if (pace.stats.toDevice.bytes >= n) resolve(performance.now());
      });
    });
    const back = collect(h, 100);
    const t0 = performance.now();
    await h.write(data);
    const at = await done;
    assert.ok(at - t0 >= 100 - 0.01);
    const got = Buffer.concat(parts);
    assert.equal(got.length, n - faults.stats.toDevice.dropped);
    assert.ok(faults.stats.toDevice.dropped > 0);
    await dev.write(data.subarray(0, 100));
    assert.deepEqual((await back).data, Buffer.from(data.subarray(0, 100)), 'toHost is clean');
    await h.close();
  });
});

/**
 * A seeded, deterministic fault-injecting byte pipe for testing the link layer
 * (docs/protocol.md sections 3-6) against a noisy UART.
 *
 * Per byte, independently, each with its own probability (per byte, 0..1):
 * - **flip**: one random bit of the byte is inverted;
 * - **drop**: the byte is lost;
 * - **dup**: the byte arrives twice.
 * Plus **garbage lines**: random printable text followed by `\r\n` (some of
 * them starting with `~`, so they look like broken frames) inserted *between*
 * bytes, also mid-frame, at a rate given in lines per 1024 bytes passed.
 *
 * Each direction (`toDevice`: what the host writes; `toHost`: what the module
 * writes) has its own settings, its own counters and its own PRNG stream
 * (mulberry32) derived from the seed. The faults hitting a direction depend
 * only on the seed and on the position of each byte in that direction's byte
 * stream, so the same seed and the same byte stream give the same faults
 * (the stream itself may differ between runs when the protocol's timing
 * does, e.g. retransmissions).
 *
 * Fault positions are drawn as geometric gaps (exactly the distribution of
 * independent per-byte Bernoulli trials), so clean spans cost nothing.
 *
 * A direction can also be **blackholed** for a period (every byte dropped),
 * e.g. to lose a module's boot frame.
 *
 * Three ways to use it:
 * - {@link createFaultyPair}: an in-memory pair like `createMemoryPair`, with faults.
 * - {@link FaultyLink.wrapDeviceSide} / {@link FaultyLink.wrapHostSide}: wrap one
 *   existing transport (e.g. the device end of a paced pair, which is then
 *   attached to a simulated module's wire): faults on top of whatever it is.
 * - {@link insertFaults}: relay between two existing transports.
 */
import { TetherError } from '../errors.js';
import { BaseTransport, type Transport } from './transport.js';

/** Direction of travel: `toDevice` = bytes the host writes, `toHost` = bytes the module writes. */
export type FaultDirection = 'toDevice' | 'toHost';

/** Fault settings of one direction. Probabilities are per byte (0..1), independent of each other. */
export interface FaultRates {
  /** Probability per byte that one random bit of it is inverted. @default 0 */
  flip?: number;
  /** Probability per byte that it is lost. @default 0 */
  drop?: number;
  /** Probability per byte that it is delivered twice. @default 0 */
  dup?: number;
  /** Garbage lines inserted per 1024 bytes passed (mean; positions are random). @default 0 */
  garbagePerKB?: number;
  /** Fraction (0..1) of garbage lines that start with `~` (look like broken frames). @default 0.25 */
  garbageTilde?: number;
  /** Longest garbage line text (bytes, before `\r\n`); lengths are uniform in 1..this. @default 60 */
  garbageMaxLen?: number;
}

/** Options of a {@link FaultyLink}. */
export interface FaultOptions {
  /** PRNG seed (any 32-bit integer). The same seed and byte streams reproduce the same faults. @default 1 */
  seed?: number;
  /** Defaults for both directions (overridden field by field by `toDevice` / `toHost`). */
  both?: FaultRates;
  /** Faults on bytes the host writes. */
  toDevice?: FaultRates;
  /** Faults on bytes the module writes. */
  toHost?: FaultRates;
  /** Name used in the transports' descriptions. @default 'faulty' */
  name?: string;
}

/** Counters of one direction (all in bytes, except `garbageLines`). */
export interface FaultDirectionStats {
  /** Bytes that entered the fault stage. */
  bytesIn: number;
  /** Bytes that left it (payload after drops and duplicates, plus garbage). */
  bytesOut: number;
  /** Bytes with one bit flipped. */
  flipped: number;
  /** Bytes dropped by the `drop` probability. */
  dropped: number;
  /** Bytes delivered twice. */
  duplicated: number;
  /** Garbage lines inserted. */
  garbageLines: number;
  /** Bytes of garbage inserted (including the `\r\n`). */
  garbageBytes: number;
  /** Bytes swallowed while the direction was blackholed. */
  blackholed: number;
}

/** Counters of both directions. */
export interface FaultStats {
  toDevice: FaultDirectionStats;
  toHost: FaultDirectionStats;
}

/**
 * Shorthand for the usual symmetric setting: flip, drop and dup each `p` per byte,
 * plus `garbagePerKB` garbage lines per 1024 bytes (default: `p * 1024`, i.e. one
 * garbage line per byte fault of one kind, at least 0).
 */
export function faultRates(p: number, garbagePerKB = p * 1024): FaultRates {
  return { flip: p, drop: p, dup: p, garbagePerKB };
}

/**
 * mulberry32: a tiny 32-bit PRNG, good enough for fault injection.
 * Returns a function giving uniform numbers in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function checkProbability(name: string, p: number | undefined): number {
  const v = p ?? 0;
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new RangeError(`fault rate ${name} must be a probability 0..1, got ${String(p)}`);
  return v;
}

function emptyStats(): FaultDirectionStats {
  return { bytesIn: 0, bytesOut: 0, flipped: 0, dropped: 0, duplicated: 0, garbageLines: 0, garbageBytes: 0, blackholed: 0 };
}

const NEVER = Number.POSITIVE_INFINITY;

/** The fault stage of one direction: a pure function of (seed, byte stream), plus the blackhole clock. */
export class FaultInjector {
  readonly stats: FaultDirectionStats = emptyStats();
  private readonly rand: () => number;
  private rates: Required<FaultRates> = { flip: 0, drop: 0, dup: 0, garbagePerKB: 0, garbageTilde: 0.25, garbageMaxLen: 60 };
  /** Input bytes seen so far (the position of the next byte). */
  private pos = 0;
  private atFlip = NEVER;
  private atDrop = NEVER;
  private atDup = NEVER;
  private atGarbage = NEVER;
  private blackholeUntil = 0;

  constructor(seed: number, rates: FaultRates = {}) {
    this.rand = mulberry32(seed);
    this.set(rates);
  }

  /** Current settings. */
  get settings(): Readonly<Required<FaultRates>> {
    return this.rates;
  }

  /** Change the settings from the next byte on (unspecified fields keep their value). */
  set(rates: FaultRates): void {
    const r = { ...this.rates, ...stripUndefined(rates) };
    r.flip = checkProbability('flip', r.flip);
    r.drop = checkProbability('drop', r.drop);
    r.dup = checkProbability('dup', r.dup);
    r.garbageTilde = checkProbability('garbageTilde', r.garbageTilde);
    if (!(r.garbagePerKB >= 0 && r.garbagePerKB <= 1024)) throw new RangeError(`garbagePerKB must be 0..1024, got ${r.garbagePerKB}`);
    if (!Number.isInteger(r.garbageMaxLen) || r.garbageMaxLen < 1) throw new RangeError(`garbageMaxLen must be a positive integer, got ${r.garbageMaxLen}`);
    this.rates = r;
    this.atFlip = this.pos + this.gap(r.flip);
    this.atDrop = this.pos + this.gap(r.drop);
    this.atDup = this.pos + this.gap(r.dup);
    this.atGarbage = this.pos + this.gap(r.garbagePerKB / 1024);
  }

  /** Drop every byte for the next `ms` milliseconds (Infinity: until {@link unblock}). */
  blackhole(ms: number): void {
    this.blackholeUntil = Math.max(this.blackholeUntil, performance.now() + ms);
  }

  /** End a blackhole now. */
  unblock(): void {
    this.blackholeUntil = 0;
  }

  /** True while blackholed. */
  get blackholed(): boolean {
    return this.blackholeUntil > performance.now();
  }

  /** Bytes until the next event of probability `p`: geometric, support 0, 1, 2, ... */
  private gap(p: number): number {
    if (p <= 0) return NEVER;
    if (p >= 1) return 0;
    return Math.floor(Math.log(1 - this.rand()) / Math.log1p(-p));
  }

  private garbageLine(): Uint8Array {
    const len = 1 + Math.floor(this.rand() * this.rates.garbageMaxLen);
    const b = new Uint8Array(len + 2);
    const tilde = this.rand() < this.rates.garbageTilde;
    for (let i = 0; i < len; i++) b[i] = 0x20 + Math.floor(this.rand() * 95); // printable 0x20..0x7e
    if (tilde) b[0] = 0x7e;
    else if (b[0] === 0x7e) b[0] = 0x2e; // non-tilde lines never start with ~
    b[len] = 0x0d;
    b[len + 1] = 0x0a;
    return b;
  }

  /** Pass `chunk` through the faults; returns what comes out (may be empty). */
  process(chunk: Uint8Array): Uint8Array {
    const len = chunk.length;
    const s = this.stats;
    s.bytesIn += len;
    if (len === 0) return chunk;
    if (this.blackholeUntil > 0 && this.blackholed) {
      s.blackholed += len;
      this.pos += len; // the fault stream keeps its place
      this.skipEventsBefore(this.pos);
      return new Uint8Array(0);
    }
    const start = this.pos;
    const end = start + len;
    let next = Math.min(this.atFlip, this.atDrop, this.atDup, this.atGarbage);
    if (next >= end) {
      this.pos = end;
      s.bytesOut += len;
      return Uint8Array.from(chunk);
    }
    const parts: Uint8Array[] = [];
    let i = 0;
    while (i < len) {
      next = Math.min(this.atFlip, this.atDrop, this.atDup, this.atGarbage);
      if (next >= end) {
        parts.push(chunk.subarray(i));
        break;
      }
      const k = next - start;
      if (k > i) parts.push(chunk.subarray(i, k));
      i = k;
      const at = start + k;
      if (this.atGarbage === at) {
        const g = this.garbageLine();
        parts.push(g);
        s.garbageLines++;
        s.garbageBytes += g.length;
        this.atGarbage = at + 1 + this.gap(this.rates.garbagePerKB / 1024);
      }
      let b = chunk[i];
      let drop = false;
      let dup = false;
      let flip = false;
      if (this.atFlip === at) {
        b ^= 1 << Math.floor(this.rand() * 8);
        flip = true;
        this.atFlip = at + 1 + this.gap(this.rates.flip);
      }
      if (this.atDrop === at) {
        drop = true;
        this.atDrop = at + 1 + this.gap(this.rates.drop);
      }
      if (this.atDup === at) {
        dup = true;
        this.atDup = at + 1 + this.gap(this.rates.dup);
      }
      if (drop) s.dropped++;
      else {
        if (flip) s.flipped++;
        parts.push(Uint8Array.of(b));
        if (dup) {
          s.duplicated++;
          parts.push(Uint8Array.of(b));
        }
      }
      i++;
    }
    this.pos = end;
    const out = Buffer.concat(parts);
    s.bytesOut += out.length;
    return out;
  }

  /** After a blackhole: events that fell inside it are redrawn from `pos` (keeps rates right). */
  private skipEventsBefore(pos: number): void {
    const r = this.rates;
    if (this.atFlip < pos) this.atFlip = pos + this.gap(r.flip);
    if (this.atDrop < pos) this.atDrop = pos + this.gap(r.drop);
    if (this.atDup < pos) this.atDup = pos + this.gap(r.dup);
    if (this.atGarbage < pos) this.atGarbage = pos + this.gap(r.garbagePerKB / 1024);
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const r: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (r as Record<string, unknown>)[k] = v;
  return r;
}

/** Seeds of the two directions: independent streams from one seed. */
function directionSeed(seed: number, dir: FaultDirection): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) ^ (dir === 'toDevice' ? 0x68e31da4 : 0xb5297a4d)) >>> 0;
}

/**
 * The fault settings and counters of both directions of one link. Make the transports
 * with {@link createFaultyPair}, {@link wrapDeviceSide}/{@link wrapHostSide} or {@link insertFaults}.
 */
export class FaultyLink {
  readonly name: string;
  readonly seed: number;
  private readonly dirs: Record<FaultDirection, FaultInjector>;

  constructor(opts: FaultOptions = {}) {
    this.seed = opts.seed ?? 1;
    this.name = opts.name ?? 'faulty';
    this.dirs = {
      toDevice: new FaultInjector(directionSeed(this.seed, 'toDevice'), { ...opts.both, ...stripUndefined(opts.toDevice ?? {}) }),
      toHost: new FaultInjector(directionSeed(this.seed, 'toHost'), { ...opts.both, ...stripUndefined(opts.toHost ?? {}) }),
    };
  }

  /** Live counters of both directions. */
  get stats(): FaultStats {
    return { toDevice: this.dirs.toDevice.stats, toHost: this.dirs.toHost.stats };
  }

  /** The injector of one direction (settings, counters). */
  direction(dir: FaultDirection): FaultInjector {
    return this.dirs[dir];
  }

  /** Change one direction's settings (or both, with `'both'`) from the next byte on. */
  set(dir: FaultDirection | 'both', rates: FaultRates): void {
    if (dir === 'both' || dir === 'toDevice') this.dirs.toDevice.set(rates);
    if (dir === 'both' || dir === 'toHost') this.dirs.toHost.set(rates);
  }

  /** Drop every byte travelling `dir` for `ms` milliseconds (Infinity: until {@link unblock}). */
  blackhole(dir: FaultDirection, ms: number): void {
    this.dirs[dir].blackhole(ms);
  }

  /** End a blackhole of `dir` now. */
  unblock(dir: FaultDirection): void {
    this.dirs[dir].unblock();
  }

  /** Pass bytes travelling `dir` through its faults (exposed for tests). */
  process(dir: FaultDirection, chunk: Uint8Array): Uint8Array {
    return this.dirs[dir].process(chunk);
  }

  /**
   * Wrap `inner`, a transport that leads to the **host** (e.g. the device end of a memory or
   * paced pair): the result is a device-side transport (attach it to a module's wire).
   * What the module writes goes through `toHost`; what arrives from the host through `toDevice`.
   */
  wrapDeviceSide(inner: Transport): Transport {
    return new FaultyWrapper(inner, this.dirs.toHost, this.dirs.toDevice, `${this.name}(${inner.description})`);
  }

  /**
   * Wrap `inner`, a transport that leads to the **module** (e.g. a serial port or the host end
   * of a pair): the result is a host-side transport (give it to the RPC client).
   * What the host writes goes through `toDevice`; what arrives from the module through `toHost`.
   */
  wrapHostSide(inner: Transport): Transport {
    return new FaultyWrapper(inner, this.dirs.toDevice, this.dirs.toHost, `${this.name}(${inner.description})`);
  }
}

/** A transport around another: writes go through one injector, received bytes through the other. */
class FaultyWrapper extends BaseTransport {
  constructor(
    private readonly inner: Transport,
    private readonly out: FaultInjector,
    incoming: FaultInjector,
    readonly description: string,
  ) {
    super();
    inner.onData((chunk) => {
      const d = incoming.process(chunk);
      if (d.length > 0) this.emitData(d);
    });
    inner.onClose((err) => this.emitClose(err));
  }

  /** The wrapped transport's line rate: faults do not change the line's speed. */
  get lineBaud(): number | undefined {
    return this.inner.lineBaud;
  }

  async write(data: Uint8Array): Promise<void> {
    if (!this.isOpen) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    const d = this.out.process(data);
    if (d.length > 0) await this.inner.write(d);
  }

  async close(): Promise<void> {
    await this.inner.close();
    this.emitClose();
  }
}

/** One end of a {@link createFaultyPair} pair. */
class FaultyEnd extends BaseTransport {
  /** @internal */ peer?: FaultyEnd;
  constructor(
    readonly description: string,
    private readonly out: FaultInjector,
  ) {
    super();
  }

  async write(data: Uint8Array): Promise<void> {
    if (!this.isOpen) throw new TetherError('DISCONNECTED', `${this.description} is closed`);
    const d = this.out.process(data);
    if (d.length === 0) return;
    const peer = this.peer;
    setImmediate(() => peer?.deliver(d));
  }

  /** @internal */ deliver(chunk: Uint8Array): void {
    this.emitData(chunk);
  }

  async close(): Promise<void> {
    if (!this.isOpen) return;
    this.emitClose();
    const peer = this.peer;
    setImmediate(() => peer?.emitClose(new TetherError('DISCONNECTED', `${peer.description}: peer closed`)));
  }
}

/**
 * An in-memory pair with faults, like `createMemoryPair`: `[hostEnd, deviceEnd, link]`.
 * Bytes arrive on the other end on the next macrotask, in order (apart from the faults).
 * Attach `deviceEnd` to a simulated module (`sim.wire.attach(deviceEnd)`); give `hostEnd` to the host.
 */
export function createFaultyPair(opts: FaultOptions = {}): [Transport, Transport, FaultyLink] {
  const link = new FaultyLink(opts);
  const h = new FaultyEnd(`${link.name}:host`, link.direction('toDevice'));
  const d = new FaultyEnd(`${link.name}:device`, link.direction('toHost'));
  h.peer = d;
  d.peer = h;
  return [h, d, link];
}

/**
 * Relay between two existing transports with faults: bytes arriving on `hostSide` (what the host
 * wrote) go through `toDevice` and are written to `deviceSide`; bytes arriving on `deviceSide`
 * go through `toHost` to `hostSide`. When one closes, the other is closed.
 * Writes are not awaited (no backpressure through the relay); order is kept.
 */
export function insertFaults(hostSide: Transport, deviceSide: Transport, opts: FaultOptions = {}): FaultyLink {
  const link = new FaultyLink(opts);
  hostSide.onData((c) => {
    const d = link.process('toDevice', c);
    if (d.length > 0 && deviceSide.isOpen) deviceSide.write(d).catch(() => {});
  });
  deviceSide.onData((c) => {
    const d = link.process('toHost', c);
    if (d.length > 0 && hostSide.isOpen) hostSide.write(d).catch(() => {});
  });
  hostSide.onClose(() => void deviceSide.close());
  deviceSide.onClose(() => void hostSide.close());
  return link;
}

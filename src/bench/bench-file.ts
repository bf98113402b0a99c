/**
 * Bench files: the modules of a test bench, by name, with where each is plugged in and
 * what it can reach — the tether counterpart of a labgrid environment file. Used by
 * `tether diag --bench FILE [NAME...]` and by the HIL suite (`TETHER_TEST_BENCH=FILE`).
 * The schema is documented in docs/bench.md.
 *
 * ```yaml
 * modules:
 *   air780e:
 *     family: luatos
 *     port: serial:A50285BI
 *     baud: 921600
 *     echo: { tcp: echo.example.net:7, udp: echo.example.net:7, tls: echo.example.net:7443, tls-ca: ca.pem, dns: echo.example.net }
 *     timeouts: { handshake: 10000, call: 5000, check: 15000 }
 * ```
 *
 * A file is YAML 1.2 (so JSON too), parsed with the `yaml` package. Validation collects
 * every problem; each names the file, the path of the bad field (`modules.air780e.baud`)
 * and what is expected.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { InvalidArgumentError } from '../errors.js';
import { parsePortUrl } from '../transport/index.js';
import { isSerialNumberPort, parseSerialNumberPort } from '../transport/serial-number.js';
import { MAX_TIMER_MS } from '../util/timer.js';
import type { ModuleFamily } from '../transport/ports.js';

/** The families a bench module can be. */
export const BENCH_FAMILIES: readonly ModuleFamily[] = ['luatos', 'luat', 'nodemcu'];

/** Highest baud rate accepted (the serial transport's limit, MAX_BAUD_RATE). */
const MAX_BAUD = 20_000_000;
/** Bounds of `echo-bytes` (as `diag --echo-bytes`). */
const ECHO_BYTES_MAX = 65536;

/** `HOST:PORT` of an echo server (`host` without IPv6 brackets, `port` 1..65535). */
export interface BenchEndpoint {
  host: string;
  port: number;
}

/** What a module's network checks reach (all optional: what is absent is not tested). */
export interface BenchEcho {
  /** TCP echo server. */
  tcp?: BenchEndpoint;
  /** UDP echo server. */
  udp?: BenchEndpoint;
  /** TLS echo server. */
  tls?: BenchEndpoint;
  /** Absolute path of the PEM CA the module verifies the TLS server against (`tls-ca`, relative to the bench file in the file). */
  tlsCa?: string;
  /** Host name the DNS check resolves. */
  dns?: string;
}

/** Timeouts of a module, in ms. Absent: the command's or suite's default. */
export interface BenchTimeouts {
  /** The handshake (hello) at open. Default of diag: 10000. */
  handshake?: number;
  /** Each RPC call. Default of diag: 5000. */
  call?: number;
  /** Each diag check / HIL step. Default of diag: 15000. */
  check?: number;
}

/** One module of a bench. */
export interface BenchModule {
  /** Its name in the file (`modules.<name>`): letters, digits, `.`, `_`, `-`. */
  name: string;
  /** Firmware family: given, or implied by a `sim:` port. */
  family: ModuleFamily;
  /** Port string as `--port` takes it (`/dev/ttyUSB0`, `serial:SERIALNO`, `tcp://...`, `rfc2217://...`, `sim:luat`). */
  port: string;
  /** Serial baud rate (baud), when given. */
  baud?: number;
  /** Echo endpoints (merged over `defaults.echo`). */
  echo: BenchEcho;
  /** Timeouts (merged over `defaults.timeouts`). */
  timeouts: BenchTimeouts;
  /** Bytes echoed by the TCP/TLS checks, 1..65536, when given. */
  echoBytes?: number;
}

/** A validated bench file. */
export interface Bench {
  /** The file it came from (as given), or a label for text parsed directly. */
  file: string;
  /** The modules, in file order. */
  modules: BenchModule[];
}

type Problems = string[];
const shown = (v: unknown): string => (v === undefined ? 'nothing' : v === null ? 'null' : typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a mapping' : String(v));

function isMap(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Report keys of `obj` outside `allowed`. */
function unknownKeys(obj: Record<string, unknown>, allowed: readonly string[], path: string, p: Problems): void {
  for (const k of Object.keys(obj)) if (!allowed.includes(k)) p.push(`${path ? `${path}.` : ''}${k}: unknown field; expected one of ${allowed.join(', ')}`);
}

function intIn(v: unknown, min: number, max: number, unit: string, path: string, p: Problems): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    p.push(`${path}: expected an integer ${min}..${max} (${unit}), got ${shown(v)}`);
    return undefined;
  }
  return v;
}

function endpoint(v: unknown, path: string, p: Problems): BenchEndpoint | undefined {
  if (v === undefined) return undefined;
  const m = typeof v === 'string' ? /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]/]+)):(\d{1,5})$/.exec(v) : null;
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    p.push(`${path}: expected HOST:PORT (port 1..65535, IPv6 as [addr]:port), got ${shown(v)}`);
    return undefined;
  }
  return { host: m[1] ?? m[2], port };
}

/** The family a `sim` / `sim:FAMILY` port names. */
function simFamily(port: string): string | undefined {
  if (port === 'sim') return 'luatos';
  return port.startsWith('sim:') ? port.slice(4) : undefined;
}

/**
 * Check a port string the way the transport will parse it. `rfc2217://HOST:PORT[?...]`
 * is accepted by shape here when this build's parsePortUrl does not know the scheme;
 * the transport checks its query parameters when it opens.
 */
function checkPort(v: unknown, path: string, p: Problems): string | undefined {
  if (typeof v !== 'string' || v === '') {
    p.push(`${path}: expected a port string (/dev/ttyUSB0, serial:SERIALNO, tcp://HOST:PORT, rfc2217://HOST:PORT, sim, sim:luat, sim:nodemcu), got ${shown(v)}`);
    return undefined;
  }
  const fam = simFamily(v);
  if (fam !== undefined) {
    if (!(BENCH_FAMILIES as readonly string[]).includes(fam)) p.push(`${path}: no simulator for family ${JSON.stringify(fam)}; expected sim, sim:luatos, sim:luat or sim:nodemcu`);
    return v;
  }
  try {
    if (isSerialNumberPort(v)) parseSerialNumberPort(v);
    else parsePortUrl(v);
  } catch (e) {
    const rfc = /^rfc2217:\/\/(?:\[[0-9A-Fa-f:.]+\]|[^\s:/?#@[\]]+):(\d{1,5})\/?(?:\?[^#\s]*)?$/i.exec(v);
    if (rfc && Number(rfc[1]) >= 1 && Number(rfc[1]) <= 65535) return v;
    p.push(`${path}: ${(e as Error).message}`);
    return undefined;
  }
  return v;
}

interface Common {
  baud?: number;
  echo: BenchEcho;
  timeouts: BenchTimeouts;
  echoBytes?: number;
}

/** The fields `defaults` and every module share. */
function common(obj: Record<string, unknown>, path: string, baseDir: string, p: Problems): Common {
  const out: Common = { echo: {}, timeouts: {} };
  out.baud = intIn(obj.baud, 1, MAX_BAUD, 'baud', `${path}.baud`, p);
  out.echoBytes = intIn(obj['echo-bytes'], 1, ECHO_BYTES_MAX, 'bytes', `${path}.echo-bytes`, p);
  const echo = obj.echo;
  if (echo !== undefined) {
    if (!isMap(echo)) p.push(`${path}.echo: expected a mapping with tcp, udp, tls (HOST:PORT), tls-ca (PEM file), dns (host name), got ${shown(echo)}`);
    else {
      unknownKeys(echo, ['tcp', 'udp', 'tls', 'tls-ca', 'dns'], `${path}.echo`, p);
      for (const k of ['tcp', 'udp', 'tls'] as const) {
        const e = endpoint(echo[k], `${path}.echo.${k}`, p);
        if (e) out.echo[k] = e;
      }
      const ca = echo['tls-ca'];
      if (ca !== undefined) {
        if (typeof ca !== 'string' || ca.trim() === '') p.push(`${path}.echo.tls-ca: expected the path of a PEM file (relative to the bench file), got ${shown(ca)}`);
        else out.echo.tlsCa = isAbsolute(ca) ? ca : resolve(baseDir, ca);
      }
      const dns = echo.dns;
      if (dns !== undefined) {
        if (typeof dns !== 'string' || !/^[^\s:/]+$/.test(dns)) p.push(`${path}.echo.dns: expected a host name such as echo.example.net, got ${shown(dns)}`);
        else out.echo.dns = dns;
      }
    }
  }
  const t = obj.timeouts;
  if (t !== undefined) {
    if (!isMap(t)) p.push(`${path}.timeouts: expected a mapping with handshake, call, check (ms), got ${shown(t)}`);
    else {
      unknownKeys(t, ['handshake', 'call', 'check'], `${path}.timeouts`, p);
      for (const k of ['handshake', 'call', 'check'] as const) {
        const ms = intIn(t[k], 1, MAX_TIMER_MS, 'milliseconds', `${path}.timeouts.${k}`, p);
        if (ms !== undefined) out.timeouts[k] = ms;
      }
    }
  }
  return out;
}

const MODULE_FIELDS = ['family', 'port', 'baud', 'echo', 'timeouts', 'echo-bytes'] as const;
const DEFAULT_FIELDS = ['baud', 'echo', 'timeouts', 'echo-bytes'] as const;

/**
 * Validate a parsed bench document (the value of a YAML/JSON file).
 *
 * @param doc The parsed value.
 * @param file Names the file in error messages (and is {@link Bench.file}).
 * @param baseDir Directory `tls-ca` paths are relative to. Default: the directory of `file`.
 * @throws InvalidArgumentError listing every problem, one per line, each as
 *   `FILE: PATH: what is expected, got VALUE` (context `{ file, problems }`).
 */
export function validateBench(doc: unknown, file: string, baseDir?: string): Bench {
  if (typeof file !== 'string' || file === '') throw new InvalidArgumentError('validateBench: file must name the bench file (for messages), e.g. "bench.yaml"');
  baseDir ??= dirname(resolve(file));
  const p: Problems = [];
  const modules: BenchModule[] = [];
  if (!isMap(doc)) p.push(`expected a mapping with a "modules" field, got ${shown(doc)}`);
  else {
    unknownKeys(doc, ['version', 'defaults', 'modules'], '', p);
    if (doc.version !== undefined && doc.version !== 1) p.push(`version: expected 1, got ${shown(doc.version)}`);
    let defaults: Common = { echo: {}, timeouts: {} };
    if (doc.defaults !== undefined) {
      if (!isMap(doc.defaults)) p.push(`defaults: expected a mapping with ${DEFAULT_FIELDS.join(', ')}, got ${shown(doc.defaults)}`);
      else {
        unknownKeys(doc.defaults, DEFAULT_FIELDS, 'defaults', p);
        defaults = common(doc.defaults, 'defaults', baseDir, p);
      }
    }
    const mods = doc.modules;
    if (!isMap(mods) || Object.keys(mods).length === 0) p.push(`modules: expected a mapping of module names to modules (at least one), got ${shown(mods)}`);
    else {
      const byPort = new Map<string, string>();
      for (const [name, m] of Object.entries(mods)) {
        const path = `modules.${name}`;
        if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) p.push(`${path}: a module name is 1..64 letters, digits, ".", "_" or "-", starting with a letter or digit`);
        if (!isMap(m)) {
          p.push(`${path}: expected a mapping with port (required), family, baud, echo, timeouts, echo-bytes, got ${shown(m)}`);
          continue;
        }
        unknownKeys(m, MODULE_FIELDS, path, p);
        if (m.port === undefined) p.push(`${path}.port: required; expected a port string (/dev/ttyUSB0, serial:SERIALNO, tcp://HOST:PORT, rfc2217://HOST:PORT, sim:luat)`);
        const port = m.port === undefined ? undefined : checkPort(m.port, `${path}.port`, p);
        const implied = port !== undefined ? simFamily(port) : undefined;
        if (port !== undefined && implied === undefined) {
          // Two modules on one real port would fight over the UART (each sim: port is its own module).
          const other = byPort.get(port);
          if (other !== undefined) p.push(`${path}.port: ${port} is also the port of modules.${other}; expected one module per port`);
          else byPort.set(port, name);
        }
        let family: ModuleFamily | undefined;
        if (m.family !== undefined) {
          if (typeof m.family !== 'string' || !(BENCH_FAMILIES as readonly string[]).includes(m.family)) p.push(`${path}.family: expected one of ${BENCH_FAMILIES.join(', ')}, got ${shown(m.family)}`);
          else if (implied !== undefined && implied !== m.family) p.push(`${path}.family: the port ${port} is a simulated ${implied} module, but family says ${m.family}`);
          else family = m.family as ModuleFamily;
        } else if (implied !== undefined) family = implied as ModuleFamily;
        else if (port !== undefined) p.push(`${path}.family: required for a port that is not sim:...; expected one of ${BENCH_FAMILIES.join(', ')}`);
        const c = common(m, path, baseDir, p);
        if (port === undefined || family === undefined) continue;
        const mod: BenchModule = {
          name,
          family,
          port,
          echo: { ...defaults.echo, ...c.echo },
          timeouts: { ...defaults.timeouts, ...c.timeouts },
        };
        const baud = c.baud ?? defaults.baud;
        if (baud !== undefined) mod.baud = baud;
        const eb = c.echoBytes ?? defaults.echoBytes;
        if (eb !== undefined) mod.echoBytes = eb;
        modules.push(mod);
      }
    }
  }
  if (p.length) {
    throw new InvalidArgumentError(`bench file ${file} is not valid:\n${p.map((x) => `  ${file}: ${x}`).join('\n')}`, { file, problems: p });
  }
  return { file, modules };
}

/**
 * Parse and validate bench file text (YAML 1.2, which includes JSON).
 * @param text The file's content.
 * @param file Names the file in messages. @param baseDir As in {@link validateBench}.
 * @throws InvalidArgumentError for a syntax error (with line and column) or an invalid bench.
 */
export function parseBench(text: string, file: string, baseDir?: string): Bench {
  if (typeof file !== 'string' || file === '') throw new InvalidArgumentError('parseBench: file must name the bench file (for messages), e.g. "bench.yaml"');
  if (typeof text !== 'string') throw new InvalidArgumentError(`bench file ${file}: expected its text as a string, got ${shown(text)}`, { file });
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const at = e.linePos?.[0] ? `${e.linePos[0].line}:${e.linePos[0].col}: ` : '';
    throw new InvalidArgumentError(`bench file ${file}: ${at}${e.message.split('\n')[0]}`, { file });
  }
  let value: unknown;
  try {
    // alias expansion is bounded: a "billion laughs" file is refused, not expanded
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new InvalidArgumentError(`bench file ${file}: ${(e as Error).message}`, { file });
  }
  return validateBench(value, file, baseDir);
}

/**
 * Read, parse and validate a bench file.
 * @param file Path of the YAML or JSON file.
 * @throws InvalidArgumentError when it cannot be read, does not parse, or is not a valid bench.
 */
export function loadBench(file: string): Bench {
  if (typeof file !== 'string' || file === '') throw new InvalidArgumentError('bench file: expected a file path');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new InvalidArgumentError(`bench file ${file}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file });
  }
  return parseBench(text, file);
}

/**
 * The modules named `names` (all of them when `names` is empty), in the order given.
 * @throws InvalidArgumentError for a name the bench does not have (listing the ones it has) or a name given twice.
 */
export function selectModules(bench: Bench, names: readonly string[]): BenchModule[] {
  if (!bench || !Array.isArray(bench.modules)) throw new InvalidArgumentError('selectModules: expected a bench from loadBench or parseBench');
  if (!Array.isArray(names) || names.some((n) => typeof n !== 'string')) throw new InvalidArgumentError('selectModules: names must be an array of module names');
  if (names.length === 0) return bench.modules;
  const seen = new Set<string>();
  return names.map((n) => {
    const m = bench.modules.find((x) => x.name === n);
    if (!m) throw new InvalidArgumentError(`bench file ${bench.file} has no module ${JSON.stringify(n)}; it has ${bench.modules.map((x) => x.name).join(', ')}`, { file: bench.file, name: n });
    if (seen.has(n)) throw new InvalidArgumentError(`module ${JSON.stringify(n)} is named twice`, { file: bench.file, name: n });
    seen.add(n);
    return m;
  });
}

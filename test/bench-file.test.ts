/**
 * Bench files (src/bench/bench-file.ts, docs/bench.md): parsing, defaults, validation
 * errors that name the file, the field's path and what is expected; module selection; the
 * HIL environment (src/bench/hil-env.ts); and the bench entries printed in docs/bench.md and
 * docs/labgrid.md parse and validate.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadBench, parseBench, selectModules, validateBench } from '../src/bench/bench-file.js';
import { hilTargets, missingEcho } from '../src/bench/hil-env.js';
import { isTetherError } from '../src/errors.js';
import { repoRoot } from '../src/util/repo-root.js';

/** The problems an invalid bench reports (asserting it is an INVALID_ARGUMENT naming the file). */
function problems(fn: () => unknown, file: string): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(isTetherError(e, 'INVALID_ARGUMENT'), String(e));
    for (const line of e.message.split('\n').slice(1)) assert.ok(line.startsWith(`  ${file}: `), line);
    return (e.context?.problems as string[]) ?? [e.message];
  }
  assert.fail('expected the bench to be rejected');
}

/** The fenced ```yaml blocks of a doc whose first line is `# NAME`. */
function docBlock(doc: string, name: string): string {
  const text = readFileSync(join(repoRoot(), 'docs', doc), 'utf8');
  const blocks = [...text.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
  const b = blocks.find((x) => x.startsWith(`# ${name}\n`));
  assert.ok(b, `docs/${doc} has a yaml block starting "# ${name}"`);
  return b;
}

test('a full bench parses: families, ports, baud, echo endpoints, timeouts, defaults merged field by field', () => {
  const b = parseBench(
    `
version: 1
defaults:
  baud: 921600
  echo: { tcp: "echo.example.net:7", udp: "[::1]:7", tls-ca: certs/ca.pem }
  timeouts: { handshake: 12000, check: 20000 }
modules:
  air780e:
    family: luatos
    port: serial:A50285BI
  air724ug:
    family: luat
    port: /dev/ttyUSB1@115200
    baud: 115200
    echo: { tcp: "127.0.0.1:7000", tls: "localhost:7443", dns: echo.example.net }
    timeouts: { call: 3000 }
    echo-bytes: 4096
  esp:
    port: "sim:nodemcu"
`,
    '/benches/rack.yaml',
  );
  assert.equal(b.file, '/benches/rack.yaml');
  assert.deepEqual(b.modules.map((m) => [m.name, m.family, m.port, m.baud]), [
    ['air780e', 'luatos', 'serial:A50285BI', 921600],
    ['air724ug', 'luat', '/dev/ttyUSB1@115200', 115200],
    ['esp', 'nodemcu', 'sim:nodemcu', 921600],
  ]);
  assert.deepEqual(b.modules[0].echo, { tcp: { host: 'echo.example.net', port: 7 }, udp: { host: '::1', port: 7 }, tlsCa: '/benches/certs/ca.pem' });
  assert.deepEqual(b.modules[1].echo, { tcp: { host: '127.0.0.1', port: 7000 }, udp: { host: '::1', port: 7 }, tls: { host: 'localhost', port: 7443 }, tlsCa: '/benches/certs/ca.pem', dns: 'echo.example.net' });
  assert.deepEqual(b.modules[1].timeouts, { handshake: 12000, check: 20000, call: 3000 });
  assert.equal(b.modules[1].echoBytes, 4096);
  assert.equal(b.modules[0].echoBytes, undefined);
});

test('JSON is a bench file too', () => {
  const b = parseBench(JSON.stringify({ modules: { a: { port: 'tcp://127.0.0.1:7000', family: 'nodemcu' }, b: { port: 'sim' } } }), 'bench.json');
  assert.deepEqual(b.modules.map((m) => `${m.name}=${m.family}@${m.port}`), ['a=nodemcu@tcp://127.0.0.1:7000', 'b=luatos@sim']);
});

test('every problem is reported with the file, the path of the bad field and what is expected', () => {
  const p = problems(
    () =>
      parseBench(
        `
modules:
  a:
    port: /dev/ttyUSB0
    baud: fast
    echo: { tcp: host, udp: 7, tls: "h:70000", tls-ca: "", dns: "a b", ssh: x }
    timeouts: { handshake: -1, foo: 2, check: 1.5 }
    echo-bytes: 70000
  b:
    port: "sim:bogus"
  c:
    port: "sim:luat"
    family: nodemcu
  d:
    family: esp32
    port: tcp://host
  e: just a string
  f: { family: luat }
  "bad name": { port: sim }
  g: { port: /dev/ttyUSB0, family: luat }
  h: { port: sim, colour: blue }
extra: 1
`,
        'rack.yaml',
      ),
    'rack.yaml',
  );
  const expected = [
    'extra: unknown field; expected one of version, defaults, modules',
    'modules.a.family: required for a port that is not sim:...; expected one of luatos, luat, nodemcu',
    'modules.a.baud: expected an integer 1..20000000 (baud), got "fast"',
    'modules.a.echo-bytes: expected an integer 1..65536 (bytes), got 70000',
    'modules.a.echo.ssh: unknown field; expected one of tcp, udp, tls, tls-ca, dns',
    'modules.a.echo.tcp: expected HOST:PORT (port 1..65535, IPv6 as [addr]:port), got "host"',
    'modules.a.echo.udp: expected HOST:PORT (port 1..65535, IPv6 as [addr]:port), got 7',
    'modules.a.echo.tls: expected HOST:PORT (port 1..65535, IPv6 as [addr]:port), got "h:70000"',
    'modules.a.echo.tls-ca: expected the path of a PEM file (relative to the bench file), got ""',
    'modules.a.echo.dns: expected a host name such as echo.example.net, got "a b"',
    'modules.a.timeouts.foo: unknown field; expected one of handshake, call, check',
    'modules.a.timeouts.handshake: expected an integer 1..2147483647 (milliseconds), got -1',
    'modules.a.timeouts.check: expected an integer 1..2147483647 (milliseconds), got 1.5',
    'modules.b.port: no simulator for family "bogus"; expected sim, sim:luatos, sim:luat or sim:nodemcu',
    'modules.c.family: the port sim:luat is a simulated luat module, but family says nodemcu',
    'modules.e: expected a mapping with port (required), family, baud, echo, timeouts, echo-bytes, got "just a string"',
    'modules.f.port: required; expected a port string (/dev/ttyUSB0, serial:SERIALNO, tcp://HOST:PORT, rfc2217://HOST:PORT, sim:luat)',
    'modules.bad name: a module name is 1..64 letters, digits, ".", "_" or "-", starting with a letter or digit',
    'modules.h.colour: unknown field; expected one of family, port, baud, echo, timeouts, echo-bytes',
    'modules.g.port: /dev/ttyUSB0 is also the port of modules.a; expected one module per port',
  ];
  for (const x of expected) assert.ok(p.includes(x), `missing: ${x}\ngot:\n${p.join('\n')}`);
  // d: the family and the port are both wrong; the port's message comes from the port parser
  assert.ok(p.includes('modules.d.family: expected one of luatos, luat, nodemcu, got "esp32"'), p.join('\n'));
  assert.ok(p.some((x) => /^modules\.d\.port: unsupported port "tcp:\/\/host": the TCP port is missing/.test(x)), p.join('\n'));
  assert.equal(p.length, expected.length + 2, p.join('\n'));
});

test('the shape of the document, YAML syntax errors and duplicate fields are named with their place', () => {
  assert.deepEqual(problems(() => parseBench('', 'empty.yaml'), 'empty.yaml'), ['expected a mapping with a "modules" field, got null']);
  assert.deepEqual(problems(() => parseBench('- a\n- b\n', 'list.yaml'), 'list.yaml'), ['expected a mapping with a "modules" field, got a list']);
  assert.deepEqual(problems(() => parseBench('modules: {}\n', 'none.yaml'), 'none.yaml'), ['modules: expected a mapping of module names to modules (at least one), got a mapping']);
  assert.deepEqual(problems(() => parseBench('version: 2\nmodules: { a: { port: sim } }\n', 'v.yaml'), 'v.yaml'), ['version: expected 1, got 2']);
  assert.throws(() => parseBench('modules:\n  a: { port: sim\n', 'syntax.yaml'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT') && /^bench file syntax\.yaml: \d+:\d+: /.test((e as Error).message));
  assert.throws(() => parseBench('modules:\n  a: { port: sim }\n  a: { port: sim:luat }\n', 'dup.yaml'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT') && /^bench file dup\.yaml: 3:3: .*unique/i.test((e as Error).message));
});

test('bad input to the API is an INVALID_ARGUMENT, never a crash (non-strings, alias bombs)', () => {
  const invalid = (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT');
  assert.throws(() => parseBench(undefined as unknown as string, 'x.yaml'), invalid);
  assert.throws(() => parseBench('modules: {}', '' as string), invalid);
  assert.throws(() => validateBench({ modules: { a: { port: 'sim' } } }, undefined as unknown as string), invalid);
  assert.throws(() => loadBench(42 as unknown as string), invalid);
  const b = parseBench('modules: { a: { port: sim } }', 'x.yaml');
  assert.throws(() => selectModules(b, 'a' as unknown as string[]), invalid);
  assert.throws(() => selectModules(b, [1] as unknown as string[]), invalid);
  assert.throws(() => selectModules(null as never, []), invalid);
  // a "billion laughs" document: refused, not expanded
  const lol = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(', ')}]`), 'modules: { m: { port: sim } }'].join('\n');
  assert.throws(() => parseBench(lol, 'lol.yaml'), (e: unknown) => invalid(e) && /lol\.yaml: .*alias/i.test((e as Error).message));
});

test('loadBench reads a file (tls-ca relative to it); a missing file is an INVALID_ARGUMENT naming it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-'));
  const file = join(dir, 'bench.yaml');
  writeFileSync(file, 'modules:\n  m1: { port: sim, echo: { tls-ca: ca.pem } }\n');
  const b = loadBench(file);
  assert.equal(b.modules[0].echo.tlsCa, join(dir, 'ca.pem'));
  assert.throws(() => loadBench(join(dir, 'nope.yaml')), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT') && /bench file .*nope\.yaml: cannot read it: ENOENT/.test((e as Error).message));
});

test('selectModules picks by name in the order given; unknown or repeated names are errors listing the names', () => {
  const b = validateBench({ modules: { a: { port: 'sim' }, b: { port: 'sim:luat' }, c: { port: 'sim:nodemcu' } } }, 'x.yaml');
  assert.deepEqual(selectModules(b, []).map((m) => m.name), ['a', 'b', 'c']);
  assert.deepEqual(selectModules(b, ['c', 'a']).map((m) => m.name), ['c', 'a']);
  assert.throws(() => selectModules(b, ['z']), /bench file x\.yaml has no module "z"; it has a, b, c/);
  assert.throws(() => selectModules(b, ['a', 'a']), /module "a" is named twice/);
});

test('the HIL suite: TETHER_TEST_PORT (+ TETHER_TEST_FAMILY) or TETHER_TEST_BENCH, with errors naming the variables', () => {
  assert.throws(() => hilTargets({}), /TETHER_TEST_PORT is not set/);
  const [sim] = hilTargets({ TETHER_TEST_PORT: 'sim:luat' });
  assert.deepEqual([sim.family, sim.port, sim.echo], ['luat', 'sim:luat', {}]);
  const [real] = hilTargets({ TETHER_TEST_PORT: '/dev/ttyUSB0', TETHER_TEST_FAMILY: 'nodemcu', TETHER_BAUD: '921600', TETHER_ECHO_TCP: '10.0.0.1:7', TETHER_ECHO_UDP: '10.0.0.1:7' });
  assert.deepEqual([real.family, real.baud, real.echo.tcp, real.echo.udp], ['nodemcu', 921600, { host: '10.0.0.1', port: 7 }, { host: '10.0.0.1', port: 7 }]);
  assert.deepEqual(missingEcho(real), []);
  assert.deepEqual(missingEcho({ ...real, family: 'luatos' }), ['tls']);
  assert.throws(() => hilTargets({ TETHER_TEST_PORT: '/dev/ttyUSB0' }), /TETHER_TEST_FAMILY: required for a port that is not sim:\.\.\.; set it to luatos, luat, nodemcu/);
  assert.throws(() => hilTargets({ TETHER_TEST_PORT: 'sim:luat', TETHER_TEST_FAMILY: 'nodemcu' }), /TETHER_TEST_FAMILY: the port sim:luat is a simulated luat module, but family says nodemcu/);
  assert.throws(() => hilTargets({ TETHER_TEST_PORT: 'sim', TETHER_BAUD: 'fast', TETHER_ECHO_UDP: 'nope' }), (e: unknown) => /TETHER_BAUD: expected an integer/.test((e as Error).message) && /TETHER_ECHO_UDP: expected HOST:PORT/.test((e as Error).message));
  assert.throws(() => hilTargets({ TETHER_TEST_PORT: 'sim', TETHER_TEST_BENCH: 'b.yaml' }), /not both/);
  assert.throws(() => hilTargets({ TETHER_TEST_MODULES: 'a' }), /set TETHER_TEST_BENCH too/);
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-'));
  const file = join(dir, 'b.yaml');
  writeFileSync(file, 'modules:\n  x: { port: sim }\n  y: { port: "sim:nodemcu" }\n');
  assert.deepEqual(hilTargets({ TETHER_TEST_BENCH: file }).map((m) => m.name), ['x', 'y']);
  assert.deepEqual(hilTargets({ TETHER_TEST_BENCH: file, TETHER_TEST_MODULES: 'y' }).map((m) => `${m.name}:${m.family}`), ['y:nodemcu']);
});

test('the bench entries in docs/bench.md and docs/labgrid.md parse and validate', () => {
  const rack = parseBench(docBlock('labgrid.md', 'bench-rack1.yaml'), 'docs/labgrid.md');
  assert.equal(rack.modules.length, 1);
  const m = rack.modules[0];
  assert.deepEqual([m.name, m.family, m.port, m.baud], ['air780e', 'luatos', 'rfc2217://rack1.lab:3001', 115200]);
  assert.deepEqual(missingEcho(m), [], 'the labgrid entry gives every echo server its family needs');
  // the bench entry points at the port the exporter publishes
  const exporter = parseYaml(docBlock('labgrid.md', 'exporter.yaml').replace(/^# .*\n/, '')) as Record<string, { NetworkSerialPort: { host: string; port: number; protocol: string } }>;
  const nsp = Object.values(exporter)[0].NetworkSerialPort;
  assert.equal(`rfc2217://${nsp.host}:${nsp.port}`, m.port);
  assert.equal(nsp.protocol, 'rfc2217');
  const simText = docBlock('bench.md', 'fixtures/bench/sim.yaml');
  assert.equal(readFileSync(join(repoRoot(), 'fixtures', 'bench', 'sim.yaml'), 'utf8'), simText, 'the example is the fixture file');
  const sim = parseBench(simText, 'docs/bench.md');
  assert.deepEqual(sim.modules.map((x) => x.family), ['luatos', 'luat', 'nodemcu']);
  const real = parseBench(docBlock('bench.md', 'bench.yaml'), 'docs/bench.md');
  assert.deepEqual(real.modules.map((x) => `${x.name}:${x.family}:${x.port}`), ['air780e:luatos:serial:A50285BI', 'air724ug:luat:/dev/serial/by-id/usb-1782_4e00-if02', 'esp8266:nodemcu:rfc2217://rack1.lab:3003']);
});
// The TypeScript example of docs/bench.md runs (and prints what it says) in test/docs.test.ts.

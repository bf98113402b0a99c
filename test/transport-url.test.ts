import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError, isTetherError } from '../src/errors.js';
import { openTransport, parsePortUrl, type PortUrl } from '../src/transport/index.js';

const accepted: Array<[string, PortUrl]> = [
  ['/dev/ttyUSB0', { kind: 'serial', path: '/dev/ttyUSB0' }],
  ['/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0', { kind: 'serial', path: '/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0' }],
  ['/dev/ttyUSB0@921600', { kind: 'serial', path: '/dev/ttyUSB0', baudRate: 921600 }],
  ['/dev/cu.usbserial-1410@115200', { kind: 'serial', path: '/dev/cu.usbserial-1410', baudRate: 115200 }],
  ['COM3', { kind: 'serial', path: 'COM3' }],
  ['com12', { kind: 'serial', path: 'com12' }],
  ['COM3@921600', { kind: 'serial', path: 'COM3', baudRate: 921600 }],
  ['\\\\.\\COM12', { kind: 'serial', path: '\\\\.\\COM12' }],
  ['serial:///dev/ttyUSB0', { kind: 'serial', path: '/dev/ttyUSB0' }],
  ['serial:///dev/ttyUSB0?baud=921600', { kind: 'serial', path: '/dev/ttyUSB0', baudRate: 921600 }],
  ['SERIAL:///dev/ttyACM1?baud=9600', { kind: 'serial', path: '/dev/ttyACM1', baudRate: 9600 }],
  ['serial://COM4?baud=460800', { kind: 'serial', path: 'COM4', baudRate: 460800 }],
  ['serial:///dev/ttyACM0?usb=on', { kind: 'serial', path: '/dev/ttyACM0', usb: true }],
  ['serial:///dev/ttyACM0?baud=921600&usb=off', { kind: 'serial', path: '/dev/ttyACM0', baudRate: 921600, usb: false }],
  ['tcp://127.0.0.1:7000', { kind: 'tcp', host: '127.0.0.1', port: 7000 }],
  ['tcp://127.0.0.1:7000/', { kind: 'tcp', host: '127.0.0.1', port: 7000 }],
  ['tcp://modem-bench.local:65535', { kind: 'tcp', host: 'modem-bench.local', port: 65535 }],
  ['tcp://[::1]:7000', { kind: 'tcp', host: '::1', port: 7000 }],
  ['tcp://[fe80::1:2]:1', { kind: 'tcp', host: 'fe80::1:2', port: 1 }],
  ['TCP://localhost:2000', { kind: 'tcp', host: 'localhost', port: 2000 }],
];

for (const [url, expected] of accepted) {
  test(`parsePortUrl accepts ${url}`, () => {
    assert.deepEqual(parsePortUrl(url), expected);
  });
}

const rejected: Array<[string, RegExp]> = [
  ['', /empty/],
  [' /dev/ttyUSB0', /whitespace/],
  ['sim:luatos', /sim: ports are opened by the API layer/],
  ['sim://air780e', /sim:/],
  ['ttyUSB0', /absolute path or a COM port/],
  ['./pty-link', /absolute path or a COM port/],
  ['C:\\dev\\tty', /absolute path or a COM port/],
  ['COM0', /absolute path or a COM port/],
  ['/dev/', /directory/],
  ['/dev/ttyUSB0@', /missing baud rate/],
  ['/dev/ttyUSB0@0', /outside 1\.\./],
  ['/dev/ttyUSB0@99999999', /outside 1\.\./],
  ['serial:///dev/ttyUSB0?baud=fast', /not a positive integer/],
  ['serial:///dev/ttyUSB0?speed=9600', /unknown query parameter/],
  ['serial:///dev/ttyUSB0?baud=9600&baud=115200', /baud given twice/],
  ['serial:///dev/ttyACM0?usb=yes', /usb must be on or off/],
  ['serial:///dev/ttyACM0?usb=on&usb=off', /usb given twice/],
  ['serial:///dev/ttyUSB0@9600', /\?baud=N/],
  ['serial://ttyUSB0', /absolute path or a COM port/],
  ['tcp://127.0.0.1', /port is missing/],
  ['tcp://127.0.0.1:', /port is missing/],
  ['tcp://127.0.0.1:0', /outside 1\.\.65535/],
  ['tcp://127.0.0.1:65536', /outside 1\.\.65535/],
  ['tcp://127.0.0.1:123456', /outside 1\.\.65535/],
  ['tcp://127.0.0.1:70x', /nothing after the port/],
  ['tcp://127.0.0.1:7000/path', /nothing after the port/],
  ['tcp://user@127.0.0.1:7000', /nothing after the port/],
  ['tcp://::1:7000', /nothing after the port/],
  ['tcp://[localhost]:7000', /nothing after the port|not an IPv6/],
  ['tcp://:7000', /nothing after the port/],
  ['telnet://host:7000', /unknown scheme "telnet:"/],
  ['http://127.0.0.1:7000', /unknown scheme/],
];

for (const [url, why] of rejected) {
  test(`parsePortUrl rejects ${JSON.stringify(url)}`, () => {
    assert.throws(
      () => parsePortUrl(url),
      (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${String(e)}`);
        assert.equal(e.code, 'INVALID_ARGUMENT');
        assert.match(e.message, why);
        // Every rejection explains the accepted forms.
        assert.match(e.message, /accepted forms: .*tcp:\/\/127\.0\.0\.1:7000/);
        return true;
      },
    );
  });
}

test('parsePortUrl rejects non-strings with a typed error', () => {
  for (const bad of [undefined, null, 7000, {}]) {
    assert.throws(() => parsePortUrl(bad as unknown as string), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  }
});

test('openTransport rejects a bad URL before opening anything', async () => {
  await assert.rejects(openTransport('tcp://127.0.0.1:0'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(openTransport('sim:luatos'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
});

test('openTransport reports a missing serial device as TRANSPORT naming the path', async () => {
  await assert.rejects(openTransport('/dev/tether-test-does-not-exist@9600'), (e: unknown) => {
    assert.ok(isTetherError(e, 'TRANSPORT'));
    assert.match(e.message, /\/dev\/tether-test-does-not-exist/);
    assert.match(e.message, /9600 baud/);
    assert.match(e.message, /no such device/);
    return true;
  });
});

test('openTransport validates the serial baud option', async () => {
  await assert.rejects(openTransport('/dev/ttyUSB0', { baudRate: 1.5 }), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
});

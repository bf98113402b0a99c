/**
 * `serial:SERIALNO` ports (resolved to the device with that USB serial number, with injected
 * port lists) and the serial-number column of `tether ports`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describePort, type PortInfo } from '../src/transport/ports.js';
import { findBySerialNumber, isSerialNumberPort, parseSerialNumberPort, resolveSerialNumberPort } from '../src/transport/serial-number.js';
import { openTransport, parsePortUrl } from '../src/transport/index.js';
import { connect } from '../src/api/connect.js';
import { formatPorts } from '../src/cli/commands/ports-format.js';
import { isTetherError } from '../src/errors.js';

const PLUGGED: PortInfo[] = [
  describePort({ path: '/dev/ttyACM0', vendorId: '19d1', productId: '0001', serialNumber: 'AIR780E-0001' }),
  describePort({ path: '/dev/ttyUSB0', vendorId: '0403', productId: '6001', manufacturer: 'FTDI', serialNumber: 'A50285BI' }),
  describePort({ path: '/dev/ttyUSB1', vendorId: '1a86', productId: '7523' }),
  describePort({ path: '/dev/ttyUSB2', vendorId: '10c4', productId: 'ea60', serialNumber: '0001' }),
  describePort({ path: '/dev/ttyUSB3', vendorId: '10c4', productId: 'ea60', serialNumber: '0001' }),
];
const list = (ports: PortInfo[]) => async () => ports;

test('serial:SERIALNO is told apart from serial:///dev/... and parsed with an optional ?baud=N', () => {
  assert.equal(isSerialNumberPort('serial:A50285BI'), true);
  assert.equal(isSerialNumberPort('SERIAL:A50285BI'), true);
  assert.equal(isSerialNumberPort('serial:///dev/ttyUSB0'), false);
  assert.equal(isSerialNumberPort('/dev/ttyUSB0'), false);
  assert.equal(isSerialNumberPort(42), false);
  assert.deepEqual(parseSerialNumberPort('serial:A50285BI'), { serialNumber: 'A50285BI' });
  assert.deepEqual(parseSerialNumberPort('serial:A50285BI?baud=921600'), { serialNumber: 'A50285BI', baudRate: 921600 });
  assert.deepEqual(parseSerialNumberPort('serial:A50285BI?usb=on&baud=921600'), { serialNumber: 'A50285BI', baudRate: 921600, usb: true });
  for (const bad of ['serial:', 'serial:has space', 'serial:a/b', 'serial:a@115200', 'serial:A?speed=9600', 'serial:A?baud=0', 'serial:A?baud=30000000', `serial:${'x'.repeat(127)}`, 'serial:A?usb=maybe', 'serial:A?usb=on&usb=off', 'serial:A?baud=9600&baud=9600']) {
    assert.throws(() => parseSerialNumberPort(bad), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT') && /serial:|baud=N/.test((e as Error).message), bad);
  }
});

test('the one port with that serial number is found; case is ignored only when nothing matches exactly', () => {
  assert.equal(findBySerialNumber('A50285BI', PLUGGED), '/dev/ttyUSB0');
  assert.equal(findBySerialNumber('a50285bi', PLUGGED), '/dev/ttyUSB0');
  assert.equal(findBySerialNumber('AIR780E-0001', PLUGGED), '/dev/ttyACM0');
  const exactWins = [describePort({ path: '/dev/a', serialNumber: 'abc' }), describePort({ path: '/dev/b', serialNumber: 'ABC' })];
  assert.equal(findBySerialNumber('ABC', exactWins), '/dev/b');
});

test('no match and several matches are TRANSPORT errors that list what is plugged in', () => {
  assert.throws(
    () => findBySerialNumber('NOPE', PLUGGED),
    (e: unknown) => {
      assert.ok(isTetherError(e, 'TRANSPORT'));
      assert.equal(e.context?.reason, 'NO_MATCH');
      assert.match(e.message, /no serial port has USB serial number "NOPE"/);
      assert.match(e.message, /\/dev\/ttyUSB0 \(serial A50285BI, 0403:6001 FT232R\)/);
      assert.match(e.message, /\/dev\/ttyUSB1 \(no serial number, 1a86:7523 CH340\)/);
      return true;
    },
  );
  assert.throws(
    () => findBySerialNumber('0001', PLUGGED),
    (e: unknown) => {
      assert.ok(isTetherError(e, 'TRANSPORT'));
      assert.equal(e.context?.reason, 'AMBIGUOUS');
      assert.deepEqual(e.context?.paths, ['/dev/ttyUSB2', '/dev/ttyUSB3']);
      assert.match(e.message, /2 serial ports have USB serial number "0001" \(\/dev\/ttyUSB2, \/dev\/ttyUSB3\): name the device path instead/);
      return true;
    },
  );
  assert.throws(() => findBySerialNumber('X', []), /no serial ports are plugged in/);
  assert.throws(() => findBySerialNumber('', PLUGGED), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  assert.throws(() => findBySerialNumber('X', null as never), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
});

test('resolveSerialNumberPort gives a port string parsePortUrl accepts; other ports pass unchanged', async () => {
  assert.equal(await resolveSerialNumberPort('serial:A50285BI', list(PLUGGED)), '/dev/ttyUSB0');
  const withBaud = await resolveSerialNumberPort('serial:A50285BI?baud=921600', list(PLUGGED));
  assert.equal(withBaud, '/dev/ttyUSB0@921600');
  assert.deepEqual(parsePortUrl(withBaud), { kind: 'serial', path: '/dev/ttyUSB0', baudRate: 921600 });
  const win = [describePort({ path: 'COM7', serialNumber: 'W1' })];
  assert.deepEqual(parsePortUrl(await resolveSerialNumberPort('serial:W1?baud=57600', list(win))), { kind: 'serial', path: 'COM7', baudRate: 57600 });
  // ?usb=on|off is carried over (the port is, or is not, the module's own USB port: not paced)
  assert.deepEqual(parsePortUrl(await resolveSerialNumberPort('serial:A50285BI?usb=on', list(PLUGGED))), { kind: 'serial', path: '/dev/ttyUSB0', usb: true });
  assert.deepEqual(parsePortUrl(await resolveSerialNumberPort('serial:W1?baud=57600&usb=off', list(win))), { kind: 'serial', path: 'COM7', baudRate: 57600, usb: false });
  let listed = 0;
  const counting = async () => {
    listed++;
    return PLUGGED;
  };
  for (const other of ['/dev/ttyUSB1', 'serial:///dev/ttyUSB1?baud=9600', 'tcp://127.0.0.1:7000', 'sim']) assert.equal(await resolveSerialNumberPort(other, counting), other);
  await assert.rejects(resolveSerialNumberPort('serial:bad/one', counting), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
  assert.equal(listed, 0, 'nothing is listed for other ports or a malformed serial: port');
});

test('openTransport and connect resolve serial:SERIALNO on this machine: an unknown number is a TRANSPORT error', async () => {
  const sn = `TETHER-TEST-${process.pid}-${Date.now()}`;
  await assert.rejects(openTransport(`serial:${sn}`), (e: unknown) => isTetherError(e, 'TRANSPORT') && e.context?.reason === 'NO_MATCH' && e.message.includes(sn));
  await assert.rejects(connect(`serial:${sn}?baud=9600`), (e: unknown) => isTetherError(e, 'TRANSPORT') && e.context?.reason === 'NO_MATCH');
  await assert.rejects(openTransport('serial:two words'), (e: unknown) => isTetherError(e, 'INVALID_ARGUMENT'));
});

test('tether ports prints the serial number of each port, and how to use it', () => {
  const lines = formatPorts(PLUGGED);
  assert.match(lines[0], /^PORT\s+VID:PID\s+SERIAL\s+CHIP$/);
  assert.match(lines[1], /^\/dev\/ttyACM0\s+19d1:0001\s+AIR780E-0001\s+Air780E\/EC618 USB \(luatos\)$/);
  assert.match(lines[2], /^\/dev\/ttyUSB0\s+0403:6001\s+A50285BI\s+FT232R$/);
  assert.match(lines[3], /^\/dev\/ttyUSB1\s+1a86:7523\s+-\s+CH340 \(maybe nodemcu\)$/);
  assert.equal(lines.at(-1), 'name a port by its serial number to survive re-plugging: --port serial:AIR780E-0001');
  // columns line up: the serial column starts at the same offset on every row
  const col = lines[0].indexOf('SERIAL');
  assert.equal(lines[2].indexOf('A50285BI'), col);
  assert.equal(lines[1].indexOf('AIR780E-0001'), col);
  assert.deepEqual(formatPorts([]), []);
  assert.deepEqual(formatPorts([describePort({ path: '/dev/ttyS0' })]), ['PORT        VID:PID  SERIAL  CHIP', '/dev/ttyS0  -        -       -']);
});

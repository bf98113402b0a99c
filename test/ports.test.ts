import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { USB_SERIAL_CHIPS, describePort, isModuleUsbPort, listPorts, listPortsFromSysfs, type PortInfo } from '../src/transport/ports.js';

const tmp = mkdtempSync(join(tmpdir(), 'tether-sysfs-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function file(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text + '\n');
}

/**
 * A USB tty laid out like Linux sysfs: /sys/class/tty/<name> is a symlink to
 * devices/.../<usbdev>/<usbdev>:1.0/[<port>/]tty/<name>, whose `device` link points at the
 * interface (cdc-acm) or the usb-serial port dir; the USB device dir holds idVendor etc.
 */
function usbTty(root: string, name: string, usbDev: string, attrs: Record<string, string>, usbSerialPort?: string): void {
  const usbDir = join(root, 'devices/pci0000:00/0000:00:14.0/usb1', usbDev);
  for (const [k, v] of Object.entries(attrs)) file(join(usbDir, k), v);
  const ifDir = join(usbDir, `${usbDev}:1.0`);
  const parent = usbSerialPort ? join(ifDir, usbSerialPort) : ifDir;
  const ttyDir = join(parent, 'tty', name);
  mkdirSync(ttyDir, { recursive: true });
  file(join(ttyDir, 'dev'), '188:0');
  symlinkSync(usbSerialPort ? `../../../${usbSerialPort}` : '../../../' + `${usbDev}:1.0`, join(ttyDir, 'device'));
  mkdirSync(join(root, 'class/tty'), { recursive: true });
  symlinkSync(join('../../devices/pci0000:00/0000:00:14.0/usb1', usbDev, `${usbDev}:1.0`, ...(usbSerialPort ? [usbSerialPort] : []), 'tty', name), join(root, 'class/tty', name));
}

function buildFakeSysfs(): string {
  const root = join(tmp, 'sys');
  usbTty(root, 'ttyUSB0', '1-1', { idVendor: '1a86', idProduct: '7523', manufacturer: 'QinHeng Electronics' }, 'ttyUSB0');
  usbTty(root, 'ttyUSB1', '1-2', { idVendor: '10c4', idProduct: 'ea60', manufacturer: 'Silicon Labs', serial: '0001' }, 'ttyUSB1');
  usbTty(root, 'ttyUSB2', '1-3', { idVendor: '0403', idProduct: '6001', manufacturer: 'FTDI', serial: 'A50285BI' }, 'ttyUSB2');
  usbTty(root, 'ttyUSB10', '1-4', { idVendor: '1234', idProduct: '5678' }, 'ttyUSB10');
  usbTty(root, 'ttyACM0', '1-5', { idVendor: '19D1', idProduct: '0001', manufacturer: 'AirM2M', serial: 'ABC123' });
  usbTty(root, 'ttyACM1', '1-6', { idVendor: '1782', idProduct: '4e00', manufacturer: 'RDA' });
  usbTty(root, 'ttyACM2', '1-7', { idVendor: '303a', idProduct: '1001', manufacturer: 'Espressif', serial: '84:F7:03:12:34:56' });

  // Built-in UARTs: serial8250 slots; ttyS0 has a UART (type 4), ttyS1 has none (type 0).
  mkdirSync(join(root, 'devices/platform/serial8250/tty'), { recursive: true });
  for (const [name, type] of [['ttyS0', '4'], ['ttyS1', '0']] as const) {
    const d = join(root, 'devices/platform/serial8250/tty', name);
    file(join(d, 'type'), type);
    symlinkSync('../../../serial8250', join(d, 'device'));
    symlinkSync(join('../../devices/platform/serial8250/tty', name), join(root, 'class/tty', name));
  }
  // A virtual console (no device link) and a tty whose device link dangles.
  file(join(root, 'devices/virtual/tty/tty0/dev'), '4:0');
  symlinkSync('../../devices/virtual/tty/tty0', join(root, 'class/tty/tty0'));
  mkdirSync(join(root, 'devices/virtual/tty/ttyGONE'), { recursive: true });
  symlinkSync('../../nowhere', join(root, 'devices/virtual/tty/ttyGONE/device'));
  symlinkSync('../../devices/virtual/tty/ttyGONE', join(root, 'class/tty/ttyGONE'));
  // An idVendor file above the sysfs root must never be picked up for ttyS0.
  file(join(tmp, 'idVendor'), 'dead');
  return root;
}

test('listPortsFromSysfs reads a sysfs tree into PortInfo with chip names and family guesses', async () => {
  const root = buildFakeSysfs();
  const ports = await listPortsFromSysfs(root);
  const expected: PortInfo[] = [
    { path: '/dev/ttyACM0', vendorId: '19d1', productId: '0001', manufacturer: 'AirM2M', serialNumber: 'ABC123', chip: 'Air780E/EC618 USB', family: 'luatos' },
    { path: '/dev/ttyACM1', vendorId: '1782', productId: '4e00', manufacturer: 'RDA', chip: 'Air724UG/RDA8910 USB', family: 'luat' },
    {
      path: '/dev/ttyACM2',
      vendorId: '303a',
      productId: '1001',
      manufacturer: 'Espressif',
      serialNumber: '84:F7:03:12:34:56',
      chip: 'ESP32-C3/S3 USB-Serial-JTAG',
      family: 'luatos',
    },
    { path: '/dev/ttyS0' },
    { path: '/dev/ttyUSB0', vendorId: '1a86', productId: '7523', manufacturer: 'QinHeng Electronics', chip: 'CH340', familyHint: 'nodemcu' },
    { path: '/dev/ttyUSB1', vendorId: '10c4', productId: 'ea60', manufacturer: 'Silicon Labs', serialNumber: '0001', chip: 'CP210x', familyHint: 'nodemcu' },
    { path: '/dev/ttyUSB2', vendorId: '0403', productId: '6001', manufacturer: 'FTDI', serialNumber: 'A50285BI', chip: 'FT232R' },
    { path: '/dev/ttyUSB10', vendorId: '1234', productId: '5678' },
  ];
  assert.deepEqual(ports, expected);
});

test('listPortsFromSysfs returns [] for a root without class/tty', async () => {
  assert.deepEqual(await listPortsFromSysfs(join(tmp, 'no-such-sysfs')), []);
});

test('describePort normalizes ids and looks up every chip of the table', () => {
  assert.deepEqual(describePort({ path: 'COM3', vendorId: '0x1A86', productId: '55D4', manufacturer: '  ', serialNumber: '' }), {
    path: 'COM3',
    vendorId: '1a86',
    productId: '55d4',
    chip: 'CH9102',
  });
  assert.deepEqual(describePort({ path: '/dev/x', vendorId: 'zz', productId: '6001' }), { path: '/dev/x', productId: '6001' });
  for (const [key, info] of Object.entries(USB_SERIAL_CHIPS)) {
    const [vendorId, productId] = key.split(':');
    assert.match(key, /^[0-9a-f]{4}:[0-9a-f]{4}$/);
    const p = describePort({ path: '/dev/x', vendorId: vendorId.toUpperCase(), productId });
    assert.equal(p.chip, info.chip, key);
    assert.equal(p.family, info.family, key);
    assert.equal(p.familyHint, info.familyHint, key);
  }
  assert.deepEqual(
    ['0403:6010', '0403:6014', '0403:6015', '067b:2303'].map((k) => USB_SERIAL_CHIPS[k]?.chip),
    ['FT2232', 'FT232H', 'FT231X', 'PL2303'],
  );
});

test('listPorts works on this machine (falls back to sysfs when udevadm is missing)', async () => {
  const ports = await listPorts();
  assert.ok(Array.isArray(ports));
  for (const p of ports) assert.equal(typeof p.path, 'string');
  assert.equal(new Set(ports.map((p) => p.path)).size, ports.length, 'paths are unique');
  if (process.platform !== 'win32') for (const p of ports) assert.match(p.path, /^\/dev\//);
});

test("isModuleUsbPort: true only for a port whose USB id names the module itself, through symlinks; false when the list fails", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-usbport-'));
  try {
    const cdc = join(dir, 'ttyACM0');
    const bridge = join(dir, 'ttyUSB0');
    writeFileSync(cdc, '');
    writeFileSync(bridge, '');
    const byId = join(dir, 'usb-Air780E-if00');
    symlinkSync(cdc, byId);
    const list = async (): Promise<PortInfo[]> => [
      describePort({ path: cdc, vendorId: '19d1', productId: '0001' }),
      describePort({ path: bridge, vendorId: '1a86', productId: '7523' }),
    ];
    assert.equal(await isModuleUsbPort(cdc, list), true, 'the Air780E USB port');
    assert.equal(await isModuleUsbPort(byId, list), true, 'the same port by a /dev/serial/by-id style link');
    assert.equal(await isModuleUsbPort(bridge, list), false, 'a CH340 bridge is a UART with a baud');
    assert.equal(await isModuleUsbPort(join(dir, 'ttyS9'), list), false, 'a port not listed');
    assert.equal(await isModuleUsbPort(cdc, async () => Promise.reject(new Error('no udev'))), false, 'a list that fails');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

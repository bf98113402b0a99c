/**
 * Serial port discovery: which devices are plugged in, what USB-serial chip is behind
 * each, and a best guess of the module family (LuatOS, Luat, NodeMCU).
 */
import { readdir, readFile, realpath } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { SerialPort } from 'serialport';
import { TetherError } from '../errors.js';

/** Module firmware families tether knows. */
export type ModuleFamily = 'luatos' | 'luat' | 'nodemcu';

/**
 * One serial port found by {@link listPorts}.
 * `vendorId`/`productId` are 4-digit lowercase hex strings (`1a86`), as USB reports them.
 */
export interface PortInfo {
  /** Device path to open: `/dev/ttyUSB0`, `/dev/cu.usbserial-1410`, `COM3`. */
  path: string;
  /** USB vendor id, lowercase hex (`1a86`). Absent for non-USB ports. */
  vendorId?: string;
  /** USB product id, lowercase hex (`7523`). */
  productId?: string;
  /** USB manufacturer string (`QinHeng Electronics`, `Silicon Labs`). */
  manufacturer?: string;
  /** USB serial number string, when the device has one. */
  serialNumber?: string;
  /** Friendly chip or device name from {@link USB_SERIAL_CHIPS}, e.g. `CH340`, `Air780E/EC618 USB`. */
  chip?: string;
  /** Module family when the USB id identifies the module itself (not just a bridge chip). */
  family?: ModuleFamily;
  /** Weak family guess from a generic USB-serial bridge that dev boards commonly carry (CH340/CP210x → `nodemcu`). */
  familyHint?: ModuleFamily;
}

/** An entry of {@link USB_SERIAL_CHIPS}. */
export interface ChipInfo {
  /** Friendly name. */
  chip: string;
  /** Family implied by this USB id (the module's own USB interface). */
  family?: ModuleFamily;
  /** Weak family guess (a generic bridge chip used on dev boards). */
  familyHint?: ModuleFamily;
}

/** Known USB ids, keyed `vid:pid` in lowercase hex. */
export const USB_SERIAL_CHIPS: Readonly<Record<string, ChipInfo>> = Object.freeze({
  '1a86:7523': { chip: 'CH340', familyHint: 'nodemcu' },
  '1a86:55d4': { chip: 'CH9102' },
  '10c4:ea60': { chip: 'CP210x', familyHint: 'nodemcu' },
  '0403:6001': { chip: 'FT232R' },
  '0403:6010': { chip: 'FT2232' },
  '0403:6014': { chip: 'FT232H' },
  '0403:6015': { chip: 'FT231X' },
  '067b:2303': { chip: 'PL2303' },
  '303a:1001': { chip: 'ESP32-C3/S3 USB-Serial-JTAG', family: 'luatos' },
  '19d1:0001': { chip: 'Air780E/EC618 USB', family: 'luatos' },
  '1782:4e00': { chip: 'Air724UG/RDA8910 USB', family: 'luat' },
});

/** Normalize a USB id to 4-digit lowercase hex (`0x1A86` → `1a86`); undefined if it is not hex. */
function normId(id: string | undefined): string | undefined {
  if (id === undefined) return undefined;
  const t = id.trim().toLowerCase().replace(/^0x/, '');
  return /^[0-9a-f]{1,4}$/.test(t) ? t.padStart(4, '0') : undefined;
}

function clean(s: string | undefined): string | undefined {
  const t = s?.trim();
  return t ? t : undefined;
}

/**
 * Build a {@link PortInfo}, normalizing ids and filling `chip`/`family`/`familyHint` from
 * {@link USB_SERIAL_CHIPS}. Fields that are empty or absent are left out.
 */
export function describePort(raw: { path: string; vendorId?: string; productId?: string; manufacturer?: string; serialNumber?: string }): PortInfo {
  const info: PortInfo = { path: raw.path };
  const vendorId = normId(raw.vendorId);
  const productId = normId(raw.productId);
  const manufacturer = clean(raw.manufacturer);
  const serialNumber = clean(raw.serialNumber);
  if (vendorId) info.vendorId = vendorId;
  if (productId) info.productId = productId;
  if (manufacturer) info.manufacturer = manufacturer;
  if (serialNumber) info.serialNumber = serialNumber;
  const known = vendorId && productId ? USB_SERIAL_CHIPS[`${vendorId}:${productId}`] : undefined;
  if (known) {
    info.chip = known.chip;
    if (known.family) info.family = known.family;
    if (known.familyHint) info.familyHint = known.familyHint;
  }
  return info;
}

/**
 * List the serial ports of this machine, sorted by path.
 *
 * Uses `SerialPort.list()`; on Linux, when that fails (it runs `udevadm`, which containers
 * and minimal systems lack: `spawn udevadm ENOENT`), falls back to {@link listPortsFromSysfs}.
 *
 * @returns One {@link PortInfo} per port; an empty array when there are none.
 * @throws TetherError `TRANSPORT` when the ports cannot be enumerated at all.
 */
export async function listPorts(): Promise<PortInfo[]> {
  let listed: Awaited<ReturnType<typeof SerialPort.list>>;
  try {
    listed = await SerialPort.list();
  } catch (e) {
    if (process.platform === 'linux') return listPortsFromSysfs();
    throw new TetherError('TRANSPORT', `cannot list serial ports: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return listed.map((p) => describePort(p)).sort((a, b) => comparePaths(a.path, b.path));
}

/** How long {@link isModuleUsbPort} waits for the port list (ms). */
const LIST_TIMEOUT_MS = 2000;

/**
 * Whether `path` is a module's own USB port: a port whose USB id names the module itself
 * ({@link PortInfo.family}: Air780E/EC618 `19d1:0001`, Air724UG `1782:4e00`, ESP32-C3/S3
 * USB-Serial-JTAG `303a:1001`), not a USB-UART bridge. Such a port is USB CDC: it has no baud,
 * so nothing should be paced or timed by one. Symbolic links (`/dev/serial/by-id/...`) are
 * followed on both sides.
 * @param list where the ports come from. @default {@link listPorts}
 * @returns false when it cannot be told (the ports cannot be listed within 2 s, the path is not
 *   among them).
 */
export async function isModuleUsbPort(path: string, list: () => Promise<PortInfo[]> = listPorts): Promise<boolean> {
  const real = async (p: string) => realpath(p).catch(() => p);
  try {
    const want = await real(path);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<PortInfo[]>((resolve) => {
      timer = setTimeout(() => resolve([]), LIST_TIMEOUT_MS);
    });
    const ports = await Promise.race([list(), late]).finally(() => clearTimeout(timer));
    for (const p of ports) {
      if (p.family !== undefined && (p.path === path || (await real(p.path)) === want)) return true;
    }
  } catch {
    // not listable: treat it as a UART (paced by its baud), the safe side
  }
  return false;
}

/** Sort `ttyUSB2` before `ttyUSB10`. */
function comparePaths(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

async function readAttr(dir: string, name: string): Promise<string | undefined> {
  try {
    return clean(await readFile(join(dir, name), 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * List serial ports by reading Linux sysfs, without udev.
 *
 * Looks at every `<root>/class/tty/<name>`; keeps only ttys with a `device` link
 * (virtual consoles and ptys have none) and skips serial-core ports whose `type` is 0
 * (no UART behind the legacy `ttyS*` slots). For USB ports it walks up from the
 * resolved `device` link to the USB device directory (the one with `idVendor`) and
 * reads `idVendor`, `idProduct`, `manufacturer` and `serial`. The path reported is
 * always `/dev/<name>`.
 *
 * @param root sysfs mount point; default `/sys`. Tests pass a fake tree.
 * @returns Ports sorted by path (`ttyUSB2` before `ttyUSB10`); empty if `<root>/class/tty` is missing.
 */
export async function listPortsFromSysfs(root = '/sys'): Promise<PortInfo[]> {
  const classDir = join(root, 'class', 'tty');
  let names: string[];
  try {
    names = await readdir(classDir);
  } catch {
    return [];
  }
  let realRoot: string;
  try {
    realRoot = await realpath(root);
  } catch {
    return [];
  }
  const ports: PortInfo[] = [];
  for (const name of names) {
    if (name.startsWith('.') || name.includes(sep)) continue;
    const ttyDir = join(classDir, name);
    let deviceDir: string;
    try {
      deviceDir = await realpath(join(ttyDir, 'device'));
    } catch {
      continue; // no device link: not a hardware port
    }
    if ((await readAttr(ttyDir, 'type')) === '0') continue; // serial-core slot without a UART
    const raw: Parameters<typeof describePort>[0] = { path: `/dev/${name}` };
    const usbDir = await findUsbDevice(deviceDir, realRoot);
    if (usbDir) {
      raw.vendorId = await readAttr(usbDir, 'idVendor');
      raw.productId = await readAttr(usbDir, 'idProduct');
      raw.manufacturer = await readAttr(usbDir, 'manufacturer');
      raw.serialNumber = await readAttr(usbDir, 'serial');
    }
    ports.push(describePort(raw));
  }
  return ports.sort((a, b) => comparePaths(a.path, b.path));
}

/** Walk up from `dir` (at most 8 levels, never above `root`) to the directory holding `idVendor`. */
async function findUsbDevice(dir: string, root: string): Promise<string | undefined> {
  let d = dir;
  for (let i = 0; i < 8; i++) {
    const rel = relative(root, d);
    if (rel === '' || rel.startsWith('..')) return undefined;
    if ((await readAttr(d, 'idVendor')) !== undefined) return d;
    const parent = dirname(d);
    if (parent === d) return undefined;
    d = parent;
  }
  return undefined;
}

/**
 * Text output of `tether ports`: one line per port with its USB VID:PID, USB serial
 * number and the chip (and module family) behind it.
 */
import type { PortInfo } from '../../transport/ports.js';

/**
 * The lines `tether ports` prints (without trailing newlines): a header, then per port
 * `PATH  VID:PID  SERIAL  CHIP (family)`, `-` for what the port does not report. The
 * serial number is what a `serial:SERIALNO` port names; when at least one port has one,
 * a last line says so. Empty `ports` give no lines.
 */
export function formatPorts(ports: readonly PortInfo[]): string[] {
  if (ports.length === 0) return [];
  const rows = ports.map((p) => [
    p.path,
    p.vendorId ? `${p.vendorId}:${p.productId ?? '????'}` : '-',
    p.serialNumber ?? '-',
    `${p.chip ?? p.manufacturer ?? '-'}${p.family ? ` (${p.family})` : p.familyHint ? ` (maybe ${p.familyHint})` : ''}`,
  ]);
  const head = ['PORT', 'VID:PID', 'SERIAL', 'CHIP'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  const out = [line(head), ...rows.map(line)];
  const withSerial = ports.find((p) => p.serialNumber);
  if (withSerial) out.push(`name a port by its serial number to survive re-plugging: --port serial:${withSerial.serialNumber}`);
  return out;
}

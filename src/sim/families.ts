/**
 * Registry of simulated firmware families, by the name used in `sim:<family>`
 * port strings and `tether sim --family`. Each family module adds one line.
 */
import type { SimFamily } from './module.js';
import { luatosFamily } from './luatos/family.js';
import { luatFamily } from './luat/family.js';
import { nodemcuFamily } from './nodemcu/family.js';

/** Options every family factory accepts (family-specific fields are ignored by the others). */
export type SimFamilyOptions = Record<string, unknown>;

/** name → factory. */
export const SIM_FAMILIES: Record<string, { moduleName: string; create: (opts?: SimFamilyOptions) => SimFamily }> = {
  luatos: { moduleName: 'Air780E', create: (o) => luatosFamily(o as never) },
  luat: { moduleName: 'Air724UG', create: (o) => luatFamily(o as never) },
  nodemcu: { moduleName: 'ESP8266', create: (o) => nodemcuFamily(o as never) },
};

/** Names of the families that can be simulated. */
export function simFamilyNames(): string[] {
  return Object.keys(SIM_FAMILIES);
}

/**
 * Agent settings for the simulated modules: the globals a user sets before the agent runs
 * (`TETHER_ALLOW_RESTART = true` before `require("tether")` / `dofile("tether.lua")`), which the
 * agent's config.lua reads (firmware-shim/<family>/config.lua).
 */
import type { LuaVm } from './lua-vm.js';

/** Globals set before the agent runs: name → value (booleans, numbers, strings). */
export type AgentSettings = Record<string, boolean | number | string>;

/**
 * Set `settings` as Lua globals in `vm` (before the agent file runs).
 * @throws Error when a name is not a Lua global name or Lua rejects the assignment.
 */
export function applyAgentSettings(vm: LuaVm, settings: AgentSettings | undefined): void {
  const entries = Object.entries(settings ?? {});
  if (entries.length === 0) return;
  for (const [k] of entries) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`agentSettings: ${JSON.stringify(k)} is not a Lua global name`);
  }
  const src = entries.map(([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`).join('\n');
  const err = vm.runString(src, '=settings');
  if (err) throw new Error(`agentSettings failed: ${err}`);
}

/**
 * The agent settings with `TETHER_BAUD` = `baud` added when a line baud was given and the settings
 * do not name one (every agent's config.lua reads TETHER_BAUD: the rate its `uart.setup` asks for).
 */
export function withLineBaud(settings: AgentSettings | undefined, baud: number | undefined): AgentSettings | undefined {
  if (baud === undefined || (settings && 'TETHER_BAUD' in settings)) return settings;
  return { ...settings, TETHER_BAUD: baud };
}

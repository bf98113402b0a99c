import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TetherError } from '../errors.js';

/** Name in the package.json that marks the tether package root. */
const PACKAGE_NAME = 'tether-hil';

let cached: string | undefined;

/**
 * Absolute path of the tether package root: the nearest ancestor directory of
 * `from` that holds a `package.json` whose `name` is `"tether"`. Works from the
 * sources (`src/util/repo-root.ts`), the compiled output
 * (`dist/src/util/repo-root.js`) and an installed copy (`node_modules/tether/...`),
 * so callers can find shipped assets such as `scripts/pty-relay.py` and `fixtures/`.
 *
 * If no ancestor's package.json is named `tether`, the nearest directory holding
 * any package.json is returned (a renamed fork still works).
 *
 * @param from Directory to start from; defaults to this module's own directory.
 *   Only the default is cached.
 * @returns Absolute directory path, without a trailing separator.
 * @throws TetherError `UNSUPPORTED` when no ancestor holds a package.json
 *   (the installation is incomplete).
 */
export function repoRoot(from?: string): string {
  if (from === undefined && cached !== undefined) return cached;
  const start = resolve(from ?? dirname(fileURLToPath(import.meta.url)));
  let nearest: string | undefined;
  let dir = start;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      nearest ??= dir;
      if (readPackageName(pkg) === PACKAGE_NAME) {
        nearest = dir;
        break;
      }
    }
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  if (nearest === undefined) {
    throw new TetherError('UNSUPPORTED', `cannot find the tether package root: no package.json above ${start}; the installation looks incomplete`, {
      context: { from: start },
    });
  }
  if (from === undefined) cached = nearest;
  return nearest;
}

function readPackageName(file: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (parsed !== null && typeof parsed === 'object' && 'name' in parsed && typeof parsed.name === 'string') return parsed.name;
  } catch {
    // unreadable or not JSON: treat as unnamed
  }
  return undefined;
}

/** Firmware families with an agent bundle. */
export type AgentFamily = 'luatos' | 'luat' | 'nodemcu';

/**
 * Absolute path of a family's generated agent bundle, `dist/agents/<family>/main.lua` under
 * the package root: the one file the simulators run, `tether flash` uploads (NodeMCU) and
 * `tether agent` copies out. It is a build output of `npm run build` (scripts/gen-lua.ts,
 * from firmware-shim/common/*.lua and firmware-shim/<family>/*.lua), never committed.
 * @param family `luatos`, `luat` or `nodemcu`.
 * @returns The path (whether or not the file exists; see {@link readAgentBundle}).
 */
export function agentBundlePath(family: AgentFamily): string {
  return join(repoRoot(), 'dist', 'agents', family, 'main.lua');
}

/**
 * Text of a family's generated agent bundle ({@link agentBundlePath}).
 * @throws TetherError `UNSUPPORTED` when the bundle was not built (run `npm run build`).
 */
export function readAgentBundle(family: AgentFamily): string {
  const p = agentBundlePath(family);
  try {
    return readFileSync(p, 'utf8');
  } catch {
    throw new TetherError('UNSUPPORTED', `the ${family} agent bundle ${p} is missing: it is a build output, run "npm run build"`, { context: { path: p } });
  }
}

/**
 * A family's agent files loaded on first use, next to its bundle: `dist/agents/<family>/tether_*.lua`
 * (NodeMCU: the call groups the resident agent loads from the module's flash; see
 * firmware-shim/nodemcu/agent.lua `HAL.part`). They go onto the module with the bundle.
 * @returns file name on the module → text, sorted by name (empty for a family without any).
 */
export function readLazyAgentFiles(family: AgentFamily): Map<string, string> {
  const dir = dirname(agentBundlePath(family));
  const m = new Map<string, string>();
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return m;
  }
  for (const n of names.filter((x) => /^tether_[a-z0-9]+\.lua$/.test(x)).sort()) m.set(n, readFileSync(join(dir, n), 'utf8'));
  return m;
}

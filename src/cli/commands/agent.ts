/**
 * `tether agent --family F --out DIR`: write the files that go onto a module, plus a short
 * README.txt that says where they go and how the agent starts.
 *
 * - `nodemcu`: `tether.lua`, exactly the bytes `tether flash` uploads (the generated bundle,
 *   minified the same way unless `--no-minify`), and with `--init` the `init.lua` that
 *   `tether flash --init` writes. Upload them with any NodeMCU tool; start with
 *   `dofile("tether.lua")`.
 *   With `--lfs`, the same files for a firmware with the Lua Flash Store: README.txt says how to
 *   build the image (luac.cross -f) and load it, and `--init` writes an init.lua that starts the
 *   agent from LFS.
 * - `luatos` (Air780E) and `luat` (Air724UG): `main.lua`, the script to add in Luatools.
 *
 * The bundles are build outputs (dist/agents/<family>/main.lua, see src/util/repo-root.ts
 * agentBundlePath). Usage errors (missing or bad --family / --out, `--init` for a family
 * other than nodemcu) exit 2 before anything is written.
 */
import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';

/** Families `tether agent` can write. */
export const AGENT_FAMILIES = ['luatos', 'luat', 'nodemcu'] as const;

export interface AgentArgs extends CommonArgs {
  family: (typeof AGENT_FAMILIES)[number];
  out: string;
  init: boolean;
  'init-delay': number;
  minify: boolean;
  lfs: boolean;
}

/** `--out DIR`: a non-empty path. */
function outDir(raw: unknown): string {
  const v = String(Array.isArray(raw) ? raw[raw.length - 1] : raw ?? '');
  if (v.trim() === '') throw new Error('--out must name a directory (it is created if missing)');
  return v;
}

/** `tether agent --family F --out DIR`. */
export const agentCommand = (ctx: CliContext): CommandModule<object, AgentArgs> => ({
  command: 'agent',
  describe: 'Write the agent files that go onto a module (and a README.txt saying how) into a directory',
  builder: (y) =>
    y
      .option('family', { alias: 'f', type: 'string', choices: AGENT_FAMILIES, demandOption: true, requiresArg: true, describe: 'Firmware family: luatos (Air780E), luat (Air724UG) or nodemcu (ESP8266)' })
      .option('out', { alias: 'o', type: 'string', demandOption: true, requiresArg: true, coerce: outDir, describe: 'Directory to write into (created if missing; files of the same name are replaced)' })
      .option('init', { type: 'boolean', default: false, describe: 'nodemcu: also write the init.lua that starts the agent at boot (as tether flash --init)' })
      .option('init-delay', { type: 'number', default: 2000, describe: 'nodemcu: milliseconds init.lua waits before starting the agent' })
      .option('lfs', { type: 'boolean', default: false, describe: 'nodemcu: for a firmware with the Lua Flash Store: README.txt says how to build and load the image; --init starts the agent from LFS' })
      .option('minify', { type: 'boolean', default: true, describe: 'nodemcu: drop comment lines and indentation, as tether flash does (--no-minify keeps the bundle as is)' })
      .check((a) => {
        if (a.init && a.family !== 'nodemcu') throw new Error('--init is for --family nodemcu (LuatOS and Luat start main.lua themselves)');
        if (a.lfs && a.family !== 'nodemcu') throw new Error('--lfs is for --family nodemcu (the Lua Flash Store is NodeMCU\'s)');
        const d = a['init-delay'];
        if (typeof d !== 'number' || !Number.isInteger(d) || d < 1 || d > 6_870_947) throw new Error(`--init-delay must be an integer 1..6870947 (ms, a NodeMCU timer), got ${JSON.stringify(String(d))}`);
        return true;
      })
      .example('$0 agent --family nodemcu --out ./esp', 'tether.lua and README.txt for an ESP8266')
      .example('$0 agent --family nodemcu --lfs --init --out ./esp-lfs', 'the files for an LFS image, and an init.lua that starts the agent from LFS')
      .example('$0 agent --family luatos --out ./air780e', 'main.lua for Luatools') as never,
  handler: async (argv) => (await import('./agent-impl.js')).runAgent(argv, ctx),
});

import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';
import { DEFAULT_UPLOAD_BAUD, NODEMCU_BAUDS } from './flash-repl.js';
import { MAX_NODEMCU_TIMER_MS, intInRange, numberOption, portArg, positiveMs } from '../validate.js';

export interface FlashArgs extends CommonArgs {
  port: string;
  init: boolean;
  'allow-repl': boolean;
  'init-delay': number;
  start: boolean;
  force: boolean;
  name: string;
  file?: string;
  minify: boolean;
  'upload-baud'?: number;
  'sync-timeout': number;
  'line-timeout': number;
}

/** `--port` of flash: a serial device or tcp://, never a simulator. */
function flashPort(raw: unknown): string {
  const port = portArg(raw);
  if (port === 'sim' || port.startsWith('sim:')) {
    throw new Error('--port: flash talks to a module on a serial port or tcp://, not to sim: start one with "tether sim --family nodemcu" and flash its tcp:// URL, or use a board');
  }
  return port;
}

/** `--name`: the agent's file name on the module (SPIFFS names are at most 31 characters). */
function luaFileName(raw: unknown): string {
  const v = String(Array.isArray(raw) ? raw[raw.length - 1] : raw);
  if (!/^[A-Za-z0-9_.-]{1,27}\.lua$/.test(v)) throw new Error(`--name must be a .lua file name of at most 31 characters (letters, digits, _ . -), got ${JSON.stringify(v)}`);
  return v;
}

/** `--upload-baud`: 0 or one of the rates NodeMCU's uart.setup takes (app/driver/uart.c). */
function uploadBaud(raw: unknown): number {
  const v = Number(Array.isArray(raw) ? raw[raw.length - 1] : raw);
  if (v === 0 || NODEMCU_BAUDS.includes(v)) return v;
  throw new Error(`--upload-baud must be 0 or one of ${NODEMCU_BAUDS.join(', ')}, got ${JSON.stringify(raw)}`);
}

/** `tether flash --port URL`: put the NodeMCU agent on a module through its stock Lua REPL. */
export const flashCommand = (ctx: CliContext): CommandModule<object, FlashArgs> => ({
  command: 'flash',
  describe: 'Upload the tether agent to a NodeMCU (ESP8266) module through its Lua prompt, verify it, and start it',
  builder: (y) =>
    y
      .option('port', { alias: 'p', type: 'string', demandOption: true, requiresArg: true, coerce: flashPort, describe: 'Serial device (e.g. /dev/ttyUSB0) or tcp://HOST:PORT of the module' })
      .option('init', { type: 'boolean', default: false, describe: 'Also write an init.lua that starts the agent at every boot' })
      .option('allow-repl', { type: 'boolean', default: false, describe: 'Let the host hand the UART back to the Lua prompt: ask a running agent for it (agent.repl), and start the agent (and init.lua) with TETHER_ALLOW_REPL = true so the next flash can too' })
      .option('init-delay', numberOption(`Milliseconds init.lua waits before starting the agent, 1..${MAX_NODEMCU_TIMER_MS} (TETHER_NOSTART=true at the prompt stops it)`, intInRange('init-delay', 1, MAX_NODEMCU_TIMER_MS, 'ms, a NodeMCU timer'), 2000))
      .option('start', { type: 'boolean', default: true, describe: 'Start the agent after the upload and check it answers (--no-start to skip)' })
      .option('force', { type: 'boolean', default: false, describe: 'Upload even when the module has an identical agent' })
      .option('name', { type: 'string', default: 'tether.lua', requiresArg: true, coerce: luaFileName, describe: 'File name of the agent on the module' })
      .option('file', { type: 'string', requiresArg: true, describe: 'Upload this Lua file instead of the bundled agent (dist/agents/nodemcu/main.lua, built by npm run build; `tether agent --family nodemcu` copies it out)' })
      .option('minify', { type: 'boolean', default: true, describe: 'Drop comment lines and indentation before the upload (--no-minify to keep the file as is)' })
      .option('upload-baud', numberOption(`Baud rate for the upload: the module and the port switch to it and back, falling back to 115200 when the module does not answer at it; 0 = no switch (default ${DEFAULT_UPLOAD_BAUD} on serial ports and rfc2217://, 0 on raw tcp://)`, uploadBaud))
      .option('sync-timeout', numberOption('Milliseconds to get a Lua prompt (boards that reset on open need a few seconds)', positiveMs('sync-timeout'), 15000))
      .option('line-timeout', numberOption('Milliseconds for one REPL line to come back', positiveMs('line-timeout'), 5000))
      .example('$0 flash --port /dev/ttyUSB0 --init', 'upload the agent, make it start at boot, start it now')
      .example('$0 flash --port /dev/ttyUSB0 --no-start', 'upload only') as never,
  handler: async (argv) => (await import('./flash-impl.js')).runFlash(argv, ctx),
});

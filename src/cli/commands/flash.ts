import type { CommandModule } from 'yargs';
import type { CliContext } from './index.js';
import type { CommonArgs } from '../output.js';

export interface FlashArgs extends CommonArgs {
  port: string;
  init: boolean;
  'init-delay': number;
  start: boolean;
  force: boolean;
  name: string;
  file?: string;
  minify: boolean;
  encoding?: 'base64' | 'hex';
  'sync-timeout': number;
  'line-timeout': number;
}

/** `tether flash --port URL`: put the NodeMCU agent on a module through its stock Lua REPL. */
export const flashCommand = (ctx: CliContext): CommandModule<object, FlashArgs> => ({
  command: 'flash',
  describe: 'Upload the tether agent to a NodeMCU (ESP8266) module through its Lua prompt, verify it, and start it',
  builder: (y) =>
    y
      .option('port', { alias: 'p', type: 'string', demandOption: true, describe: 'Serial device (e.g. /dev/ttyUSB0) or tcp://HOST:PORT of the module' })
      .option('init', { type: 'boolean', default: false, describe: 'Also write an init.lua that starts the agent at every boot' })
      .option('init-delay', { type: 'number', default: 2000, describe: 'Milliseconds init.lua waits before starting the agent (TETHER_NOSTART=true at the prompt stops it)' })
      .option('start', { type: 'boolean', default: true, describe: 'Start the agent after the upload and check it answers (--no-start to skip)' })
      .option('force', { type: 'boolean', default: false, describe: 'Upload even when the module has an identical agent' })
      .option('name', { type: 'string', default: 'tether.lua', describe: 'File name of the agent on the module' })
      .option('file', { type: 'string', describe: 'Upload this Lua file instead of the bundled agent (firmware-shim/nodemcu/main.lua)' })
      .option('minify', { type: 'boolean', default: true, describe: 'Drop comment lines and indentation before the upload (--no-minify to keep the file as is)' })
      .option('encoding', { type: 'string', choices: ['base64', 'hex'], describe: 'Transfer encoding (default: base64 when the firmware has encoder, else hex)' })
      .option('sync-timeout', { type: 'number', default: 15000, describe: 'Milliseconds to get a Lua prompt (boards that reset on open need a few seconds)' })
      .option('line-timeout', { type: 'number', default: 5000, describe: 'Milliseconds for one REPL line to come back' })
      .example('$0 flash --port /dev/ttyUSB0 --init', 'upload the agent, make it start at boot, start it now')
      .example('$0 flash --port /dev/ttyUSB0 --no-start', 'upload only') as never,
  handler: async (argv) => (await import('./flash-impl.js')).runFlash(argv, ctx),
});

/**
 * The CLI's command modules. Each file holds the yargs surface only; the work is
 * imported lazily when the command runs (lerna-style), so `--help` stays fast.
 */
import type { CommandModule } from 'yargs';
import { simCommand } from './sim.js';
import { portsCommand } from './ports.js';
import { infoCommand } from './info.js';
import { callCommand } from './call.js';
import { diagCommand } from './diag.js';
import { flashCommand } from './flash.js';
import { agentCommand } from './agent.js';
import { proxyCommand } from './proxy.js';
import { shellCommand } from './shell.js';
import { rebootCommand } from './reboot.js';
import { resetSocketsCommand } from './reset-sockets.js';

/** What commands need from the CLI runner. */
export interface CliContext {
  /** Set the process exit code (see output.ts ExitCode). */
  setExit(code: number): void;
}

export function makeCommands(ctx: CliContext): CommandModule[] {
  return [simCommand(ctx), portsCommand(ctx), infoCommand(ctx), callCommand(ctx), shellCommand(ctx), diagCommand(ctx), flashCommand(ctx), agentCommand(ctx), proxyCommand(ctx), rebootCommand(ctx), resetSocketsCommand(ctx)] as CommandModule[];
}

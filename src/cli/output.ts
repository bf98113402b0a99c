/**
 * CLI output helpers: data on stdout, logs and errors on stderr, `--json` for scripts.
 * Exit codes (docs/cli.md): 0 ok, 1 runtime or device error / a failing check,
 * 2 usage error, 3 protocol version mismatch, 4 timeout, 5 diag passed but incomplete
 * (checks skipped), 130 interrupted (Ctrl-C).
 */
import { isTetherError } from '../errors.js';

export const ExitCode = { OK: 0, ERROR: 1, USAGE: 2, VERSION: 3, TIMEOUT: 4, INCOMPLETE: 5, INTERRUPTED: 130 } as const;

/** Exit code for an error. */
export function exitCodeFor(e: unknown): number {
  if (isTetherError(e, 'VERSION_MISMATCH')) return ExitCode.VERSION;
  if (isTetherError(e, 'TIMEOUT') || isTetherError(e, 'HANDSHAKE')) return ExitCode.TIMEOUT;
  if (isTetherError(e, 'INVALID_ARGUMENT')) return ExitCode.USAGE;
  return ExitCode.ERROR;
}

/** Plain JSON of an error. */
export function errorJson(e: unknown): Record<string, unknown> {
  if (isTetherError(e)) return { error: e.toJSON() };
  return { error: { name: 'Error', code: 'ERROR', message: e instanceof Error ? e.message : String(e) } };
}

/** Print an error the way a user or a script wants it; returns the exit code. */
export function reportError(e: unknown, json: boolean): number {
  if (json) process.stdout.write(JSON.stringify(errorJson(e)) + '\n');
  else {
    const code = isTetherError(e) ? ` [${e.code}]` : '';
    process.stderr.write(`tether: ${e instanceof Error ? e.message : String(e)}${code}\n`);
  }
  return exitCodeFor(e);
}

/** Options every command shares. */
export interface CommonArgs {
  json?: boolean;
  timeout?: number;
  baud?: number;
  verbose?: boolean;
}

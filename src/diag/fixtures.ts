import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { repoRoot } from '../util/repo-root.js';

/**
 * Absolute path of a file or directory inside the package's `fixtures/` directory,
 * e.g. `fixturePath('tls', 'server.crt')`. With no parts, the `fixtures/` directory itself.
 * Does not check that the file exists.
 *
 * @param parts Path segments relative to `fixtures/`; each must be a non-empty string
 *   and none may be absolute or contain `..` (the result always stays inside `fixtures/`).
 * @throws InvalidArgumentError for an empty, absolute or `..` segment.
 * @throws TetherError `UNSUPPORTED` if the package root cannot be found (see {@link repoRoot}).
 */
export function fixturePath(...parts: string[]): string {
  for (const p of parts) {
    if (typeof p !== 'string' || p === '' || p.startsWith('/') || p.startsWith('\\') || /^[A-Za-z]:/.test(p) || p.split(/[\\/]/).includes('..')) {
      throw new InvalidArgumentError(`fixturePath: bad path segment ${JSON.stringify(p)}; expected relative names inside fixtures/ such as ('tls', 'server.crt')`, {
        parts,
      });
    }
  }
  return join(repoRoot(), 'fixtures', ...parts);
}

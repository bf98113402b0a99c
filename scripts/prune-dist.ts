/**
 * Build step after the incremental `tsc`: remove compiled files whose TypeScript source is
 * gone, so a deleted or renamed test never runs from a stale dist/ (tsc's incremental
 * build only adds and updates outputs). Touches only dist/{src,test,scripts,hil}.
 *
 * Usage: node dist/scripts/prune-dist.js   (npm run build runs it)
 */
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from '../src/util/repo-root.js';

const OUTPUT = /\.(?:d\.ts\.map|d\.ts|js\.map|js)$/;

/** Remove outputs under `dist/<dir>` without a `<dir>/...ts` source; returns the removed paths (repository-relative). */
export function pruneDist(root: string, dirs = ['src', 'test', 'scripts', 'hil']): string[] {
  const removed: string[] = [];
  const walk = (abs: string): void => {
    for (const name of readdirSync(abs)) {
      const p = join(abs, name);
      if (statSync(p).isDirectory()) {
        walk(p);
        continue;
      }
      if (!OUTPUT.test(name)) continue;
      const source = join(root, relative(join(root, 'dist'), p)).replace(OUTPUT, '.ts');
      if (!existsSync(source)) {
        rmSync(p);
        removed.push(relative(root, p));
      }
    }
  };
  for (const d of dirs) if (existsSync(join(root, 'dist', d))) walk(join(root, 'dist', d));
  return removed;
}

if (process.argv[1] && /prune-dist\.js$/.test(process.argv[1])) {
  const removed = pruneDist(repoRoot());
  if (removed.length) console.error(`pruned ${removed.length} stale file(s) from dist/: ${removed.join(', ')}`);
}

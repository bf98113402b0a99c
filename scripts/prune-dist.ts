/**
 * Build step after the incremental `tsc`: remove compiled files whose TypeScript source is
 * gone, so a deleted or renamed test never runs from a stale dist/ (tsc's incremental
 * build only adds and updates outputs). Touches only dist/{src,test,scripts,hil}.
 * And the other way round: tsc's incremental build decides from dist/.tsbuildinfo (content
 * hashes), not from the outputs, so a compiled file deleted by hand never came back. When a
 * source has no `.js`, this step removes dist/.tsbuildinfo and runs tsc once more.
 *
 * Usage: node dist/scripts/prune-dist.js   (npm run build runs it)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
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

/** Sources under `<dir>` (`.ts`, not `.d.ts`) whose `dist/<dir>/....js` is missing; repository-relative. */
export function missingOutputs(root: string, dirs = ['src', 'test', 'scripts', 'hil']): string[] {
  const missing: string[] = [];
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel))) {
      const r = join(rel, name);
      if (statSync(join(root, r)).isDirectory()) walk(r);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts') && !existsSync(join(root, 'dist', r.replace(/\.ts$/, '.js')))) missing.push(r);
    }
  };
  for (const d of dirs) if (existsSync(join(root, d))) walk(d);
  return missing;
}

if (process.argv[1] && /prune-dist\.js$/.test(process.argv[1])) {
  const root = repoRoot();
  const missing = missingOutputs(root);
  if (missing.length) {
    console.error(`dist/ lacks ${missing.length} compiled file(s) (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''}): compiling everything again`);
    rmSync(join(root, 'dist', '.tsbuildinfo'), { force: true });
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
  }
  const removed = pruneDist(root);
  if (removed.length) console.error(`pruned ${removed.length} stale file(s) from dist/: ${removed.join(', ')}`);
}

/**
 * package.json says what kq needs at run time: every runtime dependency is imported by src/, everything
 * src/ imports is a runtime dependency (not a devDependency), and type packages match a package in use.
 */
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/kq.js';

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>; devDependencies: Record<string, string>;
};

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(path.join(dir, e.name)) : /\.ts$/.test(e.name) ? [path.join(dir, e.name)] : []);
}

/** Package names imported (statically or dynamically) by the files under `dir`. */
function importedPackages(dir: string): Set<string> {
  const found = new Set<string>();
  for (const file of sources(dir)) {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)'([^'.][^']*)'/g)) {
      const spec = m[1]!;
      if (spec.startsWith('node:') || builtinModules.includes(spec)) continue;
      found.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  return found;
}

describe('package.json', () => {
  it('runtime dependencies are exactly what src/ imports', () => {
    const used = importedPackages(path.join(ROOT, 'src'));
    expect([...used].sort()).toEqual(Object.keys(pkg.dependencies).sort());
  });

  it('type packages belong to a package in use, and tests import only declared packages', () => {
    const declared = new Set([...Object.keys(pkg.dependencies), ...Object.keys(pkg.devDependencies)]);
    for (const name of Object.keys(pkg.devDependencies).filter((n) => n.startsWith('@types/'))) {
      const of = name.slice('@types/'.length);
      expect(of === 'node' || declared.has(of), `${name} types a package kq does not use`).toBe(true);
    }
    for (const dir of ['test', 'bench']) {
      for (const name of importedPackages(path.join(ROOT, dir))) expect(declared.has(name), `${dir}/ imports undeclared ${name}`).toBe(true);
    }
  });
});

/** The kq install this code runs from: the nearest folder above it with kq's package.json (built, bundled or under vitest). */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | null = null;

export function installRoot(): string {
  if (cached) return cached;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      if ((JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name === 'kq') return (cached = dir);
    } catch { /* not here */ }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the kq install (no package.json named "kq" above this file)');
    dir = up;
  }
}

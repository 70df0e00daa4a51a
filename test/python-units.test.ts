/** The plain-Python parts of the integrations (no Blender, no Katana), through python3 -m unittest. */
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/kq.js';

const suites = ['integrations/blender/tests', 'integrations/katana/tests'];

describe('python3 -m unittest', () => {
  for (const suite of suites) {
    it(suite, async () => {
      const r = await execa('python3', ['-m', 'unittest', 'discover', '-s', path.join(ROOT, suite), '-v'], { reject: false, all: true, cwd: ROOT });
      expect(r.exitCode, String(r.all)).toBe(0);
      expect(String(r.all)).toMatch(/^OK$/m);
    });
  }
});

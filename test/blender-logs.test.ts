/**
 * Progress parsing on the real output of Debian's Blender 3.4 (captured by test/fixtures/blender/capture.sh):
 * Cycles with one tile and with 20 tiles, EEVEE, Workbench (which prints no Fra: lines at all), one frame.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createProgressParser } from '../src/kq/progress.js';
import { ROOT } from './helpers/kq.js';

const fixture = (name: string) => fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'blender', name), 'utf8').split('\n');
const rangeArgv = (engine: string) => ['blender', '-b', 'scene.blend', '-E', engine, '-s', '{start}', '-e', '{end}', '-a'];

/** Feed every line; answer the progress values and the value right after each `Saved:` line. */
function parse(argv: string[], frames: number[], lines: string[]) {
  const p = createProgressParser({ argv, frames });
  expect(p.renderer).toBe('blender');
  const values: number[] = [];
  const atSaved: Array<number | null> = [];
  for (const line of lines) {
    const v = p.feed(line);
    if (v !== null) values.push(v);
    if (line.startsWith('Saved: ')) atSaved.push(v);
  }
  return { values, atSaved };
}

function expectSteadyRise(values: number[]) {
  for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThanOrEqual(values[i - 1]!);
}

describe('real Blender 3.4 logs, two frames (-s {start} -e {end} -a)', () => {
  for (const [file, engine] of [['cycles.txt', 'CYCLES'], ['cycles-tiles.txt', 'CYCLES'], ['eevee.txt', 'BLENDER_EEVEE'], ['workbench.txt', 'BLENDER_WORKBENCH']]) {
    it(`${file}: each saved frame is half the task, progress only rises, ends at 100`, () => {
      const { values, atSaved } = parse(rangeArgv(engine!), [1, 2], fixture(file!));
      expect(atSaved).toEqual([50, 100]);
      expectSteadyRise(values);
      expect(values.at(-1)).toBe(100);
    });
  }

  it('cycles-tiles.txt: tiles count within a frame (20 tiles: steps of 2.5 %)', () => {
    const { values } = parse(rangeArgv('CYCLES'), [1, 2], fixture('cycles-tiles.txt'));
    expect(values).toContain(2.5);
    expect(values).toContain(25);
    expect(values).toContain(52.5);
  });

  it('cycles.txt: samples count within a frame (Sample 1/4 of frame 1 is 12.5 %)', () => {
    const { values } = parse(rangeArgv('CYCLES'), [1, 2], fixture('cycles.txt'));
    expect(values).toContain(12.5);
    expect(values).toContain(62.5);
  });

  it('eevee.txt: "Rendering 1 / 4 samples" counts', () => {
    const { values } = parse(rangeArgv('BLENDER_EEVEE'), [1, 2], fixture('eevee.txt'));
    expect(values).toContain(12.5);
    expect(values).toContain(62.5);
  });
});

describe('real Blender 3.4 log, one frame (-f {frame})', () => {
  it('cycles-one-frame.txt: frame 3 alone goes to 100', () => {
    const { values, atSaved } = parse(['blender', '-b', 'scene.blend', '-f', '{frame}'], [3], fixture('cycles-one-frame.txt'));
    expect(atSaved).toEqual([100]);
    expect(values).toContain(25);
    expectSteadyRise(values);
  });

  it('workbench.txt run per frame: two -f commands in one task add up', () => {
    const lines = fixture('workbench.txt');
    const firstSave = lines.findIndex((l) => l.startsWith('Saved: '));
    const oneFrame = [...lines.slice(0, firstSave + 1), 'Blender quit'];
    const { atSaved } = parse(['blender', '-b', 'scene.blend', '-E', 'BLENDER_WORKBENCH', '-f', '{frame}'], [1, 2], [...oneFrame, ...oneFrame]);
    expect(atSaved).toEqual([50, 100]);
  });
});

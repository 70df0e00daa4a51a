/** Progress parsing from render logs: per-renderer patterns on real-looking (and real) output. */
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { createProgressParser, detectRenderer, ProgressTracker, type ProgressContext } from '../src/kq/progress.js';
import { ROOT, tempDir } from './helpers/kq.js';

const feedAll = (ctx: ProgressContext, lines: string[]) => {
  const p = createProgressParser(ctx);
  return lines.map((l) => p.feed(l));
};

describe('detectRenderer', () => {
  it('finds the renderer among the program names, also inside sh -c', () => {
    expect(detectRenderer(['povray', '+Ishot.pov'])).toBe('povray');
    expect(detectRenderer(['/usr/bin/povray', '+Ishot.pov'])).toBe('povray');
    expect(detectRenderer(['/opt/blender-4.1/blender', '-b', 'shot.blend', '-f', '{frame}'])).toBe('blender');
    expect(detectRenderer(['/opt/Katana6.0v1/katana', '--batch', '--katana-file=shot.katana'])).toBe('katana');
    expect(detectRenderer(['/tmp/katana_tmp/renderboot', '-rendererName', 'arnold'])).toBe('katana');
    expect(detectRenderer(['sh', '-c', 'cd /shots && povray +Ia.pov +Oa.png'])).toBe('povray');
    expect(detectRenderer(['povray-wrapper', '+Ipovray.pov'])).toBeNull();
    expect(detectRenderer(['sleep', '1'])).toBeNull();
  });
});

describe('POV-Ray', () => {
  const frameLines = [
    'Persistence of Vision(tm) Ray Tracer Version 3.7.0.10.unofficial (g++ @',
    'Rendering frame 1 of 3',
    '==== [Rendering...] ========================================================',
    'Rendered 1024 of 19200 pixels (5%)\rRendered 2048 of 19200 pixels (10%)\rRendered 9600 of 19200 pixels (50%)',
    'Trace Time:       0 hours  0 minutes  0 seconds (0.010 seconds)',
    'Rendering frame 2 of 3',
    'Rendered 19200 of 19200 pixels (100%)',
    'Rendering frame 3 of 3',
    'Rendered 4800 of 19200 pixels (25%)',
    'POV-Ray finished',
  ];

  it('adds animation frames and pixels of one run (+SF{start} +EF{end}); the last \\r segment counts', () => {
    expect(feedAll({ argv: ['povray', '+Ispin.pov', '+SF{start}', '+EF{end}'], frames: [4, 5, 6] }, frameLines))
      .toEqual([null, 0, null, 16.7, null, 33.3, 66.7, 66.7, 75, 100]);
  });

  it('spreads one run per frame when argv names {frame}', () => {
    const run = ['Parsing', 'Rendered 9600 of 19200 pixels (50%)', 'Rendered 19200 of 19200 pixels (100%)', 'POV-Ray finished'];
    const p = createProgressParser({ argv: ['povray', '+Ishot.pov', '+K{frame}'], frames: [1, 2] });
    expect([...run, ...run].map((l) => p.feed(l))).toEqual([null, 25, 50, 50, null, 75, 100, 100]);
  });

  it('parses the real output of povray rendering two animation frames', async () => {
    const cwd = tempDir('kq-pov-');
    const r = await execa('povray', [`+I${path.join(ROOT, 'test', 'fixtures', 'spin.pov')}`, '+Oshot.png', '+W80', '+H60', '+FN', '-D',
      '+KFI1', '+KFF12', '+SF3', '+EF4'], { cwd, all: true, reject: false });
    expect(r.exitCode).toBe(0);
    const p = createProgressParser({ argv: ['povray', '+SF{start}', '+EF{end}'], frames: [3, 4] });
    const values = String(r.all).split('\n').map((l) => p.feed(l)).filter((v): v is number => v !== null);
    expect(values).toContain(50); // frame 1 of 2 rendered in full
    expect(values.at(-1)).toBe(100);
    for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThanOrEqual(values[i - 1]!);
  });
});

describe('Blender', () => {
  it('places Fra:N among the task frames and adds samples (Cycles), ending frames at Saved:', () => {
    const lines = [
      'Blender 4.1.1 (hash e1743a0317bc built 2024-04-15 23:47:45)',
      "Read blend: '/shots/sh010/sh010_lighting_v012.blend'",
      'Fra:11 Mem:57.20M (Peak 57.47M) | Time:00:00.08 | Mem:0.00M, Peak:0.00M | Scene | Synchronizing object | Cube',
      'Fra:11 Mem:81.99M (Peak 84.06M) | Time:00:00.64 | Remaining:00:04.12 | Mem:26.31M, Peak:26.31M | Scene | Sample 32/128',
      'Fra:11 Mem:81.99M (Peak 84.06M) | Time:00:02.60 | Mem:26.31M, Peak:26.31M | Scene | Sample 128/128',
      "Saved: '/shots/sh010/render/sh010_0011.png'",
      ' Time: 00:02.71 (Saving: 00:00.09)',
      'Fra:12 Mem:81.99M (Peak 84.06M) | Time:00:00.61 | Remaining:00:02.01 | Mem:26.31M, Peak:26.31M | Scene | Sample 64/128',
    ];
    expect(feedAll({ argv: ['blender', '-b', 'sh010.blend', '-s', '{start}', '-e', '{end}', '-a'], frames: [11, 12] }, lines))
      .toEqual([null, null, 0, 12.5, 50, 50, null, 75]);
  });

  it('reads Eevee samples and Cycles tiles of older versions', () => {
    const eevee = createProgressParser({ argv: ['/opt/blender/blender', '-b', 'a.blend', '-f', '{frame}'], frames: [7] });
    expect(eevee.feed('Fra:7 Mem:33.17M (Peak 35.02M) | Time:00:00.54 | Mem:0.00M, Peak:0.00M | Scene, ViewLayer | Rendering 17 / 64 samples')).toBe(26.6);
    const tiles = createProgressParser({ argv: ['blender', '-b', 'a.blend', '-f', '1'], frames: [] });
    expect(tiles.feed('Fra:1 Mem:120.51M (Peak 121.03M) | Time:00:04.16 | Remaining:00:11.36 | Mem:41.56M, Peak:41.56M | Scene, RenderLayer | Path Tracing Tile 4/16')).toBe(25);
    expect(tiles.feed('Fra:1 Mem:120.51M (Peak 121.03M) | Time:00:09.01 | Remaining:00:01.13 | Mem:41.56M | Scene, View Layer | Rendered 12/16 Tiles, Sample 64/64')).toBe(75);
  });
});

describe('Katana renderboot', () => {
  it('reads NN% done lines and PRMan R90000 progress, one run per frame command', () => {
    const ctx = { argv: ['/opt/Katana6.0v1/bin/renderboot', '--frame', '{frame}'], frames: [1, 2] };
    const lines = [
      '[INFO R00000] Starting render of frame 1',
      '00:00:01   712MB   |     0% done - 3 rays/pixel',
      '00:00:04   780MB   |    40% done - 9 rays/pixel',
      '00:00:09   801MB   |   100% done - 12 rays/pixel',
      '00:00:01   712MB   |     5% done - 3 rays/pixel',
      'R90000  80%',
    ];
    expect(feedAll(ctx, lines)).toEqual([null, 0, 20, 50, 52.5, 90]);
  });
});

describe('unknown commands', () => {
  it('try every renderer and keep the first that matches; plain output gives no progress', () => {
    expect(feedAll({ argv: ['sh', '-c', './render.sh'], frames: [] }, ['hello', 'Rendered 50 of 100 pixels (50%)', '70% done']))
      .toEqual([null, 50, null]);
    expect(feedAll({ argv: ['echo', 'x'], frames: [1] }, ['x', '3 files done', '100%'])).toEqual([null, null, null]);
  });
});

describe('ProgressTracker', () => {
  it('answers only when the whole percent changes, per task attempt', () => {
    const t = new ProgressTracker();
    const ctx = () => ({ argv: ['povray'], frames: [] });
    expect(t.feed('1.1', ['Rendered 10 of 1000 pixels'], ctx)).toBe(1);
    expect(t.feed('1.1', ['Rendered 15 of 1000 pixels'], ctx)).toBeNull();
    expect(t.feed('1.1', ['Rendered 20 of 1000 pixels', 'Rendered 500 of 1000 pixels'], ctx)).toBe(50);
    expect(t.feed('1.2', ['Rendered 15 of 1000 pixels'], ctx)).toBe(1.5);
    t.end('1.1');
    expect(t.feed('1.1', ['Rendered 500 of 1000 pixels'], ctx)).toBe(50);
  });
});

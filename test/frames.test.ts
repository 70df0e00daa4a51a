import { describe, expect, it } from 'vitest';
import { chunkFrames, parseFrameRange } from '../src/common/frames.js';
import { expandCommands } from '../src/common/placeholders.js';
import { parseDuration } from '../src/common/duration.js';

describe('frame ranges', () => {
  it('reads lists, ranges and steps in the order written', () => {
    expect(parseFrameRange('1-10, 20, 30-33')).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 31, 32, 33]);
    expect(parseFrameRange('1-100x25')).toEqual([1, 26, 51, 76]);
    expect(parseFrameRange(' 7 ')).toEqual([7]);
    expect(parseFrameRange('-3--1')).toEqual([-3, -2, -1]);
    expect(parseFrameRange('0-4x2,9')).toEqual([0, 2, 4, 9]);
    expect(parseFrameRange('5 - 7')).toEqual([5, 6, 7]);
  });

  it.each([
    ['', /empty/], ['abc', /invalid frame range part "abc"/], ['1-', /invalid/], ['10-1', /ends before it starts/],
    ['1-10x0', /step must be at least 1/], ['1-5,3', /frame 3 appears twice/], ['1,,2', /invalid frame range part ""/],
    ['1-2000000', /more than 1000000 frames/], ['1.5', /invalid/], ['99999999999999999999', /out of range/],
  ])('refuses %j', (spec, message) => {
    expect(() => parseFrameRange(spec)).toThrow(message);
  });

  it('chunks consecutive frames, the last chunk shorter', () => {
    expect(chunkFrames([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(chunkFrames([1, 2], 10)).toEqual([[1, 2]]);
  });
});

describe('placeholders', () => {
  it('fills {start} and {end} once per chunk', () => {
    expect(expandCommands(['render', '+SF{start}', '+EF{end}'], [5, 6, 7])).toEqual([['render', '+SF5', '+EF7']]);
  });
  it('runs once per frame when {frame} is used, with zero padding', () => {
    expect(expandCommands(['r', 'out.{frame:04}.png', '{start}-{end}'], [9, 10])).toEqual([
      ['r', 'out.0009.png', '9-10'], ['r', 'out.0010.png', '9-10'],
    ]);
  });
  it('keeps the argv of a job without frames unchanged', () => {
    expect(expandCommands(['echo', '{frame}'], [])).toEqual([['echo', '{frame}']]);
  });
  it('pads negative frames after the sign', () => {
    expect(expandCommands(['{frame:03}'], [-5])).toEqual([['-005']]);
  });
});

describe('durations', () => {
  it('reads s, m, h, ms and bare seconds', () => {
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(parseDuration('90')).toBe(90_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('1.5h')).toBe(5_400_000);
    expect(() => parseDuration('soon')).toThrow(/invalid duration/);
  });
});

describe('render output lines', async () => {
  const { LineSplitter } = await import('../src/agent/lines.js');
  it('splits at \\n, \\r\\n and a lone \\r, across chunk boundaries and UTF-8 characters', () => {
    const s = new LineSplitter(100);
    const out: string[] = [];
    for (const chunk of ['Rendered 1 of 4\r', '\nRendered 2 of 4\rRend', 'ered 3 of 4\r', 'done\n', 'caf', '\u00e9 au lait\nno newline']) {
      out.push(...s.push(Buffer.from(chunk)));
    }
    out.push(...s.end());
    // A line ended by a lone \r keeps it: it is a redraw (\r\n split across chunks is not).
    expect(out).toEqual(['Rendered 1 of 4', 'Rendered 2 of 4\r', 'Rendered 3 of 4\r', 'done', 'café au lait', 'no newline']);
    const euro = Buffer.from('€\n');
    const t = new LineSplitter(100);
    expect([...t.push(euro.subarray(0, 1)), ...t.push(euro.subarray(1))]).toEqual(['€']);
  });
  it('cuts over-long lines', () => {
    const s = new LineSplitter(5);
    expect(s.push(Buffer.from('abcdefgh\n'))).toEqual(['abcde [line cut]']);
  });
});

/**
 * Frame ranges as artists write them: `1-10, 20, 30-45`, steps `1-100x5`, negative frames `-5--1`.
 * Frames keep the order written; a frame listed twice is an error (it would render twice).
 */
export const MAX_FRAMES = 1_000_000;

export class FrameRangeError extends Error {}

const PART = /^(-?\d+)(?:\s*-\s*(-?\d+)(?:\s*x\s*(\d+))?)?$/;

export function parseFrameRange(spec: string): number[] {
  const trimmed = spec.trim();
  if (trimmed === '') throw new FrameRangeError('empty frame range');
  const frames: number[] = [];
  const parts = trimmed.split(',');
  // One part cannot repeat a frame: the duplicate check (a set of up to a million frames) is for lists.
  const seen = parts.length > 1 ? new Set<number>() : null;
  for (const rawPart of parts) {
    const part = rawPart.trim();
    const m = PART.exec(part);
    if (!m) throw new FrameRangeError(`invalid frame range part "${part}" in "${spec}" (expected N, A-B or A-BxSTEP)`);
    const start = Number(m[1]);
    const end = m[2] === undefined ? start : Number(m[2]);
    const step = m[3] === undefined ? 1 : Number(m[3]);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) throw new FrameRangeError(`frame number out of range in "${part}"`);
    if (step < 1) throw new FrameRangeError(`step must be at least 1 in "${part}"`);
    if (end < start) throw new FrameRangeError(`range "${part}" ends before it starts`);
    if ((end - start) / step + 1 + frames.length > MAX_FRAMES) throw new FrameRangeError(`more than ${MAX_FRAMES} frames in "${spec}"`);
    for (let f = start; f <= end; f += step) {
      if (seen) {
        if (seen.has(f)) throw new FrameRangeError(`frame ${f} appears twice in "${spec}"`);
        seen.add(f);
      }
      frames.push(f);
    }
  }
  return frames;
}

/** Split frames into consecutive chunks of at most `size` frames (one task each). */
export function chunkFrames(frames: number[], size: number): number[][] {
  const chunks: number[][] = [];
  for (let i = 0; i < frames.length; i += size) chunks.push(frames.slice(i, i + size));
  return chunks;
}

/**
 * `{frame}`, `{start}`, `{end}` in a job's argv, optionally zero-padded: `{frame:04}`.
 * A chunk whose argv names `{frame}` runs once per frame; otherwise once for the whole chunk.
 */
import { expandItems } from './items.js';

const PLACEHOLDER = /\{(frame|start|end)(?::0?(\d+))?\}/g;

export function usesFramePlaceholder(argv: string[]): boolean {
  return argv.some((arg) => /\{frame(?::0?\d+)?\}/.test(arg));
}

function fill(arg: string, values: Record<'frame' | 'start' | 'end', number>): string {
  return arg.replace(PLACEHOLDER, (_m, name: 'frame' | 'start' | 'end', width?: string) => {
    const n = values[name];
    const digits = String(Math.abs(n)).padStart(width ? Number(width) : 0, '0');
    return n < 0 ? `-${digits}` : digits;
  });
}

/**
 * The commands one task runs, in order. A job without frames runs its argv once, unchanged. A job of items
 * (`--each`; its frames are the items' 1-based indices) runs once per item, see items.ts.
 */
export function expandCommands(argv: string[], frames: number[], items?: { values: string[]; shell: boolean }): string[][] {
  if (items) {
    // Frame placeholders first, on the job's own argv: an item's text is never read as a placeholder.
    const [start, end] = [frames[0]!, frames[frames.length - 1]!];
    return frames.map((frame, i) => expandItems(argv.map((arg) => fill(arg, { frame, start, end })), [frame], [items.values[i]!], items.shell)[0]!);
  }
  if (frames.length === 0) return [argv];
  const start = frames[0]!;
  const end = frames[frames.length - 1]!;
  if (usesFramePlaceholder(argv)) {
    return frames.map((frame) => argv.map((arg) => fill(arg, { frame, start, end })));
  }
  return [argv.map((arg) => fill(arg, { frame: start, start, end }))];
}

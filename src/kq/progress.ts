/**
 * Progress parsed from render logs, one parser per renderer. A parser is fed one task attempt's output
 * lines in order and answers the task's progress in percent (0-100) when a line tells it something.
 *
 * A task runs one command, or one per frame when its argv names `{frame}`; progress is spread evenly
 * over those commands ("runs"), and within a run over the frames the renderer reports:
 * - POV-Ray:  `Rendering frame 3 of 12` (animations), `Rendered 9216 of 19200 pixels (48%)` (POV-Ray
 *             joins these with \r on one line: the last one counts), `POV-Ray finished` ends a run.
 * - Blender:  `Fra:12 Mem:… | Sample 16/128`, `| Rendered 3/16 Tiles`, `| Path Tracing Tile 3/16`,
 *             `| Rendering 17 / 64 samples` (Eevee); `Saved: '…'` ends a frame. Fra:N is placed among
 *             the task's frames, so `-s {start} -e {end} -a` and `-f {frame}` both add up; Workbench
 *             prints only `Saved:` lines, so each one (after the `Blender 3.4.1` banner) is a frame.
 *             Checked on captured real logs (test/fixtures/blender).
 * - Katana renderboot: `NN% done` (Arnold and most renderers under renderboot), `R90000  NN%` (PRMan);
 *             a percentage that falls back marks the next run.
 * A job whose command names none of them gets a parser that tries all three and keeps the first that
 * recognises a line.
 */
import path from 'node:path';
import { usesFramePlaceholder } from '../common/placeholders.js';

export type Renderer = 'povray' | 'blender' | 'katana';

export interface ProgressContext {
  /** The job's argv, as submitted (placeholders unfilled). */
  argv: string[];
  /** The task's frames (empty for a job without frames). */
  frames: number[];
}

export interface ProgressParser {
  readonly renderer: Renderer | null;
  /** Feed one output line; returns the task's progress in percent, or null if the line says nothing about it. */
  feed(line: string): number | null;
}

const RENDERER_WORDS: Array<[Renderer, RegExp]> = [
  ['povray', /^(povray|megapov|pvengine\w*)(\.exe)?$/i],
  ['blender', /^blender(\.exe)?$/i],
  ['katana', /^(katana|renderboot)(bin)?(\.exe)?$/i],
];

/** Which renderer a job runs, from the program names in its argv (also inside `sh -c "…"`), or null. */
export function detectRenderer(argv: string[]): Renderer | null {
  for (const word of argv.flatMap((a) => a.split(/[\s;&|()]+/))) {
    const base = path.basename(word.replace(/^["']|["']$/g, ''));
    for (const [renderer, re] of RENDERER_WORDS) if (re.test(base)) return renderer;
  }
  return null;
}

export function createProgressParser(ctx: ProgressContext): ProgressParser {
  const runs = ctx.frames.length > 0 && usesFramePlaceholder(ctx.argv) ? ctx.frames.length : 1;
  const renderer = detectRenderer(ctx.argv);
  switch (renderer) {
    case 'povray': return new PovRayParser(runs);
    case 'blender': return new BlenderParser(ctx.frames, true);
    case 'katana': return new PercentDoneParser(runs);
    default: return new AnyParser([new PovRayParser(runs), new BlenderParser(ctx.frames), new PercentDoneParser(runs)]);
  }
}

const clampPercent = (fraction: number) => Math.round(Math.min(1, Math.max(0, fraction)) * 1000) / 10;
const ratio = (done: string, total: string) => (Number(total) > 0 ? Number(done) / Number(total) : 0);

/** Runs of a task, each 0..1 done: `run` is how many ended, `within` how far the current one is. */
abstract class RunParser implements ProgressParser {
  abstract readonly renderer: Renderer;
  protected run = 0;
  constructor(protected readonly runs: number) {}
  abstract feed(line: string): number | null;
  protected percent(within: number): number {
    return clampPercent((Math.min(this.run, this.runs - 1) + Math.min(1, within)) / this.runs);
  }
  protected endRun(): number {
    this.run = Math.min(this.run + 1, this.runs);
    return clampPercent(this.run / this.runs);
  }
}

const POV_FRAME = /Rendering frame (\d+) of (\d+)/;
const POV_PIXELS = /Rendered (\d+) of (\d+) pixels/g;
const POV_DONE = /^POV-Ray finished/;

export class PovRayParser extends RunParser {
  readonly renderer = 'povray' as const;
  private frame = 0;
  private frameCount = 0;
  private pixels = 0;

  feed(line: string): number | null {
    if (POV_DONE.test(line)) {
      this.frame = this.frameCount = this.pixels = 0;
      return this.endRun();
    }
    const f = POV_FRAME.exec(line);
    if (f) {
      this.frame = Number(f[1]);
      this.frameCount = Number(f[2]);
      this.pixels = 0;
      return this.percent(this.within());
    }
    const matches = [...line.matchAll(POV_PIXELS)];
    const last = matches[matches.length - 1];
    if (!last) return null;
    this.pixels = ratio(last[1]!, last[2]!);
    return this.percent(this.within());
  }

  private within(): number {
    if (this.frameCount <= 0) return this.pixels;
    return (Math.max(0, this.frame - 1) + this.pixels) / this.frameCount;
  }
}

const BLENDER_FRAME = /^Fra:(-?\d+)\s/;
const BLENDER_STEPS = [
  /Rendered (\d+)\/(\d+) Tiles/,
  /Path Tracing Tile (\d+)\/(\d+)/,
  /Rendering (\d+) \/ (\d+) samples/,
  /\bSample (\d+)\/(\d+)/,
];
const BLENDER_SAVED = /^Saved: /;
const BLENDER_BANNER = /^Blender \d+\.\d+/;

export class BlenderParser implements ProgressParser {
  readonly renderer = 'blender' as const;
  private index = 0;
  private within = 0;
  /** The current frame was saved and no Fra: line has named the next one yet. */
  private saved = false;

  /** `seen`: the command is known to be Blender; otherwise a banner or Fra: line must show it first. */
  constructor(private readonly frames: number[], private seen = false) {}

  feed(line: string): number | null {
    if (BLENDER_BANNER.test(line)) {
      this.seen = true;
      return null;
    }
    if (BLENDER_SAVED.test(line)) {
      if (!this.seen) return null;
      // Workbench prints no Fra: lines at all: a second Saved: in a row is the next frame.
      if (this.saved) this.index = Math.min(this.index + 1, Math.max(0, this.frames.length - 1));
      this.saved = true;
      this.within = 1;
      return this.percent();
    }
    const f = BLENDER_FRAME.exec(line);
    if (!f) return null;
    this.seen = true;
    const index = this.frames.indexOf(Number(f[1]));
    if (index >= 0 && index !== this.index) {
      this.index = index;
      this.within = 0;
    } else if (index < 0 && this.saved) {
      this.index = Math.min(this.index + 1, Math.max(0, this.frames.length - 1));
      this.within = 0;
    }
    this.saved = false;
    for (const re of BLENDER_STEPS) {
      const m = re.exec(line);
      if (m) {
        this.within = ratio(m[1]!, m[2]!);
        break;
      }
    }
    return this.percent();
  }

  private percent(): number {
    const count = Math.max(1, this.frames.length);
    return clampPercent((this.index + this.within) / count);
  }
}

const PERCENT_DONE = /(?:^|[\s|\]])(\d{1,3}(?:\.\d+)?)\s?% done\b/;
const PRMAN_PROGRESS = /^R90000\s+(\d{1,3})%/;

export class PercentDoneParser extends RunParser {
  readonly renderer = 'katana' as const;
  private last = 0;

  feed(line: string): number | null {
    const m = PERCENT_DONE.exec(line) ?? PRMAN_PROGRESS.exec(line);
    if (!m) return null;
    const p = Math.min(100, Number(m[1]));
    // A percentage that falls back well below the last one is the next command's render starting.
    if (p + 10 < this.last) this.run = Math.min(this.run + 1, this.runs - 1);
    this.last = p;
    return this.percent(p / 100);
  }
}

/** For a command kq does not recognise: the first parser that understands a line is kept. */
class AnyParser implements ProgressParser {
  private chosen: ProgressParser | null = null;
  constructor(private readonly candidates: ProgressParser[]) {}

  get renderer(): Renderer | null {
    return this.chosen?.renderer ?? null;
  }

  feed(line: string): number | null {
    if (this.chosen) return this.chosen.feed(line);
    for (const p of this.candidates) {
      const r = p.feed(line);
      if (r !== null) {
        this.chosen = p;
        return r;
      }
    }
    return null;
  }
}

/**
 * One parser per running task attempt, created on its first output. Answers a new percentage only
 * when its whole-number part changed, so the store and subscribers see at most ~100 updates per task.
 */
export class ProgressTracker {
  private readonly tasks = new Map<string, { parser: ProgressParser; reported: number }>();

  constructor(private readonly maxTracked = 4096) {}

  feed(taskKey: string, lines: string[], context: () => ProgressContext): number | null {
    let t = this.tasks.get(taskKey);
    if (!t) {
      t = { parser: createProgressParser(context()), reported: -1 };
      this.tasks.set(taskKey, t);
      // Attempts whose `finished` never came (lost agents) are forgotten oldest first.
      if (this.tasks.size > this.maxTracked) this.tasks.delete(this.tasks.keys().next().value!);
    }
    let latest: number | null = null;
    for (const line of lines) latest = t.parser.feed(line) ?? latest;
    if (latest === null || Math.floor(latest) === Math.floor(t.reported)) return null;
    t.reported = latest;
    return latest;
  }

  end(taskKey: string): void {
    this.tasks.delete(taskKey);
  }
}

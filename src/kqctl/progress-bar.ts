/**
 * The progress line of `kqctl wait` and `submit --wait` on a terminal (stderr): frames done, percent and
 * an ETA from the jobs' own pace since kqctl started watching. Redrawn in place; erased at the end, so
 * what remains on the screen is exactly what kqctl prints without a terminal.
 */
import type { JobSummary } from '../protocol/index.js';

const WIDTH = 24;

export class ProgressBar {
  private first: { at: number; percent: number } | null = null;
  private drawn = false;

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  update(jobs: JobSummary[], now = Date.now()): void {
    if (jobs.length === 0) return;
    // Each job weighs its frames (a job without frames counts as one).
    const weight = (j: JobSummary) => Math.max(1, j.framesTotal);
    const total = jobs.reduce((n, j) => n + weight(j), 0);
    const percent = jobs.reduce((n, j) => n + (j.state === 'Completed' ? 100 : j.progress ?? 0) * weight(j), 0) / total;
    const framesDone = jobs.reduce((n, j) => n + j.framesDone, 0);
    const framesTotal = jobs.reduce((n, j) => n + j.framesTotal, 0);
    this.first ??= { at: now, percent };
    const rate = (percent - this.first.percent) / Math.max(1, now - this.first.at); // percent per ms
    const eta = rate > 0 && percent < 100 ? formatEta((100 - percent) / rate) : '--';
    const filled = Math.round((percent / 100) * WIDTH);
    const states = [...new Set(jobs.map((j) => (j.paused ? `${j.state} (paused)` : j.state)))].join(', ');
    const what = jobs.length === 1 ? `job ${jobs[0]!.id}` : `${jobs.length} jobs`;
    const frames = framesTotal > 0 ? ` ${framesDone}/${framesTotal} frames` : '';
    const line = `${what} [${'#'.repeat(filled)}${'-'.repeat(WIDTH - filled)}] ${percent.toFixed(1)}%${frames}  ETA ${eta}  ${states}`;
    const columns = this.out.columns || 80;
    this.out.write(`\r\x1b[2K${line.slice(0, columns - 1)}`);
    this.drawn = true;
  }

  /** Erase the line (before the normal output follows). */
  end(): void {
    if (this.drawn) this.out.write('\r\x1b[2K');
    this.drawn = false;
  }
}

export function formatEta(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * The last lines a render wrote to stderr, sent with its outcome so that `kqctl show` and the page can say
 * why it failed. A redrawn line (ended by a lone \r) is replaced by the next one, as on a terminal, so a
 * progress counter takes one line of the tail, not all of it.
 */
import { isRedrawn } from './lines.js';

export const STDERR_TAIL_LINES = 10;
export const STDERR_TAIL_CHARS = 500;

export class StderrTail {
  private readonly lines: string[] = [];
  private lastRedrawn = false;

  push(lines: string[]): void {
    for (const raw of lines) {
      const redrawn = isRedrawn(raw);
      const text = redrawn ? raw.slice(0, -1) : raw;
      const line = text.length > STDERR_TAIL_CHARS ? `${text.slice(0, STDERR_TAIL_CHARS)}…` : text;
      if (this.lastRedrawn) this.lines.pop();
      this.lines.push(line);
      if (this.lines.length > STDERR_TAIL_LINES) this.lines.shift();
      this.lastRedrawn = redrawn;
    }
  }

  /** The tail, without trailing empty lines. */
  get(): string[] {
    const out = [...this.lines];
    while (out.length > 0 && out[out.length - 1]!.trim() === '') out.pop();
    return out;
  }
}

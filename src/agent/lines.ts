/**
 * Split a render's output into lines at \n, \r\n and a lone \r: renderers redraw a progress counter with
 * \r (POV-Ray's "Rendered N of M pixels"), and kq should see each redraw as it happens, not at frame end.
 * A line ended by a lone \r keeps that \r (see isRedrawn): a terminal overwrites it with the next line,
 * and kq's job log keeps only the last redraw of a burst while its progress parser sees every one.
 */
import { StringDecoder } from 'node:string_decoder';

export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private rest = '';
  /**
   * A line the last chunk ended with \r: a lone \r (a redraw) unless the next chunk starts with \n.
   * The next push decides; flushPending (the caller's short timer) or end() give it out as a redraw.
   */
  private pendingCR: string | null = null;

  constructor(private readonly maxLine: number) {}

  push(chunk: Buffer): string[] {
    let text = this.decoder.write(chunk);
    const lines: string[] = [];
    if (this.pendingCR !== null && text !== '') {
      lines.push(text.startsWith('\n') ? this.pendingCR : this.pendingCR + '\r');
      if (text.startsWith('\n')) text = text.slice(1);
      this.pendingCR = null;
    }
    if (text === '') return lines;
    // [line, break, line, break, …, unfinished rest]
    const parts = (this.rest + text).split(/(\r\n|\r|\n)/);
    this.rest = parts.pop()!; // the unfinished last line ('' when the text ended with a line break)
    let complete = parts.length;
    if (this.rest === '' && parts[complete - 1] === '\r') {
      this.pendingCR = this.cut(parts[complete - 2]!);
      complete -= 2;
    }
    for (let i = 0; i + 1 < complete; i += 2) lines.push(this.cut(parts[i]!) + (parts[i + 1] === '\r' ? '\r' : ''));
    if (this.rest.length > this.maxLine) {
      lines.push(this.cut(this.rest));
      this.rest = '';
    }
    return lines;
  }

  get hasPending(): boolean {
    return this.pendingCR !== null;
  }

  /** No \n followed the \r in time: the pending line was a redraw. */
  flushPending(): string[] {
    if (this.pendingCR === null) return [];
    const line = this.pendingCR + '\r';
    this.pendingCR = null;
    return [line];
  }

  end(): string[] {
    const lines = this.flushPending();
    const last = this.rest + this.decoder.end();
    this.rest = '';
    return last === '' ? lines : [...lines, this.cut(last)];
  }

  private cut(line: string): string {
    return line.length > this.maxLine ? `${line.slice(0, this.maxLine)} [line cut]` : line;
  }
}

/** The line was ended by a lone \r: the next line of its stream overwrites it on a terminal. */
export function isRedrawn(line: string): boolean {
  return line.endsWith('\r');
}

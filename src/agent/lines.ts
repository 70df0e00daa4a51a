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
  /** The last chunk ended in \r: a \n starting the next one is the second half of \r\n. */
  private afterCR = false;

  constructor(private readonly maxLine: number) {}

  push(chunk: Buffer): string[] {
    let text = this.decoder.write(chunk);
    if (this.afterCR && text.startsWith('\n')) text = text.slice(1);
    if (text === '') return [];
    this.afterCR = text.endsWith('\r');
    // [line, break, line, break, …, unfinished rest]
    const parts = (this.rest + text).split(/(\r\n|\r|\n)/);
    this.rest = parts.pop()!; // the unfinished last line ('' when the text ended with a line break)
    const lines: string[] = [];
    for (let i = 0; i + 1 < parts.length; i += 2) lines.push(this.cut(parts[i]!) + (parts[i + 1] === '\r' ? '\r' : ''));
    if (this.rest.length > this.maxLine) {
      lines.push(this.cut(this.rest));
      this.rest = '';
    }
    return lines;
  }

  end(): string[] {
    const last = this.rest + this.decoder.end();
    this.rest = '';
    return last === '' ? [] : [this.cut(last)];
  }

  private cut(line: string): string {
    return line.length > this.maxLine ? `${line.slice(0, this.maxLine)} [line cut]` : line;
  }
}

/** The line was ended by a lone \r: the next line of its stream overwrites it on a terminal. */
export function isRedrawn(line: string): boolean {
  return line.endsWith('\r');
}

/**
 * Split a render's output into lines at \n, \r\n and a lone \r: renderers redraw a progress counter with
 * \r (POV-Ray's "Rendered N of M pixels"), and kq should see each redraw as it happens, not at frame end.
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
    const parts = (this.rest + text).split(/\r\n|\r|\n/);
    this.rest = parts.pop()!; // the unfinished last line ('' when the text ended with a line break)
    if (this.rest.length > this.maxLine) {
      parts.push(this.rest);
      this.rest = '';
    }
    return parts.map((l) => this.cut(l));
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

/**
 * Render output on its way to kq, in batches sized by bytes (as they travel, JSON-encoded) so that no
 * update exceeds what kq's update port takes; a line too long for one message is cut, with a marker
 * that says so — output is never dropped silently.
 */
import { LOG_BATCH_BYTES, MAX_LOG_LINE_BYTES } from '../protocol/index.js';

/** Lines per batch at most (the update schema's limit is 10,000). */
const MAX_BATCH_LINES = 500;

export class LogBatch {
  private lines: string[] = [];
  private bytes = 0;

  /** Add lines; `flush` is called with each batch that became full. */
  add(lines: string[], flush: (batch: string[]) => void): void {
    for (const raw of lines) {
      const line = cutLine(raw);
      const size = Buffer.byteLength(JSON.stringify(line)) + 1;
      if (this.lines.length > 0 && (this.bytes + size > LOG_BATCH_BYTES || this.lines.length >= MAX_BATCH_LINES)) flush(this.take());
      this.lines.push(line);
      this.bytes += size;
    }
    if (this.bytes >= LOG_BATCH_BYTES || this.lines.length >= MAX_BATCH_LINES) flush(this.take());
  }

  get empty(): boolean {
    return this.lines.length === 0;
  }

  take(): string[] {
    const lines = this.lines;
    this.lines = [];
    this.bytes = 0;
    return lines;
  }
}

/** A line over MAX_LOG_LINE_BYTES keeps its first bytes and says how long it was. */
export function cutLine(line: string): string {
  if (line.length * 3 <= MAX_LOG_LINE_BYTES) return line; // cannot be over the limit: skip the byte count
  const bytes = Buffer.from(line);
  if (bytes.length <= MAX_LOG_LINE_BYTES) return line;
  return `${bytes.subarray(0, MAX_LOG_LINE_BYTES).toString()} [kq: line cut at ${MAX_LOG_LINE_BYTES} bytes of ${bytes.length}]`;
}

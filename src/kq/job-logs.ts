/**
 * One log file per job under <data root>/logs, named by job id only (a job's name never reaches a path).
 * Appends go straight to the file with write(2): lines kq has received survive a kill -9 of kq.
 */
import fs from 'node:fs';
import { DiskFullError } from './disk.js';

export interface JobLogOptions {
  /** Bytes a single task may write to the job log before its output is cut (a marker is written). */
  maxTaskBytes: number;
  /** Open file handles kept; older ones are closed. */
  maxOpen: number;
  /** The data root's free space: appends stop short of kq's reserve, and report the disk full. */
  space?: { hasRoom(bytes: number): boolean; failed(err: unknown, what: string): boolean };
}

interface OpenLog { fd: number; size: number }

export class JobLogs {
  private readonly open = new Map<number, OpenLog>();
  /** Bytes written per running task attempt, for the per-task cap. */
  private readonly taskBytes = new Map<string, number>();
  /** Per running task attempt: its last line if it was a redraw (ended by a lone \r), not written yet. */
  private readonly held = new Map<string, { jobId: number; prefix: string; text: string }>();

  constructor(private readonly pathOf: (jobId: number) => string, private readonly options: JobLogOptions) {}

  /**
   * Append text; returns the offset it was written at (for `log -f` de-duplication). Throws when it
   * cannot (DiskFullError or the write's error); what a failed write got out is kept in the size.
   */
  append(jobId: number, text: string): number {
    const bytes = Buffer.from(text);
    const space = this.options.space;
    if (space && !space.hasRoom(bytes.length)) throw new DiskFullError(`no room for ${this.pathOf(jobId)}: the data root is (nearly) full`);
    try {
      const log = this.handle(jobId);
      const offset = log.size;
      try {
        for (let off = 0; off < bytes.length;) {
          const n = fs.writeSync(log.fd, bytes, off);
          off += n;
          log.size += n;
        }
      } catch (err) {
        // A partial line may be in the file: the next append starts at the real end.
        log.size = fs.fstatSync(log.fd).size;
        throw err;
      }
      return offset;
    } catch (err) {
      space?.failed(err, `job log ${this.pathOf(jobId)}`);
      throw err;
    }
  }

  /**
   * Append a task's output lines, honouring the per-task cap. A line the agent marks as redrawn (ended by
   * a lone \r: a progress counter) is held back and replaced by the next redraw, so a burst of redraws
   * leaves its last value, not a line per redraw (endTask writes one still held at the end).
   * `prefix` (e.g. `[t3 f9-12] `) starts each line. Returns what was written, or null if nothing was.
   */
  appendTaskOutput(jobId: number, taskKey: string, lines: string[], prefix = ''): { offset: number; text: string } | null {
    const kept: string[] = [];
    let held: string | null = this.held.get(taskKey)?.text ?? null;
    for (const line of lines) {
      if (line.endsWith('\r')) {
        held = line.slice(0, -1);
        continue;
      }
      // The counter's own last value (same text but its numbers) replaces the held redraw; any other line
      // ends the burst, and the held value is kept before it (POV-Ray's 100% is often followed by `---` on its row).
      if (held !== null && counterShape(held) !== counterShape(line)) kept.push(held);
      held = null;
      kept.push(line);
    }
    if (held === null) this.held.delete(taskKey);
    else this.held.set(taskKey, { jobId, prefix, text: held });
    if (kept.length === 0) return null;
    return this.appendCapped(jobId, taskKey, kept.map((l) => prefix + l + '\n').join(''));
  }

  private appendCapped(jobId: number, taskKey: string, text: string): { offset: number; text: string } | null {
    const used = this.taskBytes.get(taskKey) ?? 0;
    if (used >= this.options.maxTaskBytes) return null;
    if (used + Buffer.byteLength(text) > this.options.maxTaskBytes) {
      text = Buffer.from(text).subarray(0, Math.max(0, this.options.maxTaskBytes - used)).toString() +
        `\n[kq] task output over ${this.options.maxTaskBytes} bytes: the rest is not logged\n`;
      this.taskBytes.set(taskKey, this.options.maxTaskBytes);
    } else {
      this.taskBytes.set(taskKey, used + Buffer.byteLength(text));
    }
    return { offset: this.append(jobId, text), text };
  }

  /** The attempt ended: a redrawn line still held is its last word and is written now. Returns what was written. */
  endTask(taskKey: string): { jobId: number; offset: number; text: string } | null {
    const held = this.held.get(taskKey);
    this.held.delete(taskKey);
    let written: { offset: number; text: string } | null = null;
    try {
      if (held) written = this.appendCapped(held.jobId, taskKey, held.prefix + held.text + '\n');
    } catch { /* a full disk is reported by DiskSpace; the line is lost */ }
    this.taskBytes.delete(taskKey);
    return held && written ? { jobId: held.jobId, ...written } : null;
  }

  /** Read up to `max` bytes from `from`. */
  read(jobId: number, from: number, max: number): { text: string; next: number; size: number } {
    let fd: number;
    try {
      fd = fs.openSync(this.pathOf(jobId), 'r');
    } catch {
      return { text: '', next: from, size: 0 };
    }
    try {
      const size = fs.fstatSync(fd).size;
      const length = Math.max(0, Math.min(max, size - from));
      const buf = Buffer.alloc(length);
      const n = length > 0 ? fs.readSync(fd, buf, 0, length, from) : 0;
      const end = n < size - from ? completeUtf8Prefix(buf.subarray(0, n)) : n;
      return { text: buf.subarray(0, end).toString('utf8'), next: from + end, size };
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Delete a removed job's log file (kqctl rm/clean). */
  remove(jobId: number): void {
    const log = this.open.get(jobId);
    if (log) {
      fs.closeSync(log.fd);
      this.open.delete(jobId);
    }
    fs.rmSync(this.pathOf(jobId), { force: true });
  }

  close(): void {
    for (const log of this.open.values()) fs.closeSync(log.fd);
    this.open.clear();
  }

  private handle(jobId: number): OpenLog {
    let log = this.open.get(jobId);
    if (log) {
      // Refresh recency for the LRU.
      this.open.delete(jobId);
      this.open.set(jobId, log);
      return log;
    }
    const fd = fs.openSync(this.pathOf(jobId), 'a', 0o644);
    log = { fd, size: fs.fstatSync(fd).size };
    this.open.set(jobId, log);
    if (this.open.size > this.options.maxOpen) {
      const [oldestId, oldest] = this.open.entries().next().value as [number, OpenLog];
      fs.closeSync(oldest.fd);
      this.open.delete(oldestId);
    }
    return log;
  }
}

/** A line with its numbers blanked: `Rendered 9 of 10 pixels` and `Rendered 10 of 10 pixels` are the same counter. */
function counterShape(line: string): string {
  return line.replace(/\d+(\.\d+)?/g, '#');
}

/** Length of the longest prefix that does not end inside a UTF-8 character (reads never split one). */
export function completeUtf8Prefix(buf: Buffer): number {
  for (let i = buf.length - 1; i >= Math.max(0, buf.length - 4); i--) {
    const b = buf[i]!;
    if ((b & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead byte
    const need = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
    return i + need <= buf.length ? buf.length : i;
  }
  return buf.length;
}

/**
 * kq.log, as pino's destination: each line written at once with write(2), and never an exception. A
 * line that cannot be written (disk full) is dropped and counted; the first line that fits again says
 * how many were lost. Unlike pino.destination there is no buffer to flush at exit, so nothing can retry
 * a failing write forever while SIGTERM waits (pino's exit-time flushSync on ENOSPC did exactly that).
 */
import fs from 'node:fs';

export class LogFile {
  private fd: number;
  private dropped = 0;
  /** The last write stopped mid-line: the next one starts on a new line. */
  private partial = false;

  /** `onError` hears of every failed write (to notice a full disk); it must not log through this file. */
  constructor(file: string, private readonly onError: (err: unknown) => void) {
    // O_NONBLOCK and a regular file only: a FIFO planted at this name would block kq's start (or its writes).
    const flags = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NONBLOCK;
    let fd: number;
    try {
      fd = fs.openSync(file, flags, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENXIO') throw new Error(`${file} is not a regular file: remove it`);
      throw err;
    }
    if (!fs.fstatSync(fd).isFile()) {
      fs.closeSync(fd);
      throw new Error(`${file} is not a regular file: remove it`);
    }
    this.fd = fd;
  }

  write(line: string): boolean {
    if (this.fd < 0) return true;
    if (this.dropped > 0) {
      const note = JSON.stringify({ level: 40, time: Date.now(), pid: process.pid, dropped: this.dropped, msg: `${this.dropped} log line(s) dropped: they could not be written` }) + '\n';
      if (!this.writeAll(note)) {
        this.dropped++;
        return true;
      }
      this.dropped = 0;
    }
    if (!this.writeAll(line)) this.dropped++;
    return true;
  }

  /** pino's logger.flush(): lines are already written. */
  flush(cb?: (err?: Error) => void): void {
    cb?.();
  }

  close(): void {
    if (this.fd < 0) return;
    try {
      fs.closeSync(this.fd);
    } catch { /* nothing left to do */ }
    this.fd = -1;
  }

  private writeAll(text: string): boolean {
    const buf = Buffer.from(this.partial ? '\n' + text : text);
    let off = 0;
    try {
      while (off < buf.length) off += fs.writeSync(this.fd, buf, off);
      this.partial = false;
      return true;
    } catch (err) {
      if (off > 0) this.partial = true;
      this.onError(err);
      return false;
    }
  }
}

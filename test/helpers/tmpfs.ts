/**
 * A private tmpfs for tests of a full disk (root only): mounted in a temp dir of its own, filled and emptied
 * with one filler file, unmounted by `cleanup()` (call it in afterAll).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './kq.js';

export class Tmpfs {
  readonly dir: string;
  private mounted = false;

  constructor(prefix: string) {
    this.dir = tempDir(prefix);
  }

  mount(size: string): void {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', this.dir]);
    this.mounted = true;
  }

  free(): number {
    const s = fs.statfsSync(this.dir);
    return s.bavail * s.bsize;
  }

  /** Grow the filler until only `leave` bytes are free (0: until the disk refuses more). */
  fill(leave = 0): void {
    const fd = fs.openSync(path.join(this.dir, 'filler'), 'a');
    const block = Buffer.alloc(64 * 1024);
    try {
      for (let want = this.free() - leave; want > 0; want -= block.length) fs.writeSync(fd, block, 0, Math.min(block.length, want));
      if (leave === 0) for (;;) fs.writeSync(fd, block, 0, 4096);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    } finally {
      fs.closeSync(fd);
    }
  }

  unfill(): void {
    fs.rmSync(path.join(this.dir, 'filler'), { force: true });
  }

  cleanup(): void {
    if (this.mounted) execFileSync('umount', ['-l', this.dir]);
    this.mounted = false;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** One kq per data root: an exclusive lock file holding the owner's pid; a dead owner's lock is taken over. */
import fs from 'node:fs';
import { isAlive } from '../common/processes.js';

export interface Lock { release(): void }

export function acquireLock(file: string): Lock {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o644);
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      let released = false;
      return {
        release() {
          if (released) return;
          released = true;
          try {
            if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.rmSync(file);
          } catch { /* already gone */ }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(fs.readFileSync(file, 'utf8').trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) {
        throw new Error(`another kq (pid ${owner}) is already running on this data root (lock ${file}); stop it first or use another --data-root`);
      }
      fs.rmSync(file, { force: true }); // stale: its owner is gone (e.g. kill -9)
    }
  }
  throw new Error(`cannot take the lock ${file}: another kq is starting on this data root`);
}

/**
 * One kq per data root: an exclusive SQLite lock on `kq.lock`, held for kq's lifetime. The kernel drops it
 * when kq dies however it dies, so a stale lock never blocks a start (whatever now runs under the old pid),
 * and two starts racing for it cannot both win. The owner's pid goes to `kq.lock.pid`, for messages only.
 */
import fs from 'node:fs';
import Database from 'better-sqlite3';

export interface Lock { release(): void }

export function acquireLock(file: string): Lock {
  let db: Database.Database;
  try {
    db = lockedDatabase(file);
  } catch (err) {
    if (code(err) !== 'SQLITE_NOTADB') throw err;
    // An older kq's pid file, not a database. Emptied in place (same inode, so a racing start still
    // contends for the same lock), it becomes an empty database that takes the lock like any other.
    fs.truncateSync(file, 0);
    db = lockedDatabase(file);
  }
  try {
    fs.writeFileSync(`${file}.pid`, `${process.pid}\n`);
  } catch { /* only used to name the owner in an error message */ }
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      // kq.lock itself stays: removing it would let a later start lock a new file while another holds the old.
      fs.rmSync(`${file}.pid`, { force: true });
      db.close();
    },
  };
}

/** Open the lock database and take its exclusive lock, or throw (another kq holds it: a clear message). */
function lockedDatabase(file: string): Database.Database {
  // timeout 0: a lock held by another kq is reported at once, not waited for.
  const db = new Database(file, { timeout: 0 });
  try {
    // EXCLUSIVE locking mode keeps the lock after the first write transaction, until the connection closes.
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS lock (id INTEGER PRIMARY KEY); COMMIT');
    return db;
  } catch (err) {
    db.close();
    if (code(err) === 'SQLITE_BUSY' || code(err) === 'SQLITE_LOCKED') {
      const owner = ownerPid(file);
      throw new Error(`another kq${owner ? ` (pid ${owner})` : ''} is already running on this data root (lock ${file}); stop it first or use another --data-root`);
    }
    if (code(err) === 'SQLITE_NOTADB') throw err;
    throw new Error(`cannot take the lock ${file} (${code(err) ?? (err as Error).message}): is the data root on a file system without locks?`);
  }
}

function ownerPid(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(`${file}.pid`, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function code(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

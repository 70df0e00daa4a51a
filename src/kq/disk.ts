/**
 * Is there room on the data root? kq keeps a reserve free for what it must record (the job table, its
 * own log): job logs, the only writes a peer drives, stop short of it. The disk is "full" when a write
 * failed for lack of space (ENOSPC, EDQUOT, SQLITE_FULL) or job logs reached the reserve; kq then keeps
 * answering, hands out no new work and says so (ping, `kqctl agents`, the monitor), and polls the free
 * space to resume by itself once there is room again.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import type { Logger } from 'pino';

export interface DiskStatus {
  full: boolean;
  /** When the disk was found full (ISO time), and what failed. */
  since: string | null;
  reason: string | null;
  dataRoot: string;
}

export interface DiskSpaceOptions {
  /** Job logs leave at least this much free. */
  reserveBytes: number;
  /** While full, how often free space is checked. */
  pollMs: number;
}

export const DISK_DEFAULTS: DiskSpaceOptions = { reserveBytes: 4 * 1024 * 1024, pollMs: 1000 };

/** A write refused because the disk is (nearly) full. */
export class DiskFullError extends Error {
  readonly code = 'ENOSPC';
}

/** Does this error mean there is no room left? (fs errors, SQLite's, or ours) */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}

/** Free space is measured again after this many bytes written or this long, whichever comes first. */
const RECHECK_BYTES = 256 * 1024;
const RECHECK_MS = 250;

export class DiskSpace extends EventEmitter<{ full: [DiskStatus]; ok: [{ fullForMs: number }] }> {
  private fullSince: number | null = null;
  private reason: string | null = null;
  private checkedAt = 0;
  private freeAtCheck = Infinity;
  private writtenSinceCheck = 0;
  private poller: NodeJS.Timeout | null = null;
  /** Set once kq's logger exists (it may itself be what fails). */
  log: Logger | null = null;

  constructor(private readonly dataRoot: string, private readonly o: DiskSpaceOptions = DISK_DEFAULTS) {
    super();
  }

  get isFull(): boolean {
    return this.fullSince !== null;
  }

  status(): DiskStatus {
    return { full: this.isFull, since: this.fullSince === null ? null : new Date(this.fullSince).toISOString(), reason: this.reason, dataRoot: this.dataRoot };
  }

  /** May a job log take `bytes` more? No while the disk is full, nor if it would eat into the reserve. */
  hasRoom(bytes: number): boolean {
    if (this.isFull) return false;
    const now = Date.now();
    if (now - this.checkedAt > RECHECK_MS || this.writtenSinceCheck + bytes > RECHECK_BYTES || this.freeAtCheck - this.writtenSinceCheck - bytes < this.o.reserveBytes) {
      this.measure(now);
    }
    if (this.freeAtCheck - this.writtenSinceCheck - bytes >= this.o.reserveBytes) {
      this.writtenSinceCheck += bytes;
      return true;
    }
    this.enterFull(`less than ${formatBytes(this.o.reserveBytes)} free on the data root (kept for the job table and kq's own log)`);
    return false;
  }

  /** A write failed: returns true (and kq is now "full") if it was for lack of space. */
  failed(err: unknown, what: string): boolean {
    if (!isDiskFull(err)) return false;
    this.enterFull(`${what}: ${(err as Error).message}`);
    return true;
  }

  stop(): void {
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
  }

  private enterFull(reason: string): void {
    if (this.isFull) return;
    this.fullSince = Date.now();
    this.reason = reason;
    this.log?.warn({ dataRoot: this.dataRoot, reason }, 'disk full: no new work is handed out until there is room again');
    this.poller = setInterval(() => this.poll(), this.o.pollMs);
    this.emit('full', this.status());
  }

  private poll(): void {
    // Resume only with room to spare: twice the reserve, so kq does not flap at the edge.
    if (this.measure(Date.now()) < 2 * this.o.reserveBytes || this.fullSince === null) return;
    const fullForMs = Date.now() - this.fullSince;
    this.stop();
    this.fullSince = null;
    this.reason = null;
    this.log?.info({ dataRoot: this.dataRoot, fullForMs, freeBytes: this.freeAtCheck }, 'disk space is back: resuming');
    this.emit('ok', { fullForMs });
  }

  /** Free bytes for kq (statfs: blocks available to unprivileged users). */
  private measure(now: number): number {
    try {
      const s = fs.statfsSync(this.dataRoot);
      this.freeAtCheck = s.bavail * s.bsize;
    } catch {
      this.freeAtCheck = Infinity; // cannot tell: rely on write errors
    }
    this.checkedAt = now;
    this.writtenSinceCheck = 0;
    return this.freeAtCheck;
  }
}

function formatBytes(n: number): string {
  return n >= 1024 * 1024 ? `${Math.round(n / (1024 * 1024))} MiB` : `${Math.round(n / 1024)} KiB`;
}

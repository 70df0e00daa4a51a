/**
 * The background work on big jobs, one batch (one transaction) per event-loop turn, so kq keeps reading
 * requests and heartbeats while a million-frame job goes in, is stopped or restarted: the job's row and
 * counts already say the result; its task rows follow (store.continueJob). The table records what is
 * left, so a kq that dies midway is resumed by the next one (resume()).
 */
import type { Logger } from 'pino';
import type { Store } from './store.js';

export interface TaskQueuerDeps {
  store: Store;
  log: Logger;
  /** A batch of this job's tasks is in: there is work to hand out. */
  onQueued(jobId: number): void;
}

/** After a failed batch (e.g. the disk is full), try again this much later. */
const RETRY_MS = 1000;

export class TaskQueuer {
  private readonly jobs = new Set<number>();
  private timer: NodeJS.Immediate | NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly d: TaskQueuerDeps) {}

  /** Do the rest of this job's background work (if it has any). */
  add(jobId: number): void {
    this.jobs.add(jobId);
    this.schedule(0);
  }

  /** Resume the jobs a previous kq was still queueing. */
  resume(): void {
    for (const jobId of this.d.store.jobsInProgress()) this.add(jobId);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) {
      clearImmediate(this.timer as NodeJS.Immediate);
      clearTimeout(this.timer as NodeJS.Timeout);
    }
    this.timer = null;
  }

  private schedule(delayMs: number): void {
    if (this.timer || this.stopped || this.jobs.size === 0) return;
    this.timer = delayMs > 0 ? setTimeout(() => this.batch(), delayMs) : setImmediate(() => this.batch());
  }

  private batch(): void {
    this.timer = null;
    const [jobId] = this.jobs;
    if (jobId === undefined) return;
    this.jobs.delete(jobId);
    try {
      // Round robin: a job still being queued goes to the back, behind any other.
      if (this.d.store.continueJob(jobId)) this.jobs.add(jobId);
      else this.d.log.info({ job: jobId }, 'background work on the job done (tasks inserted, stop or restart applied)');
    } catch (err) {
      this.jobs.add(jobId);
      this.d.log.error({ job: jobId, err: (err as Error).message }, 'queueing the job\'s tasks failed; retrying');
      this.schedule(RETRY_MS);
      return;
    }
    try {
      this.d.onQueued(jobId);
    } finally {
      this.schedule(0);
    }
  }
}

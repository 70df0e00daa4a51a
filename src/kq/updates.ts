/** What agents push on the update port: heartbeats, task started, log lines, task finished, bye. */
import type { Logger } from 'pino';
import type { Update } from '../protocol/index.js';
import type { JobLogs } from './job-logs.js';
import type { ProgressTracker } from './progress.js';
import type { Publisher } from './publisher.js';
import type { Scheduler } from './scheduler.js';
import type { Store, TaskRef, TaskRow } from './store.js';
import { isDiskFull } from './disk.js';

export interface UpdateDeps {
  /** How often agents heartbeat: an assignment is given two of them (and a second) to be acknowledged. */
  heartbeatMs: number;
  store: Store;
  logs: JobLogs;
  progress: ProgressTracker;
  publisher: Publisher;
  scheduler: Scheduler;
  log: Logger;
  epoch: string;
  /** An update, or a whole group's transaction, failed: say so (a full disk is reported once, by DiskSpace). */
  reportError(err: unknown): void;
}

export class UpdateHandler {
  constructor(private readonly d: UpdateDeps) {}

  /**
   * Updates that were already queued together, handled in ONE write transaction: a commit per group instead
   * of about three per task (claim, `started`'s pid, finish) was the largest single cost of a busy farm.
   * Each update runs in its own savepoint (one that throws is undone alone, its effects dropped); everything
   * another process can see waits for the commit (Publisher.afterCommit), so a group rolled back, or lost to a
   * crash, is as if kq had never read its updates: agents repeat what decides a task (a heartbeat carries
   * their running and queued tasks and their last two outcomes; output lines and a started pid are lost,
   * docs/DESIGN.md "Group commit"). Stops taking updates once performance.now()
   * passes `untilMs`, so the request port gets its turn. Returns how many were taken (the rest are the
   * caller's to hand in again); never throws.
   */
  handleGroup(updates: Update[], untilMs: number): number {
    const { store, publisher: { afterCommit } } = this.d;
    if (updates.length === 1) {
      // Alone, an update's transitions commit one by one, effects after each, as always: a quiet farm's
      // heartbeats (most of which write nothing at all) pay for no transaction.
      try {
        this.handle(updates[0]);
      } catch (err) {
        this.d.reportError(err);
      }
      return 1;
    }
    let taken = 0;
    afterCommit.hold();
    try {
      store.atomically(() => {
        while (taken < updates.length) {
          const mark = afterCommit.mark();
          try {
            store.atomically(() => this.handle(updates[taken++]));
          } catch (err) {
            // SQLite rolled the whole transaction back by itself (disk full, I/O error): the group is lost.
            if (!store.inTransaction) throw err;
            afterCommit.dropSince(mark);
            this.d.reportError(err);
          }
          if (performance.now() > untilMs) break;
        }
      });
    } catch (err) {
      afterCommit.discard();
      // SQLite rolled the transaction back by itself inside a step that reports its own errors (dispatch):
      // the savepoint or commit that follows then fails for want of a transaction. That says nothing new.
      if (!store.inTransaction && /no such savepoint|no transaction is active/.test((err as Error).message)) {
        this.d.log.warn('a group of updates was rolled back by SQLite (its cause is reported above); agents repeat what decides a task');
      } else {
        this.d.reportError(err);
      }
      return taken;
    }
    afterCommit.release();
    return taken;
  }

  handle(u: Update): void {
    const { store, scheduler } = this.d;
    // Only the agent's current registration speaks for it: a stranger, an agent under the same id, or a
    // message from before a re-registration changes nothing.
    const session = store.checkSession(u.agentId, u.session);
    if (session !== 'current') {
      if (u.type === 'heartbeat' && session === 'unknown') scheduler.askToReregister(u.agentId);
      if (session === 'superseded') scheduler.tellSuperseded(u.agentId, u.session);
      return;
    }
    if (u.type === 'heartbeat') {
      const r = store.heartbeat({ agentId: u.agentId, epoch: this.d.epoch, running: u.running, queued: u.queued, lastOutcome: u.lastOutcome, priorOutcome: u.priorOutcome, assignGraceMs: 2 * this.d.heartbeatMs + 1000 });
      if (r.reregister) return scheduler.askToReregister(u.agentId);
      if (r.stop.length > 0) scheduler.stopRenders(r.stop, 'not this agent\'s task any more');
      for (const jobId of r.requeuedJobs) this.d.publisher.appendLog(jobId, `[kq] agent ${u.agentId} never started its task: requeued\n`);
      if (r.outcome) scheduler.applyOutcome(u.agentId, r.outcome);
      else if (r.dispatch || r.requeuedJobs.length > 0) scheduler.afterChange(r.requeuedJobs);
      return;
    }
    if (u.type === 'bye') {
      this.d.log.info({ agent: u.agentId }, 'agent left');
      scheduler.agentGone(u.agentId, `agent ${u.agentId} stopped`);
      return;
    }
    if (u.type === 'refused') {
      const jobId = store.refuseTask({ agentId: u.agentId, taskId: u.taskId, attempt: u.attempt });
      this.d.log.warn({ agent: u.agentId, task: u.taskId, running: u.running }, 'agent refused a task (busy with another): requeued');
      if (u.running && !store.isCurrent({ agentId: u.agentId, ...u.running })) scheduler.stopRenders([{ agentId: u.agentId, ...u.running }], 'not this agent\'s task any more');
      if (jobId !== null) scheduler.afterChange([jobId]);
      return;
    }
    const { publisher } = this.d;
    const ref: TaskRef = { agentId: u.agentId, taskId: u.taskId, attempt: u.attempt };
    switch (u.type) {
      case 'started': {
        const task = store.markStarted(ref, u.pid);
        if (!task) return scheduler.stopRenders([ref], 'task is no longer assigned to this agent');
        const frames = JSON.parse(task.frames) as number[];
        publisher.appendLog(task.job_id, `[kq] task ${task.seq + 1} (${describeFrames(frames)}) attempt ${u.attempt} started on ${task.host} (agent ${u.agentId}, pid ${u.pid}) at ${new Date().toISOString()}\n`);
        return;
      }
      case 'log': {
        const task = store.currentTask(ref);
        if (!task) return;
        const key = `${u.taskId}.${u.attempt}`;
        const prefix = taskPrefix(store.jobStatus(task.job_id), task);
        // In a group, written after its commit: in order with kq's own lines about the task, which wait too.
        publisher.afterCommit.run(() => {
          let written: { offset: number; text: string } | null;
          try {
            written = this.d.logs.appendTaskOutput(task.job_id, key, u.lines, prefix);
          } catch (err) {
            // A task whose output kq cannot keep is stopped before it fills the disk further.
            if (isDiskFull(err)) return scheduler.failTask(ref, `disk full: kq could not write this task's output to the job log (${(err as Error).message}); free space on the data root, then kqctl restart --failed-only ${task.job_id}`);
            throw err;
          }
          if (written) publisher.publishLog(task.job_id, written.offset, written.text);
        });
        const percent = this.d.progress.feed(key, u.lines, () => ({ argv: JSON.parse(store.jobRow(task.job_id)!.argv) as string[], frames: JSON.parse(task.frames) as number[] }));
        if (percent !== null && store.setTaskProgress(ref, percent)) publisher.announceJob(task.job_id);
        return;
      }
      case 'finished':
        scheduler.applyOutcome(u.agentId, u);
        return;
    }
  }
}

/** `[t3 f9-12] `: which task of a job of several a line comes from ('' for a job of one task). */
function taskPrefix(job: { n_waiting: number; n_running: number; n_completed: number; n_failed: number; n_cancelled: number } | undefined, task: TaskRow): string {
  if (!job || job.n_waiting + job.n_running + job.n_completed + job.n_failed + job.n_cancelled <= 1) return '';
  const frames = JSON.parse(task.frames) as number[];
  const f = frames.length === 0 ? '' : frames.length === 1 ? ` f${frames[0]}` : ` f${frames[0]}-${frames[frames.length - 1]}`;
  return `[t${task.seq + 1}${f}] `;
}

export function describeFrames(frames: number[]): string {
  if (frames.length === 0) return 'no frames';
  if (frames.length === 1) return `frame ${frames[0]}`;
  return `frames ${frames[0]}-${frames[frames.length - 1]}`;
}

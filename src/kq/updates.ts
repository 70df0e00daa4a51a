/** What agents push on the update port: heartbeats, task started, log lines, task finished, bye. */
import type { Logger } from 'pino';
import type { Update } from '../protocol/index.js';
import type { JobLogs } from './job-logs.js';
import type { ProgressTracker } from './progress.js';
import type { Publisher } from './publisher.js';
import type { Scheduler } from './scheduler.js';
import type { Store, TaskRef } from './store.js';

export interface UpdateDeps {
  store: Store;
  logs: JobLogs;
  progress: ProgressTracker;
  publisher: Publisher;
  scheduler: Scheduler;
  log: Logger;
  epoch: string;
}

export class UpdateHandler {
  constructor(private readonly d: UpdateDeps) {}

  handle(u: Update): void {
    const { store, scheduler, publisher } = this.d;
    if (u.type === 'heartbeat') {
      if (!store.heartbeat(u.agentId, this.d.epoch)) scheduler.askToReregister(u.agentId);
      return;
    }
    if (u.type === 'bye') {
      this.d.log.info({ agent: u.agentId }, 'agent left');
      scheduler.afterChange(store.agentGone(u.agentId, 'agent stopped'));
      return;
    }
    const ref: TaskRef = { agentId: u.agentId, taskId: u.taskId, attempt: u.attempt };
    switch (u.type) {
      case 'started': {
        const task = store.markStarted(ref, u.pid);
        if (!task) return scheduler.stopRenders([ref], 'task is no longer assigned to this agent');
        const frames = JSON.parse(task.frames) as number[];
        publisher.appendLog(task.job_id, `[kq] task ${task.id} (${describeFrames(frames)}) attempt ${u.attempt} started on ${task.host} (agent ${u.agentId}, pid ${u.pid}) at ${new Date().toISOString()}\n`);
        return;
      }
      case 'log': {
        const task = store.currentTask(ref);
        if (!task) return;
        const key = `${u.taskId}.${u.attempt}`;
        const written = this.d.logs.appendTaskOutput(task.job_id, key, u.lines);
        if (written) publisher.publishLog(task.job_id, written.offset, written.text);
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

export function describeFrames(frames: number[]): string {
  if (frames.length === 0) return 'no frames';
  if (frames.length === 1) return `frame ${frames[0]}`;
  return `frames ${frames[0]}-${frames[frames.length - 1]}`;
}

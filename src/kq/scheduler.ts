/**
 * Scheduling: hand waiting tasks to idle agents, record how attempts end (retries, blocklists), find
 * agents that went silent and take their work back. Every state change is one store transition; the
 * effects (assignments, stop-task, announcements) follow it.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Topics, encode, type Assign, type TaskOutcome } from '../protocol/index.js';
import { killGroup } from '../common/processes.js';
import type { SendQueue } from '../common/send-queue.js';
import type { JobLogs } from './job-logs.js';
import type { ProgressTracker } from './progress.js';
import type { Publisher } from './publisher.js';
import type { Store, TaskRef } from './store.js';
import { DeafTime } from './deaf-time.js';
import { TaskQueuer } from './task-queuer.js';

export interface SchedulerDeps {
  store: Store;
  logs: JobLogs;
  progress: ProgressTracker;
  publisher: Publisher;
  log: Logger;
  /** kq's run: only agents registered in it get work. */
  epoch: string;
  agentTimeoutMs: number;
  blocklistAfter: number;
  /** False while kq starts or stops: nothing is dispatched then. */
  isRunning(): boolean;
  /** Kill a hung local agent (kq replaces it). */
  killLocalAgent(pid: number): void;
  /** A write failed: true if for lack of space (kq is then "disk full"). */
  writeFailed?(err: unknown): boolean;
  /** Is this pid a local agent this kq started or adopted? Only those, and their renders, are ever signalled. */
  ownsLocalAgent(pid: number): boolean;
}

export class Scheduler {
  /** The request socket's queue (assignments go to an agent by its routing id); set once bound. */
  routerQueue: SendQueue | null = null;
  private readonly reregisterSentAt = new Map<string, number>();
  /** When kq itself could not hear heartbeats: not counted as an agent's silence. */
  readonly deafTime = new DeafTime();
  /** Inserts the tasks of big jobs in the background, handing them out as they come. */
  readonly queuer: TaskQueuer;
  private readonly supersededSentAt = new Map<string, number>();

  constructor(private readonly d: SchedulerDeps) {
    this.queuer = new TaskQueuer({ store: d.store, log: d.log, onQueued: () => this.dispatch() });
  }

  /** Hand waiting tasks to idle agents of this epoch until one or the other runs out. */
  dispatch(): void {
    // Dispatch follows committed changes (a submit, a finished task): its failure must not undo their answer.
    try {
      this.handOut();
    } catch (err) {
      if (!this.d.writeFailed?.(err)) this.d.log.error({ err: (err as Error).stack }, 'dispatch failed');
    }
  }

  private handOut(): void {
    this.reportDependencyEvents();
    if (!this.d.isRunning() || !this.routerQueue || this.d.store.holdsDispatch() || this.d.store.queuePaused()) return;
    // Nothing waiting: no idle agent need ask (on a big farm that was a claim per idle agent per dispatch).
    if (!this.d.store.hasReadyTask()) return;
    // Idle agents first; then, with prefetch, busy agents (and those just made busy) get the task they start next.
    for (let pass = 0, madeBusy = 1; pass < 2 && madeBusy > 0; pass++) {
      madeBusy = 0;
      for (const agent of this.d.store.dispatchableAgents(this.d.epoch)) {
        if (this.assignTo(agent.id)) {
          if (agent.state === 'idle') madeBusy++;
        } else if (!this.d.store.hasReadyTask()) return; // the queue ran dry (rather than holding only work this agent's host may not run): the rest need not ask
      }
    }
  }

  /** Claim a task for this agent and send it; false if there was none for it. */
  private assignTo(agentId: string): boolean {
    const claimed = this.d.store.claimTask(agentId);
    if (!claimed) return false;
    const { session, route, ...task } = claimed;
    const ref = { agentId, taskId: task.taskId, attempt: task.attempt };
    const frame = encode({ v: PROTOCOL_VERSION, type: 'assign', session, task } satisfies Assign);
    if (frame.length > MAX_MESSAGE_BYTES) {
      // libzmq would drop it silently and the task would stay Running for good (jobs from before the submit check).
      const jobId = this.d.store.failUndeliverable(ref, `assignment of ${frame.length} bytes is over the ${MAX_MESSAGE_BYTES}-byte message limit`);
      this.d.publisher.appendLog(jobId, `[kq] task ${this.d.store.taskNumber(task.taskId)} failed: its assignment (${frame.length} bytes) is too large to send to an agent; resubmit with a smaller --chunk\n`);
      this.afterChange([jobId]);
      return true;
    }
    // To the connection that registered (a kq-made routing id), never to whoever claims the agent's id; only
    // once the claim is committed (inside a group transaction it could still be rolled back).
    const routerQueue = this.routerQueue!;
    this.d.publisher.afterCommit.run(() => void routerQueue.send([Buffer.from(route, 'hex'), frame]).catch((err: Error) => {
      this.d.log.warn({ agent: agentId, task: task.taskId, err: err.message }, 'assignment not delivered; requeued');
      // A busy agent keeps its render; it registers again (its new connection) and, its session proven, keeps it.
      if (this.d.store.unassign(ref, route)) this.d.publisher.publish(Topics.agent(agentId), { v: PROTOCOL_VERSION, type: 'reregister' });
      this.afterChange([task.jobId]);
    }));
    this.d.publisher.announceJob(task.jobId);
    return true;
  }

  /**
   * Take prefetched tasks back from agents before they start them (a job or the queue paused, priorities
   * changed): they wait again, nothing counted, and the agents drop them (a lost withdrawal is re-sent
   * when a heartbeat still reports the task). Call dispatch afterwards: what runs next is chosen again.
   */
  withdrawPrefetched(which: { jobIds?: number[]; below?: number }, why: string): number[] {
    const refs = this.d.store.withdrawPrefetched(which);
    this.stopRenders(refs, why);
    for (const r of refs) this.d.publisher.announceJob(r.jobId);
    return refs.map((r) => r.jobId);
  }

  /** Jobs released or cancelled by the --after rules in the last transitions: their logs and subscribers hear of it. */
  private reportDependencyEvents(): void {
    const events = this.d.store.takeDependencyEvents();
    for (const e of events) this.d.publisher.appendLog(e.jobId, e.text);
    for (const id of new Set(events.map((e) => e.jobId))) this.d.publisher.announceJob(id);
  }

  /** After jobs changed: tell subscribers, then hand out whatever became available. */
  afterChange(jobIds: Iterable<number>): void {
    for (const id of new Set(jobIds)) this.d.publisher.announceJob(id);
    this.dispatch();
  }

  /** Record how a task attempt ended (from `finished`, or resent in `register`); a stale or repeated report is ignored. */
  applyOutcome(agentId: string, o: TaskOutcome): void {
    const result = this.d.store.finishTask({ agentId, taskId: o.taskId, attempt: o.attempt }, o.exitCode, o.reason, o.signal, o.stderrTail);
    const key = `${o.taskId}.${o.attempt}`;
    this.endAttemptLog(key);
    this.d.progress.end(key);
    if (result.outcome === 'ignored') return this.dispatch();
    const log = (text: string) => this.d.publisher.appendLog(result.jobId, text);
    const how = o.reason ?? (o.signal ? `killed by ${o.signal}` : `exit code ${o.exitCode}`);
    const next = result.outcome === 'retry' ? ' (will retry)' : result.outcome === 'failed' ? ` (${noRetry(result.fails ?? 1, result.retries ?? 0)})` : '';
    log(`[kq] task ${result.number ?? this.d.store.taskNumber(o.taskId)} attempt ${o.attempt} ${result.outcome === 'completed' ? 'completed' : `failed: ${how}${next}`} after ${(o.durationMs / 1000).toFixed(2)}s\n`);
    if (result.blocklisted) log(`[kq] host ${result.blocklisted} blocklisted for this job after ${this.d.blocklistAfter} failures\n`);
    if (result.failedEverywhere > 0) log(`[kq] ${result.failedEverywhere} waiting task(s) failed: every available host is blocklisted for this job (kqctl restart clears the blocklist)\n`);
    this.afterChange([result.jobId]);
  }

  /** This attempt cannot go on (e.g. its output cannot be kept): it fails now, without retry, and its render is stopped. */
  failTask(ref: TaskRef, reason: string): void {
    this.stopRenders([ref], reason);
    const jobId = this.d.store.failTaskNow(ref, reason);
    if (jobId === null) return;
    this.d.log.warn({ job: jobId, task: ref.taskId, attempt: ref.attempt, reason }, 'task failed by kq');
    this.d.publisher.appendLog(jobId, `[kq] task ${this.d.store.taskNumber(ref.taskId)} attempt ${ref.attempt} failed: ${reason}\n`);
    this.afterChange([jobId]);
  }

  /**
   * Kill the renders of these task attempts (the agents get `stop-task` on their topic). An attempt kq
   * never handed out is not withdrawn: the agent would remember it and drop the real one when it came.
   */
  stopRenders(refs: TaskRef[], reason: string): void {
    for (const r of refs) {
      if (!this.d.store.wasHandedOut(r)) continue;
      this.d.publisher.publish(Topics.agent(r.agentId), { v: PROTOCOL_VERSION, type: 'stop-task', taskId: r.taskId, attempt: r.attempt, reason });
    }
  }

  /** An agent kq does not know (any more) spoke: ask it to register again, at most once a second. */
  askToReregister(agentId: string): void {
    const last = this.reregisterSentAt.get(agentId) ?? 0;
    if (Date.now() - last < 1000) return;
    if (this.reregisterSentAt.size > 10_000) this.reregisterSentAt.clear(); // heartbeats may name any id
    this.reregisterSentAt.set(agentId, Date.now());
    this.d.publisher.publish(Topics.agent(agentId), { v: PROTOCOL_VERSION, type: 'reregister' });
  }

  registered(agentId: string): void {
    this.reregisterSentAt.delete(agentId);
  }

  /** An update came from an older registration of this agent id: the agent holding it must leave (at most once a second). */
  tellSuperseded(agentId: string, session: string): void {
    // Once a second per agent id, whatever sessions strangers make up (each costs a log line and a broadcast).
    const last = this.supersededSentAt.get(agentId) ?? 0;
    if (Date.now() - last < 1000) return;
    if (this.supersededSentAt.size > 10_000) this.supersededSentAt.clear();
    this.supersededSentAt.set(agentId, Date.now());
    this.d.log.warn({ agent: agentId }, 'update from a superseded registration (two agents share this id?)');
    this.d.publisher.publish(Topics.agent(agentId), { v: PROTOCOL_VERSION, type: 'superseded', session });
  }

  /**
   * A local agent process exited: its renders die with it, its task goes back to the queue. `died`: killed
   * or crashed (not a polite exit after handing its task back), which counts against the task.
   */
  localAgentExited(agentId: string, why: string, died: boolean): void {
    if (!this.d.isRunning()) return;
    for (const pid of this.d.store.renderPidsOf(agentId)) killGroup(pid, 'SIGKILL');
    this.agentGone(agentId, `agent ${agentId} ended (${why})`, died);
  }

  /** An agent left (exited, or said bye): its running task goes back to the queue, and its job's log says so. */
  agentGone(agentId: string, why: string, died = false): void {
    const running = this.d.store.runningAttempts(agentId);
    const jobs = this.d.store.agentGone(agentId, why, died);
    for (const t of running) this.interrupted(t, why);
    this.afterChange(jobs);
  }

  /** kq stops: every running task goes back to the queue, and each job's log says so. */
  requeueAll(why: string): void {
    const running = this.d.store.runningAttempts();
    this.d.store.requeueAll(why);
    for (const t of running) this.interrupted(t, why);
  }

  /** The job's log says an attempt was cut short (after the last value of a counter it was redrawing). */
  private interrupted(t: { jobId: number; taskId: number; number: number; attempt: number }, why: string): void {
    this.endAttemptLog(`${t.taskId}.${t.attempt}`);
    this.d.progress.end(`${t.taskId}.${t.attempt}`);
    const now = this.d.store.taskState(t.taskId);
    const then = now?.state === 'failed' ? `failed: ${now.reason ?? 'its agent died'}` : 'requeued';
    this.d.publisher.appendLog(t.jobId, `[kq] task ${t.number} attempt ${t.attempt} interrupted: ${why}; ${then}\n`);
  }

  /** An attempt's output is over: a redrawn line still held back is written (and followers get it). */
  private endAttemptLog(key: string): void {
    // A file write: after the commit, in order with the attempt's other log lines.
    this.d.publisher.afterCommit.run(() => {
      const last = this.d.logs.endTask(key);
      if (last) this.d.publisher.publishLog(last.jobId, last.offset, last.text);
    });
  }

  /** Agents silent past the timeout are lost: their tasks are requeued; a local one is killed and replaced. */
  checkSilentAgents(): void {
    if (!this.d.isRunning() || this.deafTime.deafNow) return;
    const before = this.deafTime.silentBefore(Date.now(), this.d.agentTimeoutMs);
    if (!this.d.store.anySilentAgent(before)) return; // the usual second: a read, no write transaction
    const running = this.d.store.runningAttempts();
    const lost = this.d.store.markSilentAgentsLost(before);
    for (const { agent, requeuedJobs, renderPids } of lost) {
      this.d.log.warn({ agent: agent.id, host: agent.host, lastSeen: agent.lastSeen }, 'agent lost: no heartbeat');
      for (const t of running.filter((r) => requeuedJobs.includes(r.jobId) && r.agentId === agent.id)) {
        this.interrupted(t, `agent ${agent.id} on ${agent.host} lost (silent for over ${this.d.agentTimeoutMs} ms)`);
      }
      // A local agent that hangs is killed and replaced; a remote one is told to drop its task if it wakes.
      if (agent.local && agent.host === os.hostname() && this.d.ownsLocalAgent(agent.pid)) {
        for (const pid of renderPids) killGroup(pid, 'SIGKILL');
        this.d.killLocalAgent(agent.pid);
      }
      if (agent.taskId !== null) this.d.publisher.publish(Topics.agent(agent.id), { v: PROTOCOL_VERSION, type: 'reregister' });
      this.afterChange(requeuedJobs);
    }
  }
}

/** Why a failed task is not tried again, in the user's own terms (`--retries`). */
function noRetry(fails: number, retries: number): string {
  return retries === 0 ? 'no retry: --retries 0' : `no retry: failed ${fails} times, --retries ${retries}`;
}

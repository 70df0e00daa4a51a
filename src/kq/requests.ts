/**
 * The one request handler behind the request socket (agents, kqctl) and the HTTP API: validated
 * requests in, the store changed in one transition each, answers out. Built from a store, a scheduler and
 * a publisher, so it runs as well on an in-memory store in a unit test as inside the daemon.
 */
import crypto from 'node:crypto';
import type { Logger } from 'pino';
import { PROTOCOL_VERSION, RequestSchema, Topics, isTerminalState, type JobState, type JobSummary, type LogChunk, type RegisterReply, type Request, type RequestInput } from '../protocol/index.js';
import type { JobLogs } from './job-logs.js';
import type { Publisher } from './publisher.js';
import type { Scheduler } from './scheduler.js';
import type { Store } from './store.js';
import { prepareJob, RequestError } from './submit.js';
import { printable } from '../common/printable.js';
import { checkDeliverable } from './limits.js';
import type { DiskStatus } from './disk.js';

/** A request as in-process callers write it: no protocol version or request id. */
export type LocalRequest = RequestInput extends infer R ? (R extends unknown ? Omit<R, 'v' | 'rid'> : never) : never;

export interface RequestDeps {
  store: Store;
  logs: JobLogs;
  publisher: Publisher;
  scheduler: Scheduler;
  log: Logger;
  epoch: string;
  heartbeatMs: number;
  /** A registration silent this long is no longer live: another agent may take its id. */
  agentTimeoutMs: number;
  /** What `ping` reports about kq's links. */
  security(): { curve: boolean; insecure: boolean };
  /** Is this the secret kq gave its own local agents? Only then is a registration's `local` believed (kq signals local renders). */
  provesLocal(proof: string | undefined): boolean;
  /** What `ping` reports about the data root's disk (full: no new work until there is room). */
  disk?(): DiskStatus;
  /** More for `ping` to report (the Slurm autoscaler's status). */
  status?(): Record<string, unknown>;
}

/** An answer that comes with a line for the person who asked (kqctl prints it on stderr). */
export class WithNotice {
  constructor(readonly data: unknown, readonly notice: string) {}
}

/** Characters of JSON a `list` answer may take: past it, the oldest ended jobs are left out (and the answer says so). */
const LIST_REPLY_BUDGET = 3 * 1024 * 1024;

/** Characters of JSON a `log` answer may take (the message limit is 4 MiB; `log -f` asks again for the rest). */
const LOG_REPLY_BUDGET = 3 * 1024 * 1024;

/** Requests after which waiting work may find an agent. */
const DISPATCHING: ReadonlySet<Request['type']> = new Set(['register', 'submit', 'restart', 'resume']);

/** What pause and resume answer: the queue's state and the jobs named. */
export interface PauseReply { queuePaused: boolean; jobs: JobSummary[] }
/** What remove and clean answer. */
export interface RemoveReply { removed: number[] }

export class RequestHandler {
  constructor(private readonly d: RequestDeps) {}

  /** Called once the reply is on its way. */
  afterReply(req: Request): void {
    if (DISPATCHING.has(req.type)) this.d.scheduler.dispatch();
  }

  /**
   * The same requests kqctl sends, for in-process callers (the HTTP monitor): validated like wire input,
   * answered with the same data shapes. Throws RequestError for bad input or unknown jobs.
   */
  local(input: LocalRequest): unknown {
    const parsed = RequestSchema.safeParse({ ...input, v: PROTOCOL_VERSION, rid: 'in-process' });
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new RequestError('bad-request', `invalid request: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'unknown'}`);
    }
    if (parsed.data.type === 'register') throw new RequestError('bad-request', 'agents register over the request socket');
    const data = this.handle(parsed.data, '');
    this.afterReply(parsed.data);
    return data instanceof WithNotice ? data.data : data;
  }

  /**
   * Answer one validated request (`routingId`: the sender's ZeroMQ routing id, hex; '' in process). The
   * caller dispatches afterwards (afterReply), so an agent never sees an assignment before its registration
   * reply. Throws RequestError for bad input or unknown jobs.
   */
  handle(req: Request, routingId: string): unknown {
    const { store, scheduler, publisher } = this.d;
    switch (req.type) {
      case 'ping':
        return { epoch: this.d.epoch, pid: process.pid, version: PROTOCOL_VERSION, queuePaused: store.queuePaused(), ...this.d.security(), ...(this.d.disk ? { disk: this.d.disk() } : {}), ...this.d.status?.() };
      case 'register': {
        if (routingId === '') throw new RequestError('bad-request', 'agents register over the request socket');
        const check = store.registrationCheck(req.agentId, req.session, Date.now() - this.d.agentTimeoutMs);
        if (check.holder) {
          throw new RequestError('bad-request', `agent id "${req.agentId}" is in use by a live agent on ${check.holder}: give this agent its own --agent-id, or stop the other`);
        }
        // Only the agent that held the id (it names its session) may keep its task and report its last outcome.
        // The one before first: with prefetch the agent may have ended two tasks while kq was away. (Not one kq
        // already took from it: the agent repeats its last outcomes until it is sure kq has them.)
        if (check.proven && req.priorOutcome && !store.isRepeatedOutcome(req.agentId, req.priorOutcome)) scheduler.applyOutcome(req.agentId, req.priorOutcome);
        if (check.proven && req.lastOutcome && !store.isRepeatedOutcome(req.agentId, req.lastOutcome)) scheduler.applyOutcome(req.agentId, req.lastOutcome);
        const session = crypto.randomBytes(16).toString('hex');
        const local = req.local && this.d.provesLocal(req.localProof);
        if (req.local && !local) this.d.log.warn({ agent: req.agentId, host: req.host }, 'an agent says it is local without the proof kq gave its local agents: taken as remote');
        const r = store.registerAgent({ id: req.agentId, host: req.host, pid: req.pid, local, running: check.proven ? req.running : null,
          queued: check.proven ? req.queued : null, prefetch: req.prefetch, epoch: this.d.epoch, session, route: routingId, slurm: req.slurm });
        scheduler.registered(req.agentId);
        this.d.log.info({ agent: req.agentId, host: req.host, keep: r.keepRunning }, 'agent registered');
        // Announce only: work is dispatched after the reply, so the agent never sees an assignment first.
        for (const jobId of new Set(r.requeuedJobs)) publisher.announceJob(jobId);
        return { heartbeatMs: this.d.heartbeatMs, keepRunning: r.keepRunning, keepQueued: r.keepQueued, session } satisfies RegisterReply;
      }
      case 'submit': {
        for (const parent of req.job.after ?? []) {
          if (!store.jobRow(parent)) throw new RequestError('not-found', `--after ${parent}: no job with id ${parent}`);
        }
        const prepared = prepareJob(req.job);
        checkDeliverable(prepared);
        const { tasksUnqueued, ...job } = store.submitJob(prepared);
        // A prefetched task of lower priority would start before this job's: take it back (dispatch follows the submit).
        if (job.state !== 'Blocked') scheduler.withdrawPrefetched({ below: job.priority }, 'a job of higher priority was submitted');
        if (tasksUnqueued > 0) scheduler.queuer.add(job.id);
        publisher.appendLog(job.id, `[kq] job ${job.id} "${printable(job.name)}" submitted at ${job.submittedAt}: ${sizeText(job)}\n`);
        if (job.after.length > 0) publisher.appendLog(job.id, `[kq] job ${job.id} runs after job(s) ${job.after.join(', ')} have Completed\n`);
        this.d.log.info({ job: job.id, name: job.name, frames: job.framesTotal }, 'job submitted');
        publisher.announceJob(job.id);
        return job;
      }
      case 'list':
        return fitList(store.listJobs(req.states, req.jobIds));
      case 'show':
        return this.existingJob(req.jobId) && store.showJob(req.jobId);
      case 'log': {
        const job = this.existingJob(req.jobId);
        // As JSON a byte of log can take six (control characters): read less until the answer fits one message.
        let max = req.max;
        let chunk = this.d.logs.read(req.jobId, req.from, max);
        for (let encoded = JSON.stringify(chunk.text).length; encoded > LOG_REPLY_BUDGET && max > 1024; encoded = JSON.stringify(chunk.text).length) {
          max = Math.max(1024, Math.floor((max * LOG_REPLY_BUDGET) / encoded / 2));
          chunk = this.d.logs.read(req.jobId, req.from, max);
        }
        return { ...chunk, from: req.from, state: job.state } satisfies LogChunk;
      }
      case 'stop': {
        req.jobIds.forEach((id) => this.existingJob(id));
        const kill = store.stopJobs(req.jobIds);
        for (const id of req.jobIds) scheduler.queuer.add(id); // a big job's tasks follow in batches
        scheduler.stopRenders(kill, 'job stopped');
        for (const id of req.jobIds) publisher.appendLog(id, `[kq] job ${id} stopped at ${new Date().toISOString()}\n`);
        scheduler.afterChange(req.jobIds);
        return this.summaries(req.jobIds);
      }
      case 'restart': {
        req.jobIds.forEach((id) => this.existingJob(id));
        const kill = store.restartJobs(req.jobIds, req.failedOnly);
        for (const id of req.jobIds) scheduler.queuer.add(id);
        scheduler.stopRenders(kill, 'job restarted');
        for (const id of req.jobIds) publisher.appendLog(id, `[kq] job ${id} restarted${req.failedOnly ? ' (failed tasks only)' : ''} at ${new Date().toISOString()}\n`);
        for (const id of req.jobIds) publisher.announceJob(id);
        return this.summaries(req.jobIds);
      }
      case 'agents':
        return store.listAgents();
      case 'pause':
      case 'resume': {
        const paused = req.type === 'pause';
        const at = new Date().toISOString();
        if (!req.jobIds) {
          store.setQueuePaused(paused);
          // Paused means nothing new starts: a task an agent holds prefetched has not started, so it is taken back.
          if (paused) scheduler.withdrawPrefetched({}, 'queue paused');
          this.d.log.info({ paused }, paused ? 'queue paused' : 'queue resumed');
          publisher.publish(Topics.queue, { v: PROTOCOL_VERSION, type: 'queue', paused });
          return { queuePaused: paused, jobs: [] } satisfies PauseReply;
        }
        req.jobIds.forEach((id) => this.existingJob(id));
        store.pauseJobs(req.jobIds, paused);
        if (paused) scheduler.withdrawPrefetched({ jobIds: req.jobIds }, 'job paused');
        for (const id of req.jobIds) {
          publisher.appendLog(id, `[kq] job ${id} ${paused ? 'paused: no new tasks start (running ones go on)' : 'resumed'} at ${at}\n`);
          publisher.announceJob(id);
        }
        return { queuePaused: store.queuePaused(), jobs: this.summaries(req.jobIds) } satisfies PauseReply;
      }
      case 'priority': {
        req.jobIds.forEach((id) => this.existingJob(id));
        store.setPriority(req.jobIds, req.priority);
        // What each agent starts next is chosen again by the new priorities.
        scheduler.withdrawPrefetched({}, 'priorities changed');
        scheduler.dispatch();
        for (const id of req.jobIds) {
          publisher.appendLog(id, `[kq] job ${id} priority set to ${req.priority}\n`);
          publisher.announceJob(id);
        }
        return this.summaries(req.jobIds);
      }
      case 'remove': {
        const jobs = req.jobIds.map((id) => this.existingJob(id));
        const unfinished = jobs.filter((j) => !isTerminalState(j.state));
        if (unfinished.length > 0 && !req.stop) {
          const [first] = unfinished;
          throw new RequestError('bad-request', `job ${first!.id} is ${first!.state}: only ended jobs are removed; stop it first, or remove with --stop`);
        }
        if (unfinished.length > 0) {
          const ids = unfinished.map((j) => j.id);
          scheduler.stopRenders(store.stopJobs(ids), 'job removed');
          scheduler.afterChange(ids); // dependents cancelled, agents freed
        }
        return this.remove(req.jobIds);
      }
      case 'clean': {
        const states: JobState[] = req.states ?? ['Completed'];
        return this.remove(store.endedJobs(states, new Date(Date.now() - (req.olderThanMs ?? 0)).toISOString()));
      }
    }
  }

  /** Forget ended jobs and delete their logs (never the renders' own output files). */
  remove(jobIds: number[]): RemoveReply {
    const ids = [...new Set(jobIds)];
    if (ids.length === 0) return { removed: [] };
    // Hidden at once; their rows are deleted batch by batch, kq answering between batches.
    for (const id of this.d.store.removeJobs(ids)) this.d.scheduler.queuer.add(id);
    for (const id of ids) {
      try {
        this.d.logs.remove(id);
      } catch (err) {
        this.d.log.warn({ job: id, err: (err as Error).message }, 'log of a removed job not deleted');
      }
    }
    this.d.log.info({ jobs: ids.length }, 'jobs removed');
    this.d.publisher.publish(Topics.queue, { v: PROTOCOL_VERSION, type: 'removed', jobIds: ids });
    return { removed: ids };
  }

  /** The summaries of these jobs (what stop and restart answer), without building their task lists. */
  private summaries(jobIds: number[]) {
    const byId = new Map(this.d.store.listJobs(undefined, jobIds).map((j) => [j.id, j]));
    return jobIds.map((id) => byId.get(id)!); // in the order asked
  }

  private existingJob(jobId: number) {
    const job = this.d.store.jobRow(jobId);
    if (!job) throw new RequestError('not-found', `no job with id ${jobId}`);
    return job;
  }
}

/** `240 frames`, or for a job without frames its tasks: `1 task (no frames)`. */
function sizeText(job: { framesTotal: number; tasks: Record<string, number> }): string {
  if (job.framesTotal > 0) return `${job.framesTotal} frames`;
  const n = Object.values(job.tasks).reduce((a, b) => a + b, 0);
  return `${n} ${n === 1 ? 'task' : 'tasks'} (no frames)`;
}

/**
 * All jobs not yet ended, and as many ended ones, newest first, as fit one answer: a table of tens of
 * thousands of jobs would pass the message limit and leave `list` answering nothing at all.
 */
export function fitList(jobs: JobSummary[]): JobSummary[] | WithNotice {
  let size = 0;
  const sizes = jobs.map((j) => JSON.stringify(j).length + 1);
  for (const n of sizes) size += n;
  if (size <= LIST_REPLY_BUDGET) return jobs;
  const keep = new Set<number>();
  let used = 0;
  jobs.forEach((j, i) => {
    if (!isTerminalState(j.state)) { keep.add(i); used += sizes[i]!; }
  });
  for (let i = jobs.length - 1; i >= 0; i--) {
    if (keep.has(i) || used + sizes[i]! > LIST_REPLY_BUDGET) continue;
    keep.add(i);
    used += sizes[i]!;
  }
  const shown = jobs.filter((_, i) => keep.has(i));
  return new WithNotice(shown, `${jobs.length - shown.length} of ${jobs.length} jobs not listed (the oldest ended ones, too many for one answer): ` +
    'remove ended jobs with `kqctl clean` (or kq --keep-finished), or ask for some with --state');
}

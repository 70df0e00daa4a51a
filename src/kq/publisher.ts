/**
 * Everything kq tells the world: broadcasts on the PUB socket (and in-process, for the web monitor),
 * job-state announcements and job log lines. Nothing here changes the store, and nothing here throws:
 * these are the effects of a transition already committed, which a failed log write or a broken
 * listener must not turn into an error reply (a retry would duplicate the job) or cut short (dispatch).
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { PROTOCOL_VERSION, Topics, encode, isTerminalState, type Broadcast } from '../protocol/index.js';
import { printableLines } from '../common/printable.js';
import type { SendQueue } from '../common/send-queue.js';
import type { JobLogs } from './job-logs.js';
import type { Store } from './store.js';
import { isDiskFull } from './disk.js';
import { LogSubscriptions } from './log-subscriptions.js';
import { AfterCommit } from './after-commit.js';

type JobBroadcast = Extract<Broadcast, { type: 'job' }>;

export interface PublisherDeps {
  store: Store;
  logs: JobLogs;
  log: Logger;
}

export class Publisher {
  /** Every broadcast kq publishes, also emitted in-process as ('message', topic, msg) for the HTTP monitor. */
  readonly broadcasts = new EventEmitter<{ message: [string, Broadcast] }>();
  /** The PUB socket's queue; null until the sockets are bound (in-process users still get broadcasts). */
  pubQueue: SendQueue | null = null;

  /** Which jobs' logs someone follows over ZeroMQ (fed by the broadcast socket, see trackSubscriptions). */
  readonly logSubscriptions = new LogSubscriptions();

  /** The state each job was last announced in: the job's log says how it ended when it turns terminal. */
  private readonly lastState = new Map<number, string>();
  /** Job broadcasts due at the end of this event-loop turn: one per job, its latest state (see announceJob). */
  private readonly pendingJobs = new Map<number, JobBroadcast>();
  private flushScheduled = false;

  /**
   * Holds what kq tells the world (here, and the scheduler's assignments) while a group of updates shares one
   * transaction (see after-commit.ts); outside a group, effects happen at once.
   */
  readonly afterCommit: AfterCommit;

  constructor(private readonly d: PublisherDeps) {
    this.afterCommit = new AfterCommit((err) => d.log.error({ err: (err as Error).stack }, 'effect after a group commit failed'));
  }

  /** Read the broadcast socket's subscription messages (an XPUB; `current()` gives the socket in use, `bound()` waits for a renew) until it closes. */
  trackSubscriptions(current: () => AsyncIterable<Buffer[]>, bound: () => Promise<void>): Promise<void> {
    return this.logSubscriptions.track(current, bound);
  }

  /** Any broadcast but `log` (publishLog) and `job` (announceJob); job broadcasts due go out first, keeping their order with it. */
  publish(topic: string, msg: Broadcast): void {
    this.afterCommit.run(() => {
      if (this.pendingJobs.size > 0) this.flushJobs();
      this.emitLocal(topic, msg);
      this.send(topic, msg);
    });
  }

  private emitLocal(topic: string, msg: Broadcast): void {
    try {
      this.broadcasts.emit('message', topic, msg);
    } catch (err) {
      this.d.log.error({ err: (err as Error).stack, topic }, 'in-process broadcast listener failed');
    }
  }

  private send(topic: string, msg: Broadcast): void {
    this.pubQueue?.send([topic, encode(msg)]).catch((err: Error) => this.d.log.warn({ err: err.message }, 'broadcast failed'));
  }

  /**
   * A job's state and frame counts, to `kqctl wait`/`log -f` and the page. Sent at the end of the
   * event-loop turn, once per job with its latest state (a finished task and the next one claimed are
   * one broadcast, not two); a terminal state is never replaced unsent by a later one.
   */
  announceJob(jobId: number): void {
    // The state as of now (inside a group: its transaction's), told in order with the effects held before
    // and after it, and only once committed: a group's rolled-back state is never announced. (Read at
    // release, a job's ending would be written before the last task lines of the same group.)
    const job = this.d.store.jobStatus(jobId);
    this.afterCommit.run(() => this.announceJobNow(jobId, job));
  }

  private announceJobNow(jobId: number, job: ReturnType<Store['jobStatus']>): void {
    if (!job) return;
    const before = this.lastState.get(jobId);
    this.lastState.set(jobId, job.state);
    // The job's log ends by saying how the job ended, once per ending (a restart can end it again).
    if (isTerminalState(job.state) && before !== job.state) {
      if (this.lastState.size > 10_000) this.lastState.clear();
      this.lastState.set(jobId, job.state);
      this.d.log.info({ job: jobId, state: job.state }, 'job ended');
      this.appendLogNow(jobId, `[kq] job ${job.state}: ${jobEnding(job)}\n`);
    }
    const msg: JobBroadcast = { v: PROTOCOL_VERSION, type: 'job', jobId, state: job.state, framesDone: job.frames_done, framesTotal: job.frames_total };
    const pending = this.pendingJobs.get(jobId);
    if (pending && isTerminalState(pending.state) && pending.state !== msg.state) this.sendJob(pending); // ended, then restarted
    this.pendingJobs.set(jobId, msg);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flushJobs());
    }
  }

  /** Send the job broadcasts of this turn now (also before kq closes its sockets). */
  flushJobs(): void {
    this.flushScheduled = false;
    const due = [...this.pendingJobs.values()];
    this.pendingJobs.clear();
    for (const msg of due) this.sendJob(msg);
  }

  private sendJob(msg: JobBroadcast): void {
    const topic = Topics.job(msg.jobId);
    this.emitLocal(topic, msg);
    this.send(topic, msg);
  }

  /**
   * One of kq's own lines (`[kq] …`) into a job's log, and out to its followers; dropped if it cannot be
   * written. What it quotes (names, hosts, agent ids, reasons) came from others: control characters are
   * escaped, line breaks kept.
   */
  appendLog(jobId: number, text: string): void {
    this.afterCommit.run(() => this.appendLogNow(jobId, text));
  }

  private appendLogNow(jobId: number, text: string): void {
    const safe = printableLines(text);
    let offset: number;
    try {
      offset = this.d.logs.append(jobId, safe);
    } catch (err) {
      // A full disk is reported once, by DiskSpace; anything else is worth a line each time.
      if (!isDiskFull(err)) this.d.log.error({ job: jobId, err: (err as Error).message }, 'job log line not written');
      return;
    }
    this.publishLogNow(jobId, offset, safe);
  }

  /** Log text to in-process followers (the page), and over ZeroMQ only if someone subscribes to it. */
  publishLog(jobId: number, offset: number, text: string): void {
    this.afterCommit.run(() => this.publishLogNow(jobId, offset, text));
  }

  private publishLogNow(jobId: number, offset: number, text: string): void {
    const wanted = this.logSubscriptions.wantsLog(jobId);
    if (!wanted && this.broadcasts.listenerCount('message') === 0) return;
    const topic = Topics.log(jobId);
    const msg: Broadcast = { v: PROTOCOL_VERSION, type: 'log', jobId, offset, text };
    this.emitLocal(topic, msg);
    if (wanted) this.send(topic, msg);
  }
}

/** `30/30 frames`, `1/1 task`, plus what did not complete: `28/30 frames; 2 tasks failed (kqctl show 7)`. */
function jobEnding(j: { id: number; frames_total: number; frames_done: number; n_waiting: number; n_running: number; n_completed: number; n_failed: number; n_cancelled: number }): string {
  const tasks = j.n_waiting + j.n_running + j.n_completed + j.n_failed + j.n_cancelled;
  const done = j.frames_total > 0 ? `${j.frames_done}/${j.frames_total} frames` : `${j.n_completed}/${tasks} ${tasks === 1 ? 'task' : 'tasks'}`;
  const plural = (n: number) => (n === 1 ? 'task' : 'tasks');
  const bad = [j.n_failed > 0 ? `${j.n_failed} ${plural(j.n_failed)} failed` : '', j.n_cancelled > 0 ? `${j.n_cancelled} ${plural(j.n_cancelled)} cancelled` : '']
    .filter(Boolean).join(', ');
  return bad ? `${done}; ${bad} (kqctl show ${j.id})` : done;
}

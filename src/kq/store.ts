/**
 * The job table: every job, task and agent state change happens here, each in one SQLite transaction.
 * The daemon is the only writer; everything it sends out is derived from what this returns.
 */
import Database from 'better-sqlite3';
import { isTerminalState, type RunningTask, type TaskOutcome, type AgentInfo, type JobDetail, type JobState, type JobSummary, type SlurmPlacement, type TaskAssignment, type TaskInfo, type TaskState } from '../protocol/index.js';
import { expandCommands } from '../common/placeholders.js';
import { parseFrameRange } from '../common/frames.js';
import { addMissingColumns, migrateTaskIds, SCHEMA, SCHEMA_VERSION } from './schema.js';

export interface NewJob {
  name: string;
  argv: string[];
  frameSpec: string | null;
  /** Every frame, in order; task N renders frames[N*chunk .. (N+1)*chunk). No frames: one task. */
  frames: number[];
  /** `--each`: the items, frames being their 1-based indices; null for other jobs. */
  items: string[] | null;
  chunk: number;
  priority: number;
  cwd: string | null;
  env: Record<string, string>;
  maxAttempts: number;
  timeoutMs: number | null;
  shell: boolean;
  output: string | null;
  /** Jobs (existing ids) this one waits for: Blocked until all Completed, Cancelled if one fails or is cancelled. */
  after?: number[];
}

/** What the dependency rules did to a job inside a transition, for its log (drained by the scheduler). */
export interface DependencyEvent { jobId: number; text: string }

export interface TaskRef { agentId: string; taskId: number; attempt: number }

export interface FinishResult {
  jobId: number;
  outcome: 'completed' | 'retry' | 'failed' | 'ignored';
  /** The task's number within its job as people see it (1-based); absent when ignored. */
  number?: number;
  blocklisted: string | null;
  /** Waiting tasks failed because every available host is now blocklisted for the job. */
  failedEverywhere: number;
  /** Failed runs of the task so far, and the retries its job allows (for the log line). */
  fails?: number;
  retries?: number;
}

export interface StoreOptions {
  /** Failures of one job on one host before that host is blocklisted for the job. */
  blocklistAfter: number;
  /** false: never hand a busy agent its next task ahead (kq --no-prefetch). */
  prefetch?: boolean;
}

interface JobRow {
  id: number; name: string; argv: string; frame_spec: string | null; chunk: number; priority: number;
  cwd: string | null; env: string; max_attempts: number; timeout_ms: number | null; shell: number;
  state: JobState; submitted_at: string; completed_at: string | null; frames_total: number; frames_done: number;
  n_waiting: number; n_running: number; n_completed: number; n_failed: number; n_cancelled: number;
  output: string | null; tasks_unqueued: number | null; bulk_change: string | null; items: number | null;
  waiting_for: number; paused: number; cancelled_by: number | null;
}

/**
 * A stop or restart of a big job whose task rows are still being changed, batch by batch: which task
 * states move to which (as JSON in jobs.bulk_change). Rows already changed hold their target state, which
 * the change leaves alone, so a second change is simply composed with the first (composeChanges).
 */
type BulkChange = Partial<Record<TaskState, TaskState>>;
const STOP: BulkChange = { waiting: 'cancelled' };
const RESTART: BulkChange = { failed: 'waiting', cancelled: 'waiting', completed: 'waiting' };
const RESTART_FAILED: BulkChange = { failed: 'waiting', cancelled: 'waiting' };

/** First `first`, then `then`: where each state ends up. */
function composeChanges(first: BulkChange, then: BulkChange): BulkChange {
  const out: BulkChange = {};
  for (const state of TASK_STATES) {
    const mid = first[state] ?? state;
    const end = then[mid] ?? mid;
    if (end !== state) out[state] = end;
  }
  return out;
}
export type JobStatus = Pick<JobRow, 'id' | 'state' | 'frames_done' | 'frames_total' | 'n_waiting' | 'n_running' | 'n_completed' | 'n_failed' | 'n_cancelled'>;

export interface TaskRow {
  id: number; job_id: number; seq: number; frames: string; n_frames: number; priority: number; state: TaskState;
  attempts: number; fails: number; agent_id: string | null; host: string | null; pid: number | null;
  exit_code: number | null; reason: string | null; started_at: string | null; finished_at: string | null;
  progress: number | null; signal: string | null; stderr_tail: string | null; interruptions: number;
}
interface AgentRow {
  id: string; host: string; pid: number; local: number; state: AgentInfo['state']; task_id: number | null;
  epoch: string; registered_at: string; last_seen: number; session: string | null; confirmed: number; route: string | null; slurm: string | null;
  next_task_id: number | null; prefetch: number; last_outcome: string | null;
}


/** Whether an update speaks for the agent's current registration. */
export type SessionCheck = 'current' | 'unknown' | 'superseded';

/** What a heartbeat told kq, and what kq must do about it. */
export interface HeartbeatResult {
  /** kq does not know the agent in this run (restarted, lost, offline): it must register again. */
  reregister: boolean;
  /** The agent's first heartbeat of this registration, or it became free: work can be dispatched. */
  dispatch: boolean;
  /** The agent reports an outcome kq never received (`finished` was lost): apply it. */
  outcome: TaskOutcome | null;
  /** Renders the agent runs that are not (any more) its work: stop them (the stop-task was lost). */
  stop: TaskRef[];
  /** Jobs whose task was requeued because the agent never got (or dropped) its assignment. */
  requeuedJobs: number[];
}

/**
 * Tasks inserted with their job in the submit transaction; a bigger job's other tasks are inserted in
 * batches of this size by queueTasks, one transaction each, so no transaction holds kq for long.
 */
export const TASK_BATCH = 5000;

/** `show` lists at most this many tasks (the first ones): a 100,000-task job would not fit one message. */
export const MAX_TASKS_SHOWN = 10_000;
/** Characters a `show` answer may take (the message limit is 4 MiB): fewer tasks are listed when they are big. */
const SHOW_BUDGET = 3 * 1024 * 1024;

/** A task whose agent died this many times while running it (or its job's attempts, if more) fails. */
export const AGENT_DEATHS_BEFORE_FAILING = 3;

const TASK_STATES: TaskState[] = ['waiting', 'running', 'completed', 'failed', 'cancelled'];
const now = () => new Date().toISOString();

/** A job's state follows from its task counts: the one rule, used everywhere. */
export function deriveJobState(c: Pick<JobRow, 'n_waiting' | 'n_running' | 'n_failed' | 'n_cancelled'> & { waiting_for?: number }): JobState {
  if (c.n_running > 0) return 'Running';
  // Waiting work of a job some of whose --after jobs have not Completed yet is held: Blocked.
  if (c.n_waiting > 0) return (c.waiting_for ?? 0) > 0 ? 'Blocked' : 'Waiting';
  if (c.n_failed > 0) return 'Failed';
  if (c.n_cancelled > 0) return 'Cancelled';
  return 'Completed';
}


export class Store {
  readonly db: Database.Database;
  private readonly stmt: ReturnType<typeof prepareStatements>;

  constructor(file: string, private readonly options: StoreOptions, private readonly logPathOf: (jobId: number) => string) {
    let db: Database.Database | null = null;
    try {
      this.db = db = new Database(file);
      this.open();
    } catch (err) {
      if (db?.open) db.close();
      throw new Error(describeOpenError(file, err));
    }
    this.stmt = prepareStatements(this.db);
  }

  private open(): void {
    this.db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode keeps the database consistent across a kill -9 of kq (only an OS crash can lose
    // the last transactions), at a fraction of FULL's fsync cost.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    addMissingColumns(this.db);
    migrateTaskIds(this.db);
    this.cached(`INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)`).run(String(SCHEMA_VERSION));
    for (const r of this.cached(`SELECT id FROM jobs WHERE bulk_change IS NOT NULL`).all() as Array<{ id: number }>) this.changing.add(r.id);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  // ---------- jobs ----------

  /**
   * Insert a job and its first TASK_BATCH tasks. The rest are counted as waiting and recorded in
   * tasks_unqueued, for queueTasks to insert in later transactions (a crash in between loses none: the
   * next kq resumes from the job's frame spec). Returns the job and how many tasks are still to insert.
   */
  readonly submitJob = this.txn((job: NewJob): JobSummary & { tasksUnqueued: number } => {
    const nTasks = Math.max(1, Math.ceil(job.frames.length / job.chunk));
    const { lastInsertRowid } = this.stmt.insertJob.run({
      name: job.name, argv: JSON.stringify(job.argv), frameSpec: job.frameSpec, chunk: job.chunk, priority: job.priority,
      cwd: job.cwd, env: JSON.stringify(job.env), maxAttempts: job.maxAttempts, timeoutMs: job.timeoutMs,
      shell: job.shell ? 1 : 0, submittedAt: now(), framesTotal: job.frames.length, nTasks, output: job.output, unqueued: nTasks,
      items: job.items?.length ?? null,
    });
    const jobId = Number(lastInsertRowid);
    if (job.items) job.items.forEach((item, i) => this.stmt.insertItem.run(jobId, i + 1, item));
    const after = [...new Set(job.after ?? [])];
    for (const parent of after) this.cached(`INSERT OR IGNORE INTO job_deps (job_id, after_id) VALUES (?, ?)`).run(jobId, parent);
    if (after.length > 0) this.cached(`UPDATE jobs SET waiting_for = ? WHERE id = ?`).run(this.unfinishedParents(jobId), jobId); // before its tasks: they are inserted held
    if (nTasks > TASK_BATCH) this.framesOfJob.set(jobId, job.frames);
    const tasksUnqueued = this.insertTasks(jobId, TASK_BATCH, job.frames);
    if (after.length > 0) this.armDependencies(jobId); // Blocked, or Cancelled at once if a parent already failed
    return { ...this.summary(this.jobRow(jobId)!), tasksUnqueued };
  });

  /** Frames of jobs still being queued, so each batch does not parse the frame spec again. */
  private readonly framesOfJob = new Map<number, number[]>();

  private insertTasks(jobId: number, max: number, frames?: number[]): number {
    const job = this.jobRow(jobId);
    const unqueued = job?.tasks_unqueued ?? 0;
    if (!job || unqueued <= 0) return 0;
    const all = frames ?? this.framesOfJob.get(jobId) ?? (job.frame_spec === null ? [] : parseFrameRange(job.frame_spec));
    const nTasks = Math.max(1, Math.ceil(all.length / job.chunk));
    const first = nTasks - unqueued;
    const end = Math.min(nTasks, first + max);
    const held = heldOf(job);
    for (let seq = first; seq < end; seq++) {
      const part = all.slice(seq * job.chunk, (seq + 1) * job.chunk);
      this.stmt.insertTask.run(jobId, seq, JSON.stringify(part), part.length, job.priority, held);
    }
    const left = nTasks - end;
    this.cached(`UPDATE jobs SET tasks_unqueued = ? WHERE id = ?`).run(left, jobId);
    if (left > 0) this.framesOfJob.set(jobId, all);
    else this.framesOfJob.delete(jobId);
    return left;
  }

  jobRow(jobId: number): JobRow | undefined {
    return this.stmt.job.get(jobId) as JobRow | undefined;
  }

  /** A job's state and counts only (what a `job` broadcast and the job's closing log line say): cheaper than jobRow. */
  jobStatus(jobId: number): JobStatus | undefined {
    return this.stmt.jobStatus.get(jobId) as JobStatus | undefined;
  }

  /** All jobs, or those in `states`, or those with these ids (unknown ids are left out). */
  listJobs(states?: JobState[], jobIds?: number[]): JobSummary[] {
    const rows = (jobIds ? this.stmt.jobsById.all(JSON.stringify(jobIds)) : this.stmt.jobs.all()) as JobRow[];
    const wanted = states && states.length > 0 ? new Set(states) : null;
    const running = new Map((this.stmt.runningProgress.all() as Array<RunningProgress & { job_id: number }>).map((p) => [p.job_id, p]));
    const after = new Map<number, number[]>();
    for (const d of this.cached(`SELECT job_id, after_id FROM job_deps ORDER BY job_id, after_id`).all() as Array<{ job_id: number; after_id: number }>) {
      let list = after.get(d.job_id);
      if (!list) after.set(d.job_id, (list = []));
      list.push(d.after_id);
    }
    return rows.filter((r) => !wanted || wanted.has(r.state)).map((r) => this.summary(r, running.get(r.id) ?? null, after.get(r.id) ?? []));
  }

  showJob(jobId: number): JobDetail | null {
    const row = this.jobRow(jobId);
    if (!row) return null;
    const tasks = this.cached(`SELECT * FROM tasks WHERE job_id = ? ORDER BY seq LIMIT ?`).all(jobId, MAX_TASKS_SHOWN + 1) as TaskRow[];
    const total = row.n_waiting + row.n_running + row.n_completed + row.n_failed + row.n_cancelled;
    // The first tasks, as many as fit one answer: big chunks list many frames, failed tasks carry reasons.
    const shown: TaskInfo[] = [];
    let budget = SHOW_BUDGET - row.argv.length - row.env.length;
    for (const t of tasks.slice(0, MAX_TASKS_SHOWN)) {
      budget -= 300 + t.frames.length + (t.reason?.length ?? 0) * 2;
      if (budget < 0) break;
      shown.push(taskInfo(t));
    }
    return {
      ...this.summary(row),
      argv: JSON.parse(row.argv) as string[],
      frameSpec: row.frame_spec,
      chunk: row.chunk,
      cwd: row.cwd,
      output: row.output,
      env: JSON.parse(row.env) as Record<string, string>,
      maxAttempts: row.max_attempts,
      timeoutMs: row.timeout_ms,
      blocklist: (this.stmt.blocklistOf.all(jobId) as Array<{ host: string }>).map((b) => b.host),
      taskList: shown,
      tasksOmitted: Math.max(0, total - shown.length),
    };
  }

  /**
   * Cancel every unfinished task of these jobs. Returns the running ones, whose renders must be killed.
   * The job's counts (and so its state) change at once; a big job's waiting tasks are then cancelled in
   * batches (continueJob), and no work is handed out until that is done (holdsDispatch).
   */
  readonly stopJobs = this.txn((jobIds: number[]): TaskRef[] => {
    const toKill: TaskRef[] = [];
    for (const jobId of jobIds) {
      for (const t of this.stmt.runningOfJob.all(jobId) as TaskRow[]) {
        // A prefetched task is withdrawn before any render is stopped: the agent must not start it when that render ends.
        if (this.clearNext(t)) toKill.unshift({ agentId: t.agent_id!, taskId: t.id, attempt: t.attempts });
        else toKill.push({ agentId: t.agent_id!, taskId: t.id, attempt: t.attempts });
        this.stmt.cancelTask.run({ id: t.id, at: now() });
      }
      this.cached(`UPDATE jobs SET n_cancelled = n_cancelled + n_waiting + n_running, n_waiting = 0, n_running = 0 WHERE id = ?`).run(jobId);
      // Stopped by the user, not by a parent: it waits for nothing any more, and a parent's restart leaves it be.
      this.cached(`UPDATE jobs SET waiting_for = 0, cancelled_by = NULL WHERE id = ?`).run(jobId);
      this.beginBulkChange(jobId, STOP);
      this.refreshJobState(jobId);
    }
    return toKill;
  });

  /**
   * Put tasks back to Waiting: all of them, or with failedOnly just the failed and cancelled ones.
   * Clears the job's blocklist and failure counts. Returns running tasks whose renders must be killed.
   * The counts change at once; a big job's tasks are put back in batches (continueJob).
   */
  readonly restartJobs = this.txn((jobIds: number[], failedOnly: boolean): TaskRef[] => {
    const toKill: TaskRef[] = [];
    for (const jobId of jobIds) {
      if (!failedOnly) {
        for (const t of this.stmt.runningOfJob.all(jobId) as TaskRow[]) {
          if (this.clearNext(t)) toKill.unshift({ agentId: t.agent_id!, taskId: t.id, attempt: t.attempts });
          else toKill.push({ agentId: t.agent_id!, taskId: t.id, attempt: t.attempts });
          this.stmt.restartTask.run({ id: t.id });
        }
      }
      this.cached(failedOnly
        ? `UPDATE jobs SET n_waiting = n_waiting + n_failed + n_cancelled, n_failed = 0, n_cancelled = 0 WHERE id = ?`
        : `UPDATE jobs SET n_waiting = n_waiting + n_failed + n_cancelled + n_completed + n_running, n_failed = 0, n_cancelled = 0,
            n_completed = 0, n_running = 0, frames_done = 0 WHERE id = ?`).run(jobId);
      this.cached(`DELETE FROM blocklist WHERE job_id = ?`).run(jobId);
      this.cached(`DELETE FROM failures WHERE job_id = ?`).run(jobId);
      this.beginBulkChange(jobId, failedOnly ? RESTART_FAILED : RESTART);
      this.cached(`UPDATE jobs SET cancelled_by = NULL WHERE id = ?`).run(jobId);
      this.refreshJobState(jobId);
      // A restarted job waits for its --after jobs again; the jobs its failure cancelled wait for it again.
      this.armDependencies(jobId);
      this.rearmDependentsOf(jobId);
    }
    return toKill;
  });

  /**
   * One batch of a big job's background work, in one transaction: tasks still to insert, then a stop or
   * restart still to apply to its tasks. Returns whether more remains.
   */
  readonly continueJob = this.txn((jobId: number, max: number = TASK_BATCH): boolean =>
    this.isRemoved(jobId) ? this.deleteRemoved(jobId, max) : this.insertTasks(jobId, max) > 0 || this.bulkChange(jobId, max));

  /** Jobs with background work left (after a restart: what the previous kq did not finish). */
  jobsInProgress(): number[] {
    return (this.cached(`SELECT id FROM jobs WHERE tasks_unqueued > 0 OR bulk_change IS NOT NULL OR removed = 1 ORDER BY id`).all() as Array<{ id: number }>).map((r) => r.id);
  }

  /**
   * While a stop or restart is being applied, some task rows do not say their state yet (a cancelled task
   * still looks waiting): nothing may be handed out, and no row may change underneath the batches.
   */
  holdsDispatch(): boolean {
    // The set is kept beside the table: drop what a rolled-back transaction left in it.
    // (Removed jobs too: a stop still pending when its job was removed leaves waiting rows until they are deleted.)
    for (const id of this.changing) if (!(this.cached(`SELECT bulk_change FROM jobs WHERE id = ?`).get(id) as { bulk_change: string | null } | undefined)?.bulk_change) this.changing.delete(id);
    return this.changing.size > 0;
  }

  /** Jobs whose stop or restart is still being applied to their task rows. */
  private readonly changing = new Set<number>();

  /** Record a stop or restart (the counts already say its result) and apply its first batch. */
  private beginBulkChange(jobId: number, change: BulkChange): void {
    const pending = this.jobRow(jobId)?.bulk_change;
    const combined = pending ? composeChanges(JSON.parse(pending) as BulkChange, change) : change;
    this.cached(`UPDATE jobs SET bulk_change = ? WHERE id = ?`).run(JSON.stringify(combined), jobId);
    this.changing.add(jobId);
    this.bulkChange(jobId, TASK_BATCH);
  }

  /** Finish at once what is left of a job's background work (a second change to it, or a rule that recounts it). */
  private finishBulkChange(jobId: number): void {
    const job = this.jobRow(jobId);
    if (job?.bulk_change) this.bulkChange(jobId, Infinity);
  }

  /**
   * Apply up to `max` task rows of a job's pending stop or restart (its counts already say the result).
   * Tasks not inserted yet are inserted first. Returns whether more remains.
   */
  private bulkChange(jobId: number, max: number): boolean {
    const job = this.jobRow(jobId);
    if (!job?.bulk_change) return false;
    if ((job.tasks_unqueued ?? 0) > 0) {
      if (max !== Infinity) return true; // inserted first, batch by batch
      this.insertTasks(jobId, Infinity);
    }
    const change = JSON.parse(job.bulk_change) as BulkChange;
    let left = max;
    for (const [state, to] of Object.entries(change) as Array<[TaskState, TaskState]>) {
      const ids = (this.cached(`SELECT id FROM tasks WHERE state = ? AND priority = ? AND job_id = ? LIMIT ?`)
        .all(state, job.priority, jobId, left === Infinity ? -1 : left) as Array<{ id: number }>).map((r) => r.id);
      if (ids.length === 0) continue;
      const at = now();
      for (const id of ids) (to === 'cancelled' ? this.stmt.cancelTask : this.stmt.restartTask).run({ id, at });
      left -= ids.length;
      if (left <= 0) return true;
    }
    this.cached(`UPDATE jobs SET bulk_change = NULL WHERE id = ?`).run(jobId);
    this.changing.delete(jobId);
    return false;
  }

  // ---------- queue control (issue 17) ----------

  /** Hold or release jobs: held tasks are not handed out; running ones go on. */
  readonly pauseJobs = this.txn((jobIds: number[], paused: boolean): void => {
    for (const jobId of jobIds) {
      this.cached(`UPDATE jobs SET paused = ? WHERE id = ?`).run(paused ? 1 : 0, jobId);
      this.syncHeld(jobId);
    }
  });

  /** The whole queue held (kqctl pause without ids): nothing new is dispatched. Kept in the table, so it survives restarts. */
  queuePaused(): boolean {
    this.queuePausedCache ??= (this.cached(`SELECT value FROM meta WHERE key = 'queue_paused'`).get() as { value: string } | undefined)?.value === '1';
    return this.queuePausedCache;
  }

  readonly setQueuePaused = this.txn((paused: boolean): void => {
    this.cached(`INSERT INTO meta (key, value) VALUES ('queue_paused', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`).run(paused ? '1' : '0');
    this.queuePausedCache = paused;
  });
  private queuePausedCache: boolean | undefined;

  /** A new priority for jobs and every task of theirs (the claim query orders by the tasks' copy). */
  readonly setPriority = this.txn((jobIds: number[], priority: number): void => {
    for (const jobId of jobIds) {
      this.cached(`UPDATE jobs SET priority = ? WHERE id = ?`).run(priority, jobId);
      this.cached(`UPDATE tasks SET priority = ? WHERE job_id = ? AND priority != ?`).run(priority, jobId, priority);
    }
  });

  /**
   * Forget ended jobs (the caller deletes their logs): marked removed in this one short transaction, so they
   * are gone from every answer at once; their rows (a million tasks took kq 9 s in one transaction) are
   * deleted in batches by continueJob, also after a crash (jobsInProgress). Returns the jobs marked.
   */
  readonly removeJobs = this.txn((jobIds: number[]): number[] => {
    const marked: number[] = [];
    for (const jobId of jobIds) {
      if (!this.jobRow(jobId)) continue;
      this.framesOfJob.delete(jobId);
      this.cached(`UPDATE jobs SET removed = 1, tasks_unqueued = 0 WHERE id = ?`).run(jobId);
      marked.push(jobId);
    }
    return marked;
  });

  private isRemoved(jobId: number): boolean {
    return (this.cached(`SELECT removed FROM jobs WHERE id = ?`).get(jobId) as { removed: number } | undefined)?.removed === 1;
  }

  /** One batch of a removed job's rows; its job row goes last. Returns whether more remains. */
  private deleteRemoved(jobId: number, max: number): boolean {
    let left = max;
    left -= this.cached(`DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE job_id = ? LIMIT ?)`).run(jobId, left).changes;
    if (left <= 0) return true;
    left -= this.cached(`DELETE FROM job_items WHERE job_id = ? AND idx IN (SELECT idx FROM job_items WHERE job_id = ? LIMIT ?)`).run(jobId, jobId, left).changes;
    if (left <= 0) return true;
    for (const table of ['failures', 'blocklist', 'job_deps']) this.cached(`DELETE FROM ${table} WHERE job_id = ?`).run(jobId);
    this.cached(`DELETE FROM jobs WHERE id = ?`).run(jobId);
    this.changing.delete(jobId);
    return false;
  }

  /** Ended jobs in these states that ended before `before` (ISO time). */
  endedJobs(states: JobState[], before: string): number[] {
    return (this.cached(`SELECT id FROM jobs WHERE state IN (SELECT value FROM json_each(?)) AND completed_at IS NOT NULL AND completed_at < ? AND removed = 0 ORDER BY id`)
      .all(JSON.stringify(states.filter(isTerminalState)), before) as Array<{ id: number }>).map((r) => r.id);
  }

  /** What the dependency rules did since the last call (for the jobs' logs). */
  takeDependencyEvents(): DependencyEvent[] {
    return this.dependencyEvents.splice(0);
  }
  private readonly dependencyEvents: DependencyEvent[] = [];

  /** Parents of a job that have not Completed (a removed parent counts as done: only ended jobs can be removed). */
  private unfinishedParents(jobId: number): number {
    return (this.cached(`SELECT count(*) AS n FROM job_deps d JOIN jobs p ON p.id = d.after_id WHERE d.job_id = ? AND p.state != 'Completed' AND p.removed = 0`)
      .get(jobId) as { n: number }).n;
  }

  /**
   * Apply a job's --after rule from its parents' states now: Cancelled if one ended without completing,
   * else Blocked while any has not Completed, else free to run.
   */
  private armDependencies(jobId: number): void {
    const job = this.jobRow(jobId);
    if (!job || isTerminalState(job.state)) return;
    const bad = this.cached(`SELECT p.id, p.state FROM job_deps d JOIN jobs p ON p.id = d.after_id
      WHERE d.job_id = ? AND p.state IN ('Failed', 'Cancelled') AND p.removed = 0 ORDER BY p.id LIMIT 1`).get(jobId) as { id: number; state: JobState } | undefined;
    if (bad) return this.cancelForParent(jobId, bad.id, bad.state);
    const waitingFor = this.unfinishedParents(jobId);
    if (waitingFor !== job.waiting_for) {
      this.cached(`UPDATE jobs SET waiting_for = ? WHERE id = ?`).run(waitingFor, jobId);
      if (waitingFor === 0) this.dependencyEvents.push({ jobId, text: `[kq] job ${jobId} released: every job it waits for (--after) has Completed\n` });
      this.syncHeld(jobId);
    }
    this.refreshJobState(jobId);
  }

  /** A parent failed or was cancelled: so is this job (and, through refreshJobState, its own dependents). */
  private cancelForParent(jobId: number, parentId: number, parentState: JobState): void {
    const why = `job ${parentId} ${parentState === 'Failed' ? 'failed' : 'was cancelled'}`;
    this.insertTasks(jobId, Infinity);
    this.finishBulkChange(jobId); // its rows must say their state before this rule recounts them
    this.cached(`UPDATE jobs SET waiting_for = 0, cancelled_by = ? WHERE id = ?`).run(parentId, jobId);
    this.cached(`UPDATE tasks SET state = 'cancelled', reason = ?, finished_at = ? WHERE job_id = ? AND state = 'waiting'`)
      .run(`cancelled: ${why} (--after)`, now(), jobId);
    this.dependencyEvents.push({ jobId, text: `[kq] job ${jobId} cancelled: ${why} and it was submitted --after ${parentId}\n` });
    this.recount(jobId);
  }

  /** A parent changed state: its still-blocked dependents look at their parents again. */
  private recheckDependents(parentId: number): void {
    const dependents = this.cached(`SELECT j.id FROM job_deps d JOIN jobs j ON j.id = d.job_id
      WHERE d.after_id = ? AND j.waiting_for > 0 AND j.state NOT IN ('Completed', 'Failed', 'Cancelled')`).all(parentId) as Array<{ id: number }>;
    for (const d of dependents) this.armDependencies(d.id);
  }

  /** A parent was restarted: the jobs its end cancelled (and theirs, in turn) wait for it again. */
  private rearmDependentsOf(parentId: number): void {
    const cancelled = this.cached(`SELECT id FROM jobs WHERE cancelled_by = ? AND state = 'Cancelled' AND removed = 0`).all(parentId) as Array<{ id: number }>;
    for (const { id } of cancelled) {
      this.finishBulkChange(id);
      this.cached(`UPDATE tasks SET state = 'waiting', reason = NULL, finished_at = NULL WHERE job_id = ? AND state = 'cancelled'`).run(id);
      this.cached(`UPDATE jobs SET cancelled_by = NULL, waiting_for = ? WHERE id = ?`).run(this.unfinishedParents(id), id);
      this.dependencyEvents.push({ jobId: id, text: `[kq] job ${id} waits again: job ${parentId}, which cancelled it, was restarted\n` });
      this.syncHeld(id);
      this.recount(id);
      this.armDependencies(id);
      this.rearmDependentsOf(id);
    }
  }

  /** Tasks are held while their job is paused or blocked: the claim query skips them through the index. */
  private syncHeld(jobId: number): void {
    const job = this.jobRow(jobId);
    if (!job) return;
    const held = heldOf(job);
    this.cached(`UPDATE tasks SET held = ? WHERE job_id = ? AND held != ?`).run(held, jobId, held);
  }

  // ---------- prefetch ----------

  /**
   * Take prefetched (not started) tasks back from their agents: those of these jobs, or all of them. They
   * go back to Waiting with nothing counted; the agents must be told to drop them (the returned refs).
   * Used when a job or the queue is paused or priorities change: what starts next is decided again.
   */
  readonly withdrawPrefetched = this.txn((which: { jobIds?: number[]; below?: number } = {}): Array<TaskRef & { jobId: number }> => {
    const refs: Array<TaskRef & { jobId: number }> = [];
    const jobs = which.jobIds ? new Set(which.jobIds) : null;
    for (const agent of this.cached(`SELECT * FROM agents WHERE next_task_id IS NOT NULL`).all() as AgentRow[]) {
      const task = this.stmt.task.get(agent.next_task_id) as TaskRow | undefined;
      if (task && jobs && !jobs.has(task.job_id)) continue;
      if (task && which.below !== undefined && task.priority >= which.below) continue;
      this.stmt.setNext.run(null, agent.id);
      if (!task || task.state !== 'running' || task.agent_id !== agent.id) continue;
      this.requeue(task, `withdrawn from agent ${agent.id} before it started`);
      refs.push({ agentId: agent.id, taskId: task.id, attempt: task.attempts, jobId: task.job_id });
    }
    return refs;
  });

  /** If this running task is some agent's prefetched one, the agent no longer holds it; true if it was. */
  private clearNext(task: TaskRow): boolean {
    if (task.agent_id === null) return false;
    return this.cached(`UPDATE agents SET next_task_id = NULL WHERE id = ? AND next_task_id = ?`).run(task.agent_id, task.id).changes > 0;
  }

  /** The agent's current task is over: its prefetched task (still its own) becomes current, else it is idle. */
  private freeAgent(agentId: string): void {
    const agent = this.stmt.agent.get(agentId) as AgentRow | undefined;
    const next = agent?.next_task_id == null ? undefined : this.stmt.task.get(agent.next_task_id) as TaskRow | undefined;
    if (next && next.state === 'running' && next.agent_id === agentId) this.stmt.promoteNext.run(agentId);
    else this.stmt.setAgent.run({ id: agentId, state: 'idle', taskId: null });
  }

  // ---------- dispatch ----------

  /** Give the highest-priority waiting task this agent's host may run to the agent (with its session), or null. */
  readonly claimTask = this.txn((agentId: string): (TaskAssignment & { session: string; route: string }) | null => {
    const agent = this.stmt.agent.get(agentId) as AgentRow | undefined;
    if (!agent || agent.confirmed !== 1 || agent.session === null || agent.route === null) return null;
    // A busy agent that prefetches takes one more, to start the moment its current task ends.
    const prefetch = this.options.prefetch !== false && agent.state === 'busy' && agent.prefetch === 1 && agent.task_id !== null && agent.next_task_id === null;
    if (agent.state !== 'idle' && !prefetch) return null;
    const task = this.stmt.claim.get({ agentId, host: agent.host, at: now(), epoch: this.epoch }) as TaskRow | undefined;
    if (!task) return null;
    if (prefetch) {
      this.stmt.setNext.run(task.id, agentId);
      this.stmt.setTaskReason.run(`queued on agent ${agentId}: starts when its current task ends`, task.id);
    } else {
      this.stmt.setAgent.run({ id: agentId, state: 'busy', taskId: task.id });
    }
    const job = this.countMove(task.job_id, 'waiting', 'running', 0)!;
    const frames = JSON.parse(task.frames) as number[];
    const items = job.items === null || frames.length === 0 ? undefined
      : { values: (this.stmt.itemsOf.all(task.job_id, frames[0], frames[frames.length - 1]) as Array<{ item: string }>).map((r) => r.item), shell: job.shell === 1 };
    return {
      taskId: task.id, jobId: task.job_id, attempt: task.attempts, frames,
      commands: expandCommands(JSON.parse(job.argv) as string[], frames, items),
      cwd: job.cwd, env: JSON.parse(job.env) as Record<string, string>, timeoutMs: job.timeout_ms, shell: job.shell === 1,
      session: agent.session, route: agent.route,
    };
  });

  /** A task that can never be sent fails at once: no retry, no strike against the host; the agent stays free. */
  readonly failUndeliverable = this.txn((ref: TaskRef, reason: string): number => {
    const task = this.stmt.runningOf.get(ref) as TaskRow;
    this.stmt.endTask.run({ id: task.id, state: 'failed', exitCode: null, reason, at: now(), failed: 0, signal: null, stderrTail: null });
    this.countMove(task.job_id, 'running', 'failed', 0);
    if (!this.clearNext(task)) this.stmt.setAgent.run({ id: ref.agentId, state: 'idle', taskId: null });
    return task.job_id;
  });

  /**
   * The agent refused an assignment (it runs another task): no attempt was made, so the task goes back to
   * the queue with nothing counted. The agent gets no work until a heartbeat says it is free.
   */
  readonly refuseTask = this.txn((ref: TaskRef): number | null => {
    const task = this.stmt.runningOf.get(ref) as TaskRow | undefined;
    if (!task) return null;
    const wasNext = this.clearNext(task);
    this.requeue(task, 'the agent was busy with another task');
    // A refused prefetch leaves the agent's current task as it is; prefetching to it stops until that ends.
    if (wasNext) this.cached(`UPDATE agents SET prefetch = 0 WHERE id = ?`).run(ref.agentId);
    else this.stmt.setAgent.run({ id: ref.agentId, state: 'busy', taskId: null });
    return task.job_id;
  });

  /**
   * The assignment, sent to `route`, never reached the agent: that task goes back to the queue. If the agent
   * has registered again since (another route), nothing else changes. If it is running another task (the
   * failed one was a prefetch), it keeps that task — its render goes on — but gets nothing more until it
   * registers again (returns true: kq asks it to), when its proven session keeps the render. Else the agent
   * is offline.
   */
  readonly unassign = this.txn((ref: TaskRef, route: string): boolean => {
    const task = this.stmt.runningOf.get(ref) as TaskRow | undefined;
    const wasNext = task ? this.clearNext(task) : false;
    if (task) this.requeue(task, 'agent unreachable');
    const agent = this.stmt.agent.get(ref.agentId) as AgentRow | undefined;
    if (!agent || agent.route !== route) return false;
    if (wasNext && agent.task_id !== null) {
      this.cached(`UPDATE agents SET route = NULL WHERE id = ?`).run(ref.agentId);
      return true;
    }
    this.dropAgent(ref.agentId, 'offline', 'agent unreachable');
    return false;
  });

  /**
   * The render of this attempt started: record its pid (and, for a prefetched task, which starts later than
   * it was assigned, its start time; its reason is cleared). One statement, atomic on its own (no transaction
   * around it); null, and nothing written, if the attempt is no longer current.
   */
  markStarted(ref: TaskRef, pid: number): TaskRow | null {
    return (this.stmt.startedPid.get({ ...ref, pid, at: now() }) as TaskRow | undefined) ?? null;
  }

  /** Progress (percent) parsed from the log of this attempt; false if the attempt is no longer current. */
  setTaskProgress(ref: TaskRef, percent: number): boolean {
    return this.stmt.setTaskProgress.run({ ...ref, percent }).changes > 0;
  }

  /** Running task attempts (of one agent, or all): to say in their jobs' logs that they were interrupted. */
  runningAttempts(agentId?: string): Array<{ jobId: number; taskId: number; number: number; attempt: number; agentId: string | null }> {
    const rows = (agentId === undefined ? this.cached(`SELECT * FROM tasks INDEXED BY tasks_by_agent WHERE state = 'running'`).all()
      : this.stmt.runningByAgent.all(agentId)) as TaskRow[];
    return rows.map((t) => ({ jobId: t.job_id, taskId: t.id, number: t.seq + 1, attempt: t.attempts, agentId: t.agent_id }));
  }

  /** A task's state and reason now (null for an unknown task). */
  taskState(taskId: number): { state: TaskState; reason: string | null } | null {
    const t = this.stmt.task.get(taskId) as TaskRow | undefined;
    return t ? { state: t.state, reason: t.reason } : null;
  }

  /** A task's number within its job as people see it (1-based), or null for an unknown task. */
  taskNumber(taskId: number): number | null {
    const t = this.stmt.task.get(taskId) as TaskRow | undefined;
    return t ? t.seq + 1 : null;
  }

  /** The task if this agent currently runs this attempt of it (a message about it is current), else null. */
  currentTask(ref: TaskRef): TaskRow | null {
    return (this.stmt.runningOf.get(ref) as TaskRow | undefined) ?? null;
  }

  isCurrent(ref: TaskRef): boolean {
    return this.currentTask(ref) !== null;
  }

  /**
   * Did kq ever hand out this attempt? (Attempt numbers only grow, task ids are never reused: an attempt
   * above the task's count, or a task id above every one made, was never assigned to anyone.)
   */
  wasHandedOut(ref: TaskRef): boolean {
    const row = this.stmt.task.get(ref.taskId) as TaskRow | undefined;
    if (row) return ref.attempt >= 1 && ref.attempt <= row.attempts;
    const made = this.cached(`SELECT seq FROM sqlite_sequence WHERE name = 'tasks'`).get() as { seq: number } | undefined;
    return ref.taskId <= (made?.seq ?? 0);
  }

  /** Process ids of the renders this agent runs (each leads its own process group). */
  renderPidsOf(agentId: string): number[] {
    return (this.stmt.runningByAgent.all(agentId) as TaskRow[]).map((t) => t.pid).filter((p): p is number => p !== null && p > 0);
  }

  readonly finishTask = this.txn((ref: TaskRef, exitCode: number | null, reason: string | null, signal: string | null = null, stderrTail: string[] = []): FinishResult => {
    // Checked before anything changes: a report about another attempt (stale, replayed or forged) touches nothing.
    const task = this.stmt.runningOf.get(ref) as TaskRow | undefined;
    const agent = this.stmt.agent.get(ref.agentId) as AgentRow | undefined;
    if (!task) {
      const stale = this.stmt.task.get(ref.taskId) as TaskRow | undefined;
      // The task was stopped or requeued meanwhile: the agent is free, unless it runs another attempt of it.
      const runsItStill = stale?.state === 'running' && stale.agent_id === ref.agentId;
      if (agent?.state === 'busy' && agent.task_id === ref.taskId && !runsItStill) this.freeAgent(ref.agentId);
      return { jobId: stale?.job_id ?? -1, outcome: 'ignored', blocklisted: null, failedEverywhere: 0 };
    }
    if (agent && agent.task_id === ref.taskId && agent.state === 'busy') this.freeAgent(ref.agentId);
    // The last two kept: with prefetch an agent repeats its last two outcomes.
    const previous = agent?.last_outcome?.split(' ')[0];
    this.cached(`UPDATE agents SET last_outcome = ? WHERE id = ?`).run([`${ref.taskId}.${ref.attempt}`, previous].filter(Boolean).join(' '), ref.agentId);
    const at = now();
    if (exitCode === 0 && reason === null) {
      this.stmt.endTask.run({ id: task.id, state: 'completed', exitCode, reason, at, failed: 0, signal: null, stderrTail: null });
      this.countMove(task.job_id, 'running', 'completed', task.n_frames);
      return { jobId: task.job_id, outcome: 'completed', number: task.seq + 1, blocklisted: null, failedEverywhere: 0 };
    }
    const job = this.jobRow(task.job_id)!;
    let blocklisted: string | null = null;
    // Strike the host only while another host could take the work: on a one-host farm (or when the failure
    // is the job's own fault) a blocklist would only leave the job with nowhere to run.
    if (task.host && this.otherHostCouldRun(task.job_id, task.host)) {
      const { count } = this.stmt.bumpFailure.get(task.job_id, task.host) as { count: number };
      if (count >= this.options.blocklistAfter) {
        this.stmt.blocklist.run(task.job_id, task.host);
        blocklisted = task.host;
      }
    }
    const why = reason ?? (signal ? `killed by ${signal}` : `exit code ${exitCode}`);
    const retry = task.fails + 1 < job.max_attempts;
    this.stmt.endTask.run({ id: task.id, state: retry ? 'waiting' : 'failed', exitCode, reason: why, at, failed: 1, signal, stderrTail: JSON.stringify(stderrTail) });
    this.countMove(task.job_id, 'running', retry ? 'waiting' : 'failed', 0);
    const failedEverywhere = blocklisted ? this.failIfNoHostLeft(task.job_id) : 0;
    return { jobId: task.job_id, outcome: retry ? 'retry' : 'failed', number: task.seq + 1, blocklisted, failedEverywhere, fails: task.fails + 1, retries: job.max_attempts - 1 };
  });

  /** Is a live agent on another host, not blocklisted for this job, there to take its work? */
  private otherHostCouldRun(jobId: number, host: string): boolean {
    return this.cached(`SELECT 1 FROM agents a WHERE a.state IN ('idle', 'busy') AND a.confirmed = 1 AND a.epoch = ? AND a.host != ?
      AND NOT EXISTS (SELECT 1 FROM blocklist b WHERE b.job_id = ? AND b.host = a.host) LIMIT 1`).get(this.epoch, host, jobId) !== undefined;
  }

  /**
   * End this attempt as failed now, with no retry, while its render is still being stopped (kq cannot
   * keep its output: the disk is full). The agent stays busy until it reports the render ended.
   * Returns the task's job, or null if the attempt is no longer current.
   */
  readonly failTaskNow = this.txn((ref: TaskRef, reason: string): number | null => {
    const task = this.stmt.runningOf.get(ref) as TaskRow | undefined;
    if (!task) return null;
    this.stmt.endTask.run({ id: task.id, state: 'failed', exitCode: null, reason, at: now(), failed: 1, signal: null, stderrTail: null });
    this.countMove(task.job_id, 'running', 'failed', 0);
    return task.job_id;
  });

  /**
   * When every host that is up is blocklisted for a job, its waiting tasks could only wait forever:
   * fail them instead, so the job ends and `wait` returns. Returns how many were failed.
   */
  private failIfNoHostLeft(jobId: number): number {
    const open = this.cached(`SELECT count(*) AS n FROM agents a WHERE a.state IN ('idle', 'busy') AND a.confirmed = 1 AND a.epoch = ?
      AND NOT EXISTS (SELECT 1 FROM blocklist b WHERE b.job_id = ? AND b.host = a.host)`).get(this.epoch, jobId) as { n: number };
    if (open.n > 0) return 0;
    this.insertTasks(jobId, Infinity);
    this.finishBulkChange(jobId);
    // The last run's own failure stays in the reason: it is what explains the job.
    const { changes } = this.cached(`UPDATE tasks SET state = 'failed', reason = 'every available host is blocklisted for this job'
        || CASE WHEN fails > 0 AND reason IS NOT NULL THEN ' (last run: ' || reason || ')' ELSE '' END,
      finished_at = ? WHERE job_id = ? AND state = 'waiting'`).run(now(), jobId);
    if (changes > 0) this.recount(jobId);
    return changes;
  }

  // ---------- agents ----------

  /**
   * An agent (re)registers. If it reports a task it still runs and the store agrees, the task stays
   * Running; otherwise `keepRunning` is false and the agent must drop it. Any other task the store
   * thought this agent had is requeued.
   */
  readonly registerAgent = this.txn((a: { id: string; host: string; pid: number; local: boolean; running: RunningTask | null; epoch: string; session: string;
    route: string; slurm?: SlurmPlacement | null; queued?: RunningTask | null; prefetch?: boolean }):
    { keepRunning: boolean; keepQueued: boolean; requeuedJobs: number[] } => {
    const keep = a.running !== null && this.isCurrent({ agentId: a.id, ...a.running });
    // A prefetched task is kept only behind a kept current one (the agent starts it when that ends).
    const keepQueued = keep && !!a.queued && a.queued.taskId !== a.running!.taskId && this.isCurrent({ agentId: a.id, ...a.queued });
    const requeuedJobs: number[] = [];
    for (const t of this.stmt.runningByAgent.all(a.id) as TaskRow[]) {
      if (keep && t.id === a.running!.taskId) continue;
      if (keepQueued && t.id === a.queued!.taskId) continue;
      this.requeue(t, 'agent re-registered without it');
      requeuedJobs.push(t.job_id);
    }
    this.sessions.delete(a.id);
    this.stmt.upsertAgent.run({
      id: a.id, host: a.host, pid: a.pid, local: a.local ? 1 : 0, state: keep ? 'busy' : 'idle',
      taskId: keep ? a.running!.taskId : null, epoch: a.epoch, at: now(), seen: Date.now(), session: a.session,
      slurm: a.slurm ? JSON.stringify(a.slurm) : null, route: a.route,
      nextTaskId: keepQueued ? a.queued!.taskId : null, prefetch: a.prefetch ? 1 : 0,
    });
    return { keepRunning: keep, keepQueued, requeuedJobs };
  });

  /**
   * May this registration take the agent id? `proven`: it names the id's current session (the same agent
   * re-registering). Otherwise it may only take an id no live agent holds; `holder` describes the one that does.
   */
  registrationCheck(agentId: string, session: string | null, liveSince: number): { proven: boolean; holder: string | null } {
    const row = this.stmt.agent.get(agentId) as AgentRow | undefined;
    if (!row || row.session === null) return { proven: false, holder: null };
    if (session !== null && session === row.session) return { proven: true, holder: null };
    const seen = this.lastSeenOf(row);
    const live = (row.state === 'idle' || row.state === 'busy') && seen >= liveSince;
    return { proven: false, holder: live ? `${row.host} (pid ${row.pid}, seen ${Math.max(0, Math.round((Date.now() - seen) / 1000))} s ago)` : null };
  }

  /** Heartbeats past the grace that did not show this agent's assignment (kept in memory: a restart starts over). */
  private readonly assignMisses = new Map<string, { key: string; count: number }>();
  private missedAgain(agentId: string, task: RunningTask): number {
    const key = `${task.taskId}.${task.attempt}`;
    const prev = this.assignMisses.get(agentId);
    const count = prev?.key === key ? prev.count + 1 : 1;
    if (this.assignMisses.size > 10_000) this.assignMisses.clear();
    this.assignMisses.set(agentId, { key, count });
    return count;
  }

  /**
   * Is this one of the last two outcomes kq took from this agent? An agent repeats them until it is sure kq
   * has them: a repeat is never about an attempt it was given since (were its numbers ever the same).
   */
  isRepeatedOutcome(agent: string | Pick<AgentRow, 'last_outcome'>, o: RunningTask): boolean {
    const row = typeof agent === 'string' ? (this.stmt.agent.get(agent) as AgentRow | undefined) : agent;
    return row?.last_outcome?.split(' ').includes(`${o.taskId}.${o.attempt}`) ?? false;
  }

  /** Does an update from this agent speak for its current registration? */
  checkSession(agentId: string, session: string): SessionCheck {
    let current = this.sessions.get(agentId);
    if (current === undefined) {
      const agent = this.stmt.agent.get(agentId) as AgentRow | undefined;
      if (!agent) return 'unknown'; // not cached: a stranger may name any id
      this.sessions.set(agentId, (current = agent.session));
    }
    if (current === null) return 'unknown';
    return current === session ? 'current' : 'superseded';
  }

  /** Agents' current sessions as the table holds them (only registerAgent changes one, and drops it here). */
  private readonly sessions = new Map<string, string | null>();

  /**
   * Record a heartbeat (its session already checked) and reconcile what the agent says it runs with what
   * the store says, both ways. `assignGraceMs`: an assignment younger than this may still be on its way.
   */
  readonly heartbeat = (h: { agentId: string; epoch: string; running: RunningTask | null; lastOutcome: TaskOutcome | null; assignGraceMs: number; queued?: RunningTask | null;
    priorOutcome?: TaskOutcome | null }): HeartbeatResult => {
    // Most heartbeats say what kq already knows: then only the time is noted, in memory (a write
    // transaction per heartbeat was most of what an idle farm of 500 agents cost kq).
    const agent = this.stmt.agent.get(h.agentId) as AgentRow | undefined;
    if (agent && this.agreesWith(agent, h)) {
      this.seenAt.set(h.agentId, Date.now());
      return { reregister: false, dispatch: false, outcome: null, stop: [], requeuedJobs: [] };
    }
    return this.reconcileHeartbeat(h);
  };

  /** A confirmed agent of this run, idle and running nothing, or busy with exactly the attempt kq gave it. */
  private agreesWith(agent: AgentRow, h: { agentId: string; epoch: string; running: RunningTask | null; queued?: RunningTask | null }): boolean {
    if (agent.epoch !== h.epoch || agent.confirmed !== 1) return false;
    // The prefetched task too: none on either side, or the same attempt on both.
    const queued = h.queued ?? null;
    if ((agent.next_task_id === null) !== (queued === null)) return false;
    if (queued !== null) {
      if (agent.next_task_id !== queued.taskId) return false;
      const next = this.stmt.task.get(queued.taskId) as TaskRow | undefined;
      if (next === undefined || next.state !== 'running' || next.agent_id !== h.agentId || next.attempts !== queued.attempt) return false;
    }
    if (agent.state === 'idle') return h.running === null && agent.task_id === null;
    if (agent.state !== 'busy' || h.running === null || agent.task_id !== h.running.taskId) return false;
    const row = this.stmt.task.get(agent.task_id) as TaskRow | undefined;
    return row !== undefined && row.state === 'running' && row.agent_id === h.agentId && row.attempts === h.running.attempt;
  }

  /**
   * Heartbeat times not yet written to the table (agent id → ms): written in one transaction before the
   * silent-agent check reads them, and read from here by everything else that shows or weighs them.
   */
  private readonly seenAt = new Map<string, number>();

  private lastSeenOf(row: AgentRow): number {
    return Math.max(row.last_seen, this.seenAt.get(row.id) ?? 0);
  }

  private flushSeen(): void {
    for (const [id, at] of this.seenAt) this.stmt.seen.run(at, id);
    this.seenAt.clear();
  }

  private readonly reconcileHeartbeat = this.txn((h: { agentId: string; epoch: string; running: RunningTask | null; lastOutcome: TaskOutcome | null; assignGraceMs: number; queued?: RunningTask | null;
    priorOutcome?: TaskOutcome | null }): HeartbeatResult =>
    {
      const result: HeartbeatResult = { reregister: false, dispatch: false, outcome: null, stop: [], requeuedJobs: [] };
      const agent = this.stmt.agent.get(h.agentId) as AgentRow | undefined;
      if (!agent || agent.epoch !== h.epoch || agent.state === 'lost' || agent.state === 'offline') return { ...result, reregister: true };
      this.stmt.seen.run(Date.now(), h.agentId);
      // Kept in memory too: were this transaction rolled back (a failed group commit, a full disk), the agent
      // was heard all the same, and its older time in the table must not have it judged silent.
      this.seenAt.set(h.agentId, Date.now());
      if (agent.confirmed !== 1) {
        this.cached(`UPDATE agents SET confirmed = 1 WHERE id = ?`).run(h.agentId);
        result.dispatch = true;
      }
      const same = (a: RunningTask | null, b: RunningTask | null) => a !== null && b !== null && a.taskId === b.taskId && a.attempt === b.attempt;
      const row = agent.task_id === null ? undefined : this.stmt.task.get(agent.task_id) as TaskRow | undefined;
      const ours: RunningTask | null = agent.state === 'busy' && row && row.state === 'running' && row.agent_id === h.agentId
        ? { taskId: row.id, attempt: row.attempts } : null;
      let state = agent.state;
      let taskId = agent.task_id;
      if (ours && !same(ours, h.running)) {
        const reported = [h.lastOutcome, h.priorOutcome ?? null].find((o) => o && same(ours, o) && !this.isRepeatedOutcome(agent, o));
        if (reported) {
          result.outcome = reported; // its `finished` never arrived
        } else if (Date.parse(row!.started_at ?? '') < Date.now() - h.assignGraceMs && this.missedAgain(h.agentId, ours) >= 2) {
          // Twice past the grace, the agent neither runs nor finished the task it was given: the assignment was
          // lost or dropped (once could be a heartbeat sent just before a stalled agent read its assignment).
          this.requeue(row!, 'the agent never started it');
          result.requeuedJobs.push(row!.job_id);
          state = 'busy';
          taskId = null;
        }
      }
      const queued = h.queued ?? null;
      const nextRow = agent.next_task_id === null ? undefined : this.stmt.task.get(agent.next_task_id) as TaskRow | undefined;
      const ourNext: RunningTask | null = nextRow && nextRow.state === 'running' && nextRow.agent_id === h.agentId ? { taskId: nextRow.id, attempt: nextRow.attempts } : null;
      let nextId = ourNext ? agent.next_task_id : null;
      if (ourNext && !same(ourNext, queued) && !same(ourNext, h.running) && !(taskId === null && ours !== null)
        && Date.parse(nextRow!.started_at ?? '') < Date.now() - h.assignGraceMs && this.missedAgain(`${h.agentId}\u0000next`, ourNext) >= 2) {
        // Its prefetched assignment was lost or dropped: back to the queue (nothing was tried).
        this.requeue(nextRow!, 'the agent never got it');
        result.requeuedJobs.push(nextRow!.job_id);
        nextId = null;
      }
      if (taskId === null && ours !== null && nextId !== null) {
        // Its current assignment was lost: the prefetched one is next in line.
        taskId = nextId;
        nextId = null;
      }
      if (queued && !same(ourNext, queued) && !same(ours, queued) && !this.isCurrent({ agentId: h.agentId, ...queued })) {
        // A prefetched task kq took back (its withdrawal was lost): the agent must drop it.
        result.stop.push({ agentId: h.agentId, ...queued });
      }
      if (h.running && !same(ours, h.running)) {
        // A render kq does not count as this agent's (its stop-task was lost): stop it; no work until it ends.
        if (!this.isCurrent({ agentId: h.agentId, ...h.running })) result.stop.push({ agentId: h.agentId, ...h.running });
        if (state === 'idle') state = 'busy';
      } else if (!h.running && state === 'busy' && (taskId === null || !ours) && nextId !== null && taskId !== nextId) {
        // Its current task is no longer its own: the prefetched one is next in line (checked like any assignment).
        taskId = nextId;
        nextId = null;
      } else if (!h.running && state === 'busy' && (taskId === null || !ours)) {
        // Busy with nothing, or with a task that is no longer its own: the agent says it is free.
        state = 'idle';
        taskId = null;
        result.dispatch = true;
      }
      if (state !== agent.state || taskId !== agent.task_id) this.stmt.setAgent.run({ id: h.agentId, state, taskId });
      if (taskId !== null && (nextId ?? null) !== (agent.next_task_id ?? null)) this.stmt.setNext.run(nextId, h.agentId);
      return result;
    });

  /** Is any agent silent since `before` (ms)? A read: the check every second writes nothing while all are heard. */
  anySilentAgent(before: number): boolean {
    // The table's time may be older than the heartbeat noted in memory (seenAt).
    return (this.stmt.staleAgents.all(before) as string[]).some((id) => (this.seenAt.get(id) ?? 0) < before);
  }

  /** Agents silent since `before` (ms) are lost; their tasks go back to the queue. */
  readonly markSilentAgentsLost = this.txn((before: number): Array<{ agent: AgentInfo; requeuedJobs: number[]; renderPids: number[] }> => {
    const lost: Array<{ agent: AgentInfo; requeuedJobs: number[]; renderPids: number[] }> = [];
    this.flushSeen();
    for (const row of this.stmt.silentAgents.all(before) as AgentRow[]) {
      const agent = this.agentInfo(row);
      const renderPids = this.renderPidsOf(row.id);
      lost.push({ agent, renderPids, requeuedJobs: this.dropAgent(row.id, 'lost', `agent ${row.id} on ${row.host} lost (no heartbeat)`, true) });
    }
    return lost;
  });

  /**
   * The agent process is gone (exited, or kq stops it): requeue its task, mark it offline. `died`: it did
   * not hand its task back (killed, crashed), which counts against the task (see dropAgent).
   */
  readonly agentGone = this.txn((agentId: string, reason: string, died?: boolean): number[] => this.dropAgent(agentId, 'offline', reason, died ?? false));

  /** kq is shutting down: every running task goes back to Waiting, every agent is offline. */
  readonly requeueAll = this.txn((reason: string): number[] => {
    const jobs = new Set<number>();
    for (const row of this.stmt.agents.all() as AgentRow[]) {
      for (const j of this.dropAgent(row.id, 'offline', reason)) jobs.add(j);
    }
    return [...jobs];
  });

  /**
   * At start-up, agents the previous kq knew get one heartbeat timeout to come back (they re-register
   * and keep their running task); the lost-agent timer requeues the rest.
   */
  /** kq's current run (set by beginEpoch): only agents registered in it count as hosts that can take work. */
  private epoch = '';

  readonly beginEpoch = this.txn((epoch: string): void => {
    this.epoch = epoch;
    this.seenAt.clear();
    this.cached(`UPDATE agents SET last_seen = ? WHERE state IN ('idle', 'busy')`).run(Date.now());
    // Tasks whose agent row is missing or not busy with them cannot come back.
    const orphans = this.cached(`SELECT t.* FROM tasks t LEFT JOIN agents a ON a.id = t.agent_id
      WHERE t.state = 'running' AND (a.id IS NULL OR a.state NOT IN ('idle', 'busy'))`).all() as TaskRow[];
    for (const t of orphans) this.requeue(t, 'agent gone while kq was down');
  });

  /** Is any task waiting and not held? (The first entry of the ready index: cheap whatever the queue's size.) */
  hasReadyTask(): boolean {
    return this.stmt.anyReady.get() !== undefined;
  }

  idleAgents(epoch: string): AgentInfo[] {
    return (this.stmt.idleAgents.all(epoch) as AgentRow[]).map((r) => this.agentInfo(r));
  }

  /** Agents that can take a task now: idle ones, then (with prefetch) busy ones whose next slot is free. */
  dispatchableAgents(epoch: string): Array<{ id: string; state: AgentInfo['state'] }> {
    // Two reads, each on its partial index: one `state = 'idle' OR …` read scanned every agent per dispatch.
    const idle = this.stmt.idleAgents.all(epoch) as AgentRow[];
    return this.options.prefetch === false ? idle : idle.concat(this.stmt.prefetchableAgents.all(epoch) as AgentRow[]);
  }

  /** Tasks waiting for an agent, over all jobs (the Slurm autoscaler's demand). */
  waitingTaskCount(): number {
    return (this.cached(`SELECT coalesce(sum(n_waiting), 0) AS n FROM jobs WHERE n_waiting > 0`).get() as { n: number }).n;
  }

  listAgents(): AgentInfo[] {
    return (this.stmt.agents.all() as AgentRow[]).map((r) => this.agentInfo(r));
  }

  /**
   * Agents that left (offline or lost, running nothing) are forgotten after `before` (epoch ms), and beyond
   * the `keep` most recently seen: every local agent replaced, every kq restart and every Slurm agent adds a
   * row, and `kqctl agents` must stay one answer. Returns how many were forgotten.
   */
  readonly forgetGoneAgents = this.txn((before: number, keep: number): number =>
    this.cached(`DELETE FROM agents WHERE state IN ('offline', 'lost') AND task_id IS NULL AND (last_seen < ? OR id NOT IN (
      SELECT id FROM agents WHERE state IN ('offline', 'lost') ORDER BY last_seen DESC LIMIT ?))`).run(before, keep).changes);

  // ---------- internals ----------

  private readonly statements = new Map<string, Database.Statement>();
  /** Statements built from a closed set of SQL strings, prepared once. */
  private cached(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) this.statements.set(sql, (st = this.db.prepare(sql)));
    return st;
  }

  /**
   * `work` in one write transaction: the transitions it makes commit together (one WAL write instead of one
   * each). Called inside such a transaction, it is a SAVEPOINT instead: a transition of the group that throws
   * is undone alone, the others stand. SQLite may roll a whole transaction back by itself (disk full, I/O
   * error): `inTransaction` is then false, and the group must stop (what follows would commit one by one).
   */
  readonly atomically = this.txn((work: () => void): void => work());

  /** A write transaction is open (false again after SQLite rolled one back by itself). */
  get inTransaction(): boolean {
    return this.db.inTransaction;
  }

  /**
   * A store transition: `fn` runs in one IMMEDIATE transaction (the write lock taken up front, so it
   * never fails half-way for a lock). better-sqlite3's transaction wrapper is built once, on first use
   * (the database is opened after the fields are set), not on every call.
   */
  private txn<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    let transaction: Database.Transaction<(...args: A) => R> | null = null;
    return (...args) => (transaction ??= this.db.transaction(fn)).immediate(...args);
  }

  /**
   * The agent is gone: its running tasks go back to the queue. `died`: it went without handing them back
   * (killed, crashed, lost): counted against each task if the agent was of this run (a kq restart is not
   * the render's doing), and a task whose agent died this often fails, as the render likely kills it.
   */
  private dropAgent(agentId: string, state: 'lost' | 'offline', reason: string, died = false): number[] {
    const jobs: number[] = [];
    const agent = this.stmt.agent.get(agentId) as AgentRow | undefined;
    // Only the task it ran counts (not one it held next, with prefetch: that never started there).
    const ran = died && agent?.epoch === this.epoch ? agent.task_id : null;
    for (const t of this.stmt.runningByAgent.all(agentId) as TaskRow[]) {
      if (ran !== null && t.id === ran) this.agentDiedRunning(t, reason);
      else this.requeue(t, reason);
      jobs.push(t.job_id);
    }
    this.stmt.setAgent.run({ id: agentId, state, taskId: null }); // and no next task
    return jobs;
  }

  /** Its agent died while running this task: requeued, or failed once that has happened max(attempts, 3) times. */
  private agentDiedRunning(task: TaskRow, reason: string): void {
    const times = task.interruptions + 1;
    const limit = Math.max(this.jobRow(task.job_id)?.max_attempts ?? 1, AGENT_DEATHS_BEFORE_FAILING);
    this.cached(`UPDATE tasks SET interruptions = ? WHERE id = ?`).run(times, task.id);
    if (times < limit) return this.requeue(task, reason);
    this.stmt.endTask.run({ id: task.id, state: 'failed', exitCode: null, reason: `its agent died ${times} times while running it (last: ${reason})`,
      at: now(), failed: 0, signal: null, stderrTail: null });
    this.countMove(task.job_id, 'running', 'failed', 0);
  }

  private requeue(task: TaskRow, reason: string): void {
    this.stmt.requeueTask.run({ id: task.id, reason });
    this.countMove(task.job_id, task.state, 'waiting', 0);
  }

  /** One task of a job moved from one state to another: count it, and return the job's row as it now is. */
  private countMove(jobId: number, from: TaskState, to: TaskState, framesDone: number): JobRow | undefined {
    // RETURNING: the row the state rule needs comes back from the write, not from a second read.
    const row = from === to ? this.jobRow(jobId)
      : this.cached(`UPDATE jobs SET n_${from} = n_${from} - 1, n_${to} = n_${to} + 1, frames_done = frames_done + ? WHERE id = ? RETURNING *`)
        .get(framesDone, jobId) as JobRow | undefined;
    return this.refreshJobState(jobId, row);
  }

  /** Recount a job's tasks from scratch (after bulk updates). */
  private recount(jobId: number): void {
    const counts: Record<string, number> = { id: jobId, framesDone: 0 };
    for (const s of TASK_STATES) counts[s] = 0;
    counts.waiting = this.jobRow(jobId)?.tasks_unqueued ?? 0; // counted as waiting until inserted
    for (const r of this.stmt.counts.all(jobId) as Array<{ state: TaskState; n: number; frames: number }>) {
      counts[r.state]! += r.n;
      if (r.state === 'completed') counts.framesDone = r.frames;
    }
    this.stmt.saveCounts.run(counts);
    this.refreshJobState(jobId);
  }

  /** Set a job's state from its counts (`row`: the job as it is now, if the caller has it); returns the row as it then is. */
  private refreshJobState(jobId: number, row: JobRow | undefined = this.jobRow(jobId)): JobRow | undefined {
    if (!row) return undefined;
    const state = deriveJobState(row);
    if (state === row.state) return row;
    const completedAt = isTerminalState(state) ? now() : null;
    this.stmt.setJobState.run(state, completedAt, jobId);
    row.state = state;
    row.completed_at = completedAt;
    // Only jobs submitted --after this one change here (never this job: dependencies point to older jobs).
    this.recheckDependents(jobId);
    return row;
  }

  private summary(r: JobRow, running: RunningProgress | null = r.n_running > 0 ? this.runningProgressOf(r.id) : null,
    after: number[] = (this.cached(`SELECT after_id FROM job_deps WHERE job_id = ? ORDER BY after_id`).all(r.id) as Array<{ after_id: number }>).map((d) => d.after_id)): JobSummary {
    return {
      id: r.id, name: r.name, state: r.state, priority: r.priority,
      framesDone: r.frames_done, framesTotal: r.frames_total, progress: jobProgress(r, running),
      tasks: { waiting: r.n_waiting, running: r.n_running, completed: r.n_completed, failed: r.n_failed, cancelled: r.n_cancelled },
      submittedAt: r.submitted_at, completedAt: r.completed_at, logFile: this.logPathOf(r.id),
      paused: r.paused === 1, after,
    };
  }

  private runningProgressOf(jobId: number): RunningProgress | null {
    return (this.stmt.runningProgressOf.get(jobId) as RunningProgress | undefined) ?? null;
  }

  private agentInfo(r: AgentRow): AgentInfo {
    const task = r.task_id === null ? undefined : (this.stmt.task.get(r.task_id) as TaskRow | undefined);
    return {
      id: r.id, host: r.host, pid: r.pid, local: r.local === 1, state: r.state,
      jobId: task?.job_id ?? null, taskId: r.task_id, frames: task ? (JSON.parse(task.frames) as number[]) : null,
      registeredAt: r.registered_at, lastSeen: new Date(this.lastSeenOf(r)).toISOString(), slurm: r.slurm ? (JSON.parse(r.slurm) as SlurmPlacement) : null,
      queuedTaskId: r.next_task_id ?? null,
    };
  }
}

function taskInfo(t: TaskRow): TaskInfo {
  return {
    id: t.id, seq: t.seq, number: t.seq + 1, frames: JSON.parse(t.frames) as number[], state: t.state, attempts: t.attempts,
    agentId: t.agent_id, host: t.host, pid: t.pid, exitCode: t.exit_code, signal: t.signal, reason: t.reason,
    stderrTail: t.stderr_tail ? (JSON.parse(t.stderr_tail) as string[]) : [],
    startedAt: t.started_at, finishedAt: t.finished_at,
    progress: t.state === 'completed' ? 100 : t.state === 'running' ? t.progress : null,
  };
}

/** A job's tasks are held (not handed out) while it is paused or waits for --after jobs. */
const heldOf = (job: Pick<JobRow, 'paused' | 'waiting_for'>) => (job.paused === 1 || job.waiting_for > 0 ? 1 : 0);

/** Parsed progress of a job's running tasks: frames' worth done (sum of n_frames × percent) and the highest percent. */
interface RunningProgress { frames: number; percent: number }

/** Percent of a job done: its completed frames plus what its running tasks report; jobs without frames go by their task. */
function jobProgress(r: JobRow, running: RunningProgress | null): number {
  if (r.state === 'Completed') return 100;
  const percent = r.frames_total > 0 ? ((r.frames_done + (running?.frames ?? 0)) / r.frames_total) * 100 : running?.percent ?? 0;
  return Math.min(100, Math.floor(percent * 10) / 10);
}

const SUMMARY_COLUMNS = 'id, name, state, priority, frames_done, frames_total, n_waiting, n_running, n_completed, n_failed, n_cancelled, submitted_at, completed_at, paused, waiting_for';

function prepareStatements(db: Database.Database) {
  return {
      insertJob: db.prepare(`INSERT INTO jobs (name, argv, frame_spec, chunk, priority, cwd, env, max_attempts, timeout_ms, shell,
        state, submitted_at, frames_total, n_waiting, output, tasks_unqueued, items) VALUES (@name, @argv, @frameSpec, @chunk, @priority, @cwd, @env,
        @maxAttempts, @timeoutMs, @shell, 'Waiting', @submittedAt, @framesTotal, @nTasks, @output, @unqueued, @items)`),
      insertItem: db.prepare(`INSERT INTO job_items (job_id, idx, item) VALUES (?, ?, ?)`),
      itemsOf: db.prepare(`SELECT item FROM job_items WHERE job_id = ? AND idx BETWEEN ? AND ? ORDER BY idx`),
      insertTask: db.prepare(`INSERT INTO tasks (job_id, seq, frames, n_frames, priority, state, held) VALUES (?, ?, ?, ?, ?, 'waiting', ?)`),
      // A removed job (its rows still being deleted) is no job: not found, not shown, not changed.
      job: db.prepare(`SELECT * FROM jobs WHERE id = ? AND removed = 0`),
      jobStatus: db.prepare(`SELECT id, state, frames_done, frames_total, n_waiting, n_running, n_completed, n_failed, n_cancelled FROM jobs WHERE id = ? AND removed = 0`),
      // Lists read only what a summary shows: better-sqlite3 builds rows of 20+ columns several times slower.
      jobs: db.prepare(`SELECT ${SUMMARY_COLUMNS} FROM jobs WHERE removed = 0 ORDER BY id`),
      jobsById: db.prepare(`SELECT ${SUMMARY_COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?)) AND removed = 0 ORDER BY id`),
      runningProgress: db.prepare(`SELECT job_id, sum(n_frames * progress) / 100.0 AS frames, max(progress) AS percent
        FROM tasks WHERE state = 'running' AND progress IS NOT NULL GROUP BY job_id`),
      runningProgressOf: db.prepare(`SELECT sum(n_frames * progress) / 100.0 AS frames, max(progress) AS percent
        FROM tasks WHERE job_id = ? AND state = 'running' AND progress IS NOT NULL HAVING count(*) > 0`),
      setTaskProgress: db.prepare(`UPDATE tasks SET progress = @percent
        WHERE id = @taskId AND state = 'running' AND agent_id = @agentId AND attempts = @attempt`),
      // The partial index on running tasks: a job's running tasks without reading its other million.
      runningOfJob: db.prepare(`SELECT * FROM tasks INDEXED BY tasks_by_agent WHERE state = 'running' AND job_id = ?`),
      task: db.prepare(`SELECT * FROM tasks WHERE id = ?`),
      claim: db.prepare(`UPDATE tasks SET state = 'running', attempts = attempts + 1, agent_id = @agentId, host = @host,
          pid = NULL, exit_code = NULL, signal = NULL, reason = NULL, started_at = @at, finished_at = NULL, progress = NULL
        WHERE id = (SELECT t.id FROM tasks t INDEXED BY tasks_ready WHERE t.state = 'waiting' AND t.held = 0
          AND NOT EXISTS (SELECT 1 FROM blocklist b WHERE b.job_id = t.job_id AND b.host = @host)
          AND (t.last_failed_host IS NULL OR t.last_failed_host != @host OR NOT EXISTS (
            SELECT 1 FROM agents a WHERE a.state IN ('idle', 'busy') AND a.confirmed = 1 AND a.epoch = @epoch AND a.host != @host
              AND NOT EXISTS (SELECT 1 FROM blocklist b2 WHERE b2.job_id = t.job_id AND b2.host = a.host)))
          ORDER BY t.priority DESC, t.job_id, t.seq LIMIT 1)
        RETURNING *`),
      anyReady: db.prepare(`SELECT 1 FROM tasks INDEXED BY tasks_ready WHERE state = 'waiting' AND held = 0 LIMIT 1`),
      runningOf: db.prepare(`SELECT * FROM tasks WHERE id = @taskId AND state = 'running' AND agent_id = @agentId AND attempts = @attempt`),
      runningByAgent: db.prepare(`SELECT * FROM tasks WHERE state = 'running' AND agent_id = ?`),
      setTaskReason: db.prepare(`UPDATE tasks SET reason = ? WHERE id = ?`),
      setNext: db.prepare(`UPDATE agents SET next_task_id = ? WHERE id = ?`),
      promoteNext: db.prepare(`UPDATE agents SET state = 'busy', task_id = next_task_id, next_task_id = NULL WHERE id = ?`),
      startedPid: db.prepare(`UPDATE tasks SET pid = @pid, started_at = CASE WHEN pid IS NULL THEN @at ELSE started_at END, reason = NULL
        WHERE id = @taskId AND state = 'running' AND agent_id = @agentId AND attempts = @attempt RETURNING *`),
      endTask: db.prepare(`UPDATE tasks SET state = @state, exit_code = @exitCode, reason = @reason, finished_at = @at, signal = @signal, stderr_tail = @stderrTail,
        fails = fails + @failed, last_failed_host = CASE WHEN @failed = 1 THEN host ELSE last_failed_host END WHERE id = @id`),
      cancelTask: db.prepare(`UPDATE tasks SET state = 'cancelled', reason = 'stopped by user', finished_at = @at WHERE id = @id`),
      restartTask: db.prepare(`UPDATE tasks SET state = 'waiting', fails = 0, interruptions = 0, last_failed_host = NULL, exit_code = NULL, signal = NULL, stderr_tail = NULL, reason = NULL, pid = NULL,
        started_at = NULL, finished_at = NULL, progress = NULL WHERE id = @id`),
      requeueTask: db.prepare(`UPDATE tasks SET state = 'waiting', reason = @reason, pid = NULL WHERE id = @id`),
      agent: db.prepare(`SELECT * FROM agents WHERE id = ?`),
      agents: db.prepare(`SELECT * FROM agents ORDER BY registered_at, id`),
      idleAgents: db.prepare(`SELECT * FROM agents INDEXED BY agents_idle WHERE state = 'idle' AND confirmed = 1 AND epoch = ? ORDER BY last_seen`),
      // Busy agents that prefetch and hold no next task yet (after the idle ones). The terms are the index's.
      prefetchableAgents: db.prepare(`SELECT * FROM agents INDEXED BY agents_prefetchable WHERE epoch = ?
        AND state = 'busy' AND prefetch = 1 AND task_id IS NOT NULL AND next_task_id IS NULL AND confirmed = 1 ORDER BY last_seen`),
      upsertAgent: db.prepare(`INSERT INTO agents (id, host, pid, local, state, task_id, epoch, registered_at, last_seen, session, confirmed, slurm, route, next_task_id, prefetch)
        VALUES (@id, @host, @pid, @local, @state, @taskId, @epoch, @at, @seen, @session, 0, @slurm, @route, @nextTaskId, @prefetch)
        ON CONFLICT (id) DO UPDATE SET host = @host, pid = @pid, local = @local, state = @state, task_id = @taskId,
          epoch = @epoch, last_seen = @seen, session = @session, confirmed = 0, slurm = @slurm, route = @route, next_task_id = @nextTaskId, prefetch = @prefetch`),
      // An agent without a current task holds no prefetched one either.
      setAgent: db.prepare(`UPDATE agents SET state = @state, task_id = @taskId, next_task_id = CASE WHEN @taskId IS NULL THEN NULL ELSE next_task_id END WHERE id = @id`),
      seen: db.prepare(`UPDATE agents SET last_seen = max(last_seen, ?) WHERE id = ?`),
      silentAgents: db.prepare(`SELECT * FROM agents WHERE state IN ('idle', 'busy') AND last_seen < ?`),
      staleAgents: db.prepare(`SELECT id FROM agents WHERE state IN ('idle', 'busy') AND last_seen < ?`).pluck(),
      bumpFailure: db.prepare(`INSERT INTO failures (job_id, host, count) VALUES (?, ?, 1)
        ON CONFLICT (job_id, host) DO UPDATE SET count = count + 1 RETURNING count`),
      blocklist: db.prepare(`INSERT OR IGNORE INTO blocklist (job_id, host) VALUES (?, ?)`),
      blocklistOf: db.prepare(`SELECT host FROM blocklist WHERE job_id = ? ORDER BY host`),
      counts: db.prepare(`SELECT state, count(*) AS n, sum(n_frames) AS frames FROM tasks WHERE job_id = ? GROUP BY state`),
      saveCounts: db.prepare(`UPDATE jobs SET n_waiting = @waiting, n_running = @running, n_completed = @completed,
        n_failed = @failed, n_cancelled = @cancelled, frames_done = @framesDone WHERE id = @id`),
      setJobState: db.prepare(`UPDATE jobs SET state = ?, completed_at = ? WHERE id = ?`),
  };
}

/** Why the job table cannot be opened, with its path and what a person can do about it. */
function describeOpenError(file: string, err: unknown): string {
  const code = String((err as { code?: unknown }).code ?? '');
  const why = (err as Error).message;
  if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_PERM' || code === 'SQLITE_AUTH') {
    return `cannot write the job table ${file} (${why}): it or its directory is read-only; make both writable by this user ` +
      '(check permissions, chattr -i, a read-only mount) or choose another --data-root';
  }
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
    return `the job table ${file} is damaged (${why}): move it aside with its -wal and -shm files ` +
      `(mv ${file} ${file}.damaged) to start with an empty table, or restore it from a backup`;
  }
  if (code.startsWith('SQLITE_CANTOPEN')) return `cannot open the job table ${file} (${why}): check that the data root exists and is writable`;
  if (code === 'SQLITE_FULL' || code.startsWith('SQLITE_IOERR')) return `cannot use the job table ${file} (${why}): is the disk full or failing?`;
  return `cannot open the job table ${file}: ${why}`;
}

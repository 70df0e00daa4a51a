/**
 * Every message that crosses a kq socket, as a zod schema and its TypeScript type.
 *
 * Sockets (see DESIGN.md):
 * - request   kq ROUTER <- agents and kqctl DEALER. Requests carry `rid` and get exactly one Reply.
 *             kq also sends unsolicited `assign` messages to an agent over this socket.
 * - update    kq PULL   <- agents PUSH: heartbeat, started, log, finished.
 * - broadcast kq PUB    -> agents and `kqctl log -f` / `wait`: frames [topic, message].
 */
import { z } from 'zod';
import { PROTOCOL_VERSION } from './version.js';
import { JOB_STATES, MAX_TIMEOUT_MS, Topics, isTerminalState, type JobState } from './constants.js';

const v = z.literal(PROTOCOL_VERSION);
const id = z.number().int().nonnegative();
const agentId = z.string().min(1).max(200);
const shortText = z.string().max(4096);
/** A whole number in [min, max]; the range is checked first, so 1e308 is refused as "<= max", not against the safe-integer bound. */
const boundedInt = (min: number, max: number) => z.number().min(min).max(max).int();
const timeoutMs = z.number().int().positive().max(MAX_TIMEOUT_MS, 'a task timeout may be at most 24 days');

// ---------- jobs and tasks as clients see them ----------

export const JobStateSchema = z.enum(JOB_STATES);
export type { JobState };
export { JOB_STATES, isTerminalState, Topics };

export const TaskStateSchema = z.enum(['waiting', 'running', 'completed', 'failed', 'cancelled']);
export type TaskState = z.infer<typeof TaskStateSchema>;

export const JobSubmitSchema = z.object({
  name: z.string().max(256).optional(),
  argv: z.array(z.string().max(65536)).min(1).max(4096),
  frames: z.string().max(65536).optional(),
  /** `--each`: one run per item (its frames are the items' 1-based indices); not with `frames`. */
  items: z.array(z.string().max(65536)).min(1).max(1_000_000).optional(),
  chunk: boundedInt(1, 1_000_000).default(1),
  priority: boundedInt(-1000, 1000).default(0),
  cwd: z.string().max(4096).optional(),
  env: z.record(z.string().max(1024), z.string().max(65536)).default({}),
  maxAttempts: boundedInt(1, 100).default(3),
  timeoutMs: timeoutMs.optional(),
  shell: z.boolean().default(false),
  /** Where the render writes its frames, relative to cwd, with placeholders: `frames/shot_{frame:04}.png` (the monitor shows them). */
  output: z.string().min(1).max(4096).optional(),
  /** Wait (state Blocked) until these jobs have Completed; if one fails or is cancelled, so is this job. */
  after: z.array(id).max(1000).optional(),
});
export type JobSubmit = z.input<typeof JobSubmitSchema>;

export interface JobSummary {
  id: number;
  name: string;
  state: JobState;
  priority: number;
  framesDone: number;
  framesTotal: number;
  /** Percent done (0-100, one decimal), counting the progress running tasks report in their logs. */
  progress: number;
  tasks: Record<TaskState, number>;
  submittedAt: string;
  completedAt: string | null;
  logFile: string;
  /** Held by `kqctl pause`: no new tasks start (running ones go on). */
  paused: boolean;
  /** The jobs it was submitted `--after` (Blocked until they all Completed). */
  after: number[];
}

export interface TaskInfo {
  /** kq's id for the task (unique across jobs; what agents and the protocol use). */
  id: number;
  /** 0-based position in its job. */
  seq: number;
  /** The task's number as people see it: 1-based within its job (`task 3` in logs, show and the page). */
  number: number;
  frames: number[];
  state: TaskState;
  attempts: number;
  agentId: string | null;
  host: string | null;
  pid: number | null;
  exitCode: number | null;
  /** The signal that ended the last failed run (SIGKILL, …), if one did. */
  signal: string | null;
  reason: string | null;
  /** The last stderr lines of the task's last failed run (kept until it completes). */
  stderrTail: string[];
  startedAt: string | null;
  finishedAt: string | null;
  /** Percent done of the current attempt, parsed from its log (100 once completed); null if unknown. */
  progress: number | null;
}

export interface JobDetail extends JobSummary {
  argv: string[];
  frameSpec: string | null;
  chunk: number;
  cwd: string | null;
  output: string | null;
  env: Record<string, string>;
  maxAttempts: number;
  timeoutMs: number | null;
  blocklist: string[];
  /** The job's first tasks, at most 10,000; `tasksOmitted` counts the rest (their totals are in `tasks`). */
  taskList: TaskInfo[];
  tasksOmitted: number;
}

export interface AgentInfo {
  id: string;
  host: string;
  pid: number;
  local: boolean;
  state: 'idle' | 'busy' | 'lost' | 'offline';
  jobId: number | null;
  taskId: number | null;
  frames: number[] | null;
  registeredAt: string;
  lastSeen: string;
  /** Where Slurm placed this agent, when it runs as a Slurm job (kqctl slurm start, kq --slurm-autoscale). */
  slurm: SlurmPlacement | null;
  /** The task the agent holds prefetched, to start when its current one ends (counted as running, not started). */
  queuedTaskId: number | null;
}

// ---------- request socket: agent and client requests ----------

/** An agent started as a Slurm job reports its array job id, array task id and node (from SLURM_* variables). */
export const SlurmPlacementSchema = z.object({
  jobId: id, arrayTaskId: id.nullable(), node: z.string().max(255),
});
export type SlurmPlacement = z.infer<typeof SlurmPlacementSchema>;

const RunningTaskSchema = z.object({ taskId: id, attempt: id });
/** A task attempt as an agent reports it. */
export type RunningTask = z.infer<typeof RunningTaskSchema>;
/** How a task attempt ended, as the agent saw it. Sent in `finished`, and again in `register` until acknowledged. */
const TaskOutcomeSchema = z.object({
  taskId: id, attempt: id,
  exitCode: z.number().int().nullable(), signal: z.string().max(32).nullable(),
  // Clipped rather than refused: an outcome kq refuses would ride along every heartbeat and make each one invalid.
  durationMs: z.number().transform((ms) => Math.max(0, ms)), reason: z.string().transform((r) => r.slice(0, 4096)).nullable(),
  /** The last lines the render wrote to stderr (at most 10 from kq's agents, each cut to 500 characters): why it failed. Clipped, like reason. */
  stderrTail: z.array(z.string().transform((l) => l.slice(0, 4096))).transform((lines) => lines.slice(-50)).default([]),
});
export type TaskOutcome = z.infer<typeof TaskOutcomeSchema>;

export const RequestSchema = z.discriminatedUnion('type', [
  z.object({ v, rid: z.string().max(64), type: z.literal('register'), agentId, host: z.string().min(1).max(255), pid: id, local: z.boolean(), running: RunningTaskSchema.nullable(),
    /** The agent's last finished report, resent because kq may have died before it was stored. */
    lastOutcome: TaskOutcomeSchema.nullable().default(null),
    /** With `local`: the secret kq gave the agents it started (in their environment). Without it, `local` is not believed. */
    localProof: z.string().max(128).optional(),
    /** The finished report before the last, resent too: with prefetch an agent can end two tasks while kq is away. */
    priorOutcome: TaskOutcomeSchema.nullable().default(null),
    /**
     * The session of the agent's previous registration, if it had one: the proof that lets it keep its
     * running task, report its last outcome, and take its id back while that registration is still live.
     */
    session: z.string().min(16).max(64).nullable().default(null),
    slurm: SlurmPlacementSchema.nullable().default(null),
    /** The task the agent holds to start next (prefetched), kept like `running` if kq still counts it as this agent's. */
    queued: RunningTaskSchema.nullable().default(null),
    /** The agent takes one assignment while it runs another, and starts it when that one ends (kq may then prefetch). */
    prefetch: z.boolean().default(false) }),
  z.object({ v, rid: z.string().max(64), type: z.literal('ping') }),
  z.object({ v, rid: z.string().max(64), type: z.literal('submit'), job: JobSubmitSchema }),
  z.object({ v, rid: z.string().max(64), type: z.literal('list'), states: z.array(JobStateSchema).optional(), jobIds: z.array(id).max(10000).optional() }),
  z.object({ v, rid: z.string().max(64), type: z.literal('show'), jobId: id }),
  z.object({ v, rid: z.string().max(64), type: z.literal('log'), jobId: id, from: z.number().int().nonnegative().default(0), max: boundedInt(1, 2_000_000).default(1_000_000) }),
  z.object({ v, rid: z.string().max(64), type: z.literal('stop'), jobIds: z.array(id).min(1).max(10000) }),
  z.object({ v, rid: z.string().max(64), type: z.literal('restart'), jobIds: z.array(id).min(1).max(10000), failedOnly: z.boolean().default(false) }),
  z.object({ v, rid: z.string().max(64), type: z.literal('agents') }),
  /** Without jobIds: the whole queue. */
  z.object({ v, rid: z.string().max(64), type: z.literal('pause'), jobIds: z.array(id).min(1).max(10000).optional() }),
  z.object({ v, rid: z.string().max(64), type: z.literal('resume'), jobIds: z.array(id).min(1).max(10000).optional() }),
  z.object({ v, rid: z.string().max(64), type: z.literal('priority'), jobIds: z.array(id).min(1).max(10000), priority: boundedInt(-1000, 1000) }),
  /** Remove ended jobs and their logs; with stop, unfinished ones are stopped first. */
  z.object({ v, rid: z.string().max(64), type: z.literal('remove'), jobIds: z.array(id).min(1).max(10000), stop: z.boolean().default(false) }),
  /** Remove ended jobs in these states (default Completed) that ended more than olderThanMs ago. */
  z.object({ v, rid: z.string().max(64), type: z.literal('clean'), states: z.array(z.enum(['Completed', 'Failed', 'Cancelled'])).min(1).optional(),
    olderThanMs: z.number().int().nonnegative().optional() }),
]);
export type Request = z.infer<typeof RequestSchema>;
export type RequestInput = z.input<typeof RequestSchema>;
export type RequestType = Request['type'];

/** Error codes a reply can carry; kqctl maps them to exit codes. */
export type ErrorCode = 'bad-request' | 'not-found' | 'internal';

export type Reply =
  | { v: typeof PROTOCOL_VERSION; rid: string; type: 'reply'; ok: true; data: unknown; /** A line for the person who asked. */ notice?: string }
  | { v: typeof PROTOCOL_VERSION; rid: string; type: 'reply'; ok: false; code: ErrorCode; error: string };

export interface LogChunk { text: string; from: number; next: number; size: number; state: JobState }
/**
 * `session` names this registration: the agent puts it on every update and kq on every assignment, so a
 * stranger on the update port, an older registration (replayed, or a second agent under the same id)
 * cannot speak for the agent, and the agent takes no work meant for another registration.
 */
export interface RegisterReply {
  heartbeatMs: number; keepRunning: boolean; session: string;
  /** Whether the agent keeps the prefetched task it reported (false or absent: drop it, kq requeued it). */
  keepQueued?: boolean;
}

// ---------- request socket: kq -> agent ----------

const session = z.string().min(16).max(64);
export const AssignSchema = z.object({
  v, type: z.literal('assign'), session,
  task: z.object({
    taskId: id, jobId: id, attempt: id, frames: z.array(z.number().int()),
    commands: z.array(z.array(z.string())).min(1), cwd: z.string().nullable(),
    env: z.record(z.string(), z.string()), timeoutMs: timeoutMs.nullable(), shell: z.boolean(),
  }),
});
export type Assign = z.infer<typeof AssignSchema>;
/** One task as an agent gets it: commands to run in order, placeholders already filled. */
export type TaskAssignment = Assign['task'];

// ---------- update socket: agent -> kq ----------

// Every update names the agent and the registration it speaks for (RegisterReply.session).
const from = { agentId, session };
const taskRef = { ...from, taskId: id, attempt: id };
export const UpdateSchema = z.discriminatedUnion('type', [
  /**
   * Also how kq and the agent agree on the agent's work: the first heartbeat of a registration confirms it
   * (only then does kq dispatch to it); `running` and `lastOutcome` let kq notice a lost assignment, a lost
   * `finished` or a lost stop-task.
   */
  z.object({ v, type: z.literal('heartbeat'), ...from, running: RunningTaskSchema.nullable(), lastOutcome: TaskOutcomeSchema.nullable().default(null),
    /** The prefetched task the agent holds (not started yet): kq re-sends its withdrawal if that was lost. */
    queued: RunningTaskSchema.nullable().default(null),
    /** The finished report before `lastOutcome` (prefetch: the task before the last may be the one kq missed). */
    priorOutcome: TaskOutcomeSchema.nullable().default(null) }),
  /** The agent is stopping (SIGTERM): its render is already killed; requeue its task without counting a failure. */
  z.object({ v, type: z.literal('bye'), ...from }),
  z.object({ v, type: z.literal('started'), ...taskRef, pid: id }),
  z.object({ v, type: z.literal('log'), ...taskRef, lines: z.array(z.string()).max(10000) }),
  z.object({ v, type: z.literal('finished'), ...from, ...TaskOutcomeSchema.shape }),
  /** The agent got an assignment it cannot take (busy, and its prefetch slot full or off): no attempt was made, the task goes back to the queue. */
  z.object({ v, type: z.literal('refused'), ...taskRef, running: RunningTaskSchema.nullable() }),
]);
export type Update = z.infer<typeof UpdateSchema>;

// ---------- broadcast socket: kq -> subscribers ----------


export const BroadcastSchema = z.discriminatedUnion('type', [
  /** Kill the render of this task (job stopped, or the task is no longer this agent's); if the agent holds it prefetched, drop it unstarted. */
  z.object({ v, type: z.literal('stop-task'), taskId: id, attempt: id, reason: shortText }),
  /** kq does not know this agent (it restarted or declared it lost): register again. */
  z.object({ v, type: z.literal('reregister') }),
  /** Another agent registered under this agent's id: the agent whose registration this was must leave. */
  z.object({ v, type: z.literal('superseded'), session }),
  /** kq is shutting down: stop renders (they are requeued). */
  z.object({ v, type: z.literal('kq-stopping') }),
  z.object({ v, type: z.literal('log'), jobId: id, offset: z.number().int().nonnegative(), text: z.string() }),
  z.object({ v, type: z.literal('job'), jobId: id, state: JobStateSchema, framesDone: z.number().int(), framesTotal: z.number().int() }),
  /** On Topics.queue: the whole queue was paused or resumed. */
  z.object({ v, type: z.literal('queue'), paused: z.boolean() }),
  /** On Topics.queue: these jobs were removed (rm, clean, --keep-finished). */
  z.object({ v, type: z.literal('removed'), jobIds: z.array(id) }),
]);
export type Broadcast = z.infer<typeof BroadcastSchema>;

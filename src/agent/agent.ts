/**
 * kq-agent: registers with kq, runs one task at a time (holding at most one more, prefetched, to start the
 * moment the current one ends), streams its log, obeys stop, heartbeats.
 * If kq goes away it keeps retrying; when kq comes back it registers again, reporting the task it still runs.
 */
import crypto from 'node:crypto';
import dns from 'node:dns/promises';
import * as zmq from 'zeromq';
import { pino, type Logger } from 'pino';
import {
  AssignSchema, BroadcastSchema, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Topics, decode, encode,
  type Broadcast, type RegisterReply, type SlurmPlacement, type RequestInput, type TaskAssignment, type TaskOutcome, type Update,
} from '../protocol/index.js';
import { tcpEndpoint } from '../common/endpoint.js';
import { SendQueue } from '../common/send-queue.js';
import { curveSocketOptions, type CurveClient } from '../common/curve-client.js';
import { TaskRun } from './runner.js';
import { RenderGuard } from './render-guard.js';
import { Spawner } from './spawner.js';
import { LogBatch } from './log-batch.js';

export interface AgentOptions {
  kqHost: string;
  requestPort: number;
  updatePort: number;
  broadcastPort: number;
  agentId: string;
  hostName: string;
  local: boolean;
  /** The secret kq gave its local agents (see register's localProof). */
  localProof?: string;
  minimalEnv: boolean;
  killGraceMs: number;
  registerTimeoutMs: number;
  /** kq's public key and this agent's key pair when kq requires CURVE. */
  curve: CurveClient | null;
  /** Where Slurm placed this agent (kq-agent --slurm), reported when it registers. */
  slurm?: SlurmPlacement | null;
  /** Take one assignment while running another and start it when that one ends (default true). */
  prefetch?: boolean;
}

export type AgentLifecycle = 'starting' | 'registering' | 'running' | 'stopping' | 'stopped';
/** Why the agent ended: told to stop (signal), or another agent registered under its id. */
export type AgentEndCause = 'stopped' | 'superseded';

/** What a register request got: kq's reply, its refusal, or nothing in time. */
type RegisterAnswer = { reply: RegisterReply } | { refused: string } | null;

/** An update as the agent writes it: kq's protocol version, the agent id and the session are added on sending. */
type UpdateBody = Update extends infer U ? (U extends unknown ? Omit<U, 'v' | 'agentId' | 'session'> : never) : never;

const LOG_FLUSH_MS = 50;
/** Withdrawals of assignments not yet arrived that the agent remembers (a handful are ever in flight). */
const WITHDRAWN_REMEMBERED = 256;
/** How long a Slurm agent's render's unexplained failure waits for the agent's own stop signal before it is reported. */
const OUTSIDE_KILL_SETTLE_MS = 500;

export class Agent {
  state: AgentLifecycle = 'starting';
  private readonly log: Logger;
  private readonly dealer: zmq.Dealer;
  private readonly push: zmq.Push;
  private readonly sub: zmq.Subscriber;
  private readonly dealerQueue: SendQueue;
  private readonly pushQueue: SendQueue;
  private heartbeatMs = 2000;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private current: TaskRun | null = null;
  /** The prefetched task: started the moment `current` ends, unless kq withdraws it first (stop-task). */
  private queued: TaskAssignment | null = null;
  private readonly abandoned = new Set<TaskRun>();
  /**
   * Task attempts kq withdrew that were not here yet: stop-task (broadcast socket) can overtake its assign
   * (request socket), and such an assign must never start. kq never reuses an attempt number, so a
   * remembered pair cannot match a later, real assignment; the oldest are forgotten past the bound.
   */
  private readonly withdrawnUnseen = new Set<string>();
  /** Kills this agent's render groups if the agent dies without ending them itself. */
  private readonly guard: RenderGuard;
  /** Forks renders (through kq-spawn-helper when built, else Node's spawn). */
  private readonly spawner: Spawner;
  private pendingReplies = new Map<string, (reply: RegisterAnswer) => void>();
  private registering: Promise<void> | null = null;
  private stopped: Promise<void> | null = null;
  /** This registration's name, from kq's reply: every update carries it; assignments for another are dropped. */
  private session: string | null = null;
  endCause: AgentEndCause = 'stopped';
  /** Called once the agent has stopped, whatever stopped it. */
  onEnd: (() => void) | null = null;
  /**
   * The last finished report, kept until kq has surely stored it (it acked a register) or a later one replaces
   * it. Not dropped when new work comes: with prefetch kq may assign to this agent, idle by then, a task it
   * claimed while it still counted the agent busy, before it read that task's `finished` (a kill -9 of kq
   * then lost the outcome and the task ran twice). A repeat costs kq nothing: it ignores the last two it took.
   */
  private lastOutcome: TaskOutcome | null = null;
  /** The report before the last, kept as long: with a prefetched task the agent can end two while kq is away. */
  private priorOutcome: TaskOutcome | null = null;
  private readonly logBatch = new LogBatch();
  private logTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: AgentOptions) {
    const stderr = pino.destination({ dest: 2, sync: true });
    // A log line that cannot be written (full disk under the agent's log file) is lost, never the agent.
    stderr.on('error', () => undefined);
    this.log = pino({ base: { agent: o.agentId, pid: process.pid } }, stderr);
    const common = { linger: 0, maxMessageSize: MAX_MESSAGE_BYTES, reconnectInterval: 100, reconnectMaxInterval: 2000, ...curveSocketOptions(o.curve) };
    // sendTimeout: while kq is away, a request gives up instead of queueing behind a full pipe forever.
    // immediate: while kq is away nothing is queued, so registrations retried meanwhile are not all
    // delivered (and each answered) when it comes back; the send times out instead and is retried.
    // No routing id of our own: kq sends assignments to the connection that registered (a routing id libzmq
    // makes up), so no other peer can take this agent's work by claiming its id.
    this.dealer = new zmq.Dealer({ ...common, sendTimeout: o.registerTimeoutMs, immediate: true });
    // Updates (log lines, task finished) get a little linger so a stopping agent still delivers them.
    this.push = new zmq.Push({ ...common, linger: 2000, sendHighWaterMark: 100_000 });
    this.sub = new zmq.Subscriber(common);
    this.dealerQueue = new SendQueue(this.dealer);
    this.pushQueue = new SendQueue(this.push);
    this.guard = new RenderGuard(this.log.child({ component: 'guard' }));
    this.spawner = new Spawner(this.log.child({ component: 'spawner' }));
  }

  async start(): Promise<void> {
    this.guard.start();
    await this.resolveKqHost();
    const at = (port: number) => tcpEndpoint(this.o.kqHost, port);
    this.sub.subscribe(Topics.agent(this.o.agentId), Topics.allAgents);
    this.sub.connect(at(this.o.broadcastPort));
    this.dealer.connect(at(this.o.requestPort));
    this.push.connect(at(this.o.updatePort));
    void this.receiveRequests();
    void this.receiveBroadcasts();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.heartbeatMs);
    await this.register();
  }

  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.state = 'stopping';
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    // Hand the task back rather than fail it: its output so far is sent, its render group killed, no
    // `finished` reported; `bye` makes kq requeue it with no attempt counted and no strike on this host.
    this.flushLogs();
    const run = this.current;
    if (run) {
      this.abandonCurrent('agent stopped');
      await run.done.catch(() => undefined);
    }
    if (this.endCause === 'stopped') await this.send({ type: 'bye' }).catch(() => undefined);
    for (const s of [this.dealer, this.sub, this.push]) if (!s.closed) s.close();
    this.guard.close();
    await this.spawner.close(); // a hung helper is killed
    this.state = 'stopped';
    this.onEnd?.();
  }

  // ---------- registration ----------

  private register(): Promise<void> {
    this.registering ??= this.registerLoop().finally(() => { this.registering = null; });
    return this.registering;
  }

  private async registerLoop(): Promise<void> {
    this.state = 'registering';
    let warned = false;
    let lastRefusal = '';
    while (this.state === 'registering') {
      const running = this.current ? { taskId: this.current.task.taskId, attempt: this.current.task.attempt } : null;
      const queued = this.queuedRef();
      const sentOutcome = this.lastOutcome;
      const sentPrior = this.priorOutcome;
      const answer = await this.request({
        v: PROTOCOL_VERSION, rid: crypto.randomUUID(), type: 'register', agentId: this.o.agentId,
        host: this.o.hostName, pid: process.pid, local: this.o.local, ...(this.o.localProof ? { localProof: this.o.localProof } : {}), running, lastOutcome: sentOutcome, priorOutcome: sentPrior,
        slurm: this.o.slurm ?? null, session: this.session, queued, prefetch: this.o.prefetch !== false,
      });
      if (answer && 'refused' in answer) {
        // Said once per reason; retried calmly (the id may be freed when the other agent goes silent).
        if (answer.refused !== lastRefusal) this.log.error(`kq refused the registration: ${answer.refused}; retrying`);
        lastRefusal = answer.refused;
        if (/Outcome/.test(answer.refused)) this.lastOutcome = this.priorOutcome = null; // kq cannot take it: do not send it forever
        await new Promise((r) => setTimeout(r, Math.max(1000, this.o.registerTimeoutMs)));
        continue;
      }
      if (answer) {
        const reply = answer.reply;
        // An outcome that came in while this register was on its way was not in it: keep it for the next heartbeat.
        if (this.lastOutcome === sentOutcome) this.lastOutcome = null;
        if (this.priorOutcome === sentPrior) this.priorOutcome = null;
        // kq gives each registration a new session and takes back what it had assigned to the old one, so
        // assignments withdrawn before are not coming (a kq on a new data root even numbers tasks from 1 again).
        this.withdrawnUnseen.clear();
        this.session = reply.session;
        this.heartbeatMs = reply.heartbeatMs;
        if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
        this.heartbeatTimer = setInterval(() => this.heartbeat(), this.heartbeatMs);
        // Only the run this registration reported can be stale; a task assigned since is current by definition.
        const reported = this.current && running && this.current.task.taskId === running.taskId && this.current.task.attempt === running.attempt;
        if (reported && !reply.keepRunning) this.abandonCurrent('kq requeued this task while the agent was away');
        // The prefetched task this registration reported stays only if kq kept it (a newer one arrived since is current).
        if (queued && this.queued?.taskId === queued.taskId && this.queued.attempt === queued.attempt && reply.keepQueued !== true) this.queued = null;
        this.state = 'running';
        this.heartbeat(); // confirms this registration: kq dispatches only to a confirmed one
        this.log.info({ kq: tcpEndpoint(this.o.kqHost, this.o.requestPort), keepRunning: reply.keepRunning }, 'registered with kq');
        return;
      }
      if (!warned) {
        this.log.warn(`cannot reach kq at ${tcpEndpoint(this.o.kqHost, this.o.requestPort)} (no reply in ${this.o.registerTimeoutMs} ms): ` +
          'is kq running, listening on this address (--bind), and are its ports open in the firewall?' +
          (this.o.curve ? ' is this agent\'s key allowed (kqctl keys list) and --server-key kq\'s current key?' : ' does kq require CURVE keys (--server-key, --key-file)?') + ' retrying');
        warned = true;
      }
    }
  }

  /** One register request: kq's reply, its refusal, or null when no answer came in time. */
  private request(req: RequestInput & { rid: string }): Promise<RegisterAnswer> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pendingReplies.delete(req.rid);
        resolve(null);
      }, this.o.registerTimeoutMs);
      this.pendingReplies.set(req.rid, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      this.dealerQueue.send([encode(req)]).catch(() => undefined);
    });
  }

  private async resolveKqHost(): Promise<void> {
    for (let warned = false; ; warned = true) {
      try {
        await dns.lookup(this.o.kqHost);
        return;
      } catch (err) {
        if (!warned) this.log.error(`cannot resolve kq host "${this.o.kqHost}" (${(err as NodeJS.ErrnoException).code}): use an address or a name this machine resolves; retrying`);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  // ---------- messages from kq ----------

  private async receiveRequests(): Promise<void> {
    try {
      for await (const [frame] of this.dealer) {
        const raw = safeJson(frame);
        if (raw?.type === 'reply' && typeof raw.rid === 'string') {
          const pending = this.pendingReplies.get(raw.rid);
          this.pendingReplies.delete(raw.rid);
          pending?.(raw.ok === true ? { reply: raw.data as RegisterReply } : { refused: String(raw.error) });
          continue;
        }
        const assign = decode(AssignSchema, frame);
        if (assign.ok && assign.value.session !== this.session) this.log.warn({ task: assign.value.task.taskId }, 'dropped an assignment for another registration');
        else if (assign.ok) this.onAssign(assign.value.task);
        else this.log.warn({ error: assign.error }, 'dropped a message from kq');
      }
    } catch (err) {
      if (this.state !== 'stopping' && this.state !== 'stopped') this.log.error({ err: (err as Error).message }, 'request socket failed');
    }
  }

  private async receiveBroadcasts(): Promise<void> {
    try {
      const mine = [Topics.agent(this.o.agentId), Topics.allAgents];
      for await (const [topic, frame] of this.sub) {
        if (!mine.includes(topic?.toString() ?? '')) continue; // a subscription is a prefix: `agent.a/` also hears `agent.a/b/`
        const msg = decode(BroadcastSchema, frame);
        if (msg.ok) this.onBroadcast(msg.value);
      }
    } catch (err) {
      if (this.state !== 'stopping' && this.state !== 'stopped') this.log.error({ err: (err as Error).message }, 'broadcast socket failed');
    }
  }

  private onBroadcast(msg: Broadcast): void {
    switch (msg.type) {
      case 'stop-task':
        // Withdrawn before it started: dropped, never run.
        if (this.queued && this.queued.taskId === msg.taskId && this.queued.attempt === msg.attempt) {
          this.log.info({ task: msg.taskId, reason: msg.reason }, 'prefetched task withdrawn');
          this.queued = null;
        } else if (this.current && this.current.task.taskId === msg.taskId && this.current.task.attempt === msg.attempt) this.current.stop(`stopped: ${msg.reason}`);
        else {
          this.rememberWithdrawn(attemptKey(msg));
          this.log.info({ task: msg.taskId, attempt: msg.attempt, reason: msg.reason }, 'withdrawn before its assignment arrived: it will not start');
        }
        return;
      case 'reregister':
        if (this.state === 'running') void this.register();
        return;
      case 'superseded':
        if (msg.session === this.session && this.state === 'running') this.leaveSuperseded();
        return;
      case 'kq-stopping':
        // kq requeues our task itself; kill the render (unreported) so it does not run twice once kq is back.
        this.abandonCurrent('kq stopped');
        void this.register();
        return;
      default:
        return;
    }
  }

  /** Another agent registered under this id: kq no longer hears this one, so it stops its render and leaves. */
  private leaveSuperseded(): void {
    this.log.error(`another agent registered as "${this.o.agentId}" with kq, so kq no longer takes this one's reports: leaving (give each agent its own --agent-id)`);
    this.endCause = 'superseded';
    this.abandonCurrent('another agent registered under this id');
    void this.stop();
  }

  /** Kill the current render without reporting it: kq no longer counts it as ours. The agent is free at once. */
  private abandonCurrent(reason: string): void {
    this.queued = null; // kq requeues it with the current one (or has already)
    const run = this.current;
    if (!run) return;
    this.abandoned.add(run);
    run.stop(reason);
    this.logBatch.take();
    this.current = null;
    void run.done.finally(() => this.abandoned.delete(run));
  }

  private rememberWithdrawn(key: string): void {
    this.withdrawnUnseen.add(key);
    if (this.withdrawnUnseen.size > WITHDRAWN_REMEMBERED) this.withdrawnUnseen.delete(this.withdrawnUnseen.values().next().value!);
  }

  private onAssign(task: TaskAssignment): void {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    if (this.state === 'registering') {
      // Sent to the registration being replaced: kq takes back whatever this new one does not report.
      this.log.info({ task: task.taskId, attempt: task.attempt }, 'assignment dropped unstarted: it came while registering again');
      return;
    }
    if (this.withdrawnUnseen.delete(attemptKey(task))) {
      this.log.info({ task: task.taskId, attempt: task.attempt }, 'assignment dropped unstarted: kq withdrew it before it arrived');
      this.heartbeat(); // kq hears at once what this agent runs and holds (and that it is free, if it is)
      return;
    }
    if (this.current && this.o.prefetch !== false) {
      // kq prefetches only into a free slot; one still held here was withdrawn (the withdrawal is on its way).
      if (this.queued) this.log.info({ task: this.queued.taskId, by: task.taskId }, 'prefetched task replaced (kq withdrew it)');
      this.queued = task;
      return;
    }
    if (this.current) {
      this.log.warn({ task: task.taskId, busyWith: this.current.task.taskId }, 'assignment while busy; refusing it');
      void this.send({ type: 'refused', taskId: task.taskId, attempt: task.attempt, running: { taskId: this.current.task.taskId, attempt: this.current.task.attempt } });
      return;
    }
    this.startRun(task);
  }

  private startRun(task: TaskAssignment): void {
    const ref = { taskId: task.taskId, attempt: task.attempt };
    const run = new TaskRun(task, {
      env: {
        KQ_JOB_ID: String(task.jobId), KQ_TASK_ID: String(task.taskId), KQ_ATTEMPT: String(task.attempt),
        KQ_FRAMES: task.frames.join(' '), KQ_AGENT_ID: this.o.agentId, KQ_AGENT_HOST: this.o.hostName,
      },
      minimalEnv: this.o.minimalEnv,
      killGraceMs: this.o.killGraceMs,
      spawn: (spec, output) => this.spawner.spawn(spec, output),
      onGroup: (pgid, alive) => (alive ? this.guard.watch(pgid) : this.guard.forget(pgid)),
      onStarted: (pid) => void this.send({ type: 'started', ...ref, pid }),
      onLines: (lines) => {
        if (this.current === run) this.queueLines(lines); // an abandoned render's output is not ours to send
      },
    });
    this.current = run;
    void run.done.then(async (result) => {
      // Under Slurm, a render failing for no reason of ours may be the first half of a whole-tree signal
      // (scancel, a time limit, preemption: POV-Ray then exits 2): wait a moment, so our own SIGTERM hands
      // the task back instead of failing it.
      if (this.o.slurm && result.reason === null && (result.exitCode !== 0 || result.signal !== null) && this.state !== 'stopping') {
        await new Promise((r) => setTimeout(r, OUTSIDE_KILL_SETTLE_MS));
      }
      if (this.abandoned.has(run) || this.current !== run) return; // handed back (or dropped) meanwhile
      this.flushLogs();
      this.current = null;
      const { taskId, attempt } = ref;
      // Bounded as the protocol allows (a reason quoting a huge command line must not make every later message invalid).
      this.priorOutcome = this.lastOutcome;
      this.lastOutcome = { taskId, attempt, ...result, durationMs: Math.max(0, result.durationMs), reason: result.reason === null ? null : clip(result.reason, 2000) };
      void this.send({ type: 'finished', ...this.lastOutcome });
      // The prefetched task starts now, its `started` after this `finished` (one ordered socket).
      const next = this.queued;
      this.queued = null;
      if (next && this.state !== 'stopping' && this.state !== 'stopped') this.startRun(next);
    });
  }

  // ---------- updates to kq ----------

  private queueLines(lines: string[]): void {
    this.logBatch.add(lines, (batch) => this.sendLines(batch));
    if (!this.logBatch.empty) this.logTimer ??= setTimeout(() => this.flushLogs(), LOG_FLUSH_MS);
  }

  private flushLogs(): void {
    if (this.logTimer) clearTimeout(this.logTimer);
    this.logTimer = null;
    if (!this.logBatch.empty) this.sendLines(this.logBatch.take());
  }

  private sendLines(lines: string[]): void {
    const run = this.current;
    if (run) void this.send({ type: 'log', taskId: run.task.taskId, attempt: run.task.attempt, lines });
  }

  private heartbeat(): void {
    const running = this.current ? { taskId: this.current.task.taskId, attempt: this.current.task.attempt } : null;
    void this.send({ type: 'heartbeat', running, queued: this.queuedRef(), lastOutcome: this.lastOutcome, priorOutcome: this.priorOutcome });
  }

  private queuedRef(): { taskId: number; attempt: number } | null {
    return this.queued ? { taskId: this.queued.taskId, attempt: this.queued.attempt } : null;
  }

  /** Send an update for this registration (none before the first one: kq would not take it). */
  private send(body: UpdateBody): Promise<void> {
    if (this.session === null) return Promise.resolve();
    const update = { v: PROTOCOL_VERSION, agentId: this.o.agentId, session: this.session, ...body } as Update;
    return this.pushQueue.send([encode(update)]).catch((err: Error) => {
      if (this.state !== 'stopped') this.log.warn({ err: err.message, type: update.type }, 'update not sent');
    });
  }
}

function safeJson(frame: Buffer | undefined): Record<string, unknown> | null {
  try {
    const v = JSON.parse(frame?.toString() ?? '') as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function attemptKey(ref: { taskId: number; attempt: number }): string {
  return `${ref.taskId}.${ref.attempt}`;
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 20)}… [${text.length} chars]`;
}

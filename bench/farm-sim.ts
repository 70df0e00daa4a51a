/**
 * A simulated render farm: ONE process that speaks kq's agent protocol as N agents (bench scenario s).
 *
 * Each simulated agent does what src/agent/agent.ts does on the wire, minus the renders: its own DEALER to
 * kq's request port (assignments are routed to the connection that registered) and its own PUSH to the
 * update port; it registers, confirms the registration with a first heartbeat, heartbeats every
 * `heartbeatMs` (reporting the task it runs, the one it holds and its last outcomes, as a real agent does),
 * answers an assignment with `started`, "renders" for `renderMs` (a timer, no process), reports `finished`,
 * and says `bye` at the end. Like a real agent (prefetch is its default) it registers with `prefetch: true`:
 * an assignment that comes while it renders is held and started the moment that render ends. One SUB
 * socket, subscribed to every simulated agent's topic, serves them all (kq's broadcasts to agents are
 * per-agent topics; one subscriber hears them all the same).
 *
 * Run as a child of bench/scenarios/s-farm.ts, which steers it over IPC:
 *   → { cmd: 'start', agents, ports, host }     ← { ev: 'registered', agents, ms }
 *   → { cmd: 'render', ms }                      (simulated render time from now on)
 *   → { cmd: 'measure' }                         (start a window: counts, latencies)
 *   → { cmd: 'report' }                          ← { ev: 'report', ... } (the window so far; ends it)
 *   → { cmd: 'stop' }                            ← { ev: 'stopped' } after every agent said bye
 * Messages are encoded with JSON.stringify and read with JSON.parse (no zod): the simulator's own CPU use
 * stays small next to kq's, which is what is being measured.
 */
import * as zmq from 'zeromq';
import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Topics } from '../src/protocol/index.js';

interface Ports { request: number; update: number; broadcast: number }
interface Task { taskId: number; attempt: number }
interface Outcome extends Task { exitCode: number | null; signal: string | null; durationMs: number; reason: string | null; stderrTail: string[] }

const now = (): number => Number(process.hrtime.bigint()) / 1e6;

/** The window being measured: assignments received, and per agent the gap between a render's end and the next one's start. */
class Window {
  readonly startedAt = now();
  assigns = 0;
  finishes = 0;
  readonly latencies: number[] = [];
  /** Held assignments replaced by a newer one (kq had withdrawn them). */
  replaced = 0;
}

let window: Window | null = null;
let renderMs = 0;
let stopping = false;
let unexpected = 0;
const unexpectedSamples: string[] = [];

function noteUnexpected(what: string): void {
  unexpected++;
  if (unexpectedSamples.length < 5) unexpectedSamples.push(what.slice(0, 300));
}

class SimAgent {
  readonly dealer: zmq.Dealer;
  readonly push: zmq.Push;
  session: string | null = null;
  heartbeatMs = 2000;
  private timer: NodeJS.Timeout | null = null;
  current: Task | null = null;
  /** The prefetched assignment, started when `current` ends. */
  private queued: Task | null = null;
  private lastOutcome: Outcome | null = null;
  private priorOutcome: Outcome | null = null;
  /** When `finished` went out: the next render's start minus this is the assign latency (≈ 0 when one was held). */
  private finishedAt = 0;
  private renderTimer: NodeJS.Timeout | null = null;
  private pushBusy: Promise<void> = Promise.resolve();

  constructor(readonly id: string, readonly host: string, readonly pid: number, ports: Ports, kqHost: string) {
    const common = { linger: 0, maxMessageSize: MAX_MESSAGE_BYTES };
    this.dealer = new zmq.Dealer({ ...common, sendTimeout: 10_000 });
    this.push = new zmq.Push({ ...common, linger: 2000, sendHighWaterMark: 100_000 });
    this.dealer.connect(`tcp://${kqHost}:${ports.request}`);
    this.push.connect(`tcp://${kqHost}:${ports.update}`);
  }

  /** Register (retrying every 30 s without an answer), then confirm with a heartbeat; resolves once registered. */
  async register(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const rid = `${this.id}.${attempt}`;
      await this.dealer.send(JSON.stringify({
        v: PROTOCOL_VERSION, rid, type: 'register', agentId: this.id, host: this.host, pid: this.pid, local: false,
        running: null, lastOutcome: null, session: this.session, slurm: null, prefetch: true, queued: null,
      }));
      const reply = await this.nextReply(rid, 30_000);
      if (!reply) continue;
      if (reply.ok !== true) throw new Error(`kq refused ${this.id}: ${String(reply.error)}`);
      const data = reply.data as { session: string; heartbeatMs: number };
      this.session = data.session;
      this.heartbeatMs = data.heartbeatMs;
      this.heartbeat(); // confirms the registration: kq dispatches only to a confirmed one
      // Spread over one period, as agents started at different times would be.
      const first = setTimeout(() => {
        this.heartbeat();
        this.timer = setInterval(() => this.heartbeat(), this.heartbeatMs);
      }, Math.random() * this.heartbeatMs);
      this.timer = first;
      void this.receive();
      return;
    }
  }

  /** The register reply (before receive() takes over the socket). */
  private async nextReply(rid: string, timeoutMs: number): Promise<Record<string, unknown> | null> {
    const deadline = Date.now() + timeoutMs;
    this.dealer.receiveTimeout = timeoutMs;
    try {
      while (Date.now() < deadline) {
        const [frame] = await this.dealer.receive();
        const msg = JSON.parse(frame!.toString()) as Record<string, unknown>;
        // A late answer to an earlier attempt is as good: that registration is the live one.
        if (msg.type === 'reply' && typeof msg.rid === 'string' && msg.rid.startsWith(`${this.id}.`) && (msg.ok === true || msg.rid === rid)) return msg;
      }
    } catch {
      // timed out
    } finally {
      this.dealer.receiveTimeout = -1;
    }
    return null;
  }

  /** Assignments (and nothing else expected) on the DEALER. */
  private async receive(): Promise<void> {
    try {
      for await (const [frame] of this.dealer) {
        const t = now();
        const msg = JSON.parse(frame!.toString()) as { type?: string; session?: string; task?: Task };
        if (msg.type !== 'assign' || !msg.task) {
          if (msg.type !== 'reply') noteUnexpected(`${this.id} got ${frame!.toString()}`);
          continue;
        }
        if (msg.session !== this.session) {
          noteUnexpected(`${this.id}: assignment for another session`);
          continue;
        }
        this.onAssign(msg.task, t);
      }
    } catch {
      // socket closed
    }
  }

  private onAssign(task: Task, at: number): void {
    if (stopping) return;
    if (window) window.assigns++;
    if (this.current) {
      // Held, as agent.ts holds it (a second one replaces the first: kq withdrew that one).
      if (this.queued && window) window.replaced++;
      this.queued = { taskId: task.taskId, attempt: task.attempt };
      return;
    }
    this.lastOutcome = this.priorOutcome = null; // kq assigns to an idle agent only once it recorded its outcomes
    this.start(task, at);
  }

  private start(task: Task, at: number): void {
    if (window && this.finishedAt > 0 && this.finishedAt >= window.startedAt) window.latencies.push(at - this.finishedAt);
    this.current = { taskId: task.taskId, attempt: task.attempt };
    const started = now();
    this.send({ type: 'started', taskId: task.taskId, attempt: task.attempt, pid: this.pid });
    const finish = () => {
      this.renderTimer = null;
      if (stopping || this.current?.taskId !== task.taskId) return;
      this.end({ taskId: task.taskId, attempt: task.attempt, exitCode: 0, signal: null, durationMs: Math.round(now() - started), reason: null, stderrTail: [] });
    };
    // 0 ms: the next turn of the event loop (a render that exits at once still costs a turn).
    if (renderMs > 0) this.renderTimer = setTimeout(finish, renderMs);
    else setImmediate(finish);
  }

  /** The current render ended: report it, then start the held one (its `started` after this `finished`). */
  private end(outcome: Outcome): void {
    this.current = null;
    this.priorOutcome = this.lastOutcome;
    this.lastOutcome = outcome;
    this.finishedAt = now();
    if (window) window.finishes++;
    this.send({ type: 'finished', ...outcome });
    const next = this.queued;
    this.queued = null;
    if (next && !stopping) this.start(next, now());
  }

  /** kq asked (stop-task, reregister, superseded, kq-stopping). */
  onBroadcast(msg: { type?: string; taskId?: number; attempt?: number }): void {
    const task = this.current;
    if (msg.type === 'stop-task' && this.queued && this.queued.taskId === msg.taskId && this.queued.attempt === msg.attempt) {
      this.queued = null; // withdrawn before it started
    } else if (msg.type === 'stop-task' && task && task.taskId === msg.taskId && task.attempt === msg.attempt) {
      // A killed render reports its end, as a real agent does.
      if (this.renderTimer) clearTimeout(this.renderTimer);
      this.renderTimer = null;
      this.end({ ...task, exitCode: null, signal: 'SIGTERM', durationMs: 0, reason: 'stopped: job stopped', stderrTail: [] });
    } else if (msg.type && msg.type !== 'stop-task' && !stopping) {
      noteUnexpected(`${this.id} got broadcast ${msg.type}`);
    }
  }

  heartbeat(): void {
    this.send({ type: 'heartbeat', running: this.current, queued: this.queued, lastOutcome: this.lastOutcome, priorOutcome: this.priorOutcome });
  }

  /** One update on this agent's PUSH, in order (zeromq.js allows one pending send per socket). */
  send(body: Record<string, unknown>): void {
    if (this.session === null) return;
    const frame = JSON.stringify({ v: PROTOCOL_VERSION, agentId: this.id, session: this.session, ...body });
    this.pushBusy = this.pushBusy.then(() => this.push.send(frame)).catch((err: Error) => noteUnexpected(`${this.id}: send failed: ${err.message}`));
  }

  async bye(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    if (this.timer) clearInterval(this.timer);
    if (this.renderTimer) clearTimeout(this.renderTimer);
    this.send({ type: 'bye' });
    await this.pushBusy;
  }

  close(): void {
    this.dealer.close();
    this.push.close();
  }
}

let agents: SimAgent[] = [];
let sub: zmq.Subscriber | null = null;

async function start(n: number, ports: Ports, kqHost: string): Promise<void> {
  // Two sockets per agent, plus one subscriber: over libzmq's default limit of 1,023.
  zmq.context.maxSockets = Math.max(zmq.context.maxSockets, 2 * n + 64);
  const t0 = now();
  agents = Array.from({ length: n }, (_, i) => {
    const num = String(i + 1).padStart(4, '0');
    // One agent per simulated host: blocklists are per host, as on a real farm.
    return new SimAgent(`farm-sim-${num}`, `sim-host-${num}`, 100_000 + i, ports, kqHost);
  });
  const byId = new Map(agents.map((a) => [Topics.agent(a.id), a]));
  sub = new zmq.Subscriber({ linger: 0, maxMessageSize: MAX_MESSAGE_BYTES });
  sub.subscribe('agent.farm-sim-', Topics.allAgents);
  sub.connect(`tcp://${kqHost}:${ports.broadcast}`);
  void (async () => {
    try {
      for await (const [topic, frame] of sub!) {
        const t = topic!.toString();
        const msg = JSON.parse(frame!.toString()) as { type?: string };
        if (t === Topics.allAgents) {
          if (!stopping) noteUnexpected(`broadcast to all agents: ${msg.type}`);
          continue;
        }
        byId.get(t)?.onBroadcast(msg);
      }
    } catch {
      // closed
    }
  })();
  // Registrations in waves of 50, as a farm coming up would not send 500 in the same millisecond.
  for (let i = 0; i < agents.length; i += 50) await Promise.all(agents.slice(i, i + 50).map((a) => a.register()));
  process.send!({ ev: 'registered', agents: n, ms: now() - t0 });
}

function report(): object {
  const w = window ?? new Window();
  window = null;
  const ms = now() - w.startedAt;
  return {
    ev: 'report', ms, assigns: w.assigns, finishes: w.finishes, replaced: w.replaced, latencies: w.latencies,
    busy: agents.filter((a) => a.current !== null).length, unexpected, unexpectedSamples,
  };
}

process.on('message', (m: { cmd: string; agents?: number; ports?: Ports; host?: string; ms?: number }) => {
  void (async () => {
    try {
      switch (m.cmd) {
        case 'start':
          await start(m.agents!, m.ports!, m.host ?? '127.0.0.1');
          return;
        case 'render':
          renderMs = m.ms ?? 0;
          return;
        case 'measure':
          window = new Window();
          return;
        case 'report':
          process.send!(report());
          return;
        case 'stop':
          stopping = true;
          await Promise.all(agents.map((a) => a.bye()));
          for (const a of agents) a.close();
          sub?.close();
          process.send!({ ev: 'stopped' }, () => process.exit(0));
          return;
      }
    } catch (err) {
      process.send!({ ev: 'error', error: (err as Error).stack ?? String(err) });
    }
  })();
});
// The scenario went away: so does the farm.
process.on('disconnect', () => process.exit(0));

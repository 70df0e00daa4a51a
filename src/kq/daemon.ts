/**
 * The kq daemon: a message arrives → it is validated → the store changes in one transaction →
 * the scheduler hands out work → the effect goes out on a socket.
 */
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import * as zmq from 'zeromq';
import {
  PROTOCOL_VERSION, RequestSchema, isTerminalState, Topics, UpdateSchema, decode, encode,
  type Broadcast, type ErrorCode, type Request, type RequestInput, type TaskOutcome, type Update, type Assign, type LogChunk,
} from '../protocol/index.js';
import { dataFiles, type DaemonInfo } from '../common/paths.js';
import { isLoopback } from '../common/endpoint.js';
import { commandLineOf, isAlive, killGroup } from '../common/processes.js';
import { Store, type TaskRef } from './store.js';
import { JobLogs } from './job-logs.js';
import { bindSockets, type DaemonSockets } from './sockets.js';
import { ZapHandler } from './zap.js';
import { Allowlist, initKeys, keyFiles, LOCAL_CLIENT, readKeyPair } from '../common/keys.js';
import { LocalAgents } from './local-agents.js';
import { acquireLock, type Lock } from './lock.js';
import { prepareJob, RequestError } from './submit.js';
import { RateLimitedLog } from './rate-limited-log.js';
import type { DaemonOptions } from './options.js';
import { ProgressTracker } from './progress.js';
import { startMonitor, type Monitor } from './http/server.js';

/** A request as in-process callers write it: no protocol version or request id. */
export type LocalRequest = RequestInput extends infer R ? (R extends unknown ? Omit<R, 'v' | 'rid'> : never) : never;

export type Lifecycle = 'starting' | 'running' | 'stopping' | 'stopped';

const AGENT_SCRIPT = fileURLToPath(new URL('../agent/main.js', import.meta.url));

export class Daemon {
  state: Lifecycle = 'starting';
  readonly epoch = crypto.randomUUID();
  private readonly files;
  private log!: Logger;
  private store!: Store;
  private logs!: JobLogs;
  private sockets!: DaemonSockets;
  private agents: LocalAgents | null = null;
  private lock: Lock | null = null;
  private lostTimer: NodeJS.Timeout | null = null;
  private curve: { serverPublicKey: string } | null = null;
  private zap: ZapHandler | null = null;
  private monitor: Monitor | null = null;
  private stopped: Promise<void> | null = null;
  private readonly dropped: RateLimitedLog;
  private readonly reregisterSentAt = new Map<string, number>();
  private readonly progress = new ProgressTracker();
  info!: DaemonInfo;
  /** Every broadcast kq publishes, also emitted in-process as ('message', topic, msg) for the HTTP monitor. */
  readonly broadcasts = new EventEmitter<{ message: [string, Broadcast] }>();

  constructor(private readonly o: DaemonOptions) {
    this.files = dataFiles(o.dataRoot);
    this.dropped = new RateLimitedLog(() => this.log, 1000);
  }

  async start(): Promise<DaemonInfo> {
    ensureWritableDir(this.o.dataRoot);
    ensureWritableDir(this.files.logs);
    this.lock = acquireLock(this.files.lock);
    try {
      this.log = pino({ base: { pid: process.pid }, level: this.o.logLevel },
        pino.destination({ dest: this.files.daemonLog, sync: false }));
      this.store = new Store(this.files.db, { blocklistAfter: this.o.blocklistAfter }, this.files.jobLog);
      this.logs = new JobLogs(this.files.jobLog, { maxTaskBytes: this.o.maxTaskLogBytes, maxOpen: 64 });
      this.sockets = await bindSockets({ ...this.o, curveSecretKey: await this.startCurve() });
      if (this.o.httpPort !== null) {
        this.monitor = await startMonitor(this, { port: this.o.httpPort, bind: this.o.httpBind, token: this.o.httpToken, dataRoot: this.o.dataRoot, log: this.log.child({ component: 'http' }) });
      }
    } catch (err) {
      this.lock.release();
      throw err;
    }
    this.store.beginEpoch();
    this.info = {
      pid: process.pid,
      host: this.o.bind === '0.0.0.0' || this.o.bind === '*' ? '127.0.0.1' : this.o.bind === '::' ? '::1' : this.o.bind,
      bind: this.o.bind,
      requestPort: this.sockets.ports.request,
      updatePort: this.sockets.ports.update,
      broadcastPort: this.sockets.ports.broadcast,
      dataRoot: this.o.dataRoot,
      startedAt: new Date().toISOString(),
      curve: this.curve !== null,
      serverKey: this.curve?.serverPublicKey ?? null,
      insecure: this.insecure,
      httpPort: this.monitor?.port ?? null,
      httpUrl: this.monitor?.url ?? null,
    };
    fs.writeFileSync(this.files.info, JSON.stringify(this.info, null, 2) + '\n');
    void this.receiveRequests();
    void this.receiveUpdates();
    this.lostTimer = setInterval(() => this.checkSilentAgents(), Math.max(100, Math.min(1000, this.o.agentTimeoutMs / 4)));
    this.startLocalAgents();
    this.state = 'running';
    this.log.info({ ...this.info, epoch: this.epoch, loopback: isLoopback(this.o.bind) }, 'kq running');
    return this.info;
  }

  /** Idempotent: every step runs even if one fails; the same promise is returned to every caller. */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.state = 'stopping';
    const steps: Array<[string, () => unknown]> = [
      ['stop timer', () => this.lostTimer && clearInterval(this.lostTimer)],
      ['close web monitor', () => this.monitor?.close()],
      ['tell agents', () => this.publish(Topics.allAgents, { v: PROTOCOL_VERSION, type: 'kq-stopping' })],
      ['kill renders of local agents', () => this.killLocalRenders()],
      ['requeue running tasks', () => this.store.requeueAll('kq stopped')],
      ['stop local agents', () => this.agents?.stop()],
      ['close sockets', () => this.sockets.close()],
      ['stop ZAP handler', () => this.zap?.close()],
      ['close logs', () => this.logs.close()],
      ['close store', () => this.store.close()],
      ['remove kq.json', () => this.info && fs.rmSync(this.files.info, { force: true })],
      ['release lock', () => this.lock?.release()],
    ];
    for (const [name, step] of steps) {
      try {
        await step();
      } catch (err) {
        this.log?.error({ step: name, err: (err as Error).message }, 'shutdown step failed');
      }
    }
    this.log?.info('kq stopped');
    this.log?.flush();
    this.state = 'stopped';
  }

  /** Listening beyond loopback with CURVE turned off by --insecure. */
  get insecure(): boolean {
    return !isLoopback(this.o.bind) && this.curve === null;
  }

  /**
   * CURVE is on beyond loopback (unless --insecure) and on loopback with --secure. Keys are created on
   * first use; the ZAP handler is bound before any socket, as libzmq requires. Returns kq's secret key.
   */
  private async startCurve(): Promise<string | null> {
    const wanted = this.o.secure || (!isLoopback(this.o.bind) && !this.o.insecure);
    if (!wanted) {
      if (!isLoopback(this.o.bind)) {
        this.log.warn({ bind: this.o.bind }, 'INSECURE: listening beyond loopback without CURVE; anyone who reaches these ports can run commands on every agent');
      }
      return null;
    }
    if (!zmq.capability.curve) throw new Error('this ZeroMQ build has no CURVE support: cannot listen securely (use loopback, or --insecure at your own risk)');
    const { serverPublicKey, created } = initKeys(this.o.dataRoot);
    if (created) this.log.info({ keys: keyFiles(this.o.dataRoot).dir }, 'created CURVE keys');
    this.zap = new ZapHandler(new Allowlist(this.o.dataRoot), this.log.child({ component: 'zap' }));
    await this.zap.start();
    this.curve = { serverPublicKey };
    return readKeyPair(keyFiles(this.o.dataRoot).serverSecret).secretKey;
  }

  // ---------- local agents ----------

  private startLocalAgents(): void {
    if (this.o.numAgents <= 0) return;
    const host = os.hostname();
    const adopt = this.store.localAgentsFromBefore(this.epoch)
      .filter((a) => a.host === host && isAgentProcess(a.pid))
      .map((a) => a.pid);
    this.agents = new LocalAgents({
      count: this.o.numAgents,
      log: this.log.child({ component: 'local-agents' }),
      stopGraceMs: this.o.killGraceMs + 2000,
      logFile: (n) => this.files.agentLog(n),
      command: () => [process.execPath, AGENT_SCRIPT, '--local',
        '--request-port', String(this.info.requestPort), '--update-port', String(this.info.updatePort),
        '--broadcast-port', String(this.info.broadcastPort), '--kill-grace', `${this.o.killGraceMs}ms`,
        // Key material stays in files: the command line (visible in ps) carries only paths and the public key.
        ...(this.curve ? ['--server-key', this.curve.serverPublicKey, '--key-file', keyFiles(this.o.dataRoot).clientSecret(LOCAL_CLIENT)] : []),
        ...(this.o.agentArgs ?? []), this.info.host],
      onExit: (pid, why) => this.localAgentExited(`${host}:${pid}`, why),
    });
    this.agents.start(adopt);
  }

  private localAgentExited(agentId: string, why: string): void {
    if (this.state !== 'running') return;
    for (const pid of this.store.renderPidsOf(agentId)) killGroup(pid, 'SIGKILL');
    const jobs = this.store.agentGone(agentId, `agent ended (${why})`);
    this.afterChange(jobs);
  }

  private killLocalRenders(): void {
    for (const a of this.store.listAgents()) {
      if (a.local) for (const pid of this.store.renderPidsOf(a.id)) killGroup(pid, 'SIGTERM');
    }
  }

  // ---------- request socket ----------

  private async receiveRequests(): Promise<void> {
    try {
      for await (const [routingId, ...frames] of this.sockets.router) {
        if (!routingId) continue;
        try {
          await this.onRequest(routingId, frames);
        } catch (err) {
          this.log.error({ err: (err as Error).stack }, 'request handler failed');
        }
      }
    } catch (err) {
      if (this.state === 'running') this.log.error({ err: (err as Error).message }, 'request socket failed');
    }
  }

  private async onRequest(routingId: Buffer, frames: Buffer[]): Promise<void> {
    const decoded = decode(RequestSchema, frames.length === 1 ? frames[0] : undefined);
    if (!decoded.ok) {
      this.dropped.warn('request', decoded.error);
      const rid = ridOf(frames[0]);
      if (rid !== null) await this.reply(routingId, rid, { ok: false, code: 'bad-request', error: decoded.error });
      return;
    }
    const req = decoded.value;
    try {
      const data = this.handle(req, routingId.toString());
      await this.reply(routingId, req.rid, { ok: true, data });
    } catch (err) {
      const code: ErrorCode = err instanceof RequestError ? err.code : 'internal';
      if (code === 'internal') this.log.error({ err: (err as Error).stack, type: req.type }, 'request failed');
      await this.reply(routingId, req.rid, { ok: false, code, error: (err as Error).message });
    }
    if (req.type === 'register' || req.type === 'submit' || req.type === 'restart') this.dispatch();
  }

  /**
   * The same requests kqctl sends, for in-process callers (the HTTP monitor): validated like wire input,
   * answered with the same data shapes. Throws RequestError for bad input or unknown jobs.
   */
  request(input: LocalRequest): unknown {
    const parsed = RequestSchema.safeParse({ ...input, v: PROTOCOL_VERSION, rid: 'in-process' });
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new RequestError('bad-request', `invalid request: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'unknown'}`);
    }
    if (parsed.data.type === 'register') throw new RequestError('bad-request', 'agents register over the request socket');
    const data = this.handle(parsed.data, '');
    if (parsed.data.type === 'submit' || parsed.data.type === 'restart') this.dispatch();
    return data;
  }

  private handle(req: Request, routingId: string): unknown {
    switch (req.type) {
      case 'ping':
        return { epoch: this.epoch, pid: process.pid, version: PROTOCOL_VERSION, curve: this.curve !== null, insecure: this.insecure };
      case 'register': {
        if (routingId !== req.agentId) throw new RequestError('bad-request', 'agent routing id must equal its agent id');
        if (req.lastOutcome) this.applyOutcome(req.agentId, req.lastOutcome);
        const r = this.store.registerAgent({ id: req.agentId, host: req.host, pid: req.pid, local: req.local, running: req.running, epoch: this.epoch });
        this.reregisterSentAt.delete(req.agentId);
        this.log.info({ agent: req.agentId, host: req.host, keep: r.keepRunning }, 'agent registered');
        // Announce only: work is dispatched after the reply, so the agent never sees an assignment first.
        for (const jobId of new Set(r.requeuedJobs)) this.announceJob(jobId);
        return { heartbeatMs: this.o.heartbeatMs, keepRunning: r.keepRunning };
      }
      case 'submit': {
        const job = this.store.submitJob(prepareJob(req.job));
        this.appendLog(job.id, `[kq] job ${job.id} "${job.name}" submitted at ${job.submittedAt}: ${job.framesTotal} frames\n`);
        this.log.info({ job: job.id, name: job.name, frames: job.framesTotal }, 'job submitted');
        this.afterChange([job.id]);
        return job;
      }
      case 'list':
        return this.store.listJobs(req.states, req.jobIds);
      case 'show':
        return this.existingJob(req.jobId) && this.store.showJob(req.jobId);
      case 'log': {
        const job = this.existingJob(req.jobId);
        const chunk = this.logs.read(req.jobId, req.from, req.max);
        return { ...chunk, from: req.from, state: job.state } satisfies LogChunk;
      }
      case 'stop': {
        req.jobIds.forEach((id) => this.existingJob(id));
        const kill = this.store.stopJobs(req.jobIds);
        this.stopRenders(kill, 'job stopped');
        for (const id of req.jobIds) this.appendLog(id, `[kq] job ${id} stopped at ${new Date().toISOString()}\n`);
        this.afterChange(req.jobIds);
        return this.req(req.jobIds);
      }
      case 'restart': {
        req.jobIds.forEach((id) => this.existingJob(id));
        const kill = this.store.restartJobs(req.jobIds, req.failedOnly);
        this.stopRenders(kill, 'job restarted');
        for (const id of req.jobIds) this.appendLog(id, `[kq] job ${id} restarted${req.failedOnly ? ' (failed tasks only)' : ''} at ${new Date().toISOString()}\n`);
        this.afterChange(req.jobIds);
        return this.req(req.jobIds);
      }
      case 'agents':
        return this.store.listAgents();
    }
  }

  /** The summaries of these jobs (what stop and restart answer), without building their task lists. */
  private req(jobIds: number[]) {
    const byId = new Map(this.store.listJobs(undefined, jobIds).map((j) => [j.id, j]));
    return jobIds.map((id) => byId.get(id)!); // in the order asked
  }

  private existingJob(jobId: number) {
    const job = this.store.jobRow(jobId);
    if (!job) throw new RequestError('not-found', `no job with id ${jobId}`);
    return job;
  }

  private reply(routingId: Buffer, rid: string, body: { ok: true; data: unknown } | { ok: false; code: ErrorCode; error: string }) {
    return this.sockets.routerQueue.send([routingId, encode({ v: PROTOCOL_VERSION, rid, type: 'reply', ...body })])
      .catch((err: Error) => this.log.debug({ err: err.message }, 'reply not delivered (peer gone)'));
  }

  // ---------- update socket ----------

  private async receiveUpdates(): Promise<void> {
    try {
      for await (const frames of this.sockets.pull) {
        const decoded = decode(UpdateSchema, frames.length === 1 ? frames[0] : undefined);
        if (!decoded.ok) {
          this.dropped.warn('update', decoded.error);
          continue;
        }
        try {
          this.onUpdate(decoded.value);
        } catch (err) {
          this.log.error({ err: (err as Error).stack }, 'update handler failed');
        }
      }
    } catch (err) {
      if (this.state === 'running') this.log.error({ err: (err as Error).message }, 'update socket failed');
    }
  }

  private onUpdate(u: Update): void {
    if (u.type === 'heartbeat') {
      if (!this.store.heartbeat(u.agentId, this.epoch)) this.askToReregister(u.agentId);
      return;
    }
    if (u.type === 'bye') {
      this.log.info({ agent: u.agentId }, 'agent left');
      this.afterChange(this.store.agentGone(u.agentId, 'agent stopped'));
      return;
    }
    const ref: TaskRef = { agentId: u.agentId, taskId: u.taskId, attempt: u.attempt };
    const key = `${u.taskId}.${u.attempt}`;
    switch (u.type) {
      case 'started': {
        const task = this.store.markStarted(ref, u.pid);
        if (!task) return this.stopRenders([ref], 'task is no longer assigned to this agent');
        const frames = JSON.parse(task.frames) as number[];
        this.appendLog(task.job_id, `[kq] task ${task.id} (${describeFrames(frames)}) attempt ${u.attempt} started on ${task.host} (agent ${u.agentId}, pid ${u.pid}) at ${new Date().toISOString()}\n`);
        return;
      }
      case 'log': {
        const task = this.store.currentTask(ref);
        if (!task) return;
        const written = this.logs.appendTaskOutput(task.job_id, key, u.lines);
        if (written) this.publishLog(task.job_id, written.offset, written.text);
        const percent = this.progress.feed(key, u.lines, () => ({ argv: JSON.parse(this.store.jobRow(task.job_id)!.argv) as string[], frames: JSON.parse(task.frames) as number[] }));
        if (percent !== null && this.store.setTaskProgress(ref, percent)) this.announceJob(task.job_id);
        return;
      }
      case 'finished':
        this.applyOutcome(u.agentId, u);
        return;
    }
  }

  /** Record how a task attempt ended (from `finished`, or resent in `register`); a stale or repeated report is ignored. */
  private applyOutcome(agentId: string, o: TaskOutcome): void {
    const result = this.store.finishTask({ agentId, taskId: o.taskId, attempt: o.attempt }, o.exitCode, o.reason);
    this.logs.endTask(`${o.taskId}.${o.attempt}`);
    if (result.outcome === 'ignored') return this.dispatch();
    const how = o.reason ?? (o.signal ? `killed by ${o.signal}` : `exit code ${o.exitCode}`);
    const next = result.outcome === 'retry' ? ' (will retry)' : result.outcome === 'failed' ? ' (no attempts left)' : '';
    this.appendLog(result.jobId, `[kq] task ${o.taskId} attempt ${o.attempt} ${result.outcome === 'completed' ? 'completed' : `failed: ${how}${next}`} after ${(o.durationMs / 1000).toFixed(2)}s\n`);
    if (result.blocklisted) this.appendLog(result.jobId, `[kq] host ${result.blocklisted} blocklisted for this job after ${this.o.blocklistAfter} failures\n`);
    if (result.failedEverywhere > 0) this.appendLog(result.jobId, `[kq] ${result.failedEverywhere} waiting task(s) failed: every available host is blocklisted for this job (kqctl restart clears the blocklist)\n`);
    this.afterChange([result.jobId]);
  }

  private askToReregister(agentId: string): void {
    const last = this.reregisterSentAt.get(agentId) ?? 0;
    if (Date.now() - last < 1000) return;
    this.reregisterSentAt.set(agentId, Date.now());
    this.publish(Topics.agent(agentId), { v: PROTOCOL_VERSION, type: 'reregister' });
  }

  // ---------- scheduling ----------

  /** Hand waiting tasks to idle agents of this epoch until one or the other runs out. */
  private dispatch(): void {
    if (this.state !== 'running') return;
    for (const agent of this.store.idleAgents(this.epoch)) {
      const task = this.store.claimTask(agent.id);
      if (!task) continue;
      const msg: Assign = { v: PROTOCOL_VERSION, type: 'assign', task };
      this.sockets.routerQueue.send([Buffer.from(agent.id), encode(msg)]).catch((err: Error) => {
        this.log.warn({ agent: agent.id, task: task.taskId, err: err.message }, 'assignment not delivered; requeued');
        this.store.unassign({ agentId: agent.id, taskId: task.taskId, attempt: task.attempt });
        this.afterChange([task.jobId]);
      });
      this.announceJob(task.jobId);
    }
  }

  private checkSilentAgents(): void {
    if (this.state !== 'running') return;
    const lost = this.store.markSilentAgentsLost(Date.now() - this.o.agentTimeoutMs);
    for (const { agent, requeuedJobs, renderPids } of lost) {
      this.log.warn({ agent: agent.id, host: agent.host, lastSeen: agent.lastSeen }, 'agent lost: no heartbeat');
      for (const jobId of requeuedJobs) this.appendLog(jobId, `[kq] agent ${agent.id} on ${agent.host} lost (silent for over ${this.o.agentTimeoutMs} ms): task requeued\n`);
      // A local agent that hangs is killed and replaced; a remote one is told to drop its task if it wakes.
      if (agent.local && agent.host === os.hostname()) {
        for (const pid of renderPids) killGroup(pid, 'SIGKILL');
        this.agents?.kill(agent.pid);
      }
      if (agent.taskId !== null) this.publish(Topics.agent(agent.id), { v: PROTOCOL_VERSION, type: 'reregister' });
      this.afterChange(requeuedJobs);
    }
  }

  private stopRenders(refs: TaskRef[], reason: string): void {
    for (const r of refs) {
      this.publish(Topics.agent(r.agentId), { v: PROTOCOL_VERSION, type: 'stop-task', taskId: r.taskId, attempt: r.attempt, reason });
    }
  }

  /** After jobs changed: tell subscribers, then hand out whatever became available. */
  private afterChange(jobIds: number[]): void {
    for (const id of new Set(jobIds)) this.announceJob(id);
    this.dispatch();
  }

  private announceJob(jobId: number): void {
    const job = this.store.jobRow(jobId);
    if (!job) return;
    this.publish(Topics.job(jobId), { v: PROTOCOL_VERSION, type: 'job', jobId, state: job.state, framesDone: job.frames_done, framesTotal: job.frames_total });
    if (isTerminalState(job.state)) this.log.info({ job: jobId, state: job.state }, 'job ended');
  }

  private appendLog(jobId: number, text: string): void {
    this.publishLog(jobId, this.logs.append(jobId, text), text);
  }

  private publishLog(jobId: number, offset: number, text: string): void {
    this.publish(Topics.log(jobId), { v: PROTOCOL_VERSION, type: 'log', jobId, offset, text });
  }

  private publish(topic: string, msg: Broadcast): void {
    this.broadcasts.emit('message', topic, msg);
    this.sockets.pubQueue.send([topic, encode(msg)]).catch((err: Error) => this.log.warn({ err: err.message }, 'broadcast failed'));
  }
}

function ensureWritableDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (err) {
    throw new Error(`data root not writable: ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): choose another with --data-root or KQ_DATA_ROOT`);
  }
}

function ridOf(frame: Buffer | undefined): string | null {
  try {
    const raw = JSON.parse(frame?.toString() ?? '') as { rid?: unknown };
    return typeof raw.rid === 'string' && raw.rid.length <= 64 ? raw.rid : null;
  } catch {
    return null;
  }
}

/** A pid from the table is only adopted if it still is a kq agent (pids get reused). */
function isAgentProcess(pid: number): boolean {
  return isAlive(pid) && (commandLineOf(pid)?.includes('agent') ?? false);
}

export function describeFrames(frames: number[]): string {
  if (frames.length === 0) return 'no frames';
  if (frames.length === 1) return `frame ${frames[0]}`;
  return `frames ${frames[0]}-${frames[frames.length - 1]}`;
}

/**
 * kq --slurm-autoscale: grow and shrink kq's agents on Slurm with the queue.
 *
 * Every tick it compares what kq needs with what Slurm has for it:
 * - waiting tasks beyond the idle agents and the agent jobs not yet registered (pending in Slurm, or
 *   starting) → submit that many more agent jobs, up to `max` in all (pending ones count: never over-submit);
 * - fewer than `min` → submit up to `min`;
 * - an autoscaled agent idle longer than `idle` → scancel its array task (the agent hands back whatever it
 *   was just given), never going below `min`; pending jobs no longer needed are cancelled too.
 * Slurm is the record (agent-jobs.ts): after a kq restart the same squeue finds the jobs again. A Slurm that
 * refuses (bad partition, sbatch missing, slurmctld down) is reported once in kq.log and in the status that
 * `kqctl agents` and the page show; kq keeps working with the agents it has and retries now and then.
 */
import type { Logger } from 'pino';
import type { AgentInfo } from '../protocol/index.js';
import { parseDuration } from '../common/duration.js';
import { prepareAgentKeys, submitAgentJob, type AgentJobSpec, type AgentKeys } from './agent-job.js';
import { agentJobNames } from './agent-jobs.js';
import { clusterName, scancel, squeue } from './client.js';

export interface AutoscaleConfig {
  max: number;
  min: number;
  idleMs: number;
  partition?: string;
  timeMs: number;
  cpusPerAgent?: number;
  mem?: string;
  /** The address of kq the agents dial (default: the address kq binds, else this machine's name). */
  kqHost?: string;
}

export const AUTOSCALE_USAGE = 'max=N[,min=M][,idle=5m][,partition=P][,time=8h][,cpus=C][,mem=8G][,host=ADDR]';

/** `max=4,min=1,idle=5m,partition=render,time=8h`; throws a one-line error naming the bad part. */
export function parseAutoscale(spec: string): AutoscaleConfig {
  const fields = new Map<string, string>();
  for (const part of spec.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z]+)=(.+)$/.exec(part);
    if (!m) throw new Error(`--slurm-autoscale: "${part}" is not key=value (expected ${AUTOSCALE_USAGE})`);
    if (!['max', 'min', 'idle', 'partition', 'time', 'cpus', 'mem', 'host'].includes(m[1]!)) throw new Error(`--slurm-autoscale: unknown key "${m[1]}" (expected ${AUTOSCALE_USAGE})`);
    fields.set(m[1]!, m[2]!);
  }
  const int = (key: string, min: number, fallback?: number) => {
    const v = fields.get(key);
    if (v === undefined) {
      if (fallback === undefined) throw new Error(`--slurm-autoscale: ${key}= is required (expected ${AUTOSCALE_USAGE})`);
      return fallback;
    }
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > 10_000) throw new Error(`--slurm-autoscale: ${key}=${v} is not a whole number from ${min} to 10000`);
    return Number(v);
  };
  const duration = (key: string, fallback: number) => {
    const v = fields.get(key);
    if (v === undefined) return fallback;
    try {
      return parseDuration(v);
    } catch (err) {
      throw new Error(`--slurm-autoscale: ${key}=${v}: ${(err as Error).message}`);
    }
  };
  const config: AutoscaleConfig = {
    max: int('max', 1), min: int('min', 0, 0), idleMs: duration('idle', 5 * 60_000), timeMs: duration('time', 8 * 3600_000),
    partition: fields.get('partition'), cpusPerAgent: fields.has('cpus') ? int('cpus', 1) : undefined, mem: fields.get('mem'),
    kqHost: fields.get('host'),
  };
  if (config.min > config.max) throw new Error(`--slurm-autoscale: min=${config.min} is more than max=${config.max}`);
  return config;
}

/** What `ping` (kqctl agents) and the page show. */
export interface AutoscaleStatus {
  max: number;
  min: number;
  idleMs: number;
  partition: string | null;
  /** Agent jobs in Slurm's queue: registered with kq, or not yet (pending or starting). */
  agents: number;
  pending: number;
  /** Why Slurm keeps them pending (squeue's reasons), when some are. */
  pendingReasons: string[];
  lastDecision: string | null;
  /** Slurm refused or failed: kq keeps working with the agents it has and retries. */
  error: string | null;
  errorSince: string | null;
}

export interface AutoscalerDeps {
  config: AutoscaleConfig;
  log: Logger;
  kqDataRoot: string;
  /** Tasks waiting for an agent. */
  waitingTasks(): number;
  agents(): AgentInfo[];
  /** Where the agents dial and how they run (kq's address, install, data root); whether kq requires CURVE. */
  jobSpec(): Omit<AgentJobSpec, 'count' | 'jobName' | 'partition' | 'timeMs' | 'cpusPerAgent' | 'mem' | 'curve'> & { curve: boolean };
  /** Test hook: how often to look (default: a quarter of `idle`, between 0.5 s and 5 s). */
  tickMs?: number;
}

/** After Slurm refused, try again this much later (a fixed partition, a restarted slurmctld). */
const RETRY_AFTER_MS = 30_000;
/** Slurm job states that no longer hold or wait for a node. */
const LEAVING = new Set(['COMPLETING', 'COMPLETED', 'CANCELLED', 'FAILED', 'TIMEOUT', 'PREEMPTED', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE']);

export class Autoscaler {
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  private stopped = false;
  private readonly idleSince = new Map<string, number>();
  /** Array tasks we cancelled that Slurm still lists. */
  private readonly released = new Set<string>();
  private keys: AgentKeys | null = null;
  private retryAt = 0;
  private readonly jobName: string;
  readonly status: AutoscaleStatus;

  constructor(private readonly d: AutoscalerDeps) {
    this.jobName = agentJobNames(d.kqDataRoot).autoscaled;
    const c = d.config;
    this.status = { max: c.max, min: c.min, idleMs: c.idleMs, partition: c.partition ?? null, agents: 0, pending: 0, pendingReasons: [], lastDecision: null, error: null, errorSince: null };
  }

  start(): void {
    const every = this.d.tickMs ?? Math.min(5000, Math.max(500, this.d.config.idleMs / 4));
    this.d.log.info({ ...this.d.config, jobName: this.jobName, everyMs: every }, 'slurm autoscale on');
    this.timer = setInterval(() => this.tick(), every);
    this.tick();
  }

  /** Stop looking; with `release`, cancel every autoscaled agent job (kq stops for good: free the nodes). */
  async stop(release: boolean): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.ticking;
    if (!release) return;
    try {
      const ids = [...new Set((await squeue([this.jobName])).map((q) => String(q.arrayJobId)))];
      if (ids.length) {
        await scancel(ids);
        this.d.log.info({ jobs: ids }, 'slurm autoscale: kq stops: cancelled its agent jobs');
      }
    } catch (err) {
      this.d.log.error({ err: (err as Error).message }, 'slurm autoscale: could not cancel the agent jobs at shutdown');
    }
  }

  private tick(): void {
    if (this.ticking || this.stopped) return;
    this.ticking = this.step()
      .catch((err: Error) => this.failed(err))
      .finally(() => { this.ticking = null; });
  }

  private async step(): Promise<void> {
    const queue = (await squeue([this.jobName])).filter((q) => !LEAVING.has(q.state));
    for (const id of this.released) if (!queue.some((q) => q.id === id)) this.released.delete(id);
    const live = queue.filter((q) => !this.released.has(q.id));
    const ours = new Set(live.map((q) => q.arrayJobId));
    const agents = this.d.agents().filter((a) => a.state === 'idle' || a.state === 'busy');
    const mine = agents.filter((a) => a.slurm && ours.has(a.slurm.jobId));
    const registered = new Set(mine.map((a) => `${a.slurm!.jobId}_${a.slurm!.arrayTaskId}`));
    const notYet = live.filter((q) => !registered.has(q.id)); // pending, or running but not registered yet
    const pending = notYet.filter((q) => q.state === 'PENDING');
    const idleAll = agents.filter((a) => a.state === 'idle').length;
    const waiting = this.d.waitingTasks();
    this.status.agents = live.length;
    this.status.pending = pending.length;
    this.status.pendingReasons = [...new Set(pending.map((q) => q.reason))];
    this.trackIdle(mine);
    if (this.stopped) return;

    const need = waiting - idleAll - notYet.length;
    const grow = Math.min(this.d.config.max - live.length, Math.max(need, this.d.config.min - live.length));
    if (grow > 0) {
      if (Date.now() < this.retryAt) return;
      await this.submit(grow, `${waiting} waiting task(s), ${idleAll} idle agent(s), ${notYet.length} agent job(s) pending or starting, ${live.length} of max ${this.d.config.max}`);
      return;
    }
    // Pending jobs the queue no longer needs (the backlog went away before Slurm started them).
    const surplus = Math.min(pending.length, -need, live.length - this.d.config.min);
    if (surplus > 0 && waiting === 0) {
      const drop = pending.slice(-surplus).map((q) => q.id);
      await this.release(drop, `no waiting tasks: ${drop.length} pending agent job(s) not needed`);
      return;
    }
    const now = Date.now();
    const idleTooLong = mine.filter((a) => a.state === 'idle' && now - (this.idleSince.get(a.id) ?? now) >= this.d.config.idleMs);
    const canRelease = Math.min(idleTooLong.length, live.length - this.d.config.min);
    if (canRelease > 0) {
      const drop = idleTooLong.slice(0, canRelease);
      await this.release(drop.map((a) => `${a.slurm!.jobId}_${a.slurm!.arrayTaskId}`),
        `${drop.length} agent(s) idle for ${this.d.config.idleMs / 1000}s or more (${drop.map((a) => a.id).join(', ')}); min ${this.d.config.min}`);
    }
  }

  /** When each of our agents became idle (busy resets it); forgotten once gone. */
  private trackIdle(mine: AgentInfo[]): void {
    const now = Date.now();
    const seen = new Set<string>();
    for (const a of mine) {
      seen.add(a.id);
      if (a.state === 'busy') this.idleSince.delete(a.id);
      else if (!this.idleSince.has(a.id)) this.idleSince.set(a.id, now);
    }
    for (const id of [...this.idleSince.keys()]) if (!seen.has(id)) this.idleSince.delete(id);
  }

  private async submit(count: number, why: string): Promise<void> {
    const spec = this.d.jobSpec();
    if (spec.curve && !this.keys) this.keys = await prepareAgentKeys(this.d.kqDataRoot, spec.agentDataRoot, await clusterName());
    const c = this.d.config;
    const jobId = await submitAgentJob({
      ...spec, count, jobName: this.jobName, partition: c.partition, timeMs: c.timeMs, cpusPerAgent: c.cpusPerAgent, mem: c.mem,
      curve: spec.curve ? this.keys : null,
    });
    if (this.status.error) this.d.log.info({ was: this.status.error }, 'slurm autoscale: Slurm takes agent jobs again');
    this.status.error = null;
    this.status.errorSince = null;
    this.decided(`submitted Slurm job ${jobId}: ${count} agent(s) (${why})`, { slurmJob: jobId, count });
  }

  private async release(ids: string[], why: string): Promise<void> {
    await scancel(ids);
    for (const id of ids) this.released.add(id);
    this.decided(`cancelled ${ids.join(', ')} (${why})`, { cancelled: ids });
  }

  private decided(decision: string, fields: Record<string, unknown>): void {
    this.status.lastDecision = `${new Date().toISOString()} ${decision}`;
    this.d.log.info(fields, `slurm autoscale: ${decision}`);
  }

  private failed(err: Error): void {
    this.retryAt = Date.now() + RETRY_AFTER_MS;
    if (this.status.error === err.message) return; // reported once; retried quietly
    this.status.error = err.message;
    this.status.errorSince = new Date().toISOString();
    this.d.log.error({ err: err.message, retryInMs: RETRY_AFTER_MS }, `slurm autoscale: ${err.message}; kq keeps working with the agents it has`);
  }
}

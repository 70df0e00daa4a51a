/**
 * (s) A simulated farm: one load-generator process (bench/farm-sim.ts) speaks kq's agent protocol as 500
 * agents against a real kq (`--num-agents 0`, real sockets, real SQLite) with 1,000,000 queued tasks.
 *
 * Phases: 500 agents register and idle (kq's CPU on their heartbeats, queue empty) → the queue is paused
 * and the job submitted (submit time, time until every task row is inserted) → idle again with the
 * backlog (heartbeat CPU, `kqctl list`) → resumed: for each simulated render time, a warm-up and a
 * measured window (assignments per second, per agent a render's end → the next one's start, kq's CPU per task)
 * → `kqctl list` while the farm dispatches → daemon RSS.
 *
 * Little's law decides which phase measures what: 500 agents that never wait on a render ask for work
 * as fast as kq can hand it out, so with 0 ms renders every finished message queues behind the others
 * and latency ≈ agents ÷ throughput (250 ms at 2,000 tasks/s). That phase measures throughput. Latency
 * is measured at an offered load kq can carry: 500 agents × 250 ms renders offer about 2,000 tasks/s.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KqUnderTest, until } from '../kq.js';
import { cpuMs, cpuWaitMs, loadavg1, peakRssMb, rssMb } from '../proc.js';
import { median, now, percentile } from '../stats.js';
import { floor, row, type Context, type Row, type ScenarioResult } from '../scenario.js';
import type { JobSummary } from '../../src/protocol/index.js';
import { TASK_BATCH } from '../../src/kq/store.js';

const SIM = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'farm-sim.js');

export interface FarmOptions {
  agents?: number;
  tasks?: number;
  /** Simulated render times, one measured window each. */
  renderMs?: number[];
}

interface SimReport { ms: number; assigns: number; finishes: number; replaced: number; latencies: number[]; busy: number; unexpected: number; unexpectedSamples: string[] }

/** The simulator child and a way to wait for its next event of a kind. */
class Sim {
  private readonly waiters = new Map<string, Array<(m: Record<string, unknown>) => void>>();
  private exited: string | null = null;

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: Record<string, unknown>) => {
      const list = this.waiters.get(String(m.ev));
      this.waiters.delete(String(m.ev));
      for (const f of list ?? []) f(m);
      if (m.ev === 'error') this.exited = String(m.error);
    });
    proc.on('exit', (code, signal) => { this.exited = `farm simulator exited (${code ?? signal})`; });
  }

  send(msg: object): void {
    this.proc.send(msg);
  }

  next<T>(ev: string, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      if (this.exited) return reject(new Error(this.exited));
      const timer = setTimeout(() => reject(new Error(`farm simulator: no "${ev}" in ${timeoutMs} ms${this.exited ? `: ${this.exited}` : ''}`)), timeoutMs);
      const list = this.waiters.get(ev) ?? [];
      list.push((m) => { clearTimeout(timer); resolve(m as T); });
      this.waiters.set(ev, list);
      const errs = this.waiters.get('error') ?? [];
      errs.push((m) => { clearTimeout(timer); reject(new Error(`farm simulator: ${String(m.error)}`)); });
      this.waiters.set('error', errs);
    });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** kq's CPU use (ms per second of wall time) over `ms`. */
async function cpuOver(pid: number, ms: number): Promise<number> {
  const c0 = cpuMs(pid)!;
  const t0 = now();
  await sleep(ms);
  return ((cpuMs(pid)! - c0) / (now() - t0)) * 1000;
}


const round = (v: number | null | undefined, d = 1) => (v === null || v === undefined || !Number.isFinite(v) ? null : Math.round(v * 10 ** d) / 10 ** d);

/** Five `kqctl list`s, timed; one that fails (kqctl gives up after 2 s without an answer) is noted and counted as 2 s. */
async function timedLists(kq: KqUnderTest, notes: string[], when: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await kq.ctl(['list']);
    if (r.code !== 0) notes.push(`kqctl list (${when}) exited ${r.code} after ${Math.round(r.ms)} ms: ${r.stderr.trim().slice(0, 120)}`);
    out.push(r.code === 0 ? r.ms : Math.max(r.ms, 2000));
  }
  return out;
}

export async function scenarioS(ctx: Context, o: FarmOptions = {}): Promise<ScenarioResult> {
  const nAgents = o.agents ?? ctx.farm?.agents ?? (ctx.quick ? 100 : 500);
  const nTasks = o.tasks ?? ctx.farm?.tasks ?? (ctx.quick ? 100_000 : 1_000_000);
  const renders = o.renderMs ?? ctx.farm?.renderMs ?? [0, 50, 250];
  const windowMs = ctx.quick ? 8000 : 20_000;
  const idleMs = ctx.quick ? 10_000 : 20_000;
  const metrics: ScenarioResult['metrics'] = { agents: nAgents, tasks: nTasks };
  const rows: Row[] = [];
  const notes: string[] = [];
  const kq = await KqUnderTest.start({ numAgents: 0, root: ctx.kqRoot, profileDir: ctx.profileDir && path.join(ctx.profileDir, 's') });
  const sim = new Sim(fork(SIM, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' }));
  let job: JobSummary | null = null;
  try {
    metrics.rssIdleMb = round(rssMb(kq.pid));
    sim.send({ cmd: 'start', agents: nAgents, ports: { request: kq.info.requestPort, update: kq.info.updatePort, broadcast: kq.info.broadcastPort }, host: kq.info.host });
    const reg = await sim.next<{ ms: number }>('registered', 300_000);
    metrics.registerAllMs = round(reg.ms);
    ctx.log(`  ${nAgents} simulated agents registered in ${reg.ms.toFixed(0)} ms`);
    await until(`${nAgents} agents idle`, async () => (await kq.agents()).filter((a) => a.state === 'idle').length >= nAgents, 60_000, 500);
    await sleep(3000); // every agent into its heartbeat rhythm
    metrics.rssAgentsMb = round(rssMb(kq.pid));

    const idleCpu = await cpuOver(kq.pid, idleMs);
    metrics.idleHeartbeatCpuPct = round(idleCpu / 10, 2);
    ctx.log(`  idle, queue empty: kq used ${(idleCpu / 10).toFixed(2)}% of a core`);

    await kq.request('pause', {});
    const s0 = now();
    const submit = await kq.ctl(['submit', '--json', '--name', 'farm', '--frames', `1-${nTasks}`, '--', 'true'], 600_000);
    if (submit.code !== 0) throw new Error(`submit exited ${submit.code}: ${submit.stderr}`);
    job = JSON.parse(submit.stdout) as JobSummary;
    rows.push(row(`kqctl submit --frames 1-${nTasks}`, 'kq', [submit.ms], { items: nTasks }));
    // The first TASK_BATCH task rows go in with the job; the rest in background batches (kq.log says when
    // done). A job no bigger than one batch has no background work, and no such line comes.
    const kqLog = path.join(kq.dataRoot, 'logs', 'kq.log');
    if (nTasks > TASK_BATCH) {
      await until('every task row inserted', () => {
        const text = fs.readFileSync(kqLog, 'utf8');
        return text.split('\n').some((l) => l.includes('"background work on the job done') && l.includes(`"job":${job!.id},`));
      }, 1_800_000, 250);
    }
    metrics.insertAllMs = round(now() - s0, 0);
    metrics.rssAfterSubmitMb = round(rssMb(kq.pid));
    ctx.log(`  ${nTasks} tasks submitted in ${submit.ms.toFixed(0)} ms, all rows in after ${Number(metrics.insertAllMs)} ms`);

    const pausedCpu = await cpuOver(kq.pid, idleMs);
    metrics.pausedBacklogHeartbeatCpuPct = round(pausedCpu / 10, 2);
    ctx.log(`  idle, ${nTasks} waiting, queue paused: kq used ${(pausedCpu / 10).toFixed(2)}% of a core`);
    const listsPaused = await timedLists(kq, notes, 'queue paused');
    rows.push(row(`kqctl list (${nTasks.toLocaleString('en')} waiting, paused)`, 'kq', listsPaused));

    await kq.request('resume', {});
    const phases: Array<{ renderMs: number; tps: number; p50: number; p99: number }> = [];
    for (const renderMs of renders) {
      sim.send({ cmd: 'render', ms: renderMs });
      await sleep(Math.max(3000, renderMs * 10));
      sim.send({ cmd: 'measure' });
      const c0 = cpuMs(kq.pid)!;
      const sc0 = cpuMs(sim.proc.pid!)!;
      const w0 = cpuWaitMs(kq.pid) ?? NaN;
      await sleep(windowMs);
      const simCpu = cpuMs(sim.proc.pid!)! - sc0;
      // Time kq's threads were runnable but waited for a CPU: on a shared machine, what held it back.
      const kqWait = (cpuWaitMs(kq.pid) ?? NaN) - w0;
      sim.send({ cmd: 'report' });
      const r = await sim.next<SimReport>('report', 60_000);
      const cpu = cpuMs(kq.pid)! - c0;
      const tps = (r.assigns / r.ms) * 1000;
      const p50 = percentile(r.latencies, 50);
      const p99 = percentile(r.latencies, 99);
      phases.push({ renderMs, tps, p50, p99 });
      const k = `render${renderMs}ms`;
      metrics[`${k}TasksPerSecond`] = round(tps, 0);
      metrics[`${k}AssignP50Ms`] = round(p50, 2);
      metrics[`${k}AssignP99Ms`] = round(p99, 2);
      metrics[`${k}AssignMaxMs`] = round(r.latencies.length ? Math.max(...r.latencies) : NaN, 1);
      metrics[`${k}KqCpuMsPerTask`] = round(cpu / Math.max(1, r.assigns), 3);
      metrics[`${k}KqCpuPct`] = round((cpu / r.ms) * 100, 0);
      // What one free core would carry at this CPU cost per task (the machine is shared: see the load).
      metrics[`${k}KqOneCoreTasksPerSecond`] = round(r.assigns > 0 ? 1000 / (cpu / r.assigns) : NaN, 0);
      metrics[`${k}SimCpuPct`] = round((simCpu / r.ms) * 100, 0);
      metrics[`${k}KqCpuWaitPct`] = round((kqWait / r.ms) * 100, 0);
      metrics[`${k}Load`] = loadavg1();
      metrics[`${k}Busy`] = r.busy;
      if (r.replaced > 0) notes.push(`${r.replaced} held assignments replaced (kq withdrew them) during the ${renderMs} ms window`);
      rows.push(row(`assign latency, ${renderMs} ms renders (render end → next start)`, 'kq', r.latencies.length ? [median(r.latencies)] : [],
        { note: `p99 ${round(p99, 2)} ms, ${round(tps, 0)} tasks/s` }));
      ctx.log(`  ${renderMs} ms renders: ${tps.toFixed(0)} tasks/s, assign latency p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms, kq ${(cpu / Math.max(1, r.assigns)).toFixed(3)} ms CPU per task (${((cpu / r.ms) * 100).toFixed(0)}% of a core), simulator ${((simCpu / r.ms) * 100).toFixed(0)}% of a core; kq waited for a CPU ${((kqWait / r.ms) * 100).toFixed(0)}% of the time (load ${loadavg1()})`);
    }

    const listsBusy = await timedLists(kq, notes, 'farm dispatching');
    rows.push(row(`kqctl list (farm dispatching, ${renders[renders.length - 1]} ms renders)`, 'kq', listsBusy));
    rows.push(row('list (in-process client, no start-up)', 'kq', await kq.timedInProcessLists()));
    const after = (await kq.request<JobSummary[]>('list', {})).find((j) => j.id === job!.id);
    metrics.tasksDone = after?.tasks.completed ?? null;
    metrics.rssMb = round(rssMb(kq.pid));
    metrics.rssPeakMb = round(peakRssMb(kq.pid));
    sim.send({ cmd: 'report' });
    const last = await sim.next<SimReport>('report', 60_000);
    if (last.unexpected > 0) notes.push(`the simulator saw ${last.unexpected} unexpected message(s), e.g. ${last.unexpectedSamples.join(' | ')}`);

    const thru = phases.find((p) => p.renderMs === Math.min(...renders))!;
    const lat = phases.find((p) => p.renderMs === Math.max(...renders))!;
    return {
      id: 's',
      title: `(s) simulated farm: ${nAgents} agents (one process, kq's real protocol), ${nTasks.toLocaleString('en')} queued tasks`,
      rows,
      metrics,
      floors: [
        floor(`sustained dispatch, ${thru.renderMs} ms renders (tasks/s)`, thru.tps, 2000, 'min', 'tasks/s'),
        floor(`assign latency p99, ${lat.renderMs} ms renders (ms)`, lat.p99, 20, 'max', 'ms'),
        floor('kqctl list while the farm dispatches (s)', median(listsBusy) / 1000, 0.5, 'max', 's'),
        floor('daemon RSS, peak (MB)', Number(metrics.rssPeakMb), 500, 'max', 'MB'),
        floor(`heartbeats of ${nAgents} idle agents, queue paused with the backlog (% of a core)`, Number(metrics.pausedBacklogHeartbeatCpuPct), 5, 'max', '%'),
      ],
      notes,
    };
  } finally {
    try {
      sim.send({ cmd: 'stop' });
      await sim.next('stopped', 30_000);
    } catch {
      sim.proc.kill('SIGKILL');
    }
    await kq.stop();
  }
}

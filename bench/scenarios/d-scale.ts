/**
 * (d) 100,000 queued one-frame tasks: submit time, `kqctl list` time, daemon RSS, and dispatch latency
 * p50/p99 while the queue is that deep.
 *
 * Dispatch latency = on one agent, the end of one render → the start of the next render process. The
 * renders are bench/stamp.c, which appends its start/end times and its parent (the agent) to a file.
 * kq's own view (task startedAt = claim time, finishedAt = when kq processed "finished") is reported too
 * when `show` can return the job.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { KqUnderTest, ROOT, tempDir, until } from '../kq.js';
import { openFds, rssMb } from '../proc.js';
import { median, now, percentile } from '../stats.js';
import { floor, row, type Context, type ScenarioResult } from '../scenario.js';
import type { JobDetail, JobSummary } from '../../src/protocol/index.js';

/** Compile bench/stamp.c (null if there is no C compiler). */
export function buildStamp(dir: string): string | null {
  const bin = path.join(dir, 'kq-bench-stamp');
  const r = spawnSync('cc', ['-O2', '-o', bin, path.join(ROOT, 'bench', 'stamp.c')], { encoding: 'utf8' });
  return r.status === 0 ? bin : null;
}

/** Gaps (ms) between one render's end and the next one's start, per agent. */
export function stampGaps(file: string): number[] {
  const byAgent = new Map<string, Array<[number, number]>>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const [ppid, start, end] = line.split(' ');
    if (!end) continue;
    const list = byAgent.get(ppid!) ?? [];
    list.push([Number(start) * 1000, Number(end) * 1000]);
    byAgent.set(ppid!, list);
  }
  const gaps: number[] = [];
  for (const list of byAgent.values()) {
    list.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < list.length; i++) gaps.push(list[i]![0] - list[i - 1]![1]);
  }
  return gaps;
}

/** kq's view: per agent, next task's startedAt − previous task's finishedAt. */
export function kqGaps(job: JobDetail): number[] {
  const byAgent = new Map<string, Array<[number, number]>>();
  for (const t of job.taskList) {
    if (!t.agentId || !t.startedAt || !t.finishedAt) continue;
    const list = byAgent.get(t.agentId) ?? [];
    list.push([Date.parse(t.startedAt), Date.parse(t.finishedAt)]);
    byAgent.set(t.agentId, list);
  }
  const gaps: number[] = [];
  for (const list of byAgent.values()) {
    list.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < list.length; i++) gaps.push(list[i]![0] - list[i - 1]![1]);
  }
  return gaps;
}

export async function scenarioD(ctx: Context, o: { tasks?: number; observe?: number } = {}): Promise<ScenarioResult> {
  const n = o.tasks ?? (ctx.quick ? 10_000 : 100_000);
  const observe = o.observe ?? (ctx.quick ? 500 : 3000);
  const dir = tempDir('kq-bench-d-');
  const stamp = buildStamp(dir);
  const stampFile = path.join(dir, 'stamps.txt');
  const notes: string[] = [];
  if (!stamp) notes.push('no C compiler: renders are `true`, end-to-end latency not measured');
  const kq = await KqUnderTest.start({ numAgents: 2, profileDir: ctx.profileDir && path.join(ctx.profileDir, 'd') });
  const metrics: ScenarioResult['metrics'] = { tasks: n, observedTasks: observe };
  const rows = [];
  try {
    metrics.rssIdleMb = round(rssMb(kq.pid));
    const submit = await kq.ctl(['submit', '--json', '--frames', `1-${n}`, '--env', `KQ_BENCH_STAMP=${stampFile}`, '--', stamp ?? 'true'], 600_000);
    if (submit.code !== 0) throw new Error(`submit exited ${submit.code}: ${submit.stderr}`);
    const job = JSON.parse(submit.stdout) as JobSummary;
    rows.push(row(`kqctl submit --frames 1-${n}`, 'kq', [submit.ms], { items: n }));
    metrics.rssAfterSubmitMb = round(rssMb(kq.pid));

    // List while the deep queue is being worked on (the usual moment someone looks).
    const lists: number[] = [];
    const listsJson: number[] = [];
    for (let i = 0; i < (ctx.quick ? 3 : 7); i++) {
      const r = await kq.ctl(['list']);
      if (r.code !== 0) throw new Error(`list exited ${r.code}: ${r.stderr}`);
      lists.push(r.ms);
      listsJson.push((await kq.ctl(['list', '--json'])).ms);
    }
    rows.push(row('kqctl list', 'kq', lists));
    rows.push(row('kqctl list --json', 'kq', listsJson));

    const t0 = now();
    let done = 0;
    await until(`${observe} tasks done`, async () => {
      const [j] = (await kq.request<JobSummary[]>('list', {})).filter((x) => x.id === job.id);
      done = j?.framesDone ?? 0;
      return done >= observe;
    }, 1_800_000, 500);
    const elapsed = now() - t0;
    metrics.tasksPerSecond = round((done / elapsed) * 1000);
    metrics.rssMb = round(rssMb(kq.pid));
    metrics.rssPeakMb = round(peakRssMb(kq.pid));
    metrics.daemonFds = openFds(kq.pid);

    // `show` of the whole job: its size is part of what 100k tasks cost.
    const s0 = now();
    try {
      const detail = await kq.show(job.id);
      rows.push(row(`show (in-process, ${detail.taskList.length} tasks)`, 'kq', [now() - s0]));
      const gaps = kqGaps(detail);
      metrics.kqSideGapP50Ms = round(percentile(gaps, 50), 2);
      metrics.kqSideGapP99Ms = round(percentile(gaps, 99), 2);
    } catch (err) {
      rows.push(row('show (in-process, whole job)', 'kq', [], { error: (err as Error).message.slice(0, 200) }));
    }
    const stop = await kq.ctl(['stop', String(job.id)]);
    rows.push(row('kqctl stop (cancel the rest)', 'kq', [stop.ms], { error: stop.code === 0 ? undefined : stop.stderr.slice(0, 200) }));
    await new Promise((r) => setTimeout(r, 500));
    if (stamp && fs.existsSync(stampFile)) {
      const gaps = stampGaps(stampFile);
      metrics.renders = gaps.length + 2;
      metrics.dispatchP50Ms = round(percentile(gaps, 50), 2);
      metrics.dispatchP90Ms = round(percentile(gaps, 90), 2);
      metrics.dispatchP99Ms = round(percentile(gaps, 99), 2);
      metrics.dispatchMaxMs = round(Math.max(...gaps), 2);
    }
    const p99 = Number(metrics.dispatchP99Ms ?? metrics.kqSideGapP99Ms ?? NaN);
    return {
      id: 'd',
      title: `(d) ${n.toLocaleString('en')} queued one-frame tasks (one job), 2 agents`,
      rows,
      metrics,
      floors: [
        floor('kqctl list (s)', median(lists) / 1000, 0.5, 'max', 's'),
        floor('daemon RSS, peak (MB)', Number(metrics.rssPeakMb), 300, 'max', 'MB'),
        floor('dispatch latency p99 (ms)', p99, 20, 'max', 'ms'),
      ],
      notes,
    };
  } finally {
    await kq.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function peakRssMb(pid: number): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

const round = (v: number | null, d = 1) => (v === null || !Number.isFinite(v) ? null : Math.round(v * 10 ** d) / 10 ** d);

/**
 * (d) 100,000 queued one-frame tasks: submit time, `kqctl list` time, daemon RSS, and dispatch latency
 * p50/p99 while the queue is that deep.
 *
 * Dispatch latency = on one agent, the end of one render → the start of the next render process. The
 * renders are bench/stamp.c, which appends its start/end times, its parent (the agent) and its task id to a
 * file. Joined with kq's own task times (startedAt = claim time, finishedAt = when kq recorded "finished";
 * read from kq.db read-only once the run is over), each gap splits into agent→kq, kq, and kq→agent parts.
 */
import { spawnSync } from 'node:child_process';
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { KqUnderTest, ROOT, tempDir, until } from '../kq.js';
import { openFds, peakRssMb, rssMb } from '../proc.js';
import { median, now, percentile } from '../stats.js';
import { floor, row, type Context, type ScenarioResult } from '../scenario.js';
import type { JobDetail, JobSummary } from '../../src/protocol/index.js';
import { KqClient } from '../../src/kqctl/client.js';
import { resolveAddress } from '../../src/kqctl/address.js';

/** Compile bench/stamp.c (null if there is no C compiler). */
export function buildStamp(dir: string): string | null {
  const bin = path.join(dir, 'kq-bench-stamp');
  const r = spawnSync('cc', ['-O2', '-o', bin, path.join(ROOT, 'bench', 'stamp.c')], { encoding: 'utf8' });
  return r.status === 0 ? bin : null;
}

export interface Stamp { agent: string; taskId: number; start: number; end: number }

export function readStamps(file: string): Stamp[] {
  const out: Stamp[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const [agent, task, start, end] = line.split(' ');
    if (end) out.push({ agent: agent!, taskId: Number(task), start: Number(start) * 1000, end: Number(end) * 1000 });
  }
  return out;
}

/** Consecutive pairs of renders on one agent. */
function pairs<T>(items: T[], agentOf: (t: T) => string, startOf: (t: T) => number): Array<[T, T]> {
  const byAgent = new Map<string, T[]>();
  for (const t of items) byAgent.set(agentOf(t), [...(byAgent.get(agentOf(t)) ?? []), t]);
  const out: Array<[T, T]> = [];
  for (const list of byAgent.values()) {
    list.sort((a, b) => startOf(a) - startOf(b));
    for (let i = 1; i < list.length; i++) out.push([list[i - 1]!, list[i]!]);
  }
  return out;
}

/** Gaps (ms) between one render's end and the next one's start, per agent. */
export function stampGaps(stamps: Stamp[]): number[] {
  return pairs(stamps, (s) => s.agent, (s) => s.start).map(([a, b]) => b.start - a.end);
}

interface TaskTimes { id: number; agent: string; startedAt: number; finishedAt: number }

/** Task times as kq recorded them (read-only from kq.db, after the measurement: `show` cannot carry 100k tasks). */
export function taskTimes(dbFile: string, jobId: number): TaskTimes[] {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare(`SELECT id, agent_id, started_at, finished_at FROM tasks WHERE job_id = ? AND state = 'completed'`).all(jobId) as
      Array<{ id: number; agent_id: string; started_at: string; finished_at: string }>;
    return rows.map((r) => ({ id: r.id, agent: r.agent_id, startedAt: Date.parse(r.started_at), finishedAt: Date.parse(r.finished_at) }));
  } finally {
    db.close();
  }
}

/**
 * Where the time between two renders on one agent goes:
 * exit→recorded: render ends → kq has recorded "finished" (agent notices the exit, reports it, kq gets to it);
 * recorded→claimed: kq records the finish → kq claims the agent's next task (ms resolution);
 * claimed→started: kq claims the task → the render process runs (assignment travels, agent spawns it).
 */
export function breakdown(stamps: Stamp[], tasks: TaskTimes[]): Record<string, number[]> {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const out: Record<string, number[]> = { exitToRecorded: [], recordedToClaimed: [], claimedToStarted: [] };
  for (const [a, b] of pairs(stamps, (s) => s.agent, (s) => s.start)) {
    const ta = byId.get(a.taskId);
    const tb = byId.get(b.taskId);
    if (!ta || !tb) continue;
    out.exitToRecorded!.push(ta.finishedAt - a.end);
    out.recordedToClaimed!.push(tb.startedAt - ta.finishedAt);
    out.claimedToStarted!.push(b.start - tb.startedAt);
  }
  return out;
}

export async function scenarioD(ctx: Context, o: { tasks?: number; observe?: number } = {}): Promise<ScenarioResult> {
  const n = o.tasks ?? (ctx.quick ? 10_000 : 100_000);
  const observe = o.observe ?? (ctx.quick ? 500 : 3000);
  const dir = tempDir('kq-bench-d-');
  const stamp = buildStamp(dir);
  const stampFile = path.join(dir, 'stamps.txt');
  const notes: string[] = [];
  if (!stamp) notes.push('no C compiler: renders are `true`, end-to-end latency not measured');
  const kq = await KqUnderTest.start({ numAgents: 2, root: ctx.kqRoot, profileDir: ctx.profileDir && path.join(ctx.profileDir, 'd') });
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
    rows.push(row('list (in-process client, no start-up)', 'kq', await kq.timedInProcessLists()));
    rows.push(row('kqctl list --json', 'kq', listsJson));

    const doneOf = async () => (await kq.request<JobSummary[]>('list', {})).find((x) => x.id === job.id)?.framesDone ?? 0;
    const done0 = await doneOf();
    const t0 = now();
    let done = 0;
    await until(`${observe} tasks done`, async () => {
      done = await doneOf();
      return done >= observe;
    }, 1_800_000, 500);
    const elapsed = now() - t0;
    metrics.tasksPerSecond = round(((done - done0) / elapsed) * 1000);
    metrics.rssMb = round(rssMb(kq.pid));
    metrics.rssPeakMb = round(peakRssMb(kq.pid));
    metrics.daemonFds = openFds(kq.pid);

    // `show` of the whole job: its size is part of what 100k tasks cost.
    // Its own client with a short deadline: a reply over the client's maxMessageSize is dropped by libzmq
    // and only the deadline ends the wait.
    const showClient = new KqClient(resolveAddress({ dataRoot: kq.dataRoot }), 20_000);
    const s0 = now();
    try {
      const detail = await showClient.request<JobDetail>('show', { jobId: job.id });
      rows.push(row(`show (in-process, ${detail.taskList.length} tasks)`, 'kq', [now() - s0]));
    } catch (err) {
      rows.push(row('show (in-process, whole job)', 'kq', [], { error: `no reply after ${Math.round(now() - s0)} ms: ${(err as Error).message.slice(0, 160)}` }));
    } finally {
      showClient.close();
    }
    // How long kq stays unresponsive after that show (it builds and sends the whole task list).
    const b0 = now();
    await kq.request('list', {});
    metrics.firstReplyAfterShowMs = round(now() - b0);
    const stop = await kq.ctl(['stop', String(job.id)]);
    rows.push(row('kqctl stop (cancel the rest)', 'kq', [stop.ms], { error: stop.code === 0 ? undefined : stop.stderr.slice(0, 200) }));
    await new Promise((r) => setTimeout(r, 500));
    const tasks = taskTimes(path.join(kq.dataRoot, 'kq.db'), job.id);
    const kqGaps = pairs(tasks, (t) => t.agent, (t) => t.startedAt).map(([a, b]) => b.startedAt - a.finishedAt);
    metrics.kqSideGapP50Ms = round(percentile(kqGaps, 50), 2);
    metrics.kqSideGapP99Ms = round(percentile(kqGaps, 99), 2);
    if (stamp && fs.existsSync(stampFile)) {
      const stamps = readStamps(stampFile);
      const gaps = stampGaps(stamps);
      metrics.renders = stamps.length;
      metrics.dispatchP50Ms = round(percentile(gaps, 50), 2);
      metrics.dispatchP90Ms = round(percentile(gaps, 90), 2);
      metrics.dispatchP99Ms = round(percentile(gaps, 99), 2);
      metrics.dispatchMaxMs = round(Math.max(...gaps), 2);
      for (const [k, v] of Object.entries(breakdown(stamps, tasks))) {
        metrics[`${k}P50Ms`] = round(percentile(v, 50), 2);
        metrics[`${k}P99Ms`] = round(percentile(v, 99), 2);
      }
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


const round = (v: number | null, d = 1) => (v === null || !Number.isFinite(v) ? null : Math.round(v * 10 ** d) / 10 ** d);

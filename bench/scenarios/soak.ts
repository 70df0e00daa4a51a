/**
 * Soak: keep 4 agents busy with mixed short, failing, chatty and timed-out tasks for a while, and sample
 * RSS and open file descriptors (/proc/PID/fd) of kq and of each agent. Flat lines = no leak.
 */
import fs from 'node:fs';
import path from 'node:path';
import { KqUnderTest, tempDir } from '../kq.js';
import { openFds, rssMb } from '../proc.js';
import { now } from '../stats.js';
import type { Context } from '../scenario.js';
import type { JobSubmit, JobSummary } from '../../src/protocol/index.js';

export interface SoakSample {
  atS: number;
  kqRssMb: number | null;
  kqFds: number | null;
  agentRssMb: Array<number | null>;
  agentFds: Array<number | null>;
  agentPids: number[];
  jobsDone: number;
  tasksDone: number;
  waitingTasks: number;
}

export interface SoakResult {
  durationS: number;
  agents: number;
  samples: SoakSample[];
  verdict: { kqRssGrowthMb: number; kqFdGrowth: number; agentRssGrowthMb: number; agentFdGrowth: number; agentsReplaced: number; leak: boolean };
}

/** The mix: mostly quick successes, some failures (retried, then Failed), chatty output, and timeouts. */
function mix(i: number, cwd: string): JobSubmit {
  switch (i % 6) {
    case 0: return { name: 'quick', argv: ['true'], frames: '1-20', cwd };
    case 1: return { name: 'fails', argv: ['false'], frames: '1-3', maxAttempts: 2, cwd };
    case 2: return { name: 'chatty', argv: ['sh', '-c', 'i=0; while [ $i -lt 200 ]; do echo "frame {frame} line $i"; i=$((i+1)); done'], frames: '1-5', cwd };
    case 3: return { name: 'sleepy', argv: ['sleep', '0.05'], frames: '1-10', cwd };
    case 4: return { name: 'timeout', argv: ['sleep', '5'], timeoutMs: 200, maxAttempts: 1, cwd };
    default: return { name: 'stderr+fail', argv: ['sh', '-c', 'echo oops >&2; exit {frame}'], frames: '0-3', maxAttempts: 1, cwd };
  }
}

export async function soak(ctx: Context, durationMs: number): Promise<SoakResult> {
  const agents = 4;
  const cwd = tempDir('kq-bench-soak-');
  const kq = await KqUnderTest.start({ numAgents: agents, root: ctx.kqRoot, profileDir: ctx.profileDir && path.join(ctx.profileDir, 'soak') });
  const samples: SoakSample[] = [];
  const everyMs = Math.max(2000, Math.min(30_000, durationMs / 20));
  const t0 = now();
  const seenPids = new Set<number>();
  let submitted = 0;
  try {
    const sample = async () => {
      const list = await kq.request<JobSummary[]>('list', {});
      const pids = await kq.agentPids();
      for (const p of pids) seenPids.add(p);
      const s: SoakSample = {
        atS: Math.round((now() - t0) / 100) / 10,
        kqRssMb: r1(rssMb(kq.pid)), kqFds: openFds(kq.pid),
        agentRssMb: pids.map((p) => r1(rssMb(p))), agentFds: pids.map((p) => openFds(p)), agentPids: pids,
        jobsDone: list.filter((j) => ['Completed', 'Failed', 'Cancelled'].includes(j.state)).length,
        tasksDone: list.reduce((n, j) => n + j.tasks.completed + j.tasks.failed + j.tasks.cancelled, 0),
        waitingTasks: list.reduce((n, j) => n + j.tasks.waiting, 0),
      };
      samples.push(s);
      ctx.log(`  soak ${s.atS}s: kq ${s.kqRssMb} MB ${s.kqFds} fds; agents ${s.agentRssMb.join('/')} MB ${s.agentFds.join('/')} fds; ${s.tasksDone} tasks done, ${s.waitingTasks} waiting`);
      return s;
    };
    let last = await sample();
    let nextSample = now() + everyMs;
    while (now() - t0 < durationMs) {
      // Keep the queue shallow but never empty, so the agents stay busy.
      if (last.waitingTasks < 40) {
        for (let k = 0; k < 6; k++) await kq.submit(mix(submitted++, cwd));
      }
      await new Promise((r) => setTimeout(r, 250));
      if (now() >= nextSample) {
        last = await sample();
        nextSample += everyMs;
      } else {
        const list = await kq.request<JobSummary[]>('list', { states: ['Waiting', 'Running'] });
        last = { ...last, waitingTasks: list.reduce((n, j) => n + j.tasks.waiting, 0) };
      }
    }
    await sample();
  } finally {
    await kq.stop();
    fs.rmSync(cwd, { recursive: true, force: true });
  }
  // Growth over the second half: caches fill and V8's heap grows to its working size first (kq keeps up to
  // 64 job logs open, so its fd count climbs to a plateau). A short soak (30s) can hardly tell the two apart.
  const warm = samples[Math.floor((samples.length - 1) / 2)]!;
  const end = samples[samples.length - 1]!;
  // Descriptor counts move with each render's pipes: compare the lowest count of the last third of the
  // samples with the lowest of the middle third.
  const third = Math.max(1, Math.floor(samples.length / 3));
  const mid = samples.slice(third, 2 * third);
  const late = samples.slice(-third);
  const floorOf = (xs: Array<number | null>) => Math.min(...xs.map((x) => x ?? Infinity));
  const sum = (xs: Array<number | null>) => xs.reduce<number>((a, b) => a + (b ?? 0), 0);
  const avg = (xs: Array<number | null>) => sum(xs) / Math.max(1, xs.length);
  const verdict = {
    kqRssGrowthMb: r1((end.kqRssMb ?? 0) - (warm.kqRssMb ?? 0))!,
    kqFdGrowth: floorOf(late.map((x) => x.kqFds)) - floorOf(mid.map((x) => x.kqFds)),
    agentRssGrowthMb: r1(avg(end.agentRssMb) - avg(warm.agentRssMb))!,
    agentFdGrowth: floorOf(late.flatMap((x) => x.agentFds)) - floorOf(mid.flatMap((x) => x.agentFds)),
    agentsReplaced: seenPids.size - agents,
    leak: false,
  };
  verdict.leak = verdict.kqFdGrowth > 2 || verdict.agentFdGrowth > 2 || verdict.kqRssGrowthMb > 0.1 * (warm.kqRssMb ?? 0) || verdict.agentRssGrowthMb > 0.1 * avg(warm.agentRssMb);
  return { durationS: Math.round((now() - t0) / 1000), agents, samples, verdict };
}

const r1 = (v: number | null) => (v === null ? null : Math.round(v * 10) / 10);

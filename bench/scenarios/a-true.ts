/**
 * (a) 1,000 one-frame tasks of `true`, 2 slots: kq (2 agents; one job of 1,000 frames, and 1,000 separate
 * submits) against a bare Node loop, `xargs -P2`, task-spooler (`tsp -S 2`) and `parallel -j2`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { KqUnderTest, runTimed, tempDir, BIN } from '../kq.js';
import { runBareLoop, runParallel, runTsp, runXargs } from '../peers.js';
import { cpuMs } from '../proc.js';
import { now } from '../stats.js';
import { floor, interleave, minRatio, ratio, row, type Context, type Row, type ScenarioResult } from '../scenario.js';

export const KQ_JOB = 'kq: one job';
export const KQ_SUBMITS = 'kq: separate submits (in-process client)';
export const KQCTL_SUBMITS = 'kq: separate submits (kqctl loop)';
export const BARE = 'bare Node loop';
export const TSP = 'task-spooler (tsp -S 2)';

export async function scenarioA(ctx: Context, o: { tasks?: number; kqctlSubmits?: number } = {}): Promise<ScenarioResult> {
  const n = o.tasks ?? (ctx.quick ? 200 : 1000);
  const kqctlN = o.kqctlSubmits ?? (ctx.quick ? 20 : 100);
  const cwd = tempDir('kq-bench-a-');
  const kq = await KqUnderTest.start({ numAgents: 2, root: ctx.kqRoot, profileDir: ctx.profileDir && path.join(ctx.profileDir, 'a') });
  const notes: string[] = [];
  const cpu: Record<string, number[]> = { daemon: [], agents: [], bare: [] };
  try {
    await kq.waitJobs([(await kq.submit({ argv: ['true'], frames: '1-20', cwd })).id], 60_000); // warm-up
    const agentPids = await kq.agentPids();
    /** Time fn, and add the CPU kq and its agents used during it to `cpu` (ms per task). */
    const measured = async (fn: () => Promise<number>) => {
      const before = [cpuMs(kq.pid) ?? 0, agentPids.reduce((s, p) => s + (cpuMs(p) ?? 0), 0)];
      const ms = await fn();
      cpu.daemon!.push(((cpuMs(kq.pid) ?? 0) - before[0]!) / n);
      cpu.agents!.push((agentPids.reduce((s, p) => s + (cpuMs(p) ?? 0), 0) - before[1]!) / n);
      return ms;
    };
    const tools: Array<{ name: string; run: () => Promise<number> }> = [
      { name: KQ_JOB, run: () => measured(async () => {
        const t0 = now();
        const job = await kq.submit({ argv: ['true'], frames: `1-${n}`, cwd });
        return (await kq.waitJobs([job.id], 600_000)) - t0;
      }) },
      { name: KQ_SUBMITS, run: async () => {
        const t0 = now();
        const ids: number[] = [];
        for (let i = 0; i < n; i++) ids.push((await kq.submit({ argv: ['true'], cwd })).id);
        return (await kq.waitJobs(ids, 600_000)) - t0;
      } },
      { name: BARE, run: async () => {
        const r = await runBareLoop(n, 2);
        if (r.code !== 0 || !Number.isFinite(r.innerMs)) throw new Error(`bare loop failed: ${r.stderr}`);
        cpu.bare!.push(r.cpuMs / n);
        return r.innerMs;
      } },
    ];
    const ok = (r: { code: number | null; stderr: string; ms: number }, what: string) => {
      if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr.slice(0, 200)}`);
      return r.ms;
    };
    if (ctx.peers.xargs) tools.push({ name: 'xargs -P2', run: async () => ok(await runXargs(n, 2, ['true']), 'xargs') });
    if (ctx.peers.tsp) {
      tools.push({ name: TSP, run: async () => ok(await runTsp(ctx.peers.tsp!.bin, n, 2, ['true']), 'tsp') });
      tools.push({ name: `${TSP} -n (no output files)`, run: async () => ok(await runTsp(ctx.peers.tsp!.bin, n, 2, ['true'], true), 'tsp -n') });
    }
    if (ctx.peers.parallel) tools.push({ name: 'parallel -j2', run: async () => ok(await runParallel(n, 2, ['true']), 'parallel') });
    const results = await interleave(ctx, tools);

    // kqctl in a shell loop: every submit pays kqctl's start-up. Too slow for 1,000 × reps, so fewer, once.
    const loop = await (async () => {
      const script = `for i in $(seq 1 ${kqctlN}); do ${process.execPath} ${BIN.kqctl} --data-root '${kq.dataRoot}' submit --cwd '${cwd}' -- true || exit 1; done`;
      const t0 = now();
      const r = await runTimed('sh', ['-c', script]);
      if (r.code !== 0) return { error: `kqctl loop exited ${r.code}: ${r.stderr.slice(0, 200)}` };
      const ids = r.stdout.trim().split('\n').map(Number);
      return { ms: (await kq.waitJobs(ids, 600_000)) - t0, submitMs: r.ms };
    })().catch((err: Error) => ({ error: err.message }));

    const rows: Row[] = [...results].map(([tool, r]) => row(tool, tool.startsWith('kq') ? 'kq' : tool === BARE ? 'floor' : 'peer', r.samples, { items: n, error: r.error }));
    rows.splice(2, 0, 'ms' in loop
      ? row(`${KQCTL_SUBMITS}, ${kqctlN} jobs`, 'kq', [loop.ms!], { items: kqctlN })
      : row(`${KQCTL_SUBMITS}, ${kqctlN} jobs`, 'kq', [], { items: kqctlN, error: loop.error }));
    if ('ms' in loop) notes.push(`kqctl loop: ${kqctlN} jobs (not ${n}: each submit pays kqctl's start-up), 1 rep; the submits alone took ${Math.round(loop.submitMs!)} ms, ${Math.round(loop.submitMs! / kqctlN)} ms each`);
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const tsp = rows.filter((r) => r.tool.startsWith(TSP) && r.samples.length > 0).sort((x, y) => x.summary.median - y.summary.median)[0]?.tool ?? TSP;
    return {
      id: 'a',
      title: `(a) ${n} one-frame tasks of \`true\`, 2 slots`,
      rows,
      metrics: {
        tasks: n,
        kqDaemonCpuMsPerTask: Math.round(avg(cpu.daemon!) * 100) / 100,
        kqAgentsCpuMsPerTask: Math.round(avg(cpu.agents!) * 100) / 100,
        bareLoopCpuMsPerTask: Math.round(avg(cpu.bare!) * 100) / 100,
        // Load elsewhere stretches wall times but hardly CPU: on 2 busy cores this ratio is what limits kq.
        kqCpuPerTaskOverBare: Math.round(((avg(cpu.daemon!) + avg(cpu.agents!)) / avg(cpu.bare!)) * 100) / 100,
      },
      // Issue 16: faster than task-spooler (the faster of its two rows), aiming at ≤ 1.5× xargs -P2.
      floors: [
        floor(`kq one job ÷ ${tsp}`, ratio(rows, KQ_JOB, tsp), 1.0, 'max', '×', minRatio(rows, KQ_JOB, tsp)),
        floor('kq one job ÷ xargs -P2 (aim)', ratio(rows, KQ_JOB, 'xargs -P2'), 1.5, 'max', '×', minRatio(rows, KQ_JOB, 'xargs -P2')),
      ],
      notes,
    };
  } finally {
    await kq.stop();
    fs.rmSync(cwd, { recursive: true, force: true });
  }
}

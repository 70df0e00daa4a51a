/**
 * (p) A pipeline of 1,000 items in one call, end to end (process start to exit), 2 slots:
 * `seq N | kqctl submit --each --wait -- true {item}` against task-spooler fed the same N commands by a
 * shell loop (`tsp true $i`, then wait for the last), `xargs -P2` and `parallel -j2`.
 */
import fs from 'node:fs';
import { KqUnderTest, runTimed, tempDir, BIN, kqctlBin } from '../kq.js';
import { runParallel, runTsp, runXargs, shq } from '../peers.js';
import { cpuMs } from '../proc.js';
import { floor, interleave, minRatio, ratio, row, type Context, type Row, type ScenarioResult } from '../scenario.js';

export const KQ_EACH = 'kq: seq | kqctl submit --each --wait';
export const TSP_LOOP = 'task-spooler: shell loop of tsp';
export const TSP_LOOP_N = 'task-spooler: shell loop of tsp -n';

export async function scenarioP(ctx: Context): Promise<ScenarioResult> {
  const n = ctx.quick ? 200 : 1000;
  const cwd = tempDir('kq-bench-p-');
  const kq = await KqUnderTest.start({ numAgents: 2, root: ctx.kqRoot });
  const kqctl = ctx.kqRoot ? kqctlBin(ctx.kqRoot) : BIN.kqctl;
  const cpu = { daemon: [] as number[], agents: [] as number[] };
  try {
    await kq.waitJobs([(await kq.submit({ argv: ['true'], frames: '1-20', cwd })).id], 60_000); // warm-up
    const agentPids = await kq.agentPids();
    const agentsCpu = () => agentPids.reduce((s, p) => s + (cpuMs(p) ?? 0), 0);
    const ok = (r: { code: number | null; stderr: string; ms: number }, what: string) => {
      if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr.slice(0, 200)}`);
      return r.ms;
    };
    const pipeline = `seq 1 ${n} | ${shq(process.execPath)} ${shq(kqctl)} --data-root ${shq(kq.dataRoot)} submit --each --wait --cwd ${shq(cwd)} -- true '{item}' >/dev/null`;
    const tools: Array<{ name: string; run: () => Promise<number> }> = [
      { name: KQ_EACH, run: async () => {
        const before = [cpuMs(kq.pid) ?? 0, agentsCpu()];
        const ms = ok(await runTimed('sh', ['-c', pipeline]), 'kqctl submit --each --wait');
        cpu.daemon.push(((cpuMs(kq.pid) ?? 0) - before[0]!) / n);
        cpu.agents.push((agentsCpu() - before[1]!) / n);
        return ms;
      } },
    ];
    if (ctx.peers.tsp) {
      tools.push({ name: TSP_LOOP, run: async () => ok(await runTsp(ctx.peers.tsp!.bin, n, 2, ['true'], false, true), 'tsp loop') });
      tools.push({ name: TSP_LOOP_N, run: async () => ok(await runTsp(ctx.peers.tsp!.bin, n, 2, ['true'], true, true), 'tsp -n loop') });
    }
    if (ctx.peers.xargs) tools.push({ name: 'xargs -P2', run: async () => ok(await runXargs(n, 2, ['true']), 'xargs') });
    if (ctx.peers.parallel) tools.push({ name: 'parallel -j2', run: async () => ok(await runParallel(n, 2, ['true']), 'parallel') });
    const results = await interleave(ctx, tools);
    const rows: Row[] = [...results].map(([tool, r]) => row(tool, tool.startsWith('kq') ? 'kq' : 'peer', r.samples, { items: n, error: r.error }));
    // The floor is the faster task-spooler (with or without its output files) of this run.
    const tsps = rows.filter((r) => r.tool.startsWith('task-spooler') && r.samples.length > 0).sort((a, b) => a.summary.median - b.summary.median);
    const tsp = tsps[0]?.tool ?? TSP_LOOP_N;
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    return {
      id: 'p',
      title: `(p) a pipeline of ${n} items in one call, end to end, 2 slots`,
      rows,
      metrics: {
        items: n,
        kqDaemonCpuMsPerTask: Math.round(avg(cpu.daemon) * 100) / 100,
        kqAgentsCpuMsPerTask: Math.round(avg(cpu.agents) * 100) / 100,
      },
      floors: [floor(`kq --each ÷ ${tsp}`, ratio(rows, KQ_EACH, tsp), 1.0, 'max', '×', minRatio(rows, KQ_EACH, tsp))],
      notes: [`kq: \`seq 1 ${n} | kqctl submit --each --wait -- true {item}\` (kq and its 2 agents started before); ` +
        `task-spooler: \`tsp -S 2; for i in $(seq ${n}); do tsp [-n] true $i; done\`, then \`tsp -w\` on each job not finished yet`],
    };
  } finally {
    await kq.stop();
    fs.rmSync(cwd, { recursive: true, force: true });
  }
}

/** (c) `kqctl list` round trip (process start to exit) vs `node -e 0`, the floor for any Node CLI. */
import fs from 'node:fs';
import path from 'node:path';
import { KqUnderTest, runTimed, tempDir, BIN } from '../kq.js';
import { floor, interleave, minRatio, ratio, row, type Context, type ScenarioResult } from '../scenario.js';

export const NODE0 = 'node -e 0';
export const LIST = 'kqctl list';

export async function scenarioC(ctx: Context): Promise<ScenarioResult> {
  const reps = ctx.quick ? 8 : 25;
  const cwd = tempDir('kq-bench-c-');
  const kq = await KqUnderTest.start({ numAgents: 2, root: ctx.kqRoot });
  try {
    const ids: number[] = [];
    for (let i = 0; i < 10; i++) ids.push((await kq.submit({ argv: ['true'], frames: '1-5', cwd, name: `job ${i}` })).id);
    await kq.waitJobs(ids, 60_000);
    const ok = (r: { code: number | null; ms: number; stderr: string }, what: string) => {
      if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr}`);
      return r.ms;
    };
    const tools = [
      { name: NODE0, run: async () => ok(await runTimed(process.execPath, ['-e', '0']), NODE0) },
      { name: LIST, run: async () => ok(await kq.ctl(['list']), LIST) },
      { name: 'kqctl list --json', run: async () => ok(await kq.ctl(['list', '--json']), 'kqctl list --json') },
      { name: 'kqctl --help (no connection)', run: async () => ok(await runTimed(process.execPath, [BIN.kqctl, '--help']), 'kqctl --help') },
    ];
    const results = await interleave(ctx, tools, reps);
    const rows = [...results].map(([tool, r]) => row(tool, tool === NODE0 ? 'floor' : 'kq', r.samples, { error: r.error }));
    let profiles: string[] | undefined;
    if (ctx.profileDir) {
      // Where kqctl's start-up goes: one profiled run.
      const dir = path.join(ctx.profileDir, 'c');
      await runTimed(process.execPath, ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-interval', '100', BIN.kqctl, '--data-root', kq.dataRoot, 'list']);
      profiles = [dir];
    }
    return {
      id: 'c',
      title: '(c) `kqctl list` round trip (10 jobs in the table)',
      rows,
      metrics: {},
      floors: [floor('kqctl list ÷ node -e 0', ratio(rows, LIST, NODE0), 1.3, 'max', '×', minRatio(rows, LIST, NODE0))],
      notes: [],
      profiles,
    };
  } finally {
    await kq.stop();
    fs.rmSync(cwd, { recursive: true, force: true });
  }
}

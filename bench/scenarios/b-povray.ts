/** (b) A 48-frame POV-Ray animation (test/fixtures/spin.pov) on kq with 2 agents vs `parallel -j2` and `xargs -P2`. */
import fs from 'node:fs';
import path from 'node:path';
import { KqUnderTest, ROOT, tempDir } from '../kq.js';
import { runParallel, runXargs } from '../peers.js';
import { now } from '../stats.js';
import { floor, interleave, minRatio, ratio, row, type Context, type ScenarioResult } from '../scenario.js';

const SCENE = path.join(ROOT, 'test', 'fixtures', 'spin.pov');
export const KQ = 'kq (2 agents)';

export async function scenarioB(ctx: Context): Promise<ScenarioResult> {
  const frames = ctx.quick ? 12 : 48;
  const [w, h] = ctx.quick ? [160, 120] : [320, 240];
  if (!ctx.peers.povray) return skipped('povray not installed (apt-get install -y povray)');
  const args = (frame: string) => [`+I${SCENE}`, '+Oshot.png', `+W${w}`, `+H${h}`, '+FN', '-D', '+KFI1', `+KFF${frames}`, `+SF${frame}`, `+EF${frame}`];
  const out = tempDir('kq-bench-b-');
  /** A fresh output folder per run; afterwards every frame must be there. */
  const fresh = () => {
    fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(out);
    return out;
  };
  const check = (what: string) => {
    const pngs = fs.readdirSync(out).filter((f) => f.endsWith('.png')).length;
    if (pngs !== frames) throw new Error(`${what}: ${pngs} of ${frames} frames rendered`);
  };
  const kq = await KqUnderTest.start({ numAgents: 2, root: ctx.kqRoot, profileDir: ctx.profileDir && path.join(ctx.profileDir, 'b') });
  try {
    const tools = [
      { name: KQ, run: async () => {
        const cwd = fresh();
        const t0 = now();
        const job = await kq.submit({ argv: ['povray', ...args('{frame}')], frames: `1-${frames}`, cwd });
        const end = await kq.waitJobs([job.id], 600_000);
        check('kq');
        return end - t0;
      } },
    ];
    if (ctx.peers.parallel) tools.push({ name: 'parallel -j2', run: async () => {
      const r = await runParallel(frames, 2, ['povray', ...args('{}')], fresh());
      if (r.code !== 0) throw new Error(`parallel exited ${r.code}: ${r.stderr.slice(-300)}`);
      check('parallel');
      return r.ms;
    } });
    // xargs -n1 appends the frame number: sh gets it as $0 and puts it where povray wants it.
    if (ctx.peers.xargs) tools.push({ name: 'xargs -P2', run: async () => {
      const r = await runXargs(frames, 2, ['sh', '-c', `exec povray ${args('$0').join(' ')}`], fresh());
      if (r.code !== 0) throw new Error(`xargs exited ${r.code}: ${r.stderr.slice(-300)}`);
      check('xargs');
      return r.ms;
    } });
    const results = await interleave(ctx, tools);
    const rows = [...results].map(([tool, r]) => row(tool, tool === KQ ? 'kq' : 'peer', r.samples, { items: frames, error: r.error }));
    return {
      id: 'b',
      title: `(b) ${frames}-frame POV-Ray animation, ${w}x${h}, 2 slots`,
      rows,
      metrics: { frames, width: w, height: h },
      floors: [floor('kq ÷ parallel -j2 (render time)', ratio(rows, KQ, 'parallel -j2'), 1.05, 'max', '×', minRatio(rows, KQ, 'parallel -j2'))],
      notes: [],
    };
  } finally {
    await kq.stop();
    fs.rmSync(out, { recursive: true, force: true });
  }
}

function skipped(why: string): ScenarioResult {
  return { id: 'b', title: '(b) POV-Ray animation', rows: [], metrics: {}, floors: [], notes: [`skipped: ${why}`] };
}

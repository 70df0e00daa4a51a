/**
 * kq on a real private Slurm cluster (test/helpers/slurm.ts): agents as a Slurm job array via
 * `kqctl slurm start`, cancelled with scancel / `kqctl slurm stop`, and grown and shrunk by kq --slurm-autoscale.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, kqctl, Kq, ROOT, tempDir, waitFor, type RunResult } from './helpers/kq.js';
import { Slurm } from './helpers/slurm.js';

const SCENE = path.join(ROOT, 'test', 'fixtures', 'spin.pov');
const kqs: Kq[] = [];
const clusters: Slurm[] = [];

afterAll(async () => {
  await cleanupAll(kqs);
  for (const s of clusters) {
    await s.stop();
    expect(s.processes()).toEqual([]); // no slurmctld, slurmd, slurmstepd or job process left
    s.removeDir();
  }
});

async function cluster(o: Parameters<typeof Slurm.start>[0] = {}): Promise<Slurm> {
  const s = await Slurm.start(o);
  clusters.push(s);
  return s;
}

async function startKq(slurm: Slurm, args: string[] = []): Promise<Kq> {
  const kq = await Kq.start({ numAgents: 0, args, env: slurm.env });
  kqs.push(kq);
  return kq;
}

function ctl(kq: Kq, slurm: Slurm, ...args: string[]): Promise<RunResult> {
  return kqctl(['--data-root', kq.dataRoot, '--connect-timeout', '15s', ...args], slurm.env);
}


describe('kqctl slurm start / stop', () => {
  it('starts 2 agents as a Slurm job array that render a POV-Ray job; slurm stop leaves no job', async () => {
    const slurm = await cluster({ nodes: 2, cpus: 2 });
    const kq = await startKq(slurm);
    const r = await ctl(kq, slurm, 'slurm', 'start', '--agents', '2', '--time', '10m');
    expect(r.stderr + r.stdout).toMatch(/submitted Slurm job \d+/);
    expect(r.exitCode, r.stderr + slurm.logs()).toBe(0);
    const jobId = Number(/submitted Slurm job (\d+)/.exec(r.stdout)![1]);
    expect(r.stdout).toMatch(/all 2 agent\(s\) registered/);

    const agents = (await kq.agents()).filter((a) => a.state === 'idle' || a.state === 'busy');
    expect(agents).toHaveLength(2);
    expect(agents.map((a) => a.slurm.jobId)).toEqual([jobId, jobId]);
    expect(agents.map((a) => a.slurm.arrayTaskId).sort()).toEqual([0, 1]);
    for (const a of agents) expect(slurm.nodeNames).toContain(a.slurm.node);
    const table = await kq.ctl('agents');
    expect(table.stdout).toMatch(new RegExp(`${jobId}_0@node\\d`));

    const out = tempDir('kq-frames-');
    const id = await kq.submit('--name', 'spin', '--frames', '1-6', '--chunk', '1', '--cwd', out, '--',
      'povray', `+I${SCENE}`, '+Oshot.png', '+W80', '+H60', '+FN', '-D', '+KFI1', '+KFF6', '+SF{start}', '+EF{end}');
    const job = await kq.waitJob(id, 120_000);
    expect(job.state).toBe('Completed');
    expect(new Set(job.taskList.map((t: any) => t.agentId))).toEqual(new Set(agents.map((a) => a.id)));
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.png')).sort()).toEqual([1, 2, 3, 4, 5, 6].map((n) => `shot${n}.png`));

    const stop = await ctl(kq, slurm, 'slurm', 'stop');
    expect(stop.exitCode, stop.stderr).toBe(0);
    expect(stop.stdout).toContain(`cancelled Slurm job(s) ${jobId}`);
    expect(await slurm.queue()).toEqual([]);
    await waitFor('agents offline', async () => (await kq.agents()).every((a) => a.state === 'offline'), 30_000);
    await waitFor('no job processes', () => slurm.jobProcesses().length === 0, 30_000);
  }, 180_000);
});

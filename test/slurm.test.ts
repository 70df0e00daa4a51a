/**
 * kq on a real private Slurm cluster (test/helpers/slurm.ts): agents as a Slurm job array via
 * `kqctl slurm start`, cancelled with scancel / `kqctl slurm stop`, and grown and shrunk by kq --slurm-autoscale.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { BIN, cleanupAll, kqctl, Kq, ROOT, tempDir, waitFor, type RunResult } from './helpers/kq.js';
import { Slurm } from './helpers/slurm.js';

const SCENE = path.join(ROOT, 'test', 'fixtures', 'spin.pov');
const kqs: Kq[] = [];
const clusters: Slurm[] = [];

afterAll(async () => {
  await cleanupAll(kqs);
  const leftovers: unknown[] = [];
  const remaining: unknown[] = [];
  for (const s of clusters) {
    leftovers.push(...await s.stop());
    remaining.push(...s.processes());
    s.removeDir();
  }
  // No slurmstepd, agent or render outlived the clean shutdown (scancel, empty queue, scontrol shutdown)…
  expect(leftovers).toEqual([]);
  // …and nothing of any cluster is left at all.
  expect(remaining).toEqual([]);
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

  it('an agent whose Slurm job is cancelled mid-render hands its task back: requeued, done elsewhere, no failed attempt, frames complete and distinct', async () => {
    const slurm = await cluster({ nodes: 2, cpus: 1 });
    const kq = await startKq(slurm);
    const r = await ctl(kq, slurm, 'slurm', 'start', '--agents', '2');
    expect(r.exitCode, r.stderr + slurm.logs()).toBe(0);
    const jobId = Number(/submitted Slurm job (\d+)/.exec(r.stdout)![1]);

    const out = tempDir('kq-frames-');
    const id = await kq.submit('--name', 'big spin', '--frames', '1-4', '--chunk', '1', '--cwd', out, '--',
      'povray', `+I${SCENE}`, '+Oshot.png', '+W1024', '+H768', '+A0.01', '+AM2', '+R3', '+FN', '-D', '+KFI1', '+KFF4', '+SF{start}', '+EF{end}');
    // Both agents rendering; then cancel the Slurm array task of the one on task 0 of the array.
    const busy = await waitFor('both agents busy', async () => {
      const agents = (await kq.agents()).filter((a) => a.state === 'busy');
      return agents.length === 2 ? agents : null;
    }, 60_000);
    const victim = busy.find((a) => a.slurm.arrayTaskId === 0)!;
    const victimTask = victim.taskId;
    const victimPid = victim.pid;
    const c = await slurm.run_('scancel', [`${jobId}_0`]);
    expect(c.exitCode, c.stderr).toBe(0);

    const job = await kq.waitJob(id, 180_000);
    expect(job.state).toBe('Completed');
    const log = (await kq.ctl('log', String(id))).stdout;
    const task = job.taskList.find((t: any) => t.id === victimTask);
    expect(task.state, log).toBe('completed');
    expect(task.attempts, log).toBe(2); // handed back, then done by the other agent
    expect(task.agentId).not.toBe(victim.id);
    expect(job.blocklist).toEqual([]);
    expect(log).not.toMatch(/failed/);
    // Each frame completed exactly once: one PNG per frame, one completed task per frame.
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.png')).sort()).toEqual([1, 2, 3, 4].map((n) => `shot${n}.png`));
    const frames = job.taskList.filter((t: any) => t.state === 'completed').flatMap((t: any) => t.frames);
    expect(frames.sort()).toEqual([1, 2, 3, 4]);
    expect((await kq.json('agents', '--all')).find((a: any) => a.id === victim.id).state).toBe('offline');
    await waitFor('the cancelled agent gone', () => !fs.existsSync(`/proc/${victimPid}`), 30_000);
  }, 300_000);

  it('scancel signals the tree in any order: a render that dies just before its agent still hands the task back', async () => {
    const slurm = await cluster({ nodes: 1, cpus: 2 });
    const kq = await startKq(slurm);
    const r = await ctl(kq, slurm, 'slurm', 'start', '--agents', '1');
    expect(r.exitCode, r.stderr + slurm.logs()).toBe(0);
    const id = await kq.submit('--frames', '1', '--', 'sh', '-c', 'echo rendering; exec sleep 60');
    const task = await waitFor('the render running', async () => {
      const t = (await kq.json('show', String(id))).taskList[0];
      return t.state === 'running' && t.pid ? t : null;
    }, 30_000);
    const agent = (await kq.agents()).find((a) => a.state === 'busy');
    // As scancel does, but render first: SIGTERM the render's group, then its agent a moment later.
    process.kill(-task.pid, 'SIGTERM');
    await new Promise((res) => setTimeout(res, 30));
    process.kill(agent.pid, 'SIGTERM');
    const after = await waitFor('the task back in the queue', async () => {
      const j = await kq.json('show', String(id));
      return j.taskList[0].state === 'waiting' || j.taskList[0].state === 'failed' ? j : null;
    }, 30_000);
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(after.taskList[0].state, log).toBe('waiting');
    expect(log).not.toMatch(/failed/);
    expect(after.blocklist).toEqual([]);
  }, 120_000);

  it('an agent reaching its Slurm time limit hands its running task back (no failed attempt)', async () => {
    const slurm = await cluster({ nodes: 1, cpus: 2 });
    const kq = await startKq(slurm);
    const r = await ctl(kq, slurm, 'slurm', 'start', '--agents', '1', '--time', '1m');
    expect(r.exitCode, r.stderr + slurm.logs()).toBe(0);
    const id = await kq.submit('--frames', '1', '--', 'sh', '-c', 'echo rendering; exec sleep 600');
    await waitFor('the render running', async () => (await kq.json('show', String(id))).taskList[0].state === 'running', 30_000);
    // Slurm enforces the limit within about 30 s of it, then SIGTERM (KillWait 5 s) as for scancel.
    await waitFor('the time limit to end the agent', async () => (await kq.json('agents', '--all')).every((a: any) => a.state === 'offline'), 150_000, 500);
    const job = await kq.json('show', String(id));
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(job.taskList[0].state, log).toBe('waiting');
    expect(log).not.toMatch(/failed/);
    expect(await slurm.queue()).toEqual([]);
  }, 240_000);

  it('while Slurm keeps agents pending it says why; agents that do not register give exit 5 quoting their Slurm output', async () => {
    const slurm = await cluster({ nodes: 1, cpus: 1 });
    const kq = await startKq(slurm);
    // One CPU: task 0 runs (and cannot resolve its kq host), task 1 waits for Resources.
    const r = await ctl(kq, slurm, 'slurm', 'start', '--agents', '2', '--kq-host', 'no-such-host.invalid', '--register-timeout', '8s');
    expect(r.exitCode, r.stderr).toBe(5);
    const jobId = Number(/submitted Slurm job (\d+)/.exec(r.stdout)![1]);
    expect(r.stderr).toMatch(/agent job\(s\) pending in Slurm \(Resources\)/);
    expect(r.stderr).toContain(`2 of 2 kq agent(s) of Slurm job ${jobId} did not register`);
    expect(r.stderr).toMatch(new RegExp(`array task ${jobId}_0, running on node1: the end of .*kq-agent-${jobId}_0\\.out:\\n.*cannot resolve kq host "no-such-host.invalid"`));
    expect(r.stderr).toMatch(new RegExp(`array task ${jobId}_1, pending \\(Resources\\)`));
    expect(r.stderr).toContain('name resolution: the compute nodes cannot resolve "no-such-host.invalid"');
    expect(r.stderr).toContain(`cancel it with: kqctl slurm stop --job ${jobId}`);
    const stop = await ctl(kq, slurm, 'slurm', 'stop', '--job', String(jobId));
    expect(stop.exitCode, stop.stderr).toBe(0);
    expect(await slurm.queue()).toEqual([]);
    expect((await ctl(kq, slurm, 'slurm', 'stop', '--job', '999999')).exitCode).toBe(2); // not this kq's
  }, 120_000);

  it('with CURVE (kq --secure): the agents use client slurm-<cluster> from a 0600 file; no secret in the batch script, its environment or a command line', async () => {
    const slurm = await cluster({ nodes: 1, cpus: 2 });
    const kq = await startKq(slurm, ['--secure']);
    const keyName = `slurm-${slurm.clusterName}`;
    if (process.getuid?.() === 0) {
      // An agent data root another user (uid nobody) prepared, keys/ 0777 with a secret file waiting to be filled:
      // refused before anything is written, nothing submitted, and the client made for this start taken back.
      const shared = path.join(tempDir(), 'shared');
      fs.mkdirSync(path.join(shared, 'keys'), { recursive: true });
      fs.writeFileSync(path.join(shared, 'keys', `${keyName}.key_secret`), '');
      for (const p of [shared, path.join(shared, 'keys'), path.join(shared, 'keys', `${keyName}.key_secret`)]) {
        fs.chownSync(p, 65534, 65534);
        fs.chmodSync(p, 0o777);
      }
      const hostile = await ctl(kq, slurm, 'slurm', 'start', '--agents', '1', '--agent-data-root', shared);
      expect(hostile.stderr).toContain(`kqctl: refusing ${shared}: owned by uid 65534, not by this user (uid 0)`);
      expect(hostile.exitCode).toBe(2);
      expect(fs.statSync(path.join(shared, 'keys', `${keyName}.key_secret`)).size).toBe(0);
      expect(await slurm.queue()).toEqual([]);
      expect(JSON.parse((await kq.ctl('keys', 'list', '--json')).stdout).map((k: any) => k.name)).not.toContain(keyName);
    }
    const r = await ctl(kq, slurm, 'slurm', 'start', '--agents', '2');
    expect(r.exitCode, r.stderr + slurm.logs()).toBe(0);
    expect(r.stderr).toContain(`allowed a new client "${keyName}"`);
    const keys = JSON.parse((await kq.ctl('keys', 'list', '--json')).stdout);
    expect(keys.map((k: any) => k.name)).toContain(keyName);
    const secretFile = path.join(kq.dataRoot, 'slurm', 'keys', `${keyName}.key_secret`);
    expect(fs.statSync(secretFile).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(secretFile)).mode & 0o777).toBe(0o700);
    const secret = /secret-key = "([^"]+)"/.exec(fs.readFileSync(secretFile, 'utf8'))![1]!;

    const jobId = Number(/submitted Slurm job (\d+)/.exec(r.stdout)![1]);
    const script = await slurm.run_('scontrol', ['write', 'batch_script', `${jobId}_0`, '-']);
    expect(script.stdout).toContain('--key-file');
    const shown = await slurm.run_('scontrol', ['show', 'job', '-d', String(jobId)]);
    const agents = slurm.jobProcesses().filter((p) => p.cmd.includes('kq-agent'));
    expect(agents).toHaveLength(2);
    for (const text of [script.stdout, shown.stdout, ...agents.map((a) => a.cmd),
      ...agents.map((a) => fs.readFileSync(`/proc/${a.pid}/environ`, 'latin1'))]) {
      expect(text).not.toContain(secret);
    }
    // The agents really talk CURVE: a job renders.
    const id = await kq.submit('--frames', '1-2', '--', 'sh', '-c', 'echo frame {frame}');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    expect((await ctl(kq, slurm, 'slurm', 'stop')).exitCode).toBe(0);
    expect(await slurm.queue()).toEqual([]);
  }, 120_000);

  it('a bad partition is refused with a clear error (exit 4) and nothing stays queued; kq unreachable is exit 3', async () => {
    const slurm = await cluster({ nodes: 1, cpus: 2 });
    const kq = await startKq(slurm);
    const r = await ctl(kq, slurm, 'slurm', 'start', '--agents', '2', '--partition', 'nosuchpart');
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toMatch(/^kqctl: sbatch refused the agent job: .*invalid partition/im);
    expect(await slurm.queue()).toEqual([]);
    // No Slurm client on the PATH (node runs by its full path here).
    const bare = await execa(process.execPath, [BIN.kqctl, '--data-root', kq.dataRoot, 'slurm', 'start'], { env: { ...slurm.env, PATH: '/nonexistent' }, reject: false });
    expect(bare.exitCode).toBe(4);
    expect(bare.stderr).toMatch(/sbatch not found on PATH/);
    await kq.stop();
    const down = await kqctl(['--data-root', kq.dataRoot, '--connect-timeout', '2s', 'slurm', 'start', '--agents', '1'], slurm.env);
    expect(down.exitCode).toBe(3);
    expect(await slurm.queue()).toEqual([]);
  }, 120_000);
});

describe('kq --slurm-autoscale', () => {
  it('grows from 0 to max agent jobs for a backlog (never more), and back to 0 once they are idle (CURVE on)', async () => {
    const slurm = await cluster({ nodes: 2, cpus: 2 });
    const kq = await startKq(slurm, ['--secure', '--slurm-autoscale', 'max=3,idle=2s,time=10m,host=127.0.0.1']);
    expect(await slurm.queue()).toEqual([]);
    const id = await kq.submit('--frames', '1-9', '--chunk', '1', '--', 'sh', '-c', 'sleep 1; echo frame {frame}');
    let most = 0;
    const three = await waitFor('3 autoscaled agents', async () => {
      most = Math.max(most, (await slurm.queue()).length);
      const agents = (await kq.agents()).filter((a) => a.slurm && (a.state === 'idle' || a.state === 'busy'));
      return agents.length === 3 ? agents : null;
    }, 60_000, 200);
    expect(new Set(three.map((a) => a.slurm.node)).size).toBeGreaterThanOrEqual(1);
    // CURVE: the cluster's client was allowed and its secret sits in a 0600 file the agents read.
    expect(fs.statSync(path.join(kq.dataRoot, 'slurm', 'keys', `slurm-${slurm.clusterName}.key_secret`)).mode & 0o777).toBe(0o600);
    const job = await kq.waitJob(id, 120_000);
    expect(job.state).toBe('Completed');
    most = Math.max(most, (await slurm.queue()).length);
    expect(most).toBe(3);
    // Idle for 2 s: released; nothing left in Slurm's queue, no job process left.
    await waitFor('the queue empty again', async () => (await slurm.queue()).length === 0, 60_000, 200);
    await waitFor('autoscaled agents offline', async () => (await kq.json('agents', '--all')).filter((a: any) => a.slurm).every((a: any) => a.state === 'offline'), 30_000);
    await waitFor('no job processes', () => slurm.jobProcesses().length === 0, 30_000);
    const log = kq.log();
    expect(log).toMatch(/slurm autoscale: submitted Slurm job \d+/);
    expect(log).toMatch(/slurm autoscale: cancelled \d+_\d+.*idle/);
    // squeue may still list the cancelled jobs for a moment: the status catches up on its next look.
    await waitFor('the autoscaler status to show 0 agent jobs',
      async () => /Slurm autoscale: 0 agent job\(s\); min 0, max 3, idle 2s/.test((await kq.ctl('agents')).stdout), 30_000, 500);
  }, 240_000);

  it('finds its agent jobs again after kq dies (no second submission) and releases them on a clean stop', async () => {
    const slurm = await cluster({ nodes: 1, cpus: 4 });
    const kq = await startKq(slurm, ['--slurm-autoscale', 'max=2,idle=1h']);
    const id = await kq.submit('--frames', '1-2', '--chunk', '1', '--', 'sh', '-c', 'sleep 2; echo frame {frame}');
    await waitFor('2 autoscaled agents', async () => (await kq.agents()).filter((a) => a.slurm && a.state !== 'offline').length === 2, 60_000, 200);
    const before = (await slurm.queue()).map((q) => q.id).sort();
    expect(before).toHaveLength(2);
    await kq.kill9();
    await kq.start();
    expect((await kq.waitJob(id, 120_000)).state).toBe('Completed');
    // The same two agents came back to the new kq; more work reuses them instead of submitting again.
    const id2 = await kq.submit('--frames', '1-2', '--chunk', '1', '--', 'sh', '-c', 'echo again {frame}');
    expect((await kq.waitJob(id2, 60_000)).state).toBe('Completed');
    expect((await slurm.queue()).map((q) => q.id).sort()).toEqual(before);
    const log = kq.log();
    expect(log.match(/slurm autoscale: submitted Slurm job/g)).toHaveLength(1);
    await kq.stop();
    expect(kq.log()).toMatch(/kq stops: cancelled its agent jobs/);
    await waitFor('the queue empty', async () => (await slurm.queue()).length === 0, 60_000, 200);
  }, 240_000);

  it('a Slurm that refuses (bad partition) is reported once in kq.log and kqctl agents; kq keeps working with its own agents', async () => {
    const slurm = await cluster({ nodes: 1, cpus: 2 });
    const kq = await Kq.start({ numAgents: 1, args: ['--slurm-autoscale', 'max=2,partition=nosuchpart'], env: slurm.env });
    kqs.push(kq);
    const id = await kq.submit('--frames', '1-4', '--chunk', '1', '--', 'sh', '-c', 'sleep 3; echo frame {frame}');
    await waitFor('the refusal in kq.log', () => /slurm autoscale: sbatch refused the agent job: .*invalid partition/i.test(kq.log()), 30_000).catch((e) => { throw new Error(e.message + kq.log()); });
    const agents = await kq.ctl('agents');
    expect(agents.exitCode).toBe(0);
    expect(agents.stderr).toMatch(/Slurm autoscale FAILING since .*: sbatch refused the agent job: .*invalid partition/i);
    // The page polls the same status.
    const status = await (await fetch(`${kq.info.httpUrl!.replace(/\/$/, '')}/api/slurm`)).json();
    expect(status.error).toMatch(/invalid partition/i);
    expect(status.max).toBe(2);
    expect((await kq.waitJob(id, 60_000)).state).toBe('Completed');
    expect(kq.log().split('\n').filter((l) => /sbatch refused/.test(l))).toHaveLength(1); // reported once
    expect(await slurm.queue()).toEqual([]);
  }, 120_000);

  it('rejects a bad --slurm-autoscale spec with a usage error', async () => {
    const { execa: run } = await import('execa');
    const r = await run(process.execPath, [BIN.kq, '--data-root', tempDir(), '--slurm-autoscale', 'max=2,min=3'], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/min=3 is more than max=2/);
    const r2 = await run(process.execPath, [BIN.kq, '--data-root', tempDir(), '--slurm-autoscale', 'min=1,colour=red'], { reject: false });
    expect(r2.exitCode).toBe(2);
    expect(r2.stderr).toMatch(/unknown key "colour"/);
  });
});

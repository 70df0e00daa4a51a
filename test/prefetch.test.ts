/**
 * Prefetch: a busy agent holds the task it starts next. A held task of a stopped or paused job never runs;
 * a lost, killed or stopped agent's held task goes back to the queue with nothing counted; a kq restart
 * under a live agent keeps it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, sleep, startAgent, tempDir, waitFor } from './helpers/kq.js';

const FAST = ['--heartbeat', '250ms', '--agent-timeout', '2s'];
const kqs: Kq[] = [];
afterAll(() => cleanupAll(kqs));

async function newKq(o: ConstructorParameters<typeof Kq>[0] = {}): Promise<Kq> {
  const kq = new Kq({ ...o, args: [...FAST, ...(o.args ?? [])] });
  kqs.push(kq);
  await kq.start();
  return kq;
}

/** The agent with this id once it holds a prefetched task (behind a running one). */
async function holding(kq: Kq, agentId?: string): Promise<{ id: string; taskId: number; queuedTaskId: number }> {
  return waitFor('an agent holding a prefetched task', async () =>
    (await kq.agents()).find((a) => (agentId === undefined || a.id === agentId) && a.state === 'busy' && a.queuedTaskId !== null), 30_000);
}

/** A task that waits until `gate` exists, then writes its marker: it runs only as long as the test wants. */
function gated(dir: string): string {
  return `while [ ! -e '${dir}/go' ]; do sleep 0.05; done; touch '${dir}/ran.{frame}'`;
}

describe('prefetch', () => {
  it('a busy agent holds its next task, shown as queued on it; the job completes', async () => {
    const dir = tempDir();
    const kq = await newKq({ numAgents: 1 });
    const job = await kq.submit('--shell', '--frames', '1-3', '--', gated(dir));
    const agent = await holding(kq);
    const shown = await kq.json('show', String(job));
    const queued = shown.taskList.find((t: any) => t.id === agent.queuedTaskId);
    expect(queued.state).toBe('running');
    expect(queued.pid).toBeNull();
    expect(queued.reason).toMatch(/queued on agent .*: starts when its current task ends/);
    fs.writeFileSync(path.join(dir, 'go'), '');
    const done = await kq.waitJob(job);
    expect(done.state).toBe('Completed');
    // Each task ran once, and the one held reports when it really started, not when it was handed out.
    for (const t of done.taskList) expect([t.attempts, t.reason]).toEqual([1, null]);
    for (const f of [1, 2, 3]) expect(fs.existsSync(path.join(dir, `ran.${f}`))).toBe(true);
  });

  it('stopping a job whose task an agent holds: that task never runs, even when the running one ends first', async () => {
    const dir = tempDir();
    const kq = await newKq({ numAgents: 1 });
    // Task 1 runs (until stopped); task 2, held by the agent, would leave a marker if it ever ran.
    const job = await kq.submit('--shell', '--frames', '1-2', '--', `if [ {frame} = 1 ]; then sleep 300; else touch '${dir}/ran.{frame}'; fi`);
    await holding(kq);
    expect((await kq.ctl('stop', String(job))).exitCode).toBe(0);
    await waitFor('the agent idle again', async () => (await kq.agents())[0].state === 'idle', 30_000);
    // A few heartbeats later, still nothing ran.
    await sleep(1500);
    expect(fs.existsSync(path.join(dir, 'ran.2'))).toBe(false);
    const shown = await kq.json('show', String(job));
    expect(shown.state).toBe('Cancelled');
    expect(shown.taskList.map((t: any) => t.state)).toEqual(['cancelled', 'cancelled']);
  });

  it('stopping the job of a held task, while another job runs: the held task is dropped, the agent goes on', async () => {
    const dir = tempDir();
    const kq = await newKq({ numAgents: 1 });
    const first = await kq.submit('--shell', '--', gated(dir));
    const second = await kq.submit('--shell', '--', `touch '${dir}/second'`);
    await holding(kq);
    expect((await kq.ctl('stop', String(second))).exitCode).toBe(0);
    fs.writeFileSync(path.join(dir, 'go'), '');
    expect((await kq.waitJob(first)).state).toBe('Completed');
    await waitFor('the agent idle again', async () => (await kq.agents())[0].state === 'idle', 30_000);
    await sleep(1000);
    expect(fs.existsSync(path.join(dir, 'second'))).toBe(false);
    expect((await kq.json('show', String(second))).state).toBe('Cancelled');
  });

  it('pausing the job of a held task takes it back: it starts only once resumed', async () => {
    const dir = tempDir();
    const kq = await newKq({ numAgents: 1 });
    const first = await kq.submit('--shell', '--', gated(dir));
    const second = await kq.submit('--shell', '--', `touch '${dir}/second'`);
    await holding(kq);
    expect((await kq.ctl('pause', String(second))).exitCode).toBe(0);
    await waitFor('the held task taken back', async () => (await kq.agents())[0].queuedTaskId === null);
    fs.writeFileSync(path.join(dir, 'go'), '');
    expect((await kq.waitJob(first)).state).toBe('Completed');
    await sleep(1000);
    expect(fs.existsSync(path.join(dir, 'second'))).toBe(false);
    expect((await kq.json('show', String(second))).taskList[0].state).toBe('waiting');
    expect((await kq.ctl('resume', String(second))).exitCode).toBe(0);
    expect((await kq.waitJob(second)).state).toBe('Completed');
    expect(fs.existsSync(path.join(dir, 'second'))).toBe(true);
  });

  it('kill -9 of an agent with a running and a held task: both requeued with no failure counted, the job completes', async () => {
    const dir = tempDir();
    const kq = await newKq({ numAgents: 0 });
    const doomed = startAgent(['--agent-id', 'doomed', ...kq.agentArgs()]);
    const job = await kq.submit('--shell', '--retries', '0', '--frames', '1-2', '--', gated(dir));
    await holding(kq, 'doomed');
    process.kill(doomed.pid!, 'SIGKILL');
    await waitFor('both tasks back in the queue', async () => (await kq.json('show', String(job))).tasks.waiting === 2, 30_000);
    fs.writeFileSync(path.join(dir, 'go'), '');
    startAgent(['--agent-id', 'heir', ...kq.agentArgs()]);
    const done = await kq.waitJob(job);
    expect(done.state).toBe('Completed'); // with --retries 0 a counted failure would have failed it
    for (const t of done.taskList) expect(t.host).toBeTruthy();
    expect(fs.readFileSync(done.logFile, 'utf8')).toMatch(/agent doomed .*lost/);
  });

  it('SIGTERM hands back both the running and the held task', async () => {
    const dir = tempDir();
    const kq = await newKq({ numAgents: 0 });
    const leaving = startAgent(['--agent-id', 'leaving', ...kq.agentArgs()]);
    const job = await kq.submit('--shell', '--retries', '0', '--frames', '1-2', '--', gated(dir));
    await holding(kq, 'leaving');
    leaving.kill('SIGTERM');
    await leaving;
    const shown = await kq.json('show', String(job));
    expect(shown.tasks.waiting).toBe(2);
    expect(fs.existsSync(path.join(dir, 'ran.1')) || fs.existsSync(path.join(dir, 'ran.2'))).toBe(false);
    fs.writeFileSync(path.join(dir, 'go'), '');
    startAgent(['--agent-id', 'heir', ...kq.agentArgs()]);
    expect((await kq.waitJob(job)).state).toBe('Completed');
  });

  it('kq restarted under an agent holding a task: the agent keeps both, nothing is requeued', async () => {
    const dir = tempDir();
    const kq = await newKq({ numAgents: 0 });
    startAgent(['--agent-id', 'steady', ...kq.agentArgs()]);
    const job = await kq.submit('--shell', '--frames', '1-2', '--', gated(dir));
    const before = await holding(kq, 'steady');
    await kq.kill9();
    await kq.start();
    // The agent re-registers with both; kq keeps them as they were.
    const after = await waitFor('the agent back with both tasks', async () =>
      (await kq.agents()).find((a) => a.id === 'steady' && a.state === 'busy' && a.lastSeen > new Date(Date.now() - 1000).toISOString() && a.queuedTaskId !== null), 30_000);
    expect([after.taskId, after.queuedTaskId]).toEqual([before.taskId, before.queuedTaskId]);
    fs.writeFileSync(path.join(dir, 'go'), '');
    const done = await kq.waitJob(job);
    expect(done.state).toBe('Completed');
    for (const t of done.taskList) expect(t.attempts).toBe(1);
  });

  it('kq --no-prefetch hands work to idle agents only', async () => {
    const dir = tempDir();
    const kq = await newKq({ numAgents: 1, args: ['--no-prefetch'] });
    const job = await kq.submit('--shell', '--frames', '1-2', '--', gated(dir));
    await waitFor('the agent busy', async () => (await kq.agents())[0].state === 'busy');
    await sleep(1000);
    expect((await kq.agents())[0].queuedTaskId).toBeNull();
    fs.writeFileSync(path.join(dir, 'go'), '');
    expect((await kq.waitJob(job)).state).toBe('Completed');
  });
});

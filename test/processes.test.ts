/**
 * Processes: no render outlives its task, a stopped agent hands its task back, a job that can never be
 * spawned is refused or failed (never crashes an agent). Renders are identified by the pids their own
 * script writes (and the process group they lead), never by matching command lines machine-wide.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, isRunning, startAgent, tempDir, waitFor } from './helpers/kq.js';

const FAST = ['--heartbeat', '250ms', '--agent-timeout', '5s', '--kill-grace', '1s'];
const kqs: Kq[] = [];
const start = async (o: ConstructorParameters<typeof Kq>[0] = {}) => {
  const kq = await Kq.start({ ...o, args: [...FAST, ...(o.args ?? [])] });
  kqs.push(kq);
  return kq;
};
afterAll(() => cleanupAll(kqs));

/** Pids a render's script wrote to `file` (one a line), once it has written `count` of them. */
async function pidsWrittenTo(file: string, count: number): Promise<number[]> {
  return waitFor(`${count} pids in ${path.basename(file)}`, () => {
    const pids = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => /^\d+$/.test(l)).map(Number) : [];
    return pids.length >= count ? pids : null;
  }, 30_000);
}

/** Any process still in this process group (zombies aside)? Read from /proc: only the group we name. */
function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] !== 'Z' && Number(fields[2]) === pgid) members.push(Number(entry));
    } catch { /* gone */ }
  }
  return members;
}

describe('an agent stopped politely hands its task back', () => {
  it('SIGTERM mid-render: the render group dies, no attempt is counted, the job (--retries 1) completes', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    // Attempt 1 writes its pid and blocks; any later attempt finishes at once.
    const id = await kq.submit('--retries', '1', '--cwd', dir, '--', 'sh', '-c',
      'if [ "$KQ_ATTEMPT" = 1 ]; then sleep 60 & echo $$ >> pids; echo $! >> pids; wait; fi; echo rendered');
    const [render, child] = await pidsWrittenTo(path.join(dir, 'pids'), 2);
    const [agent] = await kq.agents();
    process.kill(agent.pid, 'SIGTERM');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.taskList[0].attempts).toBe(2);
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log).not.toMatch(/attempt 1 failed/);
    expect(log).toMatch(/attempt 2 completed/);
    expect(job.blocklist).toEqual([]);
    expect(isRunning(render!)).toBe(false);
    expect(isRunning(child!)).toBe(false);
    expect(groupMembers(render!)).toEqual([]);
  });

  it('a remote agent stopped with SIGTERM reports no failure: another agent renders the task', async () => {
    const kq = await start({ numAgents: 0 });
    const a = startAgent(['--host-name', 'first', ...kq.agentArgs()]);
    await waitFor('agent first', async () => (await kq.agents()).length === 1);
    const dir = tempDir();
    const id = await kq.submit('--retries', '1', '--cwd', dir, '--', 'sh', '-c',
      'if [ "$KQ_AGENT_HOST" = first ]; then echo $$ >> pids; sleep 60; fi; echo rendered');
    const [render] = await pidsWrittenTo(path.join(dir, 'pids'), 1);
    process.kill(a.pid!, 'SIGTERM');
    expect((await a).exitCode).toBe(0);
    expect(groupMembers(render!)).toEqual([]);
    await waitFor('task requeued', async () => (await kq.json('show', String(id))).state === 'Waiting');
    startAgent(['--host-name', 'second', ...kq.agentArgs()]);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.taskList[0].host).toBe('second');
    expect((await kq.ctl('log', String(id))).stdout).not.toMatch(/failed/);
  });
});

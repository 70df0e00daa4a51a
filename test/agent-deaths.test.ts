/**
 * A render that kills its agent (or an agent killed by the OOM killer, a machine lost) is not retried
 * forever: each death of its agent while running it counts, and after max(attempts, 3) the task fails
 * with the reason. An agent that hands its task back politely (SIGTERM, bye) is not counted. Real kq,
 * real local agents, real renders.
 */
import { describe, expect, it } from 'vitest';
import { kqStarter, waitFor } from './helpers/kq.js';

const start = kqStarter(['--heartbeat', '250ms', '--agent-timeout', '5s', '--kill-grace', '1s']);
/** The render's agent: its parent, or its parent's parent when the agent's fork helper (kq-spawn-helper) started it. */
const AGENT = `$(p=$PPID; [ "$(cat /proc/$p/comm)" = kq-spawn-helper ] && p=$(cut -d' ' -f4 /proc/$p/stat); echo $p)`;
const interruptions = (log: string) => (log.match(/^\[kq\] task 1 attempt \d+ interrupted/gm) ?? []).length;

describe('renders that kill their agent', () => {
  it('a render that kill -9s its agent fails after 3 such deaths, with the reason, whatever --retries 0 says', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', `sleep 0.3; kill -9 ${AGENT}; sleep 30`);
    const job = await kq.waitJob(id, 90_000);
    expect(job.state).toBe('Failed');
    const task = job.taskList[0];
    expect(task.state).toBe('failed');
    expect(task.reason).toMatch(/^its agent died 3 times while running it \(last: agent \S+ ended \(killed by SIGKILL\)\)$/);
    expect(task.attempts).toBe(3);
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(interruptions(log)).toBe(3);
    expect(log).toMatch(/attempt 3 interrupted: .*; failed: its agent died 3 times/);
    // A restart gives it a fresh count.
    await kq.ctl('restart', String(id));
    await waitFor('the restarted task killed its agent once', async () => interruptions((await kq.ctl('log', String(id))).stdout) >= 4, 60_000, 200);
    expect((await kq.json('show', String(id))).state).not.toBe('Failed');
    await kq.ctl('stop', String(id));
  });

  it('an agent stopped politely (SIGTERM: it hands its task back) is not counted', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', `kill -TERM ${AGENT}; sleep 30`);
    await waitFor('the task handed back 4 times', async () => interruptions((await kq.ctl('log', String(id))).stdout) >= 4, 90_000, 200);
    const job = await kq.json('show', String(id));
    expect(job.state).not.toBe('Failed');
    expect(job.taskList[0].state).not.toBe('failed');
    await kq.ctl('stop', String(id));
  });
});

/**
 * Retries that retry: `--retries N` means N more tries, and a host is only struck for a job while another
 * host could take the work, so a one-machine farm never blocklists itself out of a job. Real kq and agents.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startAgent, tempDir, waitFor, kqStarter } from './helpers/kq.js';

const start = kqStarter(['--heartbeat', '250ms']);

/** Each frame fails on its first run and succeeds on its second. */
const flaky = (dir: string, frames: string) => ['--frames', frames, '--cwd', dir, '--', 'sh', '-c',
  'if [ -e seen.{frame} ]; then echo {frame} >> done; else touch seen.{frame}; echo "first try of {frame} fails" >&2; exit 1; fi'];

describe('retries', () => {
  it('on a one-host farm, frames that each fail once then succeed complete; the host is never blocklisted', async () => {
    const kq = await start({ numAgents: 2 });
    const dir = tempDir();
    const id = await kq.submit(...flaky(dir, '1-8'));
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.blocklist).toEqual([]);
    const done = fs.readFileSync(path.join(dir, 'done'), 'utf8').trim().split('\n').map(Number).sort((a, b) => a - b);
    expect(done).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log).not.toMatch(/blocklisted/);
    expect(log.match(/failed: exit code 1 \(will retry\)/g)).toHaveLength(8);
  });

  it('--retries 0 runs a task once; the log says no retry follows, and why', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const r = await kq.ctl('submit', '--retries', '0', ...flaky(dir, '1'));
    expect(r.exitCode).toBe(0);
    const job = await kq.waitJob(Number(r.stdout.trim()));
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].attempts).toBe(1);
    expect((await kq.ctl('log', String(job.id))).stdout).toMatch(/failed: exit code 1 \(no retry: --retries 0\)/);
  });

  it('--retries 2 means three runs in all', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--retries', '2', '--', 'false');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].attempts).toBe(3);
    expect((await kq.ctl('log', String(id))).stdout).toMatch(/\(no retry: failed 3 times, --retries 2\)/);
  });

  it('with a second host up, a host that keeps failing a job is struck and blocklisted, and the job completes elsewhere', async () => {
    const kq = await start({ numAgents: 0, args: ['--blocklist-after', '2'] });
    const dir = tempDir();
    startAgent(['--host-name', 'good', ...kq.agentArgs()]);
    startAgent(['--host-name', 'bad', ...kq.agentArgs()]);
    await waitFor('two hosts', async () => (await kq.agents()).filter((a) => a.state === 'idle').length === 2);
    const id = await kq.submit('--frames', '1-6', '--cwd', dir, '--retries', '5', '--', 'sh', '-c', 'test "$KQ_AGENT_HOST" = good && echo {frame} >> done');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.blocklist).toEqual(['bad']);
  });
});

/**
 * kq's lifecycle under stress: a start that fails, a full disk, a huge job. Real kq, agents and kqctl;
 * a real tmpfs for the full disk; the job table read straight from kq.db while kq is down.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, isRunning, tempDir, waitFor } from './helpers/kq.js';

const FAST = ['--heartbeat', '250ms', '--agent-timeout', '2s', '--kill-grace', '1s'];
const kqs: Kq[] = [];
const start = async (o: ConstructorParameters<typeof Kq>[0] = {}) => {
  const kq = new Kq({ ...o, args: [...FAST, ...(o.args ?? [])] });
  kqs.push(kq);
  await kq.start();
  return kq;
};
afterAll(() => cleanupAll(kqs));

/** Tasks as the job table holds them, read while kq is down (read-only: kq is the only writer). */
function tasksInTable(dataRoot: string, jobId: number): Array<{ id: number; state: string; pid: number | null; attempts: number }> {
  const db = new Database(path.join(dataRoot, 'kq.db'), { readonly: true });
  try {
    return db.prepare('SELECT id, state, pid, attempts FROM tasks WHERE job_id = ? ORDER BY seq').all(jobId) as any[];
  } finally {
    db.close();
  }
}

/** A TCP listener on a port kq wants; peers that connect are dropped at once. */
async function occupy(port: number): Promise<net.Server> {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return server;
}

describe('a start that fails', () => {
  it('leaves the renders and the table of the kq before it alone; the next good start adopts them', async () => {
    const kq = await start();
    const dir = tempDir();
    // Each render waits for a file the test creates: they run until the test lets them finish.
    const id = await kq.submit('--frames', '1-2', '--cwd', dir, '--', 'sh', '-c', 'while [ ! -f go ]; do sleep 0.1; done; echo {frame} >> results');
    const running = await waitFor('both renders started', async () => {
      const tasks = (await kq.json('show', String(id))).taskList as Array<{ state: string; pid: number | null }>;
      return tasks.every((t) => t.state === 'running' && t.pid) ? tasks : null;
    }, 30_000);
    const renderPids = running.map((t) => t.pid!);

    await kq.kill9();
    const port = await occupy(kq.info.requestPort);
    try {
      const failed = await kq.start().then(() => null, (err: Error) => err);
      expect(failed?.message).toMatch(/cannot bind the request port/);
    } finally {
      await new Promise((r) => port.close(r));
    }
    for (const pid of renderPids) expect(isRunning(pid)).toBe(true);
    expect(tasksInTable(kq.dataRoot, id).map((t) => [t.state, t.pid])).toEqual(renderPids.map((pid) => ['running', pid]));

    await kq.start();
    fs.writeFileSync(path.join(dir, 'go'), '');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    // Adopted, not rerun: one attempt each, each frame written once.
    expect(job.taskList.map((t: { attempts: number }) => t.attempts)).toEqual([1, 1]);
    expect(fs.readFileSync(path.join(dir, 'results'), 'utf8').trim().split('\n').sort()).toEqual(['1', '2']);
  });
});

describe('a huge job', () => {
  /** Rows of a job in the task table, read after kq stopped: count, distinct seqs, frames. */
  function taskRows(dataRoot: string, jobId: number) {
    const db = new Database(path.join(dataRoot, 'kq.db'), { readonly: true });
    try {
      return db.prepare('SELECT count(*) AS n, count(DISTINCT seq) AS seqs, max(seq) AS last, sum(n_frames) AS frames FROM tasks WHERE job_id = ?').get(jobId);
    } finally {
      db.close();
    }
  }

  it('a 1,000,000-frame submit is answered, no agent is blamed for kq\'s work, every task goes in once even across a kill -9', async () => {
    const kq = await start();
    const agentPids = (await kq.agents()).map((a) => a.pid).sort();
    const t0 = Date.now();
    const r = await kq.ctl('submit', '--frames', '1-1000000', '--', 'true');
    console.log(`submit of 1,000,000 frames answered in ${Date.now() - t0} ms`);
    expect(r.exitCode, r.stderr).toBe(0);
    const id = Number(r.stdout.trim());
    expect(id).toBeGreaterThan(0);
    const job = await kq.json('show', String(id));
    expect(job.framesTotal).toBe(1_000_000);
    expect(Object.values(job.tasks as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(1_000_000);
    // The agents work through the job meanwhile, and none was declared lost and replaced.
    await waitFor('frames done', async () => (await kq.json('show', String(id))).framesDone >= 20, 60_000, 250);
    expect((await kq.agents()).filter((a) => a.state !== 'offline').map((a) => a.pid).sort()).toEqual(agentPids);
    expect(kq.log()).not.toMatch(/agent lost/);

    // kq dies while the tasks are still going in; the next kq inserts the rest, none twice.
    await kq.kill9();
    await kq.start();
    await waitFor('all tasks queued', () => kq.log().includes('all tasks of the job queued'), 120_000, 250);
    const t1 = Date.now();
    const stop = await kq.ctl('stop', String(id));
    console.log(`stop of 1,000,000 tasks answered in ${Date.now() - t1} ms`);
    expect(stop.exitCode, stop.stderr).toBe(0);
    expect((await kq.json('show', String(id))).state).toBe('Cancelled');
    // The agents kq started are the ones it had before: none was declared lost and replaced.
    expect((await kq.agents()).filter((a) => a.state !== 'offline').map((a) => a.pid).sort()).toEqual(agentPids);
    expect(kq.log()).not.toMatch(/agent lost/);
    expect(await kq.stop()).toBe(0);
    expect(taskRows(kq.dataRoot, id)).toEqual({ n: 1_000_000, seqs: 1_000_000, last: 999_999, frames: 1_000_000 });
  });
});

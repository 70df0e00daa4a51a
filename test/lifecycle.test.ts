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

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
import { launchBrowser, openPage } from './helpers/browser.js';
import { Tmpfs } from './helpers/tmpfs.js';

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

describe('kq\'s own stall', () => {
  it('is not held against its agents: kq frozen (SIGSTOP) past the agent timeout loses no agent', async () => {
    const kq = await start();
    const agentPids = (await kq.agents()).map((a) => a.pid).sort();
    process.kill(kq.proc!.pid!, 'SIGSTOP'); // the agents keep heartbeating; nobody reads them for 5 s (timeout 2 s)
    try {
      await new Promise((r) => setTimeout(r, 5000));
    } finally {
      process.kill(kq.proc!.pid!, 'SIGCONT');
    }
    const id = await kq.submit('--frames', '1-4', '--', 'true');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    expect((await kq.agents()).filter((a) => a.state !== 'offline').map((a) => a.pid).sort()).toEqual(agentPids);
    expect(kq.log()).not.toMatch(/agent lost/);
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

  it('a 1,000,000-frame submit, stop and restart are answered at once, no agent is blamed for kq\'s work, every task goes in once even across a kill -9', { timeout: 400_000 }, async () => {
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
    await waitFor('all tasks queued', () => kq.log().includes('background work on the job done'), 120_000, 250);
    const timed = async (what: string, ...args: string[]) => {
      const t = Date.now();
      const r = await kq.ctl(...args);
      console.log(`${what} of 1,000,000 tasks answered in ${Date.now() - t} ms`);
      expect(r.exitCode, r.stderr).toBe(0);
    };
    // Stop, restart, stop: each answered at once with the job's new state; the rows follow in batches.
    await timed('stop', 'stop', String(id));
    expect((await kq.json('show', String(id))).state).toBe('Cancelled');
    await timed('restart', 'restart', String(id));
    expect(['Waiting', 'Running']).toContain((await kq.json('show', String(id))).state);
    await timed('stop', 'stop', String(id));
    const stopped = await kq.json('show', String(id));
    expect(stopped.state).toBe('Cancelled');
    // The agents kq started are the ones it had before: none was declared lost and replaced.
    expect((await kq.agents()).filter((a) => a.state !== 'offline').map((a) => a.pid).sort()).toEqual(agentPids);
    expect(kq.log()).not.toMatch(/agent lost/);
    // SIGTERM while the rows may still be changing: the next kq finishes the job's stop.
    expect(await kq.stop()).toBe(0);
    const pending = () => {
      const db = new Database(path.join(kq.dataRoot, 'kq.db'), { readonly: true });
      try {
        return (db.prepare('SELECT bulk_change FROM jobs WHERE id = ?').get(id) as { bulk_change: string | null }).bulk_change;
      } finally {
        db.close();
      }
    };
    if (pending() !== null) {
      const doneLines = () => kq.log().split('background work on the job done').length - 1;
      const before = doneLines();
      await kq.start();
      await waitFor('the stop applied to every row', () => doneLines() > before, 120_000, 250);
      expect(await kq.stop()).toBe(0);
    }
    expect(pending()).toBeNull();
    expect(taskRows(kq.dataRoot, id)).toEqual({ n: 1_000_000, seqs: 1_000_000, last: 999_999, frames: 1_000_000 });
    // The rows say what the job's counts said.
    const db = new Database(path.join(kq.dataRoot, 'kq.db'), { readonly: true });
    const byState = Object.fromEntries((db.prepare('SELECT state, count(*) AS n FROM tasks WHERE job_id = ? GROUP BY state').all(id) as Array<{ state: string; n: number }>).map((r) => [r.state, r.n]));
    db.close();
    expect(byState).toEqual(Object.fromEntries(Object.entries(stopped.tasks as Record<string, number>).filter(([, n]) => n > 0)));
  });
});

describe('effects after a commit', () => {
  it('a job log that cannot be written does not turn a committed submit into an error, nor keep its job from running', async () => {
    const kq = await start();
    const first = await kq.submit('--', 'true');
    await kq.waitJob(first);
    // The next job's log path is taken by a directory: every write to that log fails (EISDIR).
    fs.mkdirSync(path.join(kq.dataRoot, 'logs', `job-${first + 1}.log`));
    const r = await kq.ctl('submit', '--frames', '1-3', '--', 'true');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(Number(r.stdout.trim())).toBe(first + 1);
    const job = await kq.waitJob(first + 1);
    expect(job.state).toBe('Completed');
    expect((await kq.json('list')).length).toBe(2); // the job is there once
  });
});

describe('a full disk', () => {
  const disk = new Tmpfs('kq-tmpfs-');
  afterAll(async () => {
    await cleanupAll(kqs);
    disk.cleanup();
  });
  /** SIGTERM and the exit code, or 'hung' if kq is still there after a generous while. */
  const stopWithin = (kq: Kq, ms: number) => Promise.race([kq.stop(), new Promise<string>((r) => setTimeout(() => r('hung'), ms))]);

  it('kq keeps answering, fails the chatty task with a clear reason, says the disk is full, resumes when there is room, and stops on SIGTERM', { timeout: 300_000 }, async () => {
    disk.mount('16m');
    const kq = await start({ dataRoot: path.join(disk.dir, 'data') });
    const RESERVE = 4 * 1024 * 1024; // what kq keeps free for its table and log (src/kq/disk.ts)
    disk.fill(RESERVE + 2 * 1024 * 1024);

    // A job that writes without end: kq stops it short of its reserve and fails it, without retry.
    const chatty = await kq.submit('--name', 'chatty', '--', 'sh', '-c', 'while :; do echo "chatter chatter chatter chatter chatter chatter"; done');
    const failed = await kq.waitJob(chatty, 120_000);
    expect(failed.state).toBe('Failed');
    console.log(`chatty task: ${failed.taskList[0].reason}`);
    expect(failed.taskList[0].reason).toMatch(/disk full/);
    expect(failed.taskList[0].attempts).toBe(1);
    const agents = await kq.ctl('agents');
    expect(agents.exitCode, agents.stderr).toBe(0);
    console.log(agents.stderr.trim());
    expect(agents.stderr).toMatch(/disk is full/);
    const info = await (await fetch(`http://127.0.0.1:${kq.info.httpPort}/api/info`)).json() as { disk: { full: boolean; reason: string } };
    expect(info.disk.full).toBe(true);
    const browser = await launchBrowser();
    try {
      const { page } = await openPage(browser, `http://127.0.0.1:${kq.info.httpPort}/`);
      await page.waitForFunction(() => !document.getElementById('banner')!.hidden && document.getElementById('banner')!.textContent!.includes('disk is full'), undefined, { timeout: 20_000 });

      // Room again: kq resumes by itself, and the page says so.
      disk.unfill();
      await page.waitForFunction(() => document.getElementById('banner')!.hidden, undefined, { timeout: 30_000 });
      disk.fill(RESERVE + 2 * 1024 * 1024);
    } finally {
      await browser.close();
    }

    // Truly full: kq's own log and its table cannot grow. It still answers, clearly.
    disk.fill(0);
    const list = await kq.ctl('list');
    expect(list.exitCode, list.stderr).toBe(0);
    const during = await kq.ctl('submit', '--frames', '1-2', '--', 'true');
    if (during.exitCode !== 0) expect(during.stderr).toMatch(/disk is full/);

    // Room again: kq resumes by itself; new work runs.
    disk.unfill();
    await waitFor('kq to resume', async () => !(await kq.ctl('agents')).stderr.includes('disk is full'), 30_000, 250);
    const after = await kq.submit('--frames', '1-3', '--', 'sh', '-c', 'echo frame {frame}');
    expect((await kq.waitJob(after)).state).toBe('Completed');
    if (during.exitCode === 0) expect((await kq.waitJob(Number(during.stdout.trim()))).state).toBe('Completed');

    // Full again, SIGTERM: kq exits cleanly instead of hanging on its log.
    disk.fill(0);
    expect(await stopWithin(kq, 30_000)).toBe(0);
    disk.unfill();

    // The table is intact: the next kq has every job, and does not run the chatty one again.
    await kq.start();
    const jobs = await kq.json('list') as Array<{ id: number; state: string }>;
    expect(jobs.find((j) => j.id === chatty)?.state).toBe('Failed');
    expect(jobs.find((j) => j.id === after)?.state).toBe('Completed');
    const last = await kq.submit('--', 'true');
    expect((await kq.waitJob(last)).state).toBe('Completed');
    expect((await kq.json('show', String(chatty))).taskList[0].attempts).toBe(1);
  });
});

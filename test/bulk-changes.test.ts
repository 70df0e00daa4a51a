/**
 * Big jobs change in batches (store.continueJob): the job's counts say the result at once, the task rows
 * follow. Whatever order submits, stops and restarts come in, once the batches are done the rows agree
 * with the counts. And the silence check's DeafTime. Pure logic on an in-memory store.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Store, TASK_BATCH } from '../src/kq/store.js';
import { prepareJob } from '../src/kq/submit.js';
import { DeafTime } from '../src/kq/deaf-time.js';

let store: Store;
beforeEach(() => { store = new Store(':memory:', { blocklistAfter: 3 }, (id) => `/nonexistent/job-${id}.log`); });
afterEach(() => store.close());

const FRAMES = 2 * TASK_BATCH + 123;
const submit = () => store.submitJob(prepareJob({ argv: ['true'], frames: `1-${FRAMES}`, cwd: '/tmp' } as never));
/** Run the batches until none is left; returns how many transactions that took. */
const finishBatches = (jobId: number) => { let n = 1; while (store.continueJob(jobId)) n++; return n; };
function rows(jobId: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of store.db.prepare('SELECT state, count(*) AS n FROM tasks WHERE job_id = ? GROUP BY state').all(jobId) as Array<{ state: string; n: number }>) out[r.state] = r.n;
  return out;
}
const counts = (jobId: number) => Object.fromEntries(Object.entries(store.listJobs(undefined, [jobId])[0]!.tasks).filter(([, n]) => n > 0));

describe('bulk changes of a big job', () => {
  it('inserts the rest in batches; the counts say every task from the start', () => {
    const job = submit();
    expect(job.tasks.waiting).toBe(FRAMES);
    expect(job.tasksUnqueued).toBe(FRAMES - TASK_BATCH);
    expect(finishBatches(job.id)).toBe(2);
    expect(rows(job.id)).toEqual({ waiting: FRAMES });
    expect(store.holdsDispatch()).toBe(false);
  });

  it('stop, restart --failed-only, restart and stop, each before the last was applied, end with rows that match the counts', () => {
    const { id } = submit();
    store.stopJobs([id]); // while still inserting
    expect(store.jobRow(id)!.state).toBe('Cancelled');
    expect(store.holdsDispatch()).toBe(true);
    store.continueJob(id);
    store.restartJobs([id], true);
    expect(store.jobRow(id)!.state).toBe('Waiting');
    store.continueJob(id);
    store.stopJobs([id]);
    store.continueJob(id);
    store.restartJobs([id], false);
    finishBatches(id);
    expect(store.holdsDispatch()).toBe(false);
    expect(rows(id)).toEqual({ waiting: FRAMES });
    expect(counts(id)).toEqual({ waiting: FRAMES });
    store.stopJobs([id]);
    finishBatches(id);
    expect(rows(id)).toEqual({ cancelled: FRAMES });
    expect(counts(id)).toEqual({ cancelled: FRAMES });
  });

  it('a restart keeps completed tasks with --failed-only and puts them back without it', () => {
    const { id } = submit();
    finishBatches(id);
    store.db.prepare(`UPDATE tasks SET state = 'completed' WHERE job_id = ? AND seq < 7000`).run(id);
    store.db.prepare(`UPDATE tasks SET state = 'failed' WHERE job_id = ? AND seq >= 7000`).run(id);
    store.db.prepare(`UPDATE jobs SET n_waiting = 0, n_completed = 7000, n_failed = ?, frames_done = 7000 WHERE id = ?`).run(FRAMES - 7000, id);
    store.restartJobs([id], true);
    finishBatches(id);
    expect(rows(id)).toEqual({ completed: 7000, waiting: FRAMES - 7000 });
    expect(counts(id)).toEqual({ completed: 7000, waiting: FRAMES - 7000 });
    store.stopJobs([id]);
    store.restartJobs([id], false); // composed with the pending stop
    finishBatches(id);
    expect(rows(id)).toEqual({ waiting: FRAMES });
    expect(counts(id)).toEqual({ waiting: FRAMES });
    expect(store.jobRow(id)!.frames_done).toBe(0);
  });

  it('a new Store on the same table (kq restarted midway) resumes the batches, and a pending stop holds its dispatch', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kq-bulk-'));
    const file = path.join(dir, 'kq.db');
    const first = new Store(file, { blocklistAfter: 3 }, () => '');
    const { id } = first.submitJob(prepareJob({ argv: ['true'], frames: `1-${FRAMES}`, cwd: '/tmp' } as never));
    first.stopJobs([id]);
    first.close(); // as if kq died here
    const next = new Store(file, { blocklistAfter: 3 }, () => '');
    try {
      expect(next.jobsInProgress()).toEqual([id]);
      expect(next.holdsDispatch()).toBe(true);
      while (next.continueJob(id));
      expect(next.holdsDispatch()).toBe(false);
      expect(next.jobsInProgress()).toEqual([]);
      const byState = next.db.prepare('SELECT state, count(*) AS n FROM tasks WHERE job_id = ? GROUP BY state').all(id);
      expect(byState).toEqual([{ state: 'cancelled', n: FRAMES }]);
    } finally {
      next.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('removing a big job', () => {
  it('hides it at once, deletes its rows in batches (resumed after a crash), and hands none of them out meanwhile', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kq-remove-'));
    const file = path.join(dir, 'kq.db');
    const first = new Store(file, { blocklistAfter: 3 }, () => '');
    const { id } = first.submitJob(prepareJob({ argv: ['true'], frames: `1-${FRAMES}`, cwd: '/tmp' } as never));
    const kept = first.submitJob(prepareJob({ argv: ['true'], frames: '1-3', cwd: '/tmp' } as never));
    while (first.continueJob(id));
    first.stopJobs([id]); // its stop still pending: most rows still say waiting
    const taskRows = (s: Store) => (s.db.prepare('SELECT count(*) AS n FROM tasks WHERE job_id = ?').get(id) as { n: number }).n;
    expect(first.removeJobs([id])).toEqual([id]);
    // Gone from every answer at once, though its rows are still there: one short transaction did that.
    expect(first.jobRow(id)).toBeUndefined();
    expect(first.showJob(id)).toBeNull();
    expect(first.listJobs().map((j) => j.id)).toEqual([kept.id]);
    expect(first.listJobs(undefined, [id])).toEqual([]);
    expect(first.endedJobs(['Cancelled'], new Date(Date.now() + 60_000).toISOString())).toEqual([]);
    expect(taskRows(first)).toBeGreaterThan(TASK_BATCH);
    // Its waiting rows are never handed out: dispatch waits until they are gone.
    expect(first.holdsDispatch()).toBe(true);
    expect(first.jobsInProgress()).toEqual([id]);
    const before = taskRows(first);
    expect(first.continueJob(id)).toBe(true);
    expect(before - taskRows(first)).toBe(TASK_BATCH);
    first.close(); // as if kq died here
    const next = new Store(file, { blocklistAfter: 3 }, () => '');
    try {
      expect(next.jobRow(id)).toBeUndefined();
      expect(next.jobsInProgress()).toEqual([id]);
      expect(next.holdsDispatch()).toBe(true);
      let batches = 1;
      while (next.continueJob(id)) batches++;
      expect(batches).toBeGreaterThanOrEqual(2);
      expect(taskRows(next)).toBe(0);
      expect(next.db.prepare('SELECT count(*) AS n FROM jobs WHERE id = ?').get(id)).toEqual({ n: 0 });
      expect(next.holdsDispatch()).toBe(false);
      expect(next.jobsInProgress()).toEqual([]);
      expect(next.listJobs().map((j) => j.id)).toEqual([kept.id]);
    } finally {
      next.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('DeafTime', () => {
  it('counts an agent\'s silence only in the time kq was listening', () => {
    const deaf = new DeafTime();
    expect(deaf.silentBefore(100_000, 10_000)).toBe(90_000);
    deaf.add(80_000, 99_000); // kq blocked for 19 s, just ended
    // 10 s of listening back from 100 s: 1 s after the stall, 9 s before it.
    expect(deaf.silentBefore(100_000, 10_000)).toBe(71_000);
    deaf.add(50_000, 60_000);
    expect(deaf.silentBefore(100_000, 10_000)).toBe(71_000);
    expect(deaf.silentBefore(100_000, 30_000)).toBe(41_000); // 1 s + 20 s between the stalls + 9 s before
    // Long after, the stall no longer matters.
    expect(deaf.silentBefore(200_000, 10_000)).toBe(190_000);
  });
});

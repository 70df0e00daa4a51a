/**
 * Group commit (UpdateHandler.handleGroup): updates already queued share one write transaction, and what
 * other processes see of them waits for its commit. Real kq and agents; a real tmpfs whose space runs out so
 * that a group's commit truly fails (SQLITE_FULL). (kq killed -9 while updates come in groups:
 * test/crash-once.test.ts.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, tempDir, waitFor } from './helpers/kq.js';
import { Tmpfs } from './helpers/tmpfs.js';

const kqs: Kq[] = [];
const disk = new Tmpfs('kq-group-commit-tmpfs-');
afterAll(async () => {
  await cleanupAll(kqs);
  disk.cleanup();
});

describe('group commit', () => {
  it("a job's log ends with its ending, even when its last tasks finish in one group", { timeout: 180_000 }, async () => {
    // Four agents, four tasks per job, all finishing at once: their `finished` come in groups, and the job
    // ends inside one. Its ending line must come after every task line of that group (read at the moment the
    // job ended, not when the group committed).
    const kq = new Kq({ numAgents: 4, args: ['--heartbeat', '250ms', '--no-prefetch'] });
    kqs.push(kq);
    await kq.start();
    const dir = tempDir('kq-group-commit-order-');
    const jobs: number[] = [];
    for (let round = 0; round < 4; round++) {
      const go = path.join(dir, `go${round}`);
      const id = await kq.submit('--frames', '1-4', '--', 'sh', '-c', `while [ ! -e ${go} ]; do sleep 0.02; done`);
      await waitFor('all four running', async () => (await kq.json('show', String(id))).taskList.every((t: { pid: number | null }) => t.pid), 60_000, 50);
      fs.writeFileSync(go, '');
      await kq.waitJob(id, 60_000);
      jobs.push(id);
    }
    for (const id of jobs) {
      const lines = ((await kq.json('log', String(id))).text as string).trim().split('\n');
      expect(lines.at(-1), lines.slice(-6).join('\n')).toMatch(/^\[kq\] job Completed/);
    }
    expect(await kq.stop()).toBe(0);
  });

  it('a group whose commit fails sends no assignment for the task it claimed: nothing runs meanwhile, and every task runs once', { timeout: 180_000 }, async () => {
    disk.mount('16m');
    // One agent, no prefetch: the second task is claimed in the same group as the first one's `finished`.
    const kq = new Kq({ dataRoot: path.join(disk.dir, 'data'), numAgents: 1, args: ['--heartbeat', '250ms', '--agent-timeout', '10s', '--no-prefetch'] });
    kqs.push(kq);
    await kq.start();
    const out = tempDir('kq-group-commit-out-'); // on another disk: what ran is recorded whatever kq's disk says
    const ran = path.join(out, 'ran');
    const go = path.join(out, 'go');
    // Task 1 waits for the test's go, then says one line: its log update and its `finished` come together, a
    // group (alone, a `finished` would fail by itself, with no claim to hold). Each task records that it ran.
    const job = await kq.submit('--frames', '1-2', '--', 'sh', '-c', `if [ {frame} = 1 ]; then while [ ! -e ${go} ]; do sleep 0.05; done; echo bye {frame}; fi; echo {frame} >> ${ran}`);
    await waitFor('task 1 started (its pid recorded)', async () => (await kq.json('show', String(job))).taskList[0].pid > 0, 30_000, 100);

    // kq's disk is full: the group holding task 1's `finished` and the claim of task 2 cannot commit.
    disk.fill();
    fs.writeFileSync(go, '');
    await waitFor('kq to say its disk is full', async () => (await kq.ctl('agents')).stderr.includes('disk is full'), 60_000, 100);
    await waitFor('task 1 to end', () => fs.existsSync(ran), 30_000, 50);
    // Had the assignment gone out before the commit, the agent would run task 2 within moments.
    await new Promise((r) => setTimeout(r, 3000));
    expect(fs.readFileSync(ran, 'utf8')).toBe('1\n');
    const during = await kq.json('show', String(job));
    expect(during.taskList.map((t: { state: string }) => t.state)).toEqual(['running', 'waiting']); // nothing of the group was kept

    // Room again: the agent's heartbeat brings task 1's outcome back; task 2 runs, once.
    disk.unfill();
    const done = await kq.waitJob(job, 60_000);
    expect(done.state).toBe('Completed');
    expect(done.taskList.map((t: { attempts: number }) => t.attempts)).toEqual([1, 1]);
    expect(fs.readFileSync(ran, 'utf8')).toBe('1\n2\n');
    expect(await kq.stop()).toBe(0);
    fs.rmSync(out, { recursive: true, force: true });
  });
});

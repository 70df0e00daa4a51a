/**
 * Processes: no render outlives its task, a stopped agent hands its task back, a job that can never be
 * spawned is refused or failed (never crashes an agent). Renders are identified by the pids their own
 * script writes (and the process group they lead), never by matching command lines machine-wide.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isRunning, startAgent, tempDir, waitFor, kqStarter } from './helpers/kq.js';

const FAST = ['--heartbeat', '250ms', '--agent-timeout', '5s', '--kill-grace', '1s'];
const start = kqStarter(FAST);
/** An agent that starts renders with Node's spawn, so that only its render guard can end them once it is dead. */
const GUARD_ONLY = { KQ_AGENT_NODE_SPAWN: '1' };

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

/**
 * A render that leaves a child ignoring SIGTERM behind it, each writing its pid to `pids` in its cwd.
 * With `wait` the leader waits for it; without, the leader exits 0 at once.
 */
function stubbornRender(dir: string, leaderWaits: boolean): string[] {
  fs.writeFileSync(path.join(dir, 'render.sh'), [
    'echo $$ >> pids',
    `sh -c 'trap "" TERM; echo $$ >> pids; exec sleep 60' &`,
    leaderWaits ? 'wait' : 'while [ $(wc -l < pids) -lt 2 ]; do sleep 0.05; done',
    '',
  ].join('\n'));
  return ['--cwd', dir, '--', 'sh', 'render.sh'];
}

describe('no render outlives its task', () => {
  it('stop: a child that ignores SIGTERM is killed after the grace period, with the whole group', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const id = await kq.submit(...stubbornRender(dir, true));
    const [leader, child] = await pidsWrittenTo(path.join(dir, 'pids'), 2);
    expect(groupMembers(leader!)).toContain(child);
    expect((await kq.ctl('stop', String(id))).exitCode).toBe(0);
    await waitFor('the render group gone', () => groupMembers(leader!).length === 0, 30_000);
    expect(isRunning(child!)).toBe(false);
    // The agent is free again only once its render is gone.
    const next = await kq.submit('--', 'true');
    expect((await kq.waitJob(next)).state).toBe('Completed');
  });

  it('timeout: the task fails as timed out and its TERM-ignoring child is gone too', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const id = await kq.submit('--timeout', '1s', '--retries', '0', ...stubbornRender(dir, true));
    const [leader, child] = await pidsWrittenTo(path.join(dir, 'pids'), 2);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].reason).toBe('timed out after 1s');
    // The outcome is reported once the group is gone.
    expect(groupMembers(leader!)).toEqual([]);
    expect(isRunning(child!)).toBe(false);
  });

  it('normal exit: background children the render left behind are killed before the task is reported', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const id = await kq.submit(...stubbornRender(dir, false));
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    const [leader, child] = await pidsWrittenTo(path.join(dir, 'pids'), 2);
    expect(groupMembers(leader!)).toEqual([]);
    expect(isRunning(child!)).toBe(false);
  });

  it('a render killed by SIGTERM is reported as killed by SIGTERM', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', 'kill -TERM $$');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Failed');
    expect((await kq.ctl('log', String(id))).stdout).toMatch(/attempt 1 failed: killed by SIGTERM/);
  });

  it('a remote agent killed with -9: its render and the render\'s children die with it', async () => {
    const kq = await start({ numAgents: 0 });
    // Node's spawn: the fork helper's end-of-file kill would also end this group; only the guard may here.
    const agent = startAgent(['--host-name', 'doomed', ...kq.agentArgs()], GUARD_ONLY);
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const dir = tempDir();
    await kq.submit(...stubbornRender(dir, true));
    const [leader, child] = await pidsWrittenTo(path.join(dir, 'pids'), 2);
    process.kill(agent.pid!, 'SIGKILL');
    await waitFor('the render group gone', () => groupMembers(leader!).length === 0, 30_000);
    expect(isRunning(child!)).toBe(false);
  });
});

/** Live processes whose parent is `pid` (read from /proc: only the process we name). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch { /* gone */ }
  for (const task of tasks) {
    let list = '';
    try {
      list = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8');
    } catch { /* gone */ }
    for (const child of list.split(/\s+/).filter((c) => c !== '').map(Number)) {
      try {
        const stat = fs.readFileSync(`/proc/${child}/stat`, 'utf8');
        if (stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z') children.push(child);
      } catch { /* gone */ }
    }
  }
  return children;
}

/** A process's name (comm), or null once it is gone. */
function commOf(pid: number): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}

/** An agent's children other than its fork helper (kq-spawn-helper), which starts its renders. */
function childrenBesidesHelper(agentPid: number): number[] {
  return childrenOf(agentPid).filter((p) => commOf(p) !== 'kq-spawn-helper');
}

/** What an agent started: its children, and the renders its fork helper (kq-spawn-helper) started. */
function startedBy(agentPid: number): number[] {
  const children = childrenOf(agentPid);
  return [...children, ...children.filter((p) => commOf(p) === 'kq-spawn-helper').flatMap(childrenOf)];
}

describe('the render guard', () => {
  it('killed itself, is replaced, and the new one still takes the renders down with a killed agent', async () => {
    const kq = await start({ numAgents: 0 });
    const agent = startAgent(['--host-name', 'guarded', ...kq.agentArgs()], GUARD_ONLY);
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const dir = tempDir();
    await kq.submit(...stubbornRender(dir, true));
    const [leader, child] = await pidsWrittenTo(path.join(dir, 'pids'), 2);
    const [guard] = childrenBesidesHelper(agent.pid!).filter((p) => p !== leader);
    expect(guard).toBeDefined();
    process.kill(guard!, 'SIGKILL');
    await waitFor('a new guard', () => childrenBesidesHelper(agent.pid!).some((p) => p !== leader && p !== guard), 30_000);
    process.kill(agent.pid!, 'SIGKILL');
    await waitFor('the render group gone', () => groupMembers(leader!).length === 0, 30_000);
    expect(isRunning(child!)).toBe(false);
  });

  it('renders forked by the helper: a leader gone, its background child left in the group, the agent killed -9: the guard ends it', async () => {
    const kq = await start({ numAgents: 0 });
    // A long kill grace: the agent is still waiting to SIGKILL the group when it dies. The helper reaped the
    // leader, so it may not kill the group (its number may be reused): only the guard ends the child.
    const agent = startAgent(['--host-name', 'leaderless', '--kill-grace', '120s', ...kq.agentArgs()]);
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const dir = tempDir();
    await kq.submit('--retries', '0', ...stubbornRender(dir, false));
    const [leader, child] = await pidsWrittenTo(path.join(dir, 'pids'), 2);
    await waitFor('the leader gone', () => !isRunning(leader!), 30_000);
    expect(groupMembers(leader!)).toEqual([child]);
    process.kill(agent.pid!, 'SIGKILL');
    await waitFor('the child gone', () => !isRunning(child!), 30_000);
  });
});

describe('an agent stopped politely hands its task back', () => {
  it('SIGTERM mid-render: the render group dies, no attempt is counted, the job (--retries 0) completes', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    // Attempt 1 writes its pid and blocks; any later attempt finishes at once.
    const id = await kq.submit('--retries', '0', '--cwd', dir, '--', 'sh', '-c',
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
    const id = await kq.submit('--retries', '0', '--cwd', dir, '--', 'sh', '-c',
      'if [ "$KQ_AGENT_HOST" = first ]; then echo $$ >> pids; sleep 60; fi; echo rendered');
    const [render] = await pidsWrittenTo(path.join(dir, 'pids'), 1);
    const children = startedBy(a.pid!); // the render's leader, the agent's render guard (and fork helper)
    expect(children).toContain(render);
    expect(children.length).toBeGreaterThanOrEqual(2);
    process.kill(a.pid!, 'SIGTERM');
    expect((await a).exitCode).toBe(0);
    expect(groupMembers(render!)).toEqual([]);
    // Nothing the agent started outlives it (its guard leaves at end of file).
    await waitFor('the agent\'s children gone', () => children.every((c) => !isRunning(c)), 10_000);
    await waitFor('task requeued', async () => (await kq.json('show', String(id))).state === 'Waiting');
    startAgent(['--host-name', 'second', ...kq.agentArgs()]);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.taskList[0].host).toBe('second');
    expect((await kq.ctl('log', String(id))).stdout).not.toMatch(/failed/);
  });
});

describe('jobs that can never be spawned', () => {
  it('are refused at submit with the reason: kqctl exits 2, HTTP answers 400, nothing is queued', async () => {
    const kq = await start({ numAgents: 1 });
    const wide = await kq.ctl('submit', '--frames', '1', '--', 'echo', '{frame:0200000}');
    expect(wide.exitCode).toBe(2);
    expect(wide.stderr).toMatch(/argument 2 is 200000 bytes after placeholders: the system refuses any one argument over 131071 bytes/);
    const bigEnv = Array.from({ length: 20 }, (_, i) => ['--env', `BIG${i}=${'x'.repeat(60_000)}`]).flat();
    const big = await kq.ctl('submit', ...bigEnv, '--', 'true');
    expect(big.exitCode).toBe(2);
    expect(big.stderr).toMatch(/command line and environment come to \d+ bytes/);
    const post = (job: unknown) => fetch(new URL('/api/jobs', kq.info.httpUrl!), {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(job),
    }).then(async (r) => ({ status: r.status, body: await r.json() as { code: string; error: string } }));
    const cases: Array<[unknown, RegExp]> = [
      [{ argv: ['echo', 'a\0b'] }, /argument 2 contains a NUL byte/],
      [{ argv: ['true'], env: { 'A\0B': 'x' } }, /environment variable name .* contains a NUL byte/],
      [{ argv: ['true'], env: { A: 'x\0y' } }, /environment variable A contains a NUL byte/],
      [{ argv: ['true'], cwd: '/tmp\0/x' }, /cwd contains a NUL byte/],
      [{ argv: ['true'], env: { 'A=B': 'x' } }, /environment variable name "A=B" is empty or contains "="/],
      [{ argv: ['true'], env: { '': 'x' } }, /environment variable name "" is empty/],
      // An --each item of 50,000 three-byte characters, appended as the last argument.
      [{ argv: ['echo'], items: ['ok', '€'.repeat(50_000)] }, /argument 2 is 150000 bytes after placeholders/],
    ];
    for (const [job, reason] of cases) {
      const r = await post(job);
      expect(r.status, JSON.stringify(job)).toBe(400);
      expect(r.body.code).toBe('bad-request');
      expect(r.body.error).toMatch(reason);
    }
    expect(await kq.json('list')).toEqual([]);
  });

  it('an agent whose spawn throws (cwd is a file; an environment too big for exec) fails the task and lives on', async () => {
    const kq = await start({ numAgents: 0 });
    // An agent with a large environment of its own: a job adding 600 KB more passes submit but not exec.
    const env = Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`AGENT_BIG${i}`, 'y'.repeat(100_000)]));
    const agent = startAgent(['--host-name', 'big-env', ...kq.agentArgs()], env);
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const file = path.join(tempDir(), 'a-file');
    fs.writeFileSync(file, '');
    const notDir = await kq.submit('--retries', '1', '--cwd', file, '--', 'true');
    const jobEnv = Array.from({ length: 10 }, (_, i) => ['--env', `JOB_BIG${i}=${'z'.repeat(60_000)}`]).flat();
    const tooBig = await kq.submit('--retries', '1', ...jobEnv, '--', 'true');
    for (const [id, reason] of [[notDir, /working directory ".*a-file" is not a directory on this host/], [tooBig, /cannot start "true": E2BIG/]] as const) {
      const job = await kq.waitJob(id);
      expect(job.state).toBe('Failed');
      expect(job.taskList[0].attempts).toBe(2);
      expect(job.taskList[0].reason).toMatch(reason);
      expect((await kq.ctl('log', String(id))).stdout).toMatch(new RegExp(`attempt 2 failed: .*${reason.source}.*\\(no retry: failed 2 times, --retries 1\\)`));
    }
    // The same agent process ran all of it and still takes work.
    expect((await kq.agents()).map((a) => a.pid)).toEqual([agent.pid]);
    const ok = await kq.submit('--', 'true');
    expect((await kq.waitJob(ok)).state).toBe('Completed');
  });
});

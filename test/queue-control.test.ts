/**
 * Queue control (issue 17): --after dependencies, pause/resume, priority, rm/clean and --keep-finished,
 * with real kq, agents and kqctl; renders are gated by files the test creates, never by sleeps.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, sleep, tempDir, waitFor } from './helpers/kq.js';

const FAST = ['--heartbeat', '250ms', '--agent-timeout', '3s'];
const kqs: Kq[] = [];
async function start(o: ConstructorParameters<typeof Kq>[0] = {}): Promise<Kq> {
  const kq = new Kq({ ...o, args: [...FAST, ...(o.args ?? [])] });
  kqs.push(kq);
  await kq.start();
  return kq;
}
afterAll(() => cleanupAll(kqs));

/** A render that runs until the file `gate` appears in dir. */
const gated = (dir: string, gate: string) => ['--cwd', dir, '--', 'sh', '-c', `while [ ! -f ${gate} ]; do sleep 0.05; done`];
const open = (dir: string, gate: string) => fs.writeFileSync(path.join(dir, gate), '');
const stateOf = async (kq: Kq, id: number) => (await kq.json('show', String(id))).state as string;
const until = (kq: Kq, id: number, state: string) => waitFor(`job ${id} ${state}`, async () => (await stateOf(kq, id)) === state, 60_000, 100);

describe('dependencies (submit --after)', () => {
  it('a chain runs in order: each job Blocked until the one before it Completed', async () => {
    const kq = await start({ numAgents: 2 });
    const dir = tempDir();
    const a = await kq.submit('--name', 'a', ...gated(dir, 'go-a'));
    const b = await kq.submit('--name', 'b', '--after', String(a), ...gated(dir, 'go-b'));
    const c = await kq.submit('--name', 'c', '--after', `${a},${b}`, '--', 'true');
    await until(kq, a, 'Running');
    // Two agents, one busy: b and c could run, but wait for their parents.
    expect(await stateOf(kq, b)).toBe('Blocked');
    expect(await stateOf(kq, c)).toBe('Blocked');
    const list = await kq.ctl('list');
    expect(list.stdout).toMatch(new RegExp(`^${b}\\s+b\\s+Blocked\\s`, 'm'));
    const shown = await kq.ctl('show', String(c));
    expect(shown.stdout).toMatch(new RegExp(`^After:\\s+${a}, ${b} \\(Blocked until they have all Completed\\)$`, 'm'));
    expect((await kq.json('show', String(c))).after).toEqual([a, b]);
    expect((await kq.json('list', '--state', 'Blocked')).map((j: any) => j.id)).toEqual([b, c]);
    open(dir, 'go-a');
    await until(kq, b, 'Running');
    expect(await stateOf(kq, c)).toBe('Blocked');
    open(dir, 'go-b');
    const done = await kq.waitJob(c);
    expect(done.state).toBe('Completed');
    const [ja, jb] = [await kq.json('show', String(a)), await kq.json('show', String(b))];
    expect(jb.taskList[0].startedAt >= ja.completedAt).toBe(true);
    expect(done.taskList[0].startedAt >= jb.completedAt).toBe(true);
    expect((await kq.ctl('log', String(b))).stdout).toContain(`[kq] job ${b} released`);
  });

  it('a failed parent cancels its dependents and theirs, with the reason; unknown ids are refused (exit 2)', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const fail = await kq.submit('--retries', '0', '--cwd', dir, '--', 'sh', '-c', 'while [ ! -f go ]; do sleep 0.05; done; exit 3');
    const ok = await kq.submit('--', 'true');
    const b = await kq.submit('--after', `${ok},${fail}`, '--', 'true');
    const c = await kq.submit('--after', String(b), '--', 'true');
    const d = await kq.submit('--after', String(ok), '--', 'true');
    expect(await stateOf(kq, b)).toBe('Blocked');
    open(dir, 'go');
    expect((await kq.waitJob(fail)).state).toBe('Failed');
    const jb = await kq.waitJob(b);
    const jc = await kq.waitJob(c);
    expect(jb.state).toBe('Cancelled');
    expect(jc.state).toBe('Cancelled');
    expect(jb.taskList[0].reason).toBe(`cancelled: job ${fail} failed (--after)`);
    expect(jc.taskList[0].reason).toBe(`cancelled: job ${b} was cancelled (--after)`);
    expect(jb.taskList[0].attempts).toBe(0); // never ran
    expect((await kq.waitJob(d)).state).toBe('Completed');
    expect((await kq.ctl('log', String(c))).stdout).toContain(`[kq] job ${c} cancelled: job ${b} was cancelled`);
    // Submitted after its parent already failed: cancelled at once, the same way.
    const late = await kq.submit('--after', String(fail), '--', 'true');
    expect((await kq.waitJob(late)).state).toBe('Cancelled');
    // Unknown or malformed ids: nothing is queued.
    const before = (await kq.json('list')).length;
    const unknown = await kq.ctl('submit', '--after', '999', '--', 'true');
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain('no job with id 999');
    const bad = await kq.ctl('submit', '--after', '1,x', '--', 'true');
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('not a job id: "x"');
    expect((await kq.json('list')).length).toBe(before);
  });

  it('restarting a failed parent puts the dependents it cancelled back to Blocked, and they run after it', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const a = await kq.submit('--retries', '0', '--cwd', dir, '--', 'sh', '-c', 'test -f fixed');
    const b = await kq.submit('--after', String(a), '--', 'true');
    const c = await kq.submit('--after', String(b), '--', 'true');
    const stopped = await kq.submit('--after', String(a), ...gated(dir, 'never'));
    expect((await kq.ctl('stop', String(stopped))).exitCode).toBe(0); // the user's own stop: stays cancelled
    expect((await kq.waitJob(c)).state).toBe('Cancelled');
    open(dir, 'fixed');
    expect((await kq.ctl('restart', String(a))).exitCode).toBe(0);
    expect((await kq.waitJob(c)).state).toBe('Completed');
    expect((await kq.json('show', String(b))).state).toBe('Completed');
    expect((await kq.json('show', String(stopped))).state).toBe('Cancelled');
    expect((await kq.ctl('log', String(b))).stdout).toContain(`waits again: job ${a}, which cancelled it, was restarted`);
  });

  it('a chain survives kq being killed in the middle', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const a = await kq.submit(...gated(dir, 'go'));
    const b = await kq.submit('--after', String(a), '--', 'true');
    const c = await kq.submit('--after', String(b), '--', 'true');
    await until(kq, a, 'Running');
    await kq.kill9();
    await kq.start();
    expect(await stateOf(kq, b)).toBe('Blocked');
    expect(await stateOf(kq, c)).toBe('Blocked');
    await kq.stop(); // and a clean stop too
    await kq.start();
    expect(await stateOf(kq, c)).toBe('Blocked');
    open(dir, 'go');
    expect((await kq.waitJob(c)).state).toBe('Completed');
    expect((await kq.json('show', String(b))).state).toBe('Completed');
  });
});

describe('pause and resume', () => {
  it('a paused queue starts nothing new, says so, stays paused across a restart, and resume releases it', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const running = await kq.submit(...gated(dir, 'go'));
    await until(kq, running, 'Running');
    const paused = await kq.ctl('pause');
    expect(paused.exitCode).toBe(0);
    expect(paused.stdout).toContain('queue paused');
    const waiting = await kq.submit('--', 'true');
    open(dir, 'go');
    expect((await kq.waitJob(running)).state).toBe('Completed'); // running renders go on
    const list = await kq.ctl('list');
    expect(list.stderr).toContain('the queue is paused');
    expect((await kq.ctl('agents')).stderr).toContain('the queue is paused');
    // The agent is idle and heartbeats several times: still nothing is handed out.
    await waitFor('the agent idle', async () => (await kq.agents()).some((ag) => ag.state === 'idle'));
    await sleep(1500);
    expect(await stateOf(kq, waiting)).toBe('Waiting');
    await kq.stop();
    await kq.start();
    await sleep(1500);
    expect(await stateOf(kq, waiting)).toBe('Waiting');
    expect((await kq.ctl('list')).stderr).toContain('the queue is paused');
    expect((await kq.ctl('resume')).stdout).toBe('queue resumed');
    expect((await kq.waitJob(waiting)).state).toBe('Completed');
    expect((await kq.ctl('list')).stderr).toBe('');
  });

  it('a paused job takes no new tasks (its running one finishes), across a restart, until resumed', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const job = await kq.submit('--frames', '1-2', '--cwd', dir, '--', 'sh', '-c', 'while [ ! -f go ]; do sleep 0.05; done; touch done{frame}');
    await until(kq, job, 'Running');
    const p = await kq.ctl('pause', String(job));
    expect(p.exitCode).toBe(0);
    expect(p.stdout).toMatch(new RegExp(`^${job}\\s+\\S+.*Running \\(paused\\)`, 'm'));
    const other = await kq.submit('--', 'true');
    open(dir, 'go');
    // The running task finishes; the agent then takes the other job, not frame 2.
    expect((await kq.waitJob(other)).state).toBe('Completed');
    const shown = await kq.json('show', String(job));
    expect(shown.paused).toBe(true);
    expect(shown.state).toBe('Waiting');
    expect(shown.framesDone).toBe(1);
    expect((await kq.ctl('list')).stdout).toMatch(new RegExp(`^${job}\\s+.*Waiting \\(paused\\)\\s+1/2`, 'm'));
    await kq.stop();
    await kq.start();
    await sleep(1500);
    expect((await kq.json('show', String(job))).framesDone).toBe(1);
    expect((await kq.ctl('resume', String(job))).exitCode).toBe(0);
    const done = await kq.waitJob(job);
    expect(done.state).toBe('Completed');
    expect(done.paused).toBe(false);
    expect(fs.existsSync(path.join(dir, 'done2'))).toBe(true);
    expect((await kq.ctl('pause', '999')).exitCode).toBe(2);
  });
});

describe('priority', () => {
  it('kqctl priority reorders waiting work at once', async () => {
    const kq = await start({ numAgents: 1 });
    expect((await kq.ctl('pause')).exitCode).toBe(0);
    const first = await kq.submit('--name', 'first', '--frames', '1-3', '--', 'true');
    const second = await kq.submit('--name', 'second', '--frames', '1-3', '--', 'true');
    const r = await kq.ctl('priority', String(second), '-5'); // negative: not an option
    expect(r.exitCode).toBe(0);
    expect((await kq.ctl('priority', String(second), String(first), '7')).exitCode).toBe(0);
    expect((await kq.ctl('priority', String(second), '20')).stdout).toMatch(new RegExp(`^${second}\\s+second\\s+Waiting`, 'm'));
    expect((await kq.json('show', String(second))).priority).toBe(20);
    expect((await kq.ctl('priority', String(second), '1001')).exitCode).toBe(2);
    expect((await kq.ctl('priority', '999', '1')).exitCode).toBe(2);
    await kq.ctl('resume');
    const [a, b] = [await kq.waitJob(first), await kq.waitJob(second)];
    // Every task of the re-prioritised job ran before any of the other's.
    const lastOfSecond = b.taskList.map((t: any) => t.finishedAt).sort().pop();
    const firstOfFirst = a.taskList.map((t: any) => t.startedAt).sort()[0];
    expect(lastOfSecond <= firstOfFirst).toBe(true);
  });
});

describe('rm and clean', () => {
  it('rm removes ended jobs and their logs, never their outputs; unfinished ones only with --stop', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const done = await kq.submit('--frames', '1-2', '--cwd', dir, '--output', 'out{frame}.txt', '--', 'sh', '-c', 'echo frame > out{frame}.txt');
    expect((await kq.waitJob(done)).state).toBe('Completed');
    const logFile = path.join(kq.dataRoot, 'logs', `job-${done}.log`);
    expect(fs.existsSync(logFile)).toBe(true);
    const running = await kq.submit(...gated(dir, 'never'));
    await until(kq, running, 'Running');
    const refused = await kq.ctl('rm', String(done), String(running));
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(`job ${running} is Running`);
    expect((await kq.json('show', String(done))).state).toBe('Completed'); // nothing removed
    const r = await kq.ctl('rm', String(done));
    expect(r).toMatchObject({ exitCode: 0, stdout: `removed 1 job: ${done}` });
    expect(fs.existsSync(logFile)).toBe(false);
    expect(fs.readFileSync(path.join(dir, 'out1.txt'), 'utf8')).toBe('frame\n');
    expect(fs.existsSync(path.join(dir, 'out2.txt'))).toBe(true);
    expect((await kq.ctl('show', String(done))).exitCode).toBe(2);
    expect((await kq.ctl('rm', String(done))).exitCode).toBe(2);
    const stopped = await kq.ctl('rm', '--stop', String(running));
    expect(stopped.exitCode).toBe(0);
    expect((await kq.json('list')).map((j: any) => j.id)).toEqual([]);
    // The agent is free again: new work runs.
    expect((await kq.waitJob(await kq.submit('--', 'true'))).state).toBe('Completed');
  });

  it('clean removes Completed jobs by default, other states and ages on request; --keep-finished by itself', async () => {
    const kq = await start({ numAgents: 1 });
    const ok = await kq.submit('--', 'true');
    const bad = await kq.submit('--retries', '0', '--', 'false');
    await kq.waitJob(ok);
    await kq.waitJob(bad);
    expect((await kq.json('clean', '--older-than', '7d')).removed).toEqual([]);
    expect((await kq.json('clean')).removed).toEqual([ok]);
    expect((await kq.ctl('clean', '--state', 'Running')).exitCode).toBe(2);
    expect((await kq.ctl('clean', '--state', 'Failed', 'Cancelled')).stdout).toBe(`removed 1 job: ${bad}`);
    expect(fs.existsSync(path.join(kq.dataRoot, 'logs', `job-${bad}.log`))).toBe(false);
    await kq.stop();

    const auto = await start({ numAgents: 1, args: ['--keep-finished', '2s'], dataRoot: kq.dataRoot });
    const kept = await auto.submit('--retries', '0', '--', 'false');
    const dir = tempDir();
    const waiting = await auto.submit(...gated(dir, 'go'));
    // Only an ended job is removed; waiting for it to end first could miss it (gone 2 s after it ended).
    await waitFor('the ended job removed by --keep-finished', async () => !(await auto.json('list')).some((j: any) => j.id === kept), 30_000, 200);
    expect(await stateOf(auto, waiting)).toBe('Running'); // unfinished jobs are never removed
    open(dir, 'go');
  });
});

/**
 * Task messages are bound to the agent's registration: a stranger on the update port, a second agent
 * under the same id, or registrations replayed after a kq restart cannot make kq believe a task ended,
 * fail it, or strike a host. Real kq, real agents; forged messages come from raw ZeroMQ sockets.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION } from '../src/protocol/version.js';
import { Kq, isRunning, sleep, startAgent, tempDir, waitFor, kqStarter } from './helpers/kq.js';

const FAST = ['--heartbeat', '250ms', '--agent-timeout', '3s', '--kill-grace', '1s'];
const start = kqStarter(FAST);

function frameJob(dir: string, frames: string, work: string): string[] {
  return ['--frames', frames, '--cwd', dir, '--retries', '0', '--', 'sh', '-c', `${work}; echo {frame} >> results`];
}
function results(dir: string): number[] {
  const file = path.join(dir, 'results');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map(Number).sort((a, b) => a - b) : [];
}
const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
/** Failed runs recorded in the job's log (kq writes one line per failed attempt). */
const failedAttempts = async (kq: Kq, id: number) => ((await kq.ctl('log', String(id))).stdout.match(/^\[kq\] task \d+ attempt \d+ failed/gm) ?? []).length;

describe('task messages bound to the registration', () => {
  it('forged `finished` messages on the update port change nothing: no agent freed, no failure, every frame once', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const id = await kq.submit(...frameJob(dir, '1-6', 'sleep 1'));
    const zmq = await import('zeromq');
    const push = new zmq.Push({ linger: 1000 });
    push.connect(`tcp://127.0.0.1:${kq.info.updatePort}`);
    try {
      const forgedFor = new Set<number>();
      while (forgedFor.size < 3) {
        const job = await kq.json('show', String(id));
        if (['Completed', 'Failed', 'Cancelled'].includes(job.state)) break;
        const task = job.taskList.find((t: { id: number; state: string }) => t.state === 'running' && !forgedFor.has(t.id));
        const agent = task && { id: task.agentId as string };
        if (!agent || !task) {
          await sleep(50);
          continue;
        }
        forgedFor.add(task.id);
        // Another attempt of the running task, the right attempt with a made-up session, and a bye.
        for (const forged of [
          { type: 'finished', attempt: task.attempts + 1 }, { type: 'finished', attempt: task.attempts - 1 },
          { type: 'finished', attempt: task.attempts, session: 'f'.repeat(32) },
        ]) {
          await push.send(JSON.stringify({ v: PROTOCOL_VERSION, agentId: agent.id, taskId: task.id, exitCode: 0, signal: null, durationMs: 1, reason: null, ...forged }));
        }
        await push.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'bye', agentId: agent.id, session: 'f'.repeat(32) }));
      }
      expect(forgedFor.size).toBeGreaterThan(0);
    } finally {
      push.close();
    }
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(results(dir)).toEqual(range(6));
    expect(await failedAttempts(kq, id)).toBe(0);
    expect(job.taskList.every((t: { attempts: number }) => t.attempts === 1)).toBe(true);
  });

  it('a second agent under the same --agent-id is refused while the first is live; the first keeps its work', async () => {
    const kq = await start({ numAgents: 0 });
    const dir = tempDir();
    const first = startAgent(['--agent-id', 'twin', ...kq.agentArgs()]);
    await waitFor('the first twin registered', async () => (await kq.agents()).some((a) => a.id === 'twin' && a.state !== 'offline'));
    const firstPid = (await kq.agents()).find((a) => a.id === 'twin').pid;
    const id = await kq.submit(...frameJob(dir, '1-6', 'sleep 0.4'));
    await waitFor('the first twin busy', async () => (await kq.agents()).some((a) => a.id === 'twin' && a.state === 'busy'), 30_000);
    const second = startAgent(['--agent-id', 'twin', ...kq.agentArgs()]);
    let secondOut = '';
    second.all?.on('data', (d: Buffer) => { secondOut += d.toString(); });
    const job = await kq.waitJob(id, 90_000);
    expect(job.state).toBe('Completed');
    expect(results(dir)).toEqual(range(6));
    expect(await failedAttempts(kq, id)).toBe(0);
    expect(job.taskList.every((t: { host: string }) => t.host === (job.taskList[0] as { host: string }).host)).toBe(true);
    await waitFor('the second twin told why', () => /agent id \\?"twin\\?" is in use by a live agent/.test(secondOut), 20_000);
    expect((await kq.agents()).find((a) => a.id === 'twin').pid).toBe(firstPid);
    expect(isRunning(first.pid!)).toBe(true);
  });

  it('a stranger claiming an agent\'s id gets neither its work nor its session, and cannot register over it', async () => {
    const kq = await start({ numAgents: 0 });
    const dir = tempDir();
    startAgent(['--agent-id', 'victim', ...kq.agentArgs()]);
    await waitFor('the victim registered', async () => (await kq.agents()).some((a) => a.id === 'victim' && a.state === 'idle'));
    const zmq = await import('zeromq');
    // The stranger takes the victim's id as its ZeroMQ routing id and also tries to register under it.
    const thief = new zmq.Dealer({ linger: 0, routingId: 'victim', receiveTimeout: 500 });
    thief.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
    const got: string[] = [];
    try {
      await thief.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: 'x', type: 'register', agentId: 'victim', host: 'evil', pid: 1, local: false,
        running: null, lastOutcome: null }));
      const id = await kq.submit('--env', 'SECRET_TOKEN=hunter2', ...frameJob(dir, '1-3', 'sleep 0.3'));
      const job = await waitFor('the job to end', async () => {
        try { got.push((await thief.receive())[0]!.toString()); } catch { /* nothing this time */ }
        const j = await kq.json('show', String(id));
        return ['Completed', 'Failed', 'Cancelled'].includes(j.state) ? j : null;
      }, 60_000, 10);
      expect(job.state).toBe('Completed');
      expect(results(dir)).toEqual(range(3));
      expect(job.taskList.every((t: { host: string }) => t.host !== 'evil')).toBe(true);
    } finally {
      thief.close();
    }
    // The stranger's register was refused, and nothing of the job reached it.
    expect(got.join('\n')).toMatch(/"ok":false.*in use by a live agent/);
    expect(got.join('\n')).not.toMatch(/hunter2|"assign"|session/);
    expect((await kq.agents()).find((a) => a.id === 'victim').host).not.toBe('evil');
  });

  it('a job whose failure reason is huge (a 4,100-character command) fails cleanly; no agent is lost', async () => {
    const kq = await start({ numAgents: 2 });
    const pids = (await kq.agents()).map((a) => a.pid).sort();
    const id = await kq.submit('--retries', '1', '--', `/no/such/${'x'.repeat(4100)}`);
    const job = await kq.waitJob(id, 60_000);
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].attempts).toBe(2);
    expect(job.taskList[0].reason.length).toBeLessThanOrEqual(4096);
    const next = await kq.submit('--', 'true');
    expect((await kq.waitJob(next)).state).toBe('Completed');
    expect((await kq.agents()).filter((a) => a.state !== 'offline').map((a) => a.pid).sort()).toEqual(pids);
  });

  it('kq restarted while remote agents stay up: their retried registrations collapse, nothing fails or runs twice', async () => {
    const kq = await start({ numAgents: 0 });
    const dir = tempDir();
    // Short register timeouts: while kq is down each agent retries many times.
    for (const host of ['far-a', 'far-b']) startAgent(['--host-name', host, '--register-timeout', '200ms', ...kq.agentArgs()]);
    await waitFor('2 remote agents', async () => (await kq.agents()).filter((a) => a.state === 'idle').length === 2);
    const id = await kq.submit(...frameJob(dir, '1-12', 'sleep 0.3'));
    await waitFor('3 frames done', async () => results(dir).length >= 3, 30_000);
    await kq.stop();
    await sleep(3000); // ~15 register attempts per agent while kq is away
    await kq.start();
    const job = await kq.waitJob(id, 90_000);
    expect(job.state).toBe('Completed');
    expect(await failedAttempts(kq, id)).toBe(0);
    expect(job.blocklist).toEqual([]);
    // A task interrupted by the stop runs again once; no task is dispatched over and over.
    expect(Math.max(...job.taskList.map((t: { attempts: number }) => t.attempts))).toBeLessThanOrEqual(2);
    expect(new Set(results(dir))).toEqual(new Set(range(12)));
  });

  it('heartbeats reconcile both ways: a lost `finished`, a lost assignment and a lost stop-task are each recovered', async () => {
    const kq = await start({ numAgents: 0 });
    const zmq = await import('zeromq');
    const agentId = 'fake-agent';
    const dealer = new zmq.Dealer({ linger: 0, routingId: agentId, receiveTimeout: 20_000 });
    const push = new zmq.Push({ linger: 1000 });
    const sub = new zmq.Subscriber({ linger: 0, receiveTimeout: 20_000 });
    dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
    push.connect(`tcp://127.0.0.1:${kq.info.updatePort}`);
    sub.connect(`tcp://127.0.0.1:${kq.info.broadcastPort}`);
    sub.subscribe(`agent.${agentId}`);
    try {
      await dealer.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: 'r1', type: 'register', agentId, host: 'fake-host', pid: 1, local: false, running: null, lastOutcome: null }));
      const reply = JSON.parse((await dealer.receive())[0]!.toString());
      const session: string = reply.data.session;
      expect(session).toMatch(/^[0-9a-f]{32}$/);
      const heartbeat = (running: object | null, lastOutcome: object | null = null) =>
        push.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'heartbeat', agentId, session, running, lastOutcome }));
      const nextAssign = async () => JSON.parse((await dealer.receive())[0]!.toString());
      const id = await kq.submit('--frames', '1-2', '--', 'true');
      await heartbeat(null); // confirms the registration: only now does kq hand out work

      // 1. The agent ran task A, but its `finished` was lost: the next heartbeat's lastOutcome completes it.
      const a = await nextAssign();
      expect(a.session).toBe(session);
      const refA = { taskId: a.task.taskId, attempt: a.task.attempt };
      await heartbeat(null, { ...refA, exitCode: 0, signal: null, durationMs: 5, reason: null });

      // 2. The assignment of task B "never arrived": heartbeats say the agent runs nothing. After the grace
      //    (two heartbeats and a second) B is requeued without counting a failure, and given out again.
      const b = await nextAssign();
      const refB = { taskId: b.task.taskId, attempt: b.task.attempt };
      const again = await waitFor('task B assigned again', async () => {
        await heartbeat(null);
        dealer.receiveTimeout = 300;
        try { return await nextAssign(); } catch { return null; }
      }, 30_000, 100);
      dealer.receiveTimeout = 20_000;
      expect(again.task.taskId).toBe(refB.taskId);
      expect(again.task.attempt).toBe(refB.attempt + 1);
      // The job is stopped while B runs, and the stop-task is "lost": the next heartbeat that still names B gets it again.
      await push.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'started', agentId, session, taskId: again.task.taskId, attempt: again.task.attempt, pid: 1 }));
      await kq.ctl('stop', String(id));
      const stop = await waitFor('a stop-task after the heartbeat', async () => {
        await heartbeat({ taskId: again.task.taskId, attempt: again.task.attempt });
        const [, frame] = await sub.receive();
        const msg = JSON.parse(frame!.toString());
        return msg.type === 'stop-task' && msg.taskId === again.task.taskId ? msg : null;
      }, 30_000, 100);
      expect(stop.attempt).toBe(again.task.attempt);
      const job = await kq.json('show', String(id));
      expect(job.taskList.find((t: { id: number }) => t.id === refA.taskId).state).toBe('completed');
      expect(await failedAttempts(kq, id)).toBe(0);
    } finally {
      for (const s of [dealer, push, sub]) s.close();
    }
  });

  it('a stranger calling itself a local agent cannot make kq signal a process group, nor kill a real local agent', async () => {
    const kq = await start({ numAgents: 1 });
    const zmq = await import('zeromq');
    const [local] = (await kq.agents()).filter((a) => a.local);
    // An innocent process group the stranger will name as its render.
    const victim = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
    const agentId = 'evil-local';
    const dealer = new zmq.Dealer({ linger: 0, receiveTimeout: 20_000 });
    const push = new zmq.Push({ linger: 1000 });
    dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
    push.connect(`tcp://127.0.0.1:${kq.info.updatePort}`);
    try {
      await dealer.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: 'r1', type: 'register', agentId, host: os.hostname(), pid: local.pid, local: true, running: null, lastOutcome: null }));
      const session: string = JSON.parse((await dealer.receive())[0]!.toString()).data.session;
      // Keep the real agent busy (a running task and one it holds next) so the stranger gets the next task.
      const id = await kq.submit('--frames', '1-4', '--', 'sleep', '20');
      await push.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'heartbeat', agentId, session, running: null, lastOutcome: null }));
      const assign = JSON.parse((await dealer.receive())[0]!.toString());
      await push.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'started', agentId, session, taskId: assign.task.taskId, attempt: assign.task.attempt, pid: victim.pid }));
      // Then silence: kq declares it lost, and must neither kill the named group nor the agent whose pid it claimed.
      await waitFor('the stranger lost', async () => (await kq.agents()).some((a) => a.id === agentId && a.state === 'lost'), 30_000);
      await sleep(1000);
      expect(isRunning(victim.pid!), 'the innocent process group').toBe(true);
      expect(isRunning(local.pid), 'the real local agent').toBe(true);
      await kq.ctl('stop', String(id));
    } finally {
      dealer.close();
      push.close();
      try { process.kill(-victim.pid!, 'SIGKILL'); } catch { /* gone */ }
    }
  });
});

/**
 * A withdrawal can overtake its assignment: kq sends `assign` on the request socket and `stop-task` on the
 * broadcast socket, two connections with no order between them. The agent must never start an assignment
 * kq withdrew before it arrived, whether it comes to an idle agent or as a prefetched one behind a render.
 * Under test: a real kq-agent process. kq's side is played over real ZeroMQ sockets by the test, because
 * only a stand-in can send the two messages in the overtaking order every time. Also: an assignment made to
 * the registration the agent is replacing is not started either.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as zmq from 'zeromq';
import { afterAll, describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION, Topics } from '../src/protocol/index.js';
import { cleanupAll, startAgent, tempDir, waitFor } from './helpers/kq.js';

afterAll(() => cleanupAll());

const AGENT_ID = 'withdrawn-1';
const SESSIONS = ['withdrawn-session-0001', 'withdrawn-session-0002'];

/** kq's three sockets, bound on loopback, with every update the agent sends kept in order. */
async function standInKq() {
  const router = new zmq.Router({ linger: 0 });
  const pull = new zmq.Pull({ linger: 0 });
  const xpub = new zmq.XPublisher({ linger: 0 });
  for (const s of [router, pull, xpub]) await s.bind('tcp://127.0.0.1:*');
  const port = (s: zmq.Socket) => Number(s.lastEndpoint!.split(':').at(-1));
  const updates: any[] = [];
  const subscribed = new Set<string>();
  let agentRoute: Buffer | null = null;
  let registrations = 0;
  /** Registrations not answered yet (while the test holds them). */
  const held: Array<() => Promise<void>> = [];
  let holding = false;
  void (async () => {
    for await (const [route, frame] of router) {
      const req = JSON.parse(frame!.toString());
      if (req.type !== 'register') continue;
      agentRoute = route!;
      const session = SESSIONS[Math.min(registrations++, 1)];
      const answer = () => router.send([route!, JSON.stringify({ v: PROTOCOL_VERSION, rid: req.rid, type: 'reply', ok: true,
        data: { heartbeatMs: 60_000, keepRunning: false, keepQueued: false, session } })]);
      if (holding) held.push(answer);
      else await answer();
    }
  })().catch(() => undefined);
  void (async () => { for await (const [frame] of pull) updates.push(JSON.parse(frame!.toString())); })().catch(() => undefined);
  void (async () => {
    for await (const [frame] of xpub) if (frame![0] === 1) subscribed.add(frame!.subarray(1).toString());
  })().catch(() => undefined);
  return {
    ports: { request: port(router), update: port(pull), broadcast: port(xpub) },
    updates,
    subscribed,
    registrations: () => registrations,
    holdRegistrations: () => { holding = true; },
    answerRegistrations: async () => {
      holding = false;
      for (const answer of held.splice(0)) await answer();
    },
    assign: (taskId: number, command: string[], session = SESSIONS[0]) => router.send([agentRoute!, JSON.stringify({ v: PROTOCOL_VERSION, type: 'assign', session,
      task: { taskId, jobId: 1, attempt: 1, frames: [taskId], commands: [command], cwd: null, env: {}, timeoutMs: null, shell: false } })]),
    withdraw: (taskId: number) => xpub.send([Topics.agent(AGENT_ID), JSON.stringify({ v: PROTOCOL_VERSION, type: 'stop-task', taskId, attempt: 1, reason: 'job stopped' })]),
    askToRegisterAgain: () => xpub.send([Topics.agent(AGENT_ID), JSON.stringify({ v: PROTOCOL_VERSION, type: 'reregister' })]),
    close: () => { for (const s of [router, pull, xpub]) s.close(); },
  };
}

describe('an assignment kq withdrew before it arrived', () => {
  it('is never started, on an idle agent, as a prefetched one, or while the agent registers again; the agent says at once what it runs and goes on', async () => {
    const dir = tempDir();
    const kq = await standInKq();
    const agent = startAgent(['--agent-id', AGENT_ID, '--request-port', String(kq.ports.request), '--update-port', String(kq.ports.update),
      '--broadcast-port', String(kq.ports.broadcast), '--kill-grace', '1s', '127.0.0.1']);
    let output = '';
    agent.all!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    /** The agent has read the withdrawal of this task (the order of the two sockets is then certain). */
    const heardWithdrawal = (taskId: number) => waitFor(`the agent to hear task ${taskId}'s withdrawal`,
      () => output.split('\n').some((l) => l.includes('withdrawn before its assignment arrived') && l.includes(`"task":${taskId},`)), 20_000);
    try {
      await waitFor('the agent to register and confirm it', () => kq.updates.some((u) => u.type === 'heartbeat'), 20_000);
      await waitFor('the agent to subscribe to its topic', () => kq.subscribed.has(Topics.agent(AGENT_ID)), 20_000);
      const started = (taskId: number) => kq.updates.some((u) => u.type === 'started' && u.taskId === taskId);
      const finished = (taskId: number) => kq.updates.some((u) => u.type === 'finished' && u.taskId === taskId);
      const heartbeats = () => kq.updates.filter((u) => u.type === 'heartbeat').length;

      // Idle agent: the withdrawal comes first, then the assignment.
      let before = heartbeats();
      await kq.withdraw(7);
      await heardWithdrawal(7);
      await kq.assign(7, ['touch', path.join(dir, 'ran.7')]);
      await waitFor('a heartbeat answering the dropped assignment', () => heartbeats() > before, 10_000);
      expect(kq.updates.filter((u) => u.type === 'heartbeat').at(-1)).toMatchObject({ running: null, queued: null });
      // The agent still works: the next assignment runs.
      await kq.assign(8, ['touch', path.join(dir, 'ran.8')]);
      await waitFor('task 8 to finish', () => finished(8), 20_000);

      // Prefetch: a render runs; the held task's withdrawal overtakes its assignment.
      await kq.assign(9, ['sh', '-c', `while [ ! -e '${dir}/go' ]; do sleep 0.05; done`]);
      await waitFor('task 9 to start', () => started(9), 20_000);
      before = heartbeats();
      await kq.withdraw(10);
      await heardWithdrawal(10);
      await kq.assign(10, ['touch', path.join(dir, 'ran.10')]);
      await waitFor('a heartbeat answering the dropped assignment', () => heartbeats() > before, 10_000);
      expect(kq.updates.filter((u) => u.type === 'heartbeat').at(-1)).toMatchObject({ running: { taskId: 9, attempt: 1 }, queued: null });
      fs.writeFileSync(path.join(dir, 'go'), '');
      await waitFor('task 9 to finish', () => finished(9), 20_000);
      await kq.assign(11, ['touch', path.join(dir, 'ran.11')]);
      await waitFor('task 11 to finish', () => finished(11), 20_000);

      // Registering again (kq asked): an assignment made to the old registration arrives meanwhile. kq takes
      // back what the new registration does not report, so the agent must not start it.
      kq.holdRegistrations();
      await kq.askToRegisterAgain();
      await waitFor('the agent to register again', () => kq.registrations() >= 2, 20_000);
      await kq.assign(12, ['touch', path.join(dir, 'ran.12')]);
      await waitFor('the agent to drop it', () => output.includes('came while registering again'), 20_000);
      await kq.answerRegistrations();
      await kq.assign(13, ['touch', path.join(dir, 'ran.13')], SESSIONS[1]);
      await waitFor('task 13 to finish', () => finished(13), 20_000);

      expect([7, 10, 12].filter(started)).toEqual([]);
      expect([7, 10, 12].filter((t) => fs.existsSync(path.join(dir, `ran.${t}`)))).toEqual([]);
      expect([8, 11, 13].filter((t) => fs.existsSync(path.join(dir, `ran.${t}`)))).toEqual([8, 11, 13]);
      expect(kq.updates.filter((u) => u.type === 'refused')).toEqual([]);
    } finally {
      agent.kill('SIGTERM');
      await agent;
      kq.close();
    }
  }, 90_000);
});

/**
 * Dispatch on a big farm, on a real (in-memory) store: what kq does per registration, heartbeat or finished
 * task must not grow with the number of idle agents when there is nothing to hand out. Before the fix, every
 * dispatch tried to claim a task for each idle agent, one transaction each: a farm of N agents coming up on
 * an empty queue cost N² claims, and 500 agents' registrations went unanswered for seconds
 * (bench scenario s found it).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION, type JobSummary, type RegisterReply } from '../src/protocol/index.js';
import { JobLogs } from '../src/kq/job-logs.js';
import { ProgressTracker } from '../src/kq/progress.js';
import { Publisher } from '../src/kq/publisher.js';
import { RequestHandler } from '../src/kq/requests.js';
import { Scheduler } from '../src/kq/scheduler.js';
import { Store } from '../src/kq/store.js';
import { UpdateHandler } from '../src/kq/updates.js';
import type { SendQueue } from '../src/common/send-queue.js';

let dir: string;
let store: Store;
let logs: JobLogs;
let requests: RequestHandler;
let updates: UpdateHandler;
let claims: number;
let assigned: number;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kq-farm-dispatch-'));
  const log = pino({ level: 'silent' });
  const logPath = (id: number) => path.join(dir, `job-${id}.log`);
  store = new Store(':memory:', { blocklistAfter: 3 }, logPath);
  store.beginEpoch('e1');
  // Count claim attempts (the store does the real work; only the count is added).
  claims = 0;
  const claim = store.claimTask;
  Object.defineProperty(store, 'claimTask', { value: (agentId: string) => { claims++; return claim(agentId); } });
  logs = new JobLogs(logPath, { maxTaskBytes: 1 << 20, maxOpen: 8 });
  const publisher = new Publisher({ store, logs, log });
  const progress = new ProgressTracker();
  const scheduler = new Scheduler({
    store, logs, progress, log, epoch: 'e1', publisher, agentTimeoutMs: 10_000, blocklistAfter: 3,
    isRunning: () => true, killLocalAgent: () => undefined, ownsLocalAgent: () => false,
  });
  assigned = 0;
  // Assignments go nowhere (no socket): counted.
  scheduler.routerQueue = { send: async () => { assigned++; } } as unknown as SendQueue;
  const deps = { store, logs, log, epoch: 'e1', publisher, scheduler, heartbeatMs: 2000 };
  requests = new RequestHandler({ ...deps, agentTimeoutMs: 10_000, security: () => ({ curve: false, insecure: false }) });
  updates = new UpdateHandler({ ...deps, progress });
});

afterEach(() => {
  logs.close();
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Register an agent through the request handler and confirm it with its first heartbeat, as an agent does. */
function bringUp(i: number): { agentId: string; session: string } {
  const agentId = `farm-${i}`;
  const req = { v: PROTOCOL_VERSION, rid: String(i), type: 'register', agentId, host: `host-${i}`, pid: 1000 + i, local: false, running: null, lastOutcome: null, session: null, slurm: null } as const;
  const reply = requests.handle(req, `route${i}`) as RegisterReply;
  requests.afterReply(req);
  updates.handle({ v: PROTOCOL_VERSION, type: 'heartbeat', agentId, session: reply.session, running: null, lastOutcome: null });
  return { agentId, session: reply.session };
}

describe('dispatch on a farm of many agents', () => {
  it('does not try every idle agent when the queue is empty', () => {
    const n = 200;
    for (let i = 0; i < n; i++) bringUp(i);
    expect(store.idleAgents('e1')).toHaveLength(n);
    // N registrations and N confirmations, nothing to hand out: a few claims at most, not one per idle agent each time.
    expect(claims).toBeLessThan(2 * n);
  });

  it('still hands every waiting task out, and stops trying once the queue is dry', () => {
    const n = 100;
    const farm = Array.from({ length: n }, (_, i) => bringUp(i));
    claims = 0;
    const job = requests.local({ type: 'submit', job: { argv: ['true'], frames: '1-30' } }) as JobSummary;
    expect(assigned).toBe(30);
    expect(store.idleAgents('e1')).toHaveLength(n - 30);
    // 30 tasks for 100 idle agents: 30 claims that succeed, then at most one that finds the queue empty.
    expect(claims).toBeLessThanOrEqual(31);
    // Each finished task frees an agent while 70 others are idle and nothing waits: no sweep over them.
    claims = 0;
    const busy = store.listAgents().filter((a) => a.state === 'busy');
    for (const a of busy) {
      const { session } = farm.find((f) => f.agentId === a.id)!;
      updates.handle({ v: PROTOCOL_VERSION, type: 'finished', agentId: a.id, session, taskId: a.taskId!, attempt: 1, exitCode: 0, signal: null, durationMs: 5, reason: null, stderrTail: [] });
    }
    expect((requests.local({ type: 'list', jobIds: [job.id] }) as JobSummary[])[0]).toMatchObject({ state: 'Completed', framesDone: 30 });
    expect(claims).toBeLessThan(2 * 30);
  });
});

describe('heartbeats of a big farm', () => {
  const totalChanges = () => (store.db.prepare('SELECT total_changes() AS n').get() as { n: number }).n;
  const heartbeat = (agentId: string, session: string, running: { taskId: number; attempt: number } | null = null) =>
    updates.handle({ v: PROTOCOL_VERSION, type: 'heartbeat', agentId, session, running, lastOutcome: null });

  it('a heartbeat that tells kq nothing new writes nothing, yet keeps the agent from being declared lost', async () => {
    const farm = Array.from({ length: 50 }, (_, i) => bringUp(i));
    requests.local({ type: 'submit', job: { argv: ['true'], frames: '1-10' } });
    const busy = store.listAgents().filter((a) => a.state === 'busy');
    expect(busy).toHaveLength(10);
    const sessionOf = (id: string) => farm.find((f) => f.agentId === id)!.session;
    await new Promise((r) => setTimeout(r, 20));
    const before = Date.now();
    const changes = totalChanges();
    // Idle agents running nothing, busy ones running exactly their task: nothing to record but the time.
    for (const { agentId, session } of farm.slice(0, 40)) {
      const mine = busy.find((a) => a.id === agentId);
      heartbeat(agentId, session, mine ? { taskId: mine.taskId!, attempt: 1 } : null);
    }
    expect(totalChanges()).toBe(changes);
    // The ones that heartbeat are alive; the ten that did not are silent since before `before`.
    const lost = store.markSilentAgentsLost(before).map((l) => l.agent.id).sort();
    expect(lost).toEqual(farm.slice(40).map((f) => f.agentId).sort());
    expect(new Date(store.listAgents().find((a) => a.id === farm[0]!.agentId)!.lastSeen).getTime()).toBeGreaterThanOrEqual(before);
    // A heartbeat that disagrees still reconciles: a busy agent that says it runs nothing is freed (its task requeued later).
    const b = busy[0]!;
    heartbeat(b.id, sessionOf(b.id), null);
    expect(totalChanges()).toBeGreaterThan(changes);
  });
});

describe('sessions checked on every update', () => {
  it('a re-registration takes over at once: the old session is superseded, strangers stay unknown', () => {
    const { agentId, session: old } = bringUp(1);
    expect(store.checkSession(agentId, old)).toBe('current');
    const req = { v: PROTOCOL_VERSION, rid: 'again', type: 'register', agentId, host: 'host-1', pid: 1001, local: false, running: null, lastOutcome: null, session: old, slurm: null } as const;
    const fresh = (requests.handle(req, 'route1b') as RegisterReply).session;
    expect(fresh).not.toBe(old);
    expect(store.checkSession(agentId, fresh)).toBe('current');
    expect(store.checkSession(agentId, old)).toBe('superseded');
    expect(store.checkSession('nobody', old)).toBe('unknown');
  });
});

/**
 * Task ids are never reused: an outcome an agent still repeats for a removed job's task (its lastOutcome,
 * resent on every heartbeat until its next assignment) can never complete a newer task. Real kq; the agent
 * is scripted on raw ZeroMQ sockets so the race (a heartbeat sent before the agent read its new
 * assignment) happens every time. Old tables (task ids without AUTOINCREMENT) are migrated at open, in one
 * transaction a kill -9 cannot tear.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION } from '../src/protocol/version.js';
import { Topics } from '../src/protocol/constants.js';
import { Kq, sleep, waitFor, kqStarter } from './helpers/kq.js';
import { Store } from '../src/kq/store.js';
import { prepareJob } from '../src/kq/submit.js';

const start = kqStarter(['--heartbeat', '250ms', '--agent-timeout', '5s']);

/** A scripted agent: registers, heartbeats on demand, reads its assignments. */
async function scriptedAgent(kq: Kq, agentId: string) {
  const zmq = await import('zeromq');
  const dealer = new zmq.Dealer({ linger: 0, receiveTimeout: 20_000 });
  const push = new zmq.Push({ linger: 1000 });
  dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
  push.connect(`tcp://127.0.0.1:${kq.info.updatePort}`);
  await dealer.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: 'r1', type: 'register', agentId, host: 'scripted-host', pid: 1, local: false, running: null, lastOutcome: null }));
  const reply = JSON.parse((await dealer.receive())[0]!.toString());
  const session: string = reply.data.session;
  const update = (body: object) => push.send(JSON.stringify({ v: PROTOCOL_VERSION, agentId, session, ...body }));
  return {
    heartbeat: (running: object | null, lastOutcome: object | null = null) => update({ type: 'heartbeat', running, lastOutcome }),
    update,
    nextAssign: async () => JSON.parse((await dealer.receive())[0]!.toString()),
    close: () => { dealer.close(); push.close(); },
  };
}

/** The table as kq made it before task ids were AUTOINCREMENT: the same table rebuilt without it. */
function makeOldStyle(dbFile: string): void {
  const db = new Database(dbFile);
  try {
    const { sql } = db.prepare(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'`).get() as { sql: string };
    const indexes = (db.prepare(`SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' AND sql IS NOT NULL`).all() as Array<{ sql: string }>).map((r) => r.sql);
    expect(sql).toMatch(/AUTOINCREMENT/);
    db.pragma('foreign_keys = OFF');
    db.transaction(() => {
      db.exec(sql.replace(/^CREATE TABLE "?tasks"?/, 'CREATE TABLE tasks_old').replace(/\s+AUTOINCREMENT/, ''));
      db.exec(`INSERT INTO tasks_old SELECT * FROM tasks; DROP TABLE tasks; ALTER TABLE tasks_old RENAME TO tasks;`);
      for (const s of indexes) db.exec(s);
      db.exec(`DELETE FROM sqlite_sequence WHERE name = 'tasks'`);
    })();
  } finally {
    db.close();
  }
}

function tasksTable(dbFile: string): { sql: string; rows: number; indexes: string[] } {
  const db = new Database(dbFile, { readonly: true });
  try {
    return {
      sql: (db.prepare(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'`).get() as { sql: string }).sql,
      rows: (db.prepare(`SELECT count(*) AS n FROM tasks`).get() as { n: number }).n,
      indexes: (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' AND sql IS NOT NULL ORDER BY name`).all() as Array<{ name: string }>).map((r) => r.name),
    };
  } finally {
    db.close();
  }
}

describe('task ids are never reused', () => {
  it('a removed job\'s outcome, still repeated by its agent, does not complete the next job\'s task', async () => {
    const kq = await start({ numAgents: 0 });
    const agent = await scriptedAgent(kq, 'scripted');
    try {
      await agent.heartbeat(null); // confirms the registration: work is handed out
      const first = await kq.submit('--name', 'first', '--', 'true');
      const a1 = await agent.nextAssign();
      const outcome = { taskId: a1.task.taskId, attempt: a1.task.attempt, exitCode: 0, signal: null, durationMs: 5, reason: null, stderrTail: [] };
      await agent.update({ type: 'started', taskId: a1.task.taskId, attempt: a1.task.attempt, pid: 99999 });
      await agent.update({ type: 'finished', ...outcome });
      expect((await kq.waitJob(first)).state).toBe('Completed');
      expect((await kq.ctl('rm', String(first))).exitCode).toBe(0);

      const second = await kq.submit('--name', 'never-run', '--retries', '0', '--', 'sh', '-c', 'exit 1');
      const a2 = await agent.nextAssign();
      expect(a2.task.jobId).toBe(second);
      // A heartbeat the agent sent before it read this assignment still carries the removed job's outcome.
      await agent.heartbeat(null, outcome);
      await agent.heartbeat(null, outcome);
      await sleep(1000);
      const job = await kq.json('show', String(second));
      expect(job.state).toBe('Running');
      expect(job.taskList[0].state).toBe('running');
      expect((await kq.ctl('log', String(second))).stdout).not.toMatch(/completed/);
      expect(a2.task.taskId).toBeGreaterThan(a1.task.taskId);
    } finally {
      agent.close();
    }
  });

  it('an outcome kq already recorded is not applied again to an attempt with the same numbers (store)', () => {
    // Belt and braces, for ids reused before a table was migrated: kq remembers the last outcome it took
    // from each agent, and a repeat of it is never news about another task.
    const store = new Store(':memory:', { blocklistAfter: 3 }, () => '');
    try {
      store.beginEpoch('e1');
      store.registerAgent({ id: 'a', host: 'h', pid: 1, local: false, running: null, epoch: 'e1', session: 's', route: '00' });
      store.heartbeat({ agentId: 'a', epoch: 'e1', running: null, lastOutcome: null, assignGraceMs: 60_000 });
      const first = store.submitJob(prepareJob({ argv: ['true'], cwd: '/tmp', chunk: 1, priority: 0, env: {}, maxAttempts: 1, shell: false } as never));
      const t1 = store.claimTask('a')!;
      const outcome = { taskId: t1.taskId, attempt: t1.attempt, exitCode: 0, signal: null, durationMs: 5, reason: null, stderrTail: [] };
      expect(store.finishTask({ agentId: 'a', taskId: t1.taskId, attempt: t1.attempt }, 0, null).outcome).toBe('completed');
      store.removeJobs([first.id]);
      while (store.continueJob(first.id));
      store.db.exec(`DELETE FROM sqlite_sequence WHERE name = 'tasks'`); // as an old table would: the id comes again
      const second = store.submitJob(prepareJob({ argv: ['false'], cwd: '/tmp', chunk: 1, priority: 0, env: {}, maxAttempts: 1, shell: false } as never));
      const t2 = store.claimTask('a')!;
      expect([t2.jobId, t2.taskId, t2.attempt]).toEqual([second.id, t1.taskId, t1.attempt]);
      // The agent's heartbeat, sent before it read the new assignment, repeats the recorded outcome.
      const r = store.heartbeat({ agentId: 'a', epoch: 'e1', running: null, lastOutcome: outcome, assignGraceMs: 60_000 });
      expect(r.outcome).toBeNull();
      expect(store.showJob(second.id)!.taskList[0]!.state).toBe('running');
      // Its own outcome, when it comes, is taken.
      expect(store.finishTask({ agentId: 'a', taskId: t2.taskId, attempt: t2.attempt }, 1, null).outcome).toBe('failed');
    } finally {
      store.close();
    }
  });

  it('an old table is migrated at open: every task, its indexes, and ids after the highest ever used', async () => {
    const kq = await start({ numAgents: 1 });
    const a = await kq.submit('--frames', '1-5', '--', 'true');
    const b = await kq.submit('--frames', '1-3', '--', 'true');
    await kq.waitJob(a);
    const jobB = await kq.waitJob(b);
    const highest = Math.max(...jobB.taskList.map((t: { id: number }) => t.id));
    await kq.stop();
    const dbFile = path.join(kq.dataRoot, 'kq.db');
    const before = tasksTable(dbFile);
    makeOldStyle(dbFile);
    expect(tasksTable(dbFile).sql).not.toMatch(/AUTOINCREMENT/);
    await kq.start();
    const after = tasksTable(dbFile);
    expect(after.sql).toMatch(/AUTOINCREMENT/);
    expect(after.rows).toBe(before.rows);
    expect(after.indexes).toEqual(before.indexes);
    expect((await kq.json('show', String(a))).taskList.map((t: { state: string }) => t.state)).toEqual(Array(5).fill('completed'));
    // The job holding the highest ids removed: the next job's ids still come after them.
    await kq.ctl('rm', String(b));
    const c = await kq.submit('--', 'true');
    const jobC = await kq.waitJob(c);
    expect(jobC.taskList[0].id).toBeGreaterThan(highest);
  });

  it('a kq killed -9 while migrating leaves the old table whole; the next start migrates it', async () => {
    const kq = await start({ numAgents: 0 });
    await kq.stop();
    const dbFile = path.join(kq.dataRoot, 'kq.db');
    const store = new Store(dbFile, { blocklistAfter: 3 }, () => '');
    const big = store.submitJob(prepareJob({ argv: ['true'], frames: '1-200000', cwd: '/tmp', chunk: 1, priority: 0, env: {}, maxAttempts: 1, shell: false } as never));
    while (store.continueJob(big.id));
    store.close();
    makeOldStyle(dbFile);
    const rows = tasksTable(dbFile).rows;
    expect(rows).toBe(200_000);
    // Killed at different moments of its start: whatever the moment, every task is there, old table or new.
    for (const afterMs of [50, 150, 300, 600]) {
      const k = new Kq({ numAgents: 0, dataRoot: kq.dataRoot, args: ['--heartbeat', '250ms'] });
      const started = k.start().catch(() => undefined);
      await sleep(afterMs);
      if (k.proc) process.kill(k.proc.pid!, 'SIGKILL');
      await started;
      await k.proc?.catch(() => undefined);
      k.proc = null;
      const t = tasksTable(dbFile);
      expect(t.rows).toBe(rows);
      if (t.sql.includes('AUTOINCREMENT')) break;
    }
    await kq.start();
    const t = tasksTable(dbFile);
    expect(t.sql).toMatch(/AUTOINCREMENT/);
    expect(t.rows).toBe(rows);
    expect(fs.existsSync(dbFile)).toBe(true);
  });
});

describe('kq withdraws only attempts it handed out', () => {
  it('a heartbeat or started naming a later attempt, or a task that never was, gets no stop-task: the agent would drop that attempt when it comes', async () => {
    // A peer holding an agent's session (or a confused agent) reports attempts kq never assigned. Were
    // kq to echo a stop-task for them, the real agent would remember them as withdrawn and drop the real
    // assignment when it came.
    const kq = await start({ numAgents: 0 });
    const agent = await scriptedAgent(kq, 'scripted');
    const zmq = await import('zeromq');
    const sub = new zmq.Subscriber({ linger: 0 });
    sub.subscribe(Topics.agent('scripted'));
    sub.connect(`tcp://127.0.0.1:${kq.info.broadcastPort}`);
    const stops: Array<{ taskId: number; attempt: number }> = [];
    void (async () => { for await (const [, frame] of sub) { const m = JSON.parse(frame!.toString()); if (m.type === 'stop-task') stops.push(m); } })().catch(() => undefined);
    try {
      await sleep(500); // the slow joiner
      await agent.heartbeat(null);
      const job = await kq.submit('--retries', '1', '--', 'sh', '-c', 'exit 1');
      const a1 = await agent.nextAssign();
      const t = a1.task.taskId as number;
      expect(a1.task.attempt).toBe(1);
      await agent.update({ type: 'started', taskId: t, attempt: 1, pid: 99999 });
      // Attempt 2 of this task and a task id beyond every one kq has made, reported as queued, running and started.
      const never = [{ taskId: t, attempt: 2 }, { taskId: t + 1000, attempt: 1 }];
      for (const n of never) {
        await agent.update({ type: 'heartbeat', running: { taskId: t, attempt: 1 }, queued: n, lastOutcome: null });
        await agent.update({ type: 'started', ...n, pid: 99998 });
      }
      await agent.heartbeat(never[0]!);
      // A control: an attempt kq did hand out and no longer counts as this agent's is withdrawn.
      await agent.update({ type: 'finished', taskId: t, attempt: 1, exitCode: 1, signal: null, durationMs: 5, reason: null, stderrTail: [] });
      const a2 = await agent.nextAssign();
      expect([a2.task.taskId, a2.task.attempt]).toEqual([t, 2]);
      await agent.update({ type: 'heartbeat', running: { taskId: t, attempt: 2 }, queued: { taskId: t, attempt: 1 }, lastOutcome: null });
      await waitFor('the stop-task for attempt 1', () => stops.some((s) => s.taskId === t && s.attempt === 1), 20_000);
      expect(stops.filter((s) => s.attempt !== 1 || s.taskId !== t)).toEqual([]);
      expect((await kq.json('show', String(job))).taskList[0].state).toBe('running');
    } finally {
      sub.close();
      agent.close();
    }
  });
});

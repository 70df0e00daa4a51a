/**
 * The request handler on an in-memory store: the same answers kqctl and the page get, without sockets.
 * Agents here are rows registered through the handler itself; assignments go nowhere (no socket yet).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Broadcast, JobDetail, JobSummary } from '../src/protocol/index.js';
import { JobLogs } from '../src/kq/job-logs.js';
import { ProgressTracker } from '../src/kq/progress.js';
import { Publisher } from '../src/kq/publisher.js';
import { RequestHandler, WithNotice, fitList } from '../src/kq/requests.js';
import { Scheduler } from '../src/kq/scheduler.js';
import { Store } from '../src/kq/store.js';
import { RequestError } from '../src/kq/submit.js';

let dir: string;
let store: Store;
let logs: JobLogs;
let handler: RequestHandler;
let published: Array<[string, Broadcast]>;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kq-requests-'));
  const log = pino({ level: 'silent' });
  const logPath = (id: number) => path.join(dir, `job-${id}.log`);
  store = new Store(':memory:', { blocklistAfter: 3 }, logPath);
  logs = new JobLogs(logPath, { maxTaskBytes: 1 << 20, maxOpen: 8 });
  const publisher = new Publisher({ store, logs, log });
  published = [];
  publisher.broadcasts.on('message', (topic, msg) => published.push([topic, msg]));
  const progress = new ProgressTracker();
  const scheduler = new Scheduler({
    store, logs, progress, log, epoch: 'e1', publisher, agentTimeoutMs: 10_000, blocklistAfter: 3,
    isRunning: () => true, killLocalAgent: () => undefined, ownsLocalAgent: () => false,
  });
  handler = new RequestHandler({ store, logs, log, epoch: 'e1', publisher, scheduler, heartbeatMs: 2000, security: () => ({ curve: false, insecure: false }), provesLocal: () => false });
});

afterEach(() => {
  logs.close();
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('request handler on an in-memory store', () => {
  it('submits a chunked job, lists it, shows its tasks and logs the submission', async () => {
    const job = handler.local({ type: 'submit', job: { name: 'spin', argv: ['povray', '+SF{start}', '+EF{end}'], frames: '1-10', chunk: 4 } }) as JobSummary;
    expect(job).toMatchObject({ id: 1, name: 'spin', state: 'Waiting', framesTotal: 10, tasks: { waiting: 3 } });
    expect((handler.local({ type: 'list' }) as JobSummary[]).map((j) => j.id)).toEqual([1]);
    const detail = handler.local({ type: 'show', jobId: 1 }) as JobDetail;
    expect(detail.taskList.map((t) => t.frames)).toEqual([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]);
    expect(fs.readFileSync(path.join(dir, 'job-1.log'), 'utf8')).toContain('job 1 "spin" submitted');
    await new Promise(setImmediate); // job broadcasts go out at the end of the event-loop turn
    expect(published.some(([, m]) => m.type === 'job' && m.jobId === 1)).toBe(true);
  });

  it('stops a job: waiting tasks cancelled, job Cancelled; restart puts them back', () => {
    handler.local({ type: 'submit', job: { argv: ['true'], frames: '1-3' } });
    const [stopped] = handler.local({ type: 'stop', jobIds: [1] }) as JobSummary[];
    expect(stopped).toMatchObject({ state: 'Cancelled', tasks: { cancelled: 3 } });
    const [restarted] = handler.local({ type: 'restart', jobIds: [1] }) as JobSummary[];
    expect(restarted).toMatchObject({ state: 'Waiting', tasks: { waiting: 3 } });
  });

  it('refuses unknown jobs, bad input and registrations from in-process callers', () => {
    expect(() => handler.local({ type: 'show', jobId: 99 })).toThrow(RequestError);
    expect(() => handler.local({ type: 'submit', job: { argv: [] } })).toThrow(/argv/);
    expect(() => handler.local({ type: 'submit', job: { argv: ['true'], frames: '5-1' } })).toThrow(RequestError);
    expect(() => handler.local({ type: 'register', agentId: 'a', host: 'h', pid: 1, local: false, running: null } as never)).toThrow(/request socket/);
  });

  it('forgets agents that left a day ago, and beyond the 500 most recent: `agents` stays one answer', () => {
    const now = Date.now();
    for (let i = 0; i < 700; i++) {
      store.registerAgent({ id: `gone-${i}`, host: 'h', pid: 100 + i, local: false, running: null, epoch: 'e1', session: `s${i}`, route: `r${i}` });
      store.agentGone(`gone-${i}`, 'bye');
    }
    store.registerAgent({ id: 'live', host: 'h', pid: 99, local: false, running: null, epoch: 'e1', session: 's', route: 'r' });
    expect(store.listAgents()).toHaveLength(701);
    expect(store.forgetGoneAgents(now - 86_400_000, 500)).toBe(200);
    const left = store.listAgents();
    expect(left).toHaveLength(501);
    expect(left.some((a) => a.id === 'live')).toBe(true);
    // Everything that left before the cut-off goes; the live agent stays.
    expect(store.forgetGoneAgents(Date.now() + 1, 500)).toBe(500);
    expect(store.listAgents().map((a) => a.id)).toEqual(['live']);
  });

  it('a list too big for one answer keeps every live job and the newest ended ones, and says how many it left out', () => {
    // 14,000 ended jobs and 10 waiting ones: about 4.5 MiB as JSON, past what one answer may carry.
    const job = (id: number, state: JobSummary['state']) => ({
      id, name: `shot_${id}_lighting_v003`, state, paused: false, after: [], progress: 0, framesDone: 0, framesTotal: 100,
      submittedAt: new Date(0).toISOString(), completedAt: null, logFile: `/home/artist/.local/share/kq/logs/job-${id}.log`,
      tasks: { waiting: 0, running: 0, completed: 100, failed: 0, cancelled: 0 },
    }) as unknown as JobSummary;
    const jobs = [...Array.from({ length: 14_000 }, (_, i) => job(i + 1, 'Completed')), ...Array.from({ length: 10 }, (_, i) => job(14_001 + i, 'Waiting'))];
    expect(JSON.stringify(jobs).length).toBeGreaterThan(3 * 1024 * 1024);
    const answer = fitList(jobs);
    expect(answer).toBeInstanceOf(WithNotice);
    const { data, notice } = answer as WithNotice;
    const ids = (data as JobSummary[]).map((j) => j.id);
    expect(JSON.stringify(data).length).toBeLessThanOrEqual(3 * 1024 * 1024);
    for (let id = 14_001; id <= 14_010; id++) expect(ids).toContain(id);
    expect(ids).toContain(14_000);
    expect(ids).not.toContain(1);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(notice).toMatch(new RegExp(`^${jobs.length - ids.length} of ${jobs.length} jobs not listed`));
    // A list that fits is answered as it is.
    expect(fitList(jobs.slice(0, 100))).toEqual(jobs.slice(0, 100));
  });
});

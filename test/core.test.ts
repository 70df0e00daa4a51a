/** Core: kq, kq-agent and kqctl render end to end on one machine (real processes, sockets, SQLite, POV-Ray). */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, ROOT, cleanupAll, isRunning, kqctl, tempDir, waitFor } from './helpers/kq.js';
import { readPng } from './helpers/png.js';

const SCENE = path.join(ROOT, 'test', 'fixtures', 'spin.pov');
const kqs: Kq[] = [];
const start = async (o: ConstructorParameters<typeof Kq>[0] = {}) => {
  const kq = await Kq.start(o);
  kqs.push(kq);
  return kq;
};
afterAll(() => cleanupAll(kqs));

describe('rendering', () => {
  it('renders a 12-frame POV-Ray animation over 2 agents in chunks, every frame a valid PNG', async () => {
    const kq = await start();
    const out = tempDir('kq-frames-');
    const id = await kq.submit('--name', 'spin', '--frames', '1-12', '--chunk', '3', '--cwd', out, '--',
      'povray', `+I${SCENE}`, '+Oshot.png', '+W160', '+H120', '+FN', '-D', '+KFI1', '+KFF12', '+SF{start}', '+EF{end}');
    const job = await kq.waitJob(id, 90_000);
    expect(job.state).toBe('Completed');
    expect(job.framesDone).toBe(12);
    expect(job.taskList).toHaveLength(4);
    const hosts = new Set(job.taskList.map((t: any) => t.agentId));
    expect(hosts.size).toBe(2);
    const files = fs.readdirSync(out).filter((f) => f.endsWith('.png')).sort();
    expect(files).toEqual(Array.from({ length: 12 }, (_, i) => `shot${String(i + 1).padStart(2, '0')}.png`));
    for (const f of files) expect(readPng(path.join(out, f))).toEqual({ width: 160, height: 120 });
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log).toMatch(/task \d+ \(frames 1-3\) attempt 1 started/);
    expect(log).toContain('POV-Ray finished');
    const list = await kq.ctl('list');
    expect(list.stdout).toMatch(new RegExp(`^${id}\\s+spin\\s+Completed\\s+12/12\\s`, 'm'));
    expect(list.stdout).toContain(path.join(kq.dataRoot, 'logs', `job-${id}.log`));
  });

  it('fills {frame} once per frame of a chunk, and a job without frames runs once', async () => {
    const kq = await start({ numAgents: 1 });
    const out = tempDir();
    const id = await kq.submit('--frames', '1-5', '--chunk', '5', '--cwd', out, '--', 'touch', 'f{frame:03}');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    expect(fs.readdirSync(out).sort()).toEqual(['f001', 'f002', 'f003', 'f004', 'f005']);
    const once = await kq.submit('--', 'sh', '-c', 'echo hello from kq');
    expect((await kq.waitJob(once)).framesTotal).toBe(0);
    expect((await kq.ctl('log', String(once))).stdout).toContain('hello from kq');
  });

  it('runs higher priority jobs first, otherwise first submitted first served', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    // The only agent stays busy until every job below is queued.
    const blocker = await kq.submit('--cwd', dir, '--', 'sh', '-c', 'while [ ! -f go ]; do sleep 0.05; done');
    await waitFor('blocker running', async () => (await kq.json('show', String(blocker))).state === 'Running');
    const low = await kq.submit('--name', 'low', '--', 'true');
    const normal = await kq.submit('--name', 'normal', '--', 'true');
    const high = await kq.submit('--name', 'high', '--priority', '10', '--', 'true');
    fs.writeFileSync(path.join(dir, 'go'), '');
    const jobs = await Promise.all([low, normal, high].map((id) => kq.waitJob(id)));
    const startedAt = jobs.map((j) => Date.parse(j.taskList[0].startedAt));
    expect(startedAt[2]).toBeLessThan(startedAt[0]!);
    expect(startedAt[0]).toBeLessThan(startedAt[1]!);
  });

  it('follows a log live with log -f until the job ends', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--', 'sh', '-c', 'for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done');
    const r = await kq.ctl('log', '-f', String(id));
    expect(r.exitCode).toBe(0);
    expect(r.stdout.match(/^line \d$/gm), r.stdout).toEqual(['line 1', 'line 2', 'line 3', 'line 4', 'line 5']);
    expect(r.stdout).toMatch(/completed after/);
  });
});

describe('failures and control', () => {
  it('a render that exits non-zero fails the job, the agent lives on, and restart works', async () => {
    const kq = await start({ numAgents: 1 });
    const agentsBefore = (await kq.agents()).map((a) => a.pid);
    const dir = tempDir();
    const submit = await kq.ctl('submit', '--wait', '--retries', '1', '--cwd', dir, '--', 'sh', '-c', 'test -f ok || { echo no marker >&2; exit 3; }');
    expect(submit.exitCode).toBe(1);
    const id = Number(submit.stdout.trim());
    const failed = await kq.json('show', String(id));
    expect(failed.state).toBe('Failed');
    expect(failed.taskList[0]).toMatchObject({ state: 'failed', exitCode: 3, attempts: 2 });
    expect((await kq.ctl('log', String(id))).stdout).toContain('no marker');
    expect((await kq.agents()).map((a) => a.pid)).toEqual(agentsBefore);
    agentsBefore.forEach((pid) => expect(isRunning(pid)).toBe(true));
    expect((await kq.ctl('wait', String(id))).exitCode).toBe(1);

    fs.writeFileSync(path.join(dir, 'ok'), '');
    expect((await kq.ctl('restart', '-q', String(id))).exitCode).toBe(0);
    expect((await kq.ctl('wait', String(id))).exitCode).toBe(0);
    expect((await kq.json('show', String(id))).state).toBe('Completed');
  });

  it('stop kills the running render (its whole process group) and cancels waiting tasks', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    // The render writes its own pid and its background child's: those, and nothing else, are checked.
    const id = await kq.submit('--frames', '1-3', '--cwd', dir, '--', 'sh', '-c', 'sleep 60 & echo $$ $! > pids; sleep 60; echo {frame}');
    const [leader, child] = await waitFor('render pids', () => {
      const pids = fs.existsSync(path.join(dir, 'pids')) ? fs.readFileSync(path.join(dir, 'pids'), 'utf8').trim().split(' ').map(Number) : [];
      return pids.length === 2 ? pids : null;
    });
    expect((await kq.json('show', String(id))).taskList[0].pid).toBe(leader);
    expect(isRunning(leader!) && isRunning(child!)).toBe(true);
    const r = await kq.ctl('stop', String(id));
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/Cancelled/);
    await waitFor('render gone', () => !isRunning(leader!) && !isRunning(child!), 10_000);
    const job = await kq.json('show', String(id));
    expect(job.taskList.map((t: any) => t.state)).toEqual(['cancelled', 'cancelled', 'cancelled']);
    // The agent is free again for new work.
    const next = await kq.submit('--', 'true');
    expect((await kq.waitJob(next)).state).toBe('Completed');
  });

  it('replaces an agent killed with -9 mid-render and the job still completes', async () => {
    const kq = await start({ numAgents: 2 });
    const id = await kq.submit('--frames', '1-6', '--', 'sh', '-c', 'sleep 2; echo {frame}');
    const busy = await waitFor('a busy agent', async () => (await kq.agents()).find((a) => a.state === 'busy'));
    process.kill(busy.pid, 'SIGKILL');
    await waitFor('a replacement agent', async () => {
      const agents = await kq.agents();
      return agents.length === 2 && !agents.some((a) => a.pid === busy.pid);
    }, 15_000);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.framesDone).toBe(6);
  });
});

describe('bad input', () => {
  it('refuses invalid frame ranges, unknown job ids and empty commands with exit 2, keeping the queue', async () => {
    const kq = await start({ numAgents: 0 });
    const kept = await kq.submit('--frames', '1-3', '--', 'true');
    const cases: Array<[string[], RegExp]> = [
      [['submit', '--frames', '5-1', '--', 'true'], /range "5-1" ends before it starts/],
      [['submit', '--frames', 'x', '--', 'true'], /invalid frame range part "x"/],
      [['submit', '--', ''], /empty command/],
      [['submit'], /missing required argument/],
      [['show', '999'], /no job with id 999/],
      [['stop', '999'], /no job with id 999/],
      [['log', 'abc'], /not a job id: "abc"/],
      [['submit', '--chunk', '0', '--', 'true'], /expected a whole number from 1/],
      [['submit', '--env', 'NOEQUALS', '--', 'true'], /--env takes KEY=VALUE/],
      [['bogus'], /unknown command/],
    ];
    for (const [args, message] of cases) {
      const r = await kq.ctl(...args);
      expect(r.exitCode, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr.trim().split('\n').length, args.join(' ')).toBeLessThanOrEqual(2);
    }
    const jobs = await kq.json('list');
    expect(jobs.map((j: any) => j.id)).toEqual([kept]);
    expect(jobs[0].framesTotal).toBe(3);
  });

  it('says clearly when kq is not running (exit 3, naming the address and the 2 s deadline)', async () => {
    const r = await kqctl(['--data-root', tempDir(), '--request-port', '1', 'list']);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toMatch(/cannot reach kq at tcp:\/\/127\.0\.0\.1:1 \(nothing answered in 2s, nothing was sent/);
  });

  it('refuses a second kq on the same data root, and an unwritable data root', async () => {
    const kq = await start({ numAgents: 0 });
    const second = new Kq({ dataRoot: kq.dataRoot, numAgents: 0 });
    await expect(second.start()).rejects.toThrow(/another kq \(pid \d+\) is already running on this data root/);
    expect((await kq.ctl('list')).exitCode).toBe(0);
    const file = path.join(tempDir(), 'a-file');
    fs.writeFileSync(file, '');
    await expect(new Kq({ dataRoot: path.join(file, 'sub'), numAgents: 0 }).start()).rejects.toThrow(/data root not writable/);
  });

  it('drops malformed and unknown ZeroMQ messages on every port and keeps working', async () => {
    const kq = await start({ numAgents: 1 });
    const zmq = await import('zeromq');
    const dealer = new zmq.Dealer({ linger: 0 });
    const push = new zmq.Push({ linger: 0 });
    dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
    push.connect(`tcp://127.0.0.1:${kq.info.updatePort}`);
    const junk = [Buffer.from('not json'), Buffer.from('{"v":2}'), Buffer.from('{"v":99,"type":"ping","rid":"x"}'),
      Buffer.from('{"v":2,"rid":"r","type":"submit","job":{"argv":[]}}'), Buffer.from('{"v":2,"type":"finished","agentId":"x","taskId":-1}'),
      Buffer.from([0xff, 0xfe, 0x00]), Buffer.alloc(0), Buffer.from('[]'), Buffer.from('null')];
    for (const frame of junk) {
      await dealer.send(frame);
      await dealer.send([frame, frame]);
      await push.send(frame);
    }
    // A bad request with a request id still gets a clear error reply.
    await dealer.send(Buffer.from('{"v":2,"rid":"r2","type":"submit","job":{"argv":[]}}'));
    const replies: string[] = [];
    dealer.receiveTimeout = 2000;
    for (;;) {
      const [frame] = await dealer.receive();
      replies.push(frame!.toString());
      if (frame!.toString().includes('"r2"')) break;
    }
    expect(JSON.parse(replies.at(-1)!)).toMatchObject({ ok: false, code: 'bad-request' });
    dealer.close();
    push.close();
    const id = await kq.submit('--', 'true');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    expect(kq.log()).toMatch(/dropped malformed message/);
  });
});

describe('big jobs', () => {
  it('shows the first 10,000 tasks of a bigger job and counts the rest; stop answers with summaries', async () => {
    const kq = await start({ numAgents: 0 });
    const id = await kq.submit('--frames', '1-10005', '--', 'true');
    const job = await kq.json('show', String(id));
    expect(job.taskList).toHaveLength(10_000);
    expect(job.tasksOmitted).toBe(5);
    expect(job.tasks.waiting).toBe(10_005);
    expect((await kq.ctl('show', String(id))).stdout).toMatch(/… and 5 more tasks \(not listed\)/);
    const [stopped] = await kq.json('stop', String(id));
    expect(stopped).toMatchObject({ id, state: 'Cancelled', framesTotal: 10_005 });
    expect(stopped.taskList).toBeUndefined();
  });
});

describe('lifecycle', () => {
  it('SIGTERM stops renders and agents, requeues running tasks, exits 0 and leaves no orphan', async () => {
    const kq = await start({ numAgents: 2 });
    const id = await kq.submit('--frames', '1-4', '--', 'sleep', '120');
    const pids = await waitFor('two renders', async () => {
      const tasks = (await kq.json('show', String(id))).taskList.filter((t: any) => t.pid);
      return tasks.length === 2 ? tasks.map((t: any) => t.pid as number) : null;
    });
    const agentPids = (await kq.agents()).map((a) => a.pid as number);
    expect(await kq.stop()).toBe(0);
    for (const pid of [...pids, ...agentPids]) expect(isRunning(pid), `pid ${pid}`).toBe(false);
    expect(fs.existsSync(path.join(kq.dataRoot, 'kq.json'))).toBe(false);
    // Restart on the same data root: the job is still there, nothing lost, tasks waiting again.
    const again = new Kq({ dataRoot: kq.dataRoot, numAgents: 0 });
    kqs.push(again);
    await again.start();
    const job = await again.json('show', String(id));
    expect(job.taskList.map((t: any) => t.state)).toEqual(['waiting', 'waiting', 'waiting', 'waiting']);
    expect(job.state).toBe('Waiting');
  });
});

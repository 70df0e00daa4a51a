/**
 * Fault suite: a crash anywhere costs at most the frame in flight. Real kq, real agents, real signals.
 * Timers are shortened through kq's options (heartbeat, agent timeout), never by skipping.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION } from '../src/protocol/version.js';
import { isRunning, sleep, startAgent, tempDir, waitFor, kqStarter } from './helpers/kq.js';

const FAST = ['--heartbeat', '250ms', '--agent-timeout', '2s', '--kill-grace', '1s'];
const start = kqStarter(FAST);

/** Each task appends its frame to `results` when it is done: a frame rendered twice shows up twice. */
function frameJob(dir: string, frames: string, work = 'sleep 0.05'): string[] {
  return ['--frames', frames, '--cwd', dir, '--', 'sh', '-c', `${work}; echo {frame} >> results`];
}
function results(dir: string): number[] {
  return fs.readFileSync(path.join(dir, 'results'), 'utf8').trim().split('\n').map(Number).sort((a, b) => a - b);
}
const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

describe('fault suite', () => {
  it('(a) kill -9 of kq twice during a 200-task job: the job completes, every frame exactly once', async () => {
    const kq = await start();
    const dir = tempDir();
    const id = await kq.submit(...frameJob(dir, '1-200'));
    for (const atDone of [40, 110]) {
      await waitFor(`${atDone} frames done`, async () => (await kq.json('show', String(id))).framesDone >= atDone, 60_000);
      await kq.kill9();
      await kq.start();
    }
    const job = await kq.waitJob(id, 120_000);
    expect(job.state).toBe('Completed');
    expect(job.framesDone).toBe(200);
    expect(results(dir)).toEqual(range(200));
    // Agents of the killed kq were adopted, not doubled; the log kept what was written before each crash.
    expect((await kq.agents()).filter((a) => a.state !== 'offline')).toHaveLength(2);
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log.match(/^\[kq\] task \d+ attempt \d+ completed/gm)!.length).toBeGreaterThanOrEqual(200);
  });

  it('(b) kill -9 of random agents ten times during a 200-task job: the job completes', async () => {
    const kq = await start();
    const dir = tempDir();
    // Long enough that the ten kills land while it runs (on a loaded machine each kqctl call takes a while).
    // Retries to spare: a task whose agent dies max(attempts, 3) times while running it fails, and a random kill may hit one task thrice.
    const id = await kq.submit('--retries', '9', ...frameJob(dir, '1-200', 'sleep 0.3'));
    let kills = 0;
    while (kills < 10) {
      const busy = await waitFor('a busy agent', async () => {
        const agents = (await kq.agents()).filter((a) => a.state === 'busy');
        return agents[Math.floor(Math.random() * agents.length)];
      }, 30_000);
      process.kill(busy.pid, 'SIGKILL');
      kills++;
      await sleep(200 + Math.random() * 300);
    }
    const job = await kq.waitJob(id, 120_000);
    expect(job.state).toBe('Completed');
    expect(new Set(results(dir))).toEqual(new Set(range(200)));
    expect((await kq.agents()).filter((a) => a.state === 'idle' || a.state === 'busy')).toHaveLength(2);
  });

  it('(c) an agent frozen with SIGSTOP is declared lost within the timeout, its task requeued, and the job completes', async () => {
    const kq = await start();
    const dir = tempDir();
    const id = await kq.submit(...frameJob(dir, '1-20', 'sleep 0.3'));
    const busy = await waitFor('a busy agent', async () => (await kq.agents()).find((a) => a.state === 'busy'));
    process.kill(busy.pid, 'SIGSTOP');
    await waitFor('the frozen agent to be lost', async () => !(await kq.agents()).some((a) => a.id === busy.id && a.state === 'busy'), 30_000);
    // Lost for its silence (not, say, for exiting): kq says so in its log.
    const lostLine = kq.log().split('\n').find((l) => l.includes('agent lost: no heartbeat') && l.includes(`"agent":${JSON.stringify(busy.id)}`));
    expect(lostLine).toBeDefined();
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    // The frozen agent's render may have finished its frame unseen: that frame can appear twice, no other.
    const done = results(dir);
    expect(new Set(done)).toEqual(new Set(range(20)));
    expect(done.length).toBeLessThanOrEqual(21);
    expect(isRunning(busy.pid)).toBe(false); // a hung local agent is killed and replaced
  });

  it('(d) 10,000 malformed messages on each of the three ports: kq stays up and a normal job completes', { timeout: 300_000 }, async () => {
    const kq = await start({ numAgents: 1 });
    const zmq = await import('zeromq');
    // sendTimeout: if kq stopped reading, a send fails here (EAGAIN) instead of the test hanging silently.
    const opts = { linger: 0, sendHighWaterMark: 20_000, sendTimeout: 10_000 };
    const dealer = new zmq.Dealer(opts);
    const push = new zmq.Push(opts);
    const xsub = new zmq.XSubscriber(opts);
    dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
    push.connect(`tcp://127.0.0.1:${kq.info.updatePort}`);
    xsub.connect(`tcp://127.0.0.1:${kq.info.broadcastPort}`);
    const junk = (i: number) => [
      Buffer.from(`{"v":2,"type":"finished","agentId":"x","taskId":${i}}`), Buffer.from(String(i)), Buffer.alloc(i % 64, i % 256),
      Buffer.from(`{"v":2,"rid":"${i}","type":"submit","job":{"argv":[]}}`), Buffer.from('{"v":2,"rid":"a","type":"nope"}'),
    ][i % 5]!;
    for (let i = 0; i < 10_000; i++) {
      await dealer.send(junk(i));
      await push.send(junk(i));
      await xsub.send(junk(i));
    }
    // And raw bytes that are not ZMTP at all.
    await Promise.all([kq.info.requestPort, kq.info.updatePort, kq.info.broadcastPort].map((port) => new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        for (let i = 0; i < 100; i++) s.write(Buffer.alloc(100, i));
        // Do not wait for kq to close: bytes that look like an old ZMTP greeting keep libzmq waiting for more.
        setTimeout(() => s.destroy(), 200);
      });
      s.on('close', () => resolve());
      s.on('error', () => resolve());
    })));
    for (const s of [dealer, push, xsub]) s.close();
    expect(kq.proc?.pid && isRunning(kq.proc.pid)).toBe(true);
    const dir = tempDir();
    const id = await kq.submit(...frameJob(dir, '1-5', 'true'));
    expect((await kq.waitJob(id)).state).toBe('Completed');
    expect(results(dir)).toEqual(range(5));
  });

  it('(e) a renderer that always fails on one host gets that host blocklisted; the job completes on the other', async () => {
    const kq = await start({ numAgents: 0 });
    startAgent(['--host-name', 'good-host', ...kq.agentArgs()]);
    startAgent(['--host-name', 'bad-host', ...kq.agentArgs()]);
    await waitFor('two agents', async () => (await kq.agents()).length === 2);
    const dir = tempDir();
    const id = await kq.submit(...frameJob(dir, '1-20', 'test "$KQ_AGENT_HOST" != bad-host || exit 7'));
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.blocklist).toEqual(['bad-host']);
    expect(results(dir)).toEqual(range(20));
    expect(job.taskList.every((t: any) => t.host === 'good-host')).toBe(true);
    expect((await kq.ctl('show', String(id))).stdout).toMatch(/Blocklist:\s+bad-host/);
    // restart clears the blocklist (--failed-only: nothing is requeued, so bad-host cannot fail again meanwhile)
    await kq.ctl('restart', '-q', '--failed-only', String(id));
    expect((await kq.json('show', String(id))).blocklist).toEqual([]);
  });
});

describe('more reliability', () => {
  it('an agent that comes back after being declared lost drops its stale task; nothing completes twice', async () => {
    const kq = await start({ numAgents: 0 });
    const a = startAgent(['--host-name', 'a', ...kq.agentArgs()]);
    await waitFor('agent a', async () => (await kq.agents()).length === 1);
    const dir = tempDir();
    // Attempt 1 (on a) would take 30 s; attempt 2 is quick.
    const id = await kq.submit(...frameJob(dir, '1', 'if [ "$KQ_ATTEMPT" = 1 ]; then sleep 30; fi'));
    const stalePid = await waitFor('task running on a', async () => (await kq.json('show', String(id))).taskList[0].pid);
    process.kill(a.pid!, 'SIGSTOP');
    await waitFor('a lost', async () => (await kq.agents())[0].state === 'lost', 10_000);
    startAgent(['--host-name', 'b', ...kq.agentArgs()]);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.taskList[0].host).toBe('b');
    expect(isRunning(stalePid)).toBe(true); // a is frozen, its render is not
    process.kill(a.pid!, 'SIGCONT');
    await waitFor('a registered again', async () => (await kq.agents()).find((x) => x.host === 'a')?.state === 'idle', 10_000);
    await waitFor("a's stale render killed", () => !isRunning(stalePid), 10_000);
    expect(results(dir)).toEqual([1]);
    expect((await kq.json('show', String(id))).state).toBe('Completed');
    expect(job.taskList[0].attempts).toBe(2);
  });

  it('a task over its --timeout is killed (whole group) and fails with a clear reason', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const id = await kq.submit('--timeout', '1s', '--retries', '0', '--cwd', dir, '--', 'sh', '-c', 'sleep 30 & echo $$ $! > pids; sleep 30');
    const job = await kq.waitJob(id, 30_000);
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].reason).toBe('timed out after 1s');
    expect((await kq.ctl('log', String(id))).stdout).toMatch(/failed: timed out after 1s/);
    // The render and its background child, by the pids the render wrote: both gone when the task ended.
    const pids = fs.readFileSync(path.join(dir, 'pids'), 'utf8').trim().split(' ').map(Number);
    expect(pids).toHaveLength(2);
    for (const pid of pids) expect(isRunning(pid), `pid ${pid}`).toBe(false);
  });

  it('caps the log a chatty task writes, keeping a marker', async () => {
    const kq = await start({ numAgents: 1, args: ['--max-task-log', '4096'] });
    const id = await kq.submit('--', 'sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo "line $i of chatter"; i=$((i+1)); done');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log).toMatch(/\[kq\] task output over 4096 bytes: the rest is not logged/);
    expect(Buffer.byteLength(log)).toBeLessThan(4096 + 2000);
    expect(log).toMatch(/completed after/);
  });

  it('refuses wire messages above the size limit (drops that connection) and keeps running', async () => {
    const kq = await start({ numAgents: 1 });
    const zmq = await import('zeromq');
    const dealer = new zmq.Dealer({ linger: 0, receiveTimeout: 15_000 });
    const seen: string[] = [];
    void (async () => { for await (const e of dealer.events) seen.push(e.type); })().catch(() => undefined);
    dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
    await waitFor('handshake with kq', () => seen.includes('handshake'));
    await dealer.send(Buffer.alloc(8 * 1024 * 1024, 0x20));
    // kq's socket refuses the frame by dropping the link (the message was sent, not lost in our own close).
    await waitFor('kq to drop the connection', () => seen.includes('disconnect'));
    // The same peer, reconnected, gets answers again; and kq still runs jobs.
    await dealer.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: 'after', type: 'ping' }));
    const [reply] = await dealer.receive();
    expect(JSON.parse(reply!.toString())).toMatchObject({ rid: 'after', ok: true });
    dealer.close();
    const id = await kq.submit('--', 'true');
    expect((await kq.waitJob(id)).state).toBe('Completed');
  });
});

/**
 * Issue 13, points 3 and 4, as a newcomer meets them with real kq, agents and kqctl: failures that explain
 * themselves (exit code or signal and the last stderr lines in show; a missing --cwd named; one task
 * numbering; a job without frames is "1 task"), and logs worth reading (a \r-redrawn counter kept as its
 * last value, task prefixes for jobs of several tasks, log --tail, log -f across a kq restart, how the job
 * ended, kq's own log readable on a terminal).
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, Kq, cleanupAll, tempDir, waitFor } from './helpers/kq.js';

const kqs: Kq[] = [];
const start = async (o: ConstructorParameters<typeof Kq>[0] = {}) => {
  const kq = await Kq.start({ ...o, args: ['--heartbeat', '250ms', ...(o.args ?? [])] });
  kqs.push(kq);
  return kq;
};
afterAll(() => cleanupAll(kqs));

describe('failures that explain themselves', () => {
  it('show gives a failed task its exit code and the last stderr lines; a signal is named', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c',
      'echo all fine on stdout; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "stderr line $i" >&2; done; echo "fatal: scene.pov not found" >&2; exit 3');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Failed');
    const task = job.taskList[0];
    expect(task.exitCode).toBe(3);
    expect(task.stderrTail.at(-1)).toBe('fatal: scene.pov not found');
    expect(task.stderrTail).not.toContain('all fine on stdout');
    expect(task.stderrTail).not.toContain('stderr line 1'); // a tail, not the whole stream
    const show = (await kq.ctl('show', String(id))).stdout;
    expect(show).toMatch(/Task 1 .*failed: exit code 3/);
    expect(show).toContain('fatal: scene.pov not found');
    expect(show).toContain('stderr line 12');

    const killed = await kq.submit('--retries', '0', '--', 'sh', '-c', 'echo about to die >&2; kill -KILL $$');
    const k = await kq.waitJob(killed);
    expect(k.taskList[0].signal).toBe('SIGKILL');
    expect(k.taskList[0].reason).toBe('killed by SIGKILL');
    expect((await kq.ctl('show', String(killed))).stdout).toMatch(/killed by SIGKILL[\s\S]*about to die/);
    expect((await kq.ctl('log', String(killed))).stdout).toMatch(/failed: killed by SIGKILL/);
  });

  it('a --cwd that does not exist says so', async () => {
    const kq = await start({ numAgents: 1 });
    const missing = path.join(tempDir(), 'no such dir');
    const id = await kq.submit('--retries', '0', '--cwd', missing, '--', 'true');
    const job = await kq.waitJob(id);
    expect(job.taskList[0].reason).toBe(`cannot start "true": working directory ${JSON.stringify(missing)} does not exist on this host`);
  });

  it('one task numbering: the log, show and kqctl use the job\'s own task numbers from 1', async () => {
    const kq = await start({ numAgents: 1 });
    await kq.waitJob(await kq.submit('--frames', '1-3', '--', 'true'));
    const id = await kq.submit('--frames', '10-11', '--retries', '0', '--', 'sh', '-c', 'test {frame} = 10');
    const job = await kq.waitJob(id);
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log).toMatch(/\[kq\] task 1 \(frame 10\) attempt 1 started/);
    expect(log).toMatch(/\[kq\] task 1 attempt 1 completed/);
    expect(log).toMatch(/\[kq\] task 2 attempt 1 failed: exit code 1/);
    expect(log).not.toMatch(/task [45]\b/); // the global task ids of this job's tasks
    expect(job.taskList.map((t: { number: number }) => t.number)).toEqual([1, 2]);
    const show = (await kq.ctl('show', String(id))).stdout;
    expect(show).toMatch(/^1\s+10\s+completed/m);
    expect(show).toMatch(/^2\s+11\s+failed/m);
  });

  it('a job without --frames is one task, not 0/0 frames', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--name', 'noframes', '--', 'true');
    await kq.waitJob(id);
    const list = (await kq.ctl('list')).stdout;
    expect(list).not.toContain('0/0');
    expect(list).toMatch(/noframes\s+Completed\s+1\/1 task\b/);
    const show = (await kq.ctl('show', String(id))).stdout;
    expect(show).not.toContain('0/0');
    expect((await kq.ctl('log', String(id))).stdout).toMatch(/submitted at \S+: 1 task \(no frames\)/);
    expect(show).toMatch(/Progress:\s+1\/1 task, 100%/);
  });
});

describe('logs worth reading', () => {
  it('a \\r-redrawn counter is kept as its last value per burst; progress still sees every redraw', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const counter = Array.from({ length: 200 }, (_, i) => `Rendered ${i + 1} of 400 pixels`).join('\\r');
    const id = await kq.submit('--cwd', dir, '--', 'sh', '-c',
      `printf 'Parsing\\n${counter}\\r' >&2; while [ ! -e go ]; do sleep 0.1; done; printf 'Rendered 400 of 400 pixels\\nPOV-Ray finished\\n' >&2`);
    // While it waits, the half-way redraw has reached the progress parser though not the log file.
    await waitFor('progress 50%', async () => (await kq.json('show', String(id))).taskList[0].progress === 50, 30_000);
    fs.writeFileSync(path.join(dir, 'go'), '');
    await kq.waitJob(id);
    // The render's own lines (kq's header line quotes the command, counter and all).
    const log = (await kq.ctl('log', String(id))).stdout.split('\n').filter((l) => !l.startsWith('[kq]')).join('\n');
    expect(log).toContain('Parsing\n');
    expect(log).not.toMatch(/Rendered \d+ of 400 pixels\r/);
    expect(log.match(/Rendered \d+ of 400 pixels/g)).toEqual(['Rendered 400 of 400 pixels']);
  });

  it('a burst keeps its last value when another line follows it on the same row, and when it ends the output', async () => {
    const kq = await start({ numAgents: 1 });
    // POV-Ray ends a frame's counter with \r and then, sometimes without a \n, its statistics.
    const id = await kq.submit('--', 'sh', '-c', 'printf "10%% done\\r50%% done\\r"; sleep 0.2; printf "Render Statistics\\n20%% done\\r100%% done\\r"');
    await kq.waitJob(id);
    const log = (await kq.ctl('log', String(id))).stdout.split('\n').filter((l) => !l.startsWith('[kq]'));
    expect(log).toEqual(['50% done', 'Render Statistics', '100% done']);
  });

  it('lines of a job of several tasks carry a task/frames prefix; log --tail N prints the last N lines', async () => {
    const kq = await start({ numAgents: 2 });
    const id = await kq.submit('--frames', '1-4', '--chunk', '2', '--', 'sh', '-c', 'echo rendering {start} to {end}');
    await kq.waitJob(id);
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log).toMatch(/^\[t1 f1-2\] rendering 1 to 2$/m);
    expect(log).toMatch(/^\[t2 f3-4\] rendering 3 to 4$/m);
    const tail = await kq.ctl('log', '--tail', '2', String(id));
    expect(tail.exitCode).toBe(0);
    expect(tail.stdout).toBe(log.split('\n').slice(-2).join('\n')); // execa drops the last newline of both
    expect(tail.stdout).toMatch(/\[kq\] job Completed: 4\/4 frames$/);
    const single = await kq.submit('--', 'echo', 'alone');
    await kq.waitJob(single);
    expect((await kq.ctl('log', String(single))).stdout).toMatch(/^alone$/m);
  });

  it('log -f survives a kq restart, says the attempt was interrupted and how the job ended', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const id = await kq.submit('--cwd', dir, '--', 'sh', '-c',
      'if [ -e ran ]; then echo second run; else touch ran; echo first run; sleep 600; fi');
    const follow = execa('node', [BIN.kqctl, '--data-root', kq.dataRoot, 'log', '-f', String(id)], { reject: false, all: true });
    let seen = '';
    follow.all!.on('data', (d: Buffer) => { seen += d.toString(); });
    await waitFor('first run in log -f', () => seen.includes('first run'), 30_000);
    await kq.stop();
    await kq.start();
    const r = await follow;
    expect(r.exitCode).toBe(0);
    expect(seen).toContain('second run');
    expect(seen).toMatch(/\[kq\] task 1 attempt 1 interrupted: kq stopped; requeued/);
    expect(seen).toMatch(/\[kq\] job Completed: 1\/1 task/);
    const lines = seen.split('\n');
    expect(lines.filter((l) => l === 'first run')).toHaveLength(1); // nothing printed twice
    expect(lines.indexOf('first run')).toBeLessThan(lines.indexOf('second run'));
  });

  it("kq's own log is readable on a terminal and JSON in logs/kq.log", async () => {
    const dataRoot = path.join(tempDir(), 'data');
    const kq = execa('script', ['-qfec', `node ${BIN.kq} --data-root '${dataRoot}' --num-agents 1 --request-port 0 --update-port 0 --broadcast-port 0 --http-port 0`, '/dev/null'],
      { reject: false, all: true, detached: true, buffer: false });
    let out = '';
    kq.all!.on('data', (d: Buffer) => { out += d.toString(); });
    try {
      await waitFor('an agent registered, on the terminal', () => /agent registered/.test(out), 30_000);
      expect(out).not.toMatch(/\{"level"/);
      out = out.replace(/\x1b\[[0-9;]*m/g, ''); // colours on a terminal
      expect(out).toMatch(/^\d\d:\d\d:\d\d(\.\d+)? INFO +agent registered/m);
      const file = fs.readFileSync(path.join(dataRoot, 'logs', 'kq.log'), 'utf8').trim().split('\n');
      expect(() => file.map((l) => JSON.parse(l))).not.toThrow();
    } finally {
      // kq runs in the pty's own session: stop it by the pid it wrote, then script ends with it.
      const info = path.join(dataRoot, 'kq.json');
      if (fs.existsSync(info)) process.kill(JSON.parse(fs.readFileSync(info, 'utf8')).pid, 'SIGTERM');
      else process.kill(-kq.pid!, 'SIGKILL');
      await kq;
    }
  });
});

/** `kq --exit-with PID`: kq stops with the application that started it; renders stop, tasks are requeued, nothing is lost. */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, Kq, cleanupAll, isRunning, processesMatching, tempDir, waitFor } from './helpers/kq.js';
import { identify, stillRunning } from '../src/kq/exit-with.js';

const kqs: Kq[] = [];
const apps: Array<ReturnType<typeof execa>> = [];
afterAll(async () => {
  for (const app of apps) app.kill('SIGKILL');
  await cleanupAll(kqs);
});

/** A stand-in for Blender or Katana: a process that runs until the test ends it. */
function startApplication() {
  const app = execa('sleep', ['300'], { reject: false, detached: true });
  apps.push(app);
  return app;
}

describe('kq --exit-with PID', () => {
  it('tells a process from a later one that got its pid (start time), and a gone one from a running one', async () => {
    const me = identify(process.pid)!;
    expect(me.startTime).toMatch(/^\d+$/);
    expect(stillRunning(me)).toBe(true);
    expect(stillRunning({ pid: process.pid, startTime: String(Number(me.startTime) + 1) })).toBe(false);
    const gone = execa('true');
    await gone;
    expect(identify(gone.pid!)).toBeNull();
  });

  it('stops kq and its agents when the process exits; the running render is killed and its task requeued, then rendered', async () => {
    const app = startApplication();
    const kq = await Kq.start({ numAgents: 1, args: ['--exit-with', String(app.pid)] });
    kqs.push(kq);
    const dir = tempDir('kq-exit-with-');
    // First attempt: records its pid and hangs; the attempt after kq's restart finishes at once.
    const id = await kq.submit('--frames', '1-2', '--chunk', '2', '--cwd', dir, '--', 'sh', '-c',
      'if [ -f first ]; then touch done_{start}_{end}; exit 0; fi; touch first; echo $$ > render.pid; exec sleep 120');
    const renderPid = await waitFor('the render to start', () => fs.existsSync(path.join(dir, 'render.pid')) && Number(fs.readFileSync(path.join(dir, 'render.pid'), 'utf8')));
    const agentPids = processesMatching(`--request-port ${kq.info.requestPort} `);
    expect(agentPids.length).toBeGreaterThan(0);

    app.kill('SIGKILL');
    await app;
    const exited = await kq.proc!;
    kq.proc = null;
    expect(exited.exitCode).toBe(0);
    expect(kq.output).toContain(`kq: process ${app.pid} (--exit-with) exited: stopping`);
    expect(isRunning(renderPid)).toBe(false);
    await waitFor('local agents to exit', () => agentPids.every((pid) => !isRunning(pid)));
    expect(fs.existsSync(path.join(kq.dataRoot, 'kq.json'))).toBe(false);

    // Nothing lost: started again (no --exit-with), kq runs the requeued task to the end.
    kq.options.args = [];
    await kq.start();
    const job = await kq.waitJob(id, 60_000);
    expect(job.state).toBe('Completed');
    expect(job.framesDone).toBe(2);
    expect(fs.existsSync(path.join(dir, 'done_1_2'))).toBe(true);
    expect(job.taskList[0].attempts).toBe(2);
  });

  it('refuses to start (exit code 2, one line) when no such process runs', async () => {
    const gone = execa('true');
    await gone;
    const dataRoot = path.join(tempDir(), 'data root');
    const r = await execa('node', [BIN.kq, '--data-root', dataRoot, '--num-agents', '0', '--request-port', '0', '--update-port', '0',
      '--broadcast-port', '0', '--http-port', '0', '--exit-with', String(gone.pid)], { reject: false, timeout: 30_000 });
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim()).toBe(`kq: --exit-with ${gone.pid}: no such process is running`);
    expect(fs.existsSync(path.join(dataRoot, 'kq.json'))).toBe(false);
    const bad = await execa('node', [BIN.kq, '--data-root', dataRoot, '--exit-with', 'blender'], { reject: false, timeout: 30_000 });
    expect(bad.exitCode).toBe(2);
  });
});

/**
 * Issue 16, item 2: renders forked by kq-spawn-helper (src/agent/spawn-helper.c) behave exactly as with
 * Node's spawn, which the agent falls back to (KQ_AGENT_NODE_SPAWN=1 forces it here). Both paths run the
 * same cases with real kq, agents and renders: a missing program, a missing cwd, binary output without a
 * newline, a setsid'd child that keeps the render's stdout open; and the helper's own death.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, isRunning, startAgent, tempDir, waitFor } from './helpers/kq.js';

const kqs: Kq[] = [];
/** Processes that left their render's group on purpose (setsid): killed at the end. */
const escapees: number[] = [];
/** Fake helpers' process groups (each started detached): killed at the end. */
const fakeGroups: number[] = [];
afterAll(async () => {
  for (const pid of escapees) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  for (const pgid of fakeGroups) try { process.kill(-pgid, 'SIGKILL'); } catch { /* gone */ }
  await cleanupAll(kqs);
});

async function logText(kq: Kq, id: number): Promise<string> {
  return (await kq.json('log', String(id))).text as string;
}

function agentLogs(kq: Kq): string {
  const dir = path.join(kq.dataRoot, 'logs');
  return fs.readdirSync(dir).filter((f) => f.includes('agent')).map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n');
}

const paths = [
  { name: 'kq-spawn-helper', env: {}, parent: 'kq-spawn-helper' },
  { name: "Node's spawn (fallback)", env: { KQ_AGENT_NODE_SPAWN: '1' }, parent: null },
];

describe.each(paths)('renders started by $name', ({ env, parent }) => {
  let kq: Kq;
  it('start kq with one agent; renders have the expected parent', async () => {
    kq = await Kq.start({ numAgents: 1, env, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', 'echo "parent=$(cat /proc/$PPID/comm)"');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    const text = await logText(kq, id);
    if (parent) expect(text).toContain(`parent=${parent}`);
    else expect(text).not.toContain('parent=kq-spawn-helper');
    if (parent) expect(agentLogs(kq)).not.toContain("renders start with Node's spawn");
    else expect(agentLogs(kq)).toContain("renders start with Node's spawn (slower per task): KQ_AGENT_NODE_SPAWN=1");
  });

  it('a program that does not exist fails with ENOENT, and the agent takes the next task', async () => {
    const id = await kq.submit('--retries', '0', '--', 'kq-no-such-program-anywhere', 'x');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].reason).toBe('cannot start "kq-no-such-program-anywhere": no such program on this host (ENOENT; is it installed and on PATH?)');
    const file = path.join(tempDir(), 'not-executable');
    fs.writeFileSync(file, '#!/bin/sh\necho hi\n', { mode: 0o644 });
    const noExec = await kq.waitJob(await kq.submit('--retries', '0', '--', file));
    expect(noExec.taskList[0].reason).toBe(`cannot start ${JSON.stringify(file)}: EACCES`);
    expect((await kq.waitJob(await kq.submit('--', 'true'))).state).toBe('Completed');
  });

  it('a missing cwd is named; a cwd that is a file too', async () => {
    const missing = path.join(tempDir(), 'no such dir');
    const job = await kq.waitJob(await kq.submit('--retries', '0', '--cwd', missing, '--', 'true'));
    expect(job.taskList[0].reason).toBe(`cannot start "true": working directory ${JSON.stringify(missing)} does not exist on this host`);
    const file = path.join(tempDir(), 'a-file');
    fs.writeFileSync(file, '');
    const notDir = await kq.waitJob(await kq.submit('--retries', '0', '--cwd', file, '--', 'true'));
    expect(notDir.taskList[0].reason).toBe(`cannot start "true": working directory ${JSON.stringify(file)} is not a directory on this host`);
  });

  it('argv, cwd, environment and PATH lookup are the ones asked for; stdin is empty; signals are reset', async () => {
    const dir = tempDir();
    const id = await kq.submit('--retries', '0', '--cwd', dir, '--env', 'KQ_T=a b  c', '--', 'sh', '-c',
      'printf "<%s>" "$@"; echo; pwd; echo "env=$KQ_T"; cat; echo "stdin-end"; grep -E "^(SigBlk|SigIgn)" /proc/self/status; ' +
      'echo "pgid=$(cut -d" " -f5 /proc/self/stat) sid=$(cut -d" " -f6 /proc/self/stat) pid=$$"', 'argv0', 'one two', '', '*', '$HOME');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    const text = await logText(kq, id);
    expect(text).toContain('<one two><><*><$HOME>');
    expect(text).toContain(`\n${fs.realpathSync(dir)}\n`);
    expect(text).toContain('env=a b  c');
    expect(text).toContain('stdin-end');
    expect(text).toMatch(/SigBlk:\s+0+\n/);
    expect(text).toMatch(/SigIgn:\s+0+\n/);
    const [, pgid, sid, pid] = /pgid=(\d+) sid=(\d+) pid=(\d+)/.exec(text)!;
    expect(pgid).toBe(pid); // its own group and session (detached: true)
    expect(sid).toBe(pid);
  });

  it('binary output with NULs and no final newline reaches the log whole; a large burst too', async () => {
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c',
      'printf "bin:\\000\\001\\377:end"; printf "err-no-newline" >&2; head -c 300000 /dev/zero | tr "\\0" "x"');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    const text = await logText(kq, id);
    expect(text).toContain('err-no-newline');
    expect(text).toContain('bin:');
    expect(text).toContain(':end');
    expect(text.split('x').length - 1).toBeGreaterThanOrEqual(64 * 1024); // cut into lines of at most 64 KiB
  });

  it("a setsid'd child holding stdout: the task still ends, and its later output is in no other task's log", async () => {
    const pidFile = path.join(tempDir(), 'escapee.pid');
    const first = await kq.submit('--retries', '0', '--', 'sh', '-c',
      `setsid sh -c 'echo $$ > ${pidFile}; sleep 1; echo LATE-ESCAPEE-OUTPUT; sleep 1; echo LATE-AGAIN' & ` +
      // Out of the group before the leader ends (else the group's end may kill it before its setsid).
      `while [ ! -s ${pidFile} ]; do sleep 0.05; done; echo first-done`);
    const second = await kq.submit('--retries', '0', '--', 'sh', '-c', 'echo second-start; sleep 3; echo second-end');
    expect((await kq.waitJob(first)).state).toBe('Completed');
    escapees.push(Number(fs.readFileSync(pidFile, 'utf8')));
    expect((await kq.waitJob(second)).state).toBe('Completed');
    expect(await logText(kq, first)).toContain('first-done');
    const secondLog = await logText(kq, second);
    expect(secondLog).toContain('second-end');
    expect(secondLog).not.toContain('LATE');
    expect(await logText(kq, first)).not.toContain('LATE-AGAIN');
  });

  it('a script without a #! line runs through /bin/sh, by path and found on PATH (as execvp does)', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'kq-no-shebang'), 'echo "no-shebang:$0:$*"\n', { mode: 0o755 });
    const byPathId = await kq.submit('--retries', '0', '--', path.join(dir, 'kq-no-shebang'), 'a', 'b c');
    expect((await kq.waitJob(byPathId)).state).toBe('Completed');
    expect(await logText(kq, byPathId)).toContain(`no-shebang:${path.join(dir, 'kq-no-shebang')}:a b c`);
    const onPathId = await kq.submit('--retries', '0', '--env', `PATH=/kq-no-such-dir:${dir}:/usr/bin:/bin`, '--', 'kq-no-shebang', 'x');
    expect((await kq.waitJob(onPathId)).state).toBe('Completed');
    expect(await logText(kq, onPathId)).toContain(`no-shebang:${path.join(dir, 'kq-no-shebang')}:x`);
  });

  it('a PATH entry longer than any path is passed over; the program is found further on', async () => {
    const job = await kq.waitJob(await kq.submit('--retries', '0', '--env', `PATH=/${'d'.repeat(5000)}:/usr/bin:/bin`, '--', 'true'));
    expect(job.state).toBe('Completed');
  });

  it.runIf(parent !== null)('a PATH made only of a too-long entry: ENAMETOOLONG, not "no such program"', async () => {
    const job = await kq.waitJob(await kq.submit('--retries', '0', '--env', `PATH=/${'d'.repeat(5000)}`, '--', 'true'));
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].reason).toBe('cannot start "true": ENAMETOOLONG');
  });

  it.runIf(parent !== null)('a render killed by a real-time signal fails, saying which (Node would call it exit code 0)', async () => {
    for (const signal of [34, 40]) {
      const job = await kq.waitJob(await kq.submit('--retries', '0', '--', 'sh', '-c', `kill -${signal} $$`));
      expect(job.state).toBe('Failed');
      expect(job.taskList[0].reason).toBe(`killed by signal ${signal}`);
    }
  });

  it.runIf(parent !== null)('the helper killed mid-render: the task fails with a clear reason, its render is ended, the next task runs', async () => {
    const pidFile = path.join(tempDir(), 'render.pid');
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', `echo $$ > ${pidFile}; echo "helper=$PPID"; sleep 60`);
    const helper = await waitFor('the render to report its helper', async () => /helper=(\d+)/.exec(await logText(kq, id))?.[1]);
    const render = Number(fs.readFileSync(pidFile, 'utf8'));
    process.kill(Number(helper), 'SIGKILL');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].reason).toMatch(/kq-spawn-helper \(which started this render\) was killed by SIGKILL; its outcome is unknown/);
    await waitFor('the render to be ended', () => !isRunning(render));
    const next = await kq.submit('--', 'sh', '-c', 'echo "parent=$(cat /proc/$PPID/comm)"');
    expect((await kq.waitJob(next)).state).toBe('Completed');
    expect(await logText(kq, next)).toContain('parent=kq-spawn-helper');
  });
});

describe('the helper itself', () => {
  it('leaves no zombie behind after many renders, and leaves with its agent (kill -9)', async () => {
    const kq = await Kq.start({ numAgents: 0, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const agent = startAgent(['--host-name', 'helped', ...kq.agentArgs()]);
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    await kq.waitJob(await kq.submit('--frames', '1-40', '--', 'true'));
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', 'echo "helper=$PPID"; sleep 60');
    const helper = Number(await waitFor('the render to report its helper', async () => /helper=(\d+)/.exec(await logText(kq, id))?.[1]));
    const children = childrenOfPid(helper).map((p) => {
      const stat = readOr(`/proc/${p}/stat`);
      return stat ? stat.slice(stat.lastIndexOf(')') + 2)[0] : null;
    }).filter((s) => s !== null);
    expect(children.length).toBe(1); // the running render only: the 40 earlier ones were all reaped
    expect(children).not.toContain('Z');
    process.kill(agent.pid!, 'SIGKILL');
    await waitFor('the helper to leave with its agent', () => !isRunning(helper), 20_000);
  });

  it('a render outlives no helper: killed with it even while its agent cannot act (the agent may not know its pid yet)', async () => {
    const kq = await Kq.start({ numAgents: 0, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const agent = startAgent(['--host-name', 'frozen', ...kq.agentArgs()]);
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const pidFile = path.join(tempDir(), 'render.pid');
    const childFile = path.join(tempDir(), 'child.pid');
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', `sleep 60 & echo $! > ${childFile}; echo $$ > ${pidFile}; echo "helper=$PPID"; sleep 60`);
    const helper = Number(await waitFor('the render to report its helper', async () => /helper=(\d+)/.exec(await logText(kq, id))?.[1]));
    const render = Number(fs.readFileSync(pidFile, 'utf8'));
    const child = Number(fs.readFileSync(childFile, 'utf8'));
    escapees.push(child);
    // The agent frozen: neither it nor its guard will end the render; only the helper's death can.
    process.kill(agent.pid!, 'SIGSTOP');
    try {
      process.kill(helper, 'SIGKILL');
      await waitFor('the render to die with its helper', () => !isRunning(render), 10_000);
    } finally {
      process.kill(agent.pid!, 'SIGCONT');
    }
    // Its child (beyond PR_SET_PDEATHSIG's reach): the agent knew the group before the render could run, and ends it.
    await waitFor('the render\'s child to die too', () => !isRunning(child), 30_000);
  });
});

describe('a helper that cannot run here, or lies', () => {
  const unrunnable = [
    // As a binary for another CPU or C library: it exits at once, before its hello.
    { name: 'dies at once', make: (file: string) => { fs.writeFileSync(file, '#!/bin/false\n', { mode: 0o755 }); return file; } },
    // A path under a regular file: Node's spawn throws ENOTDIR synchronously.
    { name: 'cannot even be spawned', make: (file: string) => { fs.writeFileSync(file, ''); return path.join(file, 'kq-spawn-helper'); } },
  ];
  it.each(unrunnable)('a helper binary that $name: no task is lost, renders start with Node\'s spawn (said once)', async ({ make }) => {
    const fake = make(path.join(tempDir(), 'kq-spawn-helper'));
    const kq = await Kq.start({ numAgents: 1, env: { KQ_AGENT_SPAWN_HELPER: fake }, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const id = await kq.submit('--retries', '0', '--frames', '1-4', '--', 'sh', '-c', 'echo "parent=$(cat /proc/$PPID/comm)"');
    const job = await kq.waitJob(id);
    expect(job.taskList.map((t: { state: string }) => t.state)).toEqual(['completed', 'completed', 'completed', 'completed']);
    expect(job.state).toBe('Completed');
    expect(await logText(kq, id)).not.toContain('parent=kq-spawn-helper');
    const said = agentLogs(kq).split('\n').filter((l) => l.includes("renders start with Node's spawn"));
    expect(said).toHaveLength(1);
    // Exited before its hello: never again. Could not be started (which may pass): after three tries.
    expect(said[0]).toMatch(/before it could start anything|3 times in a row/);
  });

  it('a helper that sends a malformed frame is a dead helper, not a dead agent; the render it never started runs with Node\'s spawn', async () => {
    const fake = path.join(tempDir(), 'kq-spawn-helper');
    // Hello, then a 'started' frame with no pid in it (payload length 0) for the render it was asked for.
    fs.writeFileSync(fake, "#!/bin/sh\nprintf 'H\\000\\000\\000\\000\\000\\000\\000\\000'\nhead -c 9 >/dev/null\nprintf 'S\\001\\000\\000\\000\\000\\000\\000\\000'\nexec cat >/dev/null\n", { mode: 0o755 });
    const kq = await Kq.start({ numAgents: 0, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const agent = startAgent(['--host-name', 'lied-to', ...kq.agentArgs()], { KQ_AGENT_SPAWN_HELPER: fake });
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', 'echo "parent=$(cat /proc/$PPID/comm)"');
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(isRunning(agent.pid!)).toBe(true);
    expect(await logText(kq, id)).not.toContain('parent=kq-spawn-helper');
  });
});

/** A fake helper: a shell script that records its pid in `dir`/helper.pid, then runs `body`. */
function fakeHelper(dir: string, body: string): string {
  const file = path.join(dir, 'kq-spawn-helper');
  fs.writeFileSync(file, `#!/bin/sh\necho $$ > ${path.join(dir, 'helper.pid')}\n${body}\n`, { mode: 0o755 });
  return file;
}

async function fakeHelperPid(dir: string): Promise<number> {
  const pid = Number(await waitFor('the fake helper to run', () => readOr(path.join(dir, 'helper.pid')) || null));
  fakeGroups.push(pid);
  return pid;
}

const HELLO = "printf 'H\\000\\000\\000\\000\\000\\000\\000\\000'";

describe('a helper that hangs or dies on its first request', () => {
  it('a helper that never says hello: it is killed, the renders start with Node\'s spawn', async () => {
    const dir = tempDir();
    const fake = fakeHelper(dir, 'exec sleep 1000');
    const kq = await Kq.start({ numAgents: 1, env: { KQ_AGENT_SPAWN_HELPER: fake }, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const id = await kq.submit('--retries', '0', '--frames', '1-2', '--', 'sh', '-c', 'echo "parent=$(cat /proc/$PPID/comm)"');
    const helper = await fakeHelperPid(dir);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(await logText(kq, id)).not.toContain('parent=kq-spawn-helper');
    await waitFor('the silent helper killed', () => !isRunning(helper), 20_000);
  });

  it('a helper that says hello and then ignores the agent: killed when kq stops', async () => {
    const dir = tempDir();
    const fake = fakeHelper(dir, `${HELLO}\nexec sleep 1000`);
    const kq = await Kq.start({ numAgents: 1, env: { KQ_AGENT_SPAWN_HELPER: fake }, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    await kq.submit('--retries', '0', '--', 'true');
    const helper = await fakeHelperPid(dir);
    await kq.stop();
    await waitFor('the deaf helper killed', () => !isRunning(helper), 20_000);
  });

  it('a helper that says hello and then never answers: a stop and a timeout still end the task on the agent', async () => {
    const dir = tempDir();
    const fake = fakeHelper(dir, `${HELLO}\nexec cat >/dev/null`);
    const kq = await Kq.start({ numAgents: 1, env: { KQ_AGENT_SPAWN_HELPER: fake }, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const first = await kq.submit('--retries', '0', '--', 'true');
    await fakeHelperPid(dir);
    await waitFor('the first task running', async () => (await kq.json('show', String(first))).state === 'Running' || null, 30_000);
    await kq.ctl('stop', String(first));
    // The agent is free again (it dropped the render it had asked for): it takes the next task, whose timeout ends it.
    const second = await kq.waitJob(await kq.submit('--retries', '0', '--timeout', '2s', '--', 'true'));
    expect(second.state).toBe('Failed');
    expect(second.taskList[0].reason).toMatch(/timed out/);
  });

  it('a helper that says hello and exits on its first request: the render starts with Node\'s spawn (nothing lost)', async () => {
    const dir = tempDir();
    const fake = fakeHelper(dir, `${HELLO}\nhead -c 9 >/dev/null`);
    const kq = await Kq.start({ numAgents: 1, env: { KQ_AGENT_SPAWN_HELPER: fake }, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const id = await kq.submit('--retries', '0', '--', 'sh', '-c', 'echo "parent=$(cat /proc/$PPID/comm)"');
    await fakeHelperPid(dir);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(await logText(kq, id)).not.toContain('parent=kq-spawn-helper');
  });
});

/** What an agent started by the test writes (its log). */
function outputOf(agent: ReturnType<typeof startAgent>): string[] {
  const chunks: string[] = [];
  agent.all!.on('data', (c: Buffer) => chunks.push(c.toString()));
  return chunks;
}

/**
 * A fake helper in Python that says hello and, for each run request, does `onRun` (Python, with `i` the
 * request's id and `frame(type, id, payload)`), then reads and ignores everything else the agent sends.
 */
function pythonHelper(dir: string, onRun: string): string {
  const file = path.join(dir, 'kq-spawn-helper');
  fs.writeFileSync(file, `#!/usr/bin/env python3
import os, struct, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
open(${JSON.stringify(path.join(dir, 'helper.pid'))}, 'w').write(str(os.getpid()))
def frame(t, i, payload=b''):
    out.write(t + struct.pack('<II', i, len(payload)) + payload)
    out.flush()
frame(b'H', 0)
while True:
    head = inp.read(9)
    if len(head) < 9:
        sys.exit(0)
    i, n = struct.unpack('<II', head[1:])
    inp.read(n)
    if head[:1] != b'R':
        continue
${onRun.split('\n').map((l) => `    ${l}`).join('\n')}
`, { mode: 0o755 });
  return file;
}

describe('a helper that lies about a real pid, or hangs once a render runs', () => {
  // With the timeout, an agent that believed the pid would end its "group": pid 0 is the agent's own group,
  // pid 1 (kill(-1)) every process of the user, the agent's pid its own group again, a bystander's pid that one.
  it.each(['0', '1', 'the agent', 'a bystander'])("a helper that says a render started as pid %s: a liar, nothing outside is signalled, the task runs with Node's spawn", async (whose) => {
    const dir = tempDir();
    const sentinel = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
    fakeGroups.push(sentinel.pid!);
    const pid = whose === 'the agent' ? 'os.getppid()' : whose === 'a bystander' ? String(sentinel.pid) : whose;
    const fake = pythonHelper(dir, `frame(b'S', i, struct.pack('<i', ${pid}))`);
    const kq = await Kq.start({ numAgents: 0, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const agent = startAgent(['--host-name', 'lied-to-pid', ...kq.agentArgs()], { KQ_AGENT_SPAWN_HELPER: fake });
    const said = outputOf(agent);
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const id = await kq.submit('--retries', '0', '--timeout', '3s', '--', 'sh', '-c', 'echo "parent=$(cat /proc/$PPID/comm)"');
    await fakeHelperPid(dir);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(await logText(kq, id)).not.toContain('parent=kq-spawn-helper');
    expect(isRunning(agent.pid!)).toBe(true);
    expect(isRunning(sentinel.pid!)).toBe(true);
    expect(said.join('')).toMatch(/sent a bad 'started' frame/);
  });

  it('a helper that hangs once its render runs (no exit ever reported, nothing reaped): the timeout still ends the task', async () => {
    const dir = tempDir();
    // Its child really is its own (and in its own session), so the agent takes it; then the helper goes silent.
    const fake = pythonHelper(dir, `pid = os.fork()
if pid == 0:
    os.setsid()
    os.execvp('sleep', ['sleep', '1000'])
open(${JSON.stringify(path.join(dir, 'render.pid'))}, 'w').write(str(pid))
frame(b'S', i, struct.pack('<i', pid))`);
    const kq = await Kq.start({ numAgents: 0, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const said = outputOf(startAgent(['--host-name', 'hung-helper', '--kill-grace', '1s', ...kq.agentArgs()], { KQ_AGENT_SPAWN_HELPER: fake }));
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const id = await kq.submit('--retries', '0', '--timeout', '2s', '--', 'true');
    await fakeHelperPid(dir);
    const render = Number(await waitFor('the render', () => readOr(path.join(dir, 'render.pid')) || null));
    escapees.push(render);
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Failed');
    expect(job.taskList[0].reason).toMatch(/timed out/);
    expect(said.join('')).toMatch(/did not report the end of a render/);
    // And the agent is free: the next task runs (with a new helper, which hangs the same way: the timeout again).
    expect((await kq.waitJob(await kq.submit('--retries', '0', '--timeout', '2s', '--', 'true'))).taskList[0].reason).toMatch(/timed out/);
  });
});

/** Children of `pid`, from its own /proc entry. */
function childrenOfPid(pid: number): number[] {
  const out: number[] = [];
  for (const t of (() => { try { return fs.readdirSync(`/proc/${pid}/task`); } catch { return []; } })()) {
    out.push(...readOr(`/proc/${pid}/task/${t}/children`).split(/\s+/).filter((x) => x !== '').map(Number));
  }
  return out;
}

/** A helper 'R' frame: run argv with env, no cwd. */
function runFrame(id: number, argv: string[], env: string[]): Buffer {
  const head = Buffer.alloc(9);
  head.writeUInt32LE(argv.length, 0);
  head.writeUInt32LE(env.length, 4);
  const payload = Buffer.concat([head, Buffer.from([...argv, ...env].join('\0') + '\0')]);
  const frame = Buffer.alloc(9);
  frame.writeUInt8('R'.charCodeAt(0), 0);
  frame.writeUInt32LE(id, 1);
  frame.writeUInt32LE(payload.length, 5);
  return Buffer.concat([frame, payload]);
}

/** A helper frame to it with no payload: 'A' (acknowledged) or 'C' (close). */
function bareFrame(type: 'A' | 'C', id: number): Buffer {
  const frame = Buffer.alloc(9);
  frame.writeUInt8(type.charCodeAt(0), 0);
  frame.writeUInt32LE(id, 1);
  return frame;
}

/** The built helper, driven by the test as its agent: frames read as they come; `ack` answers each 'S' with 'A'. */
function driveHelper(ack: boolean) {
  const binary = path.resolve('dist/kq-spawn-helper');
  expect(fs.existsSync(binary), `${binary} is not built: no C compiler when npm run build ran? (.ci/run installs gcc)`).toBe(true);
  const helper = spawn(binary, [], { stdio: ['pipe', 'pipe', 'ignore'], detached: true, env: {} });
  fakeGroups.push(helper.pid!);
  const frames: Array<{ type: string; id: number; payload: Buffer }> = [];
  let pending = Buffer.alloc(0);
  helper.stdout!.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 9 && pending.length >= 9 + pending.readUInt32LE(5)) {
      const len = pending.readUInt32LE(5);
      const f = { type: String.fromCharCode(pending[0]!), id: pending.readUInt32LE(1), payload: Buffer.from(pending.subarray(9, 9 + len)) };
      frames.push(f);
      if (ack && f.type === 'S') helper.stdin!.write(bareFrame('A', f.id));
      pending = pending.subarray(9 + len);
    }
  });
  return { helper, frames };
}

describe('the helper driven directly (the test is its agent)', () => {
  it('a render that enlarges its pipe, fills it and exits: its exit is reported after all its output', async () => {
    const { helper, frames } = driveHelper(true);
    const dir = tempDir();
    // It writes 1 MiB and exits while the helper is stopped: the helper then sees its output and its exit at once.
    const script = 'import fcntl, os, time\nfcntl.fcntl(1, 1031, 1 << 20)\nopen("pid", "w").write(str(os.getpid()))\n' +
      'while not os.path.exists("go"): time.sleep(0.02)\nos.write(1, b"z" * (1 << 20))\n';
    helper.stdin!.write(runFrame(1, ['sh', '-c', `cd ${dir} && exec python3 -c '${script}'`], [`PATH=${process.env.PATH}`]));
    const render = Number(await waitFor('the render to run', () => readOr(path.join(dir, 'pid')) || null));
    process.kill(helper.pid!, 'SIGSTOP');
    fs.writeFileSync(path.join(dir, 'go'), '');
    await waitFor('the render to exit', () => /^\d+ \(.*\) Z/.test(readOr(`/proc/${render}/stat`)), 30_000);
    process.kill(helper.pid!, 'SIGCONT');
    const exit = await waitFor('its exit', () => frames.findIndex((f) => f.type === 'X') + 1 || null, 30_000) - 1;
    helper.stdin!.end();
    const outBytes = frames.slice(0, exit).filter((f) => f.type === 'O').reduce((n, f) => n + f.payload.length, 0);
    expect(outBytes).toBe(1 << 20);
  });

  it("a render runs only once its agent acknowledged its pid ('A', after telling its guard): an agent gone before that leaves no process of it", async () => {
    const { helper, frames } = driveHelper(false);
    const dir = tempDir();
    const env = [`PATH=${process.env.PATH}`];
    // A leader that starts a background child and exits at once: the helper reaps the leader, so only the
    // agent's guard could end the child, and the guard learns the group only when the agent reads the pid.
    const render = (n: number) => ['sh', '-c', `sleep 60 & echo $! > ${dir}/child${n}; echo $$ > ${dir}/leader${n}; exit 0`];
    helper.stdin!.write(runFrame(1, render(1), env));
    const started = await waitFor("render 1's pid", () => frames.find((f) => f.type === 'S' && f.id === 1)?.payload.readInt32LE(0) ?? null);
    // Not acknowledged: it does not run. (Before 'A' existed, it ran once its 'S' was written.)
    await waitFor('render 1 to run, if it does', () => fs.existsSync(`${dir}/leader1`) || null, 2000).catch(() => undefined);
    if (readOr(`${dir}/child1`)) escapees.push(Number(readOr(`${dir}/child1`))); // it ran: the test fails, and leaves nothing
    expect(fs.existsSync(`${dir}/leader1`)).toBe(false);
    expect(isRunning(started)).toBe(true); // forked, waiting
    // Acknowledged, the next one runs (the test can see a render run at all).
    helper.stdin!.write(runFrame(2, render(2), env));
    const second = await waitFor("render 2's pid", () => frames.find((f) => f.type === 'S' && f.id === 2)?.payload.readInt32LE(0) ?? null);
    helper.stdin!.write(bareFrame('A', 2));
    await waitFor('render 2 to run', () => fs.existsSync(`${dir}/child2`) && readOr(`${dir}/child2`) !== '' || null);
    escapees.push(Number(readOr(`${dir}/child2`)), second);
    // The agent dies (end of file on the helper's stdin): the unacknowledged render never ran, nothing of it is left.
    helper.stdin!.end();
    await waitFor('render 1 gone', () => !isRunning(started), 20_000);
    expect(fs.existsSync(`${dir}/leader1`)).toBe(false);
    expect(fs.existsSync(`${dir}/child1`)).toBe(false);
  });

  it("a render whose 'S' frame the agent has not read (output queued for it) runs nothing: the helper killed -9 leaves no process of it", async () => {
    const dir = tempDir();
    const { helper, frames } = driveHelper(true);
    const env = [`PATH=${process.env.PATH}`];
    helper.stdin!.write(runFrame(1, ['sh', '-c', `cd ${dir}; while [ ! -e go ]; do sleep 0.05; done; exec head -c 20000000 /dev/zero`], env));
    const flood = await waitFor('the flooding render acknowledged', () => frames.find((f) => f.type === 'S' && f.id === 1)?.payload.readInt32LE(0) ?? null);
    helper.stdout!.pause(); // from now on the agent reads nothing: output queues up in the helper
    fs.writeFileSync(path.join(dir, 'go'), '');
    // More than the pipes and Node's buffer hold: the rest is queued in the helper now, and stays.
    await waitFor('the flood queued', () => Number(/wchar: (\d+)/.exec(readOr(`/proc/${flood}/io`))?.[1] ?? 0) > 768 * 1024, 30_000);
    const pids = path.join(dir, 'pids');
    helper.stdin!.write(runFrame(2, ['sh', '-c', `sleep 60 & echo $! >> ${pids}; echo $$ >> ${pids}; wait`], env));
    // It is forked; its 'S' waits behind the flood, so the agent cannot acknowledge it, and it may not exec.
    await waitFor('the second render to run, if it does', () => fs.existsSync(pids) && readOr(pids).split('\n').length >= 2, 3000).catch(() => undefined);
    const started = fs.existsSync(pids) ? readOr(pids).split('\n').filter((l) => /^\d+$/.test(l)).map(Number) : [];
    escapees.push(...started);
    expect(started).toEqual([]);
    process.kill(helper.pid!, 'SIGKILL');
    await waitFor('the flooding render gone', () => !isRunning(flood), 20_000);
    await waitFor('no process of the second render left', () => started.every((p) => !isRunning(p)), 10_000);
  });
});

describe('the helper and a stalled agent', () => {
  it('agent group killed -9 while the helper cannot write to it (and no guard): the render group is still ended', async () => {
    const kq = await Kq.start({ numAgents: 0, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const agent = startAgent(['--host-name', 'stalled', ...kq.agentArgs()]);
    await waitFor('agent', async () => (await kq.agents()).length === 1);
    const dir = tempDir();
    // The leader floods stdout once told to; its child (same group, outside PR_SET_PDEATHSIG's reach) just waits.
    await kq.submit('--retries', '0', '--cwd', dir, '--', 'sh', '-c',
      'echo $$ >> pids; sh -c \'echo $$ >> pids; exec sleep 60\' & while [ ! -e go ]; do sleep 0.05; done; exec head -c 50000000 /dev/zero');
    const pids = await waitFor('2 pids', () => {
      const p = fs.existsSync(path.join(dir, 'pids')) ? fs.readFileSync(path.join(dir, 'pids'), 'utf8').split('\n').filter((l) => /^\d+$/.test(l)).map(Number) : [];
      return p.length >= 2 ? p : null;
    });
    const [leader, child] = pids as [number, number];
    escapees.push(leader, child);
    // The guard is the agent's child; the helper is not (its own group, started detached). Take the guard away
    // while the agent is frozen (it cannot start another), so only the helper can end the render.
    process.kill(agent.pid!, 'SIGSTOP');
    for (const guard of childrenOf(agent.pid!).filter((p) => readOr(`/proc/${p}/comm`) !== 'kq-spawn-helper')) process.kill(guard, 'SIGKILL');
    fs.writeFileSync(path.join(dir, 'go'), '');
    // The render blocks on its full pipe: nobody reads it (the agent is frozen, the helper is full or blocked).
    let lastWchar = -1;
    await waitFor('the render stalled on its output (what it wrote stops growing)', () => {
      const wchar = Number(/wchar: (\d+)/.exec(readOr(`/proc/${leader}/io`))?.[1] ?? -1);
      const stalled = wchar > 1024 * 1024 && wchar === lastWchar;
      lastWchar = wchar;
      return stalled;
    }, 60_000, 500);
    // Its whole group, as kq kills a local agent (killGroup): the helper, in a group of its own, survives it.
    process.kill(-agent.pid!, 'SIGKILL');
    await waitFor('the render group gone', () => !isRunning(leader) && !isRunning(child), 30_000);
  });
});

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Live children of `pid` (from its own /proc entry). */
function childrenOf(pid: number): number[] {
  return childrenOfPid(pid).filter((p) => {
    const stat = readOr(`/proc/${p}/stat`);
    return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  });
}

/**
 * integrations/python/kq_client.py against a real kq: python3 scripts find kq like kqctl does, submit with
 * every kqctl option, list, show, follow a log, stop, restart; errors carry kqctl's messages and exit codes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, ROOT, cleanupAll, tempDir, waitFor } from './helpers/kq.js';

const CLIENT_DIR = path.join(ROOT, 'integrations', 'python');
const kqs: Kq[] = [];
afterAll(() => cleanupAll(kqs));
let shared: Kq | null = null;
const sharedKq = async () => {
  if (!shared) {
    shared = await Kq.start({ numAgents: 2 });
    kqs.push(shared);
  }
  return shared;
};

/** Run a Python script with kq_client importable; it prints one JSON value as its last line. */
async function py(script: string, env: Record<string, string> = {}): Promise<{ exitCode: number; out: any; stderr: string; stdout: string }> {
  const r = await execa('python3', ['-c', `import json, sys, kq_client\n${script}`], {
    env: { PYTHONPATH: CLIENT_DIR, HOME: tempDir('kq-home-'), ...env }, extendEnv: false, reject: false, timeout: 120_000,
  });
  const lines = String(r.stdout).trim().split('\n');
  let out: any = null;
  try { out = JSON.parse(lines[lines.length - 1]!); } catch { /* not JSON: the test looks at stdout/stderr */ }
  return { exitCode: r.exitCode ?? -1, out, stderr: String(r.stderr), stdout: String(r.stdout) };
}

describe('kq_client finds kq like kqctl', () => {
  it('through KQ_DATA_ROOT, and through data_root=; lists the same jobs kqctl lists', async () => {
    const kq = await sharedKq();
    const id = await kq.submit('--name', 'found', '--', 'true');
    await kq.waitJob(id);
    const viaEnv = await py('print(json.dumps([j["id"] for j in kq_client.KqClient().list()]))', { KQ_DATA_ROOT: kq.dataRoot });
    expect(viaEnv.stderr).toBe('');
    expect(viaEnv.out).toContain(id);
    const filtered = await py(`c = kq_client.KqClient()
print(json.dumps([[j["state"] for j in c.list(states=["Completed"])], [j["state"] for j in c.list(states=["Failed", "Running"])], len(c.agents()), c.info()["pid"]]))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(filtered.out[0]).toContain('Completed');
    expect(new Set(filtered.out[0])).toEqual(new Set(['Completed']));
    expect(filtered.out[1].every((s: string) => s === 'Failed' || s === 'Running')).toBe(true);
    expect(filtered.out[2]).toBe(2);
    expect(filtered.out[3]).toBe(kq.info.pid);
    const viaArg = await py(`print(json.dumps(kq_client.KqClient(data_root=${JSON.stringify(kq.dataRoot)}).show(${id})))`);
    expect(viaArg.out).toMatchObject({ id, name: 'found', state: 'Completed' });
    expect(viaArg.out).toEqual(await kq.json('show', String(id)));
  });

  it('the default data root is $XDG_DATA_HOME/kq', async () => {
    const kq = await sharedKq();
    const xdg = tempDir('kq-xdg-');
    fs.symlinkSync(kq.dataRoot, path.join(xdg, 'kq'));
    const r = await py('c = kq_client.KqClient(); print(json.dumps([c.data_root, len(c.list()) > 0]))', { XDG_DATA_HOME: xdg });
    expect(r.out).toEqual([path.join(xdg, 'kq'), true]);
  });

  it('kq not running: KqUnreachable (exit code 3) saying how to start kq', async () => {
    const root = tempDir('kq-none-');
    const r = await py(`
try:
    kq_client.KqClient(url="http://127.0.0.1:9/", timeout=5).list()
except kq_client.KqUnreachable as e:
    print(json.dumps([e.exit_code, str(e)]))`, { KQ_DATA_ROOT: root });
    expect(r.out[0]).toBe(3);
    expect(r.out[1]).toMatch(/^cannot reach kq at http:\/\/127\.0\.0\.1:9\/ \(connection refused; address from url argument\): is kq running\? start it with `kq`/);
  });
  it('another program on the port: says so instead of failing on its answer', async () => {
    const r = await py(`
import threading, http.server
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/jobs" else 404)
        self.end_headers()
        self.wfile.write(b"<html>not kq</html>")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Page)
threading.Thread(target=server.serve_forever, daemon=True).start()
out = []
for call in (lambda c: c.list(), lambda c: c.show(1)):
    try:
        call(kq_client.KqClient(url="http://127.0.0.1:%d/" % server.server_port))
    except kq_client.KqError as e:
        out.append([e.exit_code, str(e)])
print(json.dumps(out))`, { KQ_DATA_ROOT: tempDir('kq-none-') });
    expect(r.out[0]).toEqual([3, expect.stringMatching(/answered, but not as kq does: is another program on that port\?/)]);
    expect(r.out[1]).toEqual([3, expect.stringMatching(/answered HTTP 404, not as kq does/)]);
  });
});

describe('kq_client submits, shows, follows, stops and restarts', () => {
  it("submits with every kqctl submit option and waits; the job is what kqctl's own submit makes", async () => {
    const kq = await sharedKq();
    const cwd = tempDir('kq-py-cwd-');
    const r = await py(`
c = kq_client.KqClient()
job = c.submit(["sh", "-c", "echo $GREETING {start}-{end} > out_{start}.txt"], name="py job", frames="1-4", chunk=2, priority=7,
               cwd=${JSON.stringify(cwd)}, env={"GREETING": "hello"}, retries=2, timeout="5m", output="out_{frame}.txt", wait=True, poll=0.2)
print(json.dumps(c.show(job["id"])))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(r.stderr).toBe('');
    const job = r.out;
    expect(job).toMatchObject({ name: 'py job', state: 'Completed', priority: 7, framesDone: 4, framesTotal: 4, chunk: 2, cwd,
      frameSpec: '1-4', output: 'out_{frame}.txt', maxAttempts: 3, timeoutMs: 300_000, env: { GREETING: 'hello' } });
    expect(job.taskList).toHaveLength(2);
    expect(fs.readFileSync(path.join(cwd, 'out_1.txt'), 'utf8')).toBe('hello 1-2\n');
    expect(fs.readFileSync(path.join(cwd, 'out_3.txt'), 'utf8')).toBe('hello 3-4\n');
    // kqctl submit with the same options makes the same job
    const viaCtl = await kq.submit('--name', 'py job', '--frames', '1-4', '--chunk', '2', '--priority', '7', '--cwd', cwd, '--env', 'GREETING=hello',
      '--retries', '2', '--timeout', '5m', '--output', 'out_{frame}.txt', '--', 'sh', '-c', 'echo $GREETING {start}-{end} > out_{start}.txt');
    const ctlJob = await kq.waitJob(viaCtl);
    for (const key of ['name', 'argv', 'frameSpec', 'chunk', 'priority', 'cwd', 'env', 'maxAttempts', 'timeoutMs', 'shell', 'output']) {
      expect([key, job[key]]).toEqual([key, ctlJob[key]]);
    }
  });

  it('shell=True runs through /bin/sh -c; env as a list of K=V like --env', async () => {
    const kq = await sharedKq();
    const r = await py(`
c = kq_client.KqClient()
job = c.submit(["echo $A$B"], shell=True, env=["A=x", "B=y=z"], wait=True, poll=0.2)
print(json.dumps(c.log(job["id"])))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(r.out).toContain('xy=z');
  });

  it('follow_log yields the log as it grows and returns once the job ended', async () => {
    const kq = await sharedKq();
    const r = await py(`
c = kq_client.KqClient()
job = c.submit(["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"])
pieces = list(c.follow_log(job["id"], poll=0.1))
print(json.dumps({"pieces": len(pieces), "text": "".join(pieces), "state": c.show(job["id"])["state"], "whole": c.log(job["id"])}))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(r.stderr).toBe('');
    expect(r.out.state).toBe('Completed');
    expect(r.out.pieces).toBeGreaterThan(1);
    expect(r.out.text).toBe(r.out.whole);
    expect(r.out.text).toMatch(/line 1\n[^]*line 5\n/);
  });

  it('stop cancels a running render; restart requeues it; kqctl sees the same', async () => {
    const kq = await sharedKq();
    const started = await py(`
c = kq_client.KqClient()
print(json.dumps(c.submit(["sleep", "60"], name="long")["id"]))`, { KQ_DATA_ROOT: kq.dataRoot });
    const id = started.out as number;
    await waitFor('running', async () => (await kq.json('show', String(id))).state === 'Running');
    const stopped = await py(`print(json.dumps(kq_client.KqClient().stop(${id})))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(stopped.out[0]).toMatchObject({ id, state: 'Cancelled' });
    const restarted = await py(`print(json.dumps(kq_client.KqClient().restart([${id}])))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(['Waiting', 'Running']).toContain(restarted.out[0].state);
    await waitFor('running again', async () => (await kq.json('show', String(id))).state === 'Running');
    await py(`kq_client.KqClient().stop([${id}])`, { KQ_DATA_ROOT: kq.dataRoot });
    expect((await kq.waitJob(id)).state).toBe('Cancelled');
  });
});

describe("kq_client's errors are kqctl's", () => {
  it('bad frame range, unknown job, empty command, bad job id: exit code 2 and the message kqctl prints', async () => {
    const kq = await sharedKq();
    const r = await py(`
c = kq_client.KqClient()
out = []
for f in [lambda: c.submit(["true"], frames="5-1x"), lambda: c.show(999999), lambda: c.submit([" "]), lambda: c.stop("abc")]:
    try:
        f()
        out.append(None)
    except kq_client.KqError as e:
        out.append([e.exit_code, str(e)])
print(json.dumps(out))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(r.stderr).toBe('');
    const ctl = await Promise.all([
      kq.ctl('submit', '--frames', '5-1x', '--', 'true'), kq.ctl('show', '999999'), kq.ctl('submit', '--', ' '), kq.ctl('stop', 'abc'),
    ]);
    expect(r.out).toEqual(ctl.map((c) => [c.exitCode, c.stderr.trim().replace(/^kqctl: /, '')]));
  });

  it('wait on a failed job raises KqJobFailed (exit code 1), as kqctl submit --wait fails', async () => {
    const kq = await sharedKq();
    const r = await py(`
try:
    kq_client.KqClient().submit(["false"], retries=0, wait=True, poll=0.2)
except kq_client.KqJobFailed as e:
    print(json.dumps([e.exit_code, str(e), e.job["state"]]))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(r.out).toEqual([1, expect.stringMatching(/^job \d+ failed: see kqctl log \d+$/), 'Failed']);
    const ctl = await kq.ctl('submit', '--retries', '0', '--wait', '--', 'false');
    expect(ctl.exitCode).toBe(1);
  });

  it('a monitor that needs a token: refused without it (with the hint), served with KQ_HTTP_TOKEN', async () => {
    const token = 'a-token-of-at-least-16-chars';
    const kq = await Kq.start({ numAgents: 0, args: ['--http-token', token] });
    kqs.push(kq);
    const script = `
try:
    print(json.dumps(len(kq_client.KqClient().list())))
except kq_client.KqError as e:
    print(json.dumps([e.exit_code, str(e)]))`;
    const without = await py(script, { KQ_DATA_ROOT: kq.dataRoot });
    expect(without.out[0]).toBe(2);
    expect(without.out[1]).toMatch(/needs its token.*\(set KQ_HTTP_TOKEN, or pass token=\)$/);
    expect((await py(script, { KQ_DATA_ROOT: kq.dataRoot, KQ_HTTP_TOKEN: token })).out).toBe(0);
    const url = await py(`print(json.dumps(kq_client.KqClient().monitor_url(7)))`, { KQ_DATA_ROOT: kq.dataRoot, KQ_HTTP_TOKEN: token });
    expect(url.out).toBe(`${kq.info.httpUrl}?token=${token}#job=7`);
  });

  it('kq started with --no-http: says to restart it without', async () => {
    const kq = await Kq.start({ numAgents: 0, args: ['--no-http'] });
    kqs.push(kq);
    const r = await py(`
try:
    kq_client.KqClient().list()
except kq_client.KqError as e:
    print(json.dumps([e.exit_code, str(e)]))`, { KQ_DATA_ROOT: kq.dataRoot });
    expect(r.out).toEqual([3, expect.stringContaining('runs without its web monitor (--no-http)')]);
  });
});

describe('Python 3.7 compatibility', () => {
  it('every Python file under integrations/ parses as Python 3.7', async () => {
    const r = await execa('python3', ['-c', `
import ast, os, sys
bad = []
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f.endswith(".py"):
            p = os.path.join(d, f)
            try:
                ast.parse(open(p).read(), p, feature_version=(3, 7))
            except SyntaxError as e:
                bad.append("%s: %s" % (p, e))
print("\\n".join(bad))`, path.join(ROOT, 'integrations')], { reject: false });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('');
  });
});

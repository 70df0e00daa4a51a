/**
 * The web monitor's HTTP API, against a real kq: the same data kqctl --json prints, live events over SSE,
 * the token, frames of a real POV-Ray render, and bad input that must never take kq down.
 */
import fs from 'node:fs';
import nodeHttp from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, ROOT, cleanupAll, tempDir, waitFor } from './helpers/kq.js';
import { SseReader } from './helpers/sse.js';

const SCENE = path.join(ROOT, 'test', 'fixtures', 'spin.pov');
const kqs: Kq[] = [];
const readers: SseReader[] = [];
const start = async (o: ConstructorParameters<typeof Kq>[0] = {}) => {
  const kq = await Kq.start(o);
  kqs.push(kq);
  return kq;
};
const sse = (url: string, headers?: Record<string, string>) => {
  const r = new SseReader(url, headers);
  readers.push(r);
  return r;
};
afterAll(async () => {
  readers.forEach((r) => r.close());
  await cleanupAll(kqs);
});

async function http(kq: Kq, method: string, route: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(new URL(route, kq.info.httpUrl!), {
    method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, json, text, headers: res.headers };
}

/** node:http, which (unlike fetch) may set any Host header and need not send a body it declares. */
function rawRequest(port: number, method: string, route: string, headers: Record<string, string | number>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = nodeHttp.request({ host: '127.0.0.1', port, method, path: route, headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('JSON API', () => {
  it('answers list, show, tasks, log, agents with exactly what kqctl --json prints; submit, stop and restart work', async () => {
    const kq = await start({ numAgents: 1 });
    expect(kq.output).toMatch(new RegExp(`ready: .*, monitor http://127\\.0\\.0\\.1:${kq.info.httpPort}/`));
    const dir = tempDir();
    const submitted = await http(kq, 'POST', '/api/jobs', { name: 'echo', argv: ['sh', '-c', 'echo frame {frame}'], frames: '1-4', chunk: 2, cwd: dir });
    expect(submitted.status).toBe(201);
    expect(submitted.json).toMatchObject({ id: 1, name: 'echo', framesTotal: 4, tasks: { waiting: 2 } });
    await kq.waitJob(1);

    expect((await http(kq, 'GET', '/api/jobs')).json).toEqual(await kq.json('list'));
    expect((await http(kq, 'GET', '/api/jobs?state=Completed')).json).toEqual(await kq.json('list', '--state', 'Completed'));
    expect((await http(kq, 'GET', '/api/jobs?state=Failed')).json).toEqual([]);
    const show = await kq.json('show', '1');
    expect((await http(kq, 'GET', '/api/jobs/1')).json).toEqual(show);
    expect(show).toMatchObject({ state: 'Completed', progress: 100, output: null });
    expect((await http(kq, 'GET', '/api/jobs/1/tasks')).json).toEqual(show.taskList);
    const log = (await http(kq, 'GET', '/api/jobs/1/log')).json;
    expect(log).toMatchObject({ from: 0, state: 'Completed' });
    expect(log.text).toBe((await kq.json('log', '1')).text);
    expect(log.text).toMatch(/^\[t2 f3-4\] frame 3$/m); // a job of several tasks: lines carry their task and frames
    expect((await http(kq, 'GET', '/api/jobs/1/log?from=5&max=10')).json).toMatchObject({ from: 5, next: 15, text: log.text.slice(5, 15) });
    const text = await http(kq, 'GET', '/api/jobs/1/log?format=text');
    expect(text.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(text.text).toBe(log.text);
    const agents = (await http(kq, 'GET', '/api/agents')).json;
    expect(agents.map((a: any) => [a.id, a.state])).toEqual((await kq.agents()).map((a) => [a.id, a.state]));

    // stop and restart answer like kqctl stop/restart --json.
    const long = (await http(kq, 'POST', '/api/jobs', { argv: ['sleep', '60'], frames: '1-3' })).json.id;
    await waitFor('long job running', async () => (await kq.json('show', String(long))).state === 'Running');
    const stopped = await http(kq, 'POST', `/api/jobs/${long}/stop`);
    expect(stopped.status).toBe(200);
    expect(stopped.json).toHaveLength(1);
    expect(stopped.json[0]).toMatchObject({ id: long, state: 'Cancelled' });
    expect(stopped.json[0].taskList).toBeUndefined();
    const again = await http(kq, 'POST', `/api/jobs/${long}/restart`, { failedOnly: true });
    expect(again.json[0].state).toMatch(/Waiting|Running/);
    expect((await http(kq, 'POST', '/api/stop', { jobIds: [long] })).json[0].state).toBe('Cancelled');
    expect((await http(kq, 'POST', '/api/restart', { jobIds: [long, 1] })).json.map((j: any) => j.id)).toEqual([long, 1]);
    await kq.ctl('stop', String(long));
    expect((await kq.waitJob(1)).state).toBe('Completed');
  });

  it('maps bad input to 400/404/413 with a message, never hurting kq', async () => {
    const kq = await start({ numAgents: 1 });
    const cases: Array<[string, string, unknown, number, RegExp]> = [
      ['GET', '/api/jobs/999', undefined, 404, /no job with id 999/],
      ['GET', '/api/jobs/abc', undefined, 400, /id must be integer/],
      ['GET', '/api/jobs/-1/log', undefined, 400, /must be >= 0/],
      ['GET', '/api/jobs/1e400', undefined, 400, /id/],
      ['GET', '/api/jobs?state=Sleeping', undefined, 400, /state/],
      ['POST', '/api/jobs', '{"argv": [', 400, /JSON/],
      ['POST', '/api/jobs', { argv: [] }, 400, /invalid request: job\.argv/],
      ['POST', '/api/jobs', { argv: ['true'], frames: '5-1' }, 400, /ends before it starts/],
      ['POST', '/api/jobs', { argv: ['true'], cwd: 'relative/dir' }, 400, /cwd must be an absolute path/],
      ['POST', '/api/jobs', [1, 2], 400, /JSON object/],
      ['POST', '/api/jobs', 'null', 400, /JSON object/],
      ['POST', '/api/jobs/999/stop', undefined, 404, /no job with id 999/],
      ['POST', '/api/stop', { jobIds: [] }, 400, /jobIds/],
      ['POST', '/api/restart', { jobIds: ['x'] }, 400, /jobIds/],
      ['POST', '/api/jobs/999/restart', { failedOnly: 'yes' }, 400, /failedOnly/],
      ['GET', '/api/jobs/999/log/stream', undefined, 404, /no job with id 999/],
      ['GET', '/api/jobs/999/output?frame=1', undefined, 404, /no job with id 999/],
      ['GET', '/api/nothing', undefined, 404, /no such route: GET \/api\/nothing/],
      ['PUT', '/api/jobs/1', undefined, 404, /no such route/], // (DELETE /api/jobs/:id removes a job: kqctl rm)
    ];
    for (const [method, route, body, status, message] of cases) {
      const r = await http(kq, method, route, body);
      expect(r.status, `${method} ${route}`).toBe(status);
      expect(r.json?.error, `${method} ${route}`).toMatch(message);
    }
    const huge = await rawRequest(kq.info.httpPort!, 'POST', '/api/jobs', { 'content-type': 'application/json', 'content-length': 17 * 1024 * 1024 });
    expect(huge.status).toBe(413);

    // Malformed HTTP on the raw socket, and streams dropped mid-way.
    for (const junk of ['GARBAGE\r\n\r\n', 'GET /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n', '\x00\xff\xfe', 'GET / HTTP/1.1\r\n' + 'X: y\r\n'.repeat(5000) + '\r\n']) {
      await new Promise<void>((resolve) => {
        const s = net.connect(kq.info.httpPort!, '127.0.0.1', () => s.end(junk));
        s.on('data', () => undefined);
        s.on('error', () => resolve());
        s.on('close', () => resolve());
      });
    }
    for (let i = 0; i < 5; i++) {
      const events = sse(new URL('/api/events', kq.info.httpUrl!).href);
      const logs = sse(new URL('/api/jobs/999/log/stream', kq.info.httpUrl!).href);
      await events.waitFor('snapshot', (e) => e.event === 'snapshot');
      events.close();
      await logs.done;
      expect(logs.status).toBe(404);
    }
    const id = await kq.submit('--', 'true');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    expect((await http(kq, 'GET', '/api/jobs')).json.map((j: any) => j.id)).toEqual([id]);
    expect(kq.log()).not.toMatch(/monitor request failed|monitor event handling failed/);
  });

  it('serves the page and its modules, and nothing outside web/', async () => {
    const kq = await start({ numAgents: 0 });
    const page = await http(kq, 'GET', '/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
    expect(page.text).toContain('<script type="module" src="app.js">');
    for (const asset of ['app.js', 'api.js', 'jobs-table.js', 'log-view.js', 'detail.js', 'agents.js', 'format.js', 'style.css']) {
      expect((await http(kq, 'GET', `/${asset}`)).status, asset).toBe(200);
    }
    for (const evil of ['/../package.json', '/%2e%2e/package.json', '/..%2fpackage.json', '/web/../../package.json']) {
      const r = await http(kq, 'GET', evil);
      expect(r.status, evil).toBeGreaterThanOrEqual(400);
      expect(r.text, evil).not.toContain('"name": "kq"');
    }
  });
});

describe('live events', () => {
  it('sends a snapshot, then changed jobs and agents; follows a log from its tail and resumes after a reconnect', async () => {
    const kq = await start({ numAgents: 1 });
    const base = kq.info.httpUrl!;
    const events = sse(new URL('/api/events', base).href);
    const snap = await events.waitFor('snapshot', (e) => e.event === 'snapshot');
    expect(snap.data.jobs).toEqual([]);
    expect(snap.data.agents).toHaveLength(1);

    const id = await kq.submit('--name', 'lines', '--', 'sh', '-c', 'for i in $(seq 1 40); do echo "line $i"; sleep 0.05; done; echo "ERROR: fake failure" >&2; exit 0');
    await events.waitFor('job running', (e) => e.event === 'jobs' && e.data.some((j: any) => j.id === id && j.state === 'Running'));
    await events.waitFor('a busy agent', (e) => e.event === 'agents' && e.data.some((a: any) => a.state === 'busy' && a.jobId === id));
    const log = sse(new URL(`/api/jobs/${id}/log/stream?tail=64`, base).href);
    const meta = await log.waitFor('meta', (e) => e.event === 'meta');
    expect(meta.data.from).toBeGreaterThan(0); // the tail started at a line
    const done = await events.waitFor('job completed', (e) => e.event === 'jobs' && e.data.some((j: any) => j.id === id && j.state === 'Completed'));
    expect(done.data.find((j: any) => j.id === id)).toMatchObject({ framesTotal: 0, progress: 100, completedAt: expect.any(String) });
    await log.waitFor('last line', (e) => e.event === 'log' && e.data.text.includes('completed after'));
    const full = (await http(kq, 'GET', `/api/jobs/${id}/log`)).json.text as string;
    const streamed = log.events.filter((e) => e.event === 'log');
    // Contiguous pieces, each id the end offset of its piece, adding up to the file from `meta.from`.
    let at = meta.data.from;
    for (const e of streamed) {
      expect(e.data.offset).toBe(at);
      at += Buffer.byteLength(e.data.text);
      expect(Number(e.id)).toBe(at);
    }
    expect(streamed.map((e) => e.data.text).join('')).toBe(Buffer.from(full).subarray(meta.data.from).toString());
    // The tail starts at a line boundary: a render line, or kq's own line if the stream opened early.
    expect(streamed.map((e) => e.data.text).join('')).toMatch(/^(line \d+|\[kq\] [^\n]*)\n/);

    // A reconnect sends Last-Event-ID: the stream resumes right there.
    const middle = streamed[Math.floor(streamed.length / 2)]!;
    const resumed = sse(new URL(`/api/jobs/${id}/log/stream?tail=64`, base).href, { 'last-event-id': middle.id! });
    await resumed.waitFor('resumed end', (e) => e.event === 'log' && e.data.text.includes('completed after'));
    expect(resumed.events.filter((e) => e.event === 'log').map((e) => e.data.text).join(''))
      .toBe(Buffer.from(full).subarray(Number(middle.id)).toString());
  });

  it('reports POV-Ray progress while it renders, and serves the finished frames of a job with an output pattern', async () => {
    const kq = await start({ numAgents: 1 });
    const events = sse(new URL('/api/events', kq.info.httpUrl!).href);
    await events.waitFor('snapshot', (e) => e.event === 'snapshot');
    const out = tempDir('kq-frames-');
    fs.mkdirSync(path.join(out, 'frames'));
    // +KFF100: POV-Ray numbers frames with as many digits as the last frame has (spin_004.png).
    const id = await kq.submit('--name', 'spin', '--frames', '1-6', '--chunk', '6', '--cwd', out, '--output', 'frames/spin_{frame:03}.png', '--',
      'povray', `+I${SCENE}`, '+Oframes/spin_.png', '+W160', '+H120', '+FN', '-D', '+KFI1', '+KFF100', '+SF{start}', '+EF{end}');
    const job = await kq.waitJob(id, 90_000);
    expect(job).toMatchObject({ state: 'Completed', output: 'frames/spin_{frame:03}.png', progress: 100 });
    const partial = events.events.filter((e) => e.event === 'jobs').flatMap((e) => e.data)
      .filter((j: any) => j.id === id && j.state === 'Running' && j.progress > 0 && j.progress < 100);
    expect(partial.length, 'progress between 0 and 100 while running').toBeGreaterThan(0);
    expect(job.taskList[0].progress).toBe(100);

    const png = await fetch(new URL(`/api/jobs/${id}/output?frame=4`, kq.info.httpUrl!));
    expect(png.status).toBe(200);
    expect(png.headers.get('content-type')).toBe('image/png');
    const bytes = Buffer.from(await png.arrayBuffer());
    expect(bytes.subarray(1, 4).toString()).toBe('PNG');
    expect(bytes.equals(fs.readFileSync(path.join(out, 'frames', 'spin_004.png')))).toBe(true);
    expect((await http(kq, 'GET', `/api/jobs/${id}/output?frame=7`)).status).toBe(404);
    expect((await http(kq, 'GET', `/api/jobs/${id}/output`)).status).toBe(400);
    const plain = await kq.submit('--', 'true');
    expect((await http(kq, 'GET', `/api/jobs/${plain}/output`)).json.error).toMatch(/declares no output pattern/);
  });
});

describe('access', () => {
  it('beyond loopback needs the generated token (Bearer or ?token=), stored 0600 in the data root', async () => {
    const kq = await start({ numAgents: 0, args: ['--http-bind', '0.0.0.0'] });
    const tokenFile = path.join(kq.dataRoot, 'http-token');
    const token = fs.readFileSync(tokenFile, 'utf8').trim();
    expect(token.length).toBeGreaterThanOrEqual(32);
    expect(fs.statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(kq.output).toContain(`monitor token: ${tokenFile}`);
    const url = (route: string) => `http://127.0.0.1:${kq.info.httpPort}${route}`;
    const no = await fetch(url('/api/jobs'));
    expect(no.status).toBe(401);
    expect(no.headers.get('www-authenticate')).toMatch(/Bearer/);
    expect((await fetch(url('/api/jobs'), { headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status).toBe(401);
    expect((await fetch(url('/api/jobs'), { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await fetch(url(`/api/jobs?token=${token}`))).status).toBe(200);
    expect((await fetch(url('/api/stop'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"jobIds":[1]}' })).status).toBe(401);
    const events = sse(url(`/api/events?token=${encodeURIComponent(token)}`));
    await events.waitFor('snapshot', (e) => e.event === 'snapshot');
    expect((await fetch(url('/'))).status).toBe(200); // the page itself holds no data

    // The same token survives a restart of kq.
    await kq.stop();
    await kq.start();
    expect(fs.readFileSync(tokenFile, 'utf8').trim()).toBe(token);
    expect((await fetch(url('/api/jobs'), { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  });

  it('on loopback without a token: refuses other Host names (DNS rebinding) and cross-site writes', async () => {
    const kq = await start({ numAgents: 0 });
    const id = await kq.submit('--', 'true');
    const r1 = await rawRequest(kq.info.httpPort!, 'GET', '/api/jobs', { host: `attacker.example:${kq.info.httpPort}` });
    expect(r1.status).toBe(403);
    expect(r1.body).toMatch(/must be addressed to localhost/);
    const r2 = await http(kq, 'POST', `/api/jobs/${id}/stop`, undefined, { origin: 'http://attacker.example' });
    expect(r2.status).toBe(403);
    expect((await kq.json('show', String(id))).state).toBe('Waiting');
    expect((await http(kq, 'POST', `/api/jobs/${id}/stop`, undefined, { origin: `http://127.0.0.1:${kq.info.httpPort}` })).status).toBe(200);
    expect((await rawRequest(kq.info.httpPort!, 'GET', '/api/jobs', { host: `localhost:${kq.info.httpPort}` })).status).toBe(200);

    const withToken = await start({ numAgents: 0, args: ['--http-token', 'a-token-of-enough-length'] });
    expect((await http(withToken, 'GET', '/api/jobs')).status).toBe(401);
    expect((await http(withToken, 'GET', '/api/jobs', undefined, { authorization: 'Bearer a-token-of-enough-length' })).status).toBe(200);
  });

  it('--no-http serves nothing; a port in use is a clear start-up error', async () => {
    const off = await start({ numAgents: 0, args: ['--no-http'] });
    expect(off.info.httpPort).toBeNull();
    expect(off.output).not.toContain('monitor');
    const on = await start({ numAgents: 0 });
    const clash = new Kq({ numAgents: 0, args: ['--http-port', String(on.info.httpPort)] });
    await expect(clash.start()).rejects.toThrow(/cannot serve the web monitor on 127\.0\.0\.1:\d+ \(EADDRINUSE\).*--http-port/);
  });
});

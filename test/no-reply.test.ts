/**
 * "kq is not there" and "kq got the request but its answer did not come" are different things to a script:
 * the first is safe to retry, the second may have been applied (a retried submit would duplicate the job).
 * Real kq, real kqctl; a TCP relay between them loses kq's answers once the request went through.
 */
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { ROOT, kqStarter, kqctl, tempDir } from './helpers/kq.js';

const start = kqStarter(['--no-http']);
const startWithMonitor = kqStarter();

/** Forwards both ways until `needle` crossed from client to kq; from then on kq's bytes are dropped. */
async function answerEatingRelay(targetPort: number, needle: string): Promise<{ port: number; close: () => void }> {
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    let seen = '';
    let eating = false;
    client.on('data', (d) => { seen = (seen + d.toString('latin1')).slice(-4096); if (seen.includes(needle)) eating = true; upstream.write(d); });
    upstream.on('data', (d) => { if (!eating) client.write(d); });
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on('close', end); upstream.on('close', end); client.on('error', end); upstream.on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

/** A port that accepts TCP connections and never says a word. */
async function silentPort(): Promise<{ port: number; close: () => void }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => { sockets.push(s); s.on('error', () => undefined); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => { sockets.forEach((s) => s.destroy()); server.close(); } };
}

describe('no answer from kq', () => {
  it('a submit kq applied but whose answer was lost: exit 7 "may have been applied", not 3 "is kq running?"', async () => {
    const kq = await start({ numAgents: 0 });
    const relay = await answerEatingRelay(kq.info.requestPort, '"type":"submit"');
    const r = await kqctl(['--data-root', kq.dataRoot, '--request-port', String(relay.port), '--connect-timeout', '3s', 'submit', '--name', 'lost-answer', '--', 'true']);
    relay.close();
    const jobs = await kq.json<Array<{ name: string }>>('list');
    expect(jobs.map((j) => j.name)).toEqual(['lost-answer']); // kq did apply it
    expect(r.exitCode).toBe(7);
    expect(r.stderr).toMatch(/may have been applied; check with `kqctl list` before retrying/);
    expect(r.stderr).not.toMatch(/is kq running/);
  });

  it('nothing listening, or a port that never speaks ZeroMQ: exit 3, nothing was sent (safe to retry)', async () => {
    const kq = await start({ numAgents: 0 });
    const silent = await silentPort();
    const closed = await silentPort();
    closed.close();
    for (const port of [silent.port, closed.port]) {
      const r = await kqctl(['--data-root', kq.dataRoot, '--request-port', String(port), '--connect-timeout', '1s', 'submit', '--', 'true']);
      expect(r.exitCode, r.stderr).toBe(3);
      expect(r.stderr).toMatch(/nothing was sent/);
      expect(r.stderr).toMatch(/is kq running\?/);
    }
    silent.close();
    expect(await kq.json('list')).toEqual([]);
  });

  it('a read that got no answer is exit 3 (asking again is harmless)', async () => {
    const kq = await start({ numAgents: 0 });
    const relay = await answerEatingRelay(kq.info.requestPort, '"type":"list"');
    const r = await kqctl(['--data-root', kq.dataRoot, '--request-port', String(relay.port), '--connect-timeout', '1s', 'list']);
    relay.close();
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toMatch(/got the list request but did not answer/);
  });

  it('kq_client: a submit whose answer was lost raises KqNoReply (exit code 7), not KqUnreachable', async () => {
    const kq = await startWithMonitor({ numAgents: 0 });
    const relay = await answerEatingRelay(kq.info.httpPort!, 'POST /api/jobs');
    const script = `import kq_client
c = kq_client.KqClient(url='http://127.0.0.1:${relay.port}', timeout=3)
try:
    c.submit(['true'], name='lost-answer')
    print('no error')
except kq_client.KqUnreachable as e:
    print('unreachable', e.exit_code, e.message)
except kq_client.KqNoReply as e:
    print('no-reply', e.exit_code, e.message)
`;
    const r = await execa('python3', ['-c', script], {
      env: { PYTHONPATH: path.join(ROOT, 'integrations', 'python'), HOME: tempDir('kq-home-') }, extendEnv: false, reject: false, timeout: 60_000,
    });
    relay.close();
    expect((await kq.json<Array<{ name: string }>>('list')).map((j) => j.name)).toEqual(['lost-answer']);
    expect(r.stdout).toMatch(/^no-reply 7 .*may have been applied/);
  });
});

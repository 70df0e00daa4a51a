/** Security: CURVE-authenticated links, the allowlist, hostile input. Real sockets, real kq and agents. */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as zmq from 'zeromq';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, sleep, startAgent, tempDir, waitFor } from './helpers/kq.js';
import { PROTOCOL_VERSION } from '../src/protocol/version.js';
import { REFUSALS_LOGGED_PER_MINUTE } from '../src/kq/zap.js';

const kqs: Kq[] = [];
const start = async (o: ConstructorParameters<typeof Kq>[0] = {}) => {
  const kq = await Kq.start({ ...o, args: ['--no-http', ...(o.args ?? [])] });
  kqs.push(kq);
  return kq;
};
afterAll(() => cleanupAll(kqs));

const endpoint = (port: number) => `tcp://127.0.0.1:${port}`;

/** A TCP relay that records every byte that crosses it, both ways: our packet capture on loopback. */
async function recordingRelay(targetPort: number): Promise<{ port: number; bytes: () => Buffer; close: () => void }> {
  const chunks: Buffer[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    client.on('data', (d) => { chunks.push(d); upstream.write(d); });
    upstream.on('data', (d) => { chunks.push(d); client.write(d); });
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on('close', end); upstream.on('close', end); client.on('error', end); upstream.on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, bytes: () => Buffer.concat(chunks), close: () => server.close() };
}

/** Send one request as a raw DEALER with the given CURVE options; null when kq never answers. */
async function tryRequest(port: number, options: object, body: object): Promise<unknown> {
  const dealer = new zmq.Dealer({ linger: 0, sendTimeout: 1500, receiveTimeout: 1500, ...options });
  dealer.connect(endpoint(port));
  try {
    await dealer.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: 'probe', ...body }));
    const [frame] = await dealer.receive();
    return JSON.parse(frame!.toString());
  } catch {
    return null;
  } finally {
    dealer.close();
  }
}

describe('CURVE', () => {
  it('admits only allowlisted keys: no key, a wrong key and a revoked key cannot register, submit or read broadcasts', async () => {
    const kq = await start({ numAgents: 1, args: ['--secure'] });
    expect(kq.info.curve).toBe(true);
    const serverKey = kq.info.serverKey!;
    const stranger = zmq.curveKeyPair();
    const register = { type: 'register', agentId: 'intruder', host: 'evil', pid: 1, local: false, running: null };
    const submit = { type: 'submit', job: { argv: ['touch', '/tmp/kq-pwned'] } };

    // The allowlisted local key works (control): the probe can fail.
    const local = fs.readFileSync(path.join(kq.dataRoot, 'keys', 'clients', 'local.key_secret'), 'utf8');
    const pair = (text: string) => ({ publicKey: /public-key = "(.{40})"/.exec(text)![1]!, secretKey: /secret-key = "(.{40})"/.exec(text)![1]! });
    const allowed = { curveServerKey: serverKey, curvePublicKey: pair(local).publicKey, curveSecretKey: pair(local).secretKey };
    expect(await tryRequest(kq.info.requestPort, allowed, { type: 'ping' })).toMatchObject({ ok: true });

    for (const [who, options] of [
      ['no key', {}],
      ['a wrong key', { curveServerKey: serverKey, curvePublicKey: stranger.publicKey, curveSecretKey: stranger.secretKey }],
      ['a wrong server key', { curveServerKey: stranger.publicKey, ...{ curvePublicKey: pair(local).publicKey, curveSecretKey: pair(local).secretKey } }],
    ] as const) {
      expect(await tryRequest(kq.info.requestPort, options, register), who).toBeNull();
      expect(await tryRequest(kq.info.requestPort, options, submit), who).toBeNull();
    }
    expect((await kq.agents()).map((a) => a.id)).not.toContain('intruder');
    expect(await kq.json('list')).toEqual([]);

    // A stranger subscribed to every broadcast sees nothing while a job runs.
    const sub = new zmq.Subscriber({ linger: 0, receiveTimeout: 3000, curveServerKey: serverKey, curvePublicKey: stranger.publicKey, curveSecretKey: stranger.secretKey });
    sub.subscribe();
    sub.connect(endpoint(kq.info.broadcastPort));
    const received = sub.receive().then(() => 'received', () => 'nothing');
    const id = await kq.submit('--', 'sh', '-c', 'echo broadcast-me; sleep 0.5');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    expect(await received).toBe('nothing');
    sub.close();

    // add-client → an agent with that key registers and renders; revoke → the same key is refused.
    const added = await kq.json('keys', 'add-client', 'render2');
    expect(fs.statSync(added.secretFile).mode & 0o777).toBe(0o600);
    const agentArgs = ['--host-name', 'render2', '--server-key', path.join(kq.dataRoot, 'keys', 'server.key'), '--key-file', added.secretFile, ...kq.agentArgs()];
    const agent = startAgent(agentArgs);
    await waitFor('render2 registered', async () => (await kq.agents()).some((a) => a.host === 'render2'));
    process.kill(agent.pid!, 'SIGTERM');
    await waitFor('render2 gone', async () => !(await kq.agents()).some((a) => a.host === 'render2'));
    const copy = path.join(tempDir(), 'render2.key_secret');
    fs.copyFileSync(added.secretFile, copy);
    expect((await kq.ctl('keys', 'revoke', 'render2')).exitCode).toBe(0);
    const revoked = startAgent(['--host-name', 'revoked', '--server-key', kq.info.serverKey!, '--key-file', copy, ...kq.agentArgs()]);
    let agentOutput = '';
    revoked.all!.on('data', (d: Buffer) => { agentOutput += d.toString(); });
    // The agent did try with the revoked key, and kq's ZAP handler refused exactly that key.
    const revokedKey = /public-key\s*=\s*"([^"]+)"/.exec(fs.readFileSync(copy, 'utf8'))![1]!;
    await waitFor('kq to refuse the revoked key', () => kq.log().split('\n').some((l) => l.includes('refused a peer whose key is not allowed') && l.includes(revokedKey)), 30_000);
    await waitFor('the agent to say it cannot reach kq', () => agentOutput.includes('cannot reach kq'), 30_000);
    expect((await kq.agents()).some((a) => a.host === 'revoked')).toBe(false);
    revoked.kill('SIGKILL');
  });

  it('keeps command lines out of the traffic: captured bytes hold no plaintext (and do without CURVE)', async () => {
    const marker = 'SECRET-MARKER-7f3a';
    for (const secure of [false, true]) {
      const kq = await start({ numAgents: 0, args: secure ? ['--secure'] : [] });
      const requestRelay = await recordingRelay(kq.info.requestPort);
      const updateRelay = await recordingRelay(kq.info.updatePort);
      const keys = secure ? ['--server-key', kq.info.serverKey!, '--key-file', path.join(kq.dataRoot, 'keys', 'clients', 'local.key_secret')] : [];
      startAgent([...keys, '--request-port', String(requestRelay.port), '--update-port', String(updateRelay.port),
        '--broadcast-port', String(kq.info.broadcastPort), '127.0.0.1']);
      await waitFor('agent', async () => (await kq.agents()).length === 1);
      const id = await kq.submit('--', 'echo', marker);
      expect((await kq.waitJob(id)).state).toBe('Completed');
      expect((await kq.ctl('log', String(id))).stdout).toContain(marker);
      const captured = Buffer.concat([requestRelay.bytes(), updateRelay.bytes()]);
      expect(captured.length).toBeGreaterThan(200);
      expect(captured.includes(marker), `secure=${secure}`).toBe(!secure);
      requestRelay.close();
      updateRelay.close();
      await kq.stop();
    }
  });

  it('survives 1,000 fuzzed handshakes against the ZAP handler and CURVE sockets', async () => {
    const kq = await start({ numAgents: 1, args: ['--secure'] });
    const sockets: zmq.Dealer[] = [];
    for (let i = 0; i < 1000; i++) {
      const k = zmq.curveKeyPair();
      const options = i % 3 === 0 ? {} : { curveServerKey: i % 3 === 1 ? kq.info.serverKey! : k.publicKey, curvePublicKey: k.publicKey, curveSecretKey: k.secretKey };
      const s = new zmq.Dealer({ linger: 0, ...options });
      s.connect(endpoint([kq.info.requestPort, kq.info.updatePort, kq.info.broadcastPort][i % 3]!));
      sockets.push(s);
      if (sockets.length >= 100) sockets.splice(0).forEach((x) => x.close());
    }
    // Raw garbage that claims to be a CURVE greeting.
    const greeting = Buffer.concat([Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0]), Buffer.from('CURVE'.padEnd(20, '\0')), Buffer.alloc(32)]);
    await Promise.all(Array.from({ length: 50 }, () => new Promise<void>((resolve) => {
      const s = net.connect(kq.info.requestPort, '127.0.0.1', () => {
        s.write(greeting);
        s.write(Buffer.alloc(300, 0x41));
        setTimeout(() => s.destroy(), 200); // kq may wait for the rest of a handshake: do not wait with it
      });
      s.on('close', () => resolve()); s.on('error', () => resolve());
    })));
    await sleep(1000);
    sockets.forEach((x) => x.close());
    const id = await kq.submit('--', 'true');
    expect((await kq.waitJob(id)).state).toBe('Completed');
  });

  it('a scan with a fresh key per connection cannot fill the disk with kq.log: a few refusals are logged, the rest counted', async () => {
    const kq = await start({ numAgents: 0, args: ['--secure'] });
    const scanners = Array.from({ length: 3 * REFUSALS_LOGGED_PER_MINUTE }, () => {
      const k = zmq.curveKeyPair();
      const s = new zmq.Dealer({ linger: 0, curveServerKey: kq.info.serverKey!, curvePublicKey: k.publicKey, curveSecretKey: k.secretKey });
      s.connect(endpoint(kq.info.requestPort));
      return s;
    });
    await waitFor('kq to count refusals rather than log each', () => kq.log().includes('the next ones are counted, not logged'), 30_000);
    scanners.forEach((s) => s.close());
    const refusalLines = kq.log().split('\n').filter((l) => l.includes('refused a peer whose key is not allowed'));
    expect(refusalLines.length).toBe(REFUSALS_LOGGED_PER_MINUTE);
  });

  it('listens beyond loopback with CURVE on, or with --insecure loudly warned about', async () => {
    const secure = await start({ numAgents: 1, args: ['--bind', '0.0.0.0'] });
    expect(secure.info.curve).toBe(true);
    const id = await secure.submit('--', 'true');
    expect((await secure.waitJob(id)).state).toBe('Completed');
    await secure.stop();

    const insecure = await start({ numAgents: 0, args: ['--bind', '0.0.0.0', '--insecure'] });
    expect(insecure.info.curve).toBe(false);
    expect(insecure.output).toMatch(/WARNING: listening on 0\.0\.0\.0 WITHOUT CURVE/);
    const agents = await insecure.ctl('agents');
    expect(agents.stderr).toMatch(/WARNING: kq listens beyond loopback WITHOUT CURVE/);
    expect(insecure.log()).toMatch(/INSECURE/);
  });
});

describe('hostile input', () => {
  it('a job named ../../etc/x writes its log inside the logs directory', async () => {
    const kq = await start({ numAgents: 1 });
    const id = await kq.submit('--name', '../../etc/x', '--', 'echo', 'contained');
    const job = await kq.waitJob(id);
    expect(job.name).toBe('../../etc/x');
    expect(path.dirname(job.logFile)).toBe(path.join(kq.dataRoot, 'logs'));
    expect(fs.readFileSync(job.logFile, 'utf8')).toContain('contained');
    expect(fs.existsSync(path.join(kq.dataRoot, '..', 'etc'))).toBe(false);
  });

  it('runs argv as given, never through a shell unless --shell', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const id = await kq.submit('--cwd', dir, '--', 'echo', '$(touch pwned); `touch pwned2`');
    await kq.waitJob(id);
    expect(fs.readdirSync(dir)).toEqual([]);
    expect((await kq.ctl('log', String(id))).stdout).toContain('$(touch pwned); `touch pwned2`');
    const shell = await kq.submit('--shell', '--cwd', dir, '--', 'touch asked-for && echo done');
    expect((await kq.waitJob(shell)).state).toBe('Completed');
    expect(fs.readdirSync(dir)).toEqual(['asked-for']);
  });
});

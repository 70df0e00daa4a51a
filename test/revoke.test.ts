/**
 * `kqctl keys revoke` cuts the connections a key already has, not only its new ones: a stolen key that
 * connected before the revoke can do nothing after it. The allowed agents reconnect by themselves and
 * keep their work: no frame is lost or rendered twice. Real CURVE, real kq, agents and sockets.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as zmq from 'zeromq';
import { describe, expect, it } from 'vitest';
import { kqStarter, startAgent, tempDir, waitFor } from './helpers/kq.js';
import { PROTOCOL_VERSION } from '../src/protocol/version.js';

const start = kqStarter(['--no-http', '--secure', '--heartbeat', '250ms', '--agent-timeout', '10s']);

const pairOf = (file: string) => {
  const text = fs.readFileSync(file, 'utf8');
  return { publicKey: /public-key = "(.{40})"/.exec(text)![1]!, secretKey: /secret-key = "(.{40})"/.exec(text)![1]! };
};

function results(dir: string): number[] {
  const file = path.join(dir, 'results');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map(Number).sort((a, b) => a - b) : [];
}

describe('kqctl keys revoke', () => {
  it('cuts the open connections of a revoked key; allowed agents reconnect and every frame renders once', async () => {
    const kq = await start({ numAgents: 2 });
    const serverKey = kq.info.serverKey!;
    // A remote agent with a key of its own (it stays allowed).
    const render2 = await kq.json('keys', 'add-client', 'render2');
    startAgent(['--host-name', 'render2', '--server-key', serverKey, '--key-file', render2.secretFile, ...kq.agentArgs()]);
    await waitFor('3 agents', async () => (await kq.agents()).filter((a) => a.state === 'idle' || a.state === 'busy').length === 3, 30_000);

    // The thief holds a key that is allowed now, and connects before the revoke.
    const stolen = await kq.json('keys', 'add-client', 'laptop');
    const thief = new zmq.Dealer({ linger: 0, receiveTimeout: 5000, curveServerKey: serverKey, ...(() => { const p = pairOf(stolen.secretFile); return { curvePublicKey: p.publicKey, curveSecretKey: p.secretKey }; })() });
    let cut = false;
    const observer = new zmq.Observer(thief);
    void (async () => {
      try {
        for await (const e of observer) if (e.type === 'disconnect') cut = true;
      } catch { /* closed at the end */ }
    })();
    thief.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
    const ask = async (body: object) => {
      await thief.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: String(Math.random()), ...body }));
      const [frame] = await thief.receive();
      return JSON.parse(frame!.toString());
    };
    expect(await ask({ type: 'ping' })).toMatchObject({ ok: true }); // the probe can fail: the key works before

    const dir = tempDir();
    const id = await kq.submit('--frames', '1-12', '--cwd', dir, '--retries', '0', '--', 'sh', '-c', 'sleep 1; echo {frame} >> results');
    await waitFor('renders running', async () => (await kq.json('show', String(id))).taskList.some((t: { state: string }) => t.state === 'running'), 30_000);

    expect((await kq.ctl('keys', 'revoke', 'laptop')).exitCode).toBe(0);
    await waitFor('kq to cut the revoked key\'s open connection', () => cut, 30_000);

    const marker = path.join(dir, 'pwned');
    const after = await ask({ type: 'submit', job: { argv: ['touch', marker] } }).catch((err: { code?: string }) => err.code);
    expect(after).toBe('EAGAIN'); // no answer: the reconnect is refused by ZAP
    observer.close();
    thief.close();

    const job = await kq.waitJob(id, 120_000);
    expect(job.state).toBe('Completed');
    expect(results(dir)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1)); // each frame once
    expect((await kq.json<Array<{ id: number }>>('list')).map((j) => j.id)).toEqual([id]);
    expect(fs.existsSync(marker)).toBe(false);
    // The allowed agents are still there and take work again.
    await waitFor('3 agents back', async () => (await kq.agents()).filter((a) => a.state === 'idle' || a.state === 'busy').length === 3, 30_000);
    const next = await kq.submit('--frames', '1-3', '--', 'true');
    expect((await kq.waitJob(next)).state).toBe('Completed');
    expect(kq.log()).toMatch(/key\(s\) revoked: closing every connection/);
  });

  it('a busy agent whose connection was renewed keeps its render when the next task cannot reach it (prefetch)', async () => {
    const kq = await start({ numAgents: 1 });
    const dir = tempDir();
    const long = await kq.submit('--cwd', dir, '--', 'sh', '-c', 'sleep 4; echo A >> results');
    await waitFor('A running', async () => (await kq.json('show', String(long))).state === 'Running', 30_000);
    // A revoke renews kq's sockets: the agent reconnects under a new routing id while A renders.
    const spare = await kq.json('keys', 'add-client', 'spare');
    const peer = new zmq.Dealer({ linger: 0, receiveTimeout: 10_000, curveServerKey: kq.info.serverKey!, ...(() => { const p = pairOf(spare.secretFile); return { curvePublicKey: p.publicKey, curveSecretKey: p.secretKey }; })() });
    peer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
    await peer.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: 'p', type: 'ping' }));
    await peer.receive(); // admitted: its revoke must cut it
    expect((await kq.ctl('keys', 'revoke', 'spare')).exitCode).toBe(0);
    peer.close();
    await waitFor('kq listening again', () => kq.log().includes('listening again after a revoke'), 30_000);
    // The next task goes to the busy agent ahead (prefetch), over the connection it no longer has.
    const next = await kq.submit('--cwd', dir, '--', 'sh', '-c', 'echo B >> results');
    await kq.waitJob(next);
    const a = await kq.waitJob(long);
    expect(a.state).toBe('Completed');
    expect(a.taskList[0].attempts).toBe(1);
    expect(fs.readFileSync(path.join(dir, 'results'), 'utf8').trim().split('\n').sort()).toEqual(['A', 'B']);
  });

  it('a malformed file among the allowed keys costs no other key its place', async () => {
    const kq = await start({ numAgents: 1 });
    fs.writeFileSync(path.join(kq.dataRoot, 'keys', 'allowed', 'bad.key'), 'garbage\n');
    await new Promise((r) => setTimeout(r, 2500)); // past the once-a-second allowlist check
    expect((await kq.ctl('list')).exitCode).toBe(0);
    expect((await kq.waitJob(await kq.submit('--', 'true'))).state).toBe('Completed');
    expect(kq.log()).not.toMatch(/key\(s\) revoked/);
  });
});

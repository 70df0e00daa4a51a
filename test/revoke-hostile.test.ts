/**
 * A revoke renews kq's three sockets (close, listen again): what a hostile local process or a flood of
 * connections can do around that. Real kq, real CURVE, real sockets; the port thief is a real process.
 */
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { execa, type ResultPromise } from 'execa';
import * as zmq from 'zeromq';
import { describe, expect, it } from 'vitest';
import { type Kq, kqStarter, sleep, tempDir, waitFor } from './helpers/kq.js';
import { PROTOCOL_VERSION } from '../src/protocol/version.js';
import { RENEW_PATIENCE_MS } from '../src/kq/sockets.js';

const start = kqStarter(['--no-http', '--secure', '--heartbeat', '250ms', '--agent-timeout', '20s']);

/** A client with a key of its own that kq has admitted (its connection is open): revoking it renews kq's sockets. */
async function admittedClient(kq: Kq, name: string): Promise<{ dealer: zmq.Dealer; cut: () => boolean }> {
  const added = await kq.json('keys', 'add-client', name);
  const text = fs.readFileSync(added.secretFile, 'utf8');
  const dealer = new zmq.Dealer({
    linger: 0, sendTimeout: 5000, receiveTimeout: 10_000, curveServerKey: kq.info.serverKey!,
    curvePublicKey: /public-key = "(.{40})"/.exec(text)![1]!, curveSecretKey: /secret-key = "(.{40})"/.exec(text)![1]!,
  });
  let cut = false;
  const observer = new zmq.Observer(dealer);
  void (async () => {
    try {
      for await (const e of observer) if (e.type === 'disconnect') cut = true;
    } catch { /* closed */ }
  })();
  dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
  await dealer.send(JSON.stringify({ v: PROTOCOL_VERSION, rid: name, type: 'ping' }));
  const [reply] = await dealer.receive();
  expect(JSON.parse(reply!.toString())).toMatchObject({ ok: true }); // admitted: the probe can fail
  return { dealer, cut: () => cut };
}

/**
 * A process that binds `port` the moment it is free and holds it for `holdS` seconds: the moment between
 * kq closing its sockets and binding their successors. Prints "stolen" and "released"; "never" after 10 s.
 */
function portThief(port: number, holdS: number): { proc: ResultPromise; output: () => string } {
  const script = `
import socket, sys, time
deadline = time.time() + 10
while time.time() < deadline:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", ${port})); s.listen(1)
    except OSError:
        s.close(); continue
    print("stolen", flush=True); time.sleep(${holdS}); s.close(); print("released", flush=True); sys.exit(0)
print("never", flush=True)
`;
  const proc = execa('python3', ['-c', script], { reject: false, buffer: false, detached: true });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  return { proc, output: () => out };
}

/** Revoke admitted clients until the thief wins the race for the request port (it nearly always does at once). */
async function revokeWhileThiefWaits(kq: Kq, holdS: number): Promise<{ proc: ResultPromise; renews: number }> {
  // (wrapped: an async function returning the process itself would wait for it to exit)
  for (let round = 1; ; round++) {
    const client = await admittedClient(kq, `victim${round}`);
    const thief = portThief(kq.info.requestPort, holdS);
    await sleep(300); // the thief is looping
    expect((await kq.ctl('keys', 'revoke', `victim${round}`)).exitCode).toBe(0);
    const outcome = await waitFor('the thief to win or give up', () => (/stolen|never/.exec(thief.output()) ?? [])[0], 30_000);
    client.dealer.close();
    if (outcome === 'stolen') return { proc: thief.proc, renews: round };
    await thief.proc;
    if (round === 5) throw new Error('the thief never took the port in 5 revokes');
    await waitFor('kq listening again', () => listeningAgain(kq) >= round, 30_000);
  }
}

const listeningAgain = (kq: Kq) => kq.log().split('\n').filter((l) => l.includes('listening again after a revoke')).length;

describe('renewing the sockets after a revoke, against a hostile neighbour', () => {
  it('a port taken while kq listens again: kq keeps trying, blames no agent for its own deafness, and answers and renders once it is free', async () => {
    // The port is held longer than the agent timeout, and longer than kq used to try (100 × 50 ms).
    const kq = await start({ numAgents: 1, args: ['--agent-timeout', '4s'] });
    const dir = tempDir();
    const render = await kq.submit('--cwd', dir, '--', 'sh', '-c', 'sleep 12; echo done >> results');
    await waitFor('the render running', async () => (await kq.json('show', String(render))).state === 'Running', 30_000);
    const { proc: thief, renews } = await revokeWhileThiefWaits(kq, 8);
    try {
      await thief;
      await waitFor('kq listening again', () => listeningAgain(kq) >= renews, 30_000);
      const job = await kq.waitJob(render);
      expect(job.state).toBe('Completed');
      expect(job.taskList[0].attempts).toBe(1); // the render was never taken from its agent
      expect(fs.readFileSync(path.join(dir, 'results'), 'utf8')).toBe('done\n');
      expect(kq.log()).not.toMatch(/agent lost/);
      expect((await kq.waitJob(await kq.submit('--', 'true'))).state).toBe('Completed');
    } finally {
      thief.kill('SIGKILL');
    }
  });

  it('a port taken for good: kq stops with exit code 3 and says why, rather than stay up deaf', { timeout: 180_000 }, async () => {
    const kq = await start({ numAgents: 1 });
    const holdS = RENEW_PATIENCE_MS / 1000 + 30;
    const { proc: thief } = await revokeWhileThiefWaits(kq, holdS);
    try {
      const result = await Promise.race([kq.proc!, sleep(RENEW_PATIENCE_MS + 60_000).then(() => null)]);
      expect(result, 'kq still running').not.toBeNull();
      expect(result!.exitCode).toBe(3);
      expect(kq.output).toMatch(new RegExp(`kq: cannot listen on ports .*${kq.info.requestPort}.* again after a revoke`));
      kq.proc = null;
    } finally {
      thief.kill('SIGKILL');
    }
  });

  it('running out of file descriptors is not a revoke: no key is forgotten, and a real revoke still cuts', async () => {
    const kq = await start({ numAgents: 0 });
    const client = await admittedClient(kq, 'laptop');
    const pid = kq.proc!.pid!;
    const inUse = fs.readdirSync(`/proc/${pid}/fd`).length;
    const soft = (await execa('prlimit', ['--pid', String(pid), '--nofile', '--noheadings', '--output', 'SOFT'])).stdout.trim();
    // A flood of plain TCP connections (no key needed: libzmq holds each until its handshake times out).
    await execa('prlimit', ['--pid', String(pid), `--nofile=${inUse + 40}:`]);
    const flood: net.Socket[] = [];
    try {
      for (let i = 0; i < 200; i++) {
        const s = net.connect(kq.info.requestPort, '127.0.0.1');
        s.on('error', () => undefined);
        flood.push(s);
      }
      await waitFor('kq out of descriptors', () => fs.readdirSync(`/proc/${pid}/fd`).length >= inUse + 39, 30_000);
      await sleep(3500); // past three looks at the allowlist
    } finally {
      flood.forEach((s) => s.destroy());
      await execa('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
    }
    expect(kq.log()).not.toMatch(/key\(s\) revoked/);
    expect(client.cut()).toBe(false);

    expect((await kq.ctl('keys', 'revoke', 'laptop')).exitCode).toBe(0);
    await waitFor('the revoked key\'s open connection to be cut', () => client.cut(), 30_000);
    client.dealer.close();
    expect((await kq.json('list'))).toEqual([]);
  });

  it('an entry of the allowlist kq cannot read (a directory, a FIFO) admits nobody and hides no revoke', async () => {
    const kq = await start({ numAgents: 0 });
    const client = await admittedClient(kq, 'laptop');
    const allowed = path.join(kq.dataRoot, 'keys', 'allowed');
    fs.mkdirSync(path.join(allowed, 'broken.key'));
    await execa('mkfifo', [path.join(allowed, 'pipe.key')]);
    await sleep(2500); // past two looks at the allowlist
    expect(client.cut()).toBe(false);
    const desk = await admittedClient(kq, 'desk'); // still admits keys added since
    expect((await kq.ctl('keys', 'revoke', 'laptop')).exitCode).toBe(0);
    await waitFor('the revoked key\'s open connection to be cut', () => client.cut(), 30_000);
    client.dealer.close();
    desk.dealer.close();
    expect((await kq.json('list'))).toEqual([]);
  });
});

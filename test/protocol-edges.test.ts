/**
 * What kq says about input it refuses: the real problem, not a misleading one. Real kq, raw ZeroMQ and HTTP.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import * as zmq from 'zeromq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Topics } from '../src/protocol/constants.js';
import { PROTOCOL_VERSION } from '../src/protocol/version.js';
import { BIN, Kq, cleanupAll, sleep, tempDir, waitFor } from './helpers/kq.js';

let kq: Kq;
beforeAll(async () => { kq = await Kq.start({ numAgents: 0 }); });
afterAll(async () => { await cleanupAll([kq]); });

async function request(body: object): Promise<any> {
  const dealer = new zmq.Dealer({ linger: 0, receiveTimeout: 15_000 });
  dealer.connect(`tcp://127.0.0.1:${kq.info.requestPort}`);
  try {
    await dealer.send(JSON.stringify(body));
    const [frame] = await dealer.receive();
    return JSON.parse(frame!.toString());
  } finally {
    dealer.close();
  }
}

describe('refused input is described as it is', () => {
  it('a protocol version sent as a string is called a string, not a version mismatch', async () => {
    const r = await request({ v: String(PROTOCOL_VERSION), rid: 'a', type: 'ping' });
    expect(r).toMatchObject({ ok: false, code: 'bad-request' });
    const v = PROTOCOL_VERSION;
    expect(r.error).not.toMatch(new RegExp(`protocol version ${v} \\(this kq speaks ${v}\\)`));
    expect(r.error).toContain(`"v" must be the number ${v}, not the string "${v}"`);
    const other = await request({ v: v + 1, rid: 'b', type: 'ping' });
    expect(other.error).toContain(`protocol version ${v + 1} (this kq speaks ${v})`);
    expect((await request({ v, rid: 'c', type: 'ping' })).ok).toBe(true);
  });

  it('a huge priority, chunk or retry count is reported against its own range (API and kqctl)', async () => {
    for (const [field, value, range] of [['priority', 1e308, /<=\s*1000/], ['priority', -1e308, />=\s*-1000/], ['chunk', 1e300, /<=\s*1000000/], ['maxAttempts', 1e300, /<=\s*100/]] as const) {
      const ws = await request({ v: PROTOCOL_VERSION, rid: 'p', type: 'submit', job: { argv: ['true'], [field]: value } });
      expect(ws.ok, field).toBe(false);
      expect(ws.error, field).toMatch(range);
      expect(ws.error, field).not.toMatch(/9007199254740991/);
      const res = await fetch(new URL('/api/jobs', kq.info.httpUrl!), {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ argv: ['true'], [field]: value }),
      });
      expect(res.status).toBe(400);
      const body = await res.json() as { error: string };
      expect(body.error, field).toMatch(range);
      expect(body.error, field).not.toMatch(/9007199254740991/);
    }
    const ctl = await kq.ctl('submit', '--priority', '1e308', '--', 'true');
    expect(ctl.exitCode).toBe(2);
    expect(ctl.stderr).toMatch(/-1000 to 1000/);
    expect(await kq.json('list')).toEqual([]);
  });
});

describe('subscriptions', () => {
  it('kqctl log -f 1 prints exactly job 1\'s log, never job 10\'s lines (topics are not prefixes of each other)', async () => {
    const farm = await Kq.start({ numAgents: 2 });
    try {
      const dir = tempDir();
      const one = await farm.submit('--name', 'a', '--cwd', dir, '--', 'sh', '-c',
        `echo ${'o'.repeat(100)}; while [ ! -f go1 ]; do sleep 0.1; done; echo job-one-end`);
      expect(one).toBe(1);
      for (let i = 2; i <= 9; i++) await farm.submit('--', 'true');
      const follower = execa('node', [BIN.kqctl, '--data-root', farm.dataRoot, '--connect-timeout', '15s', 'log', '-f', '1'], { reject: false, buffer: true, detached: true });
      let followed = '';
      follower.stdout!.on('data', (d: Buffer) => { followed += d.toString(); });
      await waitFor('log -f to print job 1', () => followed.includes('o'.repeat(100)));

      // A raw subscriber to job 1's topics, as the protocol defines them: it must hear nothing of job 10.
      const sub = new zmq.Subscriber({ linger: 0 });
      sub.subscribe(Topics.log(1), Topics.job(1));
      sub.connect(`tcp://127.0.0.1:${farm.info.broadcastPort}`);
      const heard: any[] = [];
      void (async () => { for await (const [, frame] of sub) heard.push(JSON.parse(frame!.toString())); })().catch(() => undefined);
      await sleep(500); // the slow joiner

      // Job 10 logs one byte at a time: some broadcast offset equals where job 1's follower stands.
      const ten = await farm.submit('--name', 'b', '--', 'sh', '-c', 'i=0; while [ $i -lt 400 ]; do echo; i=$((i+1)); sleep 0.005; done');
      expect(ten).toBe(10);
      await farm.waitJob(ten);
      fs.writeFileSync(path.join(dir, 'go1'), '');
      await farm.waitJob(one);
      const r = await follower;
      expect(r.exitCode).toBe(0);
      const [job1] = await farm.json('list');
      expect(followed).toBe(fs.readFileSync(job1.logFile, 'utf8'));
      sub.close();
      expect(heard.length).toBeGreaterThan(0);
      expect(heard.filter((m) => m.jobId !== 1)).toEqual([]);
    } finally {
      await cleanupAll([farm]);
    }
  });
});

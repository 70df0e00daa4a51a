/**
 * What kq broadcasts, and to whom: job broadcasts are coalesced per event-loop turn but keep their order
 * and always end with the terminal state; log broadcasts go out only while someone subscribes, and a
 * subscriber coming, going or lying about its subscriptions never cuts another follower off.
 * Real kq and agents, raw ZeroMQ subscribers as the protocol defines them.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as zmq from 'zeromq';
import { afterAll, describe, expect, it } from 'vitest';
import { Topics } from '../src/protocol/constants.js';
import { Kq, cleanupAll, sleep, tempDir, waitFor } from './helpers/kq.js';

const kqs: Kq[] = [];
afterAll(async () => { await cleanupAll(kqs); });

/** A raw subscriber that keeps every broadcast it hears. */
function listen(port: number, ...topics: string[]): { sub: zmq.Subscriber; heard: any[] } {
  const sub = new zmq.Subscriber({ linger: 0 });
  sub.subscribe(...topics);
  sub.connect(`tcp://127.0.0.1:${port}`);
  const heard: any[] = [];
  void (async () => { for await (const [, frame] of sub) heard.push(JSON.parse(frame!.toString())); })().catch(() => undefined);
  return { sub, heard };
}

describe('job broadcasts', () => {
  it('come once per finished task (not twice), in order, and end with the terminal state', async () => {
    const kq = await Kq.start({ numAgents: 2 });
    kqs.push(kq);
    const { sub, heard } = listen(kq.info.broadcastPort, Topics.job(1));
    await sleep(500); // the slow joiner
    const tasks = 200;
    expect(await kq.submit('--frames', `1-${tasks}`, '--', 'true')).toBe(1);
    await waitFor('the Completed broadcast', () => heard.some((m) => m.state === 'Completed'), 120_000);
    await sleep(300);
    sub.close();
    const jobs = heard.filter((m) => m.type === 'job');
    expect(jobs.at(-1)).toMatchObject({ jobId: 1, state: 'Completed', framesDone: tasks, framesTotal: tasks });
    for (let i = 1; i < jobs.length; i++) expect(jobs[i].framesDone).toBeGreaterThanOrEqual(jobs[i - 1].framesDone);
    // A finished task and the next one handed out are one change to subscribers: kq used to send both.
    expect(jobs.length).toBeLessThanOrEqual(tasks + 10);
  }, 180_000);
});

describe('log broadcasts', () => {
  it('reach a follower while other subscribers come and go, and a stranger\'s unsubscribe cuts nobody off', async () => {
    const kq = await Kq.start({ numAgents: 1 });
    kqs.push(kq);
    const port = kq.info.broadcastPort;
    const dir = tempDir();
    const a = listen(port, Topics.log(1));
    const lines = () => a.heard.filter((m) => m.type === 'log').map((m) => m.text as string).join('');
    expect(await kq.submit('--cwd', dir, '--', 'sh', '-c',
      'while [ ! -e go ]; do echo waiting; sleep 0.2; done; echo the-end-marker; while [ ! -e stop ]; do sleep 0.1; done')).toBe(1);
    // kq has read A's subscription once A hears the render's lines.
    await waitFor('the follower to hear the render', () => lines().includes('waiting'), 30_000);

    // B follows the same log, then leaves: A's subscription must outlive B's.
    const b = listen(port, Topics.log(1));
    await waitFor('the second follower to hear the render', () => b.heard.some((m) => m.type === 'log'), 30_000);
    b.sub.close();
    // C never subscribed but says it unsubscribes from job 1's log (an XSUB can send anything).
    const c = new zmq.XSubscriber({ linger: 0 });
    c.connect(`tcp://127.0.0.1:${port}`);
    await c.send(Buffer.concat([Buffer.from([0]), Buffer.from(Topics.log(1))]));
    await sleep(500);
    c.close();

    fs.writeFileSync(path.join(dir, 'go'), '');
    await waitFor('the follower to hear the line after both', () => lines().includes('the-end-marker'), 30_000);
    fs.writeFileSync(path.join(dir, 'stop'), '');
    await kq.waitJob(1);
    a.sub.close();
  }, 120_000);
});

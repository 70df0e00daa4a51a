/**
 * Every frame runs exactly once, however often kq is killed -9 while agents finish tasks: the agents'
 * re-registrations and heartbeats (running, queued, last two outcomes) bring back every outcome kq had not
 * stored. Real kq, six real agents with prefetch, real renders recording that they ran.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, tempDir, waitFor } from './helpers/kq.js';

const kqs: Kq[] = [];
afterAll(async () => {
  await cleanupAll(kqs);
});

describe('kq killed -9 while tasks finish', () => {
  it('three times, six agents, 300 short tasks: every frame runs exactly once', { timeout: 240_000 }, async () => {
    const kq = new Kq({ numAgents: 6, args: ['--heartbeat', '250ms', '--agent-timeout', '5s', '--kill-grace', '1s'] });
    kqs.push(kq);
    await kq.start();
    const dir = tempDir('kq-crash-once-');
    const id = await kq.submit('--frames', '1-300', '--cwd', dir, '--', 'sh', '-c', 'echo {frame} >> results');
    for (const atDone of [50, 140, 220]) {
      await waitFor(`${atDone} frames done`, async () => (await kq.json('show', String(id))).framesDone >= atDone, 120_000, 20);
      await kq.kill9();
      await kq.start();
    }
    const job = await kq.waitJob(id, 120_000);
    expect(job.state).toBe('Completed');
    expect(job.framesDone).toBe(300);
    const ran = fs.readFileSync(path.join(dir, 'results'), 'utf8').trim().split('\n').map(Number).sort((a, b) => a - b);
    expect(ran).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(await kq.stop()).toBe(0);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

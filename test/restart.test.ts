/**
 * Restarts: one kq per data root by a lock the kernel releases, and after a crash only kq's own agents
 * are adopted — never a process that merely took over a recorded pid.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Kq, cleanupAll, isRunning, tempDir, waitFor } from './helpers/kq.js';

const FAST = ['--heartbeat', '250ms', '--agent-timeout', '2s'];
const kqs: Kq[] = [];
const decoys: ResultPromise[] = [];
afterAll(async () => {
  for (const d of decoys) d.kill('SIGKILL');
  await cleanupAll(kqs);
});

function newKq(o: ConstructorParameters<typeof Kq>[0] = {}): Kq {
  const kq = new Kq({ ...o, args: [...FAST, ...(o.args ?? [])] });
  kqs.push(kq);
  return kq;
}

describe('the data root lock', () => {
  it('a stale lock whose pid now belongs to a live process does not block a start', async () => {
    const first = newKq({ numAgents: 0 });
    await first.start();
    await first.kill9();
    // The dead kq's pid now belongs to a live process (here: this test's): in whatever file names the owner
    // (kq.lock.pid; kq.lock itself where it is a plain pid file rather than the lock database).
    const lock = path.join(first.dataRoot, 'kq.lock');
    if (!fs.readFileSync(lock).subarray(0, 15).equals(Buffer.from('SQLite format 3'))) fs.writeFileSync(lock, `${process.pid}\n`);
    fs.writeFileSync(`${lock}.pid`, `${process.pid}\n`);
    const second = newKq({ numAgents: 0, dataRoot: first.dataRoot });
    await second.start();
    expect((await second.ctl('list')).exitCode).toBe(0);
    // And that kq's lock holds against a third.
    await expect(newKq({ numAgents: 0, dataRoot: first.dataRoot }).start()).rejects.toThrow(/another kq \(pid \d+\) is already running on this data root/);
  });

  it('starts racing for a stale lock: exactly one runs, the others say another kq runs', async () => {
    const first = newKq({ numAgents: 0 });
    await first.start();
    await first.kill9();
    for (let round = 0; round < 3; round++) {
      const racers = Array.from({ length: 6 }, () => newKq({ numAgents: 0, dataRoot: first.dataRoot }));
      await Promise.allSettled(racers.map((k) => k.start()));
      // Every loser exits (a slow one may still be starting); two winners would both stay.
      const running = () => racers.filter((k) => k.proc && isRunning(k.proc.pid!));
      await waitFor(`round ${round}: the losers gone`, () => running().length <= 1, 30_000).catch(() => undefined);
      const alive = running();
      expect(alive, `round ${round}`).toHaveLength(1);
      for (const k of racers.filter((x) => !alive.includes(x))) expect(k.output).toMatch(/another kq( \(pid \d+\))? is already running/);
      await alive[0]!.kill9();
    }
  });
});

describe('adopting local agents after a crash', () => {
  it('a recorded agent pid that now runs some other program with "agent" in its name is neither adopted nor killed', async () => {
    const kq = newKq({ numAgents: 1 });
    await kq.start();
    const [agent] = await kq.agents();
    await kq.kill9();
    // As after a reboot: the agent is gone too, and its pid is now another program's, "ssh-agent"-like.
    process.kill(agent.pid, 'SIGKILL');
    await waitFor('the old agent gone', () => !isRunning(agent.pid));
    const bin = path.join(tempDir(), 'fake-ssh-agent');
    fs.symlinkSync('/bin/sleep', bin);
    const decoy = execa(bin, ['300'], { reject: false, detached: true });
    decoys.push(decoy);
    const decoyPid = decoy.pid!;
    // Point kq's records of the old agent at the decoy, as pid reuse would.
    const db = new Database(path.join(kq.dataRoot, 'kq.db'));
    db.prepare('UPDATE agents SET pid = ? WHERE pid = ?').run(decoyPid, agent.pid);
    db.close();
    const recordFile = path.join(kq.dataRoot, 'local-agents.json');
    if (fs.existsSync(recordFile)) {
      const records = JSON.parse(fs.readFileSync(recordFile, 'utf8')) as Array<{ pid: number }>;
      fs.writeFileSync(recordFile, JSON.stringify(records.map((r) => (r.pid === agent.pid ? { ...r, pid: decoyPid } : r))));
    }

    await kq.start();
    // Past the agent timeout, the old agent's row is written off — and the decoy still runs.
    await waitFor('the old agent written off', async () => (await kq.agents()).some((a) => a.id === agent.id && (a.state === 'lost' || a.state === 'offline')), 30_000);
    expect(isRunning(decoyPid)).toBe(true);
    // kq started an agent of its own instead.
    const live = await waitFor('a new agent', async () => {
      const agents = (await kq.agents()).filter((a) => a.state === 'idle' || a.state === 'busy');
      return agents.length === 1 ? agents : null;
    });
    expect(live[0].pid).not.toBe(decoyPid);
    expect(isRunning(live[0].pid)).toBe(true);
    expect(kq.log()).not.toMatch(new RegExp(`"pid":${decoyPid},.*adopted`));
  });

  it('an agent that survived a kill -9 of kq is adopted (same process), not doubled', async () => {
    const kq = newKq({ numAgents: 1 });
    await kq.start();
    const [agent] = await kq.agents();
    await kq.kill9();
    await kq.start();
    await waitFor('the agent registered again', async () => (await kq.agents()).some((a) => a.pid === agent.pid && a.state === 'idle'), 30_000);
    expect((await kq.agents()).filter((a) => a.state === 'idle' || a.state === 'busy').map((a) => a.pid)).toEqual([agent.pid]);
    expect(kq.log()).toMatch(/local agent adopted from the previous kq/);
  });
});

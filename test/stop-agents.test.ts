/**
 * StopAgents.sh with no argument (the seed's form): every kq agent of this user on this machine, and
 * nothing else. "Every agent of this user" would also reach other tests' agents, so the case runs inside
 * its own PID namespace (unshare --pid --mount-proc, as root), where the only processes are the test's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa, execaSync } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, Kq, ROOT, cleanupAll, tempDir, waitFor } from './helpers/kq.js';

const STOP = path.join(ROOT, 'scripts', 'StopAgents.sh');
const kqs: Kq[] = [];
afterAll(() => cleanupAll(kqs));

const CAN_UNSHARE = process.getuid?.() === 0 && execaSync('unshare', ['--pid', '--fork', '--mount-proc', 'true'], { reject: false }).exitCode === 0;

describe('StopAgents.sh with no argument', () => {
  it.skipIf(!CAN_UNSHARE)('stops exactly the kq agents of this user: not another user\'s, not look-alikes', async () => {
    const kq = await Kq.start({ numAgents: 0, args: ['--heartbeat', '250ms'] });
    kqs.push(kq);
    const dir = tempDir('kq-stop-');
    fs.chmodSync(dir, 0o755);
    fs.symlinkSync('/bin/sleep', path.join(dir, 'kq-agent'));
    const agent = (host: string) => `node ${BIN.agent} --host-name ${host} ${kq.agentArgs().join(' ')} >/dev/null 2>&1 &`;
    // Runs as the namespace's first process: its processes are the only ones StopAgents.sh can see.
    const script = [
      'set -u',
      `cd ${dir}`,
      agent('mine-1'), 'a1=$!',
      agent('mine-2'), 'a2=$!',
      `setpriv --reuid=65534 --regid=65534 --clear-groups ${agent('other-user')}`, 'other=$!',
      './kq-agent 300 & fake1=$!', // named kq-agent, but sleep
      `node -e 'setInterval(() => {}, 1000)' ${dir}/kq-agent.js & fake2=$!`, // node naming kq-agent.js, but not running it
      'while [ ! -f go ]; do sleep 0.05; done',
      `sh ${STOP}; echo "exit $?"`,
      // Gone = no such process or a zombie (this script reaps nothing).
      'for p in $a1 $a2 $other $fake1 $fake2; do s=$(cut -d" " -f3 /proc/$p/stat 2>/dev/null); case $s in ""|Z) echo "gone $p";; *) echo "alive $p";; esac; done',
      'echo "pids $a1 $a2 $other $fake1 $fake2"',
    ].join('\n');
    // --kill-child: should the test give up, the namespace (and everything in it) goes with unshare.
    const run = execa('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', 'sh', '-c', script], { reject: false, timeout: 120_000 });
    await waitFor('three agents registered', async () => (await kq.agents()).length === 3, 30_000);
    fs.writeFileSync(path.join(dir, 'go'), '');
    const r = await run;
    const out = String(r.stdout);
    expect(out, String(r.stderr)).toMatch(/^exit 0$/m);
    expect(out).toMatch(/stopped 2 kq agent\(s\)/);
    const [a1, a2, other, fake1, fake2] = /^pids (.*)$/m.exec(out)![1]!.split(' ');
    for (const p of [a1, a2]) expect(out).toContain(`gone ${p}`);
    for (const p of [other, fake1, fake2]) expect(out).toContain(`alive ${p}`);
    // The two stopped agents said goodbye to kq.
    const agents = await kq.json('agents', '--all');
    for (const host of ['mine-1', 'mine-2']) expect(agents.find((a: any) => a.host === host)?.state).toBe('offline');
  });

  it('refuses more than two arguments, and an empty DATA_ROOT, with exit 2', async () => {
    for (const args of [['a', '1', 'x'], ['']]) {
      const r = await execa('sh', [STOP, ...args], { reject: false });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain('usage: StopAgents.sh [DATA_ROOT [GRACE_SECONDS]]');
    }
  });
});

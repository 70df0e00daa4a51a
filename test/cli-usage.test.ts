/**
 * Usage, help and failures of the command lines as a person meets them: one clear line and a documented
 * exit code, never a stack trace; --help always works. Real kq, kq-agent and kqctl processes.
 */
import { execSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, Kq, cleanupAll, kqctl, tempDir } from './helpers/kq.js';

const kqs: Kq[] = [];
const immutable: string[] = [];
afterAll(async () => {
  for (const f of immutable) try { execSync(`chattr -i '${f}'`); } catch { /* gone */ }
  await cleanupAll(kqs);
});

/** A stack trace's frames, or the messages of libraries that leak through one. */
const TRACE = /^\s+at |sonic boom|node:internal|Node\.js v\d/m;

async function run(bin: string, args: string[], env: Record<string, string> = {}) {
  const r = await execa('node', [bin, ...args], { env, reject: false, timeout: 60_000 });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

const freePorts = ['--request-port', '0', '--update-port', '0', '--broadcast-port', '0', '--http-port', '0', '--num-agents', '0'];

describe('environment values', () => {
  it('kq --help works whatever the environment says; a bad KQ_* value is one line and exit 2', async () => {
    for (const [name, value] of [['KQ_REQUEST_PORT', 'abc'], ['KQ_NUM_AGENTS', 'lots'], ['KQ_HTTP_PORT', '99999']]) {
      const help = await run(BIN.kq, ['--help'], { [name]: value });
      expect(help.exitCode, name).toBe(0);
      expect(help.stdout).toMatch(/^Usage: kq/);
      expect(help.stderr).toBe('');
      const start = await run(BIN.kq, ['--data-root', tempDir()], { [name]: value });
      expect(start.exitCode, name).toBe(2);
      expect(start.stderr).not.toMatch(TRACE);
      expect(start.stderr.trim().split('\n')).toHaveLength(1);
      expect(start.stderr).toContain(`${name}=${value}`);
    }
  });

  it('kqctl with a bad KQ_REQUEST_PORT says so (exit 2), not "Invalid argument"', async () => {
    const r = await kqctl(['--data-root', tempDir(), 'list'], { KQ_REQUEST_PORT: 'abc' });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/KQ_REQUEST_PORT=abc/);
    expect(r.stderr).not.toMatch(TRACE);
  });
});

describe('help', () => {
  it('kq --help and kq-agent --help show durations as the README writes them', async () => {
    const kq = await run(BIN.kq, ['--help']);
    expect(kq.stdout.replace(/\s+/g, ' ')).toMatch(/--heartbeat <duration> .*\(default: 2s\)/);
    expect(kq.stdout.replace(/\s+/g, ' ')).toMatch(/--agent-timeout <duration> .*\(default: 10s\)/);
    expect(kq.stdout.replace(/\s+/g, ' ')).toMatch(/--kill-grace <duration> .*\(default: 5s\)/);
    expect(kq.stdout).not.toMatch(/default: (2000|10000|5000)\)/);
    const agent = await run(BIN.agent, ['--help']);
    expect(agent.stdout.replace(/\s+/g, ' ')).toMatch(/--kill-grace <duration> .*\(default: 5s\)/);
    expect(agent.stdout).not.toMatch(/default: (2000|5000)\)/);
  });

  it('remote stop --help does not describe starting agents', async () => {
    const r = await kqctl(['remote', 'stop', '--help']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).not.toMatch(/to start agents on/);
    expect(r.stdout.replace(/\s+/g, ' ')).toMatch(/--host <host> the machine to stop agents on/);
  });

  it('bare kqctl prints usage on stderr and exits 2; --help prints it on stdout and exits 0', async () => {
    const bare = await kqctl([]);
    expect(bare.exitCode).toBe(2);
    expect(bare.stdout).toBe('');
    expect(bare.stderr).toMatch(/^Usage: kqctl/);
    const help = await kqctl(['--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/^Usage: kqctl/);
    expect(help.stdout).toMatch(/6 .*unexpected/);
  });
});

describe('unexpected errors', () => {
  it('have their own exit code (6), not 1 ("a job failed"), and one line without a trace', async () => {
    const kq = await Kq.start({ numAgents: 0 });
    kqs.push(kq);
    await kq.submit('--', 'true');
    const r = await execa('sh', ['-c', 'exec node "$0" --data-root "$1" list > /dev/full', BIN.kqctl, kq.dataRoot], { reject: false });
    expect(r.exitCode).toBe(6);
    expect(String(r.stderr)).toMatch(/^kqctl: cannot write the output: .*ENOSPC/);
    expect(String(r.stderr)).not.toMatch(TRACE);
  });
});

describe('a job table kq cannot use', () => {
  it('a corrupt kq.db: reported with its path and what to do, exit 1, no trace', async () => {
    const root = tempDir();
    fs.writeFileSync(path.join(root, 'kq.db'), Buffer.alloc(8192, 0x5a));
    const r = await run(BIN.kq, ['--data-root', root, ...freePorts]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).not.toMatch(TRACE);
    expect(r.stderr).toContain(path.join(root, 'kq.db'));
    expect(r.stderr).toMatch(/not a (valid )?(SQLite )?database.*move it aside/);
  });

  it('a read-only kq.db: reported with its path and what to do, exit 1, no trace', async () => {
    const kq = await Kq.start({ numAgents: 0 });
    await kq.stop();
    const db = path.join(kq.dataRoot, 'kq.db');
    // Read-only even for root: the immutable attribute (chmod does not stop root).
    if (process.getuid?.() === 0) {
      execSync(`chattr +i '${db}'`);
      immutable.push(db);
    } else {
      fs.chmodSync(db, 0o444);
    }
    const r = await run(BIN.kq, ['--data-root', kq.dataRoot, ...freePorts]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).not.toMatch(TRACE);
    expect(r.stderr).toContain(db);
    expect(r.stderr).toMatch(/read-?only.*writable/);
  });
});

describe('submit and list say what was meant (issue 13 #3, kqctl side)', () => {
  it('suggests --shell for one argument holding shell syntax, -- for an option after the command; refuses "-"; states in any case and comma lists', async () => {
    const kq = await Kq.start({ numAgents: 0 });
    kqs.push(kq);
    const piped = await kq.ctl('submit', '--', 'ls | wc -l');
    expect(piped.exitCode).toBe(2);
    expect(piped.stderr).toMatch(/--shell/);
    const option = await kq.ctl('submit', 'povray', '+Ishot.pov', '-D');
    expect(option.exitCode).toBe(2);
    expect(option.stderr).toMatch(/unknown option '-D'/);
    expect(option.stderr).toMatch(/after --/);
    const dash = await kq.ctl('submit', '--', '-');
    expect(dash.exitCode).toBe(2);
    expect(dash.stderr).toMatch(/"-"/);
    // A timer past 2^31-1 ms fires after 1 ms in Node: a 30-day timeout would kill every render at once.
    const longTimeout = await kq.ctl('submit', '--timeout', '30d', '--', 'true');
    expect(longTimeout.exitCode).toBe(2);
    expect(longTimeout.stderr).toMatch(/at most 24 days/);
    const api = await fetch(`http://127.0.0.1:${kq.info.httpPort!}/api/jobs`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ argv: ['true'], timeoutMs: 30 * 86_400_000 }),
    });
    expect(api.status).toBe(400);
    expect(await kq.json('list')).toEqual([]);

    const one = await kq.submit('--', 'true');
    const two = await kq.submit('--frames', '1-3', '--', 'true');
    expect((await kq.json('list', '--state', 'waiting')).map((j: any) => j.id)).toEqual([one, two]);
    expect((await kq.json('list', '--state', 'WAITING,completed')).map((j: any) => j.id)).toEqual([one, two]);
    expect((await kq.json('list', '--state', 'failed', 'Running'))).toEqual([]);
    const bad = await kq.ctl('list', '--state', 'waiting,done');
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/"done"/);

    // A job without frames is one task, not "0/0" frames.
    const list = await kq.ctl('list');
    const row = list.stdout.split('\n').find((l) => l.startsWith(`${one} `))!;
    expect(row).toMatch(/0\/1 task/);
    expect(row).not.toMatch(/0\/0/);
    expect(list.stdout.split('\n').find((l) => l.startsWith(`${two} `))).toMatch(/0\/3/);
    const show = await kq.ctl('show', String(one));
    expect(show.stdout).toMatch(/^Progress: +0\/1 task, 0%$/m);
  });
});

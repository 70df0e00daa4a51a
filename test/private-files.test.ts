/**
 * What kq keeps stays kq's owner's: the data root (job table with env values, logs, keys) is 0700 whatever
 * it was, the monitor token reaches no render, and a token file others could read or plant is not trusted.
 * Real kq, real agents, real renders.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { BIN, Kq, cleanupAll, tempDir } from './helpers/kq.js';

const kqs: Kq[] = [];
afterAll(() => cleanupAll(kqs));

describe('private files', () => {
  it('makes the data root 0700, also one that existed with wider modes', async () => {
    const dataRoot = path.join(tempDir(), 'shared-looking root');
    fs.mkdirSync(dataRoot, { mode: 0o755 });
    fs.chmodSync(dataRoot, 0o755);
    const kq = await Kq.start({ numAgents: 0, dataRoot, args: ['--no-http'] });
    kqs.push(kq);
    expect(fs.statSync(dataRoot).mode & 0o777).toBe(0o700);
    const fresh = await Kq.start({ numAgents: 0, args: ['--no-http'] });
    kqs.push(fresh);
    expect(fs.statSync(fresh.dataRoot).mode & 0o777).toBe(0o700);
  });

  it('renders on local agents never see the monitor token', async () => {
    const token = 'a-monitor-token-nobody-else-sees';
    const kq = await Kq.start({ numAgents: 1, env: { KQ_HTTP_TOKEN: token } });
    kqs.push(kq);
    const id = await kq.submit('--', 'sh', '-c', 'echo "token=[${KQ_HTTP_TOKEN-}]"');
    expect((await kq.waitJob(id)).state).toBe('Completed');
    const log = (await kq.ctl('log', String(id))).stdout;
    expect(log).toContain('token=[]');
    expect(log).not.toContain(token);
  });

  it('does not trust a token file others can read: a new one replaces it, 0600', async () => {
    const dataRoot = path.join(tempDir(), 'data root');
    fs.mkdirSync(dataRoot, { mode: 0o700 });
    const planted = 'a-token-someone-else-wrote-here';
    const tokenFile = path.join(dataRoot, 'http-token');
    fs.writeFileSync(tokenFile, planted + '\n', { mode: 0o644 });
    fs.chmodSync(tokenFile, 0o644);
    const kq = await Kq.start({ numAgents: 0, dataRoot, args: ['--secure'] });
    kqs.push(kq);
    const token = fs.readFileSync(tokenFile, 'utf8').trim();
    expect(token).not.toBe(planted);
    expect(fs.statSync(tokenFile).mode & 0o777).toBe(0o600);
    const api = `http://127.0.0.1:${kq.info.httpPort!}/api/jobs`;
    expect((await fetch(api, { headers: { authorization: `Bearer ${planted}` } })).status).toBe(401);
    expect((await fetch(api, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  });

  it('a FIFO planted where a secret file goes does not hang kq at start: a fresh private file replaces it', async () => {
    const dataRoot = path.join(tempDir(), 'data root');
    fs.mkdirSync(dataRoot, { mode: 0o700 });
    for (const name of ['local-agent-proof', 'http-token', 'kq.json']) execFileSync('mkfifo', ['-m', '600', path.join(dataRoot, name)]);
    const kq = await Kq.start({ numAgents: 1, dataRoot, args: ['--secure'] });
    kqs.push(kq);
    for (const name of ['local-agent-proof', 'http-token', 'kq.json']) {
      const st = fs.lstatSync(path.join(dataRoot, name));
      expect(st.isFile(), name).toBe(true);
      if (name !== 'kq.json') expect(st.mode & 0o777).toBe(0o600);
    }
    expect((await kq.waitJob(await kq.submit('--', 'true'))).state).toBe('Completed');
  });

  it('a FIFO planted at logs/kq.log: kq refuses to start with one clear line (exit 1), instead of hanging', async () => {
    const dataRoot = path.join(tempDir(), 'data root');
    fs.mkdirSync(path.join(dataRoot, 'logs'), { recursive: true, mode: 0o700 });
    execFileSync('mkfifo', ['-m', '600', path.join(dataRoot, 'logs', 'kq.log')]);
    const r = await execa('node', [BIN.kq, '--data-root', dataRoot, '--num-agents', '0', '--request-port', '0', '--update-port', '0',
      '--broadcast-port', '0', '--no-http'], { reject: false, timeout: 60_000 });
    expect(r.timedOut).toBe(false);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/kq\.log is not a regular file: remove it/);
  });
});

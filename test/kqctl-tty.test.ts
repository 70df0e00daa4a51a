/**
 * kqctl on a terminal (issue 17 #5), driven through a real pseudo-terminal (test/helpers/in-pty.py):
 * coloured states, the wait progress bar, the live `watch` table and shell completion; and piped or
 * with NO_COLOR, output byte for byte as scripts read it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, Kq, ROOT, cleanupAll, tempDir, waitFor } from './helpers/kq.js';

const PTY = path.join(ROOT, 'test', 'helpers', 'in-pty.py');
const kqs: Kq[] = [];
afterAll(() => cleanupAll(kqs));
async function start(): Promise<Kq> {
  const kq = new Kq({ numAgents: 1, args: ['--heartbeat', '250ms'] });
  kqs.push(kq);
  await kq.start();
  return kq;
}

/** kqctl in a pseudo-terminal; `env` replaces the environment (TERM set, NO_COLOR only if given). */
function onTerminal(kq: Kq, args: string[], env: Record<string, string> = {}) {
  return execa('python3', [PTY, 'node', BIN.kqctl, '--data-root', kq.dataRoot, '--connect-timeout', '15s', ...args], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', TERM: 'xterm-256color', ...env }, extendEnv: false,
    reject: false, stripFinalNewline: false, buffer: true,
  });
}
const unCrlf = (s: string) => s.replace(/\r\n/g, '\n');

describe('kqctl on a terminal', () => {
  it('list colours states on a terminal; piped and with NO_COLOR it prints the same plain bytes', async () => {
    const kq = await start();
    const ok = await kq.submit('--name', 'good', '--', 'true');
    const bad = await kq.submit('--name', 'bad', '--retries', '0', '--', 'false');
    await kq.waitJob(ok);
    await kq.waitJob(bad);
    const piped = await execa('node', [BIN.kqctl, '--data-root', kq.dataRoot, 'list'], { stripFinalNewline: false });
    expect(piped.stdout).not.toContain('\x1b');
    expect(piped.stdout).toMatch(new RegExp(`^${ok}\\s+good\\s+Completed\\s`, 'm'));
    const tty = await onTerminal(kq, ['list']);
    expect(tty.exitCode).toBe(0);
    expect(tty.stdout).toContain('\x1b[32mCompleted\x1b[0m');
    expect(tty.stdout).toContain('\x1b[31;1mFailed\x1b[0m');
    // Without the escapes, the terminal got the very same table.
    expect(unCrlf(tty.stdout).replace(/\x1b\[[0-9;]*m/g, '')).toBe(piped.stdout);
    const noColor = await onTerminal(kq, ['list'], { NO_COLOR: '1' });
    expect(unCrlf(noColor.stdout)).toBe(piped.stdout);
  });

  it('wait shows a progress bar with frames, percent and ETA on a terminal, then erases it; piped it prints nothing', async () => {
    const kq = await start();
    const dir = tempDir();
    const id = await kq.submit('--frames', '1-4', '--cwd', dir, '--', 'sh', '-c', 'while [ ! -f go{frame} ]; do sleep 0.05; done');
    const waiting = onTerminal(kq, ['wait', String(id)]);
    let seen = '';
    waiting.stdout!.on('data', (d: Buffer) => { seen += d.toString(); });
    await waitFor('the progress bar', () => seen.includes('0/4 frames'), 30_000);
    for (const f of [1, 2]) fs.writeFileSync(path.join(dir, `go${f}`), '');
    await waitFor('half done', () => /\[#{12}-{12}\] 50\.0% 2\/4 frames {2}ETA \d+s/.test(seen), 30_000);
    for (const f of [3, 4]) fs.writeFileSync(path.join(dir, `go${f}`), '');
    const r = await waiting;
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/job \d+ \[/);
    expect(r.stdout.endsWith('\r\x1b[2K')).toBe(true); // the line erased: the screen is as without a terminal
    const piped = await execa('node', [BIN.kqctl, '--data-root', kq.dataRoot, 'wait', String(id)], { stripFinalNewline: false });
    expect([piped.stdout, piped.stderr]).toEqual(['', '']);
    const noColor = await onTerminal(kq, ['wait', String(id)], { NO_COLOR: '1' });
    expect(noColor.stdout).toBe('');
  });

  it('watch redraws the table when kq announces a change, shows a paused queue, and quits on q', async () => {
    const kq = await start();
    const watching = onTerminal(kq, ['watch']);
    let seen = '';
    watching.stdout!.on('data', (d: Buffer) => { seen += d.toString(); });
    await waitFor('the first screen', () => seen.includes('kq: 0 jobs'), 30_000);
    expect(seen).toContain('\x1b[?1049h'); // the alternate screen
    const id = await kq.submit('--name', 'pushed-job', '--', 'true');
    await waitFor('the new job drawn', () => new RegExp(`${id}\\s+pushed-job\\s+\\x1b\\[32mCompleted`).test(seen), 30_000);
    await kq.ctl('pause');
    await waitFor('the paused queue drawn', () => seen.includes('QUEUE PAUSED'), 30_000);
    watching.stdin!.write('q');
    const r = await watching;
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trimEnd().endsWith('\x1b[?25h\x1b[?1049l')).toBe(true); // the screen given back
    const piped = await execa('node', [BIN.kqctl, '--data-root', kq.dataRoot, 'watch'], { reject: false });
    expect(piped.exitCode).toBe(2);
    expect(piped.stderr).toContain('kqctl watch needs a terminal');
  });

  it('bash completion completes commands, options and live job ids', async () => {
    const kq = await start();
    const a = await kq.submit('--', 'true');
    const b = await kq.submit('--', 'true');
    const bin = tempDir();
    fs.writeFileSync(path.join(bin, 'kqctl'), `#!/bin/sh\nexec node ${JSON.stringify(BIN.kqctl)} "$@"\n`, { mode: 0o755 });
    const script = (await execa('node', [BIN.kqctl, 'completion', 'bash'])).stdout;
    const complete = async (...words: string[]) => {
      const r = await execa('bash', ['-c', `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _kqctl; printf '%s\\n' "\${COMPREPLY[@]}"`], {
        env: { PATH: `${bin}:${process.env.PATH}`, KQ_DATA_ROOT: kq.dataRoot },
      });
      return r.stdout.split('\n').filter(Boolean);
    };
    expect(await complete('kqctl', 'pa')).toEqual(['pause']);
    expect(await complete('kqctl', 'submit', '--af')).toEqual(['--after']);
    expect(await complete('kqctl', 'rm', '')).toEqual([String(a), String(b)]);
    expect(await complete('kqctl', 'remote', 'st')).toEqual(['start', 'stop']);
    for (const shell of ['zsh', 'fish']) {
      const r = await execa('node', [BIN.kqctl, 'completion', shell]);
      expect(r.stdout).toContain('_ids');
    }
    expect((await execa('node', [BIN.kqctl, 'completion', 'tcsh'], { reject: false })).exitCode).toBe(2);
  });
});

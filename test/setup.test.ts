/**
 * The README's setup, as a newcomer types it: the commands are read from the README's own code blocks and
 * run by bash, with bare program names. Only three things differ from a person's machine, all by npm's and
 * kq's own settings: npm's global prefix is a temp dir (npm_config_prefix), scripts are not run again (the
 * checkout is built; a rebuild would pull dist/ from under the other tests), and HOME is a temp dir, so the
 * test touches nothing machine-wide. Also: the lockfile installs on this Node without EBADENGINE warnings.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, tempDir, waitFor } from './helpers/kq.js';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const pids: number[] = [];
afterAll(() => {
  for (const pid of pids) for (const target of [-pid, pid]) try { process.kill(target, 'SIGKILL'); } catch { /* gone */ }
});

/** The shell lines of the first ```sh block after `heading` (comments dropped, `\` continuations joined). */
function shBlock(heading: string, nth = 0): string[] {
  const section = README.slice(README.indexOf(heading));
  const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)];
  return blocks[nth]![1]!.replace(/\\\n/g, ' ').split('\n')
    .map((l) => l.replace(/\s+#\s.*$/, '').trim()).filter((l) => l !== '' && !l.startsWith('#'));
}

describe('setup as the README writes it', () => {
  it('the lockfile installs on this Node without engine warnings', async () => {
    const dir = tempDir();
    for (const f of ['package.json', 'package-lock.json']) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
    const r = await execa('npm', ['ci', '--dry-run', '--ignore-scripts', '--offline', '--no-audit', '--no-fund', '--cache', path.join(dir, 'cache')],
      { cwd: dir, reject: false, all: true, timeout: 120_000 });
    expect(r.all).not.toMatch(/EBADENGINE/);
    const engines = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).engines.node as string;
    expect(engines).toMatch(/^\^20/);
    expect(README).toMatch(/Needs Node\.js 20 \(or 22 and later\)/);
  });

  it('puts kq, kqctl and kq-agent on PATH; a shared-machine kq on free ports; the quick start with bare names', async () => {
    expect(README).not.toMatch(/npx kqctl|^npx kq /m);
    const setup = shBlock('## Set up on a fresh machine');
    // The first command builds, links and runs kq: its link step is what puts the programs on PATH.
    const steps = setup[0]!.split('&&').map((c) => c.trim());
    expect(steps).toEqual(['npm ci', 'npm install -g .', 'kq']);
    expect(setup[1]).toBe('npm test');
    const install = steps[1]!;
    const home = tempDir('kq-home-');
    const prefix = tempDir('kq-prefix-');
    // ignore_scripts: the checkout is built already, and `npm install -g .` would otherwise run `prepare`,
    // rebuilding dist/ under every other test file that is starting kq at that moment.
    const env = { HOME: home, npm_config_prefix: prefix, npm_config_ignore_scripts: 'true', PATH: `${path.join(prefix, 'bin')}:${process.env.PATH}` };
    const bash = (script: string, cwd: string, timeout = 120_000) =>
      execa('bash', ['-euc', script], { cwd, env, reject: false, all: true, timeout, detached: true });

    const installed = await bash(install, ROOT);
    expect(installed.exitCode, installed.all).toBe(0);
    for (const bin of ['kq', 'kqctl', 'kq-agent']) expect(fs.existsSync(path.join(prefix, 'bin', bin)), bin).toBe(true);

    // The shared-machine recipe: own data root, port 0 everywhere; kqctl finds kq through kq.json.
    const [exports, startKq, ...after] = shBlock('On a shared machine');
    const started = await bash(`${exports}\n${startKq}\necho $!`, home);
    expect(started.exitCode, started.all).toBe(0);
    pids.push(Number(String(started.stdout).trim()));
    const info = path.join(home, 'kq-mine', 'kq.json');
    await waitFor('kq.json', () => fs.existsSync(info), 30_000);
    expect(JSON.parse(fs.readFileSync(info, 'utf8')).requestPort).not.toBe(5560);
    const agents = await bash(`${exports}\n${after.join('\n')}`, home);
    expect(agents.exitCode, agents.all).toBe(0);
    expect(String(agents.stdout)).toMatch(/^Agent +Host/);

    // The quick start, literally, from the checkout (it cds to /tmp/spin: a temp dir stands in for it).
    const spin = tempDir('kq-spin-');
    const quick = shBlock('## Quick start').map((l) => l.replaceAll('/tmp/spin', spin));
    const run = await bash(`${exports}\n${quick.join('\n')}`, ROOT, 180_000);
    expect(run.exitCode, run.all).toBe(0);
    expect(String(run.stdout)).toMatch(/^1$/m);
    for (let f = 1; f <= 24; f++) expect(fs.existsSync(path.join(spin, `shot${String(f).padStart(2, '0')}.png`)), `frame ${f}`).toBe(true);

    // kq.pid style stop: SIGTERM to kq itself ends it, with its agents.
    const stopped = await bash(`kill ${pids[0]}; while kill -0 ${pids[0]} 2>/dev/null; do sleep 0.2; done`, home, 60_000);
    expect(stopped.exitCode).toBe(0);
  });
});

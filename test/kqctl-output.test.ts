/**
 * What kqctl prints for people cannot be forged by what others put into kq: a job name, a command, an
 * agent id or a host name with newlines, ANSI or OSC escapes is shown escaped (no fake rows, no terminal
 * title set), while --json stays exact and `kqctl log` piped stays byte-exact. Real kq, real kqctl.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, Kq, cleanupAll, startAgent, tempDir, waitFor } from './helpers/kq.js';

const ESC = '\x1b';
const EVIL_NAME = `x\n2  forged  Completed  3/3\r${ESC}]0;pwned${ESC}\\${ESC}[2J${ESC}[31mred\x07\u009b2J\u202eevil`;
/** Anything a terminal acts on: C0 controls but \n (checked per line), DEL, C1 controls, bidi overrides. */
const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;

let kq: Kq;
let id: number;
beforeAll(async () => {
  kq = await Kq.start({ numAgents: 1 });
  const dir = tempDir();
  id = await kq.submit('--name', EVIL_NAME, '--cwd', dir, '--', 'sh', '-c', `printf 'render ${'\\033'}]0;title${'\\007'}${'\\033'}[1mbold${'\\033'}[0m done\\n'`, `arg${ESC}[2J\u009b`);
  await kq.waitJob(id);
});
afterAll(async () => { await cleanupAll([kq]); });

describe('kqctl human output escapes control characters', () => {
  it('a remote or Slurm agent log quoted in a diagnosis cannot drive the terminal', async () => {
    const { readableLog } = await import('../src/ssh/remote-agents.js');
    const shown = readableLog('plain\n\x1b]52;c;cGF3bmVk\x07 title\n{"level":50,"time":0,"msg":"bad \\u001b[2J clear"}\n');
    expect(shown).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f]/);
    expect(shown.split('\n')).toEqual(['plain', '\\x1b]52;c;cGF3bmVk\\x07 title', '00:00:00 ERROR bad \\x1b[2J clear']);
  });

  it('list: one row per job, name escaped visibly; --json exact', async () => {
    const r = await kq.ctl('list');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).not.toMatch(CONTROL);
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(2); // header + the one job: no forged row
    expect(r.stdout).toContain(String.raw`x\n2  forged  Completed  3/3\r\x1b]0;pwned\x1b\\x1b[2J\x1b[31mred\x07\x9b2J\u202eevil`);
    const [job] = await kq.json('list');
    expect(job.name).toBe(EVIL_NAME);
  });

  it('show, stop and restart tables: name and command escaped', async () => {
    for (const args of [['show', String(id)], ['stop', String(id)], ['restart', String(id)]]) {
      const r = await kq.ctl(...args);
      expect(r.exitCode, args.join(' ')).toBe(0);
      expect(r.stdout, args.join(' ')).not.toMatch(CONTROL);
      expect(r.stdout).toContain(String.raw`x\n2  forged`);
    }
    const show = await kq.ctl('show', String(id));
    expect(show.stdout).toContain(String.raw`"arg\u001b[2J\x9b"`); // the command is shown as JSON, escaped
    expect((await kq.json('show', String(id))).argv.at(-1)).toBe(`arg${ESC}[2J\u009b`);
  });

  it('agents: an agent id with escapes is shown escaped', async () => {
    const agentId = `rogue${ESC}]0;pwned\x07\nfake-agent  host  1  yes  idle`;
    startAgent(['--agent-id', agentId, '--host-name', `h${ESC}[2J`, ...kq.agentArgs()]);
    await waitFor('the rogue agent', async () => (await kq.agents()).some((a) => a.id === agentId));
    const r = await kq.ctl('agents');
    expect(r.stdout).not.toMatch(CONTROL);
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(3); // header, the local agent, the rogue one
    expect(r.stdout).toContain(String.raw`rogue\x1b]0;pwned\x07\nfake-agent`);
  });

  it('errors that echo input are escaped', async () => {
    const r = await kq.ctl('submit', '--frames', `1-${ESC}]0;pwned\x07`, '--', 'true');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).not.toMatch(CONTROL);
    expect(r.stderr).toContain(String.raw`\x1b]0;pwned\x07`);
  });

  it("the job log: kq's own header line escapes the name; render output is exact when piped, made safe on a terminal", async () => {
    const piped = await kq.ctl('log', String(id));
    const lines = piped.stdout.split('\n');
    const header = lines.find((l) => l.includes('submitted'))!;
    expect(header).not.toMatch(CONTROL);
    expect(header).toContain(String.raw`x\n2  forged`);
    expect(lines.filter((l) => l.includes('forged'))).toHaveLength(1);
    expect(piped.stdout).toContain(`render ${ESC}]0;title\x07${ESC}[1mbold${ESC}[0m done\n`);

    // On a terminal (a real pty via script(1)): colours pass, OSC and other escapes are shown, not obeyed.
    const tty = await execa('script', ['-qec', `node ${BIN.kqctl} --data-root '${kq.dataRoot}' log ${id}`, '/dev/null'], { reject: false });
    expect(tty.exitCode).toBe(0);
    const out = String(tty.stdout);
    expect(out).toContain(String.raw`render \x1b]0;title\x07` + `${ESC}[1mbold${ESC}[0m done`);
    expect(out).not.toContain(`${ESC}]`);
    expect(out).not.toContain('\x07');
    const raw = await execa('script', ['-qec', `node ${BIN.kqctl} --data-root '${kq.dataRoot}' log --raw ${id}`, '/dev/null'], { reject: false });
    expect(String(raw.stdout)).toContain(`render ${ESC}]0;title\x07`);
  });
});

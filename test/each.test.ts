/**
 * Pipelines in one call: `kqctl submit --each` queues ONE job with a run per item read from standard input.
 * Each item is one argv element whatever it holds; nothing in it is run. Real kq, agents and kqctl.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, Kq, cleanupAll, tempDir, waitFor } from './helpers/kq.js';

let kq: Kq;
beforeAll(async () => { kq = await Kq.start({ numAgents: 2 }); });
afterAll(() => cleanupAll([kq]));

/** kqctl submit with `input` on its standard input. */
async function submitEach(input: string | Buffer, ...args: string[]) {
  const r = await execa('node', [BIN.kqctl, '--data-root', kq.dataRoot, '--connect-timeout', '15s', 'submit', ...args], { input, reject: false });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A render that writes each argument it gets, NUL-terminated, to a file named after its index. */
const RECORD = ['node', '-e', "require('fs').writeFileSync(process.argv[1] + '.out', process.argv.slice(2).map((a) => a + '\\0').join(''))"];
function recorded(dir: string, index: number): string[] {
  return fs.readFileSync(path.join(dir, `${index}.out`), 'utf8').split('\0').slice(0, -1);
}

describe('submit --each', () => {
  it('runs once per line; items with spaces, quotes and shell syntax arrive as one argument each, never run', async () => {
    const dir = tempDir();
    const items = ['plain', 'two words', `it's "quoted"`, '$(touch pwned)', '; rm -rf / #', '  padded  ', '{frame} {#} {}'];
    const r = await submitEach(items.join('\n') + '\n', '--each', '--cwd', dir, '--', ...RECORD, '{#}', 'item={item}', '{}');
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const id = Number(r.stdout.trim());
    const job = await kq.waitJob(id);
    expect(job.state).toBe('Completed');
    expect(job.framesTotal).toBe(items.length);
    items.forEach((item, i) => expect(recorded(dir, i + 1)).toEqual([`item=${item}`, item]));
    expect(fs.existsSync(path.join(dir, 'pwned'))).toBe(false);
  });

  it('-0 splits at NUL bytes, so items may hold newlines; --shell quotes each item for sh', async () => {
    const dir = tempDir();
    const items = ['line one\nline two', 'tab\there', "sh ' quote $(touch pwned) `touch pwned2`"];
    const r = await submitEach(Buffer.from(items.join('\0') + '\0'), '--each', '-0', '--shell', '--cwd', dir, '--', 'printf', '%s', '{item}', '>', 'out.{#}');
    expect(r.exitCode).toBe(0);
    expect((await kq.waitJob(Number(r.stdout.trim()))).state).toBe('Completed');
    items.forEach((item, i) => expect(fs.readFileSync(path.join(dir, `out.${i + 1}`), 'utf8')).toBe(item));
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('pwned'))).toEqual([]);
  });

  it('--shell: an item is data wherever {item} sits in the script: in double quotes, single quotes, a nested $(…)', async () => {
    const dir = tempDir();
    const items = ['$(touch pwned1)', '`touch pwned2`', "it's \"x\" $HOME \\ end", 'two  spaces'];
    const script = 'printf "%s|" "{item}" > out.{#}; printf "%s|" \'[{item}]\' >> out.{#}; printf "%s|" "$(printf "%s" "{item}")" >> out.{#}; printf "%s" {item} >> out.{#}';
    const r = await submitEach(items.join('\n') + '\n', '--each', '--shell', '--cwd', dir, '--', script);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect((await kq.waitJob(Number(r.stdout.trim()))).state).toBe('Completed');
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('pwned'))).toEqual([]);
    items.forEach((item, i) => {
      const [dq, sq, nested, bare] = fs.readFileSync(path.join(dir, `out.${i + 1}`), 'utf8').split('|');
      expect(dq, `"{item}" with ${item}`).toBe(item);
      expect(sq, `'[{item}]' with ${item}`).toBe(`[${item}]`);
      expect(nested, `nested with ${item}`).toBe(item);
      expect(bare, `bare {item} with ${item}`).toBe(item);
    });
  });

  it('without a placeholder the item is the last argument (as xargs); --chunk puts several items in one task', async () => {
    const dir = tempDir();
    const r = await submitEach('a\nb\nc\nd\ne\n', '--each', '--chunk', '2', '--cwd', dir, '--', 'sh', '-c', 'echo "$0" >> seen');
    expect(r.exitCode).toBe(0);
    const job = await kq.waitJob(Number(r.stdout.trim()));
    expect(job.state).toBe('Completed');
    expect(job.taskList).toHaveLength(3);
    expect(fs.readFileSync(path.join(dir, 'seen'), 'utf8').trim().split('\n').sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
  });

  it('a 10,000-item pipe is one job of 10,000 runs, each with its own item', async () => {
    const dir = tempDir();
    const input = Array.from({ length: 10_000 }, (_, i) => `item-${i + 1}`).join('\n');
    const r = await submitEach(input, '--each', '--chunk', '100', '--cwd', dir, '--', 'sh', '-c', 'echo "$1" > "done.$2"', 'sh', '{item}', '{#}');
    expect(r.exitCode).toBe(0);
    const id = Number(r.stdout.trim());
    const job = await kq.json('show', String(id));
    expect(job).toMatchObject({ framesTotal: 10_000, frameSpec: '1-10000' });
    expect(job.taskList).toHaveLength(100);
    expect(job.taskList[99].frames).toEqual(Array.from({ length: 100 }, (_, i) => 9901 + i));
    // Running all 10,000 costs minutes of process starts on a small machine: the first 300 show the pattern.
    await waitFor('300 items done', async () => (await kq.json('show', String(id))).framesDone >= 300, 120_000);
    await kq.ctl('stop', String(id));
    const done = fs.readdirSync(dir).filter((f) => f.startsWith('done.'));
    expect(done.length).toBeGreaterThanOrEqual(300);
    for (const f of done) expect(fs.readFileSync(path.join(dir, f), 'utf8')).toBe(`item-${f.slice(5)}\n`);
  });

  it('refuses empty input, --each with --frames, and -0 alone, each with one clear line and exit 2', async () => {
    for (const [input, args, message] of [
      ['', ['--each'], /no items on standard input/],
      ['\n\n', ['--each'], /no items on standard input/],
      ['a\n', ['--each', '--frames', '1-3'], /--each and --frames/],
      ['a\n', ['-0'], /-0\/--null goes with --each/],
    ] as const) {
      const r = await submitEach(input, ...args, '--', 'true');
      expect(r.exitCode, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
    // More items than one message to kq can carry: said at once, not a timeout.
    const many = Array.from({ length: 200_000 }, (_, i) => `a-rather-long-item-name-${i}`).join('\n');
    const r = await submitEach(many, '--each', '--', 'true');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/over kq's 4 MiB message limit: split the items/);
  });
});

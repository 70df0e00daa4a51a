import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { JobSubmit, JobSummary } from '../../protocol/index.js';
import { InvalidArgumentError } from 'commander';
import { durationArg, intArg } from '../../common/cli.js';
import { MAX_TIMEOUT_MS } from '../../protocol/constants.js';
import { CliError, EXIT } from '../exit-codes.js';
import { printJson } from '../format.js';
import { waitForJobs } from '../wait.js';
import { ProgressBar } from '../progress-bar.js';
import { fancy } from '../tty.js';
import { jobIds, withClient, type ConnectionFlags } from '../connect.js';

interface SubmitFlags extends ConnectionFlags {
  name?: string; frames?: string; chunk: number; priority: number; cwd?: string; env: string[];
  retries: number; timeout?: number; shell: boolean; output?: string; wait: boolean; json: boolean; after: string[];
  each: boolean; null: boolean;
}

/** `--each`: the items on standard input, one per line (blank lines skipped) or NUL-separated with -0. */
async function readItems(nulSeparated: boolean): Promise<string[]> {
  if (process.stdin.isTTY) throw new CliError(EXIT.usage, '--each reads its items from standard input: pipe them in (e.g. ls *.pov | kqctl submit --each -- povray +I{})');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  const items = nulSeparated ? text.split('\0') : text.split('\n').filter((line) => line !== '');
  if (nulSeparated && items[items.length - 1] === '') items.pop();
  if (items.length === 0) throw new CliError(EXIT.usage, `--each: no items on standard input (${nulSeparated ? 'NUL-separated' : 'one per line'})`);
  return items;
}

/** Pipes, redirections, lists and substitutions: what only a shell understands. */
const SHELL_SYNTAX = /[|&;<>`]|\$\(/;

/**
 * `kqctl submit -- "render a | tee b"` would look for a program named `render a | tee b`. One argument with
 * spaces and shell syntax that is not an existing file was meant for a shell: say how to ask for one.
 */
function refuseShellSyntaxInOneArgument(command: string[]): void {
  const [program] = command;
  if (command.length !== 1 || !/\s/.test(program!) || !SHELL_SYNTAX.test(program!) || fs.existsSync(program!)) return;
  throw new CliError(EXIT.usage, `"${program}" is one argument holding shell syntax, not a program: to run it through /bin/sh, ` +
    'add --shell (kqctl submit --shell -- "a | b"); to run a program, give it and its arguments as separate words');
}

function envPair(value: string, prev: string[]): string[] {
  return [...prev, value];
}

function taskTimeoutArg(value: string): number {
  const ms = durationArg(value);
  if (ms > MAX_TIMEOUT_MS) throw new InvalidArgumentError('a task timeout may be at most 24 days');
  return ms;
}

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('submit')
    .description('queue a job: kqctl submit [options] -- CMD ARGS…  (placeholders {frame} {start} {end}, padded {frame:04})')
    .argument('<command...>', 'the program to run and its arguments')
    .option('--name <name>', 'job name (default: the command)')
    .option('--frames <range>', 'frames, e.g. "1-10, 20, 30-45" or "1-100x5"')
    .option('--each', 'one run per line of standard input: {item} (or {}) is the line, {#} its number; no placeholder: appended', false)
    .option('-0, --null', 'with --each: items are separated by NUL bytes (find -print0), not lines', false)
    .option('--chunk <n>', 'frames (or --each items) per task', intArg(1, 1_000_000), 1)
    .option('--priority <n>', 'higher runs first (-1000..1000)', intArg(-1000, 1000), 0)
    .option('--cwd <dir>', 'working directory of the render (default: the current directory)')
    .option('--env <K=V>', 'environment variable for the render (repeatable)', envPair, [] as string[])
    .option('--retries <n>', 'times a failed task is tried again before it fails (0: never)', intArg(0, 99), 2)
    .option('--timeout <duration>', 'kill a task running longer than this (e.g. 30m; at most 24 days)', taskTimeoutArg)
    .option('--shell', 'run the command through /bin/sh -c (off: argv is run as is)', false)
    .option('--output <pattern>', "the frames the render writes, relative to --cwd, e.g. 'frames/shot_{frame:04}.png' (the web monitor shows them)")
    .option('--after <ids>', 'start only once these jobs have Completed (state Blocked until then); if one fails or is cancelled, so is this job: --after 3,4', envPair, [] as string[])
    .option('--wait', 'wait for the job to end; exit 1 if it failed or was cancelled', false)
    .option('--json', 'print the job as JSON', false)
    .showHelpAfterError("(the command's own options go after --: kqctl submit [options] -- CMD ARGS…)"))
    .action(withClient(async (client, flags: SubmitFlags, command: string[]) => {
      const env: Record<string, string> = {};
      for (const pair of flags.env) {
        const eq = pair.indexOf('=');
        if (eq <= 0) throw new CliError(EXIT.usage, `--env takes KEY=VALUE, got "${pair}"`);
        env[pair.slice(0, eq)] = pair.slice(eq + 1);
      }
      if (command.length === 0 || command[0]!.trim() === '') throw new CliError(EXIT.usage, 'empty command: give the program to run after --');
      if (command[0] === '-') throw new CliError(EXIT.usage, 'the command "-" is not a program: give the program to run after --');
      if (!flags.shell) refuseShellSyntaxInOneArgument(command);
      if (flags.each && flags.frames !== undefined) throw new CliError(EXIT.usage, '--each and --frames do not go together: a job runs over frames or over items');
      if (flags.null && !flags.each) throw new CliError(EXIT.usage, '-0/--null goes with --each');
      const items = flags.each ? await readItems(flags.null) : undefined;
      const job: JobSubmit = {
        name: flags.name, argv: command, frames: flags.frames, items, chunk: flags.chunk, priority: flags.priority,
        cwd: flags.cwd ? path.resolve(flags.cwd) : process.cwd(), env, maxAttempts: flags.retries + 1,
        timeoutMs: flags.timeout, shell: flags.shell, output: flags.output,
        ...(flags.after.length > 0 ? { after: jobIds(flags.after.flatMap((a) => a.split(',')).map((a) => a.trim())) } : {}),
      };
      const submitted = await client.request<JobSummary>('submit', { job });
      if (!flags.wait) {
        if (flags.json) printJson(submitted);
        else process.stdout.write(`${submitted.id}\n`);
        return EXIT.ok;
      }
      if (!flags.json) process.stdout.write(`${submitted.id}\n`);
      const bar = fancy(process.stderr) ? new ProgressBar() : null;
      const [done] = await waitForJobs(client, [submitted.id], bar ? (j) => bar.update(j) : undefined).finally(() => bar?.end());
      if (flags.json) printJson(done);
      else if (done!.state !== 'Completed') process.stderr.write(`kqctl: job ${done!.id} ${done!.state.toLowerCase()}: see kqctl log ${done!.id}\n`);
      return done!.state === 'Completed' ? EXIT.ok : EXIT.jobFailed;
    }));
}

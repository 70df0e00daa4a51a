/** Queue control (issue 17): pause/resume, priority, rm and clean. */
import { Option, type Command } from 'commander';
import type { JobSummary } from '../../protocol/index.js';
import { durationArg } from '../../common/cli.js';
import { CliError, EXIT } from '../exit-codes.js';
import { jobsTable, printJson } from '../format.js';
import { jobIds, withClient, type ConnectionFlags } from '../connect.js';

type Flags = ConnectionFlags & { json: boolean; quiet: boolean };
interface PauseReply { queuePaused: boolean; jobs: JobSummary[] }
interface RemoveReply { removed: number[] }

const ENDED = ['Completed', 'Failed', 'Cancelled'] as const;

export function register(program: Command, connection: (c: Command) => Command): void {
  for (const verb of ['pause', 'resume'] as const) {
    connection(program.command(verb)
      .description(verb === 'pause'
        ? 'hold jobs: they start no new tasks (running renders go on; stop kills them); without ids the whole queue'
        : 'release jobs held by pause; without ids the whole queue')
      .argument('[id...]', 'job ids (none: the whole queue)')
      .option('--json', 'print {queuePaused, jobs} as JSON', false)
      .option('-q, --quiet', 'print nothing on success', false))
      .action(withClient(async (client, flags: Flags, ids: string[]) => {
        const reply = await client.request<PauseReply>(verb, ids.length > 0 ? { jobIds: jobIds(ids) } : {});
        if (flags.json) printJson(reply);
        else if (flags.quiet) { /* nothing */ }
        else if (ids.length > 0) process.stdout.write(jobsTable(reply.jobs));
        else process.stdout.write(reply.queuePaused
          ? 'queue paused: no new tasks start, running renders go on (kqctl resume releases it)\n'
          : 'queue resumed\n');
        return EXIT.ok;
      }));
  }

  connection(program.command('priority')
    .description('change the priority of jobs (-1000..1000, higher runs first); their waiting tasks follow at once')
    .argument('<id...>', 'job ids, then the new priority: kqctl priority 3 4 10 (negative: kqctl priority 3 -5)')
    .allowUnknownOption() // "-5" is a priority, not an option
    .option('--json', 'print the jobs as JSON', false)
    .option('-q, --quiet', 'print nothing on success', false))
    .action(withClient(async (client, flags: Flags, args: string[]) => {
      if (args.length < 2) throw new CliError(EXIT.usage, 'give job ids and then the priority: kqctl priority ID… N');
      const text = args[args.length - 1]!;
      const priority = Number(text);
      if (!/^-?\d+$/.test(text) || priority < -1000 || priority > 1000) throw new CliError(EXIT.usage, `priority must be a whole number from -1000 to 1000, got "${text}"`);
      const jobs = await client.request<JobSummary[]>('priority', { jobIds: jobIds(args.slice(0, -1)), priority });
      if (flags.json) printJson(jobs);
      else if (!flags.quiet) process.stdout.write(jobsTable(jobs));
      return EXIT.ok;
    }));

  connection(program.command('rm')
    .description('remove ended jobs and their logs (render outputs are never touched); unfinished ones only with --stop')
    .argument('<id...>', 'job ids')
    .option('--stop', 'stop jobs that are still Waiting, Blocked or Running first', false)
    .option('--json', 'print {removed: [ids]} as JSON', false)
    .option('-q, --quiet', 'print nothing on success', false))
    .action(withClient(async (client, flags: Flags & { stop: boolean }, ids: string[]) => {
      return removed(await client.request<RemoveReply>('remove', { jobIds: jobIds(ids), stop: flags.stop }), flags);
    }));

  connection(program.command('clean')
    .description('remove ended jobs in bulk, with their logs (default: every Completed job; render outputs are never touched)')
    .addOption(new Option('--older-than <duration>', 'only jobs that ended longer ago than this, e.g. 7d, 12h').argParser(durationArg))
    .addOption(new Option('--state <state...>', 'only jobs in these states (default: Completed)').choices(ENDED))
    .option('--json', 'print {removed: [ids]} as JSON', false)
    .option('-q, --quiet', 'print nothing on success', false))
    .action(withClient(async (client, flags: Flags & { olderThan?: number; state?: Array<(typeof ENDED)[number]> }) => {
      return removed(await client.request<RemoveReply>('clean', { states: flags.state, olderThanMs: flags.olderThan }), flags);
    }));
}

function removed(reply: RemoveReply, flags: Flags): number {
  if (flags.json) printJson(reply);
  else if (!flags.quiet) {
    const n = reply.removed.length;
    process.stdout.write(n === 0 ? 'removed no jobs\n' : `removed ${n} job${n === 1 ? '' : 's'}: ${reply.removed.join(' ')}\n`);
  }
  return EXIT.ok;
}

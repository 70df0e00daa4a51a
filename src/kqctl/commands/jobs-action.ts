/** stop and restart: the same shape — act on job ids, print what they became. */
import type { Command } from 'commander';
import type { JobSummary } from '../../protocol/index.js';
import { EXIT } from '../exit-codes.js';
import { jobsTable, printJson } from '../format.js';
import { jobIds, withClient, type ConnectionFlags } from '../connect.js';

type Flags = ConnectionFlags & { json: boolean; quiet: boolean; failedOnly?: boolean };

export function register(program: Command, connection: (c: Command) => Command): void {
  connection(program.command('stop')
    .description('stop jobs: waiting tasks are cancelled, running renders are killed (whole process group)')
    .argument('<id...>', 'job ids')
    .option('--json', 'print the jobs as JSON', false)
    .option('-q, --quiet', 'print nothing on success', false))
    .action(withClient(async (client, flags: Flags, ids: string[]) => {
      return report(await client.request<JobSummary[]>('stop', { jobIds: jobIds(ids) }), flags);
    }));

  connection(program.command('restart')
    .description('requeue jobs (all their tasks, or only failed/cancelled ones); clears their blocklists')
    .argument('<id...>', 'job ids')
    .option('--failed-only', 'requeue only failed and cancelled tasks; completed frames are kept', false)
    .option('--json', 'print the jobs as JSON', false)
    .option('-q, --quiet', 'print nothing on success', false))
    .action(withClient(async (client, flags: Flags, ids: string[]) => {
      return report(await client.request<JobSummary[]>('restart', { jobIds: jobIds(ids), failedOnly: flags.failedOnly ?? false }), flags);
    }));
}

function report(jobs: JobSummary[], flags: Flags): number {
  if (flags.json) printJson(jobs);
  else if (!flags.quiet) process.stdout.write(jobsTable(jobs));
  return EXIT.ok;
}
